//! Who an announce belongs to: a 16-byte user id derived from the request.
//!
//! privtrak keys its records by "anything unique that fits into 16 bytes". The
//! built-in [`PasskeyIdentifier`] reads the passkey a private tracker puts in
//! its announce URLs: the HTTP route parameter (`/:passkey/announce`), else the
//! query parameter of that name, else — for UDP, where BEP 41 URL data carries
//! the path of `udp://host:port/KEY/announce` — the first segment of a path of
//! two or more segments. It looks at the request only: no database query runs
//! on this path (privtrak's own warning: it would take the tracker down).
//!
//! A hook that knows the site's user (passkey approval) attaches a [`SiteUser`]
//! to the request context; the identifier then uses the site's id, so a
//! passkey rotation keeps the user's history.

use std::fmt;

use bittorrent::{AnnounceRequest, ClientError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tracker::RequestContext;

/// A user as privtrak counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub [u8; 16]);

impl UserId {
    /// The id of a site's numeric user id: eight zero bytes, then the id
    /// big-endian (a passkey of 32 hex digits never starts with 16 zeros in
    /// practice; a site that issues such passkeys should not mix both).
    pub fn from_site_id(id: i64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&id.to_be_bytes());
        UserId(bytes)
    }

    /// 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

pub use tracker::site::SiteUser;

/// Turns a request into the user it counts for.
///
/// Runs on every announce: it must not wait, so it is a plain function. The
/// error is shown to the client.
pub trait UserIdentifier: Send + Sync + 'static {
    fn identify(&self, ctx: &RequestContext, req: &AnnounceRequest) -> Result<UserId, ClientError>;
}

pub const MISSING_PASSKEY: ClientError = ClientError::new("missing passkey");
pub const MALFORMED_PASSKEY: ClientError = ClientError::new("malformed passkey");

/// The built-in identifier: see the module documentation.
pub struct PasskeyIdentifier {
    param: String,
    /// Present when passkeys other than 32 hex digits are accepted: the key of
    /// the hash that maps them to 16 bytes.
    hash_key: Option<Vec<u8>>,
}

impl PasskeyIdentifier {
    /// `param` names the route and query parameter; `hash_key` enables
    /// passkeys that are not 32 hex digits (`hash_other_passkeys`).
    pub fn new(param: &str, hash_key: Option<&[u8]>) -> Self {
        PasskeyIdentifier {
            param: param.to_ascii_lowercase(),
            hash_key: hash_key.map(<[u8]>::to_vec),
        }
    }

    /// The passkey of the request, as written (see
    /// [`tracker::site::passkey_in`]).
    pub fn passkey<'r>(&self, req: &'r AnnounceRequest) -> Option<&'r str> {
        tracker::site::passkey_in(&req.params, &self.param)
    }

    /// The user id of a passkey.
    pub fn user_of(&self, passkey: &str) -> Result<UserId, ClientError> {
        if passkey.is_empty() {
            return Err(MISSING_PASSKEY);
        }
        if let Some(id) = tracker::site::parse_hex16(passkey) {
            return Ok(UserId(id));
        }
        let Some(key) = &self.hash_key else {
            return Err(MALFORMED_PASSKEY);
        };
        // Bounded: a passkey is a URL segment, but nothing stops a client
        // from sending a megabyte of one.
        if passkey.len() > 256 {
            return Err(MALFORMED_PASSKEY);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(passkey.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Ok(UserId(id))
    }
}

impl UserIdentifier for PasskeyIdentifier {
    fn identify(&self, ctx: &RequestContext, req: &AnnounceRequest) -> Result<UserId, ClientError> {
        if let Some(site) = ctx.extensions.get::<SiteUser>() {
            return Ok(UserId::from_site_id(site.user_id));
        }
        self.user_of(self.passkey(req).ok_or(MISSING_PASSKEY)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bittorrent::Params;

    fn req(url: &str, route: Option<&str>) -> AnnounceRequest {
        let mut params = Params::parse(url.as_bytes()).unwrap();
        if let Some(key) = route {
            params.set_route_param("passkey", key);
        }
        AnnounceRequest {
            params,
            ..AnnounceRequest::default()
        }
    }

    const KEY: &str = "0123456789abcdefFEDCBA9876543210";
    const ID: [u8; 16] = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32,
        0x10,
    ];

    #[test]
    fn passkey_from_route_then_query_then_path() {
        let id = PasskeyIdentifier::new("passkey", None);
        let ctx = RequestContext::new();
        let other = "ffffffffffffffffffffffffffffffff";
        // Route parameter wins over the query.
        let r = req(&format!("/{KEY}/announce?passkey={other}"), Some(KEY));
        assert_eq!(id.identify(&ctx, &r), Ok(UserId(ID)));
        // Query parameter.
        let r = req(&format!("/announce?passkey={KEY}"), None);
        assert_eq!(id.identify(&ctx, &r), Ok(UserId(ID)));
        // BEP 41 URL data: /KEY/announce.
        let r = req(&format!("/{KEY}/announce?numwant=5"), None);
        assert_eq!(id.identify(&ctx, &r), Ok(UserId(ID)));
        // A one-segment path has no passkey.
        assert_eq!(
            id.identify(&ctx, &req("/announce", None)),
            Err(MISSING_PASSKEY)
        );
        assert_eq!(id.identify(&ctx, &req("", None)), Err(MISSING_PASSKEY));
        assert_eq!(
            id.identify(&ctx, &req("/announce?passkey=", None)),
            Err(MISSING_PASSKEY)
        );
    }

    #[test]
    fn other_passkeys_are_refused_unless_hashed() {
        let strict = PasskeyIdentifier::new("passkey", None);
        let ctx = RequestContext::new();
        let r = req("/announce?passkey=not-hex-at-all", None);
        assert_eq!(strict.identify(&ctx, &r), Err(MALFORMED_PASSKEY));
        let r = req("/announce?passkey=0123456789abcdef0123456789abcdeg", None);
        assert_eq!(strict.identify(&ctx, &r), Err(MALFORMED_PASSKEY));

        let hashed = PasskeyIdentifier::new("passkey", Some(b"secret"));
        let a = hashed
            .identify(&ctx, &req("/announce?passkey=alice", None))
            .unwrap();
        let b = hashed
            .identify(&ctx, &req("/announce?passkey=bob", None))
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            hashed.identify(&ctx, &req("/announce?passkey=alice", None)),
            Ok(a)
        );
        // Another key, another id: the mapping cannot be computed without it.
        let other = PasskeyIdentifier::new("passkey", Some(b"other"));
        assert_ne!(
            other.identify(&ctx, &req("/announce?passkey=alice", None)),
            Ok(a)
        );
        // Hex passkeys keep their bytes.
        let r = req(&format!("/announce?passkey={KEY}"), None);
        assert_eq!(hashed.identify(&ctx, &r), Ok(UserId(ID)));
        let long = "x".repeat(257);
        let r = req(&format!("/announce?passkey={long}"), None);
        assert_eq!(hashed.identify(&ctx, &r), Err(MALFORMED_PASSKEY));
    }

    #[test]
    fn a_site_user_wins() {
        let id = PasskeyIdentifier::new("passkey", None);
        let mut ctx = RequestContext::new();
        ctx.extensions.insert(SiteUser {
            user_id: 42,
            upload_factor: 1.0,
            download_factor: 1.0,
        });
        let r = req("/announce", None);
        assert_eq!(id.identify(&ctx, &r), Ok(UserId::from_site_id(42)));
        assert_eq!(UserId::from_site_id(42).to_hex(), format!("{:032x}", 42));
    }
}
