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
//! many of its connects failed and how many offers it declined. Last, where offers went on
//! their first hop: to a link of their target (which hands them over: two frames), or to a
//! peer that is not (the offer finds its own way on), and how often that peer was the one
//! whose `foundPeers` reply introduced the target.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example formation_costs [-- PEERS [SEED [RATE]]]
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use peer_relay_core::{CloseReason, Event, Output, PeerId};
use peer_relay_sim::{PeerIndex, Sim, SimConfig};

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

/// The text of a frame's `key` (`"nonce"`, ...) string field.
fn string_field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = frame.find(&format!("\"{key}\":\""))? + key.len() + 4;
    frame[at..].find('"').map(|end| &frame[at..at + end])
}

/// The ids a `foundPeers` frame lists (its payload's 40-hex strings).
fn listed_ids(frame: &str) -> impl Iterator<Item = PeerId> + '_ {
    let payload = frame.find("\"data\":{").map_or("", |at| &frame[at..]);
    payload
        .split('"')
        .filter(|s| s.len() == 40)
        .filter_map(|s| PeerId::from_hex(s).ok())
}

/// How an offer's first hop relates to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FirstHop {
    /// A link of the target: it hands the offer over.
    LinkedToTarget,
    /// Not linked to the target, but the peer whose reply introduced it to the offerer.
    Introducer,
    /// Neither.
    Other,
}

/// What the frame filter and the observer record about offers.
#[derive(Default)]
struct OfferPaths {
    /// Live links, as the nodes report them.
    links: BTreeSet<(PeerIndex, PeerId)>,
    /// The peer whose `foundPeers` reply last listed an id, per receiver.
    introduced_by: HashMap<(PeerIndex, PeerId), PeerIndex>,
    /// Per offer (by nonce): its first hop's kind and the frames it took.
    offers: HashMap<String, (FirstHop, u64)>,
}

impl OfferPaths {
    fn saw_frame(&mut self, from: PeerIndex, to: PeerIndex, frame: &str) {
        match payload_type(frame) {
            "foundPeers" => {
                for id in listed_ids(frame) {
                    self.introduced_by.insert((to, id), from);
                }
            }
            "handshake-offer" => {
                let (Some(nonce), Some(target)) = (
                    string_field(frame, "nonce"),
                    string_field(frame, "to").and_then(|t| PeerId::from_hex(t).ok()),
                ) else {
                    return;
                };
                let kind = if self.links.contains(&(to, target)) {
                    FirstHop::LinkedToTarget
                } else if self.introduced_by.get(&(from, target)) == Some(&to) {
                    FirstHop::Introducer
                } else {
                    FirstHop::Other
                };
                // The first frame of an offer is its first hop.
                self.offers.entry(nonce.to_owned()).or_insert((kind, 0)).1 += 1;
            }
            _ => {}
        }
    }

    fn saw_output(&mut self, peer: PeerIndex, output: &Output) {
        match output {
            Output::Event(Event::PeerConnected { peer: id, .. }) => {
                self.links.insert((peer, *id));
            }
            Output::Event(Event::PeerDisconnected { peer: id }) => {
                self.links.remove(&(peer, *id));
            }
            _ => {}
        }
    }

    fn print(&self) {
        let mut by_kind: BTreeMap<FirstHop, (u64, u64)> = BTreeMap::new();
        for &(kind, frames) in self.offers.values() {
            let totals = by_kind.entry(kind).or_default();
            totals.0 += 1;
            totals.1 += frames;
        }
        let offers: u64 = by_kind.values().map(|t| t.0).sum();
        println!("offers by their first hop: offers, share, frames per offer");
        for (kind, (count, frames)) in by_kind {
            println!(
                "  {:<34} {count:>9} {:5.1}% {:6.2}",
                match kind {
                    FirstHop::LinkedToTarget => "a link of the target",
                    FirstHop::Introducer => "not linked to it, its introducer",
                    FirstHop::Other => "not linked to it, another peer",
                },
                count as f64 * 100.0 / offers.max(1) as f64,
                frames as f64 / count.max(1) as f64,
            );
        }
    }
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
    let paths: Rc<RefCell<OfferPaths>> = Rc::default();
    let (observing, filtering) = (Rc::clone(&paths), Rc::clone(&paths));
    sim.set_observer(Some(Box::new(move |_, peer, output| {
        observing.borrow_mut().saw_output(peer, output);
    })));
    sim.set_frame_filter(Some(Box::new(move |from, to, frame: &str| {
        filtering.borrow_mut().saw_frame(from, to, frame);
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
    paths.borrow().print();
}
