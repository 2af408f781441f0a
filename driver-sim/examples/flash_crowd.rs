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
//! (the first to join, then the first peer that one does not reach): a network can be one
//! connected link graph and still be two worlds, each routing within itself, whose peers
//! do not know the other world's peers near them.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example flash_crowd [-- PEERS [RATE [SEED [HOLD_MS]]]]
//! ```
//!
//! HOLD_MS sets the peers' `Config::join_hold` (default 5,000); 0 shows the network as it
//! formed before the hold existed: two worlds.

use std::collections::BTreeMap;
use std::time::Duration;

use peer_relay_core::PeerId;
use peer_relay_sim::{Action, Sim, SimConfig, Traffic};

const MARKS_S: [u64; 6] = [15, 30, 45, 60, 90, 120];

/// Every peer's index, by id.
fn peer_index(sim: &Sim) -> BTreeMap<PeerId, usize> {
    (0..sim.peer_count())
        .filter_map(|i| sim.id(i).map(|id| (id, i)))
        .collect()
}

/// Sizes of the link graph's connected components over running peers, largest first.
fn components(sim: &Sim, index: &BTreeMap<PeerId, usize>) -> Vec<usize> {
    let peers = sim.peer_count();
    let mut seen = vec![false; peers];
    let mut sizes = Vec::new();
    for start in (0..peers).filter(|i| sim.node(*i).is_some()) {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut stack, mut size) = (vec![start], 0);
        while let Some(peer) = stack.pop() {
            size += 1;
            let links = sim.node(peer).into_iter().flat_map(|node| node.links());
            for next in links.filter_map(|(id, _)| index.get(id).copied()) {
                if !std::mem::replace(&mut seen[next], true) {
                    stack.push(next);
                }
            }
        }
        sizes.push(size);
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

/// The running peers that greedy routing over the link graph reaches from `from` (each hop
/// to the link nearest the target, while it is nearer than the current peer), as the
/// default strategy forwards.
fn greedy_reach(sim: &Sim, index: &BTreeMap<PeerId, usize>, from: usize) -> Vec<bool> {
    let peers = sim.peer_count();
    let mut reached = vec![false; peers];
    for to in (0..peers).filter(|i| sim.node(*i).is_some()) {
        let Some(target) = sim.id(to) else { continue };
        let mut at = from;
        reached[to] = loop {
            if at == to {
                break true;
            }
            let (Some(node), Some(here)) = (sim.node(at), sim.id(at)) else {
                break false;
            };
            let next = node
                .links()
                .map(|(id, _)| *id)
                .min_by_key(|id| id.distance(&target));
            match next.and_then(|id| index.get(&id).map(|i| (id, *i))) {
                Some((id, i)) if id.distance(&target) < here.distance(&target) => at = i,
                _ => break false,
            }
        };
    }
    reached
}

/// Sizes of the first two worlds: the peers greedy routing reaches from the first running
/// peer, and those it reaches from the first peer outside that (0 if there is none).
fn worlds(sim: &Sim, index: &BTreeMap<PeerId, usize>) -> (usize, usize) {
    let Some(first) = (0..sim.peer_count()).find(|i| sim.node(*i).is_some()) else {
        return (0, 0);
    };
    let from_first = greedy_reach(sim, index, first);
    let outside = (0..sim.peer_count()).find(|i| sim.node(*i).is_some() && !from_first[*i]);
    let second = outside.map_or(0, |o| {
        let from_outside = greedy_reach(sim, index, o);
        (0..sim.peer_count())
            .filter(|i| from_outside[*i] && !from_first[*i])
            .count()
    });
    (from_first.iter().filter(|r| **r).count(), second)
}

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
