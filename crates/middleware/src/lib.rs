//! karuta's built-in hooks, registered under chihaya's names with chihaya's
//! option keys and error strings, so existing configurations keep working:
//!
//! - `client approval` ([`client_approval`]): a whitelist or a blacklist of
//!   6-character client ids;
//! - `torrent approval` ([`torrent_approval`]): a whitelist or a blacklist of
//!   info hashes, inline or from a file that is re-read when it changes;
//! - `interval variation` ([`interval_variation`]): a deterministic random
//!   increase of the announce interval, to spread announces out;
//! - `jwt` ([`jwt`]): the announce must carry a token signed by the issuer's
//!   keys (a JWK set, refreshed) for this audience and this info hash.

#![forbid(unsafe_code)]

pub mod client_approval;
pub mod interval_variation;
pub mod jwt;
pub mod torrent_approval;

use std::sync::Arc;

use tracker::{Hook, Registry};

/// Registers every built-in hook under its chihaya name.
pub fn register(registry: &mut Registry) {
    registry.register_hook(client_approval::NAME, |c: client_approval::Config| {
        Ok(Arc::new(client_approval::ClientApproval::new(c)?) as Arc<dyn Hook>)
    });
    registry.register_hook(torrent_approval::NAME, |c: torrent_approval::Config| {
        Ok(Arc::new(torrent_approval::TorrentApproval::new(c)?) as Arc<dyn Hook>)
    });
    registry.register_hook(interval_variation::NAME, |c: interval_variation::Config| {
        Ok(Arc::new(interval_variation::IntervalVariation::new(c)) as Arc<dyn Hook>)
    });
    registry.register_hook_async(jwt::NAME, |c: jwt::Config| async move {
        Ok(Arc::new(jwt::Jwt::new(c).await?) as Arc<dyn Hook>)
    });
}
