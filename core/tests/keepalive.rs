//! Keepalive: a link we hear nothing from is probed after `keepalive_interval`, and closed
//! as unresponsive when `keepalive_timeout` more passes in silence. A peer that vanished
//! without a close (power lost, network gone, process frozen) would otherwise stay a link,
//! and a black hole for everything routed over it.

mod by_hand;
mod harness;

use std::time::Duration;

use harness::Net;
use peer_relay_core::{
    CloseReason, Config, ConnId, Event, Input, Node, Output, PeerId, Time, wire,
};
use serde_json::json;

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(20);
/// The sweep runs every half of the shorter of the two.
const PERIOD: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config {
        keepalive_interval: Some(INTERVAL),
        keepalive_timeout: TIMEOUT,
        // Nothing but what a test sends crosses the link.
        refresh_interval: None,
        ..Config::default()
    }
}

/// Two nodes, the second bootstrapped through the first, linked at about time zero.
fn pair(config: Config) -> Net {
    let mut net = Net::new();
    let server = net.add(config.clone(), 1, true);
    let client = net.add(config, 2, false);
    net.bootstrap(client, server);
    net.run_for(Duration::from_secs(1));
    assert_eq!((net.link_count(0), net.link_count(1)), (1, 1));
    net
}

fn disconnects(net: &Net, node: usize) -> usize {
    net.events
        .iter()
        .filter(|(n, e)| *n == node && matches!(e, Event::PeerDisconnected { .. }))
        .count()
}

#[test]
fn an_idle_link_that_answers_probes_stays() {
    let mut net = pair(config());
    let frames = net.frames.len();
    net.run_for(Duration::from_secs(600));
    for node in 0..2 {
        assert_eq!(net.link_count(node), 1, "node {node} kept its link");
        let stats = net.nodes[node].stats();
        assert_eq!(stats.closed.get(CloseReason::Unresponsive), 0);
    }
    // Each side probes at most once per interval (a sweep every period finds the link
    // silent for the interval at most a period late); a ping is heard by the pinged side
    // too, so sides whose sweeps are out of step share the probing.
    for node in &net.nodes {
        let probes = node.stats().keepalive_probes;
        assert!(
            (600 / 40..=600 / 30).contains(&probes),
            "{probes} probes in 600 s"
        );
    }
    assert_eq!(net.frames.len(), frames, "probes are not frames");
}

#[test]
fn a_silent_link_is_closed_between_interval_plus_timeout_and_one_period_later() {
    let mut net = pair(config());
    let cut_at = net.now;
    net.cut.insert((0, 1), true);
    let earliest = cut_at + (INTERVAL + TIMEOUT - Duration::from_secs(1));
    net.run_until(earliest);
    assert_eq!((net.link_count(0), net.link_count(1)), (1, 1), "too early");
    net.run_until(cut_at + INTERVAL + TIMEOUT + PERIOD + Duration::from_secs(1));
    for node in 0..2 {
        assert_eq!(net.link_count(node), 0, "node {node} still linked");
        let stats = net.nodes[node].stats();
        assert_eq!(stats.closed.get(CloseReason::Unresponsive), 1);
        assert!(stats.keepalive_probes >= 1, "probed before giving up");
        assert_eq!(disconnects(&net, node), 1, "the application is told");
    }
}

#[test]
fn frames_count_as_heard() {
    let mut net = pair(config());
    // The client talks every 10 s; the server answers nothing, so only the client probes.
    for _ in 0..30 {
        net.send(1, 0, &json!("tick"));
        net.run_for(Duration::from_secs(10));
    }
    assert_eq!(
        net.nodes[0].stats().keepalive_probes,
        0,
        "the server heard ticks"
    );
    assert!(
        net.nodes[1].stats().keepalive_probes > 0,
        "the client heard nothing"
    );
    assert_eq!((net.link_count(0), net.link_count(1)), (1, 1));
}

#[test]
fn without_keepalive_a_silent_link_stays_forever_as_in_the_original() {
    let original = Config {
        keepalive_interval: None,
        ..config()
    };
    let mut net = pair(original);
    net.cut.insert((0, 1), true);
    net.run_until(Time::ZERO + Duration::from_secs(3_600));
    assert_eq!((net.link_count(0), net.link_count(1)), (1, 1));
    assert_eq!(net.nodes[0].stats().keepalive_probes, 0);
    assert!(Config::original().keepalive_interval.is_none());
}

/// Fires `node`'s timers up to `until`; every output, in order. With `answer_probes` each
/// probed link answers at once (`Input::Alive` at the probe's time).
fn timer_outputs(node: &mut Node, until: Time, answer_probes: bool) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(at) = node.poll_timeout().filter(|at| *at <= until) {
        node.handle_input(at, Input::Timeout);
        let first = outputs.len();
        outputs.extend(std::iter::from_fn(|| node.poll_output()));
        if answer_probes {
            for output in &outputs[first..] {
                if let Output::Probe { conn } = output {
                    node.handle_input(at, Input::Alive { conn: *conn });
                }
            }
        }
    }
    outputs
}

/// Drives `node`'s timers up to `until`, returning the connections it probed and closed.
fn run_timers(node: &mut Node, until: Time) -> (Vec<ConnId>, Vec<(ConnId, CloseReason)>) {
    let (mut probed, mut closed) = (Vec::new(), Vec::new());
    for output in timer_outputs(node, until, false) {
        match output {
            Output::Probe { conn } => probed.push(conn),
            Output::Close { conn, reason } => closed.push((conn, reason)),
            _ => {}
        }
    }
    (probed, closed)
}

fn secs(s: u64) -> Time {
    Time::ZERO + Duration::from_secs(s)
}

#[test]
fn probes_repeat_while_the_silence_lasts_and_an_answer_resets_it() {
    let mut node = Node::with_seed(config(), 3, Time::ZERO).unwrap();
    let own = node.id();
    let conns = by_hand::accept_links(&mut node, &[by_hand::in_bucket(&own, 0, 1)]);
    let conn = conns[0];
    // Sweeps at 10, 20, 30 s: silent for 30 s at the third.
    assert_eq!(run_timers(&mut node, secs(29)), (vec![], vec![]));
    assert_eq!(run_timers(&mut node, secs(30)), (vec![conn], vec![]));
    // No answer: probed again at the next sweep.
    assert_eq!(run_timers(&mut node, secs(40)), (vec![conn], vec![]));
    // The pong arrives: silent again from 41 s, so the next probe is at the first sweep
    // 30 s after that (80 s).
    node.handle_input(secs(41), Input::Alive { conn });
    assert_eq!(run_timers(&mut node, secs(79)), (vec![], vec![]));
    assert_eq!(run_timers(&mut node, secs(80)), (vec![conn], vec![]));
    // Then nothing: at 41 + 30 + 20 = 91 s it is unresponsive, closed at the 100 s sweep.
    assert_eq!(run_timers(&mut node, secs(90)), (vec![conn], vec![]));
    assert_eq!(
        run_timers(&mut node, secs(100)),
        (vec![], vec![(conn, CloseReason::Unresponsive)])
    );
    assert_eq!(node.links().count(), 0);
    // Nothing is left to check: no keepalive timer stays armed.
    assert_eq!(node.poll_timeout(), None, "{:?}", node.sizes());
}

/// Three peers: the server 0, and 1 and 2 bootstrapped through it; 2 runs a server too, so
/// 1 and 2 link to each other as well.
fn triangle() -> Net {
    // With discovery: 1 and 2 learn of each other from the server.
    let config = Config {
        refresh_interval: Config::default().refresh_interval,
        ..config()
    };
    let mut net = Net::new();
    let server = net.add(config.clone(), 1, true);
    let one = net.add(config.clone(), 2, false);
    let two = net.add(config, 3, true);
    net.bootstrap(one, server);
    net.bootstrap(two, server);
    net.run_for(Duration::from_secs(30));
    assert_eq!(
        (net.link_count(0), net.link_count(1), net.link_count(2)),
        (2, 2, 2)
    );
    net
}

#[test]
fn a_bootstrap_server_that_answers_reach_checks_is_not_dialled_again() {
    let mut net = triangle();
    // 1 loses its link to the server, but still reaches it through 2.
    net.cut.insert((0, 1), true);
    net.run_for(Duration::from_secs(300));
    let stats = net.nodes[1].stats();
    assert_eq!(stats.closed.get(CloseReason::Unresponsive), 1);
    assert!(stats.reach_checks >= 2, "{stats:?}");
    assert_eq!(stats.reach_redials, 0, "the server answered through 2");
    // Nothing else checks: no peer of the others vanished.
    assert_eq!(net.nodes[2].stats().reach_checks, 0);
}

#[test]
fn a_bootstrap_server_out_of_reach_is_dialled_again_once_the_split_heals() {
    let mut net = triangle();
    // The server is cut off from both: 1 and 2 go on as a network of two.
    net.cut.insert((0, 1), true);
    net.cut.insert((0, 2), true);
    net.run_for(Duration::from_secs(70));
    assert_eq!(net.link_count(0), 0);
    assert_eq!((net.link_count(1), net.link_count(2)), (1, 1));
    let checks = net.nodes[1].stats().reach_checks;
    assert!(checks >= 1, "a check went out");
    assert_eq!(net.nodes[1].stats().reach_redials, 0);
    // The split heals; the next check finds the server silent and dials its url.
    net.cut.clear();
    net.run_for(Duration::from_secs(120));
    for node in [1, 2] {
        let stats = net.nodes[node].stats();
        assert!(stats.reach_redials >= 1, "node {node}: {stats:?}");
        assert!(
            net.conn_between(node, 0).is_some(),
            "node {node} linked again"
        );
    }
}

/// A node that joined through the server `seed` (the bootstrap link is up) and also holds a
/// link from `other`; returns it with the two connections.
fn joined(seed: PeerId, other: PeerId) -> (Node, ConnId, ConnId) {
    let mut node = Node::with_seed(config(), 4, Time::ZERO).unwrap();
    let dial = by_hand::bootstrap_dial(&mut node, "ws://seed.test:1");
    node.handle_input(Time::ZERO, Input::Opened { conn: dial });
    by_hand::identify(&mut node, Time::ZERO, dial, &seed);
    let other_conn = by_hand::accept_link(&mut node, &other);
    while node.poll_output().is_some() {}
    assert!(node.is_linked(&seed) && node.is_linked(&other));
    (node, dial, other_conn)
}

/// Runs `node`'s timers up to `until`, its links answering every probe at once; the peers
/// it sent `findPeers` to (by the message's final recipient) and whether it dialled a
/// WebSocket.
fn checks_until(node: &mut Node, until: Time) -> (Vec<PeerId>, bool) {
    let limits = node.config().decode_limits();
    let (mut asked, mut dialled) = (Vec::new(), false);
    for output in timer_outputs(node, until, true) {
        match output {
            Output::Transmit { frame, .. } => {
                let env = wire::Envelope::decode(frame.as_bytes(), &limits).unwrap();
                if matches!(env.payload, wire::Payload::FindPeers(_)) {
                    asked.push(env.to);
                }
            }
            Output::DialWebSocket { .. } => dialled = true,
            _ => {}
        }
    }
    (asked, dialled)
}

#[test]
fn a_link_the_transport_lost_starts_reach_checks_and_a_closed_one_does_not() {
    let (seed, other) = (
        PeerId::from_bytes([0x5e; 20]),
        PeerId::from_bytes([0x07; 20]),
    );
    // ICE failed on the link to the seed: the network may have split.
    let (mut node, to_seed, _) = joined(seed, other);
    node.handle_input(secs(1), Input::Failed { conn: to_seed });
    assert_eq!(node.stats().links_failed, 1);
    assert!(!node.is_linked(&seed));
    // 15 s later the seed is asked, through the remaining link; no answer by the next check
    // (30 s later): its url is dialled again.
    assert_eq!(checks_until(&mut node, secs(16)), (vec![seed], false));
    assert_eq!(checks_until(&mut node, secs(45)), (vec![], false));
    assert_eq!(checks_until(&mut node, secs(46)), (vec![], true));
    assert_eq!(node.stats().reach_checks, 1);
    assert_eq!(node.stats().reach_redials, 1);

    // The same link closed by its peer: no checks.
    let (mut node, to_seed, _) = joined(seed, other);
    node.handle_input(secs(1), Input::Closed { conn: to_seed });
    assert_eq!(node.stats().links_failed, 0);
    assert_eq!(checks_until(&mut node, secs(600)), (vec![], false));
    assert_eq!(node.stats().reach_checks, 0);
}

mod timing {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// For any keepalive settings and any times the far end is heard from, the node
        /// probes only a link silent for `keepalive_interval`, never closes one silent for
        /// less than `keepalive_interval + keepalive_timeout`, and closes it within one sweep
        /// period after that.
        #[test]
        fn probes_and_closes_follow_the_silence(
            interval_s in 1u64..60,
            timeout_s in 1u64..60,
            // Gaps between the moments the link is heard from, in tenths of a second.
            gaps in proptest::collection::vec(1u64..1_500, 0..12),
        ) {
            let (interval, timeout) =
                (Duration::from_secs(interval_s), Duration::from_secs(timeout_s));
            let period = interval.min(timeout) / 2;
            let config = Config {
                keepalive_interval: Some(interval),
                keepalive_timeout: timeout,
                refresh_interval: None,
                ..Config::default()
            };
            let mut node = Node::with_seed(config, 9, Time::ZERO).unwrap();
            let own = node.id();
            let conn = by_hand::accept_links(&mut node, &[by_hand::in_bucket(&own, 0, 1)])[0];
            let mut heard = Time::ZERO;
            let mut pending: Vec<Time> = gaps
                .iter()
                .scan(Time::ZERO, |t, gap| {
                    *t += Duration::from_millis(gap * 100);
                    Some(*t)
                })
                .collect();
            pending.reverse();
            let deadline = |heard: Time| heard + (interval + timeout);
            let mut closed_at = None;
            while closed_at.is_none() {
                // The next thing to happen: a timer, or the link being heard from.
                let timer = node.poll_timeout().expect("the sweep is armed while linked");
                match pending.last() {
                    Some(&at) if at < timer => {
                        pending.pop();
                        // Heard from after the latest possible close: nothing to hear.
                        prop_assert!(at < deadline(heard) + period, "not closed in time");
                        node.handle_input(at, Input::Alive { conn });
                        heard = at;
                        continue;
                    }
                    _ => {}
                }
                node.handle_input(timer, Input::Timeout);
                while let Some(output) = node.poll_output() {
                    match output {
                        Output::Probe { conn: probed } => {
                            prop_assert_eq!(probed, conn);
                            prop_assert!(
                                timer.saturating_duration_since(heard) >= interval,
                                "probed after {:?} of silence",
                                timer.saturating_duration_since(heard)
                            );
                        }
                        Output::Close { reason, .. } => {
                            prop_assert_eq!(reason, CloseReason::Unresponsive);
                            closed_at = Some(timer);
                        }
                        _ => {}
                    }
                }
            }
            let closed_at = closed_at.unwrap();
            prop_assert!(closed_at >= deadline(heard), "closed early: {closed_at:?}");
            prop_assert!(closed_at <= deadline(heard) + period, "closed late: {closed_at:?}");
        }
    }
}
