//! A small run's report, field by field (everything but the machine-dependent fields).
//! A change here means the simulator or the core behaves differently: review the diff and
//! accept it with `cargo insta review` if it is intended.

use peer_relay_sim::{Run, SimConfig};

#[test]
fn a_small_report_is_stable() {
    let run = Run {
        sim: SimConfig {
            seed: 2024,
            peers: 40,
            servers: 4,
            ..SimConfig::default()
        },
        messages: 200,
        rate: 100.0,
        ..Run::default()
    };
    let (_sim, report) = run.execute(false, None).expect("valid run");
    insta::assert_json_snapshot!(report.deterministic_json());
}
