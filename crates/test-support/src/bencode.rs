//! Tracker replies as tests read them, on top of `bittorrent::bencode::decode`:
//! strictly (every dictionary's keys ascending, which BEP 3 asks of a writer
//! and the decoder leaves to its caller), through accessors that panic
//! showing the whole value, and rendered with strings as escaped ASCII so
//! that a failure message reads well.

use bittorrent::bencode::{self, Value};

/// `input` as one bencoded value whose dictionaries have strictly ascending
/// (so also distinct) keys.
pub fn strict(input: &[u8]) -> Result<Value<'_>, String> {
    let value = bencode::decode(input)
        .map_err(|e| format!("bad bencode ({e}): {:?}", String::from_utf8_lossy(input)))?;
    if !value.keys_sorted() {
        return Err(format!(
            "dictionary keys out of order or repeated: {}",
            render(&value)
        ));
    }
    Ok(value)
}

/// [`strict`] on a body that the value may borrow for the rest of the process:
/// the body is leaked, a few hundred bytes a reply, so that a test can keep
/// replies in variables across requests.
pub fn strict_static(body: Vec<u8>) -> Result<Value<'static>, String> {
    strict(body.leak())
}

/// The `failure reason` of a bencoded reply, if it is one.
pub fn failure_reason(body: &[u8]) -> Option<String> {
    let value = bencode::decode(body).ok()?;
    Some(value.get("failure reason")?.as_str()?.to_owned())
}

/// `value` with strings as escaped ASCII: `{"interval": 1800, "peers": "\x7f\0\0\x01..."}`.
pub fn render(value: &Value<'_>) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Bytes(b) => format!("\"{}\"", b.escape_ascii()),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Dict(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("\"{}\": {}", k.escape_ascii(), render(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// Accessors for assertions. Each panics, showing the whole value, where the
/// value is not what the test expects.
pub trait Fields<'a> {
    /// The value under `key` of a dictionary.
    fn at(&self, key: &str) -> &Value<'a>;
    /// The value under a binary key (the info hashes of a scrape's `files`).
    fn entry(&self, key: &[u8]) -> &Value<'a>;
    /// Whether this is a dictionary with `key`.
    fn has(&self, key: &str) -> bool;
    /// A dictionary's keys, lossily as text (none for other values).
    fn keys(&self) -> Vec<String>;
    fn int(&self) -> i64;
    fn bytes(&self) -> &'a [u8];
    fn list(&self) -> &[Value<'a>];
    fn dict(&self) -> &[(&'a [u8], Value<'a>)];

    /// The integer under `key`.
    fn int_at(&self, key: &str) -> i64 {
        self.at(key).int()
    }

    /// The `failure reason` of a refusal, as text.
    fn failure(&self) -> String {
        let reason = self.at("failure reason").bytes();
        String::from_utf8(reason.to_vec())
            .unwrap_or_else(|_| panic!("failure reason {:?} is not UTF-8", reason.escape_ascii()))
    }
}

impl<'a> Fields<'a> for Value<'a> {
    fn at(&self, key: &str) -> &Value<'a> {
        self.entry(key.as_bytes())
    }

    fn entry(&self, key: &[u8]) -> &Value<'a> {
        self.dict()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no key \"{}\" in {}", key.escape_ascii(), render(self)))
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn keys(&self) -> Vec<String> {
        self.as_dict()
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    fn int(&self) -> i64 {
        self.as_int()
            .unwrap_or_else(|| panic!("not an integer: {}", render(self)))
    }

    fn bytes(&self) -> &'a [u8] {
        self.as_bytes()
            .unwrap_or_else(|| panic!("not a string: {}", render(self)))
    }

    fn list(&self) -> &[Value<'a>] {
        self.as_list()
            .unwrap_or_else(|| panic!("not a list: {}", render(self)))
    }

    fn dict(&self) -> &[(&'a [u8], Value<'a>)] {
        self.as_dict()
            .unwrap_or_else(|| panic!("not a dictionary: {}", render(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bencode_reader_is_strict() {
        let ok = strict(b"d1:ai-3e1:bl0:4:spame1:cd1:xi0eee").unwrap();
        assert_eq!(ok.int_at("a"), -3);
        assert_eq!(ok.keys(), ["a", "b", "c"]);
        for bad in [
            &b"d1:bi1e1:ai2ee"[..], // keys out of order
            b"d1:ai1e1:ai2ee",      // a repeated key
            b"i01e",
            b"i-0e",
            b"ie",
            b"02:ab",
            b"3:ab",
            b"i1ei2e",
            b"li1e",
            b"di1ei2ee",
        ] {
            assert!(
                strict(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
