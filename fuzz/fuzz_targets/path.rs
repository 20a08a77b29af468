#![no_main]
//! `cargo +nightly fuzz run path`: see esprit_edge::fuzzing::path for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| esprit_edge::fuzzing::path(data));
