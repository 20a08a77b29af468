//! The wall clock, in the one unit the stores, sessions and events share.

/// Milliseconds since the Unix epoch (as JavaScript's `Date.now()`): what
/// event `ts` fields, session times and expiry checks are written in.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
