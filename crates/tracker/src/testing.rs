//! Test doubles for the hook chain: [`FnHook`], a hook made of closures, so a
//! test says in a closure what its hook does instead of implementing [`Hook`]
//! once more. The real hooks (the middleware crate, the examples) implement
//! the trait; tests of the chain, the frontends and the server use this.

use bittorrent::{AnnounceRequest, AnnounceResponse, ScrapeRequest, ScrapeResponse};

use crate::{Hook, HookFuture, ReadyOrBoxed, RequestContext, StopReason, TrackerError};

type AnnounceFn = dyn for<'a> Fn(
        &'a mut RequestContext,
        &'a AnnounceRequest,
        &'a mut AnnounceResponse,
    ) -> HookFuture<'a>
    + Send
    + Sync;

type ScrapeFn = dyn for<'a> Fn(&'a mut RequestContext, &'a ScrapeRequest, &'a mut ScrapeResponse) -> HookFuture<'a>
    + Send
    + Sync;

/// A hook whose announce, scrape and stop are closures. What is not given
/// does what [`Hook`]'s defaults do: the request passes, the stop is silent.
///
/// ```ignore
/// let deny = FnHook::new().on_announce(|_, req, _| {
///     if req.info_hash.0 == [0xee; 20] {
///         return Err(ClientError::new("unapproved torrent").into());
///     }
///     Ok(())
/// });
/// ```
pub struct FnHook {
    announce: Box<AnnounceFn>,
    scrape: Box<ScrapeFn>,
    stop: Box<dyn Fn(StopReason) + Send + Sync>,
    /// Given a closure returning futures (which may wait).
    waits: bool,
}

impl Default for FnHook {
    fn default() -> Self {
        FnHook {
            announce: Box::new(|_, _, _| ReadyOrBoxed::ready(Ok(()))),
            scrape: Box::new(|_, _, _| ReadyOrBoxed::ready(Ok(()))),
            stop: Box::new(|_| {}),
            waits: false,
        }
    }
}

impl FnHook {
    /// A hook that passes every request.
    pub fn new() -> FnHook {
        FnHook::default()
    }

    /// Answers every announce with `f`'s verdict, ready (no allocation).
    pub fn on_announce(
        self,
        f: impl Fn(
            &mut RequestContext,
            &AnnounceRequest,
            &mut AnnounceResponse,
        ) -> Result<(), TrackerError>
        + Send
        + Sync
        + 'static,
    ) -> FnHook {
        let waits = self.waits;
        let mut hook =
            self.on_announce_future(move |ctx, req, resp| ReadyOrBoxed::ready(f(ctx, req, resp)));
        hook.waits = waits;
        hook
    }

    /// Answers every announce with the future `f` returns: a hook that may
    /// wait ([`Hook::may_wait`]).
    pub fn on_announce_future(
        mut self,
        f: impl for<'a> Fn(
            &'a mut RequestContext,
            &'a AnnounceRequest,
            &'a mut AnnounceResponse,
        ) -> HookFuture<'a>
        + Send
        + Sync
        + 'static,
    ) -> FnHook {
        self.announce = Box::new(f);
        self.waits = true;
        self
    }

    /// Answers every scrape with `f`'s verdict, ready (no allocation).
    pub fn on_scrape(
        self,
        f: impl Fn(&mut RequestContext, &ScrapeRequest, &mut ScrapeResponse) -> Result<(), TrackerError>
        + Send
        + Sync
        + 'static,
    ) -> FnHook {
        let waits = self.waits;
        let mut hook =
            self.on_scrape_future(move |ctx, req, resp| ReadyOrBoxed::ready(f(ctx, req, resp)));
        hook.waits = waits;
        hook
    }

    /// Answers every scrape with the future `f` returns.
    pub fn on_scrape_future(
        mut self,
        f: impl for<'a> Fn(
            &'a mut RequestContext,
            &'a ScrapeRequest,
            &'a mut ScrapeResponse,
        ) -> HookFuture<'a>
        + Send
        + Sync
        + 'static,
    ) -> FnHook {
        self.scrape = Box::new(f);
        self.waits = true;
        self
    }

    /// Runs `f` each time the hook is stopped, with the reason.
    pub fn on_stop(mut self, f: impl Fn(StopReason) + Send + Sync + 'static) -> FnHook {
        self.stop = Box::new(f);
        self
    }
}

impl Hook for FnHook {
    fn may_wait(&self) -> bool {
        self.waits
    }

    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        (self.announce)(ctx, req, resp)
    }

    fn handle_scrape<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a ScrapeRequest,
        resp: &'a mut ScrapeResponse,
    ) -> HookFuture<'a> {
        (self.scrape)(ctx, req, resp)
    }

    fn stop(&self, reason: StopReason) -> ReadyOrBoxed<'_, ()> {
        (self.stop)(reason);
        ReadyOrBoxed::ready(())
    }
}
