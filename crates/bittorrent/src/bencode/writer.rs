//! The writer: appends straight into one caller-owned buffer.
//!
//! Tracker replies are small and their shape is fixed, so the writer is a thin
//! set of append calls rather than a value tree: nothing is allocated beyond the
//! buffer the frontend reuses. Dictionary keys must be written in sorted order
//! (BEP 3); the writer checks that in debug builds.

/// Appends bencoded values to a `Vec<u8>`.
pub struct BencodeWriter<'a> {
    buf: &'a mut Vec<u8>,
    #[cfg(debug_assertions)]
    last_keys: Vec<Option<Vec<u8>>>,
}

impl<'a> BencodeWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        BencodeWriter {
            buf,
            #[cfg(debug_assertions)]
            last_keys: Vec::new(),
        }
    }

    /// `i<n>e`
    pub fn int(&mut self, n: i64) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.buf.push(b'i');
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self.buf.push(b'e');
        self
    }

    /// `<len>:<bytes>`
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(bytes.len()).as_bytes());
        self.buf.push(b':');
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A byte string whose content is produced in place by `fill` (compact peer lists).
    pub fn bytes_with(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(len).as_bytes());
        self.buf.push(b':');
        let start = self.buf.len();
        fill(self.buf);
        debug_assert_eq!(
            self.buf.len() - start,
            len,
            "bytes_with wrote the wrong length"
        );
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn begin_dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        #[cfg(debug_assertions)]
        self.last_keys.push(None);
        self
    }

    /// A dictionary key; keys of one dictionary must come in ascending byte order.
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.key_bytes(key.as_bytes())
    }

    /// A key that is not text (a scrape's info hash).
    pub fn key_bytes(&mut self, key: &[u8]) -> &mut Self {
        #[cfg(debug_assertions)]
        if let Some(last) = self.last_keys.last_mut() {
            if let Some(prev) = last {
                debug_assert!(
                    prev.as_slice() < key,
                    "bencode keys out of order: {:?} after {:?}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(prev)
                );
            }
            *last = Some(key.to_vec());
        }
        self.bytes(key)
    }

    pub fn begin_list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        #[cfg(debug_assertions)]
        self.last_keys.push(None);
        self
    }

    /// Closes the innermost dictionary or list.
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        #[cfg(debug_assertions)]
        self.last_keys.pop();
        self
    }

    /// The whole reply for a rejected request: `d14:failure reason<len>:<text>e`.
    pub fn failure(buf: &mut Vec<u8>, reason: &str) {
        BencodeWriter::new(buf)
            .begin_dict()
            .key("failure reason")
            .str(reason)
            .end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_values() {
        let mut buf = Vec::new();
        BencodeWriter::new(&mut buf)
            .begin_dict()
            .key("complete")
            .int(3)
            .key("interval")
            .int(-1800)
            .key("peers")
            .begin_list()
            .bytes(b"ab")
            .end()
            .key("z")
            .bytes_with(3, |b| b.extend_from_slice(b"xyz"))
            .end();
        assert_eq!(
            buf,
            b"d8:completei3e8:intervali-1800e5:peersl2:abe1:z3:xyze"
        );
    }

    #[test]
    fn failure_reason() {
        let mut buf = Vec::new();
        BencodeWriter::failure(&mut buf, "unapproved torrent");
        assert_eq!(buf, b"d14:failure reason18:unapproved torrente");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "out of order")]
    fn unsorted_keys_caught_in_debug() {
        let mut buf = Vec::new();
        BencodeWriter::new(&mut buf)
            .begin_dict()
            .key("b")
            .int(1)
            .key("a");
    }
}
