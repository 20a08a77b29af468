//! Who a request belongs to, as the gate established it, and how a long
//! stream learns that this stopped being true. Shared vocabulary: the sign-in
//! produces it, forwarding and the hub read it, the stream watch polls it.

use std::sync::Arc;

/// Who a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Login name (`X-Forwarded-User`).
    pub user: String,
    /// Display name.
    pub name: Option<String>,
    /// `X-Forwarded-Email`.
    pub email: Option<String>,
    /// When the session ends at the latest (ms since epoch).
    pub expires: i64,
    /// Names the session without revealing it (a hash of its token), for
    /// the assertion's `sid`: an upstream can tell sessions apart, and
    /// nothing it sees lets it act as one.
    pub sid: String,
}

/// Stays true while the session behind a request lives: long streams poll it
/// so a logout, expiry or revocation ends them. Polling it is not use of the
/// session (an open stream alone never keeps a session from going idle).
pub type SessionAlive = Arc<dyn Fn(Lookup) -> bool + Send + Sync>;

/// Where a [`SessionAlive`] check may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Only at what this process knows now, never waiting on a store: a
    /// stream's frames are filtered on a worker thread. A session due for a
    /// re-read from a shared store is re-read in the background and counts
    /// as alive until then (the next check, or the sweep, has the answer).
    Cached,
    /// The store too when needed (the sweep and off-thread checks).
    Store,
}

/// The token of `Authorization: Bearer <token>` (scheme in any case): one
/// reading for the hub's token check and the per-token rate rule, so a
/// request cannot be one thing to one and another to the other.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
    }
}
