//! Bencode (BEP 3), both ways.
//!
//! - [`BencodeWriter`] is what the tracker's replies are written with: append
//!   calls into one reused buffer, no value tree, nothing allocated.
//! - [`decode`] reads a whole bencoded value into a [`Value`] tree that borrows
//!   its strings from the input. It is for the readers of replies (the `e2e`
//!   check, tests, fetchers of bencoded documents), never the announce path, so
//!   it favours clear errors over speed: every malformed input is an error with
//!   the byte offset, never a panic, and nesting and lengths are bounded so a
//!   hostile input cannot exhaust the stack or memory.

mod decoder;
mod writer;

pub use decoder::{DecodeError, MAX_DEPTH, Value, decode};
pub use writer::BencodeWriter;
