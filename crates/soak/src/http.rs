//! The HTTP side: announces and scrapes as GETs through the workspace's one
//! HTTP client (`http_client`: a connection per request, `Connection:
//! close`, as many BitTorrent clients do), their replies read with
//! `bittorrent::bencode::decode`.
//!
//! A reply is answered only when it is a 200 whose body is a bencoded
//! dictionary without a `failure reason`, with an `interval` and compact
//! `peers` (announce) or a `files` dictionary (scrape); anything else is an
//! error named by what was wrong.

use bittorrent::bencode::{Value, decode};
use bittorrent::{InfoHash, percent_encode};
use http_client::{Response, StatusCode};

use crate::population::Announce;
use crate::stats::Outcome;

/// The largest reply read.
pub const MAX_REPLY: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Announce,
    Scrape,
}

/// The path and query of an announce.
pub fn announce_target(a: &Announce) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1{}",
        percent_encode(&a.info_hash.0),
        percent_encode(&a.peer_id.0),
        a.port,
        a.uploaded,
        a.downloaded,
        a.left,
        a.event.http_query()
    )
}

/// The path and query of a scrape of `hashes`.
pub fn scrape_target(hashes: &[InfoHash]) -> String {
    let mut target = String::from("/scrape?");
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            target.push('&');
        }
        target.push_str("info_hash=");
        target.push_str(&percent_encode(&h.0));
    }
    target
}

/// What a reply to a `kind` request means.
pub fn check(kind: Kind, reply: &Response) -> Outcome {
    let what = match kind {
        Kind::Announce => "announce",
        Kind::Scrape => "scrape",
    };
    let error = |why: String| Outcome::Error(format!("HTTP {what}: {why}"));
    if reply.status != StatusCode::OK {
        return error(format!(
            "status {} (body: {:?})",
            reply.status.as_u16(),
            reply.body_snippet()
        ));
    }
    let value = match decode(&reply.body) {
        Ok(v) => v,
        Err(e) => return error(format!("malformed bencode: {e}")),
    };
    if value.as_dict().is_none() {
        return error("the reply is not a bencoded dictionary".into());
    }
    if let Some(reason) = value.get("failure reason") {
        let text = reason
            .as_bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        return error(format!("failure reason: {text}"));
    }
    let well_formed = match kind {
        Kind::Announce => {
            value.get("interval").and_then(Value::as_int).is_some()
                && value
                    .get("peers")
                    .and_then(Value::as_bytes)
                    .is_some_and(|p| p.len() % 6 == 0)
        }
        Kind::Scrape => value.get("files").and_then(Value::as_dict).is_some(),
    };
    if well_formed {
        Outcome::Answered
    } else {
        error(match kind {
            Kind::Announce => "no interval or no compact peers in the reply".into(),
            Kind::Scrape => "no files dictionary in the reply".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::Event;
    use bittorrent::PeerId;
    use http_client::HeaderMap;

    fn reply(status: u16, body: &[u8]) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            reason: String::new(),
            headers: HeaderMap::new(),
            body: body.to_vec().into(),
        }
    }

    fn answered(o: Outcome) -> Result<(), String> {
        match o {
            Outcome::Answered => Ok(()),
            Outcome::Error(e) => Err(e),
        }
    }

    #[test]
    fn only_whole_replies_count_as_answered() {
        let ok = b"d8:completei1e10:incompletei0e8:intervali1800e5:peers6:\x7f\0\0\x01\x1a\xe1e";
        assert_eq!(answered(check(Kind::Announce, &reply(200, ok))), Ok(()));
        let files =
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei0e10:downloadedi0e10:incompletei0eeee";
        assert_eq!(answered(check(Kind::Scrape, &reply(200, files))), Ok(()));
        let cases: [(Kind, u16, &[u8], &str); 5] = [
            (
                Kind::Announce,
                200,
                b"d14:failure reason17:unapproved cliente",
                "HTTP announce: failure reason: unapproved client",
            ),
            (Kind::Announce, 503, b"", "HTTP announce: status 503"),
            (Kind::Announce, 200, b"d8:intervali1e", "malformed bencode"),
            (
                Kind::Announce,
                200,
                b"d8:intervali1e5:peers5:abcdee",
                "no interval or no compact peers",
            ),
            (Kind::Scrape, 200, b"le", "not a bencoded dictionary"),
        ];
        for (kind, status, body, want) in cases {
            let e = answered(check(kind, &reply(status, body))).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn targets_carry_every_field() {
        let a = Announce {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-KS0100-abcdefghijkl"),
            port: 7,
            socket: 0,
            event: Event::Completed,
            left: 0,
            downloaded: 5,
            uploaded: 6,
        };
        let t = announce_target(&a);
        assert!(t.starts_with("/announce?info_hash=%AB%AB"), "{t}");
        assert!(t.contains("&peer_id=-KS0100-abcdefghijkl&port=7&uploaded=6&downloaded=5&left=0&compact=1&event=completed"), "{t}");
        let s = scrape_target(&[InfoHash([1; 20]), InfoHash([2; 20])]);
        assert_eq!(s.matches("info_hash=").count(), 2);
        assert!(s.starts_with("/scrape?info_hash=%01"));
    }
}
