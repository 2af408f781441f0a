//! What it costs a network to form: frames by payload type, and links opened and shed by
//! the peers' join order.
//!
//! Runs the default network (10,000 peers joining at 50 per second through 10% servers,
//! seed 1; the arguments override the peer count, the seed and the joins per second) until every
//! peer has its link target, counting every frame by the `type` of its payload (`signal`,
//! `handshake-offer`, ...; the id handshake has none) and how many of them were a message's
//! first hop (its path holds only the sender), so frames per message is the mean hop count
//! of each type. Then it prints, per tenth of the
//! peers in join order, how many links each opened and how many it shed for its link
//! budget (the links a forming network opens and closes again are most of its frames), how
//! many of its connects failed and how many offers it declined.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example formation_costs [-- PEERS [SEED [RATE]]]
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use peer_relay_core::CloseReason;
use peer_relay_sim::{Sim, SimConfig};

/// Whether an envelope frame is its message's first hop: the path holds only the sender.
fn first_hop(frame: &str) -> bool {
    const KEY: &str = "\"path\":[";
    frame.find(KEY).is_some_and(|at| {
        let rest = &frame[at + KEY.len()..];
        rest.find(']').is_some_and(|end| !rest[..end].contains(','))
    })
}

/// The payload type of an envelope frame (`"data":{"type":"…"`); the id handshake has none.
fn payload_type(frame: &str) -> &str {
    const KEY: &str = "\"data\":{\"type\":\"";
    let Some(at) = frame.find(KEY) else {
        return "(id handshake)";
    };
    let rest = &frame[at + KEY.len()..];
    rest.find('"').map_or("(malformed)", |end| &rest[..end])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args
        .next()
        .map_or(10_000, |a| a.parse().expect("PEERS: a number"));
    let seed: u64 = args
        .next()
        .map_or(1, |a| a.parse().expect("SEED: a number"));
    let rate: u32 = args
        .next()
        .map_or(50, |a| a.parse().expect("RATE: joins per second"));
    let mut sim = Sim::new(SimConfig {
        seed,
        peers,
        servers: peers / 10,
        join_interval: Duration::from_secs(1) / rate.max(1),
        ..SimConfig::default()
    })
    .expect("a valid config");
    // Per payload type: frames, and frames that were a message's first hop.
    let by_type: Rc<RefCell<BTreeMap<String, (u64, u64)>>> = Rc::default();
    let counting = Rc::clone(&by_type);
    sim.set_frame_filter(Some(Box::new(move |_, _, frame: &str| {
        let mut by_type = counting.borrow_mut();
        let counts = by_type.entry(payload_type(frame).to_owned()).or_default();
        counts.0 += 1;
        counts.1 += u64::from(first_hop(frame));
        true
    })));
    let deadline = sim.config().joins_end() + Duration::from_secs(60);
    let converged = sim.run_until_converged(deadline);
    let by_type = by_type.borrow();
    let frames: u64 = by_type.values().map(|c| c.0).sum();
    println!(
        "{peers} peers, seed {seed}: converged at {converged:?}, {} events, {frames} frames",
        sim.counters().events
    );
    println!(
        "  {:>18} {:>10} {:>6} {:>10} {:>9}",
        "type", "frames", "share", "messages", "hops/msg"
    );
    for (kind, &(count, messages)) in by_type.iter() {
        let share = count as f64 * 100.0 / frames as f64;
        let hops = if messages == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", count as f64 / messages as f64)
        };
        println!("  {kind:>18} {count:>10} {share:5.1}% {messages:>10} {hops:>9}");
    }

    // Nodes are listed by peer index, which is the join order of the initial population.
    let per_node: Vec<(u64, u64, u64, u64, u64)> = sim
        .nodes()
        .map(|node| {
            let stats = node.stats();
            let shed = stats.closed.get(CloseReason::LinkBudget);
            (
                stats.links_opened,
                shed,
                node.links().count() as u64,
                stats.connects_failed,
                stats.offers_declined,
            )
        })
        .collect();
    let (declined, failed) = sim.nodes().fold((0, 0), |(declined, failed), node| {
        let stats = node.stats();
        (
            declined + stats.offers_declined,
            failed + stats.connects_failed,
        )
    });
    println!("offers declined by full peers {declined}, connects failed {failed}");
    let opened: u64 = per_node.iter().map(|n| n.0).sum();
    let shed: u64 = per_node.iter().map(|n| n.1).sum();
    let kept: u64 = per_node.iter().map(|n| n.2).sum();
    println!(
        "link ends opened {opened} ({:.1} per peer), shed for the link budget {shed}, \
         up at the end {kept} ({:.1} per peer)",
        opened as f64 / per_node.len() as f64,
        kept as f64 / per_node.len() as f64,
    );
    println!(
        "per tenth of the peers, in join order, per peer: link ends opened, links shed, \
         connects failed, offers declined"
    );
    let tenth = per_node.len().div_ceil(10).max(1);
    for (i, chunk) in per_node.chunks(tenth).enumerate() {
        let n = chunk.len() as f64;
        println!(
            "  {i}: {:6.1} opened {:6.1} shed {:6.1} failed {:6.1} declined",
            chunk.iter().map(|c| c.0).sum::<u64>() as f64 / n,
            chunk.iter().map(|c| c.1).sum::<u64>() as f64 / n,
            chunk.iter().map(|c| c.3).sum::<u64>() as f64 / n,
            chunk.iter().map(|c| c.4).sum::<u64>() as f64 / n,
        );
    }
}
