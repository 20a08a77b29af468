//! The integration suites, one test binary (`it`) so the edge links once.
//! Each module is a suite: `cargo test --test it routing::` runs one.
//! They start the real `esprit-edge` binary on free loopback ports with real
//! peers (`common`).

mod admin;
mod auth;
mod browser;
mod caps;
mod common;
mod compression;
mod config_cli;
mod console;
mod handover;
mod hub;
mod identity;
mod lifecycle;
mod limits;
mod reload;
mod routing;
mod shared_store;
mod static_files;
mod streams;
mod tls;
mod users_cli;
