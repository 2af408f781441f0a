//! How a network that starts all at once recovers: delivery, and the link graph's connected
//! components, at intervals after the last join.
//!
//! The whole population joins at RATE per second (3,000 by default: 3,000 peers within one
//! second), through 10% servers with random bootstrap, seed SEED. At 15, 30, 45, 60, 90 and
//! 120 s after the last join it counts the link graph's components and starts 2,000
//! random-pair messages at 1,000 per second; it prints, per mark, the components, the
//! "worlds" (below) and the share of those messages that arrived.
//!
//! A world is the set of peers that greedy routing over the links reaches from one peer
//! (the first to join, then the first peer that one does not reach; see
//! [`peer_relay_sim::graph`]): a network can be one connected link graph and still be two
//! worlds, each routing within itself, whose peers do not know the other world's peers
//! near them.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example flash_crowd [-- PEERS [RATE [SEED [HOLD_MS]]]]
//! ```
//!
//! HOLD_MS sets the peers' `Config::join_hold` (default 5,000); 0 shows the network as it
//! formed before the hold existed: two worlds.

use std::time::Duration;

use peer_relay_sim::graph::{components, peer_index, worlds};
use peer_relay_sim::{Action, Sim, SimConfig, Traffic};

const MARKS_S: [u64; 6] = [15, 30, 45, 60, 90, 120];

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args
        .next()
        .map_or(3_000, |a| a.parse().expect("PEERS: a number"));
    let rate: u32 = args
        .next()
        .map_or(3_000, |a| a.parse().expect("RATE: joins per second"));
    let seed: u64 = args
        .next()
        .map_or(1, |a| a.parse().expect("SEED: a number"));
    let mut node = peer_relay_core::Config::default();
    if let Some(ms) = args.next() {
        node.join_hold = Duration::from_millis(ms.parse().expect("HOLD_MS: a number"));
    }
    let config = SimConfig {
        node,
        seed,
        peers,
        servers: peers / 10,
        join_interval: Duration::from_secs(1) / rate.max(1),
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config.clone()).expect("a valid configuration");
    let last_join = config.joins_end();
    println!(
        "{peers} peers joining at {rate}/s, seed {seed}, join_hold {} ms",
        config.node.join_hold.as_millis()
    );
    for mark in MARKS_S {
        let at = last_join + Duration::from_secs(mark);
        sim.run_until(at);
        let index = peer_index(&sim);
        let sizes = components(&sim, &index);
        let (world, second) = worlds(&sim, &index);
        sim.apply(Action::Traffic(Traffic {
            messages: 2_000,
            rate: 1_000.0,
        }));
        println!(
            "+{mark:>3} s: {} component(s), largest {:?}; worlds: {world} reached from the first \
             peer, {second} more from the first it misses",
            sizes.len(),
            &sizes[..sizes.len().min(4)]
        );
    }
    sim.run_until(last_join + Duration::from_secs(MARKS_S[MARKS_S.len() - 1] + 10));
    let mut line = String::new();
    for mark in MARKS_S {
        let from = last_join + Duration::from_secs(mark);
        let to = from + Duration::from_secs(3);
        let delivery = sim.delivery_where(|m| m.sent_at >= from && m.sent_at < to);
        line += &format!("  +{mark} s: {:.1}%", 100.0 * delivery.rate());
    }
    println!("delivery of the messages sent at{line}");
    println!(
        "converged (every peer reached its link target) at {}",
        sim.converged_at().map_or("never".to_owned(), |t| format!(
            "{:.1} s",
            t.as_millis() as f64 / 1e3
        ))
    );
}
