//! The README's scenario example, compiled and run, so the documentation stays true.

use std::time::Duration;

use peer_relay_core::Time;
use peer_relay_sim::{Action, Churn, LinkModel, Sim, SimConfig, Traffic};

#[test]
fn the_readme_scenario_runs() {
    let mut sim = Sim::new(SimConfig {
        peers: 1000,
        servers: 100,
        seed: 7,
        ..SimConfig::default()
    })
    .expect("valid config");
    sim.run_until_converged(Time::from_millis(80_000))
        .expect("converged");
    let t = sim.now();
    let s = |n| t + Duration::from_secs(n);
    sim.at(
        s(0),
        Action::Traffic(Traffic {
            messages: 5_000,
            rate: 500.0,
        }),
    );
    sim.at(s(2), Action::Crash((0..300).collect()));
    sim.at(
        s(4),
        Action::Partition(vec![(300..650).collect(), (650..1000).collect()]),
    );
    sim.at(s(8), Action::Heal);
    sim.at(s(9), Action::Restart((0..300).collect()));
    sim.at(
        s(9),
        Action::SetLinkModel {
            peers: None,
            model: LinkModel {
                loss: 0.01,
                ..LinkModel::default()
            },
        },
    );
    sim.at(
        s(10),
        Action::Churn(Churn {
            joins_per_sec: 5.0,
            leaves_per_sec: 5.0,
            crash: false,
        }),
    );
    sim.at(s(12), Action::Send { from: 400, to: 900 });
    sim.run_for(Duration::from_secs(20));
    let first_ten_seconds = sim.delivery_where(|m| m.sent_at < s(10));
    let report = sim.report();
    println!("{}", report.human());
    assert!(first_ten_seconds.rate() > 0.5, "{}", sim.replay_hint());
    // Everything happened.
    let c = &report.counters;
    assert_eq!((c.crashes, c.restarts), (300, 300));
    assert!(c.frames_partitioned > 0 && c.frames_lost > 0 && c.joins > 1000 && c.leaves > 0);
    assert_eq!(report.sent, 5_001);
}
