//! Snapshots of the baselines, for handlers that do not keep them.
//!
//! A start restores baselines from the snapshot and then replays every
//! journal entry after the snapshot's position over them, so the journal
//! only has to keep entries the snapshot does not cover (and the handler has
//! not acknowledged). Entries carry absolute counters, so replaying one the
//! snapshot already reflects sets the same baseline again: harmless.
//!
//! ```text
//! file   = "KRTSNAP1" | journal id: [16] | through: u64 | count: u64 | record* | crc32: u32 (of all before)
//! record = user: [16] | info_hash: [20] | peer_id: [20] | uploaded: u64 | downloaded: u64
//!          | last_seen: u32 | seeding: u8
//! ```

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bittorrent::{InfoHash, PeerId};

use super::files::{JournalId, sync_dir};
use super::{JournalError, io_error};
use crate::UserId;
use crate::delta::Baseline;
use crate::records::PeerRecord;

const MAGIC: &[u8; 8] = b"KRTSNAP1";
const NAME: &str = "snapshot";
const RECORD: usize = 16 + 20 + 20 + 8 + 8 + 4 + 1;

/// A snapshot being written: records go straight to a temp file.
pub struct SnapshotWriter {
    file: BufWriter<File>,
    crc: crc32fast::Hasher,
    count: u64,
    tmp: std::path::PathBuf,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, journal: JournalId, through: u64) -> Result<Self, JournalError> {
        let tmp = dir.join(format!("{NAME}.tmp"));
        let file = File::create(&tmp).map_err(io_error(&tmp))?;
        let mut w = SnapshotWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            count: 0,
            tmp,
        };
        w.put(MAGIC)?;
        w.put(&journal.0)?;
        w.put(&through.to_le_bytes())?;
        // The count is not known yet: a placeholder, rewritten at the end.
        w.file.write_all(&[0; 8]).map_err(io_error(&w.tmp))?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        self.crc.update(bytes);
        self.file.write_all(bytes).map_err(io_error(&self.tmp))
    }

    pub fn record(&mut self, r: &PeerRecord) -> Result<(), JournalError> {
        let mut buf = [0u8; RECORD];
        buf[..16].copy_from_slice(&r.user.0);
        buf[16..36].copy_from_slice(&r.info_hash.0);
        buf[36..56].copy_from_slice(&r.peer_id.0);
        buf[56..64].copy_from_slice(&r.baseline.uploaded.to_le_bytes());
        buf[64..72].copy_from_slice(&r.baseline.downloaded.to_le_bytes());
        buf[72..76].copy_from_slice(&r.baseline.last_seen.to_le_bytes());
        buf[76] = u8::from(r.baseline.seeding);
        self.count += 1;
        self.put(&buf)
    }

    /// Syncs the snapshot and puts it in place of the previous one.
    pub fn finish(self, dir: &Path) -> Result<u64, JournalError> {
        use std::io::{Seek, SeekFrom};
        let SnapshotWriter {
            file,
            mut crc,
            count,
            tmp,
        } = self;
        let mut file = file
            .into_inner()
            .map_err(|e| io_error(&tmp)(e.into_error()))?;
        let count_bytes = count.to_le_bytes();
        crc.update(&count_bytes);
        file.write_all(&crc.finalize().to_le_bytes())
            .and_then(|()| file.seek(SeekFrom::Start(8 + 16 + 8)).map(drop))
            .and_then(|()| file.write_all(&count_bytes))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        let path = dir.join(NAME);
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(dir)?;
        Ok(count)
    }
}

/// A snapshot's header, read before its records.
#[derive(Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub journal: JournalId,
    /// Every journal entry up to this one is reflected.
    pub through: u64,
    pub count: u64,
}

/// Reads the snapshot in `dir` of journal `journal`, if there is one,
/// passing each record to `visit` (so a million records need no second copy
/// in memory). A snapshot of another journal is ignored (with a warning).
/// The checksum is verified at the end: on a mismatch the records already
/// visited must be thrown away, which the caller does by failing the start.
pub fn load(
    dir: &Path,
    journal: JournalId,
    mut visit: impl FnMut(PeerRecord),
) -> Result<Option<SnapshotHeader>, JournalError> {
    let path = dir.join(NAME);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let corrupt = |what: &str| JournalError::Corrupt {
        path: path.clone(),
        offset: 0,
        what: what.into(),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut head = [0u8; 8 + 16 + 8 + 8];
    r.read_exact(&mut head)
        .map_err(|_| corrupt("shorter than a snapshot header"))?;
    if &head[..8] != MAGIC {
        return Err(corrupt("not a privtrak snapshot"));
    }
    crc.update(&head[..32]);
    let of = JournalId(head[8..24].try_into().expect("16 bytes"));
    if of != journal {
        tracing::warn!(snapshot = %of, journal = %journal, "privtrak: the snapshot belongs to another journal; ignoring it");
        return Ok(None);
    }
    let through = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
    let mut buf = [0u8; RECORD];
    for _ in 0..count {
        r.read_exact(&mut buf)
            .map_err(|_| corrupt("fewer records than its header says"))?;
        crc.update(&buf);
        visit(PeerRecord {
            user: UserId(buf[..16].try_into().expect("16 bytes")),
            info_hash: InfoHash(buf[16..36].try_into().expect("20 bytes")),
            peer_id: PeerId(buf[36..56].try_into().expect("20 bytes")),
            baseline: Baseline {
                uploaded: u64::from_le_bytes(buf[56..64].try_into().expect("8 bytes")),
                downloaded: u64::from_le_bytes(buf[64..72].try_into().expect("8 bytes")),
                last_seen: u32::from_le_bytes(buf[72..76].try_into().expect("4 bytes")),
                seeding: buf[76] != 0,
            },
        });
    }
    crc.update(&count.to_le_bytes());
    let mut trailer = [0u8; 4];
    r.read_exact(&mut trailer)
        .map_err(|_| corrupt("no checksum"))?;
    if u32::from_le_bytes(trailer) != crc.finalize() {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(SnapshotHeader {
        journal,
        through,
        count,
    }))
}
