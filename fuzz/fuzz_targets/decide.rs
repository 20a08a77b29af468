#![no_main]
//! `cargo +nightly fuzz run decide`: see esprit_edge::fuzzing::decide for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| esprit_edge::fuzzing::decide(data));
