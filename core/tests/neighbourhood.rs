//! How a node helps a neighbourhood find its members, driven by hand: a peer that asks us for
//! peers becomes a candidate, and a refresh asks a link in our deepest buckets too.
//!
//! In a network that started all at once, nobody knew anyone near them when they joined, and
//! neighbourhoods formed without some of their members: the peers linked to such a peer were
//! exactly the ones that, their bucket covered by it, learnt of no one else there.
//! `cargo run --release -p peer-relay-sim --example flash_crowd` measures what this changes.

use std::time::Duration;

mod by_hand;

use by_hand::{accept_links, in_bucket};
use peer_relay_core::{Config, ConnId, Input, Node, Output, PeerId, Time};

/// A node with inbound links from the peers `peers` names (given our id), outputs drained.
fn node_linked_to(config: Config, peers: impl Fn(&PeerId) -> Vec<PeerId>) -> (Node, Vec<ConnId>) {
    let mut node = Node::with_seed(config, 11, Time::ZERO).unwrap();
    let linked = peers(&node.id());
    let conns = accept_links(&mut node, &linked);
    (node, conns)
}

/// Feeds the node a frame from `from`, relayed by the link on `conn`.
fn deliver(node: &mut Node, conn: ConnId, from: &PeerId, nonce: u32, data: &str) {
    let frame = format!(
        r#"{{"to":"{}","from":"{from}","path":["{from}"],"nonce":"{nonce}","data":{data}}}"#,
        node.id()
    );
    node.handle_input(
        Time::ZERO,
        Input::Frame {
            conn,
            frame: frame.as_bytes(),
        },
    );
}

fn find_peers(target: &PeerId) -> String {
    format!(r#"{{"type":"findPeers","data":"{target}"}}"#)
}

/// `(to, payload)` of every frame the node transmits next; the payload is the envelope's
/// `data`, written last.
fn sent(node: &mut Node) -> Vec<(PeerId, String)> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|output| match output {
            Output::Transmit { frame, .. } => {
                let to = frame[r#"{"to":""#.len()..][..40].parse().ok()?;
                let at = frame.find(r#","data":"#)? + r#","data":"#.len();
                Some((to, frame[at..frame.len() - 1].to_owned()))
            }
            _ => None,
        })
        .collect()
}

fn no_refresh(config: Config) -> Config {
    Config {
        refresh_interval: None,
        ..config
    }
}

#[test]
fn a_peer_that_asks_us_for_peers_becomes_a_candidate() {
    for (config, learns) in [(Config::default(), true), (Config::original(), false)] {
        // The asker sits in the bucket of our only link, so the frame's ids alone (learnt
        // only for buckets without a link) would not make it a candidate.
        let (mut node, conns) =
            node_linked_to(no_refresh(config), |own| vec![in_bucket(own, 0, 1)]);
        let asker = in_bucket(&node.id(), 0, 2);
        deliver(&mut node, conns[0], &asker, 1, &find_peers(&asker));
        assert_eq!(node.candidates().any(|c| *c == asker), learns);
    }
}

#[test]
fn a_refresh_also_asks_a_link_in_our_deepest_buckets() {
    // Ten links in our three shallowest buckets, one in bucket 7 and the nearest in 9.
    let (mut node, _) = node_linked_to(
        Config {
            refresh_interval: Some(Duration::from_secs(15)),
            // The links never answer a probe here; keepalive would close them.
            keepalive_interval: None,
            ..Config::default()
        },
        |own| {
            let mut peers: Vec<PeerId> = (0..10).map(|i| in_bucket(own, i % 3, i as u8)).collect();
            peers.extend([in_bucket(own, 7, 0), in_bucket(own, 9, 0)]);
            peers
        },
    );
    let own = node.id();
    let (deep, nearest) = (in_bucket(&own, 7, 0), in_bucket(&own, 9, 0));
    for refresh in 0..4 {
        let until = Time::ZERO + Duration::from_secs(20 * (refresh + 1));
        let mut asked = Vec::new();
        while let Some(at) = node.poll_timeout().filter(|at| *at <= until) {
            node.handle_input(at, Input::Timeout);
            asked.extend(
                sent(&mut node)
                    .into_iter()
                    .filter(|(_, data)| *data == find_peers(&own))
                    .map(|(to, _)| to),
            );
        }
        assert!(
            asked.contains(&nearest) && asked.contains(&deep),
            "refresh {refresh}: {asked:?}"
        );
    }
}
