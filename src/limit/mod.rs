//! Who is asking and how much they may ask: client identity for limits and logs.

pub mod client_ip;
