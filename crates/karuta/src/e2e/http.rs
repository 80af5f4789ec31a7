//! The HTTP side of `karuta e2e`: the scenario's announces and scrapes as GETs
//! through `http_client` (one connection each, on a current-thread Tokio
//! runtime of its own), their replies read with `bittorrent::bencode::decode`.
//!
//! A failure is a [`Fail::Transport`] when no server answered (nothing on the
//! tracker changed) and a [`Fail::Check`] when one answered wrongly.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bittorrent::bencode::{Value, decode};
use bittorrent::{InfoHash, percent_encode};
use http_client::{Client, Response, header};
use tracker::config::format_duration;

use super::HttpTarget;
use super::scenario::{Announced, Counts, Event, Fail, Peer, Tracker, scenario};

/// The largest HTTP reply read.
const MAX_REPLY: usize = 1 << 20;

struct Http<'a> {
    target: &'a HttpTarget,
    timeout: Duration,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

fn with_query(target: &str, query: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{query}")
}

impl Http<'_> {
    /// GETs `target` (path and query); a reply other than 200 OK fails.
    fn get(&self, target: &str) -> Result<Response, Fail> {
        let url = self
            .target
            .base
            .with_path_and_query(target)
            .map_err(|e| Fail::Transport(e.to_string()))?;
        self.runtime
            .block_on(self.client.get(&url))
            .and_then(Response::require_ok)
            .map_err(|e| match e {
                // In the syntax `--timeout` was given in.
                http_client::Error::Timeout { host_port, .. } => Fail::Transport(format!(
                    "no whole reply from {host_port} within {}",
                    format_duration(self.timeout)
                )),
                e if e.is_transport() => Fail::Transport(e.to_string()),
                e => Fail::Check(e.to_string()),
            })
    }
}

/// The bencoded dictionary of a reply; a `failure reason` fails.
fn reply_dict(reply: &Response) -> Result<Value<'_>, Fail> {
    let value = decode(&reply.body).map_err(|e| {
        Fail::Check(format!(
            "malformed bencode ({e}): {:?}",
            reply.body_snippet()
        ))
    })?;
    if value.as_dict().is_none() {
        return Err(Fail::Check(format!(
            "the reply is not a bencoded dictionary: {:?}",
            reply.body_snippet()
        )));
    }
    if let Some(reason) = value.get("failure reason") {
        let text = match reason.as_bytes() {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => "(not a string)".into(),
        };
        return Err(Fail::Check(format!("tracker failure: {text}")));
    }
    Ok(value)
}

fn count(dict: &Value<'_>, key: &str, context: &str) -> Result<u64, Fail> {
    match dict.get(key) {
        Some(v) => match v.as_int() {
            Some(n) if n >= 0 => Ok(n as u64),
            _ => Err(Fail::Check(format!(
                "{context}: {key:?} is not a non-negative integer"
            ))),
        },
        None => Err(Fail::Check(format!("{context}: no {key:?} key"))),
    }
}

/// Compact (`peers`, `peers6` byte strings) or dictionary peer lists.
fn http_peers(dict: &Value<'_>) -> Result<Vec<SocketAddr>, Fail> {
    let mut peers = Vec::new();
    for (key, size) in [("peers", 6), ("peers6", 18)] {
        match dict.get(key) {
            None => {}
            Some(Value::Bytes(b)) => {
                if b.len() % size != 0 {
                    return Err(Fail::Check(format!(
                        "announce: {key:?} is {} bytes, not a multiple of {size}",
                        b.len()
                    )));
                }
                for c in b.chunks_exact(size) {
                    let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                    let ip = if size == 6 {
                        IpAddr::from(<[u8; 4]>::try_from(&c[..4]).unwrap_or_default())
                    } else {
                        IpAddr::from(<[u8; 16]>::try_from(&c[..16]).unwrap_or_default())
                    };
                    peers.push(SocketAddr::new(ip, port));
                }
            }
            Some(Value::List(list)) => {
                for entry in list {
                    if entry.as_dict().is_none() {
                        return Err(Fail::Check(format!(
                            "announce: an entry of {key:?} is not a dictionary"
                        )));
                    }
                    let ip = entry
                        .get("ip")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<IpAddr>().ok());
                    let port = entry
                        .get("port")
                        .and_then(Value::as_int)
                        .and_then(|p| u16::try_from(p).ok());
                    match (ip, port) {
                        (Some(ip), Some(port)) => peers.push(SocketAddr::new(ip, port)),
                        _ => {
                            return Err(Fail::Check(format!(
                                "announce: an entry of {key:?} has no valid ip and port"
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Fail::Check(format!(
                    "announce: {key:?} is neither a string nor a list"
                )));
            }
        }
    }
    Ok(peers)
}

fn prefix(what: &str, f: Fail) -> Fail {
    match f {
        Fail::Transport(r) => Fail::Transport(format!("{what}: {r}")),
        Fail::Check(r) => Fail::Check(format!("{what}: {r}")),
    }
}

impl Tracker for Http<'_> {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
        let what = format!("announce {}", peer.name);
        let event = match event {
            Event::Started => "started",
            Event::Stopped => "stopped",
        };
        let query = format!(
            "info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left=1&event={event}&compact=1&numwant=50",
            percent_encode(&ih.0),
            percent_encode(&peer.id.0),
            peer.port
        );
        let reply = self
            .get(&with_query(&self.target.announce, &query))
            .map_err(|f| prefix(&what, f))?;
        let dict = reply_dict(&reply).map_err(|f| prefix(&what, f))?;
        Ok(Announced {
            seeders: count(&dict, "complete", &what)?,
            leechers: count(&dict, "incomplete", &what)?,
            peers: http_peers(&dict).map_err(|f| prefix(&what, f))?,
        })
    }

    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
        let query = format!("info_hash={}", percent_encode(&ih.0));
        let reply = self
            .get(&with_query(&self.target.scrape, &query))
            .map_err(|f| prefix("scrape", f))?;
        let dict = reply_dict(&reply).map_err(|f| prefix("scrape", f))?;
        let Some(files) = dict.get("files").and_then(Value::as_dict) else {
            return Err(Fail::Check(
                "scrape: the reply has no \"files\" dictionary".into(),
            ));
        };
        let Some(entry) = files.iter().find(|(k, _)| *k == &ih.0[..]).map(|(_, v)| v) else {
            return Ok(None);
        };
        if entry.as_dict().is_none() {
            return Err(Fail::Check(
                "scrape: the entry for the info hash is not a dictionary".into(),
            ));
        }
        Ok(Some(Counts {
            seeders: count(entry, "complete", "scrape")?,
            leechers: count(entry, "incomplete", "scrape")?,
            snatches: count(entry, "downloaded", "scrape").unwrap_or(0),
        }))
    }
}

pub(super) fn run_http(
    target: &HttpTarget,
    delay: Duration,
    timeout: Duration,
) -> Result<usize, Fail> {
    let client = Client::builder()
        .timeout(timeout)
        .max_body(MAX_REPLY)
        .header(
            header::USER_AGENT,
            header::HeaderValue::from_static(concat!("karuta-e2e/", env!("CARGO_PKG_VERSION"))),
        )
        .header(
            header::ACCEPT_ENCODING,
            header::HeaderValue::from_static("identity"),
        )
        .build()
        .map_err(|e| Fail::Transport(format!("cannot set up the HTTP client: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::Transport(format!("cannot start the async runtime: {e}")))?;
    let mut http = Http {
        target,
        timeout,
        client,
        runtime,
    };
    scenario("http", &mut http, delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_client::{HeaderMap, StatusCode};

    fn reply(body: &[u8]) -> Response {
        Response {
            status: StatusCode::OK,
            reason: "OK".into(),
            headers: HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    fn check_reason(r: Result<Value<'_>, Fail>) -> String {
        match r {
            Err(Fail::Check(reason)) => reason,
            Err(Fail::Transport(reason)) => panic!("not a check failure: {reason}"),
            Ok(v) => panic!("decoded: {v:?}"),
        }
    }

    #[test]
    fn bencode() {
        let ok = reply(b"d1:ai-3e1:bl2:xyee");
        assert_eq!(
            reply_dict(&ok).ok(),
            Some(Value::Dict(vec![
                (&b"a"[..], Value::Int(-3)),
                (&b"b"[..], Value::List(vec![Value::Bytes(b"xy")])),
            ]))
        );
        for bad in [
            &b""[..],
            b"i",
            b"ie",
            b"i-0e",
            b"i01e",
            b"5:ab",
            b"d1:a",
            b"di1ei2ee",
            b"le1",
            b"x",
            b"99999999999999999999:",
            b"i99999999999999999999e",
        ] {
            let why = check_reason(reply_dict(&reply(bad)));
            assert!(why.starts_with("malformed bencode ("), "{bad:?}: {why}");
        }
        let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
        assert!(reply_dict(&reply(&deep)).is_err());
    }

    #[test]
    fn replies_that_are_not_a_dictionary_or_a_refusal_fail() {
        assert_eq!(
            check_reason(reply_dict(&reply(b"li1ee"))),
            "the reply is not a bencoded dictionary: \"li1ee\""
        );
        assert_eq!(
            check_reason(reply_dict(&reply(b"d14:failure reason4:nopee"))),
            "tracker failure: nope"
        );
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode(b"a-Z.~_ \x00\xff/"), "a-Z.~_%20%00%FF%2F");
    }
}
