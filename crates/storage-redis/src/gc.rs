//! The store's background task: it reads the totals every
//! `prometheus_reporting_interval` (so [`PeerStore::stats`] is a cached read)
//! and collects garbage every `gc_interval` (`gc.lua`, a batch of swarms at a
//! time). It holds the store weakly and ends when the store is stopped or
//! dropped.
//!
//! [`PeerStore::stats`]: tracker::PeerStore::stats

use std::sync::Weak;
use std::time::Instant;

use tracker::{StoreError, StoreStats};

use crate::store::{Inner, now_ms};

/// How many swarms one `SSCAN` step, and so one run of `gc.lua`, covers.
const BATCH: usize = 200;

impl Inner {
    /// Reads the `stats` hash into the published totals.
    pub(crate) async fn refresh_stats(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let (swarms, seeders, leechers): (Option<i64>, Option<i64>, Option<i64>) = self
            .bounded(
                self.read_timeout,
                redis::cmd("HMGET")
                    .arg(self.keys.stats())
                    .arg("swarms")
                    .arg("seeders")
                    .arg("leechers")
                    .query_async(&mut conn),
            )
            .await?;
        let count = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        self.totals.publish(StoreStats {
            swarms: count(swarms),
            seeders: count(seeders),
            leechers: count(leechers),
        });
        Ok(())
    }

    /// One full collection: every swarm in `swarms`, a batch at a time.
    pub(crate) async fn collect(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let cutoff = now_ms().saturating_sub(self.peer_lifetime.as_millis() as u64);
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.conn.clone();
            let (next, ids): (u64, Vec<String>) = self
                .bounded(
                    self.read_timeout,
                    redis::cmd("SSCAN")
                        .arg(self.keys.swarms())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut conn),
                )
                .await?;
            if !ids.is_empty() {
                let mut inv = self.gc.prepare_invoke();
                inv.key(self.keys.swarms())
                    .key(self.keys.stats())
                    .arg(cutoff);
                for id in &ids {
                    let (seeders, leechers) = self.keys.peers_of(id);
                    inv.key(seeders).key(leechers).arg(id);
                }
                let _: i64 = self
                    .bounded(self.write_timeout, inv.invoke_async(&mut conn))
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.gc_durations.record(started.elapsed());
        Ok(())
    }
}

/// The task [`RedisStore::new`](crate::RedisStore::new) spawns.
pub(crate) async fn background(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some((gc_every, report_every)) = inner
        .upgrade()
        .map(|i| (i.gc_interval, i.reporting_interval))
    else {
        return;
    };
    let mut gc = tokio::time::interval(gc_every);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gc.tick().await;
    let mut report = tokio::time::interval(report_every);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = gc.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.collect().await {
                    tracing::warn!(error = %e, "redis garbage collection failed");
                }
            }
            _ = report.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.refresh_stats().await {
                    tracing::debug!(error = %e, "reading redis totals failed");
                }
            }
        }
    }
}
