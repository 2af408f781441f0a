//! An arbitrary list of operations applied to a `Node`, with invariants checked after every
//! step; see `peer_relay_core::fuzzing::node_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_relay_core::fuzzing::node_ops(data));
