//! `Socket` over real loopback WebSockets: datagrams relayed through a third peer, the
//! receive side's truncation, bounds and counted drops, misuse errors, close, and the echo
//! example's service.

use std::time::Duration;

use peer_relay::{
    Config, Error, LinkSelection, Malformed, Options, PeerId, PeerRelay, Socket, SocketError,
    SocketEvent, SocketEvents, SocketOptions, encode_payload,
};
use serde_json::json;

#[allow(dead_code)] // its `main` is the example's, not ours
#[path = "../examples/echo.rs"]
mod echo;

const WAIT: Duration = Duration::from_secs(15);

/// No automatic linking beyond the bootstrap: a chain stays a chain.
fn chain_config() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn hub() -> PeerRelay {
    PeerRelay::new(Options {
        port: Some(0),
        config: chain_config(),
        ..Options::default()
    })
    .await
    .unwrap()
}

fn joining(hub: &PeerRelay) -> Options {
    Options {
        bootstrap: vec![hub.url().unwrap().to_owned()],
        config: chain_config(),
        ..Options::default()
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

async fn next_event(events: &mut SocketEvents, what: &str) -> SocketEvent {
    within(what, events.next())
        .await
        .unwrap_or_else(|| panic!("events ended before {what}"))
}

/// Sender and receiver are linked only to a relay peer, so every datagram crosses it.
#[tokio::test]
async fn datagrams_cross_a_relay_peer_intact() {
    let relay = hub().await;
    let a = Socket::new(joining(&relay)).await.unwrap();
    let b = Socket::new(joining(&relay)).await.unwrap();
    within("a listening", a.bind(4001)).await.unwrap();
    within("b listening", b.bind(4002)).await.unwrap();
    let (a_id, b_id) = (a.peer().id(), b.peer().id());

    // All 256 byte values, a -> b.
    let every: Vec<u8> = (0..=255).collect();
    assert_eq!(a.send_to(&every, (b_id, 4002)).await.unwrap(), 256);
    let mut buf = vec![0u8; 70_000];
    let (len, from) = within("every byte", b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..len], &every[..]);
    assert_eq!(from.address, a_id.to_hex().as_str());
    assert_eq!(
        (from.port, from.family, from.id()),
        (4001, "peer-relay", a_id)
    );

    // 60,000 bytes, b -> a, answering with the sender's RemoteInfo.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i * 31 % 256) as u8).collect();
    b.send_to(&big, &from).await.unwrap();
    let datagram = within("60,000 bytes", a.recv_datagram()).await.unwrap();
    assert_eq!(datagram.data.len(), 60_000);
    assert!(datagram.data == big, "the 60,000-byte datagram changed");
    assert_eq!((datagram.from.id(), datagram.from.port), (b_id, 4002));
    assert_eq!(datagram.path_len, 2, "b -> relay -> a");

    // An empty datagram is a datagram too.
    a.send_to(&[], (b_id, 1)).await.unwrap();
    let (len, _) = within("empty", b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(len, 0);

    // The two sockets never linked: the relay carried everything.
    assert!(matches!(
        a.peer().disconnect(b_id).await,
        Err(Error::Node(peer_relay_core::Error::NotLinked))
    ));
    let relayed = relay.stats().await.unwrap().node.relayed;
    assert!(relayed >= 3, "the relay peer relayed {relayed} messages");
    assert_eq!(a.stats().sent, 2);
    assert_eq!((b.stats().queued, b.stats().malformed), (2, 0));

    a.close().await.unwrap();
    b.close().await.unwrap();
    relay.destroy().await;
}

/// `send(buf, offset, length, ..)` sends exactly `length` bytes from `offset` (not the
/// original's `slice(offset, length)`); a short receive buffer truncates like UDP.
#[tokio::test]
async fn send_ranges_and_recv_truncation() {
    let relay = hub().await;
    let a = Socket::new(joining(&relay)).await.unwrap();
    let b = Socket::new(joining(&relay)).await.unwrap();
    within("a", a.bind(0)).await.unwrap();
    within("b", b.bind(0)).await.unwrap();
    let b_hex = b.peer().id().to_hex();
    let data: Vec<u8> = (0..100).collect();

    assert_eq!(a.send(&data, 10, 5, 9, b_hex.as_str()).await.unwrap(), 5);
    let mut buf = [0u8; 64];
    let (len, from) = within("range", b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..len], &[10, 11, 12, 13, 14]);
    // The port we report is a's own, random below 9999 after bind(0).
    assert_eq!(from.port, a.address().unwrap().port);
    assert!(from.port < 9999);

    a.send(&data, 0, 100, 9, b_hex.as_str()).await.unwrap();
    let mut small = [0u8; 10];
    let (len, _) = within("truncated", b.recv_from(&mut small)).await.unwrap();
    assert_eq!((len, small), (10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(b.stats().truncated, 1);

    for (offset, length) in [(101, 0), (90, 11), (usize::MAX, 2)] {
        assert!(matches!(
            a.send(&data, offset, length, 9, b_hex.as_str()).await,
            Err(SocketError::OutOfRange {
                buffer_len: 100,
                ..
            })
        ));
    }
    assert_eq!(a.send(&data, 100, 0, 9, b_hex.as_str()).await.unwrap(), 0);
    for bad in ["localhost", "127.0.0.1", "abc"] {
        assert!(matches!(
            a.send(&data, 0, 1, 9, bad).await,
            Err(SocketError::InvalidAddress(_))
        ));
    }
    // Larger than a frame can carry (4 bytes of JSON per byte 100-255).
    let huge = vec![200u8; 300_000];
    assert!(matches!(
        a.send_to(&huge, (b.peer().id(), 1)).await,
        Err(SocketError::TooLarge { len: 300_000 })
    ));
    assert!(matches!(
        a.send_to(&data, (a.peer().id(), 1)).await,
        Err(SocketError::Relay(_))
    ));
    assert!(matches!(a.bind(5).await, Err(SocketError::AlreadyBound)));

    a.close().await.unwrap();
    b.close().await.unwrap();
    relay.destroy().await;
}

/// Messages that are not socket payloads are dropped, counted and reported; a full receive
/// queue drops and counts too; what fits still arrives.
#[tokio::test]
async fn malformed_payloads_and_overflow_are_counted() {
    let relay = hub().await;
    let b = Socket::new(SocketOptions {
        recv_queue_datagrams: 2,
        ..joining(&relay).into()
    })
    .await
    .unwrap();
    let mut events = b.events();
    within("b", b.bind(2)).await.unwrap();
    assert_eq!(
        next_event(&mut events, "listening").await,
        SocketEvent::Listening
    );
    let b_id = b.peer().id();
    let relay_hex = relay.id().to_hex();

    relay.send(b_id, &json!("not a datagram")).await.unwrap();
    // A payload whose address names another peer than its sender.
    let forged = encode_payload(&[1], "00000000000000000000000000000000000000aa", 1);
    let forged: serde_json::Value = serde_json::from_str(&forged).unwrap();
    relay.send(b_id, &forged).await.unwrap();
    relay
        .send(
            b_id,
            &json!({"buffer": [1, 999], "address": relay_hex.as_str(), "port": 1}),
        )
        .await
        .unwrap();
    for reason in [
        Malformed::NotAnObject,
        Malformed::AddressMismatch,
        Malformed::BadBuffer,
    ] {
        assert_eq!(
            next_event(&mut events, "malformed").await,
            SocketEvent::Malformed {
                from: relay.id(),
                reason
            }
        );
    }
    assert_eq!(b.stats().malformed, 3);

    // Three good datagrams into a queue of two: the third is dropped.
    for n in 0..3u8 {
        let payload = encode_payload(&[n], relay_hex.as_str(), 77);
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        relay.send(b_id, &payload).await.unwrap();
    }
    assert_eq!(
        next_event(&mut events, "overflow").await,
        SocketEvent::Overflow {
            from: relay.id(),
            len: 1
        }
    );
    let stats = b.stats();
    assert_eq!(
        (stats.received, stats.queued, stats.queue_dropped),
        (6, 2, 1)
    );
    for n in 0..2u8 {
        let datagram = b.recv_datagram().await.unwrap();
        assert_eq!(datagram.data, [n]);
        assert_eq!((datagram.from.id(), datagram.from.port), (relay.id(), 77));
    }

    b.close().await.unwrap();
    assert_eq!(next_event(&mut events, "close").await, SocketEvent::Close);
    assert_eq!(events.next().await, None);
    relay.destroy().await;
}

/// `bind` resolves at the first link; close ends everything with typed errors.
#[tokio::test]
async fn listening_waits_for_a_link_and_close_is_final() {
    let lonely = Socket::new(Options {
        port: Some(0),
        ..Options::default()
    })
    .await
    .unwrap();
    let mut events = lonely.events();
    let address = lonely.address().unwrap();
    assert_eq!(address.address, lonely.peer().id().to_hex().as_str());
    assert_eq!(address.family, "peer-relay");
    assert!(address.port < 9999);

    let bind = lonely.bind(6000);
    tokio::pin!(bind);
    // No link yet: bind has not resolved, but the port is set.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), bind.as_mut())
            .await
            .is_err()
    );
    assert!(!lonely.is_listening());
    assert_eq!(lonely.address().unwrap().port, 6000);
    let joiner = PeerRelay::new(Options {
        bootstrap: vec![lonely.peer().url().unwrap().to_owned()],
        ..Options::default()
    })
    .await
    .unwrap();
    within("bind at the first link", bind).await.unwrap();
    assert!(lonely.is_listening());
    assert_eq!(
        next_event(&mut events, "listening").await,
        SocketEvent::Listening
    );

    // A receiver blocked in recv_from is released by close.
    let mut buf = [0u8; 8];
    let (closed, recv) = tokio::join!(lonely.close(), lonely.recv_from(&mut buf));
    closed.unwrap();
    assert!(matches!(recv, Err(SocketError::Closed)));
    assert_eq!(next_event(&mut events, "close").await, SocketEvent::Close);
    assert!(matches!(lonely.address(), Err(SocketError::Closed)));
    assert!(matches!(
        lonely.send_to(b"x", (joiner.id(), 1)).await,
        Err(SocketError::Closed)
    ));
    assert!(matches!(lonely.close().await, Err(SocketError::Closed)));
    assert!(matches!(lonely.bind(1).await, Err(SocketError::Closed)));
    joiner.destroy().await;
}

/// The socket's own options are checked.
#[tokio::test]
async fn socket_options_are_validated() {
    let zero = SocketOptions {
        recv_queue_datagrams: 0,
        ..SocketOptions::default()
    };
    assert!(matches!(
        Socket::new(zero).await,
        Err(SocketError::InvalidOptions(_))
    ));
    let tiny = SocketOptions {
        recv_queue_bytes: 1000,
        ..SocketOptions::default()
    };
    assert!(matches!(
        Socket::new(tiny).await,
        Err(SocketError::InvalidOptions(_))
    ));
}

/// The echo example's service and client, in process: the client reaches the service
/// through a relay peer and gets its datagram back.
#[tokio::test]
async fn echo_example_answers_through_a_relay() {
    let relay = hub().await;
    let service = Socket::new(joining(&relay)).await.unwrap();
    within("service", service.bind(7)).await.unwrap();
    let client = Socket::new(joining(&relay)).await.unwrap();
    within("client", client.bind(0)).await.unwrap();
    let service_id: PeerId = service.peer().id();

    let service = std::sync::Arc::new(service);
    let serving = tokio::spawn({
        let service = std::sync::Arc::clone(&service);
        async move { echo::serve(&service).await }
    });
    let message: Vec<u8> = (0..=255).rev().collect();
    let (reply, from, _rtt) = echo::ping(&client, service_id, 7, &message, WAIT)
        .await
        .unwrap();
    assert_eq!(reply, message);
    assert_eq!((from.id(), from.port), (service_id, 7));
    let (reply, _, _) = echo::ping(&client, service_id, 7, b"again", WAIT)
        .await
        .unwrap();
    assert_eq!(reply, b"again");

    // Closing the service's socket ends `serve`, which reports what it echoed.
    service.close().await.unwrap();
    assert_eq!(within("serve to end", serving).await.unwrap(), 2);
    client.close().await.unwrap();
    relay.destroy().await;
}

/// The socket's receiving task holds no relay handle: dropping the socket stops its peer,
/// and the peer it was linked to sees the link go.
#[tokio::test]
async fn dropping_the_socket_stops_its_peer() {
    let hub = hub().await;
    let mut hub_events = hub.events();
    let socket = Socket::new(joining(&hub)).await.unwrap();
    within("listening", socket.bind(1)).await.unwrap();
    let id = socket.peer().id();
    drop(socket);
    within("the link to close", async {
        loop {
            match hub_events.next().await {
                Some(peer_relay::Event::PeerRemoved(gone)) if gone == id => break,
                Some(_) => {}
                None => panic!("hub events ended"),
            }
        }
    })
    .await;
    hub.destroy().await;
}
