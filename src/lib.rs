//! esprit-edge: the Esprit-Hub edge (routing, TLS, limits) and its agent hub,
//! in one Pingora process. The modules follow the request path in DESIGN.md.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod edge;
pub mod hub;
pub mod limit;
pub mod server;
pub mod telemetry;
pub mod tls;
