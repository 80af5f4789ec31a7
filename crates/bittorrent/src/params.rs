//! URL data: the path and query of an HTTP request, or the BEP 41 URL data of a
//! UDP announce, parsed by chihaya's rules so hooks see the same thing whichever
//! frontend a request came through.
//!
//! Rules: the text before the first `?` is the path; pairs are separated by `&`
//! or `;`; keys are lower-cased; for a repeated key the last value wins, except
//! `info_hash`, which may repeat (scrape) and must be exactly 20 bytes each time.
//! Keys and values are percent-decoded (`+` is a space); values are bytes,
//! because `info_hash` and `peer_id` are binary.

use crate::{ClientError, InfoHash};

/// Parsed URL data plus the route parameters a frontend matched (`/:passkey/announce`).
///
/// Empty parts allocate nothing, so a UDP announce without URL data costs no
/// heap memory here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    path: String,
    raw_query: String,
    pairs: Vec<(String, Vec<u8>)>,
    info_hashes: Vec<InfoHash>,
    route: Vec<(String, String)>,
}

const INVALID_ESCAPE: ClientError = ClientError::new("invalid query escaping");
const INVALID_INFOHASH: ClientError = ClientError::new("provided invalid infohash");

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
        let (path, query) = match url_data.iter().position(|&b| b == b'?') {
            Some(i) => (&url_data[..i], &url_data[i + 1..]),
            None => (url_data, &url_data[url_data.len()..]),
        };
        self.path.push_str(&String::from_utf8_lossy(path));
        self.raw_query.push_str(&String::from_utf8_lossy(query));
        for pair in query.split(|&b| b == b'&' || b == b';') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let key = percent_decode(key)?;
            let key = String::from_utf8(key).map_err(|_| INVALID_ESCAPE)?;
            let key = if key.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
                key.to_lowercase()
            } else {
                key
            };
            let value = percent_decode(value)?;
            if key == "info_hash" {
                let ih = InfoHash::from_bytes(&value).map_err(|_| INVALID_INFOHASH)?;
                self.info_hashes.push(ih);
            } else if let Some(slot) = self.pairs.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else {
                self.pairs.push((key, value));
            }
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.path.clear();
        self.raw_query.clear();
        self.pairs.clear();
        self.info_hashes.clear();
        self.route.clear();
    }

    /// The decoded value of a query key (keys are case-insensitive).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
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

    /// All decoded query pairs except `info_hash`, in order of first appearance.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// A named or catch-all route parameter (`passkey` in `/:passkey/announce`).
    pub fn route_param(&self, name: &str) -> Option<&str> {
        self.route
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Records a route parameter; frontends call this after matching a route.
    pub fn set_route_param(&mut self, name: &str, value: &str) {
        match self.route.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => {
                slot.1.clear();
                slot.1.push_str(value);
            }
            None => self.route.push((name.to_owned(), value.to_owned())),
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Query-component decoding: `%XX` is a byte, `+` a space; a malformed escape is an error.
fn percent_decode(input: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_value);
                let lo = input.get(i + 2).copied().and_then(hex_value);
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
    Ok(out)
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
    }
}
