//! A simulation saved and loaded again (`Sim::save`, `Sim::load`) goes on exactly as if it
//! had never stopped: the same report and trace hash, whenever it was saved.

mod common;

use std::time::Instant;

use common::secs;
use peer_relay_core::Time;
use peer_relay_sim::{Sim, SnapshotError, snapshot};

fn reloaded(mut sim: Sim) -> Sim {
    let mut bytes = Vec::new();
    sim.save(&mut bytes).expect("saves");
    Sim::load(bytes.as_slice()).expect("loads")
}

#[test]
fn a_run_saved_and_loaded_along_the_way_ends_as_the_unbroken_one() {
    let t = |s: u64| Time::ZERO + secs(s);
    let mut unbroken = common::eventful(7);
    unbroken.run_until(t(40));

    // Saved while joining, during traffic and churn, inside the partition (a WebRTC
    // session or two under way, frames in flight), and after it healed.
    let mut resumed = common::eventful(7);
    for stop in [3, 9, 11, 15, 21] {
        resumed.run_until(t(stop));
        resumed = reloaded(resumed);
    }
    resumed.run_until(t(40));
    assert_eq!(resumed.trace_hash(), unbroken.trace_hash());
    assert_eq!(
        resumed.report().deterministic_json(),
        unbroken.report().deterministic_json()
    );
    assert!(resumed.counters().crashes > 3 && resumed.counters().frames_partitioned > 0);
}

#[test]
fn a_paused_run_resumes_in_steps_to_the_same_end() {
    let t = |s: u64| Time::ZERO + secs(s);
    let mut unbroken = common::eventful(8);
    unbroken.run_until(t(30));

    // Pausing at once stops at the next check (every 65,536 events): a run in many steps,
    // each saved and loaded again.
    let mut sim = common::eventful(8);
    let mut steps = 0;
    loop {
        sim.set_pause_at(Some(Instant::now()));
        sim.run_until(t(30));
        if !sim.paused() {
            break;
        }
        steps += 1;
        sim = reloaded(sim);
    }
    let expected = unbroken.counters().events >> 16;
    assert!(
        steps >= 2 && steps == expected,
        "{steps} pauses, {expected} expected"
    );
    assert_eq!(sim.now(), t(30));
    assert_eq!(sim.trace_hash(), unbroken.trace_hash());
    assert_eq!(
        sim.report().deterministic_json(),
        unbroken.report().deterministic_json()
    );
}

#[test]
fn bad_files_other_builds_and_frame_filters_are_refused() {
    let mut sim = common::eventful(9);
    sim.run_until(Time::ZERO + secs(2));
    let mut bytes = Vec::new();
    sim.save(&mut bytes).unwrap();
    assert!(matches!(
        Sim::load(&b"not a snapshot at all"[..]),
        Err(SnapshotError::NotASnapshot)
    ));
    // The same file from another build: its fingerprint differs.
    let mut other_build = bytes.clone();
    let fingerprint = snapshot::MAGIC.len();
    other_build[fingerprint] = if other_build[fingerprint] == b'0' {
        b'1'
    } else {
        b'0'
    };
    match Sim::load(other_build.as_slice()) {
        Err(SnapshotError::OtherBuild { saved, this }) => {
            assert_eq!(this, snapshot::BUILD);
            assert_ne!(saved, this);
            assert_eq!(saved.len(), this.len());
        }
        other => panic!("expected OtherBuild, got {:?}", other.map(|_| ())),
    }
    assert!(Sim::load(bytes.as_slice()).is_ok());
    // One bit changed in the last peer, or a byte added at the end: the checksum says so.
    let mut flipped = bytes.clone();
    let last_peer = bytes.len() - 9;
    flipped[last_peer] ^= 1;
    assert!(matches!(
        Sim::load(flipped.as_slice()),
        Err(SnapshotError::Damaged | SnapshotError::Record(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Sim::load(longer.as_slice()),
        Err(SnapshotError::Damaged)
    ));
    let truncated = &bytes[..bytes.len() / 2];
    assert!(matches!(
        Sim::load(truncated),
        Err(SnapshotError::Io(_) | SnapshotError::Record(_))
    ));
    sim.set_frame_filter(Some(Box::new(|_, _, _| true)));
    assert!(matches!(
        sim.save(&mut Vec::new()),
        Err(SnapshotError::FrameFilter)
    ));
}

/// A damaged snapshot of the right build (bytes changed or cut anywhere) is refused with
/// an error, never loaded, and decoding it never panics.
#[test]
fn a_damaged_snapshot_is_refused_never_loaded_nor_a_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mut sim = Sim::new(peer_relay_sim::SimConfig {
        peers: 12,
        servers: 4,
        seed: 3,
        ..peer_relay_sim::SimConfig::default()
    })
    .unwrap();
    sim.run_until(Time::ZERO + secs(5));
    let mut bytes = Vec::new();
    sim.save(&mut bytes).unwrap();
    // Damage only after the header, which the other test covers.
    let body = snapshot::MAGIC.len() + snapshot::BUILD.len() + 1;
    let damage = (
        proptest::collection::vec((body..bytes.len(), any::<u8>()), 1..8),
        proptest::option::of(body..bytes.len()),
    );
    TestRunner::new(Config::with_cases(512))
        .run(&damage, |(changes, cut)| {
            let mut damaged = bytes.clone();
            for (at, byte) in changes {
                damaged[at] = byte;
            }
            if let Some(cut) = cut {
                damaged.truncate(cut);
            }
            if damaged != bytes {
                prop_assert!(Sim::load(damaged.as_slice()).is_err());
            }
            Ok(())
        })
        .unwrap();
}
