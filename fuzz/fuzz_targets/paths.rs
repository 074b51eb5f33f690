//! Any `path \0 value`: path operations never panic and a successful set reads back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_hl7::checks::path_ops(data));
