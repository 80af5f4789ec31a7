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

/// The passkey a private tracker's announce URL carries: the HTTP route
/// parameter `param` (`/:passkey/announce`), else the query parameter of that
/// name, else — for UDP, where BEP 41 URL data carries the path of
/// `udp://host:port/KEY/announce` — the first segment of a path of two or
/// more segments. `param` is lower case.
pub fn passkey_in<'r>(params: &'r bittorrent::Params, param: &str) -> Option<&'r str> {
    if let Some(key) = params.route_param(param) {
        return Some(key);
    }
    if let Some(key) = params.get_str(param) {
        return Some(key);
    }
    let path = params.path().strip_prefix('/')?;
    let (first, rest) = path.split_once('/')?;
    (!first.is_empty() && !rest.is_empty()).then_some(first)
}

/// 32 hex digits (either case) as 16 bytes: the usual passkey.
pub fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let bytes = s.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}
