//! Ten thousand peers (the larger run), and a flash crowd the default strategy does
//! not handle yet.

mod common;

use std::time::Duration;

use common::{converged, secs, traffic};
use peer_relay_sim::{Sim, SimConfig};

#[test]
fn ten_thousand_peers_converge_and_deliver() {
    let mut sim = converged(SimConfig {
        seed: 10_000,
        peers: 10_000,
        servers: 1_000,
        ..SimConfig::default()
    });
    let ids = traffic(&mut sim, 10_000, 1000.0, secs(10));
    let delivery = sim.delivery_of(ids);
    let report = sim.report();
    eprintln!("{}", report.human());
    check!(
        sim,
        delivery.rate() >= 0.999,
        "delivery {:.4}",
        delivery.rate()
    );
    check!(sim, report.counters.misdelivered == 0, "misdelivered");
    // Greedy routing over bucket-diverse links: far below the 20-hop limit.
    check!(
        sim,
        report.hops_p99 <= 2 * report.log2_peers.ceil() as u64,
        "p99 hops {} at log2 n = {}",
        report.hops_p99,
        report.log2_peers
    );
}

/// A thousand peers joining within one second (a flash crowd) never converge today: the
/// default strategy leaves some peers without links near their own id, and greedy routing
/// dead-ends there (about 80% delivery). The core owns the fix (issue 8); run it with
/// `cargo test --release -p peer-relay-sim --test network_10k -- --ignored`.
#[test]
#[ignore = "fails today: the core's discovery does not converge from a flash crowd (issue 8)"]
fn a_flash_crowd_of_a_thousand_joins_in_one_second_converges_and_delivers() {
    let mut sim = Sim::new(SimConfig {
        seed: 1,
        peers: 1_000,
        servers: 100,
        join_interval: Duration::from_millis(1),
        ..SimConfig::default()
    })
    .expect("valid");
    let converged_at = sim.run_until_converged(sim.config().joins_end() + secs(120));
    let ids = traffic(&mut sim, 10_000, 1000.0, secs(10));
    let delivery = sim.delivery_of(ids);
    check!(
        sim,
        converged_at.is_some() && delivery.rate() >= 0.999,
        "converged at {converged_at:?}, delivery {:.4}",
        delivery.rate()
    );
}
