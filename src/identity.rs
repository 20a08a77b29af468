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
}

/// Stays true while the session behind a request lives: long streams poll it
/// so a logout, expiry or revocation ends them. Polling it is not use of the
/// session (an open stream alone never keeps a session from going idle).
pub type SessionAlive = Arc<dyn Fn() -> bool + Send + Sync>;
