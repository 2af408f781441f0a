//! Arbitrary bytes into the wire codec; see `peer_relay_core::fuzzing::decode_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_relay_core::fuzzing::decode_frame(data));
