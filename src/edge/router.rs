//! Route lookup: by host (like nginx `server_name`), then exact path, then
//! longest prefix. Built once from the config; lookups allocate nothing.

use crate::config::{PathMatch, Route};
use std::sync::Arc;

/// The routes in lookup order.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// Orders routes so the first match is the right one: routes with a host
    /// before routes without, exact before prefix, longer prefix before shorter.
    pub fn new(routes: &[Route]) -> Self {
        let mut routes: Vec<Arc<Route>> = routes.iter().cloned().map(Arc::new).collect();
        routes.sort_by_key(|r| {
            let (exact, len) = match &r.path {
                PathMatch::Exact(p) => (0, p.len()),
                PathMatch::Prefix(p) => (1, p.len()),
            };
            (r.host.is_none(), exact, std::cmp::Reverse(len))
        });
        Self { routes }
    }

    /// The route for `host` (lower-case, no port) and a normalised `path`.
    /// Routes naming another host are skipped; host-less routes catch the rest.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
            };
            host_ok && matches(&r.path, path)
        })
    }
}

fn matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) if p.ends_with('/') => path.starts_with(p.as_str()),
        PathMatch::Prefix(p) => path
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
    }
}

/// The part of `path` after the route's prefix, always starting with `/`
/// (or empty for an exact match): what `strip_prefix` forwards.
pub fn rest_of<'a>(m: &PathMatch, path: &'a str) -> &'a str {
    match m {
        PathMatch::Exact(_) => "",
        PathMatch::Prefix(p) => {
            let keep_slash = p.strip_suffix('/').unwrap_or(p);
            path.strip_prefix(keep_slash).unwrap_or(path)
        }
    }
}

/// The path sent upstream when the prefix is stripped: never empty.
pub fn stripped(m: &PathMatch, path: &str) -> String {
    let rest = rest_of(m, path);
    if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    }
}

/// Where a redirect route sends `path?query`: its target plus the rest of the path and the query.
pub fn redirect_target(to: &str, m: &PathMatch, path: &str, query: Option<&str>) -> String {
    let rest = rest_of(m, path);
    let mut target = String::with_capacity(to.len() + rest.len() + 16);
    target.push_str(to);
    if to.ends_with('/') {
        target.push_str(rest.strip_prefix('/').unwrap_or(rest));
    } else {
        target.push_str(rest);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(q);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteAction, Timeouts};
    use std::time::Duration;

    fn route(index: usize, host: Option<&str>, path: PathMatch) -> Route {
        Route {
            index,
            host: host.map(str::to_string),
            path,
            action: RouteAction::Handler {
                kind: crate::config::HandlerKind::Hub,
                fallback: None,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_secs(1),
                write: Duration::from_secs(1),
            },
            stream: false,
            csp: None,
            max_body_bytes: None,
            compress: false,
            assertion: true,
            auth: crate::config::RouteAuth::None,
        }
    }

    fn router() -> Router {
        Router::new(&[
            route(0, None, PathMatch::Prefix("/".into())),
            route(1, None, PathMatch::Prefix("/studio/".into())),
            route(2, None, PathMatch::Exact("/studio".into())),
            route(3, None, PathMatch::Prefix("/login".into())),
            route(4, Some("admin.example.com"), PathMatch::Prefix("/".into())),
            route(5, None, PathMatch::Prefix("/studio/deep/".into())),
        ])
    }

    fn idx(host: Option<&str>, path: &str) -> usize {
        router().find(host, path).unwrap().index
    }

    #[test]
    fn longest_prefix_and_exact() {
        assert_eq!(idx(None, "/"), 0);
        assert_eq!(idx(None, "/anything"), 0);
        assert_eq!(idx(None, "/studio"), 2);
        assert_eq!(idx(None, "/studio/"), 1);
        assert_eq!(idx(None, "/studio/x"), 1);
        assert_eq!(idx(None, "/studio/deep/x"), 5);
    }

    #[test]
    fn prefix_without_slash_matches_at_segment_boundary() {
        assert_eq!(idx(None, "/login"), 3);
        assert_eq!(idx(None, "/login/x"), 3);
        assert_eq!(idx(None, "/loginx"), 0);
    }

    #[test]
    fn host_routes_win_for_their_host_only() {
        assert_eq!(idx(Some("admin.example.com"), "/x"), 4);
        assert_eq!(idx(Some("other.example.com"), "/x"), 0);
        assert_eq!(idx(None, "/x"), 0);
    }

    #[test]
    fn strip_and_redirect() {
        let studio = PathMatch::Prefix("/studio/".into());
        assert_eq!(stripped(&studio, "/studio/"), "/");
        assert_eq!(stripped(&studio, "/studio/w/1"), "/w/1");
        let login = PathMatch::Prefix("/login".into());
        assert_eq!(
            redirect_target("/studio/login", &login, "/login", Some("a=1")),
            "/studio/login?a=1"
        );
        assert_eq!(
            redirect_target("/studio/login", &login, "/login/x", None),
            "/studio/login/x"
        );
        let exact = PathMatch::Exact("/studio".into());
        assert_eq!(
            redirect_target("/studio/", &exact, "/studio", Some("q")),
            "/studio/?q"
        );
        let ws = PathMatch::Prefix("/workspace/".into());
        assert_eq!(
            redirect_target("/studio/workspace/", &ws, "/workspace/a/b", None),
            "/studio/workspace/a/b"
        );
    }
}
