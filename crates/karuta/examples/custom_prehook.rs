//! A custom pre-hook compiled into a custom karuta binary.
//!
//! The hook admits only announces that carry a known passkey, in the route
//! (`/:passkey/announce`) or the query (`?passkey=`; over UDP, in BEP 41 URL
//! data), and attaches the user to the request for later hooks. It is
//! registered under a name, so a configuration file turns it on like any
//! built-in hook:
//!
//! ```yaml
//! karuta:
//!   prehooks:
//!     - name: "require passkey"
//!       options:
//!         passkeys: ["d8e8fca2dc0f896fd7cb4cb0031ba249"]
//! ```
//!
//! Run it with `cargo run -p karuta --example custom_prehook -- --config FILE`;
//! every flag and subcommand of `karuta` works the same.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use tracker::bittorrent::{AnnounceRequest, AnnounceResponse, ClientError};
use tracker::{ConfigError, DriverConfig, Hook, HookFuture, ReadyOrBoxed, RequestContext};

/// The hook's `options:`. Keys it does not know are logged as warnings by
/// the registry, as for every built-in hook; refusing them here
/// (`deny_unknown_fields`) would make this hook the odd one out.
#[derive(Deserialize)]
struct RequirePasskeyOptions {
    passkeys: Vec<String>,
}

impl DriverConfig for RequirePasskeyOptions {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.passkeys.is_empty() {
            return Err(ConfigError::new("passkeys", "list at least one passkey"));
        }
        Ok(())
    }
}

/// The user a request belongs to, for the hooks after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

struct RequirePasskey {
    passkeys: HashSet<String>,
}

impl Hook for RequirePasskey {
    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        let passkey = req
            .params
            .route_param("passkey")
            .or_else(|| req.params.get_str("passkey"));
        ReadyOrBoxed::ready(match passkey {
            Some(key) if self.passkeys.contains(key) => {
                ctx.extensions.insert(User(key.to_owned()));
                Ok(())
            }
            Some(_) => Err(ClientError::new("unknown passkey").into()),
            None => Err(ClientError::new("missing passkey").into()),
        })
    }
}

fn registry() -> tracker::Registry {
    let mut registry = karuta::default_registry();
    registry.register_hook("require passkey", |options: RequirePasskeyOptions| {
        let passkeys = options.passkeys.into_iter().collect();
        Ok(Arc::new(RequirePasskey { passkeys }) as Arc<dyn Hook>)
    });
    registry
}

fn main() -> ExitCode {
    karuta::cli::main_with(registry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use karuta::config::{self, ConfigSource};
    use std::net::{IpAddr, Ipv4Addr};
    use tracker::bittorrent::{Event, InfoHash, Params, Peer, PeerId};

    const CONFIG: &str = "karuta:\n  prehooks:\n    - name: \"require passkey\"\n      options:\n        passkeys: [\"d8e8fca2dc0f896fd7cb4cb0031ba249\"]\n";

    fn announce(url: &[u8], route_passkey: Option<&str>) -> AnnounceRequest {
        let mut params = Params::parse(url).unwrap();
        if let Some(k) = route_passkey {
            params.set_route_param("passkey", k);
        }
        AnnounceRequest {
            info_hash: InfoHash([9; 20]),
            peer: Peer::new(PeerId([1; 20]), IpAddr::V4(Ipv4Addr::LOCALHOST), 6881),
            event: Event::Started,
            event_provided: true,
            num_want: 10,
            num_want_provided: true,
            ip_provided: false,
            compact: true,
            uploaded: 0,
            downloaded: 0,
            left: 1,
            key: None,
            params,
        }
    }

    #[tokio::test]
    async fn the_custom_hook_runs_in_the_tracker() {
        let registry = Arc::new(registry());
        let loaded = config::parse(&ConfigSource::Embedded, CONFIG, &registry).unwrap();
        let tracker = karuta::Tracker::start(registry, loaded).await.unwrap();
        let logic = tracker.logic();

        let cases = [
            (
                announce(b"/announce?passkey=d8e8fca2dc0f896fd7cb4cb0031ba249", None),
                None,
            ),
            (
                announce(
                    b"/d8e8fca2dc0f896fd7cb4cb0031ba249/announce",
                    Some("d8e8fca2dc0f896fd7cb4cb0031ba249"),
                ),
                None,
            ),
            (
                announce(b"/announce?passkey=nope", None),
                Some("unknown passkey"),
            ),
            (announce(b"/announce", None), Some("missing passkey")),
        ];
        for (req, want_err) in cases {
            let mut ctx = RequestContext::new();
            let mut resp = AnnounceResponse::default();
            let got = logic.handle_announce(&mut ctx, &req, &mut resp).await;
            match want_err {
                None => {
                    got.unwrap();
                    let user = ctx.extensions.get::<User>().unwrap();
                    assert_eq!(user.0, "d8e8fca2dc0f896fd7cb4cb0031ba249");
                }
                Some(text) => assert_eq!(got.unwrap_err().client_message(), text),
            }
        }
        // Admitted announces reached the store; rejected ones did not.
        let scrape = tracker
            .store()
            .scrape(InfoHash([9; 20]), tracker::bittorrent::AddressFamily::V4)
            .await
            .unwrap();
        assert_eq!(scrape.incomplete, 1, "one peer, announced twice");
        drop(logic);
        tracker.shutdown().await;
    }

    #[test]
    fn unknown_options_are_not_errors() {
        let text = format!("{CONFIG}        passkey_header: X-Passkey\n");
        let loaded = config::parse(&ConfigSource::Embedded, &text, &registry());
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn bad_options_name_the_key() {
        let text = "karuta:\n  prehooks:\n    - name: \"require passkey\"\n      options:\n        passkeys: []\n";
        let err = config::parse(&ConfigSource::Embedded, text, &registry()).unwrap_err();
        assert!(
            err.detail
                .starts_with("karuta.prehooks[0].options.passkeys: list at least one passkey"),
            "{err}"
        );
    }
}
