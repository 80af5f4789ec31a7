//! Per-request state that travels with a request through the hook chain.

use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;

use crate::TrackerError;

/// What a request's reply waits for before it is sent: set by a hook that
/// must finish something first (privtrak: the announce's delta on disk),
/// awaited by the frontend once the reply is built. `Err` turns the reply
/// into that error's failure reason.
pub type ReplyGate = Pin<Box<dyn Future<Output = Result<(), TrackerError>> + Send + 'static>>;

/// Flags and typed facts for one request.
///
/// Frontends keep one per worker and [`clear`](Self::clear) it between
/// requests; an empty context holds no heap memory.
#[derive(Default)]
pub struct RequestContext {
    /// A pre-hook filled the response itself: the built-in response hook does
    /// not read the store.
    pub skip_response: bool,
    /// Do not write this announce to the store (set by a pre-hook).
    pub skip_swarm_interaction: bool,
    /// The store already applied this announce while answering it (the
    /// one-step read-and-write), so the post-phase write is not repeated.
    pub(crate) swarm_written: bool,
    /// Facts hooks attach for later hooks (the user id of a private tracker).
    pub extensions: Extensions,
    /// Set by [`hold_reply`](Self::hold_reply).
    reply_gate: Option<ReplyGate>,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resets for the next request, keeping allocations.
    pub fn clear(&mut self) {
        self.skip_response = false;
        self.skip_swarm_interaction = false;
        self.swarm_written = false;
        self.extensions.clear();
        self.reply_gate = None;
    }

    /// Holds the reply back until `gate` resolves. A hook sets it rather
    /// than waiting in its own future when the rest of the request need not
    /// wait: the store and the later hooks run, the reply is built, and the
    /// request's state is released before the wait, so a thousand waiting
    /// requests hold a thousand small futures rather than a thousand
    /// requests. The swarm has then seen the announce whatever the gate
    /// says; only the reply changes (and the post-reply phase is skipped).
    /// Gates of several hooks are awaited in the order they were set. A hook
    /// that sets one says [`Hook::may_wait`](crate::Hook::may_wait).
    pub fn hold_reply(&mut self, gate: ReplyGate) {
        self.reply_gate = Some(match self.reply_gate.take() {
            None => gate,
            Some(first) => Box::pin(async move {
                first.await?;
                gate.await
            }),
        });
    }

    /// The gate a frontend awaits before sending the reply, if a hook set
    /// one.
    pub fn take_reply_gate(&mut self) -> Option<ReplyGate> {
        self.reply_gate.take()
    }

    /// Whether the store has already applied this announce.
    pub fn swarm_written(&self) -> bool {
        self.swarm_written
    }
}

/// A small type map: at most one value per type.
///
/// A linear scan over a `Vec` beats hashing for the handful of entries a
/// request carries, and an empty `Vec` does not allocate.
#[derive(Default)]
pub struct Extensions {
    entries: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl Extensions {
    /// Stores `value`, returning the previous value of that type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        let previous = self.remove::<T>();
        self.entries.push((id, Box::new(value)));
        previous
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_mut())
    }

    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let index = self.entries.iter().position(|(k, _)| *k == id)?;
        let (_, value) = self.entries.swap_remove(index);
        value.downcast().ok().map(|b| *b)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct UserId([u8; 16]);

    #[test]
    fn typed_facts() {
        let mut ctx = RequestContext::new();
        assert!(ctx.extensions.get::<UserId>().is_none());
        assert!(ctx.extensions.insert(UserId([1; 16])).is_none());
        assert_eq!(
            ctx.extensions.insert(UserId([2; 16])),
            Some(UserId([1; 16]))
        );
        ctx.extensions.insert(7u32);
        assert_eq!(ctx.extensions.get::<UserId>(), Some(&UserId([2; 16])));
        *ctx.extensions.get_mut::<u32>().unwrap() += 1;
        assert_eq!(ctx.extensions.get::<u32>(), Some(&8));
        ctx.clear();
        assert!(ctx.extensions.is_empty());
    }

    #[test]
    fn reply_gates_run_in_the_order_set_and_the_first_error_ends_them() {
        use std::sync::{Arc, Mutex};
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = |n: u32, ok: bool| -> ReplyGate {
            let order = Arc::clone(&order);
            Box::pin(async move {
                order.lock().unwrap().push(n);
                if ok {
                    Ok(())
                } else {
                    Err(bittorrent::ClientError::new("closed").into())
                }
            })
        };
        let mut ctx = RequestContext::new();
        assert!(ctx.take_reply_gate().is_none());
        ctx.hold_reply(gate(1, true));
        ctx.hold_reply(gate(2, true));
        rt.block_on(ctx.take_reply_gate().unwrap()).unwrap();
        assert_eq!(*order.lock().unwrap(), [1, 2]);
        assert!(ctx.take_reply_gate().is_none(), "taken once");

        order.lock().unwrap().clear();
        ctx.hold_reply(gate(3, false));
        ctx.hold_reply(gate(4, true));
        assert!(rt.block_on(ctx.take_reply_gate().unwrap()).is_err());
        assert_eq!(*order.lock().unwrap(), [3], "no gate after a failed one");

        ctx.hold_reply(gate(5, true));
        ctx.clear();
        assert!(ctx.take_reply_gate().is_none(), "cleared with the request");
    }
}
