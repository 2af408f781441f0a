//! Helpers shared by the tests that run nodes: waiting for an event or for counters.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use peer_relay::{Event, Events, PeerRelay, Stats};

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

/// Waits for the first event `pick` accepts, skipping others.
pub async fn next_event<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}"),
    }
}
