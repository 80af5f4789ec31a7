//! URL data: the path and query of an HTTP request, or the BEP 41 URL data of a
//! UDP announce, parsed by chihaya's rules so hooks see the same thing whichever
//! frontend a request came through.
//!
//! Rules: the text before the first `?` is the path; pairs are separated by `&`
//! or `;`; keys are lower-cased; for a repeated key the last value wins, except
//! `info_hash`, which may repeat (scrape) and must be exactly 20 bytes each time.
//! Keys and values are percent-decoded (`+` is a space); values are bytes,
//! because `info_hash` and `peer_id` are binary.

use crate::types::hex_digit;
use crate::{ClientError, InfoHash};

/// Parsed URL data plus the route parameters a frontend matched (`/:passkey/announce`).
///
/// Decoded keys and values live back to back in one buffer, indexed by
/// ranges, so a worker that reuses one `Params` ([`parse_into`](Self::parse_into))
/// parses request after request without allocating.
#[derive(Clone, Debug, Default)]
pub struct Params {
    path: String,
    raw_query: String,
    /// Percent-decoded keys (lower-cased) and values.
    decoded: Vec<u8>,
    /// `(key, value)` ranges into `decoded`, in order of first appearance.
    pairs: Vec<(Span, Span)>,
    info_hashes: Vec<InfoHash>,
    /// Route parameter names and values, back to back.
    route: String,
    route_pairs: Vec<(Span, Span)>,
}

/// A range of a buffer; `u32` keeps the index small (requests are bounded far below 4 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span(u32, u32);

impl Span {
    fn of<T>(buf: &[T], start: usize) -> Span {
        Span(start as u32, buf.len() as u32)
    }
    fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.0 as usize..self.1 as usize]
    }
    fn get_str<'a>(&self, buf: &'a str) -> &'a str {
        &buf[self.0 as usize..self.1 as usize]
    }
}

const INVALID_ESCAPE: ClientError = ClientError::new("invalid query escaping");
const INVALID_INFOHASH: ClientError = ClientError::new("provided invalid infohash");
const NOT_UTF8: ClientError = ClientError::new("malformed URL data: not UTF-8");

impl Params {
    /// Parses `path?query` (or just `path`).
    pub fn parse(url_data: &[u8]) -> Result<Self, ClientError> {
        let mut params = Params::default();
        params.parse_into(url_data)?;
        Ok(params)
    }

    /// Parses into `self`, reusing its buffers; route parameters are cleared too.
    pub fn parse_into(&mut self, url_data: &[u8]) -> Result<(), ClientError> {
        self.clear();
        let text = std::str::from_utf8(url_data).map_err(|_| NOT_UTF8)?;
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        // Room for everything at once: a fresh `Params` (one per HTTP
        // request) would otherwise grow each buffer several times.
        self.decoded.reserve(query.len());
        self.pairs.reserve(16);
        self.path.push_str(path);
        self.raw_query.push_str(query);
        for pair in query.as_bytes().split(|&b| b == b'&' || b == b';') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let key_start = self.decoded.len();
            percent_decode_into(key, &mut self.decoded)?;
            lowercase_tail(&mut self.decoded, key_start)?;
            let key_span = Span::of(&self.decoded, key_start);
            if key_span.get(&self.decoded) == b"info_hash" {
                self.decoded.truncate(key_start);
                let value_start = self.decoded.len();
                percent_decode_into(value, &mut self.decoded)?;
                let ih = InfoHash::from_bytes(&self.decoded[value_start..])
                    .map_err(|_| INVALID_INFOHASH)?;
                self.decoded.truncate(value_start);
                self.info_hashes.push(ih);
                continue;
            }
            let value_start = self.decoded.len();
            percent_decode_into(value, &mut self.decoded)?;
            let value_span = Span::of(&self.decoded, value_start);
            let decoded = &self.decoded;
            let existing = self
                .pairs
                .iter_mut()
                .find(|(k, _)| k.get(decoded) == key_span.get(decoded));
            match existing {
                // Last value wins; the earlier bytes stay unused in the buffer.
                Some(slot) => slot.1 = value_span,
                None => self.pairs.push((key_span, value_span)),
            }
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.path.clear();
        self.raw_query.clear();
        self.decoded.clear();
        self.pairs.clear();
        self.info_hashes.clear();
        self.route.clear();
        self.route_pairs.clear();
    }

    /// The decoded value of a query key (keys are case-insensitive).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k.get(&self.decoded).eq_ignore_ascii_case(key.as_bytes()))
            .map(|(_, v)| v.get(&self.decoded))
    }

    /// The value of a query key, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path before the query (`/abc123/announce`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query exactly as received, still percent-encoded.
    pub fn raw_query(&self) -> &str {
        &self.raw_query
    }

    /// Every `info_hash` in order of appearance.
    pub fn info_hashes(&self) -> &[InfoHash] {
        &self.info_hashes
    }

    /// All decoded query pairs except `info_hash`, in order of first
    /// appearance. Keys are lower-case; keys and values are UTF-8 only when the
    /// client sent UTF-8, so they are given as bytes.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.get(&self.decoded), v.get(&self.decoded)))
    }

    /// A named or catch-all route parameter (`passkey` in `/:passkey/announce`).
    pub fn route_param(&self, name: &str) -> Option<&str> {
        self.route_pairs
            .iter()
            .find(|(k, _)| k.get_str(&self.route) == name)
            .map(|(_, v)| v.get_str(&self.route))
    }

    /// Records a route parameter; frontends call this after matching a route.
    pub fn set_route_param(&mut self, name: &str, value: &str) {
        self.route.reserve(name.len() + value.len());
        let value_start = self.route.len();
        self.route.push_str(value);
        let value_span = Span::of(self.route.as_bytes(), value_start);
        let route = &self.route;
        match self
            .route_pairs
            .iter_mut()
            .find(|(k, _)| k.get_str(route) == name)
        {
            Some(slot) => slot.1 = value_span,
            None => {
                let name_start = self.route.len();
                self.route.push_str(name);
                let name_span = Span::of(self.route.as_bytes(), name_start);
                self.route_pairs.push((name_span, value_span));
            }
        }
    }
}

/// Equal when they hold the same data, however the buffers are laid out.
impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        let routes = |p: &Params| -> Vec<(String, String)> {
            p.route_pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.get_str(&p.route).to_owned(),
                        v.get_str(&p.route).to_owned(),
                    )
                })
                .collect()
        };
        self.path == other.path
            && self.raw_query == other.raw_query
            && self.info_hashes == other.info_hashes
            && self.pairs().eq(other.pairs())
            && routes(self) == routes(other)
    }
}

impl Eq for Params {}

/// Lower-cases the key that starts at `start`: ASCII in place; a non-ASCII key
/// must be UTF-8 and is lower-cased by Unicode rules (the rare case that allocates).
fn lowercase_tail(buf: &mut Vec<u8>, start: usize) -> Result<(), ClientError> {
    if buf[start..].is_ascii() {
        buf[start..].make_ascii_lowercase();
        return Ok(());
    }
    let lower = std::str::from_utf8(&buf[start..])
        .map_err(|_| INVALID_ESCAPE)?
        .to_lowercase();
    buf.truncate(start);
    buf.extend_from_slice(lower.as_bytes());
    Ok(())
}

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`): the form every client uses for `info_hash` and
/// `peer_id`, and what [`Params`] decodes back to the same bytes.
pub fn percent_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
    }
    s
}

/// Query-component decoding into `out`: `%XX` is a byte, `+` a space; a
/// malformed escape is an error.
fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), ClientError> {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_digit);
                let lo = input.get(i + 2).copied().and_then(hex_digit);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(INVALID_ESCAPE),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn path_and_query_split() {
        let p = Params::parse(b"/abc/announce?passkey=xyz&Left=10;left=20").unwrap();
        assert_eq!(p.path(), "/abc/announce");
        assert_eq!(p.raw_query(), "passkey=xyz&Left=10;left=20");
        assert_eq!(p.get_str("passkey"), Some("xyz"));
        // Lower-cased keys, last value wins.
        assert_eq!(p.get_str("left"), Some("20"));
        assert_eq!(p.get_str("LEFT"), Some("20"));
        assert_eq!(p.pairs().count(), 2);
    }

    #[test]
    fn no_query() {
        let p = Params::parse(b"/announce").unwrap();
        assert_eq!(p.path(), "/announce");
        assert_eq!(p.raw_query(), "");
        assert!(p.get("x").is_none());
    }

    #[test]
    fn info_hash_repeatable_and_exact() {
        let a = [1u8; 20];
        let b = [0xffu8; 20];
        let q = format!("/scrape?info_hash={}&info_hash={}", encode(&a), encode(&b));
        let p = Params::parse(q.as_bytes()).unwrap();
        assert_eq!(p.info_hashes(), &[InfoHash(a), InfoHash(b)]);
        assert!(p.get("info_hash").is_none());

        let short = format!("?info_hash={}", encode(&[1u8; 19]));
        assert_eq!(
            Params::parse(short.as_bytes()).unwrap_err().message(),
            "provided invalid infohash"
        );
    }

    #[test]
    fn escapes() {
        let p = Params::parse(b"?a=hello+world%21&%4B=1&empty=&flag").unwrap();
        assert_eq!(p.get_str("a"), Some("hello world!"));
        assert_eq!(p.get_str("k"), Some("1"));
        assert_eq!(p.get_str("empty"), Some(""));
        assert_eq!(p.get_str("flag"), Some(""));
        assert!(Params::parse(b"?a=%4").is_err());
        assert!(Params::parse(b"?a=%zz").is_err());
    }

    #[test]
    fn non_utf8_is_refused_not_merged() {
        assert_eq!(
            Params::parse(b"/\xff\xfe/announce").unwrap_err().message(),
            "malformed URL data: not UTF-8"
        );
        // Binary values are fine when percent-encoded.
        let p = Params::parse(b"/a?k=%FF%FE").unwrap();
        assert_eq!(p.get("k"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn unicode_keys_are_lower_cased() {
        let p = Params::parse("/a?\u{00C9}T\u{00C9}=1".as_bytes()).unwrap();
        assert_eq!(p.get_str("\u{00E9}t\u{00E9}"), Some("1"));
    }

    #[test]
    fn equality_ignores_buffer_layout() {
        let a = Params::parse(b"/a?x=1&x=2&y=3").unwrap();
        let b = Params::parse(b"/a?x=1&x=2&y=3").unwrap();
        assert_eq!(a, b);
        let mut c = Params::parse(b"/a?x=2&y=3").unwrap();
        assert_ne!(a, c, "the raw query differs");
        c.parse_into(b"/a?x=1&x=2&y=3").unwrap();
        c.set_route_param("k", "v1");
        let mut d = a.clone();
        d.set_route_param("k", "v0");
        d.set_route_param("k", "v1");
        assert_eq!(c, d);
    }

    #[test]
    fn route_params_and_reuse() {
        let mut p = Params::parse(b"/x?a=1").unwrap();
        p.set_route_param("passkey", "abc");
        p.set_route_param("passkey", "def");
        assert_eq!(p.route_param("passkey"), Some("def"));
        p.parse_into(b"/y").unwrap();
        assert_eq!(p.route_param("passkey"), None);
        assert!(p.get("a").is_none());
        assert_eq!(p.path(), "/y");
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Params::parse(&data);
        }

        #[test]
        fn encoded_values_round_trip(key in "[a-z_]{1,8}", value in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assume!(key != "info_hash");
            let q = format!("/p?{}={}", key, encode(&value));
            let p = Params::parse(q.as_bytes()).unwrap();
            prop_assert_eq!(p.get(&key), Some(value.as_slice()));
        }

        #[test]
        fn percent_encode_round_trips(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let q = format!("/p?v={}", percent_encode(&value));
            let p = Params::parse(q.as_bytes()).unwrap();
            prop_assert_eq!(p.get("v"), Some(value.as_slice()));
        }
    }
}
