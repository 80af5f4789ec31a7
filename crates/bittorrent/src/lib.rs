//! The BitTorrent tracker protocol, as data.
//!
//! This crate owns the vocabulary every other karuta crate speaks: info hashes,
//! peer ids, peers, announce and scrape requests and responses, the error text a
//! client may see ([`ClientError`]), bencode (the writer replies use and a decoder
//! for what reads replies), and the URL-data parser
//! that both the HTTP query string and BEP 41 UDP URL data go through.
//!
//! It does no I/O and knows nothing of async, frontends or storage, so it can be
//! fuzzed, benchmarked and reused on its own.

#![forbid(unsafe_code)]

pub mod bencode;
mod error;
mod params;
mod request;
mod response;
mod types;
pub mod udp;

pub use bencode::BencodeWriter;
pub use error::ClientError;
pub use params::{Params, percent_encode};
pub use request::{AnnounceRequest, ScrapeRequest};
pub use response::{AnnounceResponse, Scrape, ScrapeResponse};
pub use types::{
    AddressFamily, ClientId, Event, InfoHash, ParseHexError, Peer, PeerId, canonical_ip, push_hex,
};
