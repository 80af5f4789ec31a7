//! Writes the binary seed inputs of the fuzz corpus (`fuzz/corpus/`): a
//! journal record of each shape and BEP 15 requests. Text seeds are files
//! written by hand.
//!
//!     cargo run -p fuzz-targets --example seeds

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bittorrent::{InfoHash, PeerId};
use privtrak::{Delta, DeltaEvent, UserId};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let delta = |seq: u64, addr: Option<&str>, site_user: Option<i64>| Delta {
        seq,
        user: UserId([7; 16]),
        info_hash: InfoHash([8; 20]),
        peer_id: PeerId([9; 20]),
        addr: addr.map(|a| a.parse().unwrap()),
        event: DeltaEvent::Completed,
        uploaded: 1 << 40,
        downloaded: 12345,
        left: 0,
        seed_seconds: 60,
        leech_seconds: 1,
        reported_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        total_uploaded: u64::MAX,
        total_downloaded: 99,
        site_user,
        upload_factor: 2.0,
        download_factor: 0.0,
        baseline_unknown: false,
    };
    let mut two = Vec::new();
    privtrak::journal::encode(&delta(1, Some("10.1.2.3:6881"), Some(-5)), &mut two);
    privtrak::journal::encode(&delta(2, Some("[2001:db8::1]:6881"), None), &mut two);
    write("journal_record", "seed-v4-and-v6", &two);
    let mut expiry = Vec::new();
    privtrak::journal::encode(&delta(3, None, None), &mut expiry);
    write("journal_record", "seed-expiry", &expiry);
    // A newest segment of two records and a torn third.
    let mut segment = vec![1u8];
    segment.extend_from_slice(&two);
    segment.extend_from_slice(&expiry[..expiry.len() / 2]);
    write("journal_segment", "seed-torn-tail", &segment);

    let mut connect = Vec::new();
    connect.extend_from_slice(&bittorrent::udp::PROTOCOL_ID.to_be_bytes());
    connect.extend_from_slice(&0u32.to_be_bytes());
    connect.extend_from_slice(&7u32.to_be_bytes());
    write("udp_request", "seed-connect", &connect);
    let announce =
        frontend_udp::client::AnnounceParams::new(InfoHash([1; 20]), PeerId([2; 20]), 6881)
            .with_url_data(b"/0123456789abcdef0123456789abcdef/announce?jwt=x");
    write(
        "udp_request",
        "seed-announce-bep41",
        &announce.encode(42, 9),
    );
    let mut scrape = Vec::new();
    scrape.extend_from_slice(&42u64.to_be_bytes());
    scrape.extend_from_slice(&bittorrent::udp::ACTION_SCRAPE.to_be_bytes());
    scrape.extend_from_slice(&10u32.to_be_bytes());
    scrape.extend_from_slice(&[3; 40]);
    write("udp_request", "seed-scrape", &scrape);
    write(
        "bep41_options",
        "seed-url-data",
        &announce.encode(42, 9)[98..],
    );
}
