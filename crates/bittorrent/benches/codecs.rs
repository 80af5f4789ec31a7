//! The codecs on a tracker's hot path: `cargo bench -p bittorrent`.
//!
//! Every benchmark reuses its buffers the way a frontend worker does (a cleared
//! `Vec`, a reused `Params`), so the numbers are the steady state: no
//! allocation, only parsing and writing.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bittorrent::udp::{self, Announce, ScrapeHashes};
use bittorrent::{AddressFamily, AnnounceResponse, BencodeWriter, InfoHash, Params, Scrape};
use criterion::{Criterion, criterion_group, criterion_main};

const INFO_HASH: [u8; 20] = [
    0x9a, 0xef, 0x21, 0x7e, 0x0c, 0x5b, 0x41, 0x2d, 0x63, 0x88, 0xa4, 0x17, 0xfe, 0x30, 0x2e, 0x5f,
    0x6d, 0xb9, 0x01, 0xc7,
];
const PEER_ID: &[u8; 20] = b"-LT2080-k3Jm0x_Qa9Zp";

/// A BEP 15 announce: a leecher starting, numwant -1 (the default), and
/// `options` (BEP 41) after the fixed fields.
fn udp_announce(options: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(udp::ANNOUNCE_LEN + options.len());
    p.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes()); // connection id
    p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
    p.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // transaction id
    p.extend_from_slice(&INFO_HASH);
    p.extend_from_slice(PEER_ID);
    p.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    p.extend_from_slice(&734_003_200u64.to_be_bytes()); // left
    p.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    p.extend_from_slice(&2u32.to_be_bytes()); // event: started
    p.extend_from_slice(&0u32.to_be_bytes()); // ip: the source address
    p.extend_from_slice(&0x8a2c_3f1eu32.to_be_bytes()); // key
    p.extend_from_slice(&(-1i32).to_be_bytes()); // num_want
    p.extend_from_slice(&6881u16.to_be_bytes());
    assert_eq!(p.len(), udp::ANNOUNCE_LEN);
    p.extend_from_slice(options);
    p
}

/// BEP 41 options carrying `url` in chunks of at most 255 bytes, then the
/// end-of-options marker.
fn url_data_options(url: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    for chunk in url.chunks(255) {
        o.push(0x2);
        o.push(chunk.len() as u8);
        o.extend_from_slice(chunk);
    }
    o.push(0x0);
    o
}

/// A BEP 15 scrape of `n` info hashes.
fn udp_scrape(n: u8) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    p.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
    p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    for i in 0..n {
        let mut ih = INFO_HASH;
        ih[0] = i;
        p.extend_from_slice(&ih);
    }
    p
}

/// A reply as the store leaves it: counts, intervals and `n` IPv4 peers.
fn announce_response(n: u16) -> AnnounceResponse {
    AnnounceResponse {
        compact: true,
        complete: 500,
        incomplete: 499,
        snatches: 1234,
        interval: Duration::from_secs(30 * 60),
        min_interval: Duration::from_secs(15 * 60),
        ipv4_peers: (0..n)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(93, 184, (i >> 8) as u8, i as u8), 6881 + i))
            .collect(),
        ..AnnounceResponse::default()
    }
}

/// Percent-encodes as libtorrent does: unreserved characters as they are,
/// everything else as `%xx`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02x}"));
        }
    }
    s
}

/// The query libtorrent 2.0 sends for a started download.
fn libtorrent_announce() -> Vec<u8> {
    format!(
        "/announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=734003200\
         &corrupt=0&key=8A2C3F1E&event=started&numwant=200&compact=1&no_peer_id=1\
         &supportcrypto=1&redundant=0",
        escape(&INFO_HASH),
        escape(PEER_ID),
    )
    .into_bytes()
}

fn udp_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp");
    let mut url = Vec::new();

    let plain = udp_announce(&[]);
    g.bench_function("announce_parse", |b| {
        b.iter(|| {
            let a = Announce::parse(black_box(&plain)).unwrap();
            url.clear();
            udp::collect_url_data(a.options, &mut url).unwrap();
            black_box((a, &url));
        })
    });

    // A private tracker's passkey in BEP 41 URL data, split over two options
    // with a NOP between them, as clients that chunk the URL send it.
    let path = b"/a9f3c1d07e5b42c8b61d0f9e7a3c5b21/announce?uid=4711";
    let (head, tail) = path.split_at(20);
    let mut options = url_data_options(head);
    options.pop();
    options.push(0x1);
    options.extend_from_slice(&url_data_options(tail));
    let bep41 = udp_announce(&options);
    g.bench_function("announce_parse_bep41", |b| {
        b.iter(|| {
            let a = Announce::parse(black_box(&bep41)).unwrap();
            url.clear();
            udp::collect_url_data(a.options, &mut url).unwrap();
            black_box((a, &url));
        })
    });
    // What the UDP worker does next with the URL data.
    let mut params = Params::default();
    g.bench_function("announce_parse_bep41_params", |b| {
        b.iter(|| {
            let a = Announce::parse(black_box(&bep41)).unwrap();
            url.clear();
            udp::collect_url_data(a.options, &mut url).unwrap();
            params.parse_into(&url).unwrap();
            black_box((a, &params));
        })
    });

    let resp = announce_response(50);
    let mut out = Vec::with_capacity(1500);
    g.bench_function("announce_write_50v4", |b| {
        b.iter(|| {
            out.clear();
            udp::write_announce(&mut out, 0xdead_beef, black_box(&resp), AddressFamily::V4);
            black_box(&out);
        })
    });

    let scrape = udp_scrape(10);
    let mut hashes: Vec<InfoHash> = Vec::with_capacity(74);
    g.bench_function("scrape_parse_10", |b| {
        b.iter(|| {
            let h = ScrapeHashes::parse(black_box(&scrape), 50).unwrap();
            hashes.clear();
            hashes.extend(h.iter());
            black_box(&hashes);
        })
    });

    let files: Vec<Scrape> = (0..10u8)
        .map(|i| {
            let mut ih = INFO_HASH;
            ih[0] = i;
            Scrape {
                info_hash: InfoHash(ih),
                complete: 500 + u32::from(i),
                incomplete: 499,
                snatches: 1234,
            }
        })
        .collect();
    g.bench_function("scrape_write_10", |b| {
        b.iter(|| {
            out.clear();
            udp::write_scrape(&mut out, 0xdead_beef, black_box(&files));
            black_box(&out);
        })
    });
    g.finish();
}

fn http_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    let query = libtorrent_announce();
    let mut params = Params::default();
    g.bench_function("query_parse_libtorrent", |b| {
        b.iter(|| {
            params.parse_into(black_box(&query)).unwrap();
            black_box(&params);
        })
    });
    g.finish();
}

fn bencode_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("bencode");
    let resp = announce_response(50);
    let external_ip = Ipv4Addr::new(203, 0, 113, 7);
    let mut buf = Vec::with_capacity(1024);
    // The compact announce reply the HTTP frontend writes for an IPv4 client.
    g.bench_function("announce_compact_50v4", |b| {
        b.iter(|| {
            let resp = black_box(&resp);
            buf.clear();
            let mut w = BencodeWriter::new(&mut buf);
            w.begin_dict();
            w.key("complete").int(i64::from(resp.complete));
            w.key("downloaded").int(i64::from(resp.snatches));
            w.key("external ip").bytes(&external_ip.octets());
            w.key("incomplete").int(i64::from(resp.incomplete));
            w.key("interval").int(resp.interval.as_secs() as i64);
            w.key("min interval")
                .int(resp.min_interval.as_secs() as i64);
            let v4 = &resp.ipv4_peers;
            w.key("peers").bytes_with(v4.len() * 6, |b| {
                for p in v4 {
                    b.extend_from_slice(&p.ip().octets());
                    b.extend_from_slice(&p.port().to_be_bytes());
                }
            });
            w.end();
            black_box(&buf);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = udp_benches, http_benches, bencode_benches
}
criterion_main!(benches);
