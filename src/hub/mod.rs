//! The agent hub (the old Node gateway), answered in-process under `/api/`.
//!
//! Not built yet (issue 3): its endpoints answer 503 so callers get a clear,
//! honest error instead of reaching Sim, which would 404 them. Everything else
//! under `/api/` is Sim's own API and falls through to the route's fallback.

use crate::edge::respond::Reply;

/// The hub's own endpoints: `/api/<name>` and everything below it.
const ENDPOINTS: [&str; 5] = ["run", "events", "stream", "agents", "runs"];

/// Whether `path` (normalised) is one of the hub's endpoints.
pub fn claims(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    ENDPOINTS.contains(&first)
}

/// The answer for a claimed path while the hub is not built.
pub fn unavailable() -> Reply {
    let mut r = Reply::json(
        503,
        &serde_json::json!({ "error": "the hub is not available yet in this build of esprit-edge" }),
        "hub unavailable",
    );
    r.retry_after = Some(60);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_its_endpoints() {
        assert!(claims("/api/run/research"));
        assert!(claims("/api/events"));
        assert!(claims("/api/stream"));
        assert!(claims("/api/agents"));
        assert!(claims("/api/runs/abc"));
        assert!(!claims("/api/workflows/x"));
        assert!(!claims("/api/auth/session"));
        assert!(!claims("/api/runner"));
        assert!(!claims("/apix/run"));
        assert!(!claims("/api/"));
    }
}
