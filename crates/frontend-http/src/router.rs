//! Routes in httprouter's syntax, as chihaya configures them: static
//! segments, `:name` (one segment) and `*name` (the rest of the path, with its
//! leading slash, last segment only).

use bittorrent::Params;
use tracker::ConfigError;

/// What a matched route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Announce,
    Scrape,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Static(String),
    Param(String),
    CatchAll(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    segments: Vec<Segment>,
    endpoint: Endpoint,
}

/// The configured routes, tried in order (announce routes first); the first
/// that matches wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Router {
    routes: Vec<Route>,
}

fn parse_route(route: &str, key: &str) -> Result<Vec<Segment>, ConfigError> {
    let bad = |m: String| ConfigError::new(key, format!("route {route:?}: {m}"));
    let Some(rest) = route.strip_prefix('/') else {
        return Err(bad("must start with '/'".into()));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = if let Some(name) = part.strip_prefix(':') {
            Segment::Param(name.to_owned())
        } else if let Some(name) = part.strip_prefix('*') {
            if i + 1 != parts.len() {
                return Err(bad("a catch-all parameter must be the last segment".into()));
            }
            Segment::CatchAll(name.to_owned())
        } else {
            Segment::Static((*part).to_owned())
        };
        if let Segment::Param(n) | Segment::CatchAll(n) = &segment
            && n.is_empty()
        {
            return Err(bad("a parameter needs a name".into()));
        }
        segments.push(segment);
    }
    Ok(segments)
}

impl Router {
    pub(crate) fn new(announce: &[String], scrape: &[String]) -> Result<Self, ConfigError> {
        let mut routes = Vec::new();
        for (key, list, endpoint) in [
            ("announce_routes", announce, Endpoint::Announce),
            ("scrape_routes", scrape, Endpoint::Scrape),
        ] {
            if list.is_empty() {
                return Err(ConfigError::new(key, "must list at least one route"));
            }
            for (i, r) in list.iter().enumerate() {
                let route = Route {
                    segments: parse_route(r, &format!("{key}[{i}]"))?,
                    endpoint,
                };
                if routes
                    .iter()
                    .any(|other: &Route| other.segments == route.segments)
                {
                    return Err(ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("route {r:?} is listed twice"),
                    ));
                }
                routes.push(route);
            }
        }
        Ok(Router { routes })
    }

    /// Matches `path`; on a match, records its parameters in `params`.
    pub(crate) fn route(&self, path: &str, params: &mut Params) -> Option<Endpoint> {
        let rest = path.strip_prefix('/')?;
        'routes: for route in &self.routes {
            let mut remaining = rest;
            let last = route.segments.len() - 1;
            for (i, segment) in route.segments.iter().enumerate() {
                let (part, after) = match remaining.split_once('/') {
                    Some((p, a)) => (p, Some(a)),
                    None => (remaining, None),
                };
                match segment {
                    Segment::CatchAll(_) => break,
                    Segment::Static(s) if s != part => continue 'routes,
                    Segment::Param(_) if part.is_empty() => continue 'routes,
                    _ => {}
                }
                match (i == last, after) {
                    (true, None) => {}
                    (true, Some(_)) | (false, None) => continue 'routes,
                    (false, Some(a)) => remaining = a,
                }
            }
            // Matched: record the parameters.
            let mut remaining = rest;
            for segment in &route.segments {
                let (part, after) = match remaining.split_once('/') {
                    Some((p, a)) => (p, a),
                    None => (remaining, ""),
                };
                match segment {
                    Segment::Param(name) => params.set_route_param(name, part),
                    Segment::CatchAll(name) => {
                        // httprouter keeps the leading slash.
                        let start = path.len() - remaining.len() - 1;
                        params.set_route_param(name, &path[start..]);
                        break;
                    }
                    Segment::Static(_) => {}
                }
                remaining = after;
            }
            return Some(route.endpoint);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(announce: &[&str], scrape: &[&str]) -> Router {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Router::new(&s(announce), &s(scrape)).unwrap()
    }

    fn route(r: &Router, path: &str) -> (Option<Endpoint>, Params) {
        let mut p = Params::default();
        (r.route(path, &mut p), p)
    }

    #[test]
    fn static_routes() {
        let r = router(&["/announce", "/announce.php"], &["/scrape"]);
        assert_eq!(route(&r, "/announce").0, Some(Endpoint::Announce));
        assert_eq!(route(&r, "/announce.php").0, Some(Endpoint::Announce));
        assert_eq!(route(&r, "/scrape").0, Some(Endpoint::Scrape));
        for miss in [
            "/",
            "",
            "/announce/",
            "/announcex",
            "/x/announce",
            "announce",
        ] {
            assert_eq!(route(&r, miss).0, None, "{miss:?}");
        }
    }

    #[test]
    fn named_parameters() {
        let r = router(&["/:passkey/announce"], &["/:passkey/scrape"]);
        let (e, p) = route(&r, "/0123abcd/announce");
        assert_eq!(e, Some(Endpoint::Announce));
        assert_eq!(p.route_param("passkey"), Some("0123abcd"));
        assert_eq!(
            route(&r, "//announce").0,
            None,
            "an empty segment is no parameter"
        );
        assert_eq!(route(&r, "/a/b/announce").0, None);
        assert_eq!(route(&r, "/k/scrape").1.route_param("passkey"), Some("k"));
    }

    #[test]
    fn catch_all() {
        let r = router(&["/t/*rest"], &["/scrape"]);
        let (e, p) = route(&r, "/t/a/b/announce");
        assert_eq!(e, Some(Endpoint::Announce));
        assert_eq!(p.route_param("rest"), Some("/a/b/announce"));
        assert_eq!(route(&r, "/t/").1.route_param("rest"), Some("/"));
        assert_eq!(route(&r, "/t").0, None);
    }

    #[test]
    fn bad_routes_name_the_key() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = Router::new(&s(&["announce"]), &s(&["/scrape"])).unwrap_err();
        assert_eq!(e.key, "announce_routes[0]");
        let e = Router::new(&s(&["/announce"]), &s(&["/*all/scrape"])).unwrap_err();
        assert_eq!(e.key, "scrape_routes[0]");
        assert!(e.message.contains("last segment"));
        let e = Router::new(&s(&["/:/announce"]), &s(&["/scrape"])).unwrap_err();
        assert!(e.message.contains("needs a name"));
        let e = Router::new(&s(&["/a"]), &s(&["/a"])).unwrap_err();
        assert_eq!(e.key, "scrape_routes[0]");
        let e = Router::new(&s(&[]), &s(&["/a"])).unwrap_err();
        assert_eq!(e.key, "announce_routes");
    }
}
