//! Helpers shared by the tests that watch a running node's counters.

use std::time::Duration;

use peer_relay::{PeerRelay, Stats};

/// Longest wait for any one expected outcome; a failing test fails here instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls the node's stats until `done` holds; the stats at that point.
pub async fn stats_until(node: &PeerRelay, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = node.stats().await.expect("node is up");
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}; stats: {stats:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
