//! Single-node details of links and offers, driven by hand: offers follow introductions,
//! and shed links retire gracefully.
//!
//! Offers to a peer we heard of in a discovery reply go the way the reply came: the peer
//! that named it knows it, while greedy routing towards a peer that joined a moment ago
//! usually ends where nobody is linked to it yet.

use peer_relay_core::{Config, ConnId, Input, Node, Output, PeerId, Time, wire};

fn id(first: u8) -> PeerId {
    let mut bytes = [0u8; 20];
    bytes[0] = first;
    PeerId::from_bytes(bytes)
}

/// A node with inbound links from `peers`, its outputs drained.
fn node_linked_to(config: Config, peers: &[PeerId]) -> (Node, Vec<ConnId>) {
    let mut node = Node::with_seed(config, 7, Time::ZERO).unwrap();
    let mut conns = Vec::new();
    for peer in peers {
        let conn = node.accept(Time::ZERO).unwrap();
        let hello = wire::encode_id_handshake(peer);
        node.handle_input(
            Time::ZERO,
            Input::Frame {
                conn,
                frame: hello.as_bytes(),
            },
        );
        conns.push(conn);
    }
    while node.poll_output().is_some() {}
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
        let conn = node.accept(Time::ZERO).unwrap();
        let hello = wire::encode_id_handshake(peer);
        node.handle_input(
            Time::ZERO,
            Input::Frame {
                conn,
                frame: hello.as_bytes(),
            },
        );
        conns.push(conn);
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
