//! The store's background task: it reads the totals every
//! `prometheus_reporting_interval` (so [`PeerStore::stats`] is a cached read)
//! and collects garbage every `gc_interval` (`gc.lua`, a batch of one
//! bucket's swarms at a time). It holds the store weakly and ends when the
//! store is stopped or dropped.
//!
//! Both start from every bucket's totals, one `MGET` of them all (on a
//! Redis Cluster one a bucket, in one pipeline per primary): the reporting
//! sums them, the collection walks only the buckets that have swarms, on
//! every primary that holds any.
//!
//! [`PeerStore::stats`]: tracker::PeerStore::stats

use std::sync::Weak;
use std::time::Instant;

use tracker::{StoreError, StoreStats};

use crate::keys::BUCKETS;
use crate::store::{Inner, now_ms};

/// How many swarms one `SSCAN` step, and so one run of `gc.lua`, covers.
const BATCH: usize = 200;

impl Inner {
    /// Every bucket's totals (swarms, seeders, leechers), in bucket order.
    async fn bucket_totals(&self) -> Result<Vec<[i64; 3]>, StoreError> {
        let groups = (0..BUCKETS)
            .map(|b| {
                let keys = self.keys.bucket_totals(b).iter().map(String::as_str);
                (self.keys.slot(b), keys.collect())
            })
            .collect();
        let replies = self
            .bounded(self.read_timeout, self.conns.shared().mget_per_slot(groups))
            .await?;
        replies
            .into_iter()
            .map(|values| {
                let t: Vec<Option<i64>> = redis::from_redis_value(redis::Value::Array(values))
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Ok([0, 1, 2].map(|i| t.get(i).copied().flatten().unwrap_or(0)))
            })
            .collect()
    }

    /// Reads the buckets' totals into the published totals.
    pub(crate) async fn refresh_stats(&self) -> Result<(), StoreError> {
        let sum = self
            .bucket_totals()
            .await?
            .iter()
            .fold([0i64; 3], |acc, t| [0, 1, 2].map(|i| acc[i] + t[i]));
        let count = |v: i64| v.max(0) as u64;
        self.totals.publish(StoreStats {
            swarms: count(sum[0]),
            seeders: count(sum[1]),
            leechers: count(sum[2]),
        });
        Ok(())
    }

    /// One full collection: every swarm of every bucket that has any, a
    /// batch at a time.
    pub(crate) async fn collect(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let cutoff = now_ms().saturating_sub(self.peer_lifetime.as_millis() as u64);
        let totals = self.bucket_totals().await?;
        for (bucket, _) in totals.iter().enumerate().filter(|(_, t)| t[0] != 0) {
            self.collect_bucket(bucket, cutoff).await?;
        }
        self.gc_durations.record(started.elapsed());
        Ok(())
    }

    /// Walks one bucket's set of swarms with `SSCAN`, running `gc.lua` on
    /// each batch.
    async fn collect_bucket(&self, bucket: usize, cutoff: u64) -> Result<(), StoreError> {
        let swarms = self.keys.swarms(bucket);
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.conns.shared().clone();
            let (next, ids): (u64, Vec<String>) = self
                .bounded(
                    self.read_timeout,
                    redis::cmd("SSCAN")
                        .arg(swarms)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut conn),
                )
                .await?;
            if !ids.is_empty() {
                let mut inv = self.gc.prepare_invoke();
                inv.key(swarms)
                    .key(self.keys.bucket_totals(bucket))
                    .arg(cutoff);
                for id in &ids {
                    let (seeders, leechers) = self.keys.peers_of(bucket, id);
                    inv.key(seeders).key(leechers).arg(id);
                }
                let _: i64 = self
                    .bounded(self.write_timeout, inv.invoke_async(&mut conn))
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
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
