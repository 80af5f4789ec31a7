//! Facts about a private site's users and torrents that hooks attach to a
//! request for later hooks: the approval hooks look them up, privtrak credits
//! by them. They live in the core so neither side names the other.

/// The site's user the request belongs to (attached by `passkey approval`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SiteUser {
    /// The site's id: privtrak keys the user's records by it, so a passkey
    /// rotation keeps the user's history.
    pub user_id: i64,
    pub upload_factor: f32,
    pub download_factor: f32,
}

/// The credit factors of the request's torrent (attached by
/// `torrent approval` with a registry).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorrentFactors {
    pub upload_factor: f32,
    pub download_factor: f32,
}
