//! A small multi-node scenario in the simulator, with invariants checked after every step
//! and the run repeated for determinism; see `peer_relay_sim::fuzzing::sim_scenario`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_relay_sim::fuzzing::sim_scenario(data));
