#![no_main]
//! `cargo +nightly fuzz run config`: see esprit_edge::fuzzing::config for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| esprit_edge::fuzzing::config(data));
