//! `node_ops` scripts with the node saved and loaded again part-way (the core's `snapshot`
//! feature, in the simulator's postcard format): the restored node must go on exactly as
//! the original, with the same outputs, stats and timers; see
//! `peer_relay_core::fuzzing::node_ops_restored`. Its inputs are `node_ops` inputs.
#![no_main]

use peer_relay_core::Node;

fn round_trip(node: &Node) -> Node {
    let bytes = postcard::to_stdvec(node).expect("a drained node saves");
    postcard::from_bytes(&bytes).expect("a saved node loads")
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peer_relay_core::fuzzing::node_ops_restored(data, round_trip)
});
