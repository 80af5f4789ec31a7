//! `client approval`: admits announces by the client program named in the
//! peer id (`-TR3000-…` → `TR3000`), by whitelist or by blacklist. Scrapes
//! are not checked (as in chihaya).

use std::collections::HashSet;

use bittorrent::{AnnounceRequest, AnnounceResponse, ClientError, ClientId};
use serde::Deserialize;
use tracker::{ConfigError, DriverConfig, HookFuture, ReadyOrBoxed, RequestContext};

pub const NAME: &str = "client approval";

const UNAPPROVED: ClientError = ClientError::new("unapproved client");

/// chihaya's options.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// Only these client ids may announce.
    pub whitelist: Vec<String>,
    /// These client ids may not announce.
    pub blacklist: Vec<String>,
}

fn client_ids(list: &[String], key: &str) -> Result<HashSet<ClientId>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, id)| {
            <[u8; 6]>::try_from(id.as_bytes())
                .map(ClientId)
                .map_err(|_| {
                    ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("{id:?} is not a 6-character client id"),
                    )
                })
        })
        .collect()
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.whitelist.is_empty() && !self.blacklist.is_empty() {
            return Err(ConfigError::new(
                "",
                format!("{NAME:?} takes a whitelist or a blacklist, not both"),
            ));
        }
        client_ids(&self.whitelist, "whitelist")?;
        client_ids(&self.blacklist, "blacklist")?;
        Ok(())
    }
}

#[derive(Debug)]
enum Rule {
    Only(HashSet<ClientId>),
    Not(HashSet<ClientId>),
}

/// The hook.
#[derive(Debug)]
pub struct ClientApproval {
    rule: Rule,
}

impl ClientApproval {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let rule = if config.whitelist.is_empty() {
            Rule::Not(client_ids(&config.blacklist, "blacklist")?)
        } else {
            Rule::Only(client_ids(&config.whitelist, "whitelist")?)
        };
        Ok(ClientApproval { rule })
    }

    pub fn approves(&self, id: ClientId) -> bool {
        match &self.rule {
            Rule::Only(allowed) => allowed.contains(&id),
            Rule::Not(denied) => !denied.contains(&id),
        }
    }
}

impl tracker::Hook for ClientApproval {
    fn handle_announce<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        let approved = self.approves(req.peer.id.client_id());
        ReadyOrBoxed::ready(if approved {
            Ok(())
        } else {
            Err(UNAPPROVED.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bittorrent::PeerId;

    fn id(s: &[u8; 20]) -> ClientId {
        PeerId(*s).client_id()
    }

    #[test]
    fn whitelist_and_blacklist() {
        let only = ClientApproval::new(Config {
            whitelist: vec!["TR3000".into()],
            ..Config::default()
        })
        .unwrap();
        assert!(only.approves(id(b"-TR3000-000000000000")));
        assert!(!only.approves(id(b"-LT2080-000000000000")));
        let not = ClientApproval::new(Config {
            blacklist: vec!["LT2080".into()],
            ..Config::default()
        })
        .unwrap();
        assert!(not.approves(id(b"-TR3000-000000000000")));
        assert!(!not.approves(id(b"-LT2080-000000000000")));
        let anyone = ClientApproval::new(Config::default()).unwrap();
        assert!(anyone.approves(id(b"A2-1-36-0-0000000000")));
    }

    #[test]
    fn bad_options() {
        let both = Config {
            whitelist: vec!["OP1011".into()],
            blacklist: vec!["OP1012".into()],
        };
        assert_eq!(
            both.validate().unwrap_err().message,
            "\"client approval\" takes a whitelist or a blacklist, not both"
        );
        let short = Config {
            whitelist: vec!["OP1011".into(), "OP1".into()],
            ..Config::default()
        };
        assert_eq!(short.validate().unwrap_err().key, "whitelist[1]");
    }
}
