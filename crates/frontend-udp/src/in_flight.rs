//! Requests that wait, without holding up the others.
//!
//! When the tracker logic may wait (a Redis store, privtrak's journal), each
//! announce or scrape of a worker becomes a [`Job`]: it owns its slot, a copy
//! of its packet and its reply buffer, so it can outlive the receive batch it
//! came in. Its future is polled on the worker's own thread next to the
//! socket; one that is not ready lets the worker go on receiving and
//! answering, and its reply is sent as soon as it completes. At most
//! [`MAX_IN_FLIGHT`] requests wait at once per worker; beyond that the worker
//! stops receiving until some complete, so a slow hook throttles the worker
//! (and the kernel's buffer) instead of growing memory.
//!
//! A job's post-reply phase (post-hooks, a swarm write the store did not do
//! in one step) runs after its reply is sent, as another step of the same
//! job. Jobs (and their buffers) are recycled: a steady stream allocates
//! only the futures.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tracker::TrackerLogic;

use crate::batch::PACKET_SIZE;
use crate::stats::WorkerStats;
use crate::worker::{Handler, Outcome, Settings, Slot};

/// Most requests of one worker waiting at once.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// A request that may wait, with everything it needs.
pub(crate) struct Job {
    slot: Slot,
    packet: Vec<u8>,
    source: SocketAddr,
    now: u64,
    started: Option<Instant>,
    reply: Vec<u8>,
    outcome: Outcome,
}

impl Job {
    fn new() -> Job {
        Job {
            slot: Slot::new(),
            packet: Vec::with_capacity(PACKET_SIZE),
            source: SocketAddr::from(([0, 0, 0, 0], 0)),
            now: 0,
            started: None,
            reply: Vec::with_capacity(PACKET_SIZE),
            outcome: Outcome::Dropped,
        }
    }

    pub fn source(&self) -> SocketAddr {
        self.source
    }

    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    pub fn reply(&self) -> &[u8] {
        &self.reply
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn has_post_phase(&self) -> bool {
        self.slot.has_after()
    }
}

/// What a job's step ended with.
pub(crate) enum Step {
    /// Answered: the reply is ready to send; the post phase may follow.
    Answered(Job, Arc<TrackerLogic>),
    /// The post phase is done: the job can be reused.
    Done(Job),
}

type Running = Pin<Box<dyn Future<Output = Step>>>;

/// The waiting requests of one worker.
pub(crate) struct InFlight {
    settings: Arc<Settings>,
    stats: Arc<WorkerStats>,
    running: FuturesUnordered<Running>,
    free: Vec<Job>,
}

impl InFlight {
    pub fn new(settings: Arc<Settings>, stats: Arc<WorkerStats>) -> Self {
        InFlight {
            settings,
            stats,
            running: FuturesUnordered::new(),
            free: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    pub fn has_room(&self) -> bool {
        self.running.len() < MAX_IN_FLIGHT
    }

    /// Starts answering `packet` from `source` (polled with the others).
    pub fn start(
        &mut self,
        packet: &[u8],
        source: SocketAddr,
        now: u64,
        logic: &Arc<TrackerLogic>,
    ) {
        let mut job = self.free.pop().unwrap_or_else(Job::new);
        job.packet.clear();
        job.packet.extend_from_slice(packet);
        job.source = source;
        job.now = now;
        job.started = self.settings.request_timing.then(Instant::now);
        let (settings, stats, logic) = (
            Arc::clone(&self.settings),
            Arc::clone(&self.stats),
            Arc::clone(logic),
        );
        self.running.push(Box::pin(async move {
            let j = &mut job;
            j.reply.clear();
            let handler = Handler {
                settings: &settings,
                logic: &logic,
                stats: &stats,
            };
            j.outcome = handler
                .handle(&mut j.slot, &j.packet, j.source, j.now, &mut j.reply)
                .await;
            Step::Answered(job, logic)
        }));
    }

    /// Runs the post-reply phase of an answered job, whose reply is sent.
    pub fn after_reply(&mut self, mut job: Job, logic: Arc<TrackerLogic>) {
        if !job.has_post_phase() {
            self.recycle(job);
            return;
        }
        let (settings, stats) = (Arc::clone(&self.settings), Arc::clone(&self.stats));
        self.running.push(Box::pin(async move {
            let handler = Handler {
                settings: &settings,
                logic: &logic,
                stats: &stats,
            };
            handler.after_reply(&mut job.slot).await;
            Step::Done(job)
        }));
    }

    pub fn recycle(&mut self, job: Job) {
        if self.free.len() < MAX_IN_FLIGHT {
            self.free.push(job);
        }
    }

    /// The next step to finish, waiting for it.
    pub async fn next(&mut self) -> Option<Step> {
        self.running.next().await
    }

    /// A step that has finished, without waiting.
    pub fn ready(&mut self) -> Option<Step> {
        self.running.next().now_or_never().flatten()
    }
}
