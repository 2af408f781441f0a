//! Same seed and config, same run: report and trace hash. Another seed, another run.

mod common;

use common::secs;
use peer_relay_core::Time;
use peer_relay_sim::Report;

fn eventful(seed: u64) -> (Report, u64) {
    let mut sim = common::eventful(seed);
    sim.run_until(Time::ZERO + secs(40));
    (sim.report(), sim.trace_hash())
}

#[test]
fn the_same_seed_gives_the_same_report_and_trace_hash() {
    let (first, hash1) = eventful(42);
    let (second, hash2) = eventful(42);
    assert_eq!(hash1, hash2, "trace hashes differ for seed 42");
    assert_eq!(first.deterministic_json(), second.deterministic_json());
    assert_eq!(first.trace_hash, format!("{hash1:016x}"));
    // The run really did all of it.
    let c = &first.counters;
    assert!(c.frames_lost > 0 && c.frames_duplicated > 0 && c.frames_partitioned > 0);
    assert!(c.crashes > 3 && c.restarts == 3 && c.joins > 300);
    assert!(first.sent == 1_000 && first.delivered > 0);
}

#[test]
fn another_seed_gives_another_trace() {
    let (a, hash_a) = eventful(42);
    let (b, hash_b) = eventful(43);
    assert_ne!(hash_a, hash_b);
    assert_ne!(a.deterministic_json(), b.deterministic_json());
}
