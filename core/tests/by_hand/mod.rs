//! Helpers for tests that drive a single `Node` by hand.

// Shared by several test files; each needs only some.
#![allow(dead_code)]

use peer_relay_core::{ConnId, Input, Node, Output, PeerId, Time, wire};

/// Gives `node` inbound links from `peers` (each connection accepted and identified by its
/// id handshake) and drains its outputs.
pub fn accept_links(node: &mut Node, peers: &[PeerId]) -> Vec<ConnId> {
    let conns = peers.iter().map(|peer| accept_link(node, peer)).collect();
    while node.poll_output().is_some() {}
    conns
}

/// Gives `node` an inbound link from `peer` (accepted, then identified by its id handshake),
/// leaving the outputs to the caller.
pub fn accept_link(node: &mut Node, peer: &PeerId) -> ConnId {
    let conn = node.accept(Time::ZERO).unwrap();
    identify(node, Time::ZERO, conn, peer);
    conn
}

/// Feeds `peer`'s id handshake to `node` on `conn`.
pub fn identify(node: &mut Node, now: Time, conn: ConnId, peer: &PeerId) {
    let hello = wire::encode_id_handshake(peer);
    let frame = Input::Frame {
        conn,
        frame: hello.as_bytes(),
    };
    node.handle_input(now, frame);
}

/// Gives `node` the bootstrap `url` at time zero; the connection of the dial it starts.
pub fn bootstrap_dial(node: &mut Node, url: &str) -> ConnId {
    node.bootstrap(Time::ZERO, url).unwrap();
    std::iter::from_fn(|| node.poll_output())
        .find_map(|out| match out {
            Output::DialWebSocket { conn, .. } => Some(conn),
            _ => None,
        })
        .expect("a bootstrap dial")
}

/// A peer whose id shares exactly `bucket` leading bits with `own` (`bucket` < 152), told
/// apart from others in the bucket by `salt`.
pub fn in_bucket(own: &PeerId, bucket: usize, salt: u8) -> PeerId {
    let mut bytes = *own.as_bytes();
    bytes[bucket / 8] ^= 0x80 >> (bucket % 8);
    bytes[19] ^= salt;
    let peer = PeerId::from_bytes(bytes);
    assert_eq!(own.common_prefix_len(&peer), bucket);
    peer
}
