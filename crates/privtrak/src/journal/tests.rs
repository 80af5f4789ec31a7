//! The journal against real files: group sync, reopening, torn tails,
//! segments, trimming, the lock.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use bittorrent::{InfoHash, PeerId};

use super::*;
use crate::UserId;
use crate::delta::DeltaEvent;

fn delta(n: u64) -> Delta {
    Delta {
        seq: 0,
        user: UserId([n as u8; 16]),
        info_hash: InfoHash([1; 20]),
        peer_id: PeerId([2; 20]),
        addr: Some("127.0.0.1:6881".parse().unwrap()),
        event: DeltaEvent::None,
        uploaded: n,
        downloaded: 2 * n,
        left: 1,
        seed_seconds: 0,
        leech_seconds: 1,
        reported_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n),
        total_uploaded: 10 * n,
        total_downloaded: 20 * n,
        site_user: None,
        upload_factor: 1.0,
        download_factor: 1.0,
        baseline_unknown: false,
    }
}

fn open(dir: &Path) -> Opened {
    Journal::open(dir, Duration::from_millis(1), SEGMENT_BYTES).unwrap()
}

fn read_all(j: &Journal, from: u64) -> Vec<Delta> {
    let mut out = Vec::new();
    let mut r = j.reader(from);
    while r.read(1000, &mut out).unwrap().0 > 0 {}
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A journal in `dir` with entries 1..=10 on disk, closed.
fn write_ten(dir: &Path) {
    let o = open(dir);
    for n in 1..=10 {
        o.journal.append(&mut delta(n)).unwrap();
    }
    runtime().block_on(o.journal.durable(10)).unwrap();
}

#[test]
fn appended_entries_become_durable_in_order_and_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let o = open(&dir);
    assert_eq!((o.first_seq, o.last_seq), (1, 0));
    let id = o.journal.id();
    let seqs: Vec<u64> = (1..=100)
        .map(|n| o.journal.append(&mut delta(n)).unwrap())
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    runtime().block_on(o.journal.durable(100)).unwrap();
    assert_eq!(o.journal.durable_seq(), 100);
    assert!(o.journal.syncs() >= 1);
    let read = read_all(&o.journal, 1);
    assert_eq!(read.len(), 100);
    for (i, d) in read.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1);
        assert_eq!(d.uploaded, i as u64 + 1);
    }
    // From the middle.
    assert_eq!(read_all(&o.journal, 60)[0].seq, 60);
    drop(o);

    let o = open(&dir);
    assert_eq!(o.journal.id(), id, "the id is kept");
    assert_eq!((o.first_seq, o.last_seq, o.truncated), (1, 100, 0));
    assert_eq!(o.journal.append(&mut delta(101)).unwrap(), 101);
    runtime().block_on(o.journal.durable(101)).unwrap();
    assert_eq!(read_all(&o.journal, 1).len(), 101);
}

#[test]
fn many_appends_share_few_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Journal::open(tmp.path(), Duration::from_millis(20), SEGMENT_BYTES).unwrap();
    let rt = runtime();
    let last = (1..=2000)
        .map(|n| o.journal.append(&mut delta(n)).unwrap())
        .last()
        .unwrap();
    rt.block_on(o.journal.durable(last)).unwrap();
    // A sync takes a whole group of 64 at least, or what the interval
    // gathered.
    let most = 2000 / GROUP_ENTRIES as u64 + 2;
    assert!(o.journal.syncs() <= most, "{} syncs", o.journal.syncs());
}

#[test]
fn a_full_group_is_synced_without_waiting_out_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Journal::open(tmp.path(), Duration::from_secs(3600), SEGMENT_BYTES).unwrap();
    let rt = runtime();
    // The first entry after a quiet spell is synced at once; the next wait
    // out the hour unless a group fills.
    o.journal.append(&mut delta(1)).unwrap();
    rt.block_on(o.journal.durable(1)).unwrap();
    let group = GROUP_ENTRIES as u64;
    for n in 2..=group {
        o.journal.append(&mut delta(n)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(o.journal.durable_seq(), 1, "a group short of 64 waits");
    let last = o.journal.append(&mut delta(group + 1)).unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), o.journal.durable(last)).await
    })
    .expect("synced with the group full, not after the hour")
    .unwrap();
    // A close does not wait out the interval either.
    o.journal.append(&mut delta(group + 2)).unwrap();
    o.journal.close();
    let reopened = Journal::open(tmp.path(), Duration::from_secs(3600), SEGMENT_BYTES).unwrap();
    assert_eq!(reopened.last_seq, group + 2);
}

#[test]
fn a_torn_tail_is_cut_off_and_the_sequence_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_ten(&dir);
    let segment = dir.join(format!("{:020}.log", 1));
    // Half a record, as a crash in the middle of a write leaves it.
    let mut torn = Vec::new();
    codec::encode(
        &Delta {
            seq: 11,
            ..delta(11)
        },
        &mut torn,
    );
    let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
    f.write_all(&torn[..RECORD_LEN / 2]).unwrap();
    drop(f);

    let o = open(&dir);
    assert_eq!(o.last_seq, 10);
    assert_eq!(o.truncated, (RECORD_LEN / 2) as u64);
    assert_eq!(o.journal.append(&mut delta(11)).unwrap(), 11);
    runtime().block_on(o.journal.durable(11)).unwrap();
    let all = read_all(&o.journal, 1);
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].uploaded, 11);
}

#[test]
fn damage_before_the_tail_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_ten(&dir);
    let segment = dir.join(format!("{:020}.log", 1));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[3 * RECORD_LEN + 50] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let e = Journal::open(&dir, Duration::from_millis(1), SEGMENT_BYTES).unwrap_err();
    match e {
        JournalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, segment);
            assert_eq!(offset, 3 * RECORD_LEN as u64);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn segments_rotate_are_read_across_and_trimmed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    // Ten records a segment.
    let o = Journal::open(&dir, Duration::ZERO, 10 * RECORD_LEN as u64).unwrap();
    let rt = runtime();
    for n in 1..=35 {
        let seq = o.journal.append(&mut delta(n)).unwrap();
        // One sync each, so the segments fill exactly.
        rt.block_on(o.journal.durable(seq)).unwrap();
    }
    assert_eq!(o.journal.segment_count(), 4);
    let all = read_all(&o.journal, 1);
    assert_eq!(
        all.iter().map(|d| d.seq).collect::<Vec<_>>(),
        (1..=35).collect::<Vec<_>>()
    );
    assert_eq!(read_all(&o.journal, 25)[0].seq, 25);

    // Everything up to 19 acknowledged: the first segment (1..=10) goes;
    // the second (11..=20) still holds 20.
    o.journal.trim_through(19).unwrap();
    assert_eq!(o.journal.segment_count(), 3);
    o.journal.trim_through(35).unwrap();
    assert_eq!(o.journal.segment_count(), 1, "the newest segment stays");
    drop(o);
    let o = open(&dir);
    assert_eq!((o.first_seq, o.last_seq), (31, 35));
    assert_eq!(o.journal.append(&mut delta(36)).unwrap(), 36);
}

#[test]
fn one_process_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let o = open(tmp.path());
    match Journal::open(tmp.path(), Duration::ZERO, SEGMENT_BYTES) {
        Err(JournalError::Locked { .. }) => {}
        other => panic!("{other:?}"),
    }
    o.journal.close();
    // Closed: the directory is free again.
    let _again = open(tmp.path());
}

#[test]
fn a_missing_parent_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no/such/dir");
    let e = Journal::open(&dir, Duration::ZERO, SEGMENT_BYTES).unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}

/// The segment's one file in `dir`.
fn segment_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.pop().unwrap()
}

#[test]
fn the_zero_filled_space_ahead_of_the_records_is_cut_at_close_and_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let rt = runtime();
    let o = open(&dir);
    // More than a reader's chunk (256 KiB), read while the writer goes on.
    for n in 1..=2000 {
        o.journal.append(&mut delta(n)).unwrap();
    }
    rt.block_on(o.journal.durable(2000)).unwrap();
    let mut out = Vec::new();
    let mut reader = o.journal.reader(1);
    while reader.read(700, &mut out).unwrap().0 > 0 {}
    for n in 2001..=3000 {
        o.journal.append(&mut delta(n)).unwrap();
    }
    rt.block_on(o.journal.durable(3000)).unwrap();
    while reader.read(700, &mut out).unwrap().0 > 0 {}
    let seqs: Vec<u64> = out.iter().map(|d| d.seq).collect();
    assert_eq!(
        seqs,
        (1..=3000).collect::<Vec<_>>(),
        "never a zero read as a record"
    );

    // Open, the file runs past its records into zeros.
    let records = 3000 * RECORD_LEN as u64;
    let file = segment_file(&dir);
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(
        len > records,
        "{len} bytes for {records} of records: nothing zero-filled"
    );
    let tail = std::fs::read(&file).unwrap().split_off(records as usize);
    assert!(tail.iter().all(|&b| b == 0));

    // A crash leaves them: a copy of the directory as a killed process
    // would leave it opens with nothing cut as torn and every entry back.
    let crashed = tmp.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, crashed.join(path.file_name().unwrap())).unwrap();
    }
    let c = open(&crashed);
    assert_eq!((c.last_seq, c.truncated), (3000, 0));
    assert_eq!(read_all(&c.journal, 1).len(), 3000);
    assert_eq!(c.journal.append(&mut delta(3001)).unwrap(), 3001);
    rt.block_on(c.journal.durable(3001)).unwrap();
    drop(c);
    let c = open(&crashed);
    assert_eq!((c.last_seq, c.truncated), (3001, 0));
    drop(c);

    // A close cuts them.
    drop(o);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), records);
}
