//! Replays the committed `sim_scenario` fuzz corpus and every past finding through the same
//! checks the fuzz target runs (`peer_relay_sim::fuzzing`), on the stable toolchain, so CI
//! covers them without nightly.

use std::fs;
use std::path::{Path, PathBuf};

use peer_relay_sim::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("readable dir entry").path()));
    }
    files.sort();
    files
}

#[test]
fn sim_scenario_corpus_and_regressions() {
    let files = inputs("sim_scenario");
    assert!(
        files.len() >= 10,
        "the sim_scenario corpus is committed ({} files)",
        files.len()
    );
    for file in files {
        let data = fs::read(&file).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| fuzzing::sim_scenario(&data));
        assert!(outcome.is_ok(), "sim_scenario fails on {}", file.display());
    }
}

/// The harness really drives a network: a hand-written scenario with every kind of step
/// passes the checks and delivers messages.
#[test]
fn a_written_scenario_exercises_every_step() {
    use fuzzing::{FuzzLink, Knobs, Scenario, Step};
    let calm = FuzzLink {
        loss: 0,
        duplicate: 0,
        latency_ms: 20,
        jitter_ms: 5,
    };
    let scenario = Scenario {
        seed: 3,
        peers: 6, // 8 peers
        servers: 3,
        bootstrap: 2,
        server_webrtc: true,
        join_interval_ms: 20,
        knobs: Knobs {
            original: false,
            k: 3,
            target_links: 3,
            max_links: 5,
            extra_connections: 2,
            max_hops: 10,
            seen_nonces_max: 7,
            seen_nonce_ttl: 10,
            preferred_paths_max: 4,
            queue_max: 4,
            max_pending_connects: 4,
            max_lookups: 3,
            refresh: 5,
            max_violations: 3,
        },
        link: calm,
        steps: vec![
            Step::Advance(1_000),
            Step::Send { from: 1, to: 6 },
            Step::Traffic(20),
            Step::Advance(200),
            Step::Crash(2),
            Step::Partition(0b1111),
            Step::Send { from: 0, to: 7 },
            Step::Advance(100),
            Step::Heal,
            Step::Restart(2),
            Step::Join,
            Step::Leave(3),
            Step::Connect { from: 4, to: 5 },
            Step::SetLink(
                Some(1),
                FuzzLink {
                    loss: 60,
                    duplicate: 60,
                    ..calm
                },
            ),
            Step::Traffic(20),
            Step::Advance(500),
        ],
    };
    let (hash, messages) = fuzzing::run_scenario(&scenario, None);
    // Saved and loaded again in the middle of the partition and the crashes: the same run.
    for after in [3, 6] {
        assert_eq!(
            (hash, messages.clone()),
            fuzzing::run_scenario(&scenario, Some(after))
        );
    }
    let delivered = messages.iter().filter(|m| m.delivered_at.is_some()).count();
    assert!(messages.len() >= 40, "{} messages sent", messages.len());
    assert!(delivered >= messages.len() / 2, "{delivered} delivered");
}
