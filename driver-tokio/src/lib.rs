//! # peer-relay
//!
//! A peer-to-peer message relay over WebSockets and WebRTC data channels, wire-compatible with the JavaScript
//! [`peer-relay`](https://www.npmjs.com/package/peer-relay) 0.0.2: every peer has a random
//! 160-bit id, keeps a few direct links, and relays messages hop by hop towards the peer
//! XOR-closest to the target. Send to any id; you need no direct link to it.
//!
//! This crate runs the sans-IO protocol core ([`peer_relay_core`]) on tokio with
//! tokio-tungstenite. A [`PeerRelay`] handle gives the original's API; events arrive as an
//! async stream ([`Events`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), peer_relay::Error> {
//! use peer_relay::{Event, Options, PeerRelay};
//!
//! // A first node with a server on a free port, and a second one joining it.
//! let hub = PeerRelay::new(Options { port: Some(0), ..Options::default() }).await?;
//! let url = hub.url().expect("it runs a server").to_owned();
//! let joiner = PeerRelay::new(Options { bootstrap: vec![url], ..Options::default() }).await?;
//!
//! joiner.send(hub.id(), &"hello").await?; // queued until the first link is up
//! let mut events = hub.events();
//! while let Some(event) = events.next().await {
//!     if let Event::Message { from, data, .. } = event {
//!         assert_eq!((from, data), (joiner.id(), serde_json::json!("hello")));
//!         break;
//!     }
//! }
//! joiner.destroy().await;
//! hub.destroy().await;
//! # Ok(())
//! # }
//! ```
//!
//! Architecture: one task owns the [`Node`](peer_relay_core::Node). The listener, WebSocket
//! upgrades, dials and one task per connection report to it through a channel; it feeds each
//! report to the node, carries out every output at once (frames into per-connection queues,
//! dials, closes, events) and sleeps until the node's next timeout. No protocol decision is
//! made outside the node.

mod connection;
mod driver;
mod error;
mod event;
mod options;
mod relay;
mod session;
mod socket;

pub use error::Error;
pub use event::{Event, Events};
pub use options::{IceServer, Options, WebRtcOptions};
pub use relay::PeerRelay;
pub use socket::{
    Datagram, Decoded, FAMILY, Malformed, Payload, RemoteInfo, SOCKET_EVENT_CAPACITY, Socket,
    SocketError, SocketEvent, SocketEvents, SocketOptions, SocketStats, ToPeerAddr, decode_payload,
    encode_payload,
};

// The reasons key the node's counters (`NodeStats::closed`, `NodeStats::dropped`).
pub use peer_relay_core::{
    CloseReason, Config, ConnectFailure, DropReason, Forwarding, LinkSelection, PeerId, Routing,
    Sizes, Stats as NodeStats, Transport,
};

/// What the driver counts, beside the node's own [`NodeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStats {
    /// Frames dropped because a connection's send queue was full.
    pub send_queue_drops: u64,
    /// Messages dropped because an [`Events`] stream had `event_queue_bytes` of unread
    /// messages.
    pub events_dropped: u64,
    /// Messages `send` handed over that the node then refused (no link yet and its pre-link
    /// queue full).
    pub sends_refused: u64,
    /// Inbound connections refused (connection limit) or dropped before their upgrade.
    pub inbound_refused: u64,
    /// WebSocket dials that failed or timed out.
    pub dials_failed: u64,
    /// WebRTC sessions that ended before their data channel opened (timeout, ICE failure).
    pub webrtc_failed: u64,
    /// Remote WebRTC signals ignored: malformed, unexpected (e.g. a renegotiation), refused
    /// by the stack, or past `WebRtcOptions::max_remote_candidates`.
    pub webrtc_signals_ignored: u64,
    /// WebRTC sessions that ran without mDNS because its socket could not be opened.
    pub webrtc_without_mdns: u64,
    /// Connections closed because the peer sent a WebSocket message over
    /// `Config::max_frame_bytes` + 4 KiB. Refused from its header, never buffered: the core,
    /// which counts smaller oversize frames (`oversize`), never sees it.
    pub oversize_closed: u64,
    /// WebRTC links whose nominated candidate pair, when the channel opened, used a remote
    /// mDNS (`.local`) candidate we resolved (as Chromium sends them), rather than a
    /// peer-reflexive one learned from the peer's checks.
    pub webrtc_mdns_links: u64,
    /// Connections open, being dialled, or WebRTC sessions, now.
    pub connections: usize,
    /// IO tasks running now: connections (including those the node closed and that are
    /// still saying goodbye, at most 2.5 s), dials, WebRTC sessions and refusals.
    pub io_tasks: usize,
}

/// A snapshot of every counter: see [`PeerRelay::stats`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// The node's counters (frames, messages, drops and closes by reason).
    pub node: NodeStats,
    /// The node's bounded structures.
    pub sizes: Sizes,
    /// The driver's counters.
    pub driver: DriverStats,
}
