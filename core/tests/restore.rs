//! A node saved and loaded again (the `snapshot` feature) carries on exactly as the node it
//! was saved from: every committed `node_ops` fuzz script is run with the node swapped for
//! its restored twin part-way, and both must give the same outputs, stats and timers; so is
//! every input the `node_restore` fuzz target failed on.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use peer_relay_core::{Config, Input, Node, Time, fuzzing};

mod by_hand;

/// Saves `node` in the simulator's binary format and loads it again.
fn round_trip(node: &Node) -> Node {
    let bytes = postcard::to_stdvec(node).expect("a drained node saves");
    postcard::from_bytes(&bytes).expect("a saved node loads")
}

#[test]
fn every_fuzz_script_goes_on_the_same_after_a_restore() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files: Vec<_> = fs::read_dir(fuzz.join("corpus/node_ops"))
        .expect("the node_ops corpus is committed")
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    assert!(files.len() >= 100, "{} corpus files", files.len());
    // Inputs the `node_restore` fuzz target once failed on.
    let regressions = fs::read_dir(fuzz.join("regressions/node_restore"))
        .expect("the node_restore regressions are committed")
        .map(|e| e.expect("readable dir entry").path());
    files.extend(regressions);
    files.sort();
    for file in files {
        let data = fs::read(&file).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| fuzzing::node_ops_restored(&data, round_trip));
        assert!(outcome.is_ok(), "restore changes {}", file.display());
    }
}

#[test]
fn a_node_with_outputs_pending_does_not_save() {
    let mut node = Node::with_seed(Config::default(), 3, Time::ZERO).unwrap();
    node.bootstrap(Time::ZERO, "ws://seed.test:1").unwrap();
    postcard::to_stdvec(&node).expect_err("outputs are pending");
    while node.poll_output().is_some() {}
    let restored = round_trip(&node);
    assert_eq!(restored.id(), node.id());
    assert_eq!(restored.sizes(), node.sizes());
}

#[test]
fn a_restored_node_shares_an_equal_config_only() {
    let shared = Arc::new(Config::default());
    let node = Node::with_seed(Arc::clone(&shared), 5, Time::ZERO).unwrap();
    let mut restored = round_trip(&node);
    assert!(restored.share_config(&shared));
    assert_eq!(
        Arc::strong_count(&shared),
        3,
        "held by the two nodes and us"
    );
    let other = Arc::new(Config {
        max_links: 7,
        ..Config::default()
    });
    assert!(!restored.share_config(&other));
    assert_eq!(restored.config().max_links, Config::default().max_links);
}

#[test]
fn a_linked_node_goes_on_the_same_after_a_restore() {
    let mut node = Node::with_seed(Config::default(), 11, Time::ZERO).unwrap();
    let own = node.id();
    let peers: Vec<_> = (0..6).map(|b| by_hand::in_bucket(&own, b, 1)).collect();
    let conns = by_hand::accept_links(&mut node, &peers);
    node.send(
        Time::from_millis(5),
        peers[4],
        &serde_json::json!({"hi": 1}),
    )
    .unwrap();
    while node.poll_output().is_some() {}
    let mut restored = round_trip(&node);
    // Two minutes of timers (refreshes, lookups, keepalive probes and closes), with one
    // link answering its probes.
    let mut now = Time::from_millis(10);
    let mut outputs = [Vec::new(), Vec::new()];
    for _ in 0..2_000 {
        now += std::time::Duration::from_millis(60);
        for (side, out) in [&mut node, &mut restored].into_iter().zip(&mut outputs) {
            side.handle_input(now, Input::Alive { conn: conns[0] });
            while side.poll_timeout().is_some_and(|t| t <= now) {
                side.handle_input(now, Input::Timeout);
            }
            out.extend(std::iter::from_fn(|| side.poll_output()));
        }
    }
    assert!(outputs[0].len() > 20, "{} outputs", outputs[0].len());
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(node.stats(), restored.stats());
}
