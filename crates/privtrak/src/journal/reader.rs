//! Reading durable entries back, in order: the drain hands them to the
//! handler, and a start replays them into the records.
//!
//! The reader goes to the files, not to a copy in memory: the journal may
//! hold far more than memory should (everything a handler that is down has
//! not taken), and what was just written is in the page cache anyway. It
//! reads a segment in large chunks, never past what is durable: beyond that
//! lies the writer's zero-filled space, or records not yet synced.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{JournalError, Malformed, Segment, Shared, decode, io_error, lock};
use crate::delta::Delta;

impl OpenSegment {
    /// `need` bytes from `at` on (fewer where the durable part ends first),
    /// read from the file when the buffer does not hold them.
    fn bytes(&mut self, need: usize, durable_len: u64) -> Result<&[u8], JournalError> {
        let end = (self.at + need as u64).min(durable_len);
        let buffered = self.buf_at + self.buf.len() as u64;
        if self.at < self.buf_at || end > buffered {
            let len = (durable_len - self.at).min(CHUNK.max(need) as u64) as usize;
            self.buf.resize(len, 0);
            self.file
                .read_exact_at(&mut self.buf, self.at)
                .map_err(io_error(&self.segment.path))?;
            self.buf_at = self.at;
        }
        let from = (self.at - self.buf_at) as usize;
        Ok(&self.buf[from..(end - self.buf_at) as usize])
    }
}

/// Reads entries from a sequence number on.
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    open: Option<OpenSegment>,
}

/// Bytes read from a segment at a time.
const CHUNK: usize = 256 << 10;

struct OpenSegment {
    segment: Segment,
    file: File,
    /// What was read last, from the file offset `buf_at` on.
    buf: Vec<u8>,
    buf_at: u64,
    /// Offset of the next record.
    at: u64,
    /// Sequence number of the record at `at`.
    seq: u64,
}

impl Reader {
    pub(super) fn new(shared: Arc<Shared>, next: u64) -> Self {
        Reader {
            shared,
            next,
            open: None,
        }
    }

    /// The sequence number of the next entry to read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Appends up to `max` durable entries to `out` (with each record's size
    /// in bytes summed into the return value's second part); the count read.
    pub fn read(&mut self, max: usize, out: &mut Vec<Delta>) -> Result<(usize, u64), JournalError> {
        let durable = self.shared.durable_seq.load(Ordering::Acquire);
        let mut count = 0;
        let mut bytes = 0;
        while count < max && self.next <= durable {
            let Some((delta, len)) = self.next_record()? else {
                break;
            };
            if delta.seq < self.next {
                continue;
            }
            self.next = delta.seq + 1;
            bytes += len as u64;
            out.push(delta);
            count += 1;
        }
        Ok((count, bytes))
    }

    /// The next record of the segment holding `self.next`, opening the next
    /// segment when one is finished.
    fn next_record(&mut self) -> Result<Option<(Delta, usize)>, JournalError> {
        loop {
            if self.open.is_none() {
                let segments = lock(&self.shared.segments);
                let Some(segment) = segments
                    .iter()
                    .rev()
                    .find(|s| s.first_seq <= self.next)
                    .cloned()
                else {
                    return Ok(None);
                };
                drop(segments);
                let file = File::open(&segment.path).map_err(io_error(&segment.path))?;
                self.open = Some(OpenSegment {
                    seq: segment.first_seq,
                    segment,
                    file,
                    buf: Vec::new(),
                    buf_at: 0,
                    at: 0,
                });
            }
            let open = self.open.as_mut().expect("opened above");
            // The writer may have made more of this segment durable since.
            let durable_len = lock(&self.shared.segments)
                .iter()
                .find(|s| s.first_seq == open.segment.first_seq)
                .map_or(open.segment.durable_len, |s| s.durable_len);
            if open.at >= durable_len {
                let has_next = lock(&self.shared.segments)
                    .iter()
                    .any(|s| s.first_seq > open.segment.first_seq);
                if has_next {
                    self.open = None;
                    // Continue in the next segment (first_seq == open.seq).
                    continue;
                }
                return Ok(None);
            }
            let offset = open.at;
            let header = open.bytes(8, durable_len)?;
            let body = header.get(..4).map_or(0, |b| {
                u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
            });
            // A record cut short or longer than any is corruption; decode
            // says which.
            let decoded = decode(open.bytes(8 + body.min(4096), durable_len)?);
            match decoded {
                Ok((delta, len)) => {
                    open.at += len as u64;
                    open.seq = delta.seq + 1;
                    return Ok(Some((delta, len)));
                }
                Err(m) => {
                    return Err(JournalError::Corrupt {
                        path: open.segment.path.clone(),
                        offset,
                        what: match m {
                            Malformed::Truncated => "cut short".into(),
                            Malformed::Corrupt(what) => what.into(),
                        },
                    });
                }
            }
        }
    }
}
