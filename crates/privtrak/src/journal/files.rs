//! The journal's directory: its id, its lock, its segment files and their
//! recovery at open.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{JournalError, Malformed, Segment, decode, io_error};

/// A journal's identity: random, made when the directory is first used.
/// Handlers key what they have applied by it, so a journal that was deleted
/// and started again (whose sequence numbers restart at 1) is never taken
/// for the old one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JournalId(pub [u8; 16]);

impl fmt::Display for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JournalId({self})")
    }
}

impl std::str::FromStr for JournalId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        if s.len() != 32 {
            return Err(());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or(())?, 16).map_err(|_| ())?;
        }
        Ok(JournalId(id))
    }
}

pub(super) struct Recovered {
    pub id: JournalId,
    pub lock: File,
    pub segments: Vec<Segment>,
    pub next_seq: u64,
    pub truncated: u64,
}

const SUFFIX: &str = ".log";

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SUFFIX}"))
}

/// Makes a rename or a new file in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Writes `bytes` to `dir/name` atomically (temp file, sync, rename, sync).
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_error(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

/// Opens a segment for the writer, which writes at offsets of its own (the
/// file may run past its records into zero-filled space).
pub(super) fn open_write(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

/// Creates the segment starting at `first_seq`, durable in the directory.
pub(super) fn start_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf), JournalError> {
    let path = segment_path(dir, first_seq);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

fn read_id(dir: &Path) -> Result<JournalId, JournalError> {
    let path = dir.join("id");
    match fs::read_to_string(&path) {
        Ok(text) => text.parse().map_err(|()| JournalError::Corrupt {
            path,
            offset: 0,
            what: "not a journal id".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).map_err(|e| JournalError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let id = JournalId(id);
            write_atomically(dir, "id", format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

fn take_lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| JournalError::Locked { path })?;
    Ok(file)
}

/// Opens the directory (creating it if needed), takes its lock and checks
/// every segment, cutting off a torn tail of the newest one.
pub(super) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    let lock = take_lock(dir)?;
    let id = read_id(dir)?;

    let mut firsts: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();

    let mut segments = Vec::with_capacity(firsts.len().max(1));
    let mut next_seq = firsts.first().copied().unwrap_or(1).max(1);
    let mut truncated = 0;
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        let newest = i + 1 == firsts.len();
        if i > 0 && first != next_seq {
            return Err(JournalError::Corrupt {
                path,
                offset: 0,
                what: format!(
                    "starts at entry {first}, the previous segment ends at {}",
                    next_seq - 1
                ),
            });
        }
        let (len, next, cut) = check_segment(&path, first, newest)?;
        truncated += cut;
        next_seq = next;
        segments.push(Segment {
            first_seq: first,
            path,
            durable_len: len,
        });
    }
    if segments.is_empty() {
        let (_, path) = start_segment(dir, next_seq)?;
        segments.push(Segment {
            first_seq: next_seq,
            path,
            durable_len: 0,
        });
    }
    Ok(Recovered {
        id,
        lock,
        segments,
        next_seq,
        truncated,
    })
}

/// Checks one segment: its valid length, the sequence number after its last
/// record, and how many bytes of torn tail were cut (newest segment only).
fn check_segment(path: &Path, first: u64, newest: bool) -> Result<(u64, u64, u64), JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    let (at, expect) =
        scan_segment(&bytes, first, newest).map_err(|(offset, what)| JournalError::Corrupt {
            path: path.to_owned(),
            offset,
            what,
        })?;
    let rest = &bytes[at..];
    // Zeros past the records are the writer's preallocated space, not a
    // torn write.
    let cut = if rest.iter().all(|&b| b == 0) {
        0
    } else {
        rest.len() as u64
    };
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    if cut > 0 {
        tracing::warn!(path = %path.display(), bytes = cut, "privtrak journal: cut off a torn tail");
    }
    if !rest.is_empty() {
        file.set_len(at as u64).map_err(io_error(path))?;
    }
    // What a killed process left in the page cache counts as written only
    // once it is on disk.
    file.sync_all().map_err(io_error(path))?;
    Ok((at as u64, expect, cut))
}

/// Reads a segment's bytes as recovery does: the length of its whole
/// records, numbered from `first` on, and the sequence number after the
/// last. In the `newest` segment a torn tail ends the records; anywhere
/// else, and for a record out of sequence, the offset and what is wrong.
pub fn scan_segment(bytes: &[u8], first: u64, newest: bool) -> Result<(usize, u64), (u64, String)> {
    let mut at = 0usize;
    let mut expect = first;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Ok((delta, len)) if delta.seq == expect => {
                at += len;
                expect += 1;
            }
            Ok((delta, _)) => {
                return Err((
                    at as u64,
                    format!("entry {} where {expect} was expected", delta.seq),
                ));
            }
            Err(Malformed::Truncated) if newest => break,
            // A torn write can leave anything after the last whole record in
            // the newest segment; elsewhere it is damage.
            Err(Malformed::Corrupt(_)) if newest && tail_is_torn(&bytes[at..]) => break,
            Err(m) => {
                let what = match m {
                    Malformed::Truncated => "cut short".into(),
                    Malformed::Corrupt(what) => what.into(),
                };
                return Err((at as u64, what));
            }
        }
    }
    Ok((at, expect))
}

/// Whether a bad record at the end of the newest segment can be a torn
/// write: no whole valid record follows it. (A valid record after a bad one
/// means the damage is in the middle of the data.)
fn tail_is_torn(rest: &[u8]) -> bool {
    (1..rest.len()).all(|i| decode(&rest[i..]).is_err())
}
