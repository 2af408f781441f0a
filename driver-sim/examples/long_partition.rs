//! What a long partition does: the network splits into even and odd peers for SPLIT_S
//! seconds, then heals. ICE gives the WebRTC links across up 25 s in, keepalive closes the
//! WebSocket ones after 50-60 s of silence, and each half forgets the other; reach checks
//! (`Config::reach_check_interval`) are what joins the halves again. At the end it prints
//! how many link ends ICE lost and keepalive closed. It prints the link graph's components and the worlds (see
//! [`peer_relay_sim::graph`]) at the end of the split, then at marks after healing the
//! worlds, the links across and the delivery of 1,000 messages across the former split.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example long_partition [-- PEERS [SPLIT_S [SEED [VARIANT]]]]
//! ```
//!
//! The network has PEERS peers (2,000), 10% of them servers, random bootstrap, seed SEED
//! (1); it is split 30 s after the last join. VARIANT `off` turns reach checks off; `star`
//! bootstraps everyone through peer 0 and `seeds` through the first four servers (every
//! peer then has its server on one side only, and all of one half dial the same few).

use std::time::Duration;

use peer_relay_sim::graph::{components, links_across, peer_index, worlds};
use peer_relay_sim::{Action, Bootstrap, Sim, SimConfig};

const MARKS_S: [u64; 7] = [5, 15, 30, 60, 120, 300, 600];

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args
        .next()
        .map_or(2_000, |a| a.parse().expect("PEERS: a number"));
    let split_s: u64 = args
        .next()
        .map_or(120, |a| a.parse().expect("SPLIT_S: seconds"));
    let seed: u64 = args
        .next()
        .map_or(1, |a| a.parse().expect("SEED: a number"));
    let mut config = SimConfig {
        seed,
        peers,
        servers: peers / 10,
        ..SimConfig::default()
    };
    match args.next().as_deref() {
        None | Some("random") => {}
        Some("off") => config.node.reach_check_interval = None,
        Some("star") => config.bootstrap = Bootstrap::Star,
        Some("seeds") => config.bootstrap = Bootstrap::Seeds { count: 4 },
        Some(other) => panic!("VARIANT: random, off, star or seeds, not {other}"),
    }
    println!(
        "{peers} peers, seed {seed}, split for {split_s} s, reach checks {}",
        if config.node.reach_check_interval.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let mut sim = Sim::new(config.clone()).expect("a valid configuration");
    sim.run_until(config.joins_end() + Duration::from_secs(30));
    let (left, right): (Vec<usize>, Vec<usize>) = (0..peers).partition(|i| i % 2 == 0);
    sim.apply(Action::Partition(vec![left.clone(), right.clone()]));
    sim.run_for(Duration::from_secs(split_s));
    let index = peer_index(&sim);
    let sizes = components(&sim, &index);
    println!(
        "end of the split: {} component(s), largest {:?}; worlds {:?}; {} links across",
        sizes.len(),
        &sizes[..sizes.len().min(4)],
        worlds(&sim, &index),
        links_across(&sim, &left)
    );
    sim.apply(Action::Heal);
    let healed = sim.now();
    let checks_before: u64 = sim.nodes().map(|n| n.stats().reach_checks).sum();
    for mark in MARKS_S {
        sim.run_until(healed + Duration::from_secs(mark));
        let index = peer_index(&sim);
        let (world, second) = worlds(&sim, &index);
        let across = links_across(&sim, &left);
        let first = sim.messages().len();
        for k in 0..1_000 {
            let (a, b) = (left[(k * 7) % left.len()], right[(k * 13) % right.len()]);
            let (from, to) = if k % 2 == 0 { (a, b) } else { (b, a) };
            sim.send(from, to);
            sim.run_for(Duration::from_millis(1));
        }
        sim.run_for(Duration::from_secs(5));
        let delivery = sim.delivery_of(first..sim.messages().len());
        println!(
            "+{mark:>3} s after healing: worlds {world} + {second}, {across} links across, \
             {:.1}% delivered across",
            100.0 * delivery.rate()
        );
    }
    let stats = sim.nodes().map(|n| n.stats());
    let (checks, redials) = stats.fold((0, 0), |(c, r), s| {
        (c + s.reach_checks, r + s.reach_redials)
    });
    let lost: u64 = sim.nodes().map(|n| n.stats().links_failed).sum();
    let unresponsive: u64 = sim
        .nodes()
        .map(|n| {
            n.stats()
                .closed
                .get(peer_relay_core::CloseReason::Unresponsive)
        })
        .sum();
    println!(
        "links lost by ICE: {lost}, closed as unresponsive: {unresponsive}; reach checks: \
         {checks} ({} after healing), re-dials: {redials}; events: {}",
        checks - checks_before,
        sim.counters().events
    );
}
