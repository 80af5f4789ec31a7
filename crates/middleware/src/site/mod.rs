//! What a private site tells karuta through its database: users (for
//! `passkey approval`) and torrents (for `torrent approval`), held in
//! memory and kept current live. See [`postgres`] for how.

pub mod postgres;
pub mod table;
pub mod torrents;
pub mod users;

/// The largest credit factor a site may set: far above any site's bonus,
/// and small enough that a user's factor times a torrent's stays finite.
pub const MAX_FACTOR: f32 = 1000.0;

/// A credit factor as a site stores it: from 0 to [`MAX_FACTOR`]. A
/// negative factor would take credit away and NaN would silently credit
/// nothing, so either is an error naming the column.
pub(crate) fn factor(v: f32, column: &str) -> Result<f32, String> {
    if (0.0..=MAX_FACTOR).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{column}: a credit factor must be from 0 to {MAX_FACTOR}, not {v}"
        ))
    }
}
