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
//!   keys (a JWK set, refreshed) for this audience and this info hash;
//! - `passkey approval` ([`passkey_approval`], karuta's): only a private
//!   site's users announce, known from its database or a file;
//! - `rate limit` ([`rate_limit`], karuta's): a token bucket of announces
//!   (and scrapes) per client address or IPv6 network, in a fixed-size table.
//!
//! `torrent approval` also takes a site's registry of torrents from its
//! database ([`site`]).

#![forbid(unsafe_code)]

pub mod client_approval;
mod file_watch;
pub mod interval_variation;
pub mod jwt;
pub mod passkey_approval;
pub mod rate_limit;
pub mod site;
pub mod torrent_approval;

use std::sync::Arc;

use tracker::{Hook, Registry};

/// Registers every built-in hook under its chihaya name.
pub fn register(registry: &mut Registry) {
    registry.register_hook(client_approval::NAME, |c: client_approval::Config| {
        Ok(Arc::new(client_approval::ClientApproval::new(c)?) as Arc<dyn Hook>)
    });
    // Database sources outlive reloads: a reload with the same options
    // keeps the tables in memory and reads them in full once more.
    let torrents: Arc<site::postgres::Sources<site::torrents::Torrents>> = Arc::default();
    registry.register_hook_async(
        torrent_approval::NAME,
        move |c: torrent_approval::Config| {
            let sources = Arc::clone(&torrents);
            async move {
                let hook = torrent_approval::TorrentApproval::build(c, &sources).await?;
                Ok(Arc::new(hook) as Arc<dyn Hook>)
            }
        },
    );
    let users: Arc<site::postgres::Sources<site::users::Users>> = Arc::default();
    registry.register_hook_async(
        passkey_approval::NAME,
        move |c: passkey_approval::Config| {
            let sources = Arc::clone(&users);
            async move {
                let hook = passkey_approval::PasskeyApproval::build(c, &sources).await?;
                Ok(Arc::new(hook) as Arc<dyn Hook>)
            }
        },
    );
    registry.register_hook(interval_variation::NAME, |c: interval_variation::Config| {
        Ok(Arc::new(interval_variation::IntervalVariation::new(c)) as Arc<dyn Hook>)
    });
    rate_limit::register(registry);
    registry.register_hook_async(jwt::NAME, |c: jwt::Config| async move {
        Ok(Arc::new(jwt::Jwt::new(c).await?) as Arc<dyn Hook>)
    });
}
