//! A node still joining refuses incoming WebSockets (`Config::join_hold`): joiners who
//! bootstrap through a server that is not in the network yet would otherwise form an
//! overlay of their own with it.

mod by_hand;

use std::time::Duration;

use peer_relay_core::{Config, Error, Input, Node, PeerId, Time};

const SEED_URL: &str = "ws://seed.example:8000";

fn node(config: Config) -> Node {
    Node::with_seed(config, 7, Time::ZERO).unwrap()
}

fn ms(millis: u64) -> Time {
    Time::from_millis(millis)
}

/// Bootstraps `node` at time zero and returns the connection of its bootstrap dial.
fn bootstrap(node: &mut Node) -> peer_relay_core::ConnId {
    by_hand::bootstrap_dial(node, SEED_URL)
}

#[test]
fn a_joining_node_refuses_incoming_websockets_until_the_hold_ends() {
    let hold = Config::default().join_hold;
    assert!(!hold.is_zero(), "the default holds");
    let mut joiner = node(Config::default());
    bootstrap(&mut joiner);
    assert_eq!(joiner.accept(ms(1)), Err(Error::Joining));
    let just_before = Time::ZERO + (hold - Duration::from_millis(1));
    assert_eq!(joiner.accept(just_before), Err(Error::Joining));
    assert_eq!(joiner.stats().connections_refused, 2);
    assert_eq!(joiner.sizes().connections, 1, "only its own dial");
    assert!(joiner.accept(Time::ZERO + hold).is_ok(), "the hold is over");
}

#[test]
fn its_first_link_ends_the_hold() {
    let mut joiner = node(Config::default());
    let dial = bootstrap(&mut joiner);
    // The seed answers the dial and identifies itself: the joiner is in the network.
    let seed = PeerId::from_bytes([0x5e; 20]);
    joiner.handle_input(ms(20), Input::Opened { conn: dial });
    by_hand::identify(&mut joiner, ms(40), dial, &seed);
    assert!(joiner.is_linked(&seed));
    assert!(joiner.accept(ms(50)).is_ok());
    assert_eq!(joiner.stats().connections_refused, 0);
}

#[test]
fn a_seed_and_the_original_accept_at_once() {
    // No bootstrap url: the first node of a network has no one to join through.
    let mut seed = node(Config::default());
    by_hand::accept_links(&mut seed, &[PeerId::from_bytes([1; 20])]);
    // Given a bootstrap url once it has a link, it is not joining.
    seed.bootstrap(ms(10), SEED_URL).unwrap();
    assert!(seed.accept(ms(20)).is_ok());
    // The original accepts whoever dials it.
    let mut original = node(Config::original());
    bootstrap(&mut original);
    assert!(original.accept(ms(1)).is_ok());
}
