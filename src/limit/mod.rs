//! Who is asking and how much they may ask: client identity for limits and
//! logs, and the sign-in backoff. Rate rules and connection caps live here too.

pub mod client_ip;
pub mod connections;
pub mod rate;
pub mod shared_rate;
pub mod streams;
pub mod throttle;
pub mod work_queue;
