//! Who may use the edge: users and their sessions, the login, and the
//! policies the session gate is built from (CSRF, return paths, refusals,
//! throttling), plus the watch that ends websockets with their session.

pub mod csrf;
pub mod devices;
pub mod gate;
pub mod page;
pub mod redirect;
pub mod service;
pub mod sessions;
pub mod throttle;
pub mod users;
pub mod watch;
