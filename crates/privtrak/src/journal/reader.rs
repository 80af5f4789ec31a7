//! Reading durable entries back, in order: the drain hands them to the
//! handler, and a start replays them into the records.
//!
//! The reader goes to the files, not to a copy in memory: the journal may
//! hold far more than memory should (everything a handler that is down has
//! not taken), and what was just written is in the page cache anyway.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{JournalError, Malformed, Segment, Shared, decode, io_error, lock};
use crate::delta::Delta;

/// Reads entries from a sequence number on.
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    open: Option<OpenSegment>,
    buf: Vec<u8>,
}

struct OpenSegment {
    segment: Segment,
    file: BufReader<File>,
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
            buf: Vec::with_capacity(256),
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
                let mut file = File::open(&segment.path).map_err(io_error(&segment.path))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(io_error(&segment.path))?;
                self.open = Some(OpenSegment {
                    seq: segment.first_seq,
                    segment,
                    file: BufReader::with_capacity(256 << 10, file),
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
            self.buf.resize(8, 0);
            open.file
                .read_exact(&mut self.buf[..8])
                .map_err(io_error(&open.segment.path))?;
            let body = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
            self.buf.resize(8 + body.min(4096), 0);
            open.file
                .read_exact(&mut self.buf[8..])
                .map_err(io_error(&open.segment.path))?;
            let offset = open.at;
            match decode(&self.buf) {
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
