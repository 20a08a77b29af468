#![no_main]
//! `cargo +nightly fuzz run return_path`: see esprit_edge::fuzzing::return_path for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| esprit_edge::fuzzing::return_path(data));
