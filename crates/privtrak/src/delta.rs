//! What one announce is worth: the rules that turn a peer's reported counters
//! into credit, and the [`Delta`] they produce.
//!
//! Clients report cumulative `uploaded`/`downloaded` counters. A peer's
//! baseline is what it reported last; a delta is the difference. The rules are
//! written once here, as a pure function, so the hook, the journal replay and
//! the tests all agree (privtrak's own flaws are listed beside each rule):
//!
//! - The first sighting of a peer sets its baseline and credits nothing (as
//!   privtrak), and is delivered so the handler learns the peer.
//! - `started` starts a new baseline and credits nothing.
//! - A counter below the baseline (a client restarted without `started`)
//!   credits nothing for either counter and resets the baseline (privtrak
//!   passed the negative delta on).
//! - Otherwise the delta is reported − baseline; the time since the last
//!   announce, capped at the peer lifetime, counts as seeding or leeching by
//!   what the peer was (privtrak counted no time).
//! - A delta is delivered when it credits bytes or time, carries an event or
//!   moves the baseline; a repeated announce within the same second with the
//!   same counters changes nothing worth delivering.
//! - `stopped` delivers the last delta and closes the record; a `stopped`
//!   from an unknown peer credits nothing and delivers nothing.
//! - `completed` is always delivered: sites count snatches from it (privtrak
//!   dropped it when it carried no bytes).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bittorrent::{Event, InfoHash, PeerId};

use crate::UserId;

/// What a delta reports happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeltaEvent {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
    Paused,
    /// privtrak removed the record: the peer was not seen for the peer
    /// lifetime.
    Expired,
}

impl DeltaEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaEvent::None => "none",
            DeltaEvent::Started => "started",
            DeltaEvent::Completed => "completed",
            DeltaEvent::Stopped => "stopped",
            DeltaEvent::Paused => "paused",
            DeltaEvent::Expired => "expired",
        }
    }

    /// Whether the record of the peer is gone after this delta.
    pub fn closes(self) -> bool {
        matches!(self, DeltaEvent::Stopped | DeltaEvent::Expired)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            DeltaEvent::None => 0,
            DeltaEvent::Started => 1,
            DeltaEvent::Completed => 2,
            DeltaEvent::Stopped => 3,
            DeltaEvent::Paused => 4,
            DeltaEvent::Expired => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DeltaEvent::None,
            1 => DeltaEvent::Started,
            2 => DeltaEvent::Completed,
            3 => DeltaEvent::Stopped,
            4 => DeltaEvent::Paused,
            5 => DeltaEvent::Expired,
            _ => return None,
        })
    }
}

impl From<Event> for DeltaEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::None => DeltaEvent::None,
            Event::Started => DeltaEvent::Started,
            Event::Completed => DeltaEvent::Completed,
            Event::Stopped => DeltaEvent::Stopped,
            Event::Paused => DeltaEvent::Paused,
        }
    }
}

/// One peer's contribution since its previous delta.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// Position in privtrak's journal: unique and increasing, the order in
    /// which deltas happened.
    pub seq: u64,
    pub user: UserId,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Where the peer announced from; `None` for an expiry (no announce).
    pub addr: Option<SocketAddr>,
    pub event: DeltaEvent,
    /// Bytes credited: never negative, never counted twice.
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes the peer still needs, as reported.
    pub left: u64,
    pub seed_seconds: u32,
    pub leech_seconds: u32,
    pub reported_at: SystemTime,
    /// The counters as reported: the peer's baseline after this delta (what
    /// a restart restores, and what a handler keeping baselines stores).
    pub total_uploaded: u64,
    pub total_downloaded: u64,
    /// The site's user id, when a hook named the user (passkey approval).
    pub site_user: Option<i64>,
    /// What the bytes are credited at (user factor × torrent factor, download
    /// 0 under freeleech), as in force when they were reported; raw bytes
    /// stay as reported.
    pub upload_factor: f32,
    pub download_factor: f32,
    /// privtrak had no record of this peer while it did not yet hold the
    /// handler's baselines (it started without the handler and without a
    /// snapshot of its own): the delta credits nothing, and a handler that
    /// keeps baselines credits `total_*` against the one it stored, by the
    /// same rules ([`credit_against`]). Also set on a `stopped` of such a
    /// peer, which is then delivered so the stored baseline goes.
    pub baseline_unknown: bool,
}

impl Delta {
    /// The credited bytes: raw × factor, rounded.
    pub fn credited(&self) -> (u64, u64) {
        let credit =
            |bytes: u64, factor: f32| (bytes as f64 * f64::from(factor.max(0.0))).round() as u64;
        (
            credit(self.uploaded, self.upload_factor),
            credit(self.downloaded, self.download_factor),
        )
    }

    /// Unix time of the report in milliseconds.
    pub fn reported_at_ms(&self) -> u64 {
        unix_ms(self.reported_at)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What privtrak keeps of a peer between announces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    pub uploaded: u64,
    pub downloaded: u64,
    /// Unix seconds of the last announce.
    pub last_seen: u32,
    /// Whether the peer had nothing left to download at its last announce.
    pub seeding: bool,
}

/// The part of an announce the rules look at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Report {
    pub event: DeltaEvent,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    /// Unix seconds.
    pub now: u32,
}

/// The credit of one announce, when there is something to deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Credit {
    pub uploaded: u64,
    pub downloaded: u64,
    pub seed_seconds: u32,
    pub leech_seconds: u32,
}

/// The rules' verdict: the peer's baseline afterwards (`None`: no record) and
/// what to deliver (`None`: nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub next: Option<Baseline>,
    pub credit: Option<Credit>,
}

/// Applies one announce to a peer's baseline. `lifetime` caps the time one
/// gap between announces can earn (seconds).
pub(crate) fn account(prev: Option<&Baseline>, r: &Report, lifetime: u32) -> Outcome {
    let reported = Baseline {
        uploaded: r.uploaded,
        downloaded: r.downloaded,
        last_seen: r.now,
        seeding: r.left == 0,
    };
    let closes = r.event == DeltaEvent::Stopped;
    let next = (!closes).then_some(reported);
    let Some(prev) = prev else {
        // First sighting: a baseline, no credit. An unknown peer's `stopped`
        // leaves nothing to close.
        let credit = (!closes).then_some(Credit::default());
        return Outcome { next, credit };
    };
    let went_back = r.uploaded < prev.uploaded || r.downloaded < prev.downloaded;
    if r.event == DeltaEvent::Started || went_back {
        // A new session: the old counters say nothing about this one.
        return Outcome {
            next,
            credit: Some(Credit::default()),
        };
    }
    let gap = r.now.saturating_sub(prev.last_seen).min(lifetime);
    let credit = Credit {
        uploaded: r.uploaded - prev.uploaded,
        downloaded: r.downloaded - prev.downloaded,
        seed_seconds: if prev.seeding { gap } else { 0 },
        leech_seconds: if prev.seeding { 0 } else { gap },
    };
    let worth_delivering = credit != Credit::default()
        || r.event != DeltaEvent::None
        || prev.seeding != reported.seeding;
    Outcome {
        next,
        credit: worth_delivering.then_some(credit),
    }
}

/// What a delta with [`Delta::baseline_unknown`] credits against `stored`,
/// the baseline a handler kept for its peer: the rules of every announce,
/// the delta's reported totals against the stored ones, the time capped at
/// `lifetime` seconds (privtrak's `peer_lifetime`). The delta, credited.
pub fn credit_against(d: &Delta, stored: &Baseline, lifetime: u32) -> Delta {
    let report = Report {
        event: d.event,
        uploaded: d.total_uploaded,
        downloaded: d.total_downloaded,
        left: d.left,
        now: crate::privtrak::unix_secs(d.reported_at),
    };
    let credit = account(Some(stored), &report, lifetime)
        .credit
        .unwrap_or_default();
    Delta {
        uploaded: credit.uploaded,
        downloaded: credit.downloaded,
        seed_seconds: credit.seed_seconds,
        leech_seconds: credit.leech_seconds,
        baseline_unknown: false,
        ..d.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: u32 = 1800;

    fn report(event: DeltaEvent, up: u64, down: u64, left: u64, now: u32) -> Report {
        Report {
            event,
            uploaded: up,
            downloaded: down,
            left,
            now,
        }
    }

    /// Runs a chain of announces of one peer; the credits delivered.
    fn chain(reports: &[Report]) -> Vec<Option<Credit>> {
        let mut baseline = None;
        reports
            .iter()
            .map(|r| {
                let o = account(baseline.as_ref(), r, LIFE);
                baseline = o.next;
                o.credit
            })
            .collect()
    }

    fn bytes(up: u64, down: u64) -> Option<Credit> {
        Some(Credit {
            uploaded: up,
            downloaded: down,
            ..Credit::default()
        })
    }

    use DeltaEvent::{Completed, Paused, Started, Stopped};
    const NONE: DeltaEvent = DeltaEvent::None;

    #[test]
    fn a_delta_of_an_unknown_peer_is_credited_against_a_stored_baseline() {
        let stored = Baseline {
            uploaded: 1000,
            downloaded: 400,
            last_seen: 1_000,
            seeding: true,
        };
        let d = |event, up, down| Delta {
            seq: 9,
            user: UserId([1; 16]),
            info_hash: InfoHash([2; 20]),
            peer_id: PeerId([3; 20]),
            addr: None,
            event,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            seed_seconds: 0,
            leech_seconds: 0,
            reported_at: UNIX_EPOCH + Duration::from_secs(1_060),
            total_uploaded: up,
            total_downloaded: down,
            site_user: None,
            upload_factor: 1.0,
            download_factor: 1.0,
            baseline_unknown: true,
        };
        let c = credit_against(&d(NONE, 1500, 450), &stored, LIFE);
        assert_eq!(
            (c.uploaded, c.downloaded, c.seed_seconds, c.leech_seconds),
            (500, 50, 60, 0)
        );
        assert!(!c.baseline_unknown);
        // A stop delivers its last bytes; a new session and a counter that
        // went back credit nothing, as for any announce.
        let c = credit_against(&d(Stopped, 1200, 400), &stored, LIFE);
        assert_eq!((c.uploaded, c.downloaded, c.event), (200, 0, Stopped));
        assert_eq!(
            credit_against(&d(Started, 1500, 450), &stored, LIFE).uploaded,
            0
        );
        assert_eq!(
            credit_against(&d(NONE, 900, 450), &stored, LIFE).downloaded,
            0
        );
    }

    // privtrak's four chains (its README and tests), with karuta's results.

    #[test]
    fn privtrak_chain_first_sighting_is_a_baseline() {
        // {0, 100, None}: privtrak emits nothing; karuta delivers the new
        // peer with no credit.
        assert_eq!(chain(&[report(NONE, 0, 100, 5, 10)]), [bytes(0, 0)]);
    }

    #[test]
    fn privtrak_chain_stopped_unknown_peer_credits_nothing() {
        // {200, 100, Stopped} from a peer never seen: nothing.
        assert_eq!(chain(&[report(Stopped, 200, 100, 5, 10)]), [None]);
    }

    #[test]
    fn privtrak_chain_then_stopped() {
        // {200,100,None}, {300,100,Stopped}: the stop delivers +100 up.
        assert_eq!(
            chain(&[
                report(NONE, 200, 100, 5, 10),
                report(Stopped, 300, 100, 5, 10)
            ]),
            [bytes(0, 0), bytes(100, 0)]
        );
    }

    #[test]
    fn privtrak_chain_interleaved_users_never_negative() {
        // privtrak keyed records by (user, info hash), so two users' chains
        // on one torrent were independent but a counter that went down gave
        // -800. Here each user is its own chain; the drop credits nothing.
        let user_a = chain(&[
            report(NONE, 1000, 0, 5, 10),
            report(NONE, 200, 0, 5, 11), // went back: reset, no credit
            report(NONE, 500, 0, 5, 12), // +300 from the new baseline
        ]);
        let user_b = chain(&[report(NONE, 10, 10, 5, 10), report(NONE, 20, 30, 5, 11)]);
        assert_eq!(
            user_a,
            [
                bytes(0, 0),
                bytes(0, 0),
                Some(Credit {
                    uploaded: 300,
                    leech_seconds: 1,
                    ..Credit::default()
                })
            ]
        );
        assert_eq!(
            user_b,
            [
                bytes(0, 0),
                Some(Credit {
                    uploaded: 10,
                    downloaded: 20,
                    leech_seconds: 1,
                    ..Credit::default()
                })
            ]
        );
    }

    #[test]
    fn a_counter_reset_credits_neither_counter() {
        // Upload went down while download went up: both deltas are 0.
        let c = chain(&[report(NONE, 500, 100, 5, 10), report(NONE, 10, 900, 5, 20)]);
        assert_eq!(c, [bytes(0, 0), bytes(0, 0)]);
    }

    #[test]
    fn started_starts_a_new_baseline() {
        let c = chain(&[
            report(NONE, 500, 100, 5, 10),
            report(Started, 600, 200, 5, 20),
            report(NONE, 650, 200, 5, 30),
        ]);
        assert_eq!(
            c,
            [
                bytes(0, 0),
                bytes(0, 0),
                Some(Credit {
                    uploaded: 50,
                    leech_seconds: 10,
                    ..Credit::default()
                })
            ]
        );
    }

    #[test]
    fn a_duplicate_announce_credits_nothing_twice() {
        let c = chain(&[
            report(NONE, 100, 100, 5, 10),
            report(NONE, 300, 100, 5, 20),
            report(NONE, 300, 100, 5, 20), // the same announce again, same second
        ]);
        assert_eq!(c[1].unwrap().uploaded, 200);
        assert_eq!(c[2], None);
    }

    #[test]
    fn a_seeder_earns_seed_time_without_bytes() {
        let c = chain(&[report(NONE, 0, 0, 0, 100), report(NONE, 0, 0, 0, 160)]);
        assert_eq!(
            c[1],
            Some(Credit {
                seed_seconds: 60,
                ..Credit::default()
            })
        );
    }

    #[test]
    fn time_is_capped_at_the_lifetime_and_goes_to_what_the_peer_was() {
        let c = chain(&[
            report(NONE, 0, 0, 10, 100),
            report(NONE, 0, 10, 0, 100 + 5000), // was leeching, now seeding
            report(NONE, 0, 10, 0, 100 + 5030),
        ]);
        assert_eq!(
            c[1],
            Some(Credit {
                downloaded: 10,
                leech_seconds: LIFE,
                ..Credit::default()
            })
        );
        assert_eq!(
            c[2],
            Some(Credit {
                seed_seconds: 30,
                ..Credit::default()
            })
        );
        // A clock that went back earns nothing, and never underflows.
        let c = chain(&[report(NONE, 0, 0, 0, 100), report(NONE, 0, 0, 0, 50)]);
        assert_eq!(c[1], None);
    }

    #[test]
    fn completed_is_always_delivered() {
        let c = chain(&[
            report(NONE, 0, 100, 0, 10),
            report(Completed, 0, 100, 0, 10), // no bytes, same second
        ]);
        assert_eq!(c[1], Some(Credit::default()));
        // Even as the first sighting.
        assert_eq!(chain(&[report(Completed, 5, 5, 0, 1)]), [bytes(0, 0)]);
        // And paused is an event too.
        let c = chain(&[report(NONE, 0, 0, 5, 10), report(Paused, 0, 0, 5, 10)]);
        assert_eq!(c[1], Some(Credit::default()));
    }

    #[test]
    fn stopped_closes_the_record_with_its_last_delta() {
        let mut baseline = None;
        for r in [report(NONE, 0, 0, 5, 10), report(Stopped, 40, 60, 5, 20)] {
            let o = account(baseline.as_ref(), &r, LIFE);
            baseline = o.next;
            if r.event == Stopped {
                assert_eq!(
                    o.credit,
                    Some(Credit {
                        uploaded: 40,
                        downloaded: 60,
                        leech_seconds: 10,
                        ..Credit::default()
                    })
                );
            }
        }
        assert_eq!(baseline, None);
    }

    #[test]
    fn becoming_a_seeder_moves_the_baseline_and_is_delivered() {
        let c = chain(&[report(NONE, 0, 100, 5, 10), report(NONE, 0, 100, 0, 10)]);
        assert_eq!(c[1], Some(Credit::default()));
    }
}
