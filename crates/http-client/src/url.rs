//! URLs the client accepts: parsed by `http::Uri` (through hyper), then checked
//! for what connecting needs: a host, a usable port, no user info.
//!
//! `Uri` alone is lenient where a client must not be: it accepts an empty host
//! (`http://:80/`), reads an unparsable port (`h:99999`, `h:abc`) as "no port",
//! and keeps user info. [`endpoint`] closes those gaps for any scheme, so other
//! URL readers (the `udp://` targets of `karuta e2e`) apply the same rules.

use std::fmt;

use hyper::Uri;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};

/// Why a text is not a usable URL. Each message names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url:?} is not a URL: {reason}")]
    Syntax { url: String, reason: String },
    #[error("{url:?} is not an http:// or https:// URL")]
    Scheme { url: String },
    #[error("{url:?}: user info in URLs is not supported")]
    UserInfo { url: String },
    #[error("{url:?} has no host")]
    NoHost { url: String },
    #[error("{url:?}: bad port {port:?}")]
    Port { url: String, port: String },
}

/// The host (IPv6 brackets removed) and explicit port of `uri`'s authority;
/// `text` is the URL as written, for the messages.
///
/// Refuses what `Uri` lets through: no authority or an empty host, user info,
/// and a port that is empty, not a number, out of range or 0.
pub fn endpoint<'u>(uri: &'u Uri, text: &str) -> Result<(&'u str, Option<u16>), UrlError> {
    let url = || text.to_owned();
    let Some(authority) = uri.authority() else {
        return Err(UrlError::NoHost { url: url() });
    };
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo { url: url() });
    }
    let host = authority.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(UrlError::NoHost { url: url() });
    }
    // Without user info the authority is `host[:port]`.
    let port = match authority.as_str()[host.len()..].strip_prefix(':') {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(n) if n != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(UrlError::Port {
                    url: url(),
                    port: text.to_owned(),
                });
            }
        },
    };
    Ok((bare, port))
}

/// An `http://` or `https://` URL, checked and split for connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    uri: Uri,
    /// Without IPv6 brackets: what is resolved, and the TLS server name.
    host: String,
    /// The explicit port, else the scheme's.
    port: u16,
    tls: bool,
}

impl Url {
    /// Parses `text`; a fragment is dropped, a missing path is `/`.
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let uri: Uri =
            text.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| UrlError::Syntax {
                    url: text.to_owned(),
                    reason: e.to_string(),
                })?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => {
                return Err(UrlError::Scheme {
                    url: text.to_owned(),
                });
            }
        };
        let (host, port) = endpoint(&uri, text)?;
        let url = Url {
            host: host.to_owned(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            tls,
            uri: uri.clone(),
        };
        // `http://h?q` has the query but no path; the request target needs one.
        match uri.path_and_query().map(PathAndQuery::as_str) {
            Some(pq) if pq.starts_with('?') => url.with_path_and_query(&format!("/{pq}")),
            _ => Ok(url),
        }
    }

    /// The same scheme and authority with another path and query (which must
    /// start with `/`).
    pub fn with_path_and_query(&self, path_and_query: &str) -> Result<Url, UrlError> {
        let syntax = |reason: String| UrlError::Syntax {
            url: format!("{}://{}{path_and_query}", self.scheme(), self.authority()),
            reason,
        };
        if !path_and_query.starts_with('/') {
            return Err(syntax("the path must start with '/'".into()));
        }
        let pq: PathAndQuery = path_and_query
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| syntax(e.to_string()))?;
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        let uri = Uri::from_parts(parts).map_err(|e| syntax(e.to_string()))?;
        Ok(Url {
            uri,
            ..self.clone()
        })
    }

    /// `https://`.
    pub fn is_https(&self) -> bool {
        self.tls
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        if self.tls { "https" } else { "http" }
    }

    /// The host without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, else 80 or 443.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as written (IPv6 in brackets): the Host header.
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(Authority::as_str)
            .unwrap_or_default()
    }

    /// `host:port` with the port always there (IPv6 in brackets), for messages.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target: path and query, `/` at least.
    pub fn path_and_query(&self) -> &str {
        self.uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/")
    }

    pub fn as_uri(&self) -> &Uri {
        &self.uri
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

impl std::str::FromStr for Url {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Url, UrlError> {
        Url::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (bool, String, u16, String) {
        let u = Url::parse(url).unwrap();
        (
            u.is_https(),
            u.host().to_owned(),
            u.port(),
            u.path_and_query().to_owned(),
        )
    }

    #[test]
    fn splits_http_and_https_urls() {
        let s = |tls, host: &str, port, path: &str| (tls, host.to_owned(), port, path.to_owned());
        assert_eq!(
            split("http://example.com"),
            s(false, "example.com", 80, "/")
        );
        assert_eq!(
            split("https://example.com/jwks"),
            s(true, "example.com", 443, "/jwks")
        );
        assert_eq!(
            split("http://127.0.0.1:8080/a/jwks.json?x=1"),
            s(false, "127.0.0.1", 8080, "/a/jwks.json?x=1")
        );
        assert_eq!(split("https://[::1]:81/k"), s(true, "::1", 81, "/k"));
        assert_eq!(split("HTTP://h/x#frag"), s(false, "h", 80, "/x"));
        assert_eq!(split("http://h?q=1"), s(false, "h", 80, "/?q=1"));
        let u = Url::parse("http://[::1]:81/k").unwrap();
        assert_eq!(
            (u.authority(), u.host_port().as_str()),
            ("[::1]:81", "[::1]:81")
        );
        let u = Url::parse("https://example.com/").unwrap();
        assert_eq!(
            (u.authority(), u.host_port().as_str()),
            ("example.com", "example.com:443")
        );
    }

    #[test]
    fn refuses_what_a_client_cannot_use() {
        let cases: &[(&str, &str)] = &[
            ("ftp://x/", "\"ftp://x/\" is not an http:// or https:// URL"),
            ("/just/a/path", "is not an http:// or https:// URL"),
            ("http://:80/", "\"http://:80/\" has no host"),
            ("http://[]/", "\"http://[]/\" has no host"),
            (
                "http://u@h/",
                "\"http://u@h/\": user info in URLs is not supported",
            ),
            ("http://h:0/", "\"http://h:0/\": bad port \"0\""),
            ("http://h:99999/", "bad port \"99999\""),
            ("http://h:abc/", "bad port \"abc\""),
            ("http://h:/", "bad port \"\""),
            ("http://h/a b", "is not a URL: invalid uri character"),
            ("http://[::1/", "is not a URL"),
        ];
        for (url, want) in cases {
            let e = Url::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn endpoint_works_for_any_scheme() {
        let text = "udp://[::1]:6969/k/announce?x=1";
        assert_eq!(
            endpoint(&text.parse().unwrap(), text),
            Ok(("::1", Some(6969)))
        );
        let text = "udp://tracker.example";
        assert_eq!(
            endpoint(&text.parse().unwrap(), text),
            Ok(("tracker.example", None))
        );
        let text = "udp://h:0";
        assert_eq!(
            endpoint(&text.parse().unwrap(), text)
                .unwrap_err()
                .to_string(),
            "\"udp://h:0\": bad port \"0\""
        );
    }

    #[test]
    fn replaces_the_path_and_query() {
        let u = Url::parse("http://[::1]:6969/a/announce?k=1").unwrap();
        let v = u
            .with_path_and_query("/a/scrape?k=1&info_hash=%00")
            .unwrap();
        assert_eq!(
            v.to_string(),
            "http://[::1]:6969/a/scrape?k=1&info_hash=%00"
        );
        assert_eq!((v.host(), v.port()), ("::1", 6969));
        assert!(u.with_path_and_query("no-slash").is_err());
        assert!(u.with_path_and_query("/a b").is_err());
    }
}
