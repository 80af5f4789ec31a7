//! A handler that keeps every delta in memory: for tests, and as the model of
//! what a handler must do (exactly once by journal position), in a few lines.
//!
//! It can be made slow or failing on purpose, to show that privtrak keeps
//! serving and loses nothing while its handler is in trouble.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::delta::Delta;
use crate::handler::{Batch, DeltaHandler, HandlerError, HandlerFuture};
use crate::journal::JournalId;

#[derive(Default)]
struct State {
    applied: HashMap<JournalId, u64>,
    deltas: Vec<Delta>,
    batches: Vec<crate::handler::BatchId>,
}

/// Collects deltas; see the module documentation.
#[derive(Clone, Default)]
pub struct MemoryHandler {
    state: Arc<Mutex<State>>,
    /// Batches to refuse before accepting again.
    fail_next: Arc<AtomicU64>,
    /// Milliseconds each batch takes.
    delay_ms: Arc<AtomicU64>,
    /// Unreachable: every call fails.
    down: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl MemoryHandler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every delta applied, in order.
    pub fn deltas(&self) -> Vec<Delta> {
        self.state().deltas.clone()
    }

    /// The ids of the batches applied (after narrowing), in order.
    pub fn batches(&self) -> Vec<crate::handler::BatchId> {
        self.state().batches.clone()
    }

    /// Fails the next `n` batches.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes every batch take `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes every call fail (an unreachable database), or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Calls of `handle`, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeltaHandler for MemoryHandler {
    fn applied_through<'a>(&'a self, journal: JournalId) -> HandlerFuture<'a, u64> {
        let applied = self.state().applied.get(&journal).copied().unwrap_or(0);
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                return Err(HandlerError::new("unreachable on purpose"));
            }
            Ok(applied)
        })
    }

    fn handle<'a>(&'a self, batch: &'a Batch) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let failing = self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing || self.down.load(Ordering::SeqCst) {
                return Err(HandlerError::new("refused on purpose"));
            }
            let mut state = self.state();
            let applied = state.applied.get(&batch.id.journal).copied().unwrap_or(0);
            let Some((id, deltas)) = batch.after(applied) else {
                return Ok(());
            };
            state.applied.insert(id.journal, id.last);
            state.batches.push(id);
            state.deltas.extend_from_slice(deltas);
            Ok(())
        })
    }
}
