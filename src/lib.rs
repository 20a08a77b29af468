//! esprit-edge: the Esprit-Hub edge (routing, TLS, limits) and its agent hub,
//! in one Pingora process. The modules follow the layers in DESIGN.md, and
//! dependencies run one way, downwards (`architecture.rs`, a test, keeps it so):
//!
//! 1. leaves: `config`, `clock`, `identity`, `reply` (in-process answers and
//!    the handler trait), `watch` (a session's end ends its streams),
//!    `watched_file`, `private_file`, `telemetry`, `redis_link` (the
//!    Redis several edges share);
//! 2. `limit` (client IP, the sign-in backoff; rate rules next);
//! 3. concerns: `auth`, `hub`, `tls`;
//! 4. `edge`, the Pingora service;
//! 5. `server`, which assembles it, and `migrate` (SQLite to Redis), both
//!    behind `main`, the CLI; `fuzzing`, the
//!    fuzz harnesses over the layers below.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod edge;
pub mod fuzzing;
pub mod hub;
pub mod identity;
pub mod limit;
pub mod migrate;
pub mod private_file;
pub mod redis_link;
pub mod reply;
pub mod server;
pub mod static_files;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod watched_file;

#[cfg(test)]
mod architecture;
