//! The sans-IO peer-relay node.
//!
//! Inputs go in with the current time ([`Node::handle_input`] and the command methods);
//! outputs come out of [`Node::poll_output`] until it returns `None`; [`Node::poll_timeout`]
//! says when to call again with [`Input::Timeout`]. The node never reads a clock, the OS RNG
//! or the network, so the same seed and the same inputs give the same outputs, byte for byte.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::compact::{CompactMap, CompactSet};
use crate::config::{Config, Forwarding, LinkSelection, Routing};
use crate::conn::{ConnId, ConnState, Connection, Link, Pending, Role, Transport, heard_stamp};
use crate::discovery::{Candidates, LOOKUP_STEPS, Lookup, Lookups, random_id_in_bucket};
use crate::error::Error;
use crate::id::{Distance, ID_BITS, PeerId};
use crate::router::{PreferredPaths, Queued, SeenNonces, greedy_hops, spread_hops};
use crate::stats::{CloseReason, DropReason, Stats};
use crate::table::{Insert, KBucket};
use crate::time::Time;
use crate::wire::{
    self, DecodeError, DecodeLimits, Envelope, Nonce, OutgoingPayload, Payload, PayloadKind,
    decode_id_handshake, encode_id_handshake, write_envelope,
};

/// Longest url we dial or advertise.
const MAX_URL_LEN: usize = 2048;
/// Nonces are drawn below 10^15, like the original's `Math.floor(1e15 * Math.random())`.
const NONCE_RANGE: u64 = 1_000_000_000_000_000;
/// Room for the envelope around a payload: ids, nonce and a full path.
const ENVELOPE_OVERHEAD: usize = 128;

/// A refresh's second question goes to a link in one of our deepest buckets: at most this
/// many buckets shallower than our nearest link.
const DEEP_REFRESH_BUCKETS: usize = 3;

/// Whether `url` is a `ws://` or `wss://` url we are willing to dial or advertise.
pub fn is_ws_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"));
    url.len() <= MAX_URL_LEN
        && rest.is_some_and(|r| !r.is_empty())
        && url.bytes().all(|b| b.is_ascii_graphic())
}

/// Something the driver tells the node.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A connection the node asked for opened: a WebSocket dial succeeded, or a WebRTC data
    /// channel opened.
    Opened {
        /// The connection.
        conn: ConnId,
    },
    /// A text frame (or data-channel string) arrived.
    Frame {
        /// The connection.
        conn: ConnId,
        /// The frame's bytes.
        frame: &'a [u8],
    },
    /// A binary frame arrived (the protocol is text only; it is counted and dropped).
    BinaryFrame {
        /// The connection.
        conn: ConnId,
    },
    /// A connection closed, or a dial or WebRTC session failed.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// The transport gave up on an open connection without a close from the peer: the path
    /// is gone (ICE failed its consent checks). Handled as [`Input::Closed`]; a lost link
    /// is also a sign that the network may have split, so it starts reach checks
    /// (`Config::reach_check_interval`), as a link closed as unresponsive does.
    Failed {
        /// The connection.
        conn: ConnId,
    },
    /// The driver's WebRTC stack produced a local signal (offer, answer or candidate) in
    /// simple-peer's JSON format, to be relayed to the session's peer.
    LocalSignal {
        /// The WebRTC connection.
        conn: ConnId,
        /// The signal JSON.
        signal: &'a str,
    },
    /// The transport showed the connection alive without a frame: a WebSocket pong (or a
    /// ping from the peer) arrived, or, after [`Output::Probe`] on a WebRTC session, its ICE
    /// connection still holds.
    Alive {
        /// The connection.
        conn: ConnId,
    },
    /// The time from [`Node::poll_timeout`] was reached.
    Timeout,
}

/// Something the node asks the driver to do, or tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a text frame on a connection.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The frame (one JSON value).
        frame: String,
    },
    /// Open a WebSocket to `url`; report [`Input::Opened`] or [`Input::Closed`] for `conn`.
    DialWebSocket {
        /// The handle for the new connection.
        conn: ConnId,
        /// Where to dial.
        url: String,
    },
    /// Start a WebRTC session with `peer`. As initiator, create the data channel and the
    /// offer; as responder, wait for the remote offer. Feed local signals back with
    /// [`Input::LocalSignal`], and report [`Input::Opened`] when the data channel opens.
    StartWebRtc {
        /// The handle for the session.
        conn: ConnId,
        /// The remote peer.
        peer: PeerId,
        /// Whether we create the offer.
        initiator: bool,
    },
    /// Hand a signal from the remote peer to the WebRTC session.
    RemoteSignal {
        /// The session.
        conn: ConnId,
        /// The signal JSON, as the remote sent it.
        signal: String,
    },
    /// Check that a link is alive: we have heard nothing from it for
    /// `Config::keepalive_interval`. Send a WebSocket ping, and report [`Input::Alive`]
    /// when the pong arrives; for a WebRTC session, report it at once if its ICE connection
    /// holds (ICE checks its path on its own). Nothing to report otherwise: if the link
    /// stays silent the node closes it as `Unresponsive`.
    Probe {
        /// The connection.
        conn: ConnId,
    },
    /// Close a connection. The node has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// An application event.
    Event(Event),
}

/// Why a connect attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectFailure {
    /// No link came up within `pending_connect_timeout` (or `webrtc_timeout`).
    Timeout,
    /// The peer's answer offers no transport we can use.
    NoTransport,
    /// The WebSocket dial to the peer's url failed.
    DialFailed,
    /// The WebRTC session failed and there was no url to fall back to.
    WebRtcFailed,
    /// `max_connections` was reached.
    ConnectionLimit,
}

/// Events for the application.
#[derive(Debug, Clone)]
pub enum Event {
    /// A direct link to `peer` came up.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The link's transport.
        transport: Transport,
    },
    /// The direct link to `peer` went down.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A `user` message addressed to us arrived.
    Message {
        /// The sender.
        from: PeerId,
        /// The data, as raw JSON exactly as sent.
        data: Box<RawValue>,
        /// Peers the message passed through, the sender included (1 = direct).
        path_len: usize,
    },
    /// A connect attempt to `peer` failed.
    ConnectFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: ConnectFailure,
        /// Whether the application asked for it (`connect`) rather than discovery.
        explicit: bool,
    },
    /// Dialling a bootstrap url failed; it is retried after `retry_in`.
    BootstrapFailed {
        /// The url.
        url: String,
        /// Consecutive failures.
        attempt: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        use Event::*;
        match (self, other) {
            (
                PeerConnected {
                    peer: a,
                    transport: x,
                },
                PeerConnected {
                    peer: b,
                    transport: y,
                },
            ) => a == b && x == y,
            (PeerDisconnected { peer: a }, PeerDisconnected { peer: b }) => a == b,
            (
                Message {
                    from: a,
                    data: x,
                    path_len: m,
                },
                Message {
                    from: b,
                    data: y,
                    path_len: n,
                },
            ) => a == b && x.get() == y.get() && m == n,
            (
                ConnectFailed {
                    peer: a,
                    reason: x,
                    explicit: e,
                },
                ConnectFailed {
                    peer: b,
                    reason: y,
                    explicit: f,
                },
            ) => a == b && x == y && e == f,
            (
                BootstrapFailed {
                    url: a,
                    attempt: x,
                    retry_in: m,
                },
                BootstrapFailed {
                    url: b,
                    attempt: y,
                    retry_in: n,
                },
            ) => a == b && x == y && m == n,
            _ => false,
        }
    }
}

impl Eq for Event {}

/// A set of XOR-distance bucket indices (0..=160) in three words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct BucketSet([u64; 3]);

impl BucketSet {
    fn insert(&mut self, bucket: usize) {
        self.0[bucket / 64] |= 1 << (bucket % 64);
    }

    fn remove(&mut self, bucket: usize) {
        self.0[bucket / 64] &= !(1 << (bucket % 64));
    }

    fn contains(&self, bucket: usize) -> bool {
        self.0[bucket / 64] & (1 << (bucket % 64)) != 0
    }
}

/// Yields ids nearest to `to` first, one linear scan per item: no work for the items never
/// asked for, and no allocation.
struct NearestFirst<I> {
    ids: I,
    to: PeerId,
    /// Distance of the last id yielded; distances to distinct ids are distinct.
    after: Option<Distance>,
}

impl<'a, I: Iterator<Item = &'a PeerId> + Clone> Iterator for NearestFirst<I> {
    type Item = PeerId;

    fn next(&mut self) -> Option<PeerId> {
        let mut best: Option<(Distance, PeerId)> = None;
        for id in self.ids.clone() {
            let d = id.distance(&self.to);
            if self.after.is_some_and(|after| d <= after) {
                continue;
            }
            if best.is_none_or(|(b, _)| d < b) {
                best = Some((d, *id));
            }
        }
        let (d, id) = best?;
        self.after = Some(d);
        Some(id)
    }
}

/// Timers, ordered for deterministic firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
enum Timer {
    Handshake(ConnId),
    Pending(PeerId),
    Retire(ConnId),
    Bootstrap(usize),
    Refresh,
    /// `Config::join_hold` is over.
    JoinHoldEnds,
    /// Time to probe silent links and close unresponsive ones.
    Keepalive,
    /// Time to check that our bootstrap servers are still reachable.
    ReachCheck,
}

/// Most bootstrap urls whatever `Config::max_bootstrap_urls` says: connections name theirs
/// by a `u32` index.
const BOOTSTRAP_URLS_MAX: usize = u32::MAX as usize;

/// Output queue capacity kept once drained: room for the outputs of a typical input.
const OUTPUT_ROOM: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
enum BootState {
    /// Dialling, or linked over, this connection.
    Active(ConnId),
    /// Waiting to dial again.
    Waiting(Time),
    /// Reached; re-dialled only if the node loses every link.
    Idle,
    /// The url leads to ourselves; never dialled again.
    Disabled,
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Bootstrap {
    url: String,
    state: BootState,
    failures: u32,
    /// The id of the server at the url, once a link over it came up.
    server: Option<PeerId>,
    /// A reach check asked the server for peers and has not had its answer.
    asked: bool,
    /// The current dial is a reach check's: if it fails, the url goes back to idle.
    check_dial: bool,
}

/// Sizes of every bounded structure, for tests, fuzzing and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Connections in any state.
    pub connections: usize,
    /// Established links.
    pub links: usize,
    /// Links in the routing table (original strategy).
    pub table: usize,
    /// Candidate ids.
    pub candidates: usize,
    /// Peers whose connect backoff is remembered apart from the candidates.
    pub backoffs: usize,
    /// Connect attempts in flight.
    pub pending: usize,
    /// Remembered nonces.
    pub seen_nonces: usize,
    /// Remembered preferred paths.
    pub preferred_paths: usize,
    /// Messages waiting for a first link.
    pub queued: usize,
    /// Bucket lookups in progress.
    pub lookups: usize,
    /// Undrained outputs.
    pub outputs: usize,
    /// Armed timers.
    pub timers: usize,
}

/// A peer-relay node: the whole protocol as a deterministic state machine.
///
/// ```
/// use peer_relay_core::{Config, Input, Node, Output, Time};
///
/// // Two nodes, wired together by hand: `a` accepts a connection that `b` dialled.
/// let now = Time::ZERO;
/// let mut a = Node::new(Config::default(), [1; 32], now).unwrap();
/// let mut b = Node::new(Config::default(), [2; 32], now).unwrap();
/// let on_a = a.accept(now).unwrap();
/// b.bootstrap(now, "ws://a.example:8000").unwrap();
/// let Some(Output::DialWebSocket { conn: on_b, .. }) = b.poll_output() else { panic!() };
/// b.handle_input(now, Input::Opened { conn: on_b });
///
/// // Carry frames both ways until both are quiet.
/// loop {
///     let mut moved = false;
///     while let Some(out) = a.poll_output() {
///         if let Output::Transmit { frame, .. } = out {
///             b.handle_input(now, Input::Frame { conn: on_b, frame: frame.as_bytes() });
///             moved = true;
///         }
///     }
///     while let Some(out) = b.poll_output() {
///         if let Output::Transmit { frame, .. } = out {
///             a.handle_input(now, Input::Frame { conn: on_a, frame: frame.as_bytes() });
///             moved = true;
///         }
///     }
///     if !moved {
///         break;
///     }
/// }
/// assert!(a.is_linked(&b.id()) && b.is_linked(&a.id()));
///
/// // A message from b to a.
/// b.send(now, a.id(), &serde_json::json!({"hello": "world"})).unwrap();
/// let Some(Output::Transmit { frame, .. }) = b.poll_output() else { panic!() };
/// a.handle_input(now, Input::Frame { conn: on_a, frame: frame.as_bytes() });
/// let message = std::iter::from_fn(|| a.poll_output()).find_map(|out| match out {
///     Output::Event(peer_relay_core::Event::Message { data, .. }) => Some(data),
///     _ => None,
/// });
/// assert_eq!(message.unwrap().get(), r#"{"hello":"world"}"#);
/// ```
///
/// With the `snapshot` feature a node is `Serialize` and `Deserialize`: its whole state,
/// config included, so a driver can save it and carry on later exactly where it stopped
/// (the simulator's snapshots). A node serializes only with its outputs drained, and a
/// restored node trusts its bytes as it trusts its own memory: restore only what a node of
/// this build saved.
#[derive(Debug)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Node {
    /// Shared when the driver passes one `Arc` to many nodes: a simulator's peers then hold
    /// one copy of the 344-byte config, not one each (a restored node holds its own until
    /// [`Node::share_config`]).
    #[cfg_attr(feature = "snapshot", serde(with = "snapshot::shared_config"))]
    config: Arc<Config>,
    limits: DecodeLimits,
    id: PeerId,
    rng: Xoshiro256PlusPlus,
    now: Time,
    shut_down: bool,
    /// A [`Timer::Keepalive`] is armed (only while the node has links).
    keepalive_armed: bool,
    /// Reach checks in progress: the armed [`Timer::ReachCheck`] and the interval after it.
    reach_check: Option<(Time, Duration)>,
    next_conn: ConnId,
    /// Connections and links in sorted vectors: within the default budget (a few dozen
    /// entries) a B-tree's half-empty nodes cost twice the memory, and these are a good part
    /// of an idle node (see [`crate::compact`]). A hub under `Config::original` (unbounded)
    /// pays O(n) per insert.
    conns: CompactMap<ConnId, Connection>,
    links: CompactMap<PeerId, Link>,
    /// Connections in [`ConnState::Retiring`], by peer: still good for messages to that
    /// very peer (at most `max_connections`).
    retiring: Vec<(PeerId, ConnId)>,
    /// XOR-distance buckets holding at least one link.
    link_buckets: BucketSet,
    /// The original's routing table; holds routable links under [`Routing::TableOnly`].
    table: KBucket<ConnId>,
    candidates: Candidates,
    lookups: Lookups,
    pending: CompactMap<PeerId, Pending>,
    seen: SeenNonces,
    preferred: PreferredPaths,
    queue: VecDeque<Queued>,
    bootstrap: Vec<Bootstrap>,
    /// Until when incoming WebSockets are refused while we have no link (`Config::join_hold`).
    join_hold_until: Time,
    timers: CompactSet<(Time, Timer)>,
    refresh_at: Option<Time>,
    #[cfg_attr(feature = "snapshot", serde(with = "snapshot::drained"))]
    outputs: VecDeque<Output>,
    stats: Stats,
}

/// How a node's fields that are not plain data are saved.
#[cfg(feature = "snapshot")]
mod snapshot {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Config, Output};

    /// The config itself; restored into an `Arc` of its own.
    pub mod shared_config {
        use super::*;

        pub fn serialize<S: Serializer>(config: &Arc<Config>, s: S) -> Result<S::Ok, S::Error> {
            config.as_ref().serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Config>, D::Error> {
            Config::deserialize(d).map(Arc::new)
        }
    }

    /// Nothing: outputs are the driver's to take before it saves the node. Saving one with
    /// outputs pending is an error rather than a silent loss.
    pub mod drained {
        use super::*;
        use serde::ser::Error;

        pub fn serialize<S: Serializer>(
            outputs: &VecDeque<Output>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            if !outputs.is_empty() {
                return Err(S::Error::custom(format_args!(
                    "a node with {} outputs not yet polled cannot be saved",
                    outputs.len()
                )));
            }
            s.serialize_unit()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<Output>, D::Error> {
            <()>::deserialize(d)?;
            Ok(VecDeque::new())
        }
    }
}

impl Node {
    /// A node with its id and every random choice drawn from `seed`. `config` is a
    /// [`Config`], or an `Arc<Config>` shared by many nodes.
    pub fn new(config: impl Into<Arc<Config>>, seed: [u8; 32], now: Time) -> Result<Node, Error> {
        let config = config.into();
        config.validate()?;
        let mut rng = Xoshiro256PlusPlus::from_seed(seed);
        let id = PeerId::random(&mut rng);
        let seen = SeenNonces::new(
            config.seen_nonces_max,
            config.seen_nonce_ttl,
            rng.next_u64(),
        );
        let preferred = PreferredPaths::new(
            config.preferred_paths_max,
            config.preferred_path_ttl,
            rng.next_u64(),
        );
        let evict_stale = config.link_selection != LinkSelection::NearestToSelf;
        let mut node = Node {
            limits: config.decode_limits(),
            id,
            rng,
            now,
            shut_down: false,
            keepalive_armed: false,
            reach_check: None,
            next_conn: ConnId::FIRST,
            conns: CompactMap::new(),
            links: CompactMap::new(),
            retiring: Vec::new(),
            link_buckets: BucketSet::default(),
            table: KBucket::new(id, config.k),
            candidates: Candidates::new(
                id,
                config.candidate_k,
                evict_stale,
                config.connect_backoffs_max,
            ),
            lookups: Lookups::new(config.max_lookups),
            pending: CompactMap::new(),
            seen,
            preferred,
            queue: VecDeque::new(),
            bootstrap: Vec::new(),
            join_hold_until: Time::ZERO,
            timers: CompactSet::new(),
            refresh_at: None,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        node.schedule_refresh();
        Ok(node)
    }

    /// Shares `config` with other nodes in place of this node's own copy, if the two are
    /// equal (a restored node holds a copy of its own); true if it did.
    #[cfg(feature = "snapshot")]
    pub fn share_config(&mut self, config: &Arc<Config>) -> bool {
        let equal = *self.config == **config;
        if equal {
            self.config = Arc::clone(config);
        }
        equal
    }

    /// Like [`Node::new`], with the 32-byte seed expanded from a `u64`.
    pub fn with_seed(config: impl Into<Arc<Config>>, seed: u64, now: Time) -> Result<Node, Error> {
        let mut expanded = [0u8; 32];
        Xoshiro256PlusPlus::seed_from_u64(seed).fill_bytes(&mut expanded);
        Node::new(config, expanded, now)
    }

    /// Our id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sizes of every bounded structure.
    pub fn sizes(&self) -> Sizes {
        Sizes {
            connections: self.conns.len(),
            links: self.links.len(),
            table: self.table.len(),
            candidates: self.candidates.len(),
            backoffs: self.candidates.backoffs(),
            pending: self.pending.len(),
            seen_nonces: self.seen.len(),
            preferred_paths: self.preferred.len(),
            queued: self.queue.len(),
            lookups: self.lookups.len(),
            outputs: self.outputs.len(),
            timers: self.timers.len(),
        }
    }

    /// Whether `peer` is directly linked.
    pub fn is_linked(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Established links, ordered by peer id.
    pub fn links(&self) -> impl Iterator<Item = (&PeerId, &Link)> {
        self.links.iter()
    }

    /// Known candidate ids (peers we could link to), bucket by bucket.
    pub fn candidates(&self) -> impl Iterator<Item = &PeerId> {
        self.candidates.table().iter().map(|e| &e.id)
    }

    /// Whether [`Node::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// The next output, or `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        // A join or a lookup burst queues dozens of outputs; most inputs queue one or two.
        // Give the burst's room back once drained, so an idle node does not keep it.
        if output.is_some() && self.outputs.is_empty() && self.outputs.capacity() > OUTPUT_ROOM {
            self.outputs.shrink_to(OUTPUT_ROOM);
        }
        output
    }

    /// When to feed [`Input::Timeout`] next, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|&(at, _)| at)
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Feeds one input. Problems caused by peers are counted in [`Node::stats`], never
    /// returned.
    pub fn handle_input(&mut self, now: Time, input: Input<'_>) {
        self.advance(now);
        if self.shut_down {
            return;
        }
        match input {
            Input::Opened { conn } => self.on_opened(conn),
            Input::Frame { conn, frame } => self.on_frame(conn, frame),
            Input::BinaryFrame { conn } => {
                if self.conns.contains_key(&conn) {
                    self.stats.frames_in += 1;
                    self.drop_frame(conn, DropReason::Binary);
                }
            }
            Input::Closed { conn } => self.on_closed(conn, false),
            Input::Failed { conn } => self.on_closed(conn, true),
            Input::LocalSignal { conn, signal } => self.on_local_signal(conn, signal),
            Input::Alive { conn } => {
                if let Some(Connection {
                    state: ConnState::Established { heard, .. },
                    ..
                }) = self.conns.get_mut(&conn)
                {
                    *heard = heard_stamp(self.now);
                }
            }
            Input::Timeout => self.on_timeout(),
        }
    }

    /// Registers a WebSocket the driver accepted. Our id handshake is queued at once.
    /// Refused with [`Error::TooManyConnections`] past `max_connections`: close the socket.
    pub fn accept(&mut self, now: Time) -> Result<ConnId, Error> {
        self.advance(now);
        self.check_running()?;
        if self.conns.len() >= self.config.max_connections {
            self.stats.connections_refused += 1;
            return Err(Error::TooManyConnections);
        }
        if self.links.is_empty() && self.now < self.join_hold_until {
            self.stats.connections_refused += 1;
            return Err(Error::Joining);
        }
        let state = ConnState::Dialing { connect: None };
        let conn = self.new_conn(Transport::WebSocket, state, false, None);
        self.on_ws_open(conn, None);
        Ok(conn)
    }

    /// The driver reports `conn` gone; `lost`: its transport gave up on an open path.
    fn on_closed(&mut self, conn: ConnId, lost: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if lost && matches!(c.state, ConnState::Established { .. }) {
            self.stats.links_failed += 1;
            self.start_reach_checks();
        }
        self.forget_conn(conn, c, None);
    }

    fn advance(&mut self, now: Time) {
        // Time never runs backwards inside the node, whatever the driver passes.
        self.now = self.now.max(now);
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.shut_down {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    fn on_opened(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match &c.state {
            ConnState::Dialing { connect } => {
                let connect = *connect;
                self.on_ws_open(conn, connect);
            }
            ConnState::WebRtcConnecting { peer, .. } => {
                let peer = *peer;
                self.link_up(conn, peer);
            }
            ConnState::AwaitingId { .. }
            | ConnState::Established { .. }
            | ConnState::Retiring { .. } => {}
        }
    }

    fn on_ws_open(&mut self, conn: ConnId, connect: Option<PeerId>) {
        let deadline = self.now + self.config.id_handshake_timeout;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::AwaitingId { deadline, connect };
        }
        self.arm(deadline, Timer::Handshake(conn));
        self.transmit(conn, encode_id_handshake(&self.id));
    }

    fn on_frame(&mut self, conn: ConnId, frame: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let ConnState::Established { heard, .. } = &mut c.state {
            *heard = heard_stamp(self.now);
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += frame.len() as u64;
        match c.state {
            ConnState::AwaitingId { .. } => self.on_id_handshake(conn, frame),
            ConnState::Established { peer, .. } => {
                if self.listens_on(conn, &peer) {
                    self.on_envelope(conn, peer, frame);
                } else {
                    self.stats.dropped.add(DropReason::NotListening);
                }
            }
            ConnState::Retiring { peer, .. } => self.on_envelope(conn, peer, frame),
            ConnState::Dialing { .. } | ConnState::WebRtcConnecting { .. } => {
                self.drop_frame(conn, DropReason::NotOpen);
            }
        }
    }

    fn listens_on(&self, conn: ConnId, peer: &PeerId) -> bool {
        match self.config.routing {
            Routing::AllLinks => true,
            // The original only listens to channels in its routing table.
            Routing::TableOnly => self
                .links
                .get(peer)
                .is_some_and(|l| l.routable && l.conn == conn),
        }
    }

    fn on_id_handshake(&mut self, conn: ConnId, frame: &[u8]) {
        match decode_id_handshake(frame, &self.limits) {
            Ok(peer) if peer == self.id => self.close(conn, CloseReason::SelfConnection),
            Ok(peer) => self.link_up(conn, peer),
            Err(err) => {
                self.stats.dropped.add(err.into());
                self.close(conn, CloseReason::InvalidHandshake);
            }
        }
    }

    /// Counts a bad frame against its connection, closing it past `max_violations`.
    fn drop_frame(&mut self, conn: ConnId, reason: DropReason) {
        self.stats.dropped.add(reason);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.violations += 1;
        if c.violations > self.config.max_violations {
            self.close(conn, CloseReason::ProtocolViolations);
        }
    }

    fn on_envelope(&mut self, conn: ConnId, link_peer: PeerId, frame: &[u8]) {
        let env = match Envelope::decode(frame, &self.limits) {
            Ok(env) => env,
            // A bad payload is its origin's fault, not this link's: no violation.
            Err(DecodeError::MalformedPayload) => {
                return self.stats.dropped.add(DropReason::MalformedPayload);
            }
            Err(err) => return self.drop_frame(conn, err.into()),
        };
        if !self.seen.insert(self.now, &env.nonce) {
            self.stats.duplicates += 1;
            return;
        }
        if env.from == self.id {
            self.stats.dropped.add(DropReason::FromSelf);
            return;
        }
        // Remember the way back to the sender, for replies. The original does it for every
        // message; greedy forwarding does it only for requests, since following entries left
        // by unrelated traffic can lead away from the target and into loops. Direct
        // neighbours need no entry: they are routed to directly.
        let record = match self.config.forwarding {
            Forwarding::Spread => true,
            Forwarding::Greedy => env.payload.kind().is_request(),
        };
        if record && env.from != link_peer {
            self.preferred.insert(self.now, env.from, link_peer);
        }
        self.learn_from_traffic(&env);
        if env.to == self.id {
            if let Payload::FoundPeers { ids, .. } = &env.payload {
                self.note_introductions(ids, link_peer);
            }
            self.receive(&env);
        } else if env.path.contains(&self.id) {
            // Passing it on would put our id in the path twice.
            self.stats.dropped.add(DropReason::Looped);
        } else {
            self.relay(&env);
        }
    }

    /// The peers a discovery reply lists are known to its sender, which the reply reached us
    /// from through `link_peer`: until a better way is known, offers to them go that way.
    /// A peer that joined a moment ago is linked to little but its bootstrap, so greedy
    /// routing alone rarely finds it.
    fn note_introductions(&mut self, ids: &[PeerId], link_peer: PeerId) {
        if self.config.forwarding != Forwarding::Greedy {
            return;
        }
        for id in ids {
            if *id != self.id
                && !self.links.contains_key(id)
                && self.preferred.get(self.now, id).is_none()
            {
                self.preferred.insert(self.now, *id, link_peer);
            }
        }
    }

    fn receive(&mut self, env: &Envelope<'_>) {
        self.stats.received += 1;
        let from = env.from;
        match &env.payload {
            Payload::User(data) => {
                self.stats.delivered += 1;
                self.emit(Event::Message {
                    from,
                    data: (*data).to_owned(),
                    path_len: env.path.len(),
                });
            }
            Payload::FindPeers(target) => self.on_find_peers(from, *target),
            Payload::FoundPeers { ids, .. } => self.on_found_peers(from, ids),
            Payload::HandshakeOffer => self.on_offer(from),
            Payload::HandshakeAnswer { ws, wrtc } => self.on_answer(from, ws.as_deref(), *wrtc),
            Payload::Signal(signal) => self.on_signal(from, signal),
            // Forward compatibility: types we do not know are ignored.
            Payload::Unknown => {}
        }
    }

    fn relay(&mut self, env: &Envelope<'_>) {
        if env.path.len() >= self.config.max_hops {
            return self.stats.dropped.add(DropReason::HopLimit);
        }
        // The payload was decoded with the envelope: one of the wrong shape (which would crash
        // a JS peer) never gets this far.
        let kind = env.payload.kind();
        if self.forward(
            &env.to,
            &env.from,
            &env.path,
            &env.nonce,
            kind,
            env.payload_json(),
        ) {
            self.stats.relayed += 1;
        }
    }

    /// Sends a message on to its next hops, appending our id to the path. False (and counted)
    /// when there is nowhere to send it.
    fn forward(
        &mut self,
        to: &PeerId,
        from: &PeerId,
        path: &[PeerId],
        nonce: &Nonce,
        kind: PayloadKind,
        payload: &str,
    ) -> bool {
        if !self.retiring.is_empty() && !self.links.contains_key(to) {
            // A peer we just shed is still reachable directly until the close: a seed that
            // sheds joiners fast must still pass on their first offers and signals.
            if let Some(&(_, conn)) = self.retiring.iter().find(|(peer, _)| peer == to) {
                let mut frame = String::new();
                write_envelope(&mut frame, to, from, path, Some(&self.id), nonce, payload);
                self.transmit(conn, frame);
                return true;
            }
        }
        let hops = self.next_hops(to, path, kind);
        if hops.is_empty() {
            self.stats.dropped.add(DropReason::NoRoute);
            return false;
        }
        let mut frame = String::new();
        write_envelope(&mut frame, to, from, path, Some(&self.id), nonce, payload);
        let last = hops.len() - 1;
        for (i, hop) in hops.iter().enumerate() {
            let Some(conn) = self.links.get(hop).map(|l| l.conn) else {
                continue;
            };
            let frame = if i == last {
                std::mem::take(&mut frame)
            } else {
                frame.clone()
            };
            self.transmit(conn, frame);
        }
        true
    }

    fn next_hops(&self, to: &PeerId, path: &[PeerId], kind: PayloadKind) -> SmallVec<[PeerId; 4]> {
        // A linked target gets the message directly, whatever else the strategy would do.
        if self.links.get(to).is_some_and(|l| l.routable) {
            return smallvec::smallvec![*to];
        }
        let on_path = |p: &PeerId| path.contains(p);
        let concurrency = self.config.concurrency;
        let preferred_hop = match self.config.forwarding {
            Forwarding::Spread => self.preferred.get(self.now, to),
            Forwarding::Greedy if kind.is_reply() || kind == PayloadKind::HandshakeOffer => {
                self.preferred.get(self.now, to)
            }
            Forwarding::Greedy => None,
        };
        match self.config.routing {
            Routing::TableOnly => {
                let closest = self.table.closest_iter(to).map(|e| e.id);
                // The original sends towards the table entry closest to the preferred hop.
                let preferred = preferred_hop
                    .and_then(|hop| self.table.closest_iter(&hop).next().map(|e| e.id));
                self.choose_hops(to, closest, preferred, on_path, concurrency)
            }
            Routing::AllLinks => {
                // Every link is routable here. Usually only the nearest one or two are
                // looked at: select lazily rather than sorting every link per message.
                let closest = NearestFirst {
                    ids: self.links.keys(),
                    to: *to,
                    after: None,
                };
                let preferred = preferred_hop.filter(|hop| self.links.contains_key(hop));
                self.choose_hops(to, closest, preferred, on_path, concurrency)
            }
        }
    }

    fn choose_hops(
        &self,
        to: &PeerId,
        closest: impl Iterator<Item = PeerId>,
        preferred: Option<PeerId>,
        on_path: impl Fn(&PeerId) -> bool,
        concurrency: usize,
    ) -> SmallVec<[PeerId; 4]> {
        match self.config.forwarding {
            Forwarding::Spread => spread_hops(to, closest, preferred, on_path, concurrency),
            Forwarding::Greedy => greedy_hops(
                self.id.distance(to),
                to,
                closest,
                preferred,
                on_path,
                concurrency,
            ),
        }
    }

    // ---- protocol messages for us -------------------------------------------------------

    fn on_find_peers(&mut self, asker: PeerId, target: PeerId) {
        let n = self.config.found_peers_reply;
        let ids = match self.config.link_selection {
            LinkSelection::NearestToSelf => self.candidates.nearest_reply(&asker, &target, n),
            LinkSelection::BucketDiverse { .. } => {
                // As in Kademlia, whoever asks is a live peer worth knowing: peers near each
                // other ask each other, and learn of one another this way too.
                self.candidates.saw(asker);
                let links = &self.links;
                self.candidates
                    .diverse_reply(&asker, &target, n, |id| links.contains_key(id))
            }
        };
        // Our own reply never fails: there is a link (the request came over one).
        let _ = self.originate(asker, &OutgoingPayload::FoundPeers(&ids));
    }

    fn on_found_peers(&mut self, sender: PeerId, ids: &[PeerId]) {
        for entry in &mut self.bootstrap {
            if entry.server == Some(sender) {
                entry.asked = false;
            }
        }
        for id in ids {
            // Replies may list the asker and the responder themselves.
            if *id != self.id && *id != sender {
                self.candidates.saw(*id);
            }
        }
        self.candidates.saw(sender);
        self.populate();
        self.continue_lookup(sender);
    }

    fn on_offer(&mut self, from: PeerId) {
        if self.links.contains_key(&from) {
            return;
        }
        match self.pending.get(&from) {
            // Both sides offered: as in the original, only the side with the larger id answers,
            // so the smaller id initiates. A connect already under way is not restarted.
            Some(p) if p.session.is_some() || from > self.id => return,
            Some(_) => {}
            None if self.pending.len() >= self.config.max_pending_connects => {
                return self.stats.dropped.add(DropReason::PendingFull);
            }
            None => {}
        }
        let explicit = self.pending.get(&from).is_some_and(|p| p.explicit);
        if !explicit && self.declines_offer_from(&from) {
            self.stats.offers_declined += 1;
            let decline = OutgoingPayload::HandshakeAnswer {
                ws: None,
                wrtc: false,
            };
            let _ = self.originate(from, &decline);
            return;
        }
        let deadline = self.now + self.config.pending_connect_timeout;
        self.set_pending(
            from,
            Pending {
                deadline,
                role: Role::Answered,
                explicit,
                session: None,
            },
        );
        let ws = self.config.advertised_url.clone();
        let answer = OutgoingPayload::HandshakeAnswer {
            ws: ws.as_deref(),
            wrtc: self.config.webrtc,
        };
        // The offer came over a link, so this cannot queue.
        let _ = self.originate(from, &answer);
    }

    /// Whether a full node turns down an offer: at its link budget, a link to `from` would
    /// be shed at once or make another link go, and one the offerer gets elsewhere costs
    /// the network less. Only a link that would be redundant for us is declined.
    fn declines_offer_from(&self, from: &PeerId) -> bool {
        let LinkSelection::BucketDiverse { near } = self.config.link_selection else {
            return false;
        };
        if !self.config.decline_redundant_offers || self.links.len() < self.config.max_links {
            return false;
        }
        if !self.link_buckets.contains(self.id.common_prefix_len(from)) {
            return false;
        }
        let distance = self.id.distance(from);
        let nearer = self
            .links
            .keys()
            .filter(|p| self.id.distance(p) < distance)
            .count();
        nearer >= near
    }

    fn on_answer(&mut self, from: PeerId, ws: Option<&str>, wrtc: bool) {
        if self.links.contains_key(&from) {
            return;
        }
        if self.pending.get(&from).is_none_or(|p| p.session.is_some()) {
            return self.stats.dropped.add(DropReason::UnsolicitedAnswer);
        }
        let url = ws.filter(|u| is_ws_url(u)).map(str::to_owned);
        if wrtc && self.config.webrtc {
            self.start_webrtc(from, true, url);
        } else if let Some(url) = url {
            self.dial_peer(from, url);
        } else {
            self.connect_failed(from, ConnectFailure::NoTransport);
        }
    }

    fn on_signal(&mut self, from: PeerId, signal: &RawValue) {
        if let Some(conn) = self.webrtc_conn_for(&from) {
            // Includes late candidates for a link that is already up: the session takes them
            // and no second session is created.
            self.outputs.push_back(Output::RemoteSignal {
                conn,
                signal: signal.get().to_owned(),
            });
            return;
        }
        if !self.config.webrtc {
            return self.stats.dropped.add(DropReason::UnsolicitedSignal);
        }
        // As the original, an SDP offer from a peer we have no session with starts a responder
        // session (within the pending-connect bound). Other signals (candidates, answers) only
        // reach a session we agreed to by answering the peer's handshake-offer.
        let is_offer = wire::is_sdp_offer(signal.get());
        let acceptable = match self.pending.get(&from) {
            Some(p) => p.session.is_none() && (p.role == Role::Answered || is_offer),
            None => {
                is_offer
                    && !self.links.contains_key(&from)
                    && self.pending.len() < self.config.max_pending_connects
            }
        };
        if !acceptable {
            return self.stats.dropped.add(DropReason::UnsolicitedSignal);
        }
        if !self.pending.contains_key(&from) {
            let deadline = self.now + self.config.webrtc_timeout;
            let pending = Pending {
                deadline,
                role: Role::Answered,
                explicit: false,
                session: None,
            };
            self.set_pending(from, pending);
        }
        if let Some(conn) = self.start_webrtc(from, false, None) {
            self.outputs.push_back(Output::RemoteSignal {
                conn,
                signal: signal.get().to_owned(),
            });
        }
    }

    /// The WebRTC connection (setting up or established) we have with `peer`.
    fn webrtc_conn_for(&self, peer: &PeerId) -> Option<ConnId> {
        let is_webrtc = |conn: &ConnId| {
            self.conns
                .get(conn)
                .is_some_and(|c| c.transport == Transport::WebRtc)
        };
        if let Some(conn) = self
            .pending
            .get(peer)
            .and_then(|p| p.session)
            .filter(is_webrtc)
        {
            return Some(conn);
        }
        let link = self.links.get(peer)?;
        [Some(link.conn), link.spare]
            .into_iter()
            .flatten()
            .find(is_webrtc)
    }

    fn on_local_signal(&mut self, conn: ConnId, signal: &str) {
        let peer = match self.conns.get(&conn) {
            Some(Connection {
                transport: Transport::WebRtc,
                state:
                    ConnState::WebRtcConnecting { peer, .. } | ConnState::Established { peer, .. },
                ..
            }) => *peer,
            _ => return,
        };
        // The driver's stack is trusted, but a signal must be a JSON object to be relayed.
        let is_object =
            serde_json::from_str::<&RawValue>(signal).is_ok_and(|raw| raw.get().starts_with('{'));
        if !is_object {
            return;
        }
        let _ = self.originate(peer, &OutgoingPayload::Signal(signal));
    }

    // ---- links ----------------------------------------------------------------------------

    fn link_up(&mut self, conn: ConnId, peer: PeerId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let ConnState::AwaitingId { deadline, .. } = c.state {
            self.timers.remove(&(deadline, Timer::Handshake(conn)));
        }
        let (transport, outbound, bootstrap) = (c.transport, c.outbound, c.bootstrap);
        c.state = ConnState::Established {
            peer,
            heard: heard_stamp(self.now),
        };
        self.arm_keepalive();
        self.clear_pending(&peer);
        if let Some(index) = bootstrap {
            let entry = &mut self.bootstrap[index as usize];
            entry.server = Some(peer);
            entry.check_dial = false;
        }
        self.candidates.saw(peer);
        self.candidates.connected(&peer);
        if let Some(link) = self.links.get_mut(&peer) {
            // A second link to the same peer. As in the original, the side with the smaller
            // id closes it; the other side keeps it as a spare until then.
            if peer > self.id || link.spare.is_some() {
                // Retired rather than closed: the other side may be sending on it already.
                self.retire_conn(conn, peer, CloseReason::Duplicate);
            } else {
                link.spare = Some(conn);
            }
            return;
        }
        let routable = match self.config.routing {
            Routing::AllLinks => true,
            Routing::TableOnly => self.table.insert(peer, conn) == Insert::Added,
        };
        let link = Link {
            conn,
            transport,
            since: self.now,
            routable,
            outbound,
            spare: None,
        };
        self.links.insert(peer, link);
        self.stats.links_opened += 1;
        let bucket = self.id.common_prefix_len(&peer);
        self.link_buckets.insert(bucket);
        self.lookups.bucket_covered(bucket);
        if routable {
            self.flush_queue();
        }
        let _ = self.originate(peer, &OutgoingPayload::FindPeers(self.id));
        if self.links.len() >= 2 {
            // In the network beyond a bootstrap link: bootstrap backoffs start over.
            for entry in &mut self.bootstrap {
                entry.failures = 0;
            }
        }
        self.emit(Event::PeerConnected { peer, transport });
        self.enforce_link_budget(peer);
    }

    /// Keeps links within `max_links` by shedding the least useful link.
    ///
    /// A link in a bucket (XOR-distance class) that holds other links is redundant for us.
    /// Whether it is for the other end we cannot know, but who asked for it is a good proxy:
    /// a peer asks for a link to cover a bucket it lacks, and the bucket index is the same
    /// from both ends, so links *we* asked for rarely matter to the other side, while links
    /// others asked for usually do. So: never shed a bucket's only link, nor one to the
    /// `near` peers nearest to us, nor the newcomer (someone just needed it); among the rest
    /// shed our own picks before inbound links, from the most crowded bucket, oldest first.
    fn enforce_link_budget(&mut self, newcomer: PeerId) {
        while self.links.len() > self.config.max_links {
            let victim = self.pick_link_to_shed(newcomer);
            self.retire_link(&victim);
        }
    }

    fn pick_link_to_shed(&self, newcomer: PeerId) -> PeerId {
        let mut per_bucket = [0u16; ID_BITS + 1];
        for peer in self.links.keys() {
            per_bucket[self.id.common_prefix_len(peer)] += 1;
        }
        let near = match self.config.link_selection {
            LinkSelection::BucketDiverse { near } => near,
            LinkSelection::NearestToSelf => self.config.target_links,
        };
        let mut by_distance: Vec<PeerId> = self.links.keys().copied().collect();
        by_distance.sort_unstable_by_key(|p| self.id.distance(p));
        let protected = &by_distance[..near.min(by_distance.len())];
        self.links
            .iter()
            .filter(|(peer, _)| **peer != newcomer && !protected.contains(peer))
            .map(|(peer, link)| {
                let crowd = per_bucket[self.id.common_prefix_len(peer)];
                // Smallest key is shed first.
                (
                    crowd <= 1,
                    !link.outbound,
                    u16::MAX - crowd,
                    link.since,
                    *peer,
                )
            })
            .min()
            .map_or(newcomer, |(.., peer)| peer)
    }

    /// Takes a shed link out of service now and closes it after `shed_grace` (see there).
    fn retire_link(&mut self, peer: &PeerId) {
        let grace = self.config.shed_grace;
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        if grace.is_zero() {
            return self.close_link(peer, CloseReason::LinkBudget);
        }
        let spare = link.spare.take();
        let conn = link.conn;
        if let Some(spare) = spare {
            self.close(spare, CloseReason::LinkBudget);
        }
        self.retire_conn(conn, *peer, CloseReason::LinkBudget);
        self.link_conn_gone(*peer, conn);
    }

    /// Stops sending on `conn` now and closes it with `reason` after `shed_grace`.
    fn retire_conn(&mut self, conn: ConnId, peer: PeerId, reason: CloseReason) {
        if self.config.shed_grace.is_zero() {
            return self.close(conn, reason);
        }
        let until = self.now + self.config.shed_grace;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Retiring {
                peer,
                reason,
                until,
            };
            self.retiring.push((peer, conn));
            self.arm(until, Timer::Retire(conn));
        }
    }

    /// Closes every connection of a link (the link goes down once, with one event).
    fn close_link(&mut self, peer: &PeerId, reason: CloseReason) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let spare = link.spare.take();
        let conn = link.conn;
        if let Some(spare) = spare {
            self.close(spare, reason);
        }
        self.close(conn, reason);
    }

    /// A connection of an established link ended.
    fn link_conn_gone(&mut self, peer: PeerId, conn: ConnId) {
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        if link.spare == Some(conn) {
            link.spare = None;
            return;
        }
        if link.conn != conn {
            return;
        }
        if let Some(spare) = link.spare.take() {
            link.conn = spare;
            if link.routable && self.config.routing == Routing::TableOnly {
                self.table.insert(peer, spare);
            }
            return;
        }
        let link = self.links.remove(&peer).unwrap_or_else(|| unreachable!());
        let bucket = self.id.common_prefix_len(&peer);
        if !self
            .links
            .keys()
            .any(|p| self.id.common_prefix_len(p) == bucket)
        {
            self.link_buckets.remove(bucket);
        }
        if link.routable && self.config.routing == Routing::TableOnly {
            self.table.remove(&peer);
        }
        match self.config.link_selection {
            // As the original: a closed link's peer is forgotten as a candidate too.
            LinkSelection::NearestToSelf => self.candidates.remove(&peer),
            // A budget close by the other side looks the same as a departure, and forgetting a
            // live neighbour costs more than remembering a dead one, which failed connects
            // age out.
            LinkSelection::BucketDiverse { .. } => {
                self.candidates
                    .link_closed(&peer, self.now, self.config.connect_retry_backoff)
            }
        }
        self.clear_pending(&peer);
        self.stats.links_closed += 1;
        self.emit(Event::PeerDisconnected { peer });
        if self.links.is_empty() {
            self.redial_bootstrap();
        }
        self.populate();
    }

    // ---- connecting -----------------------------------------------------------------------

    /// Fills links following the configured [`LinkSelection`].
    fn populate(&mut self) {
        if self.shut_down {
            return;
        }
        let now = self.now;
        match self.config.link_selection {
            LinkSelection::NearestToSelf => {
                let target = self.config.target_links;
                let picks: Vec<PeerId> = self.candidates.nearest_to_self(target).collect();
                for peer in picks {
                    if self.populate_count() >= target {
                        break;
                    }
                    if self.links.contains_key(&peer)
                        || self.pending.contains_key(&peer)
                        || !self.candidates.ready(&peer, now)
                    {
                        continue;
                    }
                    if self.start_connect(peer, false).is_err() {
                        break;
                    }
                }
            }
            LinkSelection::BucketDiverse { near } => {
                let mut covered = [false; ID_BITS + 1];
                for peer in self.links.keys().chain(self.pending.keys()) {
                    covered[self.id.common_prefix_len(peer)] = true;
                }
                let (links, pending, candidates) = (&self.links, &self.pending, &self.candidates);
                let taken = |p: &PeerId| links.contains_key(p) || pending.contains_key(p);
                let usable = |p: &PeerId| candidates.ready(p, now);
                // Coverage picks are what greedy routing needs: they go ahead even at the link
                // budget, which then sheds a redundant link instead.
                let coverage =
                    candidates.bucket_diverse(near, |b| covered[b], taken, usable, &mut self.rng);
                // Extra links, nearest first, only up to the target.
                let shortfall = self
                    .config
                    .target_links
                    .saturating_sub(self.links.len() + self.pending.len() + coverage.len());
                // Lazy: with no shortfall (most populates) no bucket is sorted at all.
                let extra: Vec<PeerId> = candidates
                    .nearest_to_self(self.config.max_links)
                    .filter(|p| !taken(p) && usable(p) && !coverage.contains(p))
                    .take(shortfall)
                    .collect();
                for peer in coverage.into_iter().chain(extra) {
                    if self.start_connect(peer, false).is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Links plus pending connects as the original counts them for populate.
    fn populate_count(&self) -> usize {
        let links = match self.config.routing {
            Routing::AllLinks => self.links.len(),
            Routing::TableOnly => self.table.len(),
        };
        links + self.pending.len()
    }

    fn start_connect(&mut self, peer: PeerId, explicit: bool) -> Result<(), Error> {
        if self.pending.len() >= self.config.max_pending_connects {
            return Err(Error::TooManyPending);
        }
        let deadline = self.now + self.config.pending_connect_timeout;
        self.set_pending(
            peer,
            Pending {
                deadline,
                role: Role::Offered,
                explicit,
                session: None,
            },
        );
        if let Err(err) = self.originate(peer, &OutgoingPayload::HandshakeOffer) {
            self.clear_pending(&peer);
            return Err(err);
        }
        Ok(())
    }

    fn set_pending(&mut self, peer: PeerId, pending: Pending) {
        self.clear_pending(&peer);
        self.arm(pending.deadline, Timer::Pending(peer));
        self.pending.insert(peer, pending);
    }

    fn clear_pending(&mut self, peer: &PeerId) -> Option<Pending> {
        let pending = self.pending.remove(peer)?;
        self.timers
            .remove(&(pending.deadline, Timer::Pending(*peer)));
        Some(pending)
    }

    /// Moves a pending connect's deadline and records its session.
    fn pending_session(&mut self, peer: PeerId, conn: ConnId, timeout: Duration) {
        if let Some(mut pending) = self.clear_pending(&peer) {
            pending.session = Some(conn);
            pending.deadline = self.now + timeout;
            self.set_pending(peer, pending);
        }
    }

    fn start_webrtc(
        &mut self,
        peer: PeerId,
        initiator: bool,
        fallback_ws: Option<String>,
    ) -> Option<ConnId> {
        if self.conns.len() >= self.config.max_connections {
            self.connect_failed(peer, ConnectFailure::ConnectionLimit);
            return None;
        }
        let state = ConnState::WebRtcConnecting {
            peer,
            fallback_ws: fallback_ws.map(Box::new),
        };
        let conn = self.new_conn(Transport::WebRtc, state, initiator, None);
        self.pending_session(peer, conn, self.config.webrtc_timeout);
        self.outputs.push_back(Output::StartWebRtc {
            conn,
            peer,
            initiator,
        });
        Some(conn)
    }

    fn dial_peer(&mut self, peer: PeerId, url: String) {
        if self.conns.len() >= self.config.max_connections {
            return self.connect_failed(peer, ConnectFailure::ConnectionLimit);
        }
        let state = ConnState::Dialing {
            connect: Some(peer),
        };
        let conn = self.new_conn(Transport::WebSocket, state, true, None);
        self.pending_session(peer, conn, self.config.pending_connect_timeout);
        self.outputs.push_back(Output::DialWebSocket { conn, url });
    }

    fn connect_failed(&mut self, peer: PeerId, reason: ConnectFailure) {
        let Some(pending) = self.clear_pending(&peer) else {
            return;
        };
        if pending.role == Role::Answered && reason == ConnectFailure::Timeout {
            // We only answered; the peer gave up on connecting to us. Nothing failed here.
            return;
        }
        self.stats.connects_failed += 1;
        if reason == ConnectFailure::NoTransport {
            // Most often a full node declining (see `decline_redundant_offers`): the peer is
            // alive, so no failure is counted (counted failures are remembered until the
            // backoff table turns over, and a growing network sees dozens of declines per
            // peer); it is left alone for twice the retry backoff.
            self.candidates
                .declined(&peer, self.now, self.config.connect_retry_backoff * 2);
        } else {
            self.candidates
                .connect_failed(&peer, self.now, self.config.connect_retry_backoff);
        }
        self.emit(Event::ConnectFailed {
            peer,
            reason,
            explicit: pending.explicit,
        });
        self.populate();
    }

    // ---- connections ----------------------------------------------------------------------

    fn new_conn(
        &mut self,
        transport: Transport,
        state: ConnState,
        outbound: bool,
        bootstrap: Option<u32>,
    ) -> ConnId {
        let conn = self.next_conn;
        self.next_conn = conn.next();
        let connection = Connection {
            transport,
            state,
            bootstrap,
            outbound,
            violations: 0,
        };
        self.conns.insert(conn, connection);
        conn
    }

    /// Closes a connection on our initiative.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.stats.closed.add(reason);
        self.outputs.push_back(Output::Close { conn, reason });
        self.forget_conn(conn, c, Some(reason));
    }

    /// Updates everything that depended on a connection that is gone.
    fn forget_conn(&mut self, conn: ConnId, c: Connection, reason: Option<CloseReason>) {
        if let ConnState::AwaitingId { deadline, .. } = c.state {
            self.timers.remove(&(deadline, Timer::Handshake(conn)));
        }
        if let ConnState::Retiring { until, .. } = c.state {
            self.timers.remove(&(until, Timer::Retire(conn)));
            self.retiring.retain(|(_, retiring)| *retiring != conn);
        }
        let reached = matches!(
            c.state,
            ConnState::Established { .. } | ConnState::Retiring { .. }
        );
        match &c.state {
            ConnState::Established { peer, .. } => self.link_conn_gone(*peer, conn),
            ConnState::WebRtcConnecting { peer, fallback_ws } => {
                let peer = *peer;
                match fallback_ws.as_deref() {
                    Some(url) if self.pending.contains_key(&peer) => {
                        self.dial_peer(peer, url.clone());
                    }
                    _ => self.connect_failed(peer, ConnectFailure::WebRtcFailed),
                }
            }
            ConnState::Dialing {
                connect: Some(peer),
            }
            | ConnState::AwaitingId {
                connect: Some(peer),
                ..
            } => {
                let peer = *peer;
                let timed_out = reason.is_some();
                let why = if timed_out {
                    ConnectFailure::Timeout
                } else {
                    ConnectFailure::DialFailed
                };
                if self
                    .pending
                    .get(&peer)
                    .is_some_and(|p| p.session == Some(conn))
                {
                    self.connect_failed(peer, why);
                }
            }
            _ => {}
        }
        if let Some(index) = c.bootstrap {
            self.bootstrap_conn_gone(index as usize, reached, reason);
        }
    }

    fn transmit(&mut self, conn: ConnId, frame: String) {
        self.stats.frames_out += 1;
        self.stats.bytes_out += frame.len() as u64;
        self.outputs.push_back(Output::Transmit { conn, frame });
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    // ---- originating ----------------------------------------------------------------------

    fn fresh_nonce(&mut self) -> Nonce {
        loop {
            let nonce = Nonce::from_u64(self.rng.next_u64() % NONCE_RANGE);
            if self.seen.insert(self.now, &nonce) {
                return nonce;
            }
        }
    }

    fn has_routable_link(&self) -> bool {
        match self.config.routing {
            Routing::AllLinks => !self.links.is_empty(),
            Routing::TableOnly => !self.table.is_empty(),
        }
    }

    /// Sends a new message of ours, or queues it while we have no link.
    fn originate(&mut self, to: PeerId, payload: &OutgoingPayload<'_>) -> Result<(), Error> {
        let json = payload.to_json();
        if json.len() + ENVELOPE_OVERHEAD + 43 * self.config.max_hops > self.config.max_frame_bytes
        {
            return Err(Error::TooLarge);
        }
        if !self.has_routable_link() {
            if self.queue.len() >= self.config.queue_max {
                return Err(Error::QueueFull);
            }
            let nonce = self.fresh_nonce();
            self.stats.originated += 1;
            self.stats.queued += 1;
            let kind = payload.kind();
            self.queue.push_back(Queued {
                to,
                kind,
                nonce,
                payload: json,
            });
            return Ok(());
        }
        let nonce = self.fresh_nonce();
        self.stats.originated += 1;
        let from = self.id;
        self.forward(&to, &from, &[], &nonce, payload.kind(), &json);
        Ok(())
    }

    /// Sends what waited for a first link. The path gets our id once (the original adds it
    /// twice).
    fn flush_queue(&mut self) {
        let from = self.id;
        while let Some(q) = self.queue.pop_front() {
            self.forward(&q.to, &from, &[], &q.nonce, q.kind, &q.payload);
        }
    }

    // ---- commands -------------------------------------------------------------------------

    /// Sends `data` (anything serde can turn into JSON) to `to`, relayed through the network.
    /// Delivery is not guaranteed, as with UDP.
    pub fn send<T: Serialize + ?Sized>(
        &mut self,
        now: Time,
        to: PeerId,
        data: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(data).map_err(|e| Error::InvalidData(e.to_string()))?;
        self.send_json(now, to, &json)
    }

    /// Sends raw JSON to `to`.
    pub fn send_raw(&mut self, now: Time, to: PeerId, data: &RawValue) -> Result<(), Error> {
        self.send_json(now, to, data.get())
    }

    fn send_json(&mut self, now: Time, to: PeerId, json: &str) -> Result<(), Error> {
        self.advance(now);
        self.check_running()?;
        if to == self.id {
            return Err(Error::OwnId);
        }
        // The envelope and the payload object add two levels around the data.
        let data_limits = DecodeLimits {
            max_json_depth: self.limits.max_json_depth.saturating_sub(2),
            ..self.limits
        };
        if wire::precheck(json.as_bytes(), &data_limits).is_err() {
            return Err(Error::TooLarge);
        }
        self.originate(to, &OutgoingPayload::User(json))
    }

    /// Asks for a direct link to `peer` (through a relayed `handshake-offer`). A no-op if a
    /// link or an attempt already exists. Failure is reported as
    /// [`Event::ConnectFailed`] with `explicit: true`.
    pub fn connect(&mut self, now: Time, peer: PeerId) -> Result<(), Error> {
        self.advance(now);
        self.check_running()?;
        if peer == self.id {
            return Err(Error::OwnId);
        }
        if self.links.contains_key(&peer) {
            return Ok(());
        }
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.explicit = true;
            return Ok(());
        }
        self.start_connect(peer, true)
    }

    /// Closes the direct link to `peer`.
    pub fn disconnect(&mut self, now: Time, peer: PeerId) -> Result<(), Error> {
        self.advance(now);
        self.check_running()?;
        if !self.links.contains_key(&peer) {
            return Err(Error::NotLinked);
        }
        self.close_link(&peer, CloseReason::Requested);
        Ok(())
    }

    /// Dials a WebSocket url to join the network; retried with backoff while it fails, and
    /// again whenever the node has lost every link.
    pub fn bootstrap(&mut self, now: Time, url: &str) -> Result<(), Error> {
        self.advance(now);
        self.check_running()?;
        if !is_ws_url(url) {
            return Err(Error::InvalidUrl);
        }
        if self.bootstrap.iter().any(|b| b.url == url) {
            return Ok(());
        }
        if self.bootstrap.len() >= self.config.max_bootstrap_urls.min(BOOTSTRAP_URLS_MAX) {
            return Err(Error::TooManyBootstrapUrls);
        }
        if self.bootstrap.is_empty() && self.links.is_empty() && !self.config.join_hold.is_zero() {
            self.join_hold_until = self.now + self.config.join_hold;
            self.arm(self.join_hold_until, Timer::JoinHoldEnds);
        }
        self.bootstrap.push(Bootstrap {
            url: url.to_owned(),
            state: BootState::Idle,
            failures: 0,
            server: None,
            asked: false,
            check_dial: false,
        });
        self.dial_bootstrap(self.bootstrap.len() - 1);
        Ok(())
    }

    /// Closes every connection and stops. Later commands fail with [`Error::ShutDown`];
    /// later inputs are ignored.
    pub fn shutdown(&mut self, now: Time) {
        self.advance(now);
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        for (conn, _) in std::mem::take(&mut self.conns) {
            self.stats.closed.add(CloseReason::Shutdown);
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::Shutdown,
            });
        }
        for peer in peers {
            self.emit(Event::PeerDisconnected { peer });
        }
        self.links.clear();
        self.retiring.clear();
        self.link_buckets = BucketSet::default();
        self.table = KBucket::new(self.id, self.config.k);
        self.pending.clear();
        self.queue.clear();
        self.timers.clear();
        self.refresh_at = None;
        self.keepalive_armed = false;
        self.reach_check = None;
    }

    // ---- bootstrap ------------------------------------------------------------------------

    fn dial_bootstrap(&mut self, index: usize) {
        if self.conns.len() >= self.config.max_connections {
            return self.bootstrap_failed(index);
        }
        let state = ConnState::Dialing { connect: None };
        let bootstrap = u32::try_from(index).expect("bootstrap() caps the url count");
        let conn = self.new_conn(Transport::WebSocket, state, true, Some(bootstrap));
        let url = self.bootstrap[index].url.clone();
        self.bootstrap[index].state = BootState::Active(conn);
        self.outputs.push_back(Output::DialWebSocket { conn, url });
    }

    fn bootstrap_conn_gone(&mut self, index: usize, reached: bool, reason: Option<CloseReason>) {
        if !reached && std::mem::take(&mut self.bootstrap[index].check_dial) {
            // A reach check's dial: the server is gone or out of reach. The next check
            // tries again; no retries in between.
            self.bootstrap[index].state = BootState::Idle;
            if !self.links.is_empty() {
                return;
            }
        }
        if reason == Some(CloseReason::SelfConnection) {
            self.bootstrap[index].state = BootState::Disabled;
        } else if reached {
            self.bootstrap[index].state = BootState::Idle;
            if self.links.is_empty() {
                // It let us in but we found no one else before it dropped us (a seed shedding
                // joiners): dial it again only after a backoff, as after a failure, or a busy
                // seed gets every stranded joiner back every few seconds forever. The backoff
                // resets once we hold a link besides the bootstrap one.
                self.bootstrap_failed(index);
                self.redial_bootstrap();
            }
        } else {
            self.bootstrap_failed(index);
        }
    }

    fn bootstrap_failed(&mut self, index: usize) {
        let entry = &mut self.bootstrap[index];
        entry.failures = entry.failures.saturating_add(1);
        let factor = 1u32 << (entry.failures - 1).min(16);
        let delay =
            (self.config.bootstrap_backoff_initial * factor).min(self.config.bootstrap_backoff_max);
        let at = self.now + delay;
        entry.state = BootState::Waiting(at);
        let (url, attempt) = (entry.url.clone(), entry.failures);
        self.arm(at, Timer::Bootstrap(index));
        self.emit(Event::BootstrapFailed {
            url,
            attempt,
            retry_in: delay,
        });
    }

    /// The end of `Config::join_hold` without a link: dial at once the bootstrap urls that
    /// are waiting for a retry. Two peers bootstrapping through each other refused each
    /// other while both held; both stop holding now, and their retries cross.
    fn join_hold_ends(&mut self) {
        if !self.links.is_empty() {
            return;
        }
        for index in 0..self.bootstrap.len() {
            if let BootState::Waiting(at) = self.bootstrap[index].state {
                self.timers.remove(&(at, Timer::Bootstrap(index)));
                self.dial_bootstrap(index);
            }
        }
    }

    /// After losing every link, dial the bootstrap urls again (after a short delay, so a
    /// peer that keeps refusing us is not hammered).
    fn redial_bootstrap(&mut self) {
        for index in 0..self.bootstrap.len() {
            if self.bootstrap[index].state == BootState::Idle {
                let at = self.now + self.config.bootstrap_backoff_initial;
                self.bootstrap[index].state = BootState::Waiting(at);
                self.arm(at, Timer::Bootstrap(index));
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    fn arm(&mut self, at: Time, timer: Timer) {
        self.timers.insert((at, timer));
    }

    /// Arms the keepalive sweep, unless it is armed or keepalive is off. The sweep runs every
    /// half of the shorter of `keepalive_interval` and `keepalive_timeout`, while the node
    /// has links: one timer per node, not one per link.
    fn arm_keepalive(&mut self) {
        let Some(interval) = self.config.keepalive_interval else {
            return;
        };
        if !self.keepalive_armed {
            let period = interval.min(self.config.keepalive_timeout) / 2;
            self.keepalive_armed = true;
            self.arm(
                self.now + period.max(Duration::from_millis(1)),
                Timer::Keepalive,
            );
        }
    }

    /// Probes the links silent for `keepalive_interval` and closes those silent for
    /// `keepalive_interval + keepalive_timeout`.
    fn keepalive(&mut self) {
        self.keepalive_armed = false;
        let Some(interval) = self.config.keepalive_interval else {
            return;
        };
        let now = heard_stamp(self.now);
        // Both fit in a u32 of milliseconds: `Config::validate` caps the window at a day.
        let probe_after = interval.as_millis() as u32;
        let dead_after = (interval + self.config.keepalive_timeout).as_millis() as u32;
        let mut unresponsive: SmallVec<[ConnId; 4]> = SmallVec::new();
        let mut established = 0;
        for (conn, c) in self.conns.iter() {
            let ConnState::Established { heard, .. } = c.state else {
                continue;
            };
            established += 1;
            let silent = now.wrapping_sub(heard);
            if silent >= dead_after {
                unresponsive.push(*conn);
            } else if silent >= probe_after {
                self.stats.keepalive_probes += 1;
                self.outputs.push_back(Output::Probe { conn: *conn });
            }
        }
        // Links that come up later arm the sweep again.
        if established > unresponsive.len() {
            self.arm_keepalive();
        }
        if !unresponsive.is_empty() {
            self.start_reach_checks();
        }
        for conn in unresponsive {
            self.close(conn, CloseReason::Unresponsive);
        }
    }

    /// (Re)starts reach checks at `reach_check_interval` from now.
    fn start_reach_checks(&mut self) {
        let Some(interval) = self.config.reach_check_interval else {
            return;
        };
        if self.bootstrap.is_empty() {
            return;
        }
        let at = self.now + interval;
        if let Some((armed, _)) = self.reach_check {
            if armed <= at {
                self.reach_check = Some((armed, interval));
                return;
            }
            self.timers.remove(&(armed, Timer::ReachCheck));
        }
        self.reach_check = Some((at, (interval * 2).min(self.config.reach_check_max)));
        self.arm(at, Timer::ReachCheck);
    }

    /// Asks each bootstrap server we have no link to for peers near us, through the network;
    /// dials the url of each that did not answer the previous check: it is gone, or in a
    /// part of the network we no longer reach.
    fn reach_check(&mut self) {
        let Some((_, interval)) = self.reach_check else {
            return;
        };
        for index in 0..self.bootstrap.len() {
            let entry = &mut self.bootstrap[index];
            let Some(server) = entry.server else {
                continue;
            };
            if entry.state != BootState::Idle || self.links.contains_key(&server) {
                entry.asked = false;
                continue;
            }
            if std::mem::take(&mut entry.asked) {
                entry.check_dial = true;
                self.stats.reach_redials += 1;
                self.dial_bootstrap(index);
            } else {
                entry.asked = true;
                self.stats.reach_checks += 1;
                let _ = self.originate(server, &OutgoingPayload::FindPeers(self.id));
            }
        }
        let at = self.now + interval;
        self.reach_check = Some((at, (interval * 2).min(self.config.reach_check_max)));
        self.arm(at, Timer::ReachCheck);
    }

    fn schedule_refresh(&mut self) {
        if let Some(interval) = self.config.refresh_interval {
            // Jitter of +-25% keeps a network started at once from refreshing in lockstep.
            let quarter = (interval / 4).as_micros() as u64;
            let jitter = if quarter == 0 {
                0
            } else {
                self.rng.next_u64() % (2 * quarter)
            };
            let at = self.now
                + (interval - Duration::from_micros(quarter))
                + Duration::from_micros(jitter);
            self.refresh_at = Some(at);
            self.arm(at, Timer::Refresh);
        }
    }

    fn on_timeout(&mut self) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Handshake(conn) => {
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| matches!(c.state, ConnState::AwaitingId { .. }))
                    {
                        self.close(conn, CloseReason::HandshakeTimeout);
                    }
                }
                Timer::Pending(peer) => self.pending_expired(peer),
                Timer::Retire(conn) => {
                    if let Some(ConnState::Retiring { reason, .. }) =
                        self.conns.get(&conn).map(|c| &c.state)
                    {
                        let reason = *reason;
                        self.close(conn, reason);
                    }
                }
                Timer::Bootstrap(index) => {
                    if matches!(self.bootstrap[index].state, BootState::Waiting(_)) {
                        self.dial_bootstrap(index);
                    }
                }
                Timer::Refresh => self.refresh(),
                Timer::JoinHoldEnds => self.join_hold_ends(),
                Timer::Keepalive => self.keepalive(),
                Timer::ReachCheck => self.reach_check(),
            }
        }
    }

    fn pending_expired(&mut self, peer: PeerId) {
        let Some(pending) = self.pending.get(&peer) else {
            return;
        };
        // The timer entry was popped; forget the stale deadline.
        let session = pending.session.filter(|conn| {
            self.conns
                .get(conn)
                .is_some_and(|c| !matches!(c.state, ConnState::Established { .. }))
        });
        match session {
            Some(conn) => {
                let reason = match self.conns.get(&conn).map(|c| c.transport) {
                    Some(Transport::WebRtc) => CloseReason::WebRtcTimeout,
                    _ => CloseReason::HandshakeTimeout,
                };
                self.close(conn, reason);
                // If the close fell back to a WebSocket dial, a new pending deadline is set.
                if self
                    .pending
                    .get(&peer)
                    .is_some_and(|p| p.session == Some(conn))
                {
                    self.connect_failed(peer, ConnectFailure::Timeout);
                }
            }
            None => self.connect_failed(peer, ConnectFailure::Timeout),
        }
    }

    /// Periodic discovery: ask three links for the peers nearest to us, look up buckets we
    /// have no link in, and top up links from what we know.
    fn refresh(&mut self) {
        self.schedule_refresh();
        self.candidates.forget_stale_backoffs(self.now);
        if self.links.is_empty() {
            return;
        }
        // Three questions for the peers nearest to us. Our nearest link knows our
        // neighbourhood best (a newcomer closer to us than our near links is found this way).
        // A link in one of our deepest few buckets knows it from a step further out: the
        // nearest links are often peers whose bucket we alone cover, who so learn of no one
        // else there (in a network that started all at once, neighbourhoods formed without
        // some of their members). A random link adds a sample from elsewhere.
        let nearest = self
            .links
            .keys()
            .min_by_key(|p| self.id.distance(p))
            .copied();
        let deepest = nearest.map_or(0, |n| self.id.common_prefix_len(&n));
        let deep: SmallVec<[PeerId; 8]> = self
            .links
            .keys()
            .filter(|p| {
                Some(**p) != nearest
                    && self.id.common_prefix_len(p) + DEEP_REFRESH_BUCKETS >= deepest
            })
            .copied()
            .collect();
        let deep =
            (!deep.is_empty()).then(|| deep[(self.rng.next_u64() % deep.len() as u64) as usize]);
        let index = (self.rng.next_u64() % self.links.len() as u64) as usize;
        let random = self.links.keys().nth(index).copied();
        let mut asked: SmallVec<[PeerId; 3]> = SmallVec::new();
        for peer in [nearest, deep, random].into_iter().flatten() {
            if !asked.contains(&peer) {
                asked.push(peer);
                let _ = self.originate(peer, &OutgoingPayload::FindPeers(self.id));
            }
        }
        self.populate();
        self.start_lookups();
    }

    /// Buckets that hold no link and no pending connect, up to the deepest bucket we know a
    /// peer in (deeper ones are most likely empty).
    fn uncovered_buckets(&self) -> Vec<usize> {
        let mut covered = [false; ID_BITS + 1];
        for peer in self.links.keys().chain(self.pending.keys()) {
            covered[self.id.common_prefix_len(peer)] = true;
        }
        let deepest = self
            .candidates()
            .map(|c| self.id.common_prefix_len(c))
            .max()
            .unwrap_or(0);
        (0..=deepest.min(ID_BITS - 1))
            .filter(|b| !covered[*b])
            .collect()
    }

    /// Starts lookups for a few uncovered buckets (chosen at random, so none starves). Each
    /// asks two peers: the one we know nearest to a random id in the bucket, and a random link
    /// one or two buckets shallower. Our near neighbours tend to share our blind spots (the
    /// bucket is theirs too); a peer one level up holds a sample of a larger region that
    /// contains the bucket.
    fn start_lookups(&mut self) {
        if self.config.link_selection == LinkSelection::NearestToSelf {
            return;
        }
        self.lookups.expire(self.now);
        let mut buckets = self.uncovered_buckets();
        buckets.retain(|b| !self.lookups.covers(*b) && !self.lookups.is_quiet(*b, self.now));
        while self.lookups.has_room() && !buckets.is_empty() {
            let bucket = buckets.swap_remove((self.rng.next_u64() % buckets.len() as u64) as usize);
            let target = random_id_in_bucket(&self.id, bucket, &mut self.rng);
            let nearest = self
                .candidates
                .table()
                .closest_iter(&target)
                .next()
                .map(|e| e.id);
            let shallower: Vec<PeerId> = self
                .links
                .keys()
                .filter(|p| {
                    let b = self.id.common_prefix_len(p);
                    b < bucket && b + 2 >= bucket
                })
                .copied()
                .collect();
            let upper = (!shallower.is_empty())
                .then(|| shallower[(self.rng.next_u64() % shallower.len() as u64) as usize]);
            let mut asks: SmallVec<[PeerId; 2]> = nearest.into_iter().collect();
            if let Some(upper) = upper.filter(|u| !asks.contains(u)) {
                asks.push(upper);
            }
            for ask in asks {
                let asked = smallvec::smallvec![ask];
                self.ask_lookup(Lookup {
                    target,
                    bucket,
                    asked,
                    expires: Time::ZERO,
                });
            }
        }
    }

    /// Every envelope names live peers (its origin and relays). One in a bucket where we have
    /// no link is worth knowing: take it as a candidate and try to link. A bitmap test per id,
    /// so relaying stays cheap.
    fn learn_from_traffic(&mut self, env: &Envelope<'_>) {
        if self.config.link_selection == LinkSelection::NearestToSelf {
            return;
        }
        let mut learned = false;
        for id in env.path.iter().chain([&env.from]) {
            let bucket = self.id.common_prefix_len(id);
            if *id != self.id
                && !self.link_buckets.contains(bucket)
                && !self.candidates.table().contains(id)
            {
                learned |= self.candidates.saw(*id);
            }
        }
        if learned {
            self.populate();
        }
    }

    /// A peer answered a lookup: if the bucket is still uncovered, ask the nearest peer to the
    /// target not asked yet (often one the answer just named).
    fn continue_lookup(&mut self, sender: PeerId) {
        let Some(mut lookup) = self.lookups.answered(&sender) else {
            return;
        };
        if !self.uncovered_buckets().contains(&lookup.bucket) {
            return;
        }
        let next = (lookup.asked.len() < LOOKUP_STEPS)
            .then(|| {
                self.candidates
                    .table()
                    .closest_iter(&lookup.target)
                    .map(|e| e.id)
                    .find(|c| !lookup.asked.contains(c))
            })
            .flatten();
        match next {
            Some(next) => {
                lookup.asked.push(next);
                self.ask_lookup(lookup);
            }
            None => {
                let interval = self.config.refresh_interval.unwrap_or_default();
                let max = self.config.lookup_retry_max;
                self.lookups
                    .fruitless(lookup.bucket, self.now, interval, max);
            }
        }
    }

    fn ask_lookup(&mut self, mut lookup: Lookup) {
        let Some(&ask) = lookup.asked.last() else {
            return;
        };
        lookup.expires = self.now + self.config.pending_connect_timeout;
        let target = lookup.target;
        if self
            .originate(ask, &OutgoingPayload::FindPeers(target))
            .is_ok()
        {
            self.lookups.ask(lookup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_output_queue_gives_back_a_bursts_room() {
        let now = Time::ZERO;
        let config = Config {
            max_bootstrap_urls: 64,
            ..Config::default()
        };
        let mut node = Node::new(config, [7; 32], now).expect("valid config");
        for port in 0..40 {
            node.bootstrap(now, &format!("ws://127.0.0.1:{}", 9000 + port))
                .expect("a valid url");
        }
        assert!(node.outputs.len() >= 40, "one dial per url");
        let mut dials = 0;
        while let Some(output) = node.poll_output() {
            dials += usize::from(matches!(output, Output::DialWebSocket { .. }));
        }
        assert_eq!(dials, 40);
        assert!(
            node.outputs.capacity() <= OUTPUT_ROOM,
            "capacity {}",
            node.outputs.capacity()
        );
        // The shrunk queue still carries outputs.
        node.bootstrap(now, "ws://127.0.0.1:8999")
            .expect("a valid url");
        assert!(node.poll_output().is_some());
        assert!(node.poll_output().is_none());
    }
}
