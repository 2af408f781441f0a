//! Hostile peers over real loopback WebSockets. A running node (the hub) relays between two
//! honest peers that can only reach each other through it; an attacker is a raw
//! tokio-tungstenite client speaking the wire protocol badly on purpose. For every attack the
//! hub stays up, the outcome shows in its counters (`PeerRelay::stats`), and an honest
//! exchange through the hub still works afterwards. The nonce flood's heap growth is measured
//! with this test binary's counting allocator and checked against the bound that follows from
//! the hub's config.

mod common;

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cap::Cap;
use futures_util::{SinkExt, StreamExt};
use peer_relay::{Config, Event, Events, LinkSelection, Options, PeerId, PeerRelay, Stats};
use peer_relay_core::{CloseReason, DropReason};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{WAIT, next_event, stats_until};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// The tests run one at a time: the flood test measures the whole process's heap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The hub with its default limits (unless a test narrows one), and two honest peers without
/// servers: they can only link to the hub, so everything between them is relayed by it.
struct Net {
    hub: PeerRelay,
    a: PeerRelay,
    b: PeerRelay,
    a_events: Events,
    b_events: Events,
    exchanges: u32,
}

fn honest() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn hub(config: Config) -> PeerRelay {
    PeerRelay::new(Options {
        port: Some(0),
        config,
        ..Options::default()
    })
    .await
    .expect("hub starts")
}

async fn join_honest_pair(hub: PeerRelay) -> Net {
    let url = hub.url().expect("hub runs a server").to_owned();
    let join = || Options {
        bootstrap: vec![url.clone()],
        config: honest(),
        ..Options::default()
    };
    let a = PeerRelay::new(join()).await.expect("a starts");
    let b = PeerRelay::new(join()).await.expect("b starts");
    let (mut a_events, mut b_events) = (a.events(), b.events());
    for events in [&mut a_events, &mut b_events] {
        next_event(events, "a link to the hub", |e| {
            matches!(e, Event::Peer(id, _) if *id == hub.id()).then_some(())
        })
        .await;
    }
    Net {
        hub,
        a,
        b,
        a_events,
        b_events,
        exchanges: 0,
    }
}

async fn net(config: Config) -> Net {
    join_honest_pair(hub(config).await).await
}

impl Net {
    /// A message each way between the honest peers, relayed by the hub.
    async fn honest_exchange(&mut self) {
        self.exchanges += 1;
        let tag = json!({ "honest": self.exchanges });
        let relayed = self.hub.stats().await.expect("hub is up").node.relayed;
        self.a.send(self.b.id(), &tag).await.expect("a sends");
        self.b.send(self.a.id(), &tag).await.expect("b sends");
        let (a, b) = (self.a.id(), self.b.id());
        for (events, from) in [(&mut self.b_events, a), (&mut self.a_events, b)] {
            next_event(events, &format!("honest message {tag}"), |e| match e {
                // Two peers on the path: the sender and the hub.
                Event::Message {
                    from: f,
                    data,
                    path_len: 2,
                } if *f == from && *data == tag => Some(()),
                _ => None,
            })
            .await;
        }
        let after = self.hub.stats().await.expect("hub is up").node.relayed;
        assert!(after >= relayed + 2, "the hub relayed the exchange");
        assert_eq!(
            self.a.stats().await.unwrap().sizes.links,
            1,
            "a stays linked to the hub only"
        );
    }

    async fn destroy(self) {
        for node in [self.a, self.b, self.hub] {
            node.destroy().await;
        }
    }
}

/// A tiny deterministic generator for ids and payloads (no need for real randomness).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn id(&mut self) -> PeerId {
        let mut bytes = [0u8; 20];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        PeerId::from_bytes(bytes)
    }
}

/// A raw WebSocket client to `hub`, past the hub's id handshake (which it checks).
async fn raw_client(hub: &PeerRelay) -> Ws {
    let url = hub.url().expect("hub runs a server");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("attacker connects");
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the hub sends its id handshake")
        .expect("the connection is open")
        .expect("readable");
    assert_eq!(
        first,
        Message::text(hub.id().to_buffer_json()),
        "the hub's first frame is its id"
    );
    ws
}

/// A raw client that sent `frame` as its id handshake.
async fn claiming(hub: &PeerRelay, frame: &str) -> Ws {
    let mut ws = raw_client(hub).await;
    ws.send(Message::text(frame)).await.expect("handshake sent");
    ws
}

/// A raw client linked to the hub under `id`.
async fn attacker(hub: &PeerRelay, id: PeerId) -> Ws {
    claiming(hub, &format!("\"{id}\"")).await
}

/// Reads until the hub closes the connection; its close frame, if it sent one.
async fn closed_by_hub(ws: &mut Ws) -> Option<(CloseCode, String)> {
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (f.code, f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await;
    ended.expect("the hub closes the connection")
}

fn envelope(to: &str, from: &str, path: &str, nonce: &str, data: &str) -> String {
    format!(r#"{{"to":{to},"from":{from},"path":{path},"nonce":{nonce},"data":{data}}}"#)
}

const USER: &str = r#"{"type":"user","data":"x"}"#;

/// One bad frame per fresh attacker link: each is dropped and counted under its reason,
/// nothing is relayed, and honest traffic flows through the hub after each.
#[tokio::test]
async fn every_bad_frame_is_counted_and_honest_traffic_continues() {
    let _serial = SERIAL.lock().await;
    let mut net = net(Config::default()).await;
    net.honest_exchange().await;
    let mut rng = Rng(7);
    let b = format!("\"{}\"", net.b.id());
    let p = format!("[{b}]");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Message, DropReason)> = vec![
        (
            "non-JSON text",
            Message::text("this is not JSON {"),
            DropReason::Malformed,
        ),
        (
            "JSON that is no envelope",
            Message::text("[1,2,3]"),
            DropReason::Malformed,
        ),
        (
            "100,000 levels of nesting",
            Message::text(deep.clone()),
            DropReason::TooDeep,
        ),
        (
            "a binary frame",
            Message::binary(vec![1, 2, 3]),
            DropReason::Binary,
        ),
        (
            "an id of the wrong length",
            Message::text(envelope("\"abcd\"", &b, &p, "\"1\"", USER)),
            DropReason::BadId,
        ),
        (
            "a non-hex id",
            Message::text(envelope(
                &format!("\"{}\"", "zz".repeat(20)),
                &b,
                &p,
                "\"1\"",
                USER,
            )),
            DropReason::BadId,
        ),
        (
            "a number as id",
            Message::text(envelope("12345", &b, &p, "\"1\"", USER)),
            DropReason::BadId,
        ),
        (
            "null as id",
            Message::text(envelope("null", &b, &p, "\"1\"", USER)),
            DropReason::BadId,
        ),
    ];
    for (what, frame, reason) in cases {
        let before = net.hub.stats().await.unwrap();
        let mut ws = attacker(&net.hub, rng.id()).await;
        ws.send(frame).await.expect("frame sent");
        let after = stats_until(&net.hub, what, |s| {
            s.node.dropped.get(reason) > before.node.dropped.get(reason)
        })
        .await;
        assert_eq!(
            after.node.dropped.get(reason),
            before.node.dropped.get(reason) + 1,
            "{what}: counted once as {reason}"
        );
        assert_eq!(after.node.relayed, before.node.relayed, "{what}: relayed");
        net.honest_exchange().await;
        drop(ws);
    }

    // Envelopes sized like real ones but with a 10,000-entry path, and with the deep value
    // as the user data.
    let me = rng.id();
    let mut ws = attacker(&net.hub, me).await;
    let hop = format!("\"{me}\"");
    let long_path = format!("[{}]", vec![hop.as_str(); 10_000].join(","));
    let deep_data = format!(r#"{{"type":"user","data":{deep}}}"#);
    let one_hop = format!("[{hop}]");
    let before = net.hub.stats().await.unwrap();
    for frame in [
        envelope(&b, &hop, &long_path, "\"2\"", USER),
        envelope(&b, &hop, &one_hop, "\"3\"", &deep_data),
    ] {
        ws.send(Message::text(frame)).await.expect("frame sent");
    }
    let after = stats_until(&net.hub, "long path and deep data", |s| {
        s.node.dropped.get(DropReason::TooDeep) > before.node.dropped.get(DropReason::TooDeep)
    })
    .await;
    assert_eq!(
        after.node.dropped.get(DropReason::BadPath),
        before.node.dropped.get(DropReason::BadPath) + 1
    );
    assert_eq!(after.node.relayed, before.node.relayed);
    net.honest_exchange().await;

    // A 5 MB message is refused from its header by the WebSocket layer (it is over
    // max_frame_bytes + 4 KiB) and the connection closed: counted by the driver.
    let before = net.hub.stats().await.unwrap();
    let mut ws = attacker(&net.hub, rng.id()).await;
    // The hub may reset the connection while the rest is still being written.
    let _ = ws.send(Message::text("x".repeat(5_000_000))).await;
    let after = stats_until(&net.hub, "5 MB frame", |s| {
        s.driver.oversize_closed > before.driver.oversize_closed
    })
    .await;
    assert_eq!(
        after.driver.oversize_closed,
        before.driver.oversize_closed + 1
    );
    stats_until(&net.hub, "the 5 MB sender's link is gone", |s| {
        s.sizes.links == 3
    })
    .await;
    net.honest_exchange().await;
    net.destroy().await;
}

/// A link that keeps sending bad frames is closed past `max_violations`, with the reason in
/// the close frame and in the counters.
#[tokio::test]
async fn a_link_that_keeps_breaking_rules_is_closed_with_a_reason() {
    let _serial = SERIAL.lock().await;
    let mut net = net(Config::default()).await;
    let mut ws = attacker(&net.hub, Rng(1).id()).await;
    let max = u64::from(Config::default().max_violations);
    for _ in 0..=max {
        ws.send(Message::text("garbage")).await.expect("sent");
    }
    let close = closed_by_hub(&mut ws).await;
    assert_eq!(
        close,
        Some((CloseCode::Policy, "protocol-violations".to_owned()))
    );
    let stats = stats_until(&net.hub, "violations counted", |s| {
        s.node.closed.get(CloseReason::ProtocolViolations) == 1
    })
    .await;
    assert_eq!(stats.node.dropped.get(DropReason::Malformed), max + 1);
    net.honest_exchange().await;
    net.destroy().await;
}

/// Handshakes that claim no valid id, or the hub's own, close the link at once; a link that
/// never sends its id is closed after `id_handshake_timeout`.
#[tokio::test]
async fn bad_or_missing_id_handshakes_close_the_link() {
    let _serial = SERIAL.lock().await;
    let mut net = net(Config {
        // Short, so the test does not idle; the behaviour is the same at 10 s.
        id_handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let bad = ["12345", "null", "\"abcd\"", "not json", "{}"];
    for frame in bad {
        let mut ws = claiming(&net.hub, frame).await;
        assert_eq!(
            closed_by_hub(&mut ws).await,
            Some((CloseCode::Policy, "invalid-handshake".to_owned())),
            "handshake {frame}"
        );
    }
    let own = net.hub.id();
    let mut ws = claiming(&net.hub, &format!("\"{own}\"")).await;
    assert_eq!(
        closed_by_hub(&mut ws).await,
        Some((CloseCode::Normal, "self-connection".to_owned()))
    );
    let mut silent = raw_client(&net.hub).await;
    assert_eq!(
        closed_by_hub(&mut silent).await,
        Some((CloseCode::Policy, "handshake-timeout".to_owned()))
    );
    let stats = stats_until(&net.hub, "closes counted", |s| {
        s.node.closed.get(CloseReason::HandshakeTimeout) == 1
    })
    .await;
    assert_eq!(
        stats.node.closed.get(CloseReason::InvalidHandshake),
        bad.len() as u64
    );
    assert_eq!(stats.node.closed.get(CloseReason::SelfConnection), 1);
    assert_eq!(stats.sizes.connections, 2, "only the honest links remain");
    net.honest_exchange().await;
    net.destroy().await;
}

/// Several links claiming one id. As in the original, of two links to one peer the side with
/// the smaller id closes the second: the hub closes it (`duplicate`) when the claimed id is
/// larger than its own, and otherwise keeps it as the one spare the other side is expected to
/// close; a third is closed either way. A link claiming an honest peer's id gets none of its
/// messages.
#[tokio::test]
async fn the_same_id_on_two_links() {
    let _serial = SERIAL.lock().await;
    let mut net = net(Config::default()).await;
    let duplicates = |s: &Stats| s.node.closed.get(CloseReason::Duplicate);

    let larger = PeerId::from_bytes([0xff; 20]);
    let first = attacker(&net.hub, larger).await;
    stats_until(&net.hub, "first link", |s| s.sizes.links == 3).await;
    let mut second = attacker(&net.hub, larger).await;
    assert_eq!(
        closed_by_hub(&mut second).await,
        Some((CloseCode::Normal, "duplicate".to_owned()))
    );
    let stats = stats_until(&net.hub, "duplicate counted", |s| duplicates(s) == 1).await;
    assert_eq!((stats.sizes.links, stats.sizes.connections), (3, 3));
    net.honest_exchange().await;
    drop((first, second));
    stats_until(&net.hub, "attackers gone", |s| s.sizes.connections == 2).await;

    let smaller = PeerId::from_bytes([0; 20]);
    let first = attacker(&net.hub, smaller).await;
    stats_until(&net.hub, "first link", |s| s.sizes.links == 3).await;
    let second = attacker(&net.hub, smaller).await;
    let stats = stats_until(&net.hub, "the spare", |s| s.sizes.connections == 4).await;
    assert_eq!(
        (stats.sizes.links, duplicates(&stats)),
        (3, 1),
        "kept as the spare"
    );
    let mut third = attacker(&net.hub, smaller).await;
    assert_eq!(
        closed_by_hub(&mut third).await,
        Some((CloseCode::Normal, "duplicate".to_owned()))
    );
    let stats = stats_until(&net.hub, "third closed", |s| duplicates(s) == 2).await;
    assert_eq!((stats.sizes.links, stats.sizes.connections), (3, 4));
    net.honest_exchange().await;
    drop((first, second, third));
    stats_until(&net.hub, "attackers gone", |s| s.sizes.connections == 2).await;

    // A link claiming an honest peer's id does not take that peer's traffic.
    let mut impostor = attacker(&net.hub, net.a.id()).await;
    stats_until(&net.hub, "the impostor's connection", |s| {
        s.sizes.connections == 3
    })
    .await;
    net.honest_exchange().await;
    net.honest_exchange().await;
    let stolen = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(Ok(message)) = impostor.next().await {
            if message.to_text().is_ok_and(|t| t.contains("honest")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_ne!(stolen, Ok(true), "the impostor got a's messages");
    net.destroy().await;
}

/// 50,000 envelopes with unique nonces to random ids, relayed by the hub to a sink link:
/// every one is taken (none is held back), the hub's tables stay within their config bounds,
/// and the heap it keeps afterwards is within the bound that follows from the config.
#[tokio::test]
async fn a_nonce_flood_grows_memory_by_a_bounded_amount() {
    let _serial = SERIAL.lock().await;
    const FLOOD: u64 = 50_000;
    let config = Config {
        seen_nonces_max: 8_192,
        ..Config::default()
    };
    let hub = hub(config.clone()).await;
    let mut rng = Rng(11);
    // The sink is linked to the hub and reads (and drops) whatever it is sent.
    let sink_id = rng.id();
    let mut sink = attacker(&hub, sink_id).await;
    let sunk = Arc::new(AtomicU64::new(0));
    let sink_task = tokio::spawn({
        let sunk = Arc::clone(&sunk);
        async move {
            while let Some(Ok(message)) = sink.next().await {
                sunk.fetch_add(u64::from(message.is_text()), Ordering::Relaxed);
            }
        }
    });
    let me = rng.id();
    let mut ws = attacker(&hub, me).await;
    stats_until(&hub, "both raw links up", |s| s.sizes.links == 2).await;
    let before_stats = hub.stats().await.unwrap();
    let before = ALLOCATOR.allocated();
    let mut peak = 0usize;
    let path = format!("[\"{me}\"]");
    for n in 0..FLOOD {
        // Every message claims a new sender (so the hub learns candidates) and every other one
        // is a request (so it remembers the way back: preferred paths).
        let to = rng.id();
        let from = format!("\"{}\"", rng.id());
        let data = if n % 2 == 0 {
            USER.to_owned()
        } else {
            format!(r#"{{"type":"findPeers","data":"{}"}}"#, rng.id())
        };
        let frame = envelope(
            &format!("\"{to}\""),
            &from,
            &path,
            &format!("\"{n}\""),
            &data,
        );
        ws.feed(Message::text(frame)).await.expect("flood frame");
        if n % 256 == 255 {
            ws.flush().await.expect("flood flushed");
            peak = peak.max(ALLOCATOR.allocated().saturating_sub(before));
        }
    }
    ws.flush().await.expect("flood flushed");
    let after_stats = stats_until(&hub, "the whole flood taken", |s| {
        s.node.frames_in >= before_stats.node.frames_in + FLOOD
    })
    .await;
    let node = &after_stats.node;
    let drops = node.dropped.total() - before_stats.node.dropped.total();
    let relayed = node.relayed - before_stats.node.relayed;
    assert_eq!(
        relayed + drops,
        FLOOD,
        "every flood message is accounted for"
    );
    assert!(
        relayed > FLOOD * 9 / 10,
        "the hub relayed the flood: {relayed}"
    );
    let sizes = after_stats.sizes;
    assert!(sizes.seen_nonces <= config.seen_nonces_max, "{sizes:?}");
    assert!(
        sizes.preferred_paths <= config.preferred_paths_max,
        "{sizes:?}"
    );
    assert!(
        sizes.candidates <= config.k * 161,
        "candidates within k per bucket: {sizes:?}"
    );
    assert!(
        sizes.preferred_paths > 0 && sizes.candidates > 2,
        "{sizes:?}"
    );
    // Let the hub's send queue to the sink drain, then measure what it keeps. A slow sink
    // (a loaded machine) overflows that queue: what it dropped is counted, not delivered.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queue_drops = hub.stats().await.unwrap().driver.send_queue_drops
            - before_stats.driver.send_queue_drops;
        if sunk.load(Ordering::Relaxed) + queue_drops >= relayed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink got the flood: {} received, {queue_drops} dropped at the hub's queue, \
             {relayed} relayed",
            sunk.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retained = ALLOCATOR.allocated().saturating_sub(before);
    peak = peak.max(retained);
    let bound = retained_bound(&config);
    eprintln!(
        "nonce flood of {FLOOD}: heap retained {} KiB (bound {} KiB), peak sampled {} KiB; \
         sizes after: {sizes:?}",
        retained / 1024,
        bound / 1024,
        peak / 1024
    );
    assert!(
        retained <= bound,
        "retained {retained} B over the bound {bound} B"
    );
    // In flight the driver may also hold its read budget and one send queue.
    let in_flight = (16 << 20) + 2 * (config.max_frame_bytes + 4096) + (4 << 20);
    assert!(peak <= bound + in_flight, "peak {peak} B");

    // The hub still works for honest peers.
    drop(ws);
    let mut net = join_honest_pair(hub).await;
    net.honest_exchange().await;
    net.destroy().await;
    sink_task.await.expect("sink task");
}

/// What a flood can make a node keep, from its config (see driver-tokio/README.md, "Hostile
/// peers"): per remembered nonce (a 64-bit key in one of two hash-set generations, at worst
/// load) 24 bytes, per preferred path (two ids in a hash map) 96 bytes, per learned candidate
/// (`k` per bucket, 161 buckets) 128 bytes, plus 256 KiB for the connection buffers that
/// tungstenite and the driver size to the traffic they saw.
fn retained_bound(config: &Config) -> usize {
    config.seen_nonces_max * 24
        + config.preferred_paths_max * 96
        + config.k * 161 * 128
        + (256 << 10)
}
