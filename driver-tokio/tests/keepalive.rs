//! Keepalive over real loopback WebSockets: the node pings links it has heard nothing from
//! (`Config::keepalive_interval`) and closes those that stay silent
//! (`keepalive_timeout` more) as `unresponsive`. A peer that still reads answers pings by
//! itself (tungstenite, the JS `ws` package and browsers all pong), so an idle link stays;
//! a peer that stopped (frozen, or gone without a close) is dropped, and so is its socket.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peer_relay::{Config, Event, Events, Options, PeerId, PeerRelay, Stats};
use peer_relay_core::CloseReason;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{WAIT, next_event, stats_until};

const INTERVAL: Duration = Duration::from_millis(400);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Keepalive in fractions of a second, and no discovery traffic: links are silent unless a
/// test makes them talk.
fn quick() -> Config {
    Config {
        keepalive_interval: Some(INTERVAL),
        keepalive_timeout: INTERVAL,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn start(port: Option<u16>, bootstrap: Vec<String>) -> PeerRelay {
    PeerRelay::new(Options {
        port,
        bootstrap,
        webrtc: false,
        config: quick(),
        ..Options::default()
    })
    .await
    .expect("node starts")
}

async fn stats(node: &PeerRelay) -> Stats {
    node.stats().await.expect("node is up")
}

async fn linked(events: &mut Events, peer: PeerId) {
    next_event(events, "the link", |e| {
        matches!(e, Event::Peer(id, _) if *id == peer).then_some(())
    })
    .await;
}

/// A raw WebSocket peer linked to `hub` under `id`: it read the hub's id handshake and sent
/// its own. It answers pings only while someone reads from it.
async fn raw_peer(hub: &PeerRelay, id: PeerId) -> Ws {
    let url = hub.url().expect("hub runs a server");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("raw peer connects");
    let first = tokio::time::timeout(WAIT, ws.next()).await.expect("hub id");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
    ws.send(Message::text(format!("\"{id}\"")))
        .await
        .expect("id sent");
    stats_until(hub, "the raw peer linked", |s| s.sizes.links >= 1).await;
    ws
}

fn unresponsive(stats: &Stats) -> u64 {
    stats.node.closed.get(CloseReason::Unresponsive)
}

#[tokio::test]
async fn idle_linked_nodes_stay_linked_through_pings() {
    let hub = start(Some(0), vec![]).await;
    let mut hub_events = hub.events();
    let client = start(None, vec![hub.url().unwrap().to_owned()]).await;
    linked(&mut hub_events, client.id()).await;
    // Ten intervals without a frame.
    tokio::time::sleep(INTERVAL * 10).await;
    let (h, c) = (stats(&hub).await, stats(&client).await);
    for s in [&h, &c] {
        assert_eq!(s.sizes.links, 1, "still linked: {s:#?}");
        assert_eq!(unresponsive(s), 0);
    }
    assert!(
        h.node.keepalive_probes + c.node.keepalive_probes >= 4,
        "the idle link was probed: {} + {}",
        h.node.keepalive_probes,
        c.node.keepalive_probes
    );
    client.destroy().await;
    hub.destroy().await;
}

#[tokio::test]
async fn a_quiet_peer_that_reads_stays_linked() {
    let hub = start(Some(0), vec![]).await;
    let mut ws = raw_peer(&hub, PeerId::from_bytes([0x42; 20])).await;
    // It sends nothing at all, but reads: tungstenite answers the hub's pings.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    tokio::time::sleep(INTERVAL * 10).await;
    let s = stats(&hub).await;
    assert_eq!(s.sizes.links, 1, "{s:#?}");
    assert_eq!(unresponsive(&s), 0);
    assert!(s.node.keepalive_probes >= 2, "{s:#?}");
    reader.abort();
    hub.destroy().await;
}

#[tokio::test]
async fn a_peer_that_stops_is_closed_as_unresponsive() {
    let hub = start(Some(0), vec![]).await;
    let mut ws = raw_peer(&hub, PeerId::from_bytes([0x43; 20])).await;
    // Not read from: its pongs never go out.
    let s = stats_until(&hub, "closed as unresponsive", |s| unresponsive(s) == 1).await;
    assert_eq!(s.sizes.links, 0);
    assert!(s.node.keepalive_probes >= 1);
    // What the hub sent is still in the socket: pings, then its close frame with the reason.
    let close = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| (f.code, f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("the hub closed the socket");
    assert_eq!(close, Some((CloseCode::Away, "unresponsive".to_owned())));
    hub.destroy().await;
}

#[tokio::test]
async fn a_closed_link_whose_peer_stopped_reading_releases_its_socket() {
    let hub = start(Some(0), vec![]).await;
    let mut hub_events = hub.events();
    let sender = start(None, vec![hub.url().unwrap().to_owned()]).await;
    linked(&mut hub_events, sender.id()).await;
    let idle_tasks = stats(&hub).await.driver.io_tasks;
    let stuck = PeerId::from_bytes([0x44; 20]);
    let ws = raw_peer(&hub, stuck).await;
    assert_eq!(stats(&hub).await.driver.io_tasks, idle_tasks + 1);
    // Megabytes for the stuck peer, relayed by the hub: its socket buffers fill and the
    // hub's writer for that connection blocks, as it would on a frozen peer.
    let chunk = json!("x".repeat(60_000));
    for _ in 0..300 {
        sender.send(stuck, &chunk).await.expect("send");
    }
    stats_until(&hub, "the stuck peer closed", |s| unresponsive(s) == 1).await;
    // The writer never finishes, yet the connection's task ends: the socket is dropped.
    stats_until(&hub, "the connection's task ended", |s| {
        s.driver.io_tasks == idle_tasks
    })
    .await;
    drop(ws);
    sender.destroy().await;
    hub.destroy().await;
}
