//! What `karuta e2e` checks: the `--http` announce URL (with the scrape URL
//! BEP 48 derives from it) and the `--udp` tracker URL (with its BEP 41 URL
//! data). Both are parsed by `http::Uri`; `http_client` checks host and port.

use http_client::Url;
use hyper::Uri;

/// An `http://` announce URL, split for the client.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// As given.
    pub(super) url: String,
    /// Scheme and authority for the client (each request gets its own path).
    pub(super) base: Url,
    /// Path and query of the announce URL.
    pub(super) announce: String,
    /// Path and query of the scrape URL (BEP 48).
    pub(super) scrape: String,
}

impl HttpTarget {
    /// The scrape URL, for the output.
    pub(super) fn scrape_url(&self) -> String {
        format!("http://{}{}", self.base.authority(), self.scrape)
    }
}

/// A `udp://` tracker URL.
#[derive(Clone, Debug)]
pub struct UdpTarget {
    /// As given.
    pub(super) url: String,
    /// Without IPv6 brackets, for resolving.
    pub(super) host: String,
    pub(super) port: u16,
    /// Path and query, sent as BEP 41 URL data; empty: none.
    pub(super) url_data: String,
}

/// `url` as a URI of scheme `want` (in any case; a fragment is dropped).
fn parse_uri(url: &str, want: &str) -> Result<Uri, String> {
    let not_a_url = |why: String| {
        format!(
            "{url:?} is not a URL ({why}expected {want}://host:port/...; only http:// and udp:// are supported)"
        )
    };
    let uri: Uri = url.parse().map_err(|e| not_a_url(format!("{e}; ")))?;
    let Some(scheme) = uri.scheme_str() else {
        return Err(not_a_url(String::new()));
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    if scheme_lower != want {
        return Err(match scheme_lower.as_str() {
            "https" => {
                "https:// is not supported: karuta e2e speaks only http:// and udp://".into()
            }
            "http" | "udp" => {
                format!("expected a {want}:// URL here, got a {scheme_lower}:// one")
            }
            _ => format!("unsupported scheme {scheme}://: only http:// and udp:// are supported"),
        });
    }
    Ok(uri)
}

/// BEP 48: the scrape URL is the announce URL with the `announce` that starts
/// its last path segment replaced by `scrape`.
fn scrape_target(announce: &str) -> Option<String> {
    let (path, query) = match announce.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (announce, None),
    };
    let slash = path.rfind('/')?;
    let last = path[slash + 1..].strip_prefix("announce")?;
    let mut s = format!("{}scrape{last}", &path[..=slash]);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Some(s)
}

/// Parses `--http`.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    parse_uri(url, "http")?;
    let base = Url::parse(url).map_err(|e| e.to_string())?;
    let announce = base.path_and_query().to_owned();
    let scrape = scrape_target(&announce).ok_or_else(|| {
        format!(
            "{url:?}: cannot derive a scrape URL (BEP 48: the last path segment must start with \
             \"announce\", e.g. http://host:6969/announce)"
        )
    })?;
    Ok(HttpTarget {
        url: url.to_owned(),
        base,
        announce,
        scrape,
    })
}

/// Parses `--udp`.
pub fn parse_udp_url(url: &str) -> Result<UdpTarget, String> {
    let uri = parse_uri(url, "udp")?;
    let (host, port) = http_client::endpoint(&uri, url).map_err(|e| e.to_string())?;
    let Some(port) = port else {
        return Err(format!("{url:?} has no port (e.g. udp://host:6969)"));
    };
    let url_data = match uri.path_and_query().map_or("", |pq| pq.as_str()) {
        "" | "/" => String::new(),
        r if r.starts_with('?') => format!("/{r}"),
        r => r.to_owned(),
    };
    Ok(UdpTarget {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        url_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let t = parse_http_url("http://127.0.0.1:6969/announce").unwrap();
        assert_eq!((t.base.host(), t.base.port()), ("127.0.0.1", 6969));
        assert_eq!(
            (t.announce.as_str(), t.scrape.as_str()),
            ("/announce", "/scrape")
        );
        let t = parse_http_url("http://[::1]:80/abc/announce.php?passkey=x").unwrap();
        assert_eq!(t.base.host(), "::1");
        assert_eq!(t.base.authority(), "[::1]:80");
        assert_eq!(t.scrape, "/abc/scrape.php?passkey=x");
        let t = parse_http_url("HTTP://tracker.example/x/announce").unwrap();
        assert_eq!((t.base.port(), t.scrape.as_str()), (80, "/x/scrape"));
        assert!(
            parse_http_url("http://h:1/ann")
                .unwrap_err()
                .contains("BEP 48")
        );
        assert!(parse_http_url("http://h:1").unwrap_err().contains("scrape"));
        assert!(
            parse_http_url("https://h/announce")
                .unwrap_err()
                .contains("only http:// and udp://")
        );
        assert!(parse_http_url("udp://h:1").unwrap_err().contains("http://"));
        assert!(parse_http_url("http://h:0/announce").is_err());
        assert!(parse_http_url("http://:1/announce").is_err());
    }

    #[test]
    fn udp_urls() {
        let t = parse_udp_url("udp://127.0.0.1:6969").unwrap();
        assert_eq!((t.port, t.url_data.as_str()), (6969, ""));
        let t = parse_udp_url("udp://[::1]:6969/k/announce?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.url_data.as_str()),
            ("::1", "/k/announce?x=1")
        );
        assert!(parse_udp_url("udp://host").unwrap_err().contains("no port"));
        assert!(parse_udp_url("http://host:1").is_err());
    }

    #[test]
    fn url_data_and_bad_urls() {
        let t = parse_udp_url("udp://h:1?k=1#frag").unwrap();
        assert_eq!(t.url_data, "/?k=1");
        assert_eq!(parse_udp_url("udp://h:1/").unwrap().url_data, "");
        let t = parse_http_url("http://h:1/x/announce?k=1").unwrap();
        assert_eq!(t.scrape_url(), "http://h:1/x/scrape?k=1");
        for (url, want) in [
            ("127.0.0.1:6969", "is not a URL"),
            ("udp://h:99999", "bad port"),
            ("udp://u@h:1", "user info"),
            ("udp://[::1:1", "is not a URL"),
            ("ftp://h:1", "unsupported scheme ftp://"),
        ] {
            let e = parse_udp_url(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
