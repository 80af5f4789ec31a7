//! HTTP announces and scrapes as a client sends them, and the counts in
//! their bencoded replies: for the tests that run several karuta processes
//! on one store (`redis_two_instances.rs`, `redis_cluster.rs`).

use std::net::SocketAddr;

use test_support::bencode::{self, Fields};
use test_support::{http, percent_encode};

/// The integer under `key` in a bencoded announce reply, or in the only
/// entry of a scrape reply's `files`.
pub fn int_after(body: &[u8], key: &str) -> i64 {
    let reply = bencode::strict(body).unwrap_or_else(|e| panic!("{e}"));
    match reply.get("files") {
        Some(files) => files.dict()[0].1.int_at(key),
        None => reply.int_at(key),
    }
}

/// An HTTP announce (`started`, compact, `left` bytes left); the reply body.
pub fn http_announce(
    addr: SocketAddr,
    ih: &[u8; 20],
    peer_id: &[u8; 20],
    port: u16,
    left: u64,
) -> Vec<u8> {
    let target = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&compact=1&event=started",
        percent_encode(ih),
        percent_encode(peer_id)
    );
    http::get(addr, &target).send().unwrap().body
}

/// (complete, incomplete, downloaded) from an HTTP scrape.
pub fn http_scrape(addr: SocketAddr, ih: &[u8; 20]) -> (i64, i64, i64) {
    let target = format!("/scrape?info_hash={}", percent_encode(ih));
    let body = http::get(addr, &target).send().unwrap().body;
    (
        int_after(&body, "complete"),
        int_after(&body, "incomplete"),
        int_after(&body, "downloaded"),
    )
}
