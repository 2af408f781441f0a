//! The PeerRelay API over real loopback WebSockets: the JS original's own scenarios (two
//! peers connect, direct message, send before connect, relay, automatic population), plus
//! disconnect, destroy, bootstrap retries and the driver's bounds.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peer_relay::{
    Config, Error, Event, Events, LinkSelection, Options, PeerId, PeerRelay, Transport,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use common::{WAIT, next_event};

/// Options for the WebSocket tests: WebRTC off, so that no test here gathers candidates
/// outside loopback (the WebRTC tests run in a private network namespace, `tests/`).
fn ws_only() -> Options {
    Options {
        webrtc: false,
        ..Options::default()
    }
}

fn server() -> Options {
    Options {
        port: Some(0),
        ..ws_only()
    }
}

fn joining(url: &str) -> Options {
    Options {
        bootstrap: vec![url.to_owned()],
        ..ws_only()
    }
}

/// A config that keeps a line a line: no discovery-driven links beyond the first.
fn line() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn start(options: Options) -> PeerRelay {
    PeerRelay::new(options).await.expect("node starts")
}

fn url(relay: &PeerRelay) -> String {
    relay.url().expect("runs a server").to_owned()
}

async fn expect_peer(events: &mut Events, peer: PeerId) {
    next_event(events, &format!("peer {peer}"), |e| {
        (*e == Event::Peer(peer, Transport::WebSocket)).then_some(())
    })
    .await
}

async fn expect_removed(events: &mut Events, peer: PeerId) {
    let what = format!("peer-removed {peer}");
    next_event(events, &what, |e| {
        (*e == Event::PeerRemoved(peer)).then_some(())
    })
    .await
}

async fn expect_message(events: &mut Events, from: PeerId) -> serde_json::Value {
    let what = format!("message from {from}");
    next_event(events, &what, |e| match e {
        Event::Message { from: f, data, .. } if *f == from => Some(data.clone()),
        _ => None,
    })
    .await
}

/// Two nodes linked to each other, with their event streams.
async fn linked_pair() -> (PeerRelay, Events, PeerRelay, Events) {
    let a = start(server()).await;
    let b = start(joining(&url(&a))).await;
    let (mut a_events, mut b_events) = (a.events(), b.events());
    expect_peer(&mut a_events, b.id()).await;
    expect_peer(&mut b_events, a.id()).await;
    (a, a_events, b, b_events)
}

#[tokio::test]
async fn two_peers_connect() {
    let (a, _, b, _) = linked_pair().await;
    assert_eq!(a.stats().await.unwrap().sizes.links, 1);
    assert_eq!(b.stats().await.unwrap().sizes.links, 1);
    assert!(url(&a).starts_with("ws://127.0.0.1:"), "{}", url(&a));
    assert_eq!(b.url(), None);
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn direct_message_both_ways() {
    let (a, mut a_events, b, mut b_events) = linked_pair().await;
    a.send(b.id(), "TEST1").await.unwrap();
    b.send(a.id(), &json!({"n": [1, 2.5, null], "s": "\u{e9}\"\n"}))
        .await
        .unwrap();
    assert_eq!(expect_message(&mut b_events, a.id()).await, json!("TEST1"));
    assert_eq!(
        expect_message(&mut a_events, b.id()).await,
        json!({"n": [1, 2.5, null], "s": "\u{e9}\"\n"})
    );
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn send_before_link() {
    let a = start(server()).await;
    let b = start(joining(&url(&a))).await;
    // Neither has a link yet: both messages wait in the pre-link queue.
    b.send(a.id(), "TEST2").await.unwrap();
    a.send(b.id(), "TEST1").await.unwrap();
    assert_eq!(
        expect_message(&mut a.events(), b.id()).await,
        json!("TEST2")
    );
    assert_eq!(
        expect_message(&mut b.events(), a.id()).await,
        json!("TEST1")
    );
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn relay_through_a_middle_peer() {
    // a <-> hub <-> c, and a line stays a line.
    let line_node = |bootstrap: Vec<String>| Options {
        port: Some(0),
        bootstrap,
        config: line(),
        ..ws_only()
    };
    let hub = start(line_node(vec![])).await;
    let mut hub_events = hub.events();
    let c = start(line_node(vec![url(&hub)])).await;
    expect_peer(&mut hub_events, c.id()).await;
    let a = start(line_node(vec![url(&hub)])).await;
    expect_peer(&mut hub_events, a.id()).await;
    expect_peer(&mut a.events(), hub.id()).await;

    a.send(c.id(), "TEST").await.unwrap();
    assert_eq!(expect_message(&mut c.events(), a.id()).await, json!("TEST"));
    assert!(hub.stats().await.unwrap().node.relayed >= 1);
    assert_eq!(
        a.stats().await.unwrap().sizes.links,
        1,
        "a linked to c directly"
    );
    for node in [a, hub, c] {
        node.destroy().await;
    }
}

#[tokio::test]
async fn clients_automatically_populate() {
    // a <-> hub <-> c with the default strategy: a and c find and link each other.
    let hub = start(server()).await;
    let a = start(Options {
        port: Some(0),
        ..joining(&url(&hub))
    })
    .await;
    let c = start(Options {
        port: Some(0),
        ..joining(&url(&hub))
    })
    .await;
    let (mut a_events, mut c_events) = (a.events(), c.events());
    expect_peer(&mut a_events, c.id()).await;
    expect_peer(&mut c_events, a.id()).await;
    // As in the original's test: drop the hub link, the message goes directly.
    a.disconnect(hub.id()).await.unwrap();
    expect_removed(&mut a_events, hub.id()).await;
    a.send(c.id(), "TEST").await.unwrap();
    assert_eq!(expect_message(&mut c_events, a.id()).await, json!("TEST"));
    for node in [a, hub, c] {
        node.destroy().await;
    }
}

#[tokio::test]
async fn disconnect_closes_the_link_on_both_sides() {
    let (a, mut a_events, b, mut b_events) = linked_pair().await;
    a.disconnect(b.id()).await.unwrap();
    expect_removed(&mut a_events, b.id()).await;
    expect_removed(&mut b_events, a.id()).await;
    let again = a.disconnect(b.id()).await;
    assert!(
        matches!(again, Err(Error::Node(peer_relay_core::Error::NotLinked))),
        "{again:?}"
    );
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn destroy_frees_the_port_and_ends_everything() {
    let (a, mut a_events, b, mut b_events) = linked_pair().await;
    let addr: SocketAddr = url(&a)["ws://".len()..].parse().unwrap();
    a.destroy().await;
    // The port is free the moment destroy returns.
    let rebound = TcpListener::bind(addr)
        .await
        .expect("port free after destroy");
    drop(rebound);
    expect_removed(&mut b_events, a.id()).await;
    // a's stream reports the link going down, then ends.
    expect_removed(&mut a_events, b.id()).await;
    let rest = tokio::time::timeout(WAIT, a_events.next()).await.unwrap();
    assert_eq!(rest, None);
    assert!(matches!(
        a.send(b.id(), "late").await,
        Err(Error::Destroyed)
    ));
    assert!(matches!(a.stats().await, Err(Error::Destroyed)));
    a.destroy().await; // idempotent
    // A new node can serve on the same port.
    let again = start(Options {
        port: Some(addr.port()),
        ..ws_only()
    })
    .await;
    assert_eq!(url(&again), url(&a));
    again.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn unreachable_bootstrap_is_retried_with_backoff_and_reported() {
    // A port nothing listens on (bound, then released).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = format!("ws://{addr}");
    let config = Config {
        bootstrap_backoff_initial: Duration::from_millis(50),
        ..Config::default()
    };
    let joiner = start(Options {
        bootstrap: vec![target.clone()],
        config,
        ..ws_only()
    })
    .await;
    let mut events = joiner.events();
    let mut failures = Vec::new();
    while failures.len() < 2 {
        failures.push(
            next_event(&mut events, "bootstrap failure", |e| match e {
                Event::BootstrapFailed {
                    url,
                    attempt,
                    retry_in,
                } => Some((url.clone(), *attempt, *retry_in)),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(failures[0], (target.clone(), 1, Duration::from_millis(50)));
    assert_eq!(failures[1], (target, 2, Duration::from_millis(100)));
    assert!(joiner.stats().await.unwrap().driver.dials_failed >= 2);
    // Once something listens there, a retry links.
    let late = start(Options {
        port: Some(addr.port()),
        ..ws_only()
    })
    .await;
    expect_peer(&mut events, late.id()).await;
    joiner.destroy().await;
    late.destroy().await;
}

#[tokio::test]
async fn a_dial_that_never_upgrades_times_out_and_is_reported() {
    // The kernel completes the TCP handshake into the backlog, but nobody ever answers the
    // WebSocket upgrade: only the driver's connect timeout ends the dial.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("ws://{}", silent.local_addr().unwrap());
    let joiner = start(Options {
        bootstrap: vec![target.clone()],
        connect_timeout: Duration::from_millis(200),
        ..ws_only()
    })
    .await;
    let failed = next_event(&mut joiner.events(), "bootstrap failure", |e| match e {
        Event::BootstrapFailed { url, attempt, .. } => Some((url.clone(), *attempt)),
        _ => None,
    })
    .await;
    assert_eq!(failed, (target, 1));
    assert_eq!(joiner.stats().await.unwrap().driver.dials_failed, 1);
    joiner.destroy().await;
}

#[tokio::test]
async fn options_errors_are_typed() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let in_use = PeerRelay::new(Options {
        port: Some(port),
        ..ws_only()
    })
    .await;
    assert!(matches!(in_use, Err(Error::Listen { .. })), "{in_use:?}");
    let webrtc = PeerRelay::new(Options {
        webrtc: true,
        rtc: peer_relay::WebRtcOptions {
            bind: Vec::new(),
            ..peer_relay::WebRtcOptions::default()
        },
        ..ws_only()
    })
    .await;
    assert!(
        matches!(webrtc, Err(Error::InvalidOptions(_))),
        "{webrtc:?}"
    );
    let bad_url = PeerRelay::new(joining("http://127.0.0.1:1")).await;
    assert!(matches!(bad_url, Err(Error::InvalidOptions(_))));
    let bad_config = PeerRelay::new(Options {
        config: Config {
            k: 0,
            ..Config::default()
        },
        ..ws_only()
    })
    .await;
    assert!(matches!(bad_config, Err(Error::Node(_))));
    let node = start(ws_only()).await;
    let own = node.send(node.id(), "me").await;
    assert!(matches!(
        own,
        Err(Error::Node(peer_relay_core::Error::OwnId))
    ));
    // Deeper than `max_json_depth` allows once wrapped in the envelope.
    let deep = "[".repeat(200) + &"]".repeat(200);
    let deep = serde_json::value::RawValue::from_string(deep).unwrap();
    let too_deep = node.send(PeerId::from_bytes([7; 20]), &deep).await;
    assert!(matches!(
        too_deep,
        Err(Error::Node(peer_relay_core::Error::TooLarge))
    ));
    node.destroy().await;
}

#[tokio::test]
async fn handles_are_shared_across_tasks() {
    let (a, _, b, mut b_events) = linked_pair().await;
    let senders: Vec<_> = (0..8)
        .map(|task| {
            let a = a.clone();
            let to = b.id();
            tokio::spawn(async move {
                for n in 0..100 {
                    a.send(to, &json!({"task": task, "n": n})).await.unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 800 {
        let data = expect_message(&mut b_events, a.id()).await;
        seen.insert((data["task"].as_u64().unwrap(), data["n"].as_u64().unwrap()));
    }
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn a_slow_event_reader_loses_messages_counted_not_links() {
    // Streams of a hold at most 1,000 bytes of unread message data: four of the 250-byte
    // messages below.
    let a = start(Options {
        config: Config {
            max_frame_bytes: 1000,
            max_hops: 2,
            ..Config::default()
        },
        event_queue_bytes: 1000,
        ..server()
    })
    .await;
    let message = |n: usize| json!(format!("{n:02}{}", "x".repeat(246)));
    assert_eq!(message(0).to_string().len(), 250);
    let slow = a.events();
    let mut fast = a.events();
    let b = start(joining(&url(&a))).await;
    expect_peer(&mut fast, b.id()).await;
    // Read in step on the second stream, so that one never holds more than one message.
    for n in 0..20 {
        b.send(a.id(), &message(n)).await.unwrap();
        assert_eq!(expect_message(&mut fast, b.id()).await, message(n));
    }
    // The unread one kept its link event and the first four messages; the rest were dropped
    // and counted.
    assert_eq!(a.stats().await.unwrap().driver.events_dropped, 16);
    let mut slow = slow;
    assert_eq!(
        slow.next().await,
        Some(Event::Peer(b.id(), Transport::WebSocket))
    );
    for n in 0..4 {
        assert_eq!(expect_message(&mut slow, b.id()).await, message(n));
    }
    a.destroy().await;
    b.destroy().await;
}

/// A bare WebSocket client that speaks the id handshake by hand.
async fn raw_client(
    url: &str,
    id: PeerId,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("dial");
    ws.send(Message::text(format!("\"{}\"", id.to_hex())))
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn a_full_send_queue_drops_frames_and_counts_them() {
    let config = Config {
        max_frame_bytes: 4096,
        ..Config::default()
    };
    let a = start(Options {
        config,
        send_queue_bytes: 4096,
        ..server()
    })
    .await;
    let mut events = a.events();
    let reader_id = PeerId::from_bytes([0x55; 20]);
    // Linked, but never reads: the socket buffers fill, then a's queue.
    let stalled = raw_client(&url(&a), reader_id).await;
    expect_peer(&mut events, reader_id).await;
    let payload = "x".repeat(500);
    let mut drops = 0;
    for _ in 0..200 {
        for _ in 0..500 {
            a.send(reader_id, &payload).await.unwrap();
        }
        drops = a.stats().await.unwrap().driver.send_queue_drops;
        if drops > 0 {
            break;
        }
    }
    assert!(
        drops > 0,
        "no drop after 100,000 frames to a stalled reader"
    );
    drop(stalled);
    a.destroy().await;
}

#[tokio::test]
async fn inbound_past_the_connection_limit_is_refused() {
    let config = Config {
        max_connections: 2,
        max_links: 2,
        target_links: 2,
        ..Config::default()
    };
    let a = start(Options { config, ..server() }).await;
    let mut events = a.events();
    let mut clients = Vec::new();
    for byte in 1..=2u8 {
        let id = PeerId::from_bytes([byte; 20]);
        clients.push(raw_client(&url(&a), id).await);
        expect_peer(&mut events, id).await;
    }
    let mut third = raw_client(&url(&a), PeerId::from_bytes([3; 20])).await;
    let refused = tokio::time::timeout(WAIT, async {
        while let Some(message) = third.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("third connection closed");
    assert_eq!(refused, Some(1013), "close code 'try again later'");
    assert_eq!(a.stats().await.unwrap().driver.inbound_refused, 1);
    a.destroy().await;
}

#[tokio::test]
async fn oversized_and_binary_frames_are_bounded() {
    let config = Config {
        max_frame_bytes: 1024,
        ..Config::default()
    };
    let a = start(Options { config, ..server() }).await;
    let mut events = a.events();
    let id = PeerId::from_bytes([9; 20]);
    let mut client = raw_client(&url(&a), id).await;
    expect_peer(&mut events, id).await;
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    // Past tungstenite's limit (the core's plus slack) the socket is cut before buffering.
    client
        .send(Message::text("x".repeat(64 * 1024)))
        .await
        .unwrap();
    expect_removed(&mut events, id).await;
    let stats = a.stats().await.unwrap();
    assert_eq!(
        stats.node.dropped.get(peer_relay_core::DropReason::Binary),
        1
    );
    a.destroy().await;
}
