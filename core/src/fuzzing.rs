//! Fuzzing entry points with their invariant checks, shared by the cargo-fuzz targets in
//! `fuzz/` and by the stable test that replays the committed corpus (`core/tests/fuzz_corpus.rs`),
//! so CI runs exactly the checks the fuzzer runs. Enabled by the `fuzzing` feature.
//!
//! Every function panics when an invariant breaks; that is the finding.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::config::{Config, LinkSelection};
use crate::conn::ConnId;
use crate::id::PeerId;
use crate::node::{Event, Input, Node, Output};
use crate::time::Time;
use crate::wire::{
    DecodeLimits, Envelope, Nonce, OutgoingPayload, Payload, decode_id_handshake, write_envelope,
};

fn assert_same(a: &Envelope<'_>, b: &Envelope<'_>, what: &str) {
    assert_eq!(a.to, b.to, "{what}: to");
    assert_eq!(a.from, b.from, "{what}: from");
    assert_eq!(a.path, b.path, "{what}: path");
    assert_eq!(a.nonce, b.nonce, "{what}: nonce");
    assert_eq!(a.payload_json(), b.payload_json(), "{what}: payload text");
    assert_eq!(
        format!("{:?}", a.payload),
        format!("{:?}", b.payload),
        "{what}: payload"
    );
}

/// `decode_frame`: arbitrary bytes into every decoder. Checks that the canonical fast path
/// never disagrees with serde, and that a decoded envelope re-encodes to an equal one.
pub fn decode_frame(data: &[u8]) {
    let limits = DecodeLimits::default();
    let _ = decode_id_handshake(data, &limits);
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = Payload::decode(text, limits.max_found_peers);
    }
    if let Some(fast) = Envelope::decode_canonical(data, &limits) {
        let text = core::str::from_utf8(data).expect("the fast path only accepts UTF-8");
        let slow = Envelope::decode_general(text, &limits)
            .expect("serde accepts every frame the fast path accepts");
        assert_same(&fast, &slow, "fast vs serde");
    }
    if let Ok(env) = Envelope::decode(data, &limits) {
        assert!(!env.path.is_empty() && env.path.len() <= limits.max_path_len);
        let mut out = String::new();
        write_envelope(
            &mut out,
            &env.to,
            &env.from,
            &env.path,
            None,
            &env.nonce,
            env.payload_json(),
        );
        let again = Envelope::decode(out.as_bytes(), &limits).expect("a re-encoded frame decodes");
        assert_same(&env, &again, "round trip");
    }
}

/// Which configuration the scripted node runs.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Preset {
    /// `Config::default()` with WebRTC and a url.
    Default,
    /// `Config::original()`.
    Original,
    /// Tiny limits, so every bound is reached quickly.
    Tight,
}

impl Preset {
    fn config(self) -> Config {
        let base = match self {
            Preset::Default => Config::default(),
            Preset::Original => Config::original(),
            Preset::Tight => Config {
                link_selection: LinkSelection::BucketDiverse { near: 1 },
                k: 2,
                target_links: 3,
                max_links: 4,
                max_connections: 6,
                max_hops: 5,
                max_frame_bytes: 4096,
                max_json_depth: 16,
                max_found_peers: 3,
                found_peers_reply: 3,
                seen_nonces_max: 8,
                seen_nonce_ttl: Duration::from_secs(5),
                preferred_paths_max: 4,
                queue_max: 3,
                max_pending_connects: 3,
                max_violations: 3,
                max_bootstrap_urls: 2,
                refresh_interval: Some(Duration::from_secs(2)),
                ..Config::default()
            },
        };
        Config {
            advertised_url: Some("ws://fuzz.test:1".into()),
            webrtc: true,
            ..base
        }
    }
}

/// A JSON value for `send`, bounded in size by the fuzzer's input.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzJson {
    /// `null`.
    Null,
    /// A number.
    Number(i64),
    /// A string.
    Text(String),
    /// An array.
    List(Vec<FuzzJson>),
    /// Nested `depth` levels of arrays.
    Deep(u16),
}

impl FuzzJson {
    fn to_value(&self) -> serde_json::Value {
        match self {
            FuzzJson::Null => serde_json::Value::Null,
            FuzzJson::Number(n) => (*n).into(),
            FuzzJson::Text(s) => s.clone().into(),
            FuzzJson::List(items) => items.iter().map(FuzzJson::to_value).collect(),
            FuzzJson::Deep(depth) => {
                let mut v = serde_json::Value::Null;
                for _ in 0..(*depth % 300) {
                    v = serde_json::Value::Array(vec![v]);
                }
                v
            }
        }
    }
}

/// The payload of a structure-aware envelope.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzPayload {
    /// `user` data.
    User(FuzzJson),
    /// `findPeers` for a pool id.
    FindPeers(u8),
    /// `foundPeers` listing pool ids.
    FoundPeers(Vec<u8>),
    /// `handshake-offer`.
    Offer,
    /// `handshake-answer`, maybe with a url.
    Answer {
        /// Whether to include a url.
        ws: bool,
        /// The wrtc flag.
        wrtc: bool,
    },
    /// A `signal` of one of the simple-peer shapes.
    Signal(u8),
    /// An unknown type.
    Unknown(String),
    /// Arbitrary text in the payload position (usually invalid).
    Raw(String),
}

/// A valid-looking envelope over the id pool.
#[derive(Debug, Clone, Arbitrary)]
pub struct FuzzEnvelope {
    to: u8,
    from: u8,
    path: Vec<u8>,
    nonce: u64,
    buffer_ids: bool,
    payload: FuzzPayload,
}

/// One step applied to the node.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Register an inbound WebSocket.
    Accept,
    /// Report a known connection open.
    Opened(u8),
    /// Report a known connection closed.
    Closed(u8),
    /// A binary frame.
    Binary(u8),
    /// An id handshake claiming a pool id (or our own).
    IdHandshake {
        /// Connection index.
        conn: u8,
        /// Pool index.
        peer: u8,
        /// Buffer form rather than hex.
        buffer_form: bool,
    },
    /// Arbitrary bytes as a frame.
    RawFrame(u8, Vec<u8>),
    /// A structure-aware envelope.
    Message(u8, FuzzEnvelope),
    /// A local WebRTC signal from the driver.
    LocalSignal(u8, String),
    /// The transport showed a connection alive (a pong).
    Alive(u8),
    /// The transport gave up on a connection (ICE failed).
    Failed(u8),
    /// Let time pass and fire due timers.
    Advance(u16),
    /// `connect`.
    Connect(u8),
    /// `disconnect`.
    Disconnect(u8),
    /// `send`.
    Send(u8, FuzzJson),
    /// `bootstrap` to one of a few urls (some invalid).
    Bootstrap(u8),
    /// `shutdown`.
    Shutdown,
}

/// A whole `node_ops` run.
#[derive(Debug, Clone, Arbitrary)]
pub struct NodeScript {
    /// The configuration.
    pub preset: Preset,
    /// The node's seed.
    pub seed: u64,
    /// The steps.
    pub ops: Vec<Op>,
}

/// `node_ops`: interprets the bytes as a [`NodeScript`] and runs it.
pub fn node_ops(data: &[u8]) {
    if let Ok(script) = NodeScript::arbitrary_take_rest(Unstructured::new(data)) {
        run_script(&script);
    }
}

struct Harness {
    node: Node,
    config: Config,
    now: Time,
    pool: Vec<PeerId>,
    /// Every connection ever named, in order; ops pick by index.
    conns: Vec<ConnId>,
    /// WebSocket connections whose id handshake we have seen go out.
    handshake_sent: BTreeSet<ConnId>,
    websocket: BTreeSet<ConnId>,
    closed: BTreeSet<ConnId>,
    /// Every output drained, when a comparison needs them.
    log: Option<Vec<Output>>,
}

/// Runs a script, checking every invariant after every step.
pub fn run_script(script: &NodeScript) {
    let mut h = Harness::new(script);
    for op in &script.ops {
        h.apply(op);
        h.drain_and_check();
    }
}

/// Runs a script, and after its first `at` steps goes on with two nodes side by side: the
/// node itself, and `restore(&node)` (a node saved and loaded again). Every later step is
/// applied to both, and their outputs, stats and sizes must be the same.
pub fn run_script_restored(script: &NodeScript, at: usize, restore: impl FnOnce(&Node) -> Node) {
    let mut h = Harness::new(script);
    let at = at.min(script.ops.len());
    for op in &script.ops[..at] {
        h.apply(op);
        h.drain_and_check();
    }
    let mut twin = Harness {
        node: restore(&h.node),
        config: h.config.clone(),
        now: h.now,
        pool: h.pool.clone(),
        conns: h.conns.clone(),
        handshake_sent: h.handshake_sent.clone(),
        websocket: h.websocket.clone(),
        closed: h.closed.clone(),
        log: Some(Vec::new()),
    };
    h.log = Some(Vec::new());
    assert_eq!(twin.node.id(), h.node.id());
    assert_eq!(twin.node.stats(), h.node.stats());
    assert_eq!(twin.node.sizes(), h.node.sizes());
    for (step, op) in script.ops[at..].iter().enumerate() {
        for side in [&mut h, &mut twin] {
            side.apply(op);
            side.drain_and_check();
        }
        assert_eq!(
            h.log, twin.log,
            "outputs differ {step} steps after the restore: {op:?}"
        );
        h.log = Some(Vec::new());
        twin.log = Some(Vec::new());
        assert_eq!(twin.node.poll_timeout(), h.node.poll_timeout());
        assert_eq!(twin.node.stats(), h.node.stats());
        assert_eq!(twin.node.sizes(), h.node.sizes());
    }
}

/// `node_ops` with a restore: interprets the bytes as a [`NodeScript`] and runs it with
/// [`run_script_restored`] at a third, two thirds and the end of its steps.
pub fn node_ops_restored(data: &[u8], restore: impl Fn(&Node) -> Node) {
    if let Ok(script) = NodeScript::arbitrary_take_rest(Unstructured::new(data)) {
        let steps = script.ops.len();
        for at in [steps / 3, 2 * steps / 3, steps] {
            run_script_restored(&script, at, &restore);
        }
    }
}

impl Harness {
    fn new(script: &NodeScript) -> Harness {
        let config = script.preset.config();
        let node =
            Node::with_seed(config.clone(), script.seed, Time::ZERO).expect("preset is valid");
        let own = node.id();
        // Ids at chosen distances from ours (so buckets split and fill) plus a few far ones.
        let mut pool: Vec<PeerId> = [0usize, 1, 2, 7, 80, 159]
            .iter()
            .map(|&bit| {
                let mut bytes = *own.as_bytes();
                bytes[bit / 8] ^= 0x80 >> (bit % 8);
                PeerId::from_bytes(bytes)
            })
            .collect();
        pool.extend((1..=3u8).map(|i| PeerId::from_bytes([i.wrapping_mul(37); 20])));
        pool.push(own);
        Harness {
            node,
            config,
            now: Time::ZERO,
            pool,
            conns: Vec::new(),
            handshake_sent: BTreeSet::new(),
            websocket: BTreeSet::new(),
            closed: BTreeSet::new(),
            log: None,
        }
    }

    fn peer(&self, index: u8) -> PeerId {
        self.pool[usize::from(index) % self.pool.len()]
    }

    fn conn(&self, index: u8) -> Option<ConnId> {
        (!self.conns.is_empty()).then(|| self.conns[usize::from(index) % self.conns.len()])
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Accept => {
                if let Ok(conn) = self.node.accept(now) {
                    self.conns.push(conn);
                    self.websocket.insert(conn);
                }
            }
            Op::Opened(c) => {
                if let Some(conn) = self.conn(*c) {
                    self.node.handle_input(now, Input::Opened { conn });
                }
            }
            Op::Closed(c) => {
                if let Some(conn) = self.conn(*c) {
                    self.node.handle_input(now, Input::Closed { conn });
                }
            }
            Op::Binary(c) => {
                if let Some(conn) = self.conn(*c) {
                    self.node.handle_input(now, Input::BinaryFrame { conn });
                }
            }
            Op::IdHandshake {
                conn,
                peer,
                buffer_form,
            } => {
                if let Some(conn) = self.conn(*conn) {
                    let id = self.peer(*peer);
                    let frame = if *buffer_form {
                        id.to_buffer_json()
                    } else {
                        format!("\"{id}\"")
                    };
                    self.node.handle_input(
                        now,
                        Input::Frame {
                            conn,
                            frame: frame.as_bytes(),
                        },
                    );
                }
            }
            Op::RawFrame(c, bytes) => {
                if let Some(conn) = self.conn(*c) {
                    self.node
                        .handle_input(now, Input::Frame { conn, frame: bytes });
                }
            }
            Op::Message(c, env) => {
                if let Some(conn) = self.conn(*c) {
                    let frame = self.render(env);
                    self.node.handle_input(
                        now,
                        Input::Frame {
                            conn,
                            frame: frame.as_bytes(),
                        },
                    );
                }
            }
            Op::LocalSignal(c, signal) => {
                if let Some(conn) = self.conn(*c) {
                    self.node
                        .handle_input(now, Input::LocalSignal { conn, signal });
                }
            }
            Op::Failed(c) => {
                if let Some(conn) = self.conn(*c) {
                    self.closed.insert(conn);
                    self.node.handle_input(now, Input::Failed { conn });
                }
            }
            Op::Alive(c) => {
                if let Some(conn) = self.conn(*c) {
                    self.node.handle_input(now, Input::Alive { conn });
                }
            }
            Op::Advance(millis) => {
                self.now += Duration::from_millis(u64::from(*millis) * 8);
                while self.node.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.node.handle_input(self.now, Input::Timeout);
                    self.drain_and_check();
                }
            }
            Op::Connect(p) => {
                let _ = self.node.connect(now, self.peer(*p));
            }
            Op::Disconnect(p) => {
                let _ = self.node.disconnect(now, self.peer(*p));
            }
            Op::Send(p, data) => {
                let _ = self.node.send(now, self.peer(*p), &data.to_value());
            }
            Op::Bootstrap(u) => {
                let urls = [
                    "ws://a.test:1",
                    "wss://b.test/x",
                    "http://no",
                    "ws://",
                    "ws://c.test:3",
                ];
                let _ = self.node.bootstrap(now, urls[usize::from(*u) % urls.len()]);
            }
            Op::Shutdown => self.node.shutdown(now),
        }
    }

    fn render(&self, env: &FuzzEnvelope) -> String {
        let id = |i: u8| {
            let id = self.peer(i);
            if env.buffer_ids {
                id.to_buffer_json()
            } else {
                format!("\"{id}\"")
            }
        };
        let path: Vec<PeerId> = env.path.iter().take(30).map(|&i| self.peer(i)).collect();
        let signals = [
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMLineIndex":0,"sdpMid":"0"}}"#,
        ];
        let ids: Vec<PeerId>;
        let payload = match &env.payload {
            FuzzPayload::User(data) => {
                let json = data.to_value().to_string();
                format!(r#"{{"type":"user","data":{json}}}"#)
            }
            FuzzPayload::FindPeers(i) => OutgoingPayload::FindPeers(self.peer(*i)).to_json(),
            FuzzPayload::FoundPeers(list) => {
                ids = list.iter().map(|&i| self.peer(i)).collect();
                OutgoingPayload::FoundPeers(&ids).to_json()
            }
            FuzzPayload::Offer => OutgoingPayload::HandshakeOffer.to_json(),
            FuzzPayload::Answer { ws, wrtc } => OutgoingPayload::HandshakeAnswer {
                ws: ws.then_some("ws://answer.test:9"),
                wrtc: *wrtc,
            }
            .to_json(),
            FuzzPayload::Signal(k) => {
                OutgoingPayload::Signal(signals[usize::from(*k) % signals.len()]).to_json()
            }
            FuzzPayload::Unknown(t) => {
                format!(
                    r#"{{"type":{},"data":1}}"#,
                    serde_json::Value::from(t.clone())
                )
            }
            FuzzPayload::Raw(text) => text.clone(),
        };
        let path_json: Vec<String> = path.iter().map(|p| format!("\"{p}\"")).collect();
        format!(
            r#"{{"to":{},"from":{},"path":[{}],"nonce":"{}","data":{}}}"#,
            id(env.to),
            id(env.from),
            path_json.join(","),
            env.nonce % 1_000_000_000_000_000,
            payload
        )
    }

    fn drain_and_check(&mut self) {
        let own = self.node.id();
        let limits = DecodeLimits {
            max_frame_bytes: usize::MAX,
            ..self.config.decode_limits()
        };
        while let Some(output) = self.node.poll_output() {
            if let Some(log) = &mut self.log {
                log.push(output.clone());
            }
            match output {
                Output::Transmit { conn, frame } => {
                    assert!(!self.closed.contains(&conn), "transmit on closed {conn:?}");
                    assert!(
                        frame.len() <= self.config.max_frame_bytes,
                        "frame over the limit"
                    );
                    if self.websocket.contains(&conn) && self.handshake_sent.insert(conn) {
                        let id = decode_id_handshake(frame.as_bytes(), &limits)
                            .expect("first frame on a WebSocket is our id handshake");
                        assert_eq!(id, own);
                        assert_eq!(
                            frame,
                            own.to_buffer_json(),
                            "handshake uses the Buffer form"
                        );
                        continue;
                    }
                    let env = Envelope::decode(frame.as_bytes(), &limits)
                        .unwrap_or_else(|e| panic!("emitted frame does not decode ({e}): {frame}"));
                    assert_eq!(
                        env.path.last(),
                        Some(&own),
                        "path ends with our id: {frame}"
                    );
                    assert!(
                        env.path.len() <= self.config.max_hops,
                        "path too long: {frame}"
                    );
                    assert_eq!(
                        env.path.iter().filter(|p| **p == own).count(),
                        1,
                        "our id appears once in the path: {frame}"
                    );
                    if env.path.len() == 1 {
                        assert_eq!(env.from, own, "a one-entry path is our own message");
                    }
                    assert!(Nonce::parse(env.nonce.as_str()).is_some());
                    // What JS peers need (string nonce, hex ids, non-empty path) is exactly the
                    // canonical shape.
                    assert!(
                        Envelope::decode_canonical(frame.as_bytes(), &limits).is_some(),
                        "emitted frame is not canonical: {frame}"
                    );
                }
                Output::DialWebSocket { conn, url } => {
                    assert!(crate::node::is_ws_url(&url), "dialled a bad url: {url}");
                    self.conns.push(conn);
                    self.websocket.insert(conn);
                }
                Output::StartWebRtc { conn, peer, .. } => {
                    assert_ne!(peer, own, "WebRTC session with ourselves");
                    self.conns.push(conn);
                }
                Output::RemoteSignal { signal, .. } => {
                    let value: serde_json::Value =
                        serde_json::from_str(&signal).expect("signals handed over are JSON");
                    assert!(value.is_object());
                }
                Output::Close { conn, .. } => {
                    self.closed.insert(conn);
                }
                Output::Probe { conn } => {
                    assert!(!self.closed.contains(&conn), "probe on closed {conn:?}");
                }
                Output::Event(Event::Message { data, path_len, .. }) => {
                    assert!(path_len >= 1 && path_len <= self.config.max_hops);
                    let _: serde_json::Value =
                        serde_json::from_str(data.get()).expect("delivered data is JSON");
                }
                Output::Event(Event::PeerConnected { peer, .. }) => {
                    assert_ne!(peer, own, "linked to ourselves");
                }
                Output::Event(_) => {}
            }
        }
        self.check_bounds();
    }

    fn check_bounds(&self) {
        check_sizes(&self.node);
    }
}

/// Checks that every bounded structure of `node` is within the bound its config documents,
/// and that its outputs were drained. Shared with the simulator's `sim_scenario` target.
pub fn check_sizes(node: &Node) {
    let c = node.config();
    let s = node.sizes();
    assert!(s.connections <= c.max_connections, "connections {s:?}");
    assert!(s.links <= c.max_links, "links {s:?}");
    assert!(s.pending <= c.max_pending_connects, "pending {s:?}");
    assert!(s.seen_nonces <= c.seen_nonces_max, "nonces {s:?}");
    assert!(
        s.preferred_paths <= c.preferred_paths_max,
        "preferred {s:?}"
    );
    assert!(s.queued <= c.queue_max, "queue {s:?}");
    assert!(s.lookups <= c.max_lookups, "lookups {s:?}");
    assert!(
        s.candidates <= c.candidate_k * (crate::id::ID_BITS + 1),
        "candidates {s:?}"
    );
    assert!(s.backoffs <= c.connect_backoffs_max, "backoffs {s:?}");
    assert!(s.table <= s.links, "table {s:?}");
    // Every armed timer belongs to something that exists: at most one per connection, one
    // per pending connect, one per bootstrap url, plus the refresh, join-hold, keepalive and
    // reach-check
    // timers.
    let bound = s.connections + s.pending + c.max_bootstrap_urls + 4;
    assert!(s.timers <= bound, "timers {s:?}");
    assert!(s.outputs == 0, "outputs drained");
}
