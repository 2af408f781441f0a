//! Ten thousand peers (the larger run), and flash crowds.

mod common;

use std::time::Duration;

use common::{check_converges_and_delivers, check_routing_quality, network, secs, traffic};
use peer_relay_sim::{Bootstrap, Sim, SimConfig};

#[test]
fn ten_thousand_peers_converge_and_deliver() {
    check_converges_and_delivers(network(10_000, 10_000));
}

/// Everyone bootstraps through one seed, joining at 50/s: the seed admits about
/// `(max_connections - max_links) / shed_grace` joiners per second (96 by default) and
/// sheds each for a newer one. With 64 connections and a 2 s grace it took 16/s, refused the
/// rest into backoff, and 300 s after the last join only 70% of messages arrived.
#[test]
fn ten_thousand_peers_through_one_seed_converge_and_deliver() {
    check_converges_and_delivers(SimConfig {
        bootstrap: Bootstrap::Star,
        ..network(10_001, 10_000)
    });
}

/// A thousand peers joining within one second (a flash crowd). Offers to peers that just
/// joined follow the discovery reply that introduced them (greedy routing alone dead-ends
/// where nobody is linked to a newcomer yet): this used to settle at about 80% delivery.
#[test]
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
    check_routing_quality(&sim);
}

/// Three thousand peers joining within one second, through servers that joined
/// milliseconds before them. Before `Config::join_hold` such a network formed two overlays
/// ("worlds") that each routed only within itself: seed 2 stayed split in two, 34.6% of
/// messages sent 30 s after the last join arrived; seed 4, one connected graph, 52.8%.
#[test]
fn a_network_started_all_at_once_forms_one_world() {
    for seed in [2, 4] {
        let mut sim = Sim::new(SimConfig {
            seed,
            peers: 3_000,
            servers: 300,
            join_interval: Duration::from_secs(1) / 3_000,
            ..SimConfig::default()
        })
        .expect("valid");
        sim.run_until(sim.config().joins_end() + secs(30));
        let ids = traffic(&mut sim, 2_000, 1000.0, secs(10));
        let delivery = sim.delivery_of(ids);
        check!(
            sim,
            delivery.rate() >= 0.99,
            "seed {seed}: delivery {:.4} of messages sent 30 s after the last join",
            delivery.rate()
        );
    }
}
