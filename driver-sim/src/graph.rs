//! The overlay as a graph, for diagnosis: the link graph's connected components, and the
//! *worlds* greedy routing sees.
//!
//! A world is the set of peers that greedy routing over the links reaches from one peer. A
//! network can be one connected link graph and still be two worlds, each routing within
//! itself, whose peers do not know the other world's peers near them: a network that
//! started all at once, or two halves that were split for longer than keepalive and joined
//! again by a few links.

use std::collections::BTreeMap;

use peer_relay_core::PeerId;

use crate::sim::{PeerIndex, Sim};

/// Every running peer's index, by id.
pub fn peer_index(sim: &Sim) -> BTreeMap<PeerId, PeerIndex> {
    (0..sim.peer_count())
        .filter_map(|i| sim.id(i).map(|id| (id, i)))
        .collect()
}

/// Sizes of the link graph's connected components over running peers, largest first.
pub fn components(sim: &Sim, index: &BTreeMap<PeerId, PeerIndex>) -> Vec<usize> {
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
pub fn greedy_reach(sim: &Sim, index: &BTreeMap<PeerId, PeerIndex>, from: PeerIndex) -> Vec<bool> {
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
pub fn worlds(sim: &Sim, index: &BTreeMap<PeerId, PeerIndex>) -> (usize, usize) {
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

/// Links from peers in `side` to running peers outside it.
pub fn links_across(sim: &Sim, side: &[PeerIndex]) -> usize {
    let inside: std::collections::BTreeSet<PeerId> =
        side.iter().filter_map(|i| sim.id(*i)).collect();
    side.iter()
        .filter_map(|i| sim.node(*i))
        .flat_map(|node| node.links())
        .filter(|(id, _)| !inside.contains(*id))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;
    use peer_relay_core::Time;

    #[test]
    fn a_converged_network_is_one_component_and_one_world() {
        let config = SimConfig {
            peers: 60,
            servers: 6,
            seed: 5,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(config).unwrap();
        sim.run_until_converged(Time::from_millis(60_000))
            .expect("converges");
        let index = peer_index(&sim);
        assert_eq!(components(&sim, &index), vec![60]);
        assert_eq!(worlds(&sim, &index), (60, 0));
        let evens: Vec<usize> = (0..60).step_by(2).collect();
        assert!(links_across(&sim, &evens) > 0);
        let all: Vec<usize> = (0..60).collect();
        assert_eq!(links_across(&sim, &all), 0);
    }
}
