//! Single-node details of links and offers, driven by hand: offers follow introductions,
//! shed links retire gracefully, and a node at its link budget declines offers it would
//! have to shed a link for.
//!
//! Offers to a peer we heard of in a discovery reply go the way the reply came: the peer
//! that named it knows it, while greedy routing towards a peer that joined a moment ago
//! usually ends where nobody is linked to it yet.

mod by_hand;

use by_hand::{accept_links, in_bucket};
use peer_relay_core::{Config, ConnId, Input, LinkSelection, Node, Output, PeerId, Time};

fn id(first: u8) -> PeerId {
    let mut bytes = [0u8; 20];
    bytes[0] = first;
    PeerId::from_bytes(bytes)
}

/// A node with inbound links from `peers`, its outputs drained.
fn node_linked_to(config: Config, peers: &[PeerId]) -> (Node, Vec<ConnId>) {
    let mut node = Node::with_seed(config, 7, Time::ZERO).unwrap();
    let conns = accept_links(&mut node, peers);
    (node, conns)
}

fn found_peers(from: &PeerId, to: &PeerId, listed: &PeerId) -> String {
    format!(
        r#"{{"to":"{to}","from":"{from}","path":["{from}"],"nonce":"n1","data":{{"type":"foundPeers","data":["{listed}"]}}}}"#
    )
}

/// The connection the node's handshake-offer to `target` went out on (the node may have
/// offered on its own already, to fill its links).
fn offer_conn(node: &mut Node, target: &PeerId) -> Option<ConnId> {
    let _ = node.connect(Time::ZERO, *target);
    std::iter::from_fn(|| node.poll_output()).find_map(|output| match output {
        Output::Transmit { conn, frame } if frame.contains("handshake-offer") => {
            assert!(frame.contains(&target.to_string()));
            Some(conn)
        }
        _ => None,
    })
}

fn config() -> Config {
    Config {
        refresh_interval: None,
        ..Config::default()
    }
}

#[test]
fn an_offer_follows_the_reply_that_introduced_the_peer() {
    // Our id is random; `introducer` and `nearer` sit far from `newcomer` and right next to
    // it, so greedy routing alone would pick `nearer`.
    let (introducer, nearer, newcomer) = (id(0x80), id(0x41), id(0x40));
    let (mut node, conns) = node_linked_to(config(), &[introducer, nearer]);
    let reply = found_peers(&introducer, &node.id(), &newcomer);
    node.handle_input(
        Time::ZERO,
        Input::Frame {
            conn: conns[0],
            frame: reply.as_bytes(),
        },
    );
    assert_eq!(offer_conn(&mut node, &newcomer), Some(conns[0]));
}

#[test]
fn without_an_introduction_the_offer_goes_greedily() {
    let (introducer, nearer, newcomer) = (id(0x80), id(0x41), id(0x40));
    let (mut node, conns) = node_linked_to(config(), &[introducer, nearer]);
    assert_eq!(offer_conn(&mut node, &newcomer), Some(conns[1]));
}

#[test]
fn a_shed_link_keeps_delivering_until_its_grace_ends() {
    let config = Config {
        max_links: 2,
        target_links: 2,
        refresh_interval: None,
        ..Config::default()
    };
    let grace = config.shed_grace;
    let peers = [id(0x10), id(0x20), id(0x30)];
    let mut node = Node::with_seed(config, 7, Time::ZERO).unwrap();
    let mut conns = Vec::new();
    let mut shed = None;
    for peer in &peers {
        conns.push(by_hand::accept_link(&mut node, peer));
        while let Some(output) = node.poll_output() {
            match output {
                Output::Event(peer_relay_core::Event::PeerDisconnected { peer }) => {
                    shed = Some(peer)
                }
                Output::Close { .. } => panic!("closed at once: {output:?}"),
                _ => {}
            }
        }
    }
    let shed = shed.expect("one link over the budget is shed");
    let conn = conns[peers.iter().position(|p| *p == shed).unwrap()];
    assert_eq!(node.links().count(), 2);
    // The shed peer does not know yet: what it sends still arrives.
    let message = format!(
        r#"{{"to":"{}","from":"{shed}","path":["{shed}"],"nonce":"m1","data":{{"type":"user","data":"late"}}}}"#,
        node.id()
    );
    node.handle_input(
        Time::ZERO,
        Input::Frame {
            conn,
            frame: message.as_bytes(),
        },
    );
    let delivered = std::iter::from_fn(|| node.poll_output()).any(|o| {
        matches!(o, Output::Event(peer_relay_core::Event::Message { ref data, .. }) if data.get() == "\"late\"")
    });
    assert!(delivered);
    // And it is still reachable directly (a seed that sheds a joiner may be relaying the
    // joiner's first offers and signals).
    node.send(Time::ZERO, shed, &"to the shed peer").unwrap();
    let sent_on = std::iter::from_fn(|| node.poll_output()).find_map(|o| match o {
        Output::Transmit { conn, frame } if frame.contains("to the shed peer") => Some(conn),
        _ => None,
    });
    assert_eq!(sent_on, Some(conn));
    let at = Time::ZERO + grace;
    assert_eq!(node.poll_timeout(), Some(at));
    node.handle_input(at, Input::Timeout);
    let closed: Vec<_> = std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((conn, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        vec![(conn, peer_relay_core::CloseReason::LinkBudget)]
    );
}

/// Delivers a `handshake-offer` from `offerer`, relayed by the peer on `conn`, and returns
/// the `data` of the node's `handshake-answer`, if it answered. (It may instead offer
/// itself: the offer made the offerer a candidate, and when both sides offer only the
/// larger id answers.)
fn answer_to_offer(node: &mut Node, conn: ConnId, offerer: &PeerId, nonce: u32) -> Option<String> {
    let offer = format!(
        r#"{{"to":"{}","from":"{offerer}","path":["{offerer}"],"nonce":"{nonce}","data":{{"type":"handshake-offer"}}}}"#,
        node.id()
    );
    node.handle_input(
        Time::ZERO,
        Input::Frame {
            conn,
            frame: offer.as_bytes(),
        },
    );
    std::iter::from_fn(|| node.poll_output()).find_map(|output| match output {
        Output::Transmit { frame, .. } if frame.contains("handshake-answer") => {
            let at = frame.find(r#""data":{"ws""#).expect("answer data");
            Some(frame[at + 7..frame.len() - 2].to_owned())
        }
        _ => None,
    })
}

/// Whether the node took up the offer: answered with its transport, or offered itself.
fn takes_offer(node: &mut Node, conn: ConnId, offerer: &PeerId, nonce: u32) -> bool {
    let declined = node.stats().offers_declined;
    let answer = answer_to_offer(node, conn, offerer, nonce);
    let took = node.stats().offers_declined == declined;
    assert_eq!(took, answer.as_deref() != Some(DECLINE), "{answer:?}");
    took && answer.is_none_or(|a| a == ACCEPT)
}

const ACCEPT: &str = r#"{"ws":null,"wrtc":true}"#;
const DECLINE: &str = r#"{"ws":null,"wrtc":false}"#;

#[test]
fn a_full_node_declines_offers_it_would_shed_a_link_for() {
    let config = Config {
        webrtc: true,
        link_selection: LinkSelection::BucketDiverse { near: 1 },
        max_links: 4,
        target_links: 4,
        refresh_interval: None,
        ..Config::default()
    };
    let own = Node::with_seed(config.clone(), 7, Time::ZERO).unwrap().id();
    // Node ids come from the seed, so this node has `own` again.
    let nearest = in_bucket(&own, 100, 1);
    let linked = [
        in_bucket(&own, 0, 1),
        in_bucket(&own, 0, 2),
        in_bucket(&own, 1, 1),
        nearest,
    ];
    let (mut node, conns) = node_linked_to(config.clone(), &linked);
    assert_eq!(node.id(), own);
    assert_eq!(node.links().count(), 4);

    // Bucket 0 has two links and the offerer is not among our nearest: declined.
    let redundant = in_bucket(&own, 0, 3);
    assert_eq!(
        answer_to_offer(&mut node, conns[0], &redundant, 1).as_deref(),
        Some(DECLINE)
    );
    assert_eq!(node.stats().offers_declined, 1);
    // A bucket we have no link in, and a peer nearer than our nearest link: taken.
    assert!(takes_offer(&mut node, conns[0], &in_bucket(&own, 5, 1), 2));
    assert!(takes_offer(
        &mut node,
        conns[0],
        &in_bucket(&own, 120, 1),
        3
    ));
    assert_eq!(node.stats().offers_declined, 1);

    // Below the budget, or with declining turned off, the redundant offer is taken too.
    let (mut roomy, conns) = node_linked_to(config.clone(), &linked[..3]);
    assert!(takes_offer(&mut roomy, conns[0], &redundant, 1));
    let accepting = Config {
        decline_redundant_offers: false,
        ..config
    };
    let (mut accepting, conns) = node_linked_to(accepting, &linked);
    assert!(takes_offer(&mut accepting, conns[0], &redundant, 1));
}

#[test]
fn a_declined_offer_fails_the_connect() {
    let config = Config {
        webrtc: true,
        refresh_interval: None,
        ..Config::default()
    };
    let (relay, full) = (id(0x80), id(0x40));
    let (mut node, conns) = node_linked_to(config, &[relay]);
    assert!(offer_conn(&mut node, &full).is_some());
    let decline = format!(
        r#"{{"to":"{}","from":"{full}","path":["{full}"],"nonce":"d1","data":{{"type":"handshake-answer","data":{DECLINE}}}}}"#,
        node.id()
    );
    node.handle_input(
        Time::ZERO,
        Input::Frame {
            conn: conns[0],
            frame: decline.as_bytes(),
        },
    );
    let failed = std::iter::from_fn(|| node.poll_output()).any(|output| {
        matches!(
            output,
            Output::Event(peer_relay_core::Event::ConnectFailed { peer, .. }) if peer == full
        )
    });
    assert!(failed);
    assert_eq!(node.stats().connects_failed, 1);
}

/// Ten peers that all differ from `own` in the first bit: one bucket, bucket 0.
fn ten_in_bucket_zero(own: &PeerId) -> Vec<PeerId> {
    (1..=10u8)
        .map(|last| {
            let mut bytes = *own.as_bytes();
            bytes[0] ^= 0x80;
            bytes[19] ^= last;
            PeerId::from_bytes(bytes)
        })
        .collect()
}

#[test]
fn the_candidate_table_keeps_candidate_k_peers_per_bucket() {
    let kept = |candidate_k: usize| {
        // The informant shares the first bit with the node (the same seed gives the same
        // id), so it is no candidate in bucket 0 itself.
        let own = Node::with_seed(config(), 7, Time::ZERO).unwrap().id();
        let mut informant = *own.as_bytes();
        informant[0] ^= 0x40;
        let informant = PeerId::from_bytes(informant);
        let (mut node, conns) = node_linked_to(
            Config {
                candidate_k,
                ..config()
            },
            &[informant],
        );
        assert_eq!(node.id(), own);
        let listed = ten_in_bucket_zero(&own);
        let ids: Vec<String> = listed.iter().map(|p| format!("\"{p}\"")).collect();
        let frame = format!(
            r#"{{"to":"{own}","from":"{informant}","path":["{informant}"],"nonce":"n9","data":{{"type":"foundPeers","data":[{}]}}}}"#,
            ids.join(",")
        );
        node.handle_input(
            Time::ZERO,
            Input::Frame {
                conn: conns[0],
                frame: frame.as_bytes(),
            },
        );
        while node.poll_output().is_some() {}
        node.candidates().filter(|c| listed.contains(c)).count()
    };
    // The routing table's `k` is 20 in both: only `candidate_k` bounds the candidates.
    assert_eq!(kept(20), 10);
    assert_eq!(kept(4), 4);
}
