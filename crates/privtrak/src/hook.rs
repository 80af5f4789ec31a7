//! The `privtrak` pre-hook: identify the user, record the announce, answer
//! once its delta is durable.
//!
//! Identification and the record update are synchronous and allocate
//! nothing; an announce with nothing to deliver is answered at once (a ready
//! future). One with a delta holds its reply back until the journal's group
//! sync ([`RequestContext::hold_reply`]): the store answers meanwhile, the
//! reply is built, and only a small future waits (the frontends go on with
//! other requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use bittorrent::{AnnounceRequest, AnnounceResponse};
use tracker::telemetry::{Health, MetricSample};
use tracker::{HookFuture, ReadyOrBoxed, RequestContext, StopReason};

use crate::privtrak::{NotRecorded, Recorded};
use crate::{Account, Privtrak, TOO_MANY_PEERS, UserId, UserIdentifier};
use tracker::site::{SiteUser, TorrentFactors};

/// A hook over a shared [`Privtrak`]: each reload builds a new one around
/// the same state.
pub struct PrivtrakHook {
    privtrak: Arc<Privtrak>,
    identifier: Box<dyn UserIdentifier>,
    /// Hooks alive on this state; the last one to stop stops the state.
    live: Arc<AtomicUsize>,
}

impl PrivtrakHook {
    pub fn new(
        privtrak: Arc<Privtrak>,
        identifier: Box<dyn UserIdentifier>,
        live: Arc<AtomicUsize>,
    ) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        PrivtrakHook {
            privtrak,
            identifier,
            live,
        }
    }

    pub fn privtrak(&self) -> &Arc<Privtrak> {
        &self.privtrak
    }
}

/// The user and the rates of this announce: the site user's factors times
/// the torrent's, as the approval hooks attached them (1 when absent).
fn account_of(user: UserId, ctx: &RequestContext) -> Account {
    let site = ctx.extensions.get::<SiteUser>();
    let torrent = ctx.extensions.get::<TorrentFactors>();
    let (user_up, user_down) = site.map_or((1.0, 1.0), |s| (s.upload_factor, s.download_factor));
    let (t_up, t_down) = torrent.map_or((1.0, 1.0), |t| (t.upload_factor, t.download_factor));
    Account {
        user,
        site_user: site.map(|s| s.user_id),
        upload_factor: user_up * t_up,
        download_factor: user_down * t_down,
    }
}

impl tracker::Hook for PrivtrakHook {
    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        let user = match self.identifier.identify(ctx, req) {
            Ok(user) => user,
            Err(e) => return ReadyOrBoxed::ready(Err(e.into())),
        };
        let account = account_of(user, ctx);
        match self.privtrak.record(account, req, SystemTime::now()) {
            Ok(Recorded::Nothing) => ReadyOrBoxed::ready(Ok(())),
            // The store and the later hooks need not wait for the sync, only
            // the reply does.
            Ok(Recorded::Pending(seq)) => {
                let privtrak = Arc::clone(&self.privtrak);
                ctx.hold_reply(Box::pin(async move { privtrak.durable(seq).await }));
                ReadyOrBoxed::ready(Ok(()))
            }
            // Back-pressure: wait for room (or refuse), off the fast path.
            Err(NotRecorded::Full) => ReadyOrBoxed::boxed(self.privtrak.announce(account, req)),
            Err(NotRecorded::TooManyPeers) => ReadyOrBoxed::ready(Err(TOO_MANY_PEERS.into())),
            Err(NotRecorded::Failed(e)) => ReadyOrBoxed::ready(Err(tracker::TrackerError::Store(
                tracker::StoreError::Unavailable(format!("privtrak journal: {e}")),
            ))),
        }
    }

    /// An announce with a delta waits for the journal's group sync (its
    /// reply does).
    fn may_wait(&self) -> bool {
        true
    }

    fn metrics(&self, out: &mut Vec<MetricSample>) {
        let p = &self.privtrak;
        out.extend(p.metrics().samples(
            p.pending(),
            p.journal().unacknowledged_bytes(),
            p.journal().syncs(),
        ));
    }

    fn health(&self) -> Health {
        let p = &self.privtrak;
        if let Some(why) = p.journal().failed() {
            return Health::Unavailable(format!("privtrak journal failed: {why}"));
        }
        let settings = p.settings();
        let bytes = p.journal().unacknowledged_bytes();
        if bytes >= settings.journal_max_bytes {
            return Health::Unavailable(format!(
                "privtrak: the journal is full ({bytes} bytes the handler has not taken); announces are refused"
            ));
        }
        if let Some(why) = p.metrics().failing() {
            return Health::Degraded(format!(
                "privtrak: the handler refuses batches ({} deltas and {bytes} journal bytes waiting): {why}",
                p.pending()
            ));
        }
        Health::Ok
    }

    /// A reload keeps the state for the hook that replaces this one; the
    /// last hook to go, or the tracker's stop, shuts it down (flushing what
    /// is pending to the handler).
    fn stop(&self, reason: StopReason) -> ReadyOrBoxed<'_, ()> {
        let others = self.live.fetch_sub(1, Ordering::AcqRel) - 1;
        if reason == StopReason::Reload && others > 0 {
            return ReadyOrBoxed::ready(());
        }
        ReadyOrBoxed::boxed(self.privtrak.shutdown())
    }
}
