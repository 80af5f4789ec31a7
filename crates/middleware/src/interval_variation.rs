//! `interval variation`: adds a random number of seconds to the announce
//! interval of some replies, so clients that started together drift apart
//! instead of announcing in waves. The randomness is derived from the info hash
//! and the peer id (xorshift128+, as in chihaya), so a client gets the same
//! variation each time and a restart of the tracker changes nothing.

use std::time::Duration;

use bittorrent::{AnnounceRequest, AnnounceResponse};
use serde::Deserialize;
use tracker::{ConfigError, DriverConfig, HookFuture, ReadyOrBoxed, RequestContext};

pub const NAME: &str = "interval variation";

/// chihaya's options.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// The share of replies that are changed, in (0, 1].
    pub modify_response_probability: f32,
    /// The most seconds added; the increase is 1 to this many seconds.
    pub max_increase_delta: u64,
    /// Whether `min interval` grows by the same amount.
    #[serde(default)]
    pub modify_min_interval: bool,
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let p = self.modify_response_probability;
        if !(p > 0.0 && p <= 1.0) {
            return Err(ConfigError::new(
                "modify_response_probability",
                format!("{p} is not in (0, 1]"),
            ));
        }
        if self.max_increase_delta == 0 {
            return Err(ConfigError::new(
                "max_increase_delta",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// xorshift128+: returns the next value and advances the state.
fn next(s0: &mut u64, s1: &mut u64) -> u64 {
    let mut x = *s0;
    let y = *s1;
    *s0 = y;
    x ^= x << 23;
    *s1 = x ^ y ^ (x >> 17) ^ (y >> 26);
    s1.wrapping_add(y)
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The hook.
#[derive(Debug)]
pub struct IntervalVariation {
    config: Config,
}

impl IntervalVariation {
    pub fn new(config: Config) -> Self {
        IntervalVariation { config }
    }

    /// The seconds to add for this request, if any.
    pub fn increase(&self, req: &AnnounceRequest) -> Option<u64> {
        let (ih, id) = (&req.info_hash.0, &req.peer.id.0);
        let mut s0 = be64(&ih[..8]).wrapping_add(be64(&ih[8..16]));
        let mut s1 = be64(&id[..8]).wrapping_add(be64(&id[8..16]));
        let p = (next(&mut s0, &mut s1) % (1 << 24)) as f32 / (1 << 24) as f32;
        let c = &self.config;
        (c.modify_response_probability >= 1.0 || p < c.modify_response_probability)
            .then(|| next(&mut s0, &mut s1) % c.max_increase_delta + 1)
    }
}

impl tracker::Hook for IntervalVariation {
    fn handle_announce<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        if let Some(secs) = self.increase(req) {
            resp.interval += Duration::from_secs(secs);
            if self.config.modify_min_interval {
                resp.min_interval += Duration::from_secs(secs);
            }
        }
        ReadyOrBoxed::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bittorrent::{InfoHash, Peer, PeerId};

    fn req(ih: u8, peer: u8) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([ih; 20]),
            peer: Peer::new(PeerId([peer; 20]), "127.0.0.1".parse().unwrap(), 1),
            ..AnnounceRequest::default()
        }
    }

    #[test]
    fn deterministic_bounded_and_about_as_often_as_asked() {
        let h = IntervalVariation::new(Config {
            modify_response_probability: 0.2,
            max_increase_delta: 60,
            modify_min_interval: true,
        });
        let mut changed = 0;
        for ih in 0..50u8 {
            for peer in 0..40u8 {
                let r = req(ih, peer);
                let first = h.increase(&r);
                assert_eq!(
                    first,
                    h.increase(&r),
                    "the same request, the same variation"
                );
                if let Some(s) = first {
                    assert!((1..=60).contains(&s));
                    changed += 1;
                }
            }
        }
        // 2000 requests at p = 0.2: 400 expected; 4 standard deviations either way.
        assert!((330..470).contains(&changed), "{changed} of 2000 changed");
        let always = IntervalVariation::new(Config {
            modify_response_probability: 1.0,
            max_increase_delta: 5,
            modify_min_interval: false,
        });
        assert!(always.increase(&req(1, 1)).is_some());
    }

    #[test]
    fn bad_options() {
        let c = Config {
            modify_response_probability: 0.0,
            max_increase_delta: 60,
            modify_min_interval: false,
        };
        assert_eq!(c.validate().unwrap_err().key, "modify_response_probability");
        let c = Config {
            modify_response_probability: 1.5,
            max_increase_delta: 60,
            modify_min_interval: false,
        };
        assert!(c.validate().is_err());
        let c = Config {
            modify_response_probability: 0.5,
            max_increase_delta: 0,
            modify_min_interval: false,
        };
        assert_eq!(c.validate().unwrap_err().key, "max_increase_delta");
    }
}
