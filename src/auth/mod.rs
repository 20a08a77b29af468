//! Who may use the edge: users and their sessions, known devices, the
//! `/auth/` handler, and the session gate with its policies (CSRF, return
//! paths, refusals). The sign-in backoff lives in `limit::throttle`, the
//! stream watch in `watch`.

pub mod assertion;
pub mod cookies;
pub mod csrf;
pub mod devices;
pub mod gate;
pub mod identify;
pub mod keys;
pub mod login;
pub mod page;
pub mod redirect;
pub mod redis_devices;
pub mod redis_sessions;
pub mod service;
pub mod session_index;
pub mod session_store;
pub mod sessions;
pub mod sqlite_sessions;
pub mod store_error;
pub mod upkeep;
pub mod users;
