//! What a private site tells karuta through its database: users (for
//! `passkey approval`) and torrents (for `torrent approval`), held in
//! memory and kept current live. See [`postgres`] for how.

pub mod postgres;
pub mod table;
pub mod torrents;
pub mod users;
