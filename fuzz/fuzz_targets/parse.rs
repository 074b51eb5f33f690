//! Any bytes: parsing never panics, parse → encode → parse is stable, and an answer
//! (ACK or NAK) can always be built.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_hl7::checks::parse_roundtrip(data));
