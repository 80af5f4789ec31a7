//! The store's clock: coarse 16-bit ticks that a peer's entry can afford to
//! carry, published by the background thread so an announce reads an atomic
//! instead of the system time.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Time in ticks since the store started, wrapping at 2^16.
///
/// Peers store their last-seen tick in 16 bits. A tick is one second unless
/// `peer_lifetime + gc_interval` would not fit in half the wrap-around range,
/// in which case ticks get longer, so an age is always measured unambiguously.
///
/// Reading the time costs more than a small announce's own work, so the
/// background thread publishes the current tick a few times per tick and
/// operations read that ([`Clock::now`]); an age is off by at most a quarter
/// tick.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    tick: Duration,
    /// `peer_lifetime` in ticks, rounded up.
    pub(crate) lifetime_ticks: u16,
    current: AtomicU16,
}

impl Clock {
    pub(crate) fn new(lifetime: Duration, gc_interval: Duration) -> Self {
        let horizon = (lifetime + gc_interval).as_secs_f64();
        let tick_secs = (horizon / 16_384.0).ceil().max(1.0);
        let tick = Duration::from_secs_f64(tick_secs);
        Clock {
            start: Instant::now(),
            tick,
            lifetime_ticks: (lifetime.as_secs_f64() / tick_secs).ceil() as u16,
            current: AtomicU16::new(0),
        }
    }

    /// The last published tick.
    pub(crate) fn now(&self) -> u16 {
        self.current.load(Ordering::Relaxed)
    }

    /// Publishes the current tick (the background thread, a few times a tick).
    pub(crate) fn advance(&self) -> u16 {
        let now = (self.start.elapsed().as_nanos() / self.tick.as_nanos()) as u16;
        self.current.store(now, Ordering::Relaxed);
        now
    }

    /// How often [`advance`](Self::advance) runs.
    pub(crate) fn publish_every(&self) -> Duration {
        self.tick / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ticks_fit_the_lifetime() {
        let c = Clock::new(Duration::from_secs(31 * 60), Duration::from_secs(180));
        assert_eq!(c.tick, Duration::from_secs(1));
        assert_eq!(c.lifetime_ticks, 1860);
        let long = Clock::new(
            Duration::from_secs(7 * 24 * 3600),
            Duration::from_secs(3600),
        );
        assert!(long.tick > Duration::from_secs(1));
        assert!(u32::from(long.lifetime_ticks) < 1 << 15);
    }
}
