//! The bodies of karuta's fuzz targets: each takes any bytes and must return
//! without panicking, hanging or allocating without bound. `fuzz/` (cargo
//! fuzz, libFuzzer) calls them; `tests/corpus.rs` replays the committed
//! corpus through them on stable Rust, so CI guards every input that ever
//! found a bug. Where a parser has an inverse, the target also checks the
//! round trip.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use bittorrent::bencode;
use bittorrent::udp::{self, Announce, RequestHeader, ScrapeHashes};
use bittorrent::{BencodeWriter, Params};

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("udp_request", udp_request),
    ("bep41_options", bep41_options),
    ("url_params", url_params),
    ("bencode", bencode_decode),
    ("duration", duration),
    ("config", config),
    ("jwt", jwt),
    ("journal_record", journal_record),
    ("journal_segment", journal_segment),
    ("http_request", http_request),
    ("passkey_file", passkey_file),
    ("torrent_list", torrent_list),
    ("site_notice", site_notice),
];

/// A BEP 15 request as the UDP worker reads it: the header, an announce
/// with its BEP 41 options turned into URL data and parsed as a request's
/// path and query, a scrape's info hashes.
pub fn udp_request(data: &[u8]) {
    let Some(header) = RequestHeader::parse(data) else {
        return;
    };
    match header.action {
        udp::ACTION_ANNOUNCE => {
            if let Ok(a) = Announce::parse(data) {
                let mut url = Vec::new();
                if udp::collect_url_data(a.options, &mut url).is_ok() {
                    let _ = Params::parse(&url);
                }
            }
        }
        udp::ACTION_SCRAPE => {
            if let Ok(h) = ScrapeHashes::parse(data, 74) {
                assert!(h.len() <= 74);
                assert_eq!(h.iter().count(), h.len());
            }
        }
        _ => {}
    }
}

/// BEP 41 options alone.
pub fn bep41_options(data: &[u8]) {
    let mut url = Vec::new();
    if udp::collect_url_data(data, &mut url).is_ok() {
        assert!(url.len() <= data.len());
    }
}

/// A request target (`/path?query`) as HTTP and BEP 41 URL data are read,
/// and what hooks ask of it.
pub fn url_params(data: &[u8]) {
    let Ok(p) = Params::parse(data) else {
        return;
    };
    let _ = p.get("info_hash");
    let _ = p.get_str("passkey");
    let _ = p.info_hashes();
    let _ = tracker::site::passkey_in(&p, "passkey");
    // Percent-decoding only shrinks; lower-casing a key by Unicode rules
    // may grow it (U+023E is 2 bytes, its lower case 3).
    for (k, v) in p.pairs() {
        assert!(v.len() <= data.len());
        assert!(k.len() <= 3 * data.len());
    }
}

/// The bencode decoder; what decodes re-encodes to a value that decodes
/// the same.
pub fn bencode_decode(data: &[u8]) {
    let Ok(value) = bencode::decode(data) else {
        return;
    };
    // `write` asks for sorted keys (BEP 3); the decoder accepts any order.
    if value.keys_sorted() {
        let mut out = Vec::new();
        value.write(&mut BencodeWriter::new(&mut out));
        assert_eq!(bencode::decode(&out).as_ref(), Ok(&value));
    }
}

/// Go durations (`1h30m`, `250ms`).
pub fn duration(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tracker::config::parse_duration(text);
    }
}

/// A whole configuration file: YAML, every driver's options, validation
/// (which reads the files a configuration names; device files are left
/// out, so a read always ends).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("/dev") || text.contains("/proc") || text.contains("/sys") {
        return;
    }
    static REGISTRY: OnceLock<tracker::Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(karuta::default_registry);
    let source = karuta::config::ConfigSource::File("fuzz.yaml".into());
    let _ = karuta::config::parse_with_env(&source, text, registry, |_| None);
}

/// A JWT as the `jwt` hook checks it, against a fixed P-256 key set.
pub fn jwt(data: &[u8]) {
    static HOOK: OnceLock<middleware::jwt::Jwt> = OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let config = middleware::jwt::Config {
            issuer: "https://issuer.example".into(),
            audience: "karuta".into(),
            ..Default::default()
        };
        middleware::jwt::Jwt::with_jwk_set(&config, JWK_SET.as_bytes()).expect("the key set")
    });
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(!hook.verify(token, &bittorrent::InfoHash([0xaa; 20])));
    }
}

/// RFC 7517's example P-256 key: a valid ES256 signature with the right
/// issuer, audience and info hash is out of reach of mutation, so `verify`
/// must say no to everything the fuzzer makes.
const JWK_SET: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// privtrak's journal records; what decodes encodes to a record that
/// decodes to the same.
pub fn journal_record(data: &[u8]) {
    let mut rest = data;
    while let Ok((delta, len)) = privtrak::journal::decode(rest) {
        assert!(len > 0 && len <= rest.len());
        // Compared as bytes: a factor may be NaN, which equals nothing.
        let mut out = Vec::new();
        privtrak::journal::encode(&delta, &mut out);
        let (again, n) = privtrak::journal::decode(&out).expect("an encoded record decodes");
        assert_eq!(n, out.len());
        let mut twice = Vec::new();
        privtrak::journal::encode(&again, &mut twice);
        assert_eq!(twice, out);
        rest = &rest[len..];
    }
}

/// A journal segment as recovery reads it after a crash: the first byte
/// says whether it is the newest segment (where a torn tail is cut off), the
/// rest is the file. What it keeps is whole records in sequence.
pub fn journal_segment(data: &[u8]) {
    let Some((&flag, bytes)) = data.split_first() else {
        return;
    };
    let first = privtrak::journal::decode(bytes).map_or(1, |(d, _)| d.seq);
    if let Ok((len, next)) = privtrak::journal::scan_segment(bytes, first, flag & 1 == 1) {
        assert!(len <= bytes.len());
        let mut at = 0;
        let mut seq = first;
        while at < len {
            let (d, n) = privtrak::journal::decode(&bytes[at..]).expect("a kept record decodes");
            assert_eq!(d.seq, seq);
            at += n;
            seq += 1;
        }
        assert_eq!((at, seq), (len, next));
    }
}

/// An HTTP request target as the HTTP frontend routes it and builds its
/// announce or scrape (the first byte picks IPv4 or IPv6 for the client and
/// whether `ip` parameters may be spoofed).
pub fn http_request(data: &[u8]) {
    let Some((&flag, target)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let client: std::net::IpAddr = if flag & 1 == 0 {
        std::net::Ipv4Addr::new(192, 0, 2, 1).into()
    } else {
        "2001:db8::1".parse().expect("an address")
    };
    let _ = frontend_http::parse_request_target(target, client, flag & 2 != 0);
}

/// `passkey approval`'s file.
pub fn passkey_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = middleware::site::users::parse_file(text, "fuzz");
    }
}

/// `torrent approval`'s list file.
pub fn torrent_list(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = middleware::torrent_approval::parse_list(text, "fuzz");
    }
}

/// The site tables' NOTIFY payloads.
pub fn site_notice(data: &[u8]) {
    use middleware::site::postgres::Kind;
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = middleware::site::users::Users::notice(text);
        let _ = middleware::site::torrents::Torrents::notice(text);
    }
}
