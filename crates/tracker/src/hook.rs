//! Middleware: code that runs on every request before or after the reply.

use bittorrent::{AnnounceRequest, AnnounceResponse, ScrapeRequest, ScrapeResponse};

use crate::telemetry::{Health, MetricSample};
use crate::{ReadyOrBoxed, RequestContext, TrackerError};

/// What a hook method returns: `Err` rejects the request (pre-hooks) and the
/// client sees [`TrackerError::client_message`].
pub type HookFuture<'a> = ReadyOrBoxed<'a, Result<(), TrackerError>>;

/// A pre- or post-hook (chihaya's `middleware.Hook`).
///
/// A pre-hook may reject the request, fill the response, set the context's
/// skip flags, or attach typed facts for later hooks. A post-hook runs after the
/// client has its reply; its errors are logged, never sent.
///
/// A hook that needs no I/O returns `ReadyOrBoxed::ready(..)` and costs no
/// allocation; one that waits returns `ReadyOrBoxed::boxed(async move { .. })`.
/// One whose wait concerns only the reply (not the store or the later hooks)
/// returns ready and hands the wait to
/// [`RequestContext::hold_reply`](crate::RequestContext::hold_reply).
pub trait Hook: Send + Sync + 'static {
    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a>;

    /// Scrapes pass untouched unless a hook says otherwise.
    fn handle_scrape<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        _req: &'a ScrapeRequest,
        _resp: &'a mut ScrapeResponse,
    ) -> HookFuture<'a> {
        ReadyOrBoxed::ready(Ok(()))
    }

    /// Whether the hook's futures may wait (I/O, a lock held across an
    /// await). A frontend that serves many requests on one thread (UDP)
    /// handles the requests of a chain where nothing waits in place,
    /// allocation-free, and gives each request of a chain that may wait its
    /// own task, so one waiting request does not hold up the others. A hook
    /// that returns `ReadyOrBoxed::boxed` futures that really wait, or holds
    /// replies back, says `true`; one that does not is still correct, but
    /// its UDP requests wait in line.
    fn may_wait(&self) -> bool {
        false
    }

    /// Metrics the hook exports, read at each scrape of `/metrics`.
    fn metrics(&self, _out: &mut Vec<MetricSample>) {}

    /// The hook's health, for `/health`.
    fn health(&self) -> Health {
        Health::Ok
    }

    /// Releases the hook's resources (background refreshes, connections).
    /// Called once per hook: when a reload has replaced it (and no request
    /// uses it any more), or when the tracker stops. A hook whose state
    /// outlives reloads (kept by its factory and handed to the next hook)
    /// keeps it on [`StopReason::Reload`] and ends it on
    /// [`StopReason::Shutdown`].
    fn stop(&self, _reason: StopReason) -> ReadyOrBoxed<'_, ()> {
        ReadyOrBoxed::ready(())
    }
}

/// Why a hook is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A reload replaced the hook (a new one, from the same factory, may
    /// carry on its state), or the configuration it belonged to failed to
    /// build while the tracker keeps running.
    Reload,
    /// The tracker is stopping: nothing follows.
    Shutdown,
}
