//! The decoder: one whole value, strings borrowed from the input.

use std::fmt;

use super::BencodeWriter;

/// Deepest nesting of lists and dictionaries accepted. Tracker replies nest
/// three levels; the bound keeps a hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// A decoded bencode value. Strings and keys borrow from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in the order of the input (BEP 3 wants ascending keys; the
    /// decoder accepts any order so a reader can report a writer's mistake
    /// itself, see [`Value::keys_sorted`]).
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

/// Why an input is not one bencoded value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where the problem was found.
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one value filling all of `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.value(0)?;
    if reader.pos != input.len() {
        return Err(reader.error("trailing data after the value"));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// The bytes up to (not including) the next `end`, which is consumed.
    fn until(&mut self, end: u8, missing: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == end)
            .ok_or(self.error(missing))?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'i') => self.int().map(Value::Int),
            Some(b'0'..=b'9') => self.bytes().map(Value::Bytes),
            Some(b'l') => {
                let depth = self.open(depth)?;
                let mut list = Vec::new();
                while !self.close("unterminated list")? {
                    list.push(self.value(depth)?);
                }
                Ok(Value::List(list))
            }
            Some(b'd') => {
                let depth = self.open(depth)?;
                let mut dict = Vec::new();
                while !self.close("unterminated dictionary")? {
                    if !matches!(self.peek(), Some(b'0'..=b'9')) {
                        return Err(self.error("dictionary key is not a string"));
                    }
                    let key = self.bytes()?;
                    dict.push((key, self.value(depth)?));
                }
                Ok(Value::Dict(dict))
            }
            Some(_) => Err(self.error("not the start of a value")),
        }
    }

    /// Consumes `l` or `d`; the depth of what it contains.
    fn open(&mut self, depth: usize) -> Result<usize, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    /// Consumes an `e` ending a list or dictionary: whether there was one.
    fn close(&mut self, unterminated: &'static str) -> Result<bool, DecodeError> {
        match self.peek() {
            None => Err(self.error(unterminated)),
            Some(b'e') => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// `i<n>e` in canonical form: no leading zeros, no `-0`.
    fn int(&mut self) -> Result<i64, DecodeError> {
        self.pos += 1;
        let start = self.pos;
        let text = self.until(b'e', "unterminated integer")?;
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let canonical = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits == b"0" || digits[0] != b'0')
            && text != b"-0";
        let parsed = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok());
        match parsed {
            Some(n) if canonical => Ok(n),
            _ => Err(DecodeError {
                offset: start,
                reason: if canonical {
                    "integer out of range"
                } else {
                    "malformed integer"
                },
            }),
        }
    }

    /// `<len>:<bytes>`, the length in canonical decimal.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len_text = self.until(b':', "string length without ':'")?;
        let malformed = DecodeError {
            offset: start,
            reason: "malformed string length",
        };
        if !len_text.iter().all(u8::is_ascii_digit) || (len_text.len() > 1 && len_text[0] == b'0') {
            return Err(malformed);
        }
        let len: usize = std::str::from_utf8(len_text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(malformed)?;
        if self.input.len() - self.pos < len {
            return Err(DecodeError {
                offset: start,
                reason: "string runs past the end of the input",
            });
        }
        let body = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(body)
    }
}

impl<'a> Value<'a> {
    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// Whether every dictionary in this value has strictly ascending keys, as
    /// BEP 3 requires of a writer.
    pub fn keys_sorted(&self) -> bool {
        match self {
            Value::Int(_) | Value::Bytes(_) => true,
            Value::List(items) => items.iter().all(Value::keys_sorted),
            Value::Dict(entries) => {
                entries.windows(2).all(|w| w[0].0 < w[1].0)
                    && entries.iter().all(|(_, v)| v.keys_sorted())
            }
        }
    }

    /// Writes the value back (dictionary keys must already be sorted).
    pub fn write(&self, w: &mut BencodeWriter<'_>) {
        match self {
            Value::Int(n) => {
                w.int(*n);
            }
            Value::Bytes(b) => {
                w.bytes(b);
            }
            Value::List(items) => {
                w.begin_list();
                for item in items {
                    item.write(w);
                }
                w.end();
            }
            Value::Dict(entries) => {
                w.begin_dict();
                for (key, value) in entries {
                    w.key_bytes(key);
                    value.write(w);
                }
                w.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_tracker_reply() {
        let input = b"d8:completei3e10:incompletei-1e5:peersl2:abe1:zd0:0:ee";
        let v = decode(input).unwrap();
        assert_eq!(v.get("complete").and_then(Value::as_int), Some(3));
        assert_eq!(v.get("incomplete").and_then(Value::as_int), Some(-1));
        assert_eq!(
            v.get("peers").and_then(Value::as_list),
            Some(&[Value::Bytes(b"ab")][..])
        );
        assert_eq!(
            v.get("z").and_then(Value::as_dict),
            Some(&[(&b""[..], Value::Bytes(b""))][..])
        );
        assert!(v.keys_sorted());
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn rejects_malformed_input_with_its_offset() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 0, "unexpected end of input"),
            (b"x", 0, "not the start of a value"),
            (b"i12", 1, "unterminated integer"),
            (b"ie", 1, "malformed integer"),
            (b"i-e", 1, "malformed integer"),
            (b"i-0e", 1, "malformed integer"),
            (b"i03e", 1, "malformed integer"),
            (b"i1.5e", 1, "malformed integer"),
            (b"i99999999999999999999e", 1, "integer out of range"),
            (b"5:abc", 0, "string runs past the end of the input"),
            (b"03:abc", 0, "malformed string length"),
            (b"3abc", 0, "string length without ':'"),
            (b"l1:a", 4, "unterminated list"),
            (b"d1:ai1e", 7, "unterminated dictionary"),
            (b"di1ei2ee", 1, "dictionary key is not a string"),
            (b"d1:a", 4, "unexpected end of input"),
            (b"i1ei2e", 3, "trailing data after the value"),
        ];
        for (input, offset, reason) in cases {
            let e = decode(input).unwrap_err();
            assert_eq!(
                (e.offset, e.reason),
                (*offset, *reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = [b"l".repeat(MAX_DEPTH), b"e".repeat(MAX_DEPTH)].concat();
        assert!(decode(&ok).is_ok());
        let deep = [b"l".repeat(MAX_DEPTH + 1), b"e".repeat(MAX_DEPTH + 1)].concat();
        assert_eq!(decode(&deep).unwrap_err().reason, "nested too deeply");
        // Far deeper than any stack would survive unbounded.
        let hostile = b"l".repeat(1_000_000);
        assert_eq!(decode(&hostile).unwrap_err().reason, "nested too deeply");
    }

    #[test]
    fn unsorted_keys_decode_and_are_reported() {
        let v = decode(b"d1:bi1e1:ai2ee").unwrap();
        assert_eq!(v.get("a").and_then(Value::as_int), Some(2));
        assert!(!v.keys_sorted());
        assert!(!decode(b"d1:ai1e1:ai2ee").unwrap().keys_sorted());
    }

    /// Arbitrary values whose dictionaries have sorted, distinct keys (what a
    /// correct writer produces).
    fn value(bytes: &'static [u8]) -> impl Strategy<Value = Value<'static>> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (0..bytes.len(), 0..24usize).prop_map(move |(start, len)| {
                Value::Bytes(&bytes[start..(start + len).min(bytes.len())])
            }),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::btree_map(
                    (0..bytes.len(), 0..8usize)
                        .prop_map(move |(s, l)| &bytes[s..(s + l).min(bytes.len())]),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Dict(m.into_iter().collect())),
            ]
        })
    }

    const POOL: &[u8] = b"\x00\x01announce:peers\xffide0123456789interval\xfe\x80";

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(v in value(POOL)) {
            let mut buf = Vec::new();
            v.write(&mut BencodeWriter::new(&mut buf));
            prop_assert_eq!(decode(&buf), Ok(v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&input);
        }

        #[test]
        fn truncations_of_a_value_are_errors(v in value(POOL)) {
            let mut buf = Vec::new();
            v.write(&mut BencodeWriter::new(&mut buf));
            for cut in 0..buf.len() {
                // Every value is self-delimiting: no proper prefix is whole.
                prop_assert!(decode(&buf[..cut]).is_err());
            }
        }
    }
}
