//! The discrete-event engine: peers, links, the network model, and the scenario API.
//!
//! Every peer is a real core [`Node`], driven exactly as a real driver drives one: each input
//! is followed by draining [`Node::poll_output`] until `None`, every output is carried out
//! (frames cross links as the very `String`s the node produced and arrive as
//! [`Input::Frame`] bytes), and an [`Input::Timeout`] is fed when [`Node::poll_timeout`]
//! comes due. Nothing bypasses the protocol: discovery, handshakes and WebRTC signaling all
//! travel through the nodes as frames.
//!
//! State is kept only for what exists: a peer owns the ends of its own links (a small vector
//! sorted by connection), WebRTC sessions live in an ordered map only while they are being
//! set up, and each peer has at most one live timer entry in the event queue (a generation
//! number retires superseded ones). Nothing is ever n x n.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use memchr::memmem;
use peer_relay_core::compact::{reserve_one, shrink_slack};
use peer_relay_core::{Config, ConnId, Event, Input, Node, Output, PeerId, Time};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{LinkModel, NetConfig};
use crate::queue::EventQueue;
use crate::report::{self, Report};
use crate::rng::{SimRng, Stream, node_seed};
use crate::snapshot::{RecordReader, RecordWriter, SnapshotError};
use crate::trace::TraceHasher;
use crate::webrtc::{self, Endpoint, RemoteSignal, Session, SignalKind, Token};
use crate::workload::{Bootstrap, Churn, Traffic, is_server, peer_of_url, url_of};

/// Index of a peer: its position in join order, stable across crashes and restarts.
pub type PeerIndex = usize;

/// Index of a message the simulator sent, in sending order.
pub type MessageId = usize;

/// Everything that defines a run. The same config gives the same run, output for output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// The root seed: every node's seed and every random choice derive from it.
    pub seed: u64,
    /// Peers in the initial population.
    pub peers: usize,
    /// How many of them run a WebSocket server (spread evenly over join order, peer 0 always
    /// one); the rest are browser-like and link over WebRTC only.
    pub servers: usize,
    /// The node configuration every peer starts from (the simulator sets
    /// `advertised_url` and `webrtc` per peer).
    pub node: Config,
    /// Whether server peers also run a WebRTC stack (browser-like peers always do).
    pub server_webrtc: bool,
    /// How joining peers find the network.
    pub bootstrap: Bootstrap,
    /// Time between consecutive joins of the initial population. The default, 20 ms (50
    /// joins per second), brings 1,000 peers in over 20 s; far faster joins are a flash
    /// crowd, a scenario of its own.
    #[serde(with = "crate::model::micros")]
    pub join_interval: Duration,
    /// The network model.
    pub net: NetConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            peers: 1000,
            servers: 100,
            node: Config::default(),
            server_webrtc: true,
            bootstrap: Bootstrap::Random,
            join_interval: Duration::from_millis(20),
            net: NetConfig::default(),
        }
    }
}

impl SimConfig {
    /// Checks the config; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.peers == 0 || self.peers > u32::MAX as usize / 2 {
            return Err(format!("peers must be in 1..={}", u32::MAX / 2));
        }
        if self.servers == 0 || self.servers > self.peers {
            return Err("servers must be in 1..=peers (peers bootstrap through servers)".into());
        }
        if let Bootstrap::Seeds { count } = self.bootstrap {
            if count == 0 || count > self.servers {
                return Err("seeds:N needs 1 <= N <= servers".into());
            }
        }
        self.node.validate().map_err(|e| e.to_string())?;
        self.net.link.validate()
    }

    /// The time the last peer of the initial population joins.
    pub fn joins_end(&self) -> Time {
        Time::ZERO + self.join_interval * (self.peers.saturating_sub(1) as u32)
    }
}

/// Where a peer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum PeerState {
    /// Scheduled to join, not yet running.
    NotJoined,
    /// Running.
    Alive,
    /// Crashed; may be restarted.
    Crashed,
    /// Shut down cleanly; may be restarted.
    Left,
}

/// `WireEnd::peer` of a WebSocket still being dialled.
const DIALING: u32 = u32::MAX;

/// One end of a link (or a dial in progress), owned by the peer it belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct WireEnd {
    conn: ConnId,
    /// The other end, or [`DIALING`].
    peer: u32,
    peer_incarnation: u32,
    peer_conn: ConnId,
    /// Arrival time of the last frame sent this way: later frames never overtake it.
    last_arrival: Time,
}

impl WireEnd {
    fn remote(&self) -> Option<Endpoint> {
        (self.peer != DIALING).then_some(Endpoint {
            node: self.peer,
            incarnation: self.peer_incarnation,
            conn: self.peer_conn,
        })
    }
}

/// A simulated peer: its node (while running) and the driver state around it.
#[derive(Debug, Serialize, Deserialize)]
struct Peer {
    /// Boxed: a crashed, departed or not-yet-joined peer holds no node memory.
    node: Option<Box<Node>>,
    state: PeerState,
    incarnation: u32,
    server: bool,
    /// Established links, from the node's connect and disconnect events.
    links: u16,
    /// Partition group: frames only flow within a group.
    group: u32,
    /// Index into `Sim::link_models` of this peer's egress model.
    egress: u16,
    /// Generation of the live timer entry; entries with another generation are stale.
    timer_generation: u32,
    /// When the live timer entry fires (`Time::MAX`: none).
    timer_at: Time,
    /// Link ends and dials, sorted by connection.
    wires: Vec<WireEnd>,
    /// The peers whose servers this peer bootstraps through.
    bootstrap: Box<[u32]>,
}

impl Peer {
    fn wire(&self, conn: ConnId) -> Option<(usize, &WireEnd)> {
        let at = self.wires.binary_search_by_key(&conn, |w| w.conn).ok()?;
        Some((at, &self.wires[at]))
    }

    fn insert_wire(&mut self, wire: WireEnd) {
        match self.wires.binary_search_by_key(&wire.conn, |w| w.conn) {
            Ok(at) => self.wires[at] = wire,
            Err(at) => {
                reserve_one(&mut self.wires);
                self.wires.insert(at, wire);
            }
        }
    }

    fn remove_wire(&mut self, conn: ConnId) -> Option<WireEnd> {
        let at = self.wires.binary_search_by_key(&conn, |w| w.conn).ok()?;
        let wire = self.wires.remove(at);
        shrink_slack(&mut self.wires);
        Some(wire)
    }
}

/// Something scheduled to happen.
#[derive(Debug, Serialize, Deserialize)]
enum Ev {
    /// A peer of the initial population joins.
    Join(u32),
    /// A frame arrives at `to`, sent by `from`.
    Frame {
        to: Endpoint,
        from: Endpoint,
        frame: String,
    },
    /// A keepalive probe from `from` arrives at `to`: a WebSocket ping, or for a WebRTC
    /// link the ICE consent check that stands for it.
    Ping { to: Endpoint, from: Endpoint },
    /// The answer to a probe arrives back at the prober.
    Pong(Endpoint),
    /// ICE at this end of a WebRTC link gives the path up, if the partition (of generation
    /// `.1`) that cut it still does.
    IceLost(Endpoint, u32),
    /// A dialled WebSocket opened at the client.
    Opened(Endpoint),
    /// A connection closed (the peer closed it, it was reset, or a dial failed).
    Closed(Endpoint),
    /// A WebSocket dial reaches the server.
    Accept { server: u32, client: Endpoint },
    /// The WebRTC stack at `at` produced a local signal.
    LocalSignal { at: Endpoint, kind: SignalKind },
    /// ICE and DTLS completed: both data channels open.
    WebRtcOpen {
        initiator: Endpoint,
        responder: Endpoint,
    },
    /// A node's timer entry.
    Timer { node: u32, generation: u32 },
    /// A scheduled scenario action.
    Action(u32),
    /// The next message of a traffic stream.
    Traffic(u32),
    /// The next churn join or leave (of churn generation `.1`).
    ChurnJoin(u32),
    /// See [`Ev::ChurnJoin`].
    ChurnLeave(u32),
}

/// Why something sent on a connection did not travel.
enum Cut {
    /// The simulator carries no such connection (a bug if it happens to a frame).
    Unroutable,
    /// Sender and receiver are in different partition groups.
    Partitioned,
    /// The frame filter dropped it.
    Filtered,
    /// The loss model dropped it.
    Lost,
}

/// A scenario step, applied at a virtual time with [`Sim::at`] (or at once with
/// [`Sim::apply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// These peers crash: their state is gone, their links are seen to close after
    /// [`NetConfig::crash_close_delay`].
    Crash(Vec<PeerIndex>),
    /// These crashed or departed peers start again: a new process, so a new seed and a new
    /// id, the same server url, bootstrap urls chosen again as at the first join.
    Restart(Vec<PeerIndex>),
    /// These peers shut down cleanly (closing their links).
    Leave(Vec<PeerIndex>),
    /// This many new peers join now.
    Join(usize),
    /// Splits the network: each group can only reach itself; peers in no group form one
    /// more group. Replaces any earlier partition.
    Partition(Vec<Vec<PeerIndex>>),
    /// Ends every partition.
    Heal,
    /// One message from a peer to another.
    Send {
        /// The sender.
        from: PeerIndex,
        /// The recipient.
        to: PeerIndex,
    },
    /// Peer `from` asks its node for a direct link to `to` (`Node::connect`).
    Connect {
        /// The peer asking.
        from: PeerIndex,
        /// The peer to link to.
        to: PeerIndex,
    },
    /// Starts a stream of random-pair messages among live peers.
    Traffic(Traffic),
    /// Starts churn (replacing any earlier churn).
    Churn(Churn),
    /// Stops churn.
    StopChurn,
    /// Sets the egress model of these peers (`None`: the default model of every peer that
    /// has no model of its own).
    SetLinkModel {
        /// The peers, or `None` for the default.
        peers: Option<Vec<PeerIndex>>,
        /// The model.
        model: LinkModel,
    },
}

/// A message the simulator sent, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The sender.
    pub from: u32,
    /// The recipient.
    pub to: u32,
    /// The recipient's incarnation when the message was sent (a restarted peer has a new
    /// id, so the message can no longer reach it).
    pub to_incarnation: u32,
    /// The sender's id.
    pub from_id: PeerId,
    /// When it was sent.
    pub sent_at: Time,
    /// When it first arrived, if it did.
    pub delivered_at: Option<Time>,
    /// Peers it passed through, the sender included (1 = direct), on first arrival.
    pub hops: u8,
    /// `send` refused it (for example the sender's pre-link queue was full).
    pub refused: bool,
}

/// Delivery of a set of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Delivery {
    /// Messages sent.
    pub sent: u64,
    /// Messages that arrived.
    pub delivered: u64,
}

impl Delivery {
    /// delivered / sent (1 when nothing was sent).
    pub fn rate(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.delivered as f64 / self.sent as f64
        }
    }
}

/// Running counters of the simulation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Queue entries processed.
    pub events: u64,
    /// Frames the nodes transmitted.
    pub frames: u64,
    /// Of those, frames carrying a `user` payload.
    pub user_frames: u64,
    /// Frames dropped by the loss model.
    pub frames_lost: u64,
    /// Extra copies made by the duplication model.
    pub frames_duplicated: u64,
    /// Frames dropped by the frame filter (see [`Sim::set_frame_filter`]).
    pub frames_filtered: u64,
    /// Frames dropped because sender and receiver were in different partition groups.
    pub frames_partitioned: u64,
    /// Frames that reached a connection that no longer existed (closed, or its peer crashed).
    pub frames_stale: u64,
    /// Frames transmitted on a connection the simulator had no link for (a bug if non-zero).
    pub frames_unroutable: u64,
    /// WebSocket dials made.
    pub dials: u64,
    /// Dials that failed (no server, refused, unreachable).
    pub dials_failed: u64,
    /// WebRTC sessions started (each side counts one).
    pub webrtc_sessions: u64,
    /// WebRTC connections opened.
    pub webrtc_opened: u64,
    /// Connect attempts the nodes reported failed.
    pub connects_failed: u64,
    /// Bootstrap dials the nodes reported failed.
    pub bootstraps_failed: u64,
    /// Deliveries of a message that had already arrived.
    pub duplicate_deliveries: u64,
    /// User messages that arrived at the wrong peer or with the wrong sender (a bug if
    /// non-zero).
    pub misdelivered: u64,
    /// Peers that joined (initial population and churn).
    pub joins: u64,
    /// Clean departures.
    pub leaves: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Keepalive probes the nodes asked for (pings sent on silent links).
    pub probes: u64,
    /// Probes answered: the pong came back while the prober's connection was open.
    pub probes_answered: u64,
    /// WebRTC link ends ICE gave up on, cut by a partition (`NetConfig::ice_failed_timeout`).
    pub ice_failures: u64,
}

#[derive(Serialize, Deserialize)]
struct TrafficStream {
    traffic: Traffic,
    start: Time,
    sent: u64,
}

/// A deterministic simulation of a peer-relay network.
// Serde's `remote = "Self"` derives inherent `Sim::serialize`/`deserialize` rather than the
// traits: the form is everything but the peers (a snapshot holds them one record each, after
// it) and not a whole simulation, so only `Sim::save` and `Sim::load` use it.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Sim {
    config: SimConfig,
    /// The node config of every peer without a server, built once and shared: a server's
    /// config carries its own url, a browser-like peer's is the same for all.
    #[serde(with = "crate::snapshot::shared_config")]
    browser_config: Arc<Config>,
    now: Time,
    queue: EventQueue<Ev>,
    #[serde(skip)]
    peers: Vec<Peer>,
    /// WebRTC sessions being set up, by node, incarnation and connection number.
    sessions: BTreeMap<SessionKey, (Endpoint, Session)>,
    /// Egress models; index 0 is the default.
    link_models: Vec<LinkModel>,
    /// Per-pair egress overrides, rarely used (so usually empty and never looked up).
    pair_models: BTreeMap<(u32, u32), u16>,
    net_rng: SimRng,
    workload_rng: SimRng,
    churn_rng: SimRng,
    trace: TraceHasher,
    counters: Counters,
    messages: Vec<MessageRecord>,
    undelivered: u64,
    /// `histogram[h]`: messages first delivered with path length `h`.
    hops_histogram: Vec<u64>,
    actions: Vec<Option<Action>>,
    traffic: Vec<TrafficStream>,
    churn: Option<Churn>,
    churn_generation: u32,
    /// Counts partitions and heals, so a pending [`Ev::IceLost`] of an earlier partition
    /// does nothing.
    partition_generation: u32,
    /// Servers in join order, for random bootstrap choices.
    servers_joined: Vec<u32>,
    alive: usize,
    /// Link count every peer aims for (bounded by the population).
    link_target: u16,
    /// Alive peers below `link_target`.
    below_target: usize,
    initial_joined: usize,
    converged_at: Option<Time>,
    /// Wall time this run spent in earlier processes (before the snapshot it was restored
    /// from).
    wall_before: Duration,
    /// The highest peak resident memory of those processes.
    peak_rss_before: u64,
    #[serde(skip, default = "Instant::now")]
    started: Instant,
    /// When progress was last printed, if it is printed.
    #[serde(skip)]
    progress: Option<Instant>,
    #[serde(skip)]
    observer: Option<Observer>,
    #[serde(skip)]
    frame_filter: Option<FrameFilter>,
    /// Resident memory at which the run stops (checked every 65,536 events).
    rss_limit: Option<u64>,
    /// Why the run stopped early, if it did.
    aborted: Option<String>,
    /// When the run pauses (checked every 65,536 events), so it can be saved.
    #[serde(skip)]
    pause_at: Option<Instant>,
    /// The run pauses (at the same checks) once this is set, say by a signal handler.
    #[serde(skip)]
    pause_flag: Option<Arc<AtomicBool>>,
    /// It paused; the next run call goes on.
    #[serde(skip)]
    paused: bool,
}

/// A snapshot's record of a [`Sim`] without its peers.
struct Head<'a>(&'a Sim);

impl Serialize for Head<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Sim::serialize(self.0, s)
    }
}

/// [`Head`], loaded.
struct OwnedHead(Sim);

impl<'de> Deserialize<'de> for OwnedHead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Sim::deserialize(d).map(OwnedHead)
    }
}

/// A callback that sees every output of every node (see [`Sim::set_observer`]).
pub type Observer = Box<dyn FnMut(Time, PeerIndex, &Output)>;

/// A predicate over transmitted frames `(from, to, frame)`: false drops the frame (see
/// [`Sim::set_frame_filter`]).
pub type FrameFilter = Box<dyn FnMut(PeerIndex, PeerIndex, &str) -> bool>;

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("peers", &self.peers.len())
            .field("alive", &self.alive)
            .field("queued", &self.queue.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation whose initial population joins one every `join_interval` from time zero.
    pub fn new(config: SimConfig) -> Result<Sim, String> {
        config.validate()?;
        let peers = config.peers;
        let link_target = config.node.target_links.min(peers - 1) as u16;
        let browser_config = Arc::new(Config {
            advertised_url: None,
            webrtc: true,
            ..config.node.clone()
        });
        let mut sim = Sim {
            browser_config,
            now: Time::ZERO,
            queue: EventQueue::new(),
            peers: Vec::with_capacity(peers),
            sessions: BTreeMap::new(),
            link_models: vec![config.net.link],
            pair_models: BTreeMap::new(),
            net_rng: SimRng::new(config.seed, Stream::Network),
            workload_rng: SimRng::new(config.seed, Stream::Workload),
            churn_rng: SimRng::new(config.seed, Stream::Churn),
            trace: TraceHasher::default(),
            counters: Counters::default(),
            messages: Vec::new(),
            undelivered: 0,
            hops_histogram: vec![0; config.node.max_hops + 2],
            actions: Vec::new(),
            traffic: Vec::new(),
            churn: None,
            churn_generation: 0,
            partition_generation: 0,
            servers_joined: Vec::new(),
            alive: 0,
            link_target,
            below_target: 0,
            initial_joined: 0,
            converged_at: None,
            wall_before: Duration::ZERO,
            peak_rss_before: 0,
            started: Instant::now(),
            progress: None,
            observer: None,
            frame_filter: None,
            rss_limit: None,
            aborted: None,
            pause_at: None,
            pause_flag: None,
            paused: false,
            config,
        };
        for index in 0..peers {
            sim.add_peer_slot();
            let at = Time::ZERO + sim.config.join_interval * index as u32;
            sim.queue.push(at, Ev::Join(index as u32));
        }
        Ok(sim)
    }

    /// Calls `observer` with every output of every node, in order, before it is carried out
    /// (`None` removes it). For tests and debugging: it sees exactly what the trace hash
    /// covers.
    pub fn set_observer(&mut self, observer: Option<Observer>) {
        self.observer = observer;
    }

    /// Drops every transmitted frame for which `filter(from, to, frame)` is false, like a
    /// firewall rule matching on content (`None` removes it). For fault injection in tests,
    /// for example losing only WebRTC signals.
    pub fn set_frame_filter(&mut self, filter: Option<FrameFilter>) {
        self.frame_filter = filter;
    }

    /// Stops running (for good) once the process's resident memory exceeds `bytes`, so a
    /// run too large for the machine ends with a report instead of exhausting memory.
    pub fn set_rss_limit(&mut self, bytes: Option<u64>) {
        self.rss_limit = bytes;
    }

    /// Why the run stopped early (the memory limit), if it did.
    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// Pauses the run at wall-clock time `at` (`None`: never): the run call under way
    /// returns early, between two events, and [`Sim::paused`] says so. Calling it again
    /// goes on as if it had never returned, so a paused run can be saved ([`Sim::save`])
    /// and resumed in another process with the same outcome and trace.
    pub fn set_pause_at(&mut self, at: Option<Instant>) {
        self.pause_at = at;
    }

    /// Pauses the run, as [`Sim::set_pause_at`] does, while `flag` is raised (lower it to go
    /// on): a signal handler can stop a long run so that it is saved rather than lost.
    pub fn set_pause_flag(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.pause_flag = flag;
    }

    /// The last run call returned because the pause time passed (or the pause flag was
    /// raised), before its goal.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Prints progress to stderr every few seconds of wall time while running.
    pub fn set_progress(&mut self, on: bool) {
        self.progress = on.then(Instant::now);
    }

    // ---- queries ------------------------------------------------------------------------

    /// The config the simulation was built from.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Peers ever created (alive or not).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Peers running now.
    pub fn alive_count(&self) -> usize {
        self.alive
    }

    /// Whether peer `index` is running.
    pub fn is_alive(&self, index: PeerIndex) -> bool {
        self.peers
            .get(index)
            .is_some_and(|p| p.state == PeerState::Alive)
    }

    /// The node of peer `index`, while it runs.
    pub fn node(&self, index: PeerIndex) -> Option<&Node> {
        self.peers.get(index)?.node.as_deref()
    }

    /// The id of peer `index`, while it runs.
    pub fn id(&self, index: PeerIndex) -> Option<PeerId> {
        self.node(index).map(Node::id)
    }

    /// Established links of peer `index`.
    pub fn links_of(&self, index: PeerIndex) -> usize {
        self.peers.get(index).map_or(0, |p| usize::from(p.links))
    }

    /// When every peer of the initial population first had its link target, if it has.
    pub fn converged_at(&self) -> Option<Time> {
        self.converged_at
    }

    /// The link count each peer aims for: `target_links`, or fewer in a tiny network.
    pub fn link_target(&self) -> usize {
        usize::from(self.link_target)
    }

    /// Running counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Every message sent so far, by [`MessageId`].
    pub fn messages(&self) -> &[MessageRecord] {
        &self.messages
    }

    /// Delivery of the messages with ids in `ids`.
    pub fn delivery_of(&self, ids: Range<MessageId>) -> Delivery {
        let slice =
            &self.messages[ids.start.min(self.messages.len())..ids.end.min(self.messages.len())];
        delivery(slice.iter())
    }

    /// Delivery of the messages `filter` selects.
    pub fn delivery_where(&self, filter: impl Fn(&MessageRecord) -> bool) -> Delivery {
        delivery(self.messages.iter().filter(|m| filter(m)))
    }

    /// Messages not (yet) delivered.
    pub fn undelivered(&self) -> u64 {
        self.undelivered
    }

    /// A line to replay this run: its seed and full config as JSON. Tests print it when
    /// they fail.
    pub fn replay_hint(&self) -> String {
        format!(
            "replay: seed={} config={}",
            self.config.seed,
            serde_json::to_string(&self.config).unwrap_or_default()
        )
    }

    /// The run report (see [`Report`]).
    pub fn report(&self) -> Report {
        report::build(self)
    }

    pub(crate) fn hops_histogram(&self) -> &[u64] {
        &self.hops_histogram
    }

    /// Wall time the run took so far, in this process and the ones before a restore.
    pub(crate) fn wall_elapsed(&self) -> Duration {
        self.wall_before + self.started.elapsed()
    }

    /// Peak resident memory of the run so far, in this process and the ones before a
    /// restore.
    pub(crate) fn peak_rss(&self) -> u64 {
        self.peak_rss_before
            .max(report::peak_rss_bytes().unwrap_or(0))
    }

    /// Link counts of the running peers.
    pub(crate) fn alive_link_counts(&self) -> impl Iterator<Item = u16> + '_ {
        self.peers
            .iter()
            .filter(|p| p.state == PeerState::Alive)
            .map(|p| p.links)
    }

    /// The running nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.peers.iter().filter_map(|p| p.node.as_deref())
    }

    /// Checks that the simulator and the nodes agree about links: every link a node has runs
    /// over a connection the simulator carries, to a running peer that links back over the
    /// other end. Returns one line per disagreement (empty: consistent). Links closing right
    /// now (a close still in flight) show up too, so check after a quiet period.
    pub fn link_inconsistencies(&self) -> Vec<String> {
        let by_id: BTreeMap<PeerId, usize> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.node.as_ref()?.id(), i)))
            .collect();
        let mut problems = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let Some(node) = &peer.node else { continue };
            for (peer_id, link) in node.links() {
                let Some(&j) = by_id.get(peer_id) else {
                    problems.push(format!("peer {i}: link to an id no running peer has"));
                    continue;
                };
                let Some((_, wire)) = peer.wire(link.conn) else {
                    problems.push(format!(
                        "peer {i}: link to {j} over {:?} the sim does not carry",
                        link.conn
                    ));
                    continue;
                };
                if wire.peer as usize != j {
                    problems.push(format!("peer {i}: link to {j} runs to peer {}", wire.peer));
                    continue;
                }
                let back = self.peers[j].node.as_ref().and_then(|n| {
                    n.links()
                        .find(|(id, _)| **id == node.id())
                        .map(|(_, l)| (l.conn, l.spare))
                });
                // A connection the other side still holds open without using it is one it
                // shed or found duplicate: it retires and closes within `shed_grace`.
                let retiring = || self.peers[j].wire(wire.peer_conn).is_some();
                match back {
                    _ if back.is_none_or(|(conn, spare)| {
                        conn != wire.peer_conn && spare != Some(wire.peer_conn)
                    }) && retiring() => {}
                    None => problems.push(format!("peer {i}: link to {j}, who has no link back")),
                    Some((conn, spare))
                        if conn != wire.peer_conn && spare != Some(wire.peer_conn) =>
                    {
                        problems.push(format!(
                            "peer {i}: link to {j} over a connection {j} does not use for {i}"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        problems
    }

    // ---- snapshots --------------------------------------------------------------------

    /// Saves the whole simulation to `out` (see [`crate::snapshot`]), between two events:
    /// [`Sim::load`] in any later process of the same build goes on with the same outcome
    /// and trace hash as this one would. The observer, progress printing, the pause time
    /// and the memory limit's process are not state and are not saved; a simulation with a
    /// frame filter (code that changes the run) cannot be saved.
    pub fn save(&mut self, out: impl Write) -> Result<(), SnapshotError> {
        self.save_with(&(), out)
    }

    /// [`Sim::save`] with the caller's own state `extra` (for example where in a scripted
    /// run it was), given back by [`Sim::load_with`].
    pub fn save_with(
        &mut self,
        extra: &impl Serialize,
        out: impl Write,
    ) -> Result<(), SnapshotError> {
        if self.frame_filter.is_some() {
            return Err(SnapshotError::FrameFilter);
        }
        // The wall time and peak memory so far go with the run.
        self.wall_before = self.wall_elapsed();
        self.started = Instant::now();
        self.peak_rss_before = self.peak_rss();
        let mut records = RecordWriter::new(out)?;
        records.record(extra)?;
        records.record(&Head(self))?;
        records.count(self.peers.len() as u64)?;
        for peer in &self.peers {
            records.record(peer)?;
        }
        records.finish()
    }

    /// A simulation saved by [`Sim::save`].
    pub fn load(input: impl Read) -> Result<Sim, SnapshotError> {
        Sim::load_with::<()>(input).map(|(sim, ())| sim)
    }

    /// A simulation saved by [`Sim::save_with`], and the caller's state saved with it.
    pub fn load_with<E: DeserializeOwned>(input: impl Read) -> Result<(Sim, E), SnapshotError> {
        let mut records = RecordReader::new(input)?;
        let extra: E = records.record()?;
        let OwnedHead(mut sim) = records.record()?;
        let count = records.count()?;
        // Only a hint, and read before the checksum is: a damaged count must not reserve
        // more than a real million-peer run needs.
        sim.peers
            .reserve(count.min(sim.config.peers as u64).min(1 << 20) as usize);
        for _ in 0..count {
            let mut peer: Peer = records.record()?;
            if let Some(node) = &mut peer.node {
                // Every browser-like peer shares one config again, as before the save.
                if !peer.server {
                    node.share_config(&sim.browser_config);
                }
            }
            sim.peers.push(peer);
        }
        records.finish()?;
        sim.started = Instant::now();
        Ok((sim, extra))
    }

    // ---- running ----------------------------------------------------------------------

    /// Runs every event up to and including virtual time `until`.
    pub fn run_until(&mut self, until: Time) {
        self.run_while(until, |_| true);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Runs until every peer of the initial population reached its link target, or until
    /// `deadline`. Returns when it converged.
    pub fn run_until_converged(&mut self, deadline: Time) -> Option<Time> {
        self.run_while(deadline, |sim| sim.converged_at.is_none());
        self.converged_at
    }

    /// Runs until every message sent so far arrived and no traffic stream has messages
    /// left, or until `deadline`.
    pub fn run_until_delivered(&mut self, deadline: Time) {
        self.run_while(deadline, |sim| {
            sim.undelivered > 0 || sim.traffic.iter().any(|t| t.sent < t.traffic.messages)
        });
    }

    fn run_while(&mut self, until: Time, keep_going: impl Fn(&Sim) -> bool) {
        if self.aborted.is_some() {
            return;
        }
        self.paused = false;
        while keep_going(self) {
            match self.queue.peek_time() {
                Some(at) if at <= until => {}
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            let counted = self.counters.events;
            self.dispatch(ev);
            // Checks come once per 65,536 events: a superseded timer entry is no event, and
            // must not repeat the check (a run resumed with no time budget would pause
            // again where it stood).
            if self.counters.events != counted && self.counters.events & 0xffff == 0 {
                self.maybe_print_progress();
                if self.over_rss_limit() {
                    return;
                }
                if self.pause_due() {
                    self.paused = true;
                    return;
                }
            }
        }
    }

    /// Whether the pause time passed (used up) or the pause flag is raised.
    fn pause_due(&mut self) -> bool {
        let flagged = self
            .pause_flag
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed));
        let timed = self.pause_at.is_some_and(|at| Instant::now() >= at);
        if timed {
            self.pause_at = None;
        }
        flagged || timed
    }

    fn over_rss_limit(&mut self) -> bool {
        let Some(limit) = self.rss_limit else {
            return false;
        };
        let rss = report::current_rss_bytes().unwrap_or(0);
        if rss <= limit {
            return false;
        }
        self.aborted = Some(format!(
            "resident memory {} MiB passed the limit of {} MiB at {:?} with {} peers alive",
            rss >> 20,
            limit >> 20,
            self.now,
            self.alive
        ));
        true
    }

    fn maybe_print_progress(&mut self) {
        if self
            .progress
            .is_none_or(|last| last.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.progress = Some(Instant::now());
        let wall = self.wall_elapsed().as_secs_f64();
        let links: u64 = self.alive_link_counts().map(u64::from).sum();
        eprintln!(
            "[sim] t={:.1}s wall={wall:.0}s events={} ({:.2}M/s) alive={} links/peer={:.1} \
             below-target={} messages={}/{} rss={}MiB{}",
            self.now.as_micros() as f64 / 1e6,
            self.counters.events,
            self.counters.events as f64 / wall / 1e6,
            self.alive,
            links as f64 / self.alive.max(1) as f64,
            self.below_target,
            self.messages.len() as u64 - self.undelivered,
            self.messages.len(),
            report::current_rss_bytes().unwrap_or(0) >> 20,
            report::heap_bytes().map_or(String::new(), |b| format!(" heap={}MiB", b >> 20)),
        );
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Ev::Timer { node, generation } = ev {
            // A superseded timer entry is no event at all.
            if self.peers[node as usize].timer_generation != generation {
                return;
            }
            self.counters.events += 1;
            return self.on_timer(node);
        }
        self.counters.events += 1;
        match ev {
            Ev::Join(index) => self.join(index),
            Ev::Frame { to, from, frame } => self.on_frame(to, from, frame),
            Ev::Ping { to, from } => self.on_ping(to, from),
            Ev::Pong(at) => self.on_pong(at),
            Ev::IceLost(at, generation) => self.on_ice_lost(at, generation),
            Ev::Opened(at) => {
                if self.live_wire(at).is_some() {
                    self.input(at.node, Input::Opened { conn: at.conn });
                }
            }
            Ev::Closed(at) => self.on_closed(at),
            Ev::Accept { server, client } => self.on_accept(server, client),
            Ev::LocalSignal { at, kind } => {
                if self.is_current(at) && self.sessions.contains_key(&session_key(at)) {
                    let signal = webrtc::signal_json(kind, at);
                    self.input(
                        at.node,
                        Input::LocalSignal {
                            conn: at.conn,
                            signal: &signal,
                        },
                    );
                }
            }
            Ev::WebRtcOpen {
                initiator,
                responder,
            } => self.on_webrtc_open(initiator, responder),
            Ev::Action(index) => {
                if let Some(action) = self.actions[index as usize].take() {
                    self.apply(action);
                }
            }
            Ev::Traffic(stream) => self.on_traffic(stream),
            Ev::ChurnJoin(generation) => self.on_churn(generation, true),
            Ev::ChurnLeave(generation) => self.on_churn(generation, false),
            Ev::Timer { .. } => unreachable!("handled above"),
        }
    }

    // ---- scenario -----------------------------------------------------------------------

    /// Schedules `action` at virtual time `at` (now, if `at` has passed).
    pub fn at(&mut self, at: Time, action: Action) {
        let index = self.actions.len() as u32;
        self.actions.push(Some(action));
        self.queue.push(at.max(self.now), Ev::Action(index));
    }

    /// Applies `action` now.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Crash(peers) => peers.into_iter().for_each(|p| self.crash(p)),
            Action::Restart(peers) => peers.into_iter().for_each(|p| self.restart(p)),
            Action::Leave(peers) => peers.into_iter().for_each(|p| self.leave(p)),
            Action::Join(count) => {
                for _ in 0..count {
                    self.join_new_peer();
                }
            }
            Action::Partition(groups) => self.partition(&groups),
            Action::Heal => self.heal(),
            Action::Send { from, to } => {
                self.send(from, to);
            }
            Action::Connect { from, to } => self.connect(from, to),
            Action::Traffic(traffic) => self.start_traffic(traffic),
            Action::Churn(churn) => self.start_churn(churn),
            Action::StopChurn => {
                self.churn = None;
                self.churn_generation += 1;
            }
            Action::SetLinkModel { peers, model } => self.set_link_model(peers.as_deref(), model),
        }
    }

    /// Crashes peer `index` now (no effect unless it runs).
    pub fn crash(&mut self, index: PeerIndex) {
        if !self.is_alive(index) {
            return;
        }
        let delay = self.config.net.crash_close_delay;
        let wires = std::mem::take(&mut self.peers[index].wires);
        for wire in wires {
            if let Some(remote) = wire.remote() {
                self.queue.push(self.now + delay, Ev::Closed(remote));
            }
        }
        self.counters.crashes += 1;
        self.stop(index, PeerState::Crashed);
    }

    /// Shuts peer `index` down cleanly now: it closes its links, then stops.
    pub fn leave(&mut self, index: PeerIndex) {
        if !self.is_alive(index) {
            return;
        }
        if let Some(node) = self.peers[index].node.as_mut() {
            node.shutdown(self.now);
        }
        self.drain(index as u32);
        self.counters.leaves += 1;
        self.stop(index, PeerState::Left);
    }

    /// Restarts a crashed or departed peer now.
    pub fn restart(&mut self, index: PeerIndex) {
        let Some(peer) = self.peers.get(index) else {
            return;
        };
        if matches!(peer.state, PeerState::Crashed | PeerState::Left) {
            self.counters.restarts += 1;
            // Its old bootstrap server may be gone: choose again, as at the first join.
            let bootstrap = self.choose_bootstrap(index as u32);
            self.peers[index].bootstrap = bootstrap;
            self.start(index as u32);
        }
    }

    /// Adds a new peer that joins now; returns its index.
    pub fn join_new_peer(&mut self) -> PeerIndex {
        let index = self.add_peer_slot();
        self.join(index as u32);
        index
    }

    /// Splits the network into `groups` (see [`Action::Partition`]).
    pub fn partition(&mut self, groups: &[Vec<PeerIndex>]) {
        self.heal();
        for (g, members) in groups.iter().enumerate() {
            for &p in members {
                if let Some(peer) = self.peers.get_mut(p) {
                    peer.group = g as u32 + 1;
                }
            }
        }
        // ICE at each end of a WebRTC link the partition cuts gives up after its timeout.
        let at = self.now + self.config.net.ice_failed_timeout;
        let generation = self.partition_generation;
        let mut lost = Vec::new();
        for (index, peer) in self.peers.iter().enumerate() {
            let Some(node) = peer.node.as_deref() else {
                continue;
            };
            let webrtc = node
                .links()
                .filter(|(_, l)| l.transport == peer_relay_core::Transport::WebRtc);
            for (_, link) in webrtc {
                let remote = peer.wire(link.conn).and_then(|(_, w)| w.remote());
                if remote.is_some_and(|r| !self.reachable(index as u32, r.node)) {
                    lost.push(Endpoint {
                        node: index as u32,
                        incarnation: peer.incarnation,
                        conn: link.conn,
                    });
                }
            }
        }
        for end in lost {
            self.queue.push(at, Ev::IceLost(end, generation));
        }
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.partition_generation = self.partition_generation.wrapping_add(1);
        for peer in &mut self.peers {
            peer.group = 0;
        }
    }

    /// Sets the egress model of `peers` (`None`: the default model).
    pub fn set_link_model(&mut self, peers: Option<&[PeerIndex]>, model: LinkModel) {
        match peers {
            None => self.link_models[0] = model,
            Some(peers) => {
                let index = self.link_models.len() as u16;
                self.link_models.push(model);
                for &p in peers {
                    if let Some(peer) = self.peers.get_mut(p) {
                        peer.egress = index;
                    }
                }
            }
        }
    }

    /// Sets the model of frames from `a` to `b` and from `b` to `a`, over any per-peer
    /// model.
    pub fn set_pair_link_model(&mut self, a: PeerIndex, b: PeerIndex, model: LinkModel) {
        let index = self.link_models.len() as u16;
        self.link_models.push(model);
        self.pair_models.insert((a as u32, b as u32), index);
        self.pair_models.insert((b as u32, a as u32), index);
    }

    /// Sends one message from `from` to `to` now. `None` if either is not running.
    pub fn send(&mut self, from: PeerIndex, to: PeerIndex) -> Option<MessageId> {
        if from == to || !self.is_alive(from) || !self.is_alive(to) {
            return None;
        }
        let id = self.messages.len();
        let to_id = self.id(to)?;
        let from_id = self.id(from)?;
        let now = self.now;
        let node = self.peers[from].node.as_mut()?;
        let refused = node.send(now, to_id, &(id as u64)).is_err();
        self.messages.push(MessageRecord {
            from: from as u32,
            to: to as u32,
            to_incarnation: self.peers[to].incarnation,
            from_id,
            sent_at: now,
            delivered_at: None,
            hops: 0,
            refused,
        });
        self.undelivered += 1;
        self.drain(from as u32);
        Some(id)
    }

    /// Peer `from` asks for a direct link to `to` now (no effect unless both run).
    pub fn connect(&mut self, from: PeerIndex, to: PeerIndex) {
        let (Some(to_id), true) = (self.id(to), self.is_alive(from)) else {
            return;
        };
        let now = self.now;
        if let Some(node) = self.peers[from].node.as_mut() {
            // Refusals (own id, too many pending) show as no link; tests look at links.
            let _ = node.connect(now, to_id);
        }
        self.drain(from as u32);
    }

    /// Starts a stream of random-pair messages now.
    pub fn start_traffic(&mut self, traffic: Traffic) {
        if traffic.messages == 0 || traffic.rate.is_nan() || traffic.rate <= 0.0 {
            return;
        }
        let stream = self.traffic.len() as u32;
        self.traffic.push(TrafficStream {
            traffic,
            start: self.now,
            sent: 0,
        });
        self.queue.push(self.now, Ev::Traffic(stream));
    }

    /// Starts churn now (replacing any earlier churn).
    pub fn start_churn(&mut self, churn: Churn) {
        self.churn_generation += 1;
        self.churn = Some(churn);
        let generation = self.churn_generation;
        if churn.joins_per_sec > 0.0 {
            let at = self.now + self.churn_gap(churn.joins_per_sec);
            self.queue.push(at, Ev::ChurnJoin(generation));
        }
        if churn.leaves_per_sec > 0.0 {
            let at = self.now + self.churn_gap(churn.leaves_per_sec);
            self.queue.push(at, Ev::ChurnLeave(generation));
        }
    }

    fn churn_gap(&mut self, per_sec: f64) -> Duration {
        let mean = Duration::from_secs_f64(1.0 / per_sec);
        self.churn_rng.exponential(mean)
    }

    fn on_churn(&mut self, generation: u32, join: bool) {
        let Some(churn) = self.churn.filter(|_| generation == self.churn_generation) else {
            return;
        };
        if join {
            self.join_new_peer();
            let at = self.now + self.churn_gap(churn.joins_per_sec);
            self.queue.push(at, Ev::ChurnJoin(generation));
        } else {
            // Seed peers (where bootstrap urls point) stay, so joiners can still join.
            if let Some(victim) = self.random_alive(&mut |sim, p| !sim.is_seed(p), true) {
                if churn.crash {
                    self.crash(victim);
                } else {
                    self.leave(victim);
                }
            }
            let at = self.now + self.churn_gap(churn.leaves_per_sec);
            self.queue.push(at, Ev::ChurnLeave(generation));
        }
    }

    fn on_traffic(&mut self, stream: u32) {
        let s = &self.traffic[stream as usize];
        if s.sent >= s.traffic.messages {
            return;
        }
        if let Some(from) = self.random_alive(&mut |_, _| true, false) {
            if let Some(to) = self.random_alive(&mut |_, p| p != from, false) {
                self.send(from, to);
            }
        }
        let s = &mut self.traffic[stream as usize];
        s.sent += 1;
        if s.sent < s.traffic.messages {
            // Evenly spaced from the stream's start, without drift.
            let offset = (s.sent as f64 * 1e6 / s.traffic.rate) as u64;
            let at = s.start + Duration::from_micros(offset);
            self.queue.push(at, Ev::Traffic(stream));
        }
    }

    /// A uniformly random running peer that `accept` accepts (rejection sampling; gives up
    /// after many tries).
    fn random_alive(
        &mut self,
        accept: &mut dyn FnMut(&Sim, PeerIndex) -> bool,
        churn: bool,
    ) -> Option<PeerIndex> {
        let n = self.peers.len() as u64;
        for _ in 0..10_000 {
            let rng = if churn {
                &mut self.churn_rng
            } else {
                &mut self.workload_rng
            };
            let p = rng.below(n) as usize;
            if self.is_alive(p) && accept(self, p) {
                return Some(p);
            }
        }
        None
    }

    fn is_seed(&self, index: PeerIndex) -> bool {
        match self.config.bootstrap {
            Bootstrap::Star => index == 0,
            Bootstrap::Seeds { count } => self.servers_joined
                [..count.min(self.servers_joined.len())]
                .contains(&(index as u32)),
            Bootstrap::Chain | Bootstrap::Random => index == 0,
        }
    }

    // ---- peer lifecycle ---------------------------------------------------------------

    fn add_peer_slot(&mut self) -> PeerIndex {
        let index = self.peers.len();
        let server = is_server(index, self.config.servers, self.config.peers);
        self.peers.push(Peer {
            node: None,
            state: PeerState::NotJoined,
            incarnation: 0,
            server,
            links: 0,
            group: 0,
            egress: 0,
            timer_generation: 0,
            timer_at: Time::MAX,
            wires: Vec::new(),
            bootstrap: Box::new([]),
        });
        index
    }

    /// The bootstrap servers of a peer joining now.
    fn choose_bootstrap(&mut self, index: u32) -> Box<[u32]> {
        let earlier = &self.servers_joined;
        let chosen: Vec<u32> = match self.config.bootstrap {
            Bootstrap::Star => vec![0],
            Bootstrap::Seeds { count } => {
                let seeds = &earlier[..count.min(earlier.len())];
                seeds.to_vec()
            }
            Bootstrap::Chain => earlier.last().copied().into_iter().collect(),
            Bootstrap::Random => {
                let mut pick = None;
                for _ in 0..64 {
                    if earlier.is_empty() {
                        break;
                    }
                    let s = earlier[self.workload_rng.below(earlier.len() as u64) as usize];
                    if self.peers[s as usize].state == PeerState::Alive {
                        pick = Some(s);
                        break;
                    }
                }
                pick.or(earlier.last().copied()).into_iter().collect()
            }
        };
        chosen.into_iter().filter(|&s| s != index).collect()
    }

    fn join(&mut self, index: u32) {
        let peer = &self.peers[index as usize];
        if peer.state != PeerState::NotJoined {
            return;
        }
        let bootstrap = self.choose_bootstrap(index);
        self.peers[index as usize].bootstrap = bootstrap;
        if (index as usize) < self.config.peers {
            self.initial_joined += 1;
        }
        self.counters.joins += 1;
        self.start(index);
        if self.peers[index as usize].server {
            self.servers_joined.push(index);
        }
        self.check_converged();
    }

    /// Starts a node for peer `index` in a new incarnation and bootstraps it.
    fn start(&mut self, index: u32) {
        let i = index as usize;
        let config = if self.peers[i].server {
            Arc::new(Config {
                advertised_url: Some(url_of(i)),
                webrtc: self.config.server_webrtc,
                ..self.config.node.clone()
            })
        } else {
            Arc::clone(&self.browser_config)
        };
        let seed = node_seed(self.config.seed, index, self.peers[i].incarnation);
        let node = Node::with_seed(config, seed, self.now).unwrap_or_else(|e| {
            unreachable!("the config was validated, so the node accepts it: {e}")
        });
        let peer = &mut self.peers[i];
        peer.node = Some(Box::new(node));
        peer.state = PeerState::Alive;
        peer.links = 0;
        self.alive += 1;
        if self.link_target > 0 {
            self.below_target += 1;
        }
        let urls: Vec<String> = self.peers[i]
            .bootstrap
            .iter()
            .map(|&s| url_of(s as usize))
            .collect();
        let now = self.now;
        if let Some(node) = self.peers[i].node.as_mut() {
            for url in &urls {
                // Our own urls are valid and few (at most the seed count).
                let _ = node.bootstrap(now, url);
            }
        }
        self.drain(index);
    }

    /// Forgets a stopped peer's node and everything that pointed into it.
    fn stop(&mut self, index: PeerIndex, state: PeerState) {
        let peer = &mut self.peers[index];
        peer.node = None;
        peer.state = state;
        peer.wires = Vec::new();
        peer.timer_generation = peer.timer_generation.wrapping_add(1);
        peer.timer_at = Time::MAX;
        if peer.links < self.link_target {
            self.below_target -= 1;
        }
        peer.links = 0;
        let incarnation = peer.incarnation;
        peer.incarnation += 1;
        self.alive -= 1;
        let node = index as u32;
        let mine: Vec<SessionKey> = self
            .sessions
            .range(session_range(node, incarnation))
            .map(|(k, _)| *k)
            .collect();
        for key in mine {
            self.sessions.remove(&key);
        }
        self.check_converged();
    }

    fn check_converged(&mut self) {
        if self.converged_at.is_none()
            && self.below_target == 0
            && self.initial_joined == self.config.peers
        {
            self.converged_at = Some(self.now);
        }
    }

    // ---- driving nodes ----------------------------------------------------------------

    /// Whether `at` names the current incarnation of a running peer.
    fn is_current(&self, at: Endpoint) -> bool {
        let peer = &self.peers[at.node as usize];
        peer.state == PeerState::Alive && peer.incarnation == at.incarnation
    }

    fn live_wire(&self, at: Endpoint) -> Option<&WireEnd> {
        if !self.is_current(at) {
            return None;
        }
        self.peers[at.node as usize].wire(at.conn).map(|(_, w)| w)
    }

    /// Feeds one input to a running node and carries out everything it asks for.
    fn input(&mut self, node: u32, input: Input<'_>) {
        let now = self.now;
        if let Some(n) = self.peers[node as usize].node.as_mut() {
            n.handle_input(now, input);
            self.drain(node);
        }
    }

    fn on_timer(&mut self, node: u32) {
        let peer = &mut self.peers[node as usize];
        peer.timer_at = Time::MAX;
        let due = peer
            .node
            .as_deref()
            .and_then(Node::poll_timeout)
            .is_some_and(|t| t <= self.now);
        if due {
            self.input(node, Input::Timeout);
        } else {
            // The deadline moved later since this entry was queued: queue the new one.
            self.rearm_timer(node);
        }
    }

    /// Keeps one live queue entry at the node's next deadline. An entry is replaced only
    /// when the deadline moves earlier; one that fires early re-arms itself.
    fn rearm_timer(&mut self, node: u32) {
        let peer = &mut self.peers[node as usize];
        let Some(deadline) = peer.node.as_deref().and_then(Node::poll_timeout) else {
            return;
        };
        if deadline < peer.timer_at {
            peer.timer_generation = peer.timer_generation.wrapping_add(1);
            peer.timer_at = deadline;
            let generation = peer.timer_generation;
            self.queue
                .push(deadline.max(self.now), Ev::Timer { node, generation });
        }
    }

    /// Drains every output of `node` and carries it out, then re-arms its timer.
    fn drain(&mut self, node: u32) {
        let incarnation = self.peers[node as usize].incarnation;
        while let Some(output) = self.peers[node as usize]
            .node
            .as_deref_mut()
            .and_then(Node::poll_output)
        {
            self.trace.record(self.now, node, incarnation, &output);
            if let Some(observer) = &mut self.observer {
                observer(self.now, node as PeerIndex, &output);
            }
            self.carry_out(node, incarnation, output);
        }
        self.rearm_timer(node);
    }

    fn carry_out(&mut self, node: u32, incarnation: u32, output: Output) {
        let me = |conn| Endpoint {
            node,
            incarnation,
            conn,
        };
        match output {
            Output::Transmit { conn, frame } => self.transmit(me(conn), frame),
            Output::DialWebSocket { conn, url } => self.dial(me(conn), &url),
            Output::StartWebRtc {
                conn, initiator, ..
            } => self.start_webrtc(me(conn), initiator),
            Output::RemoteSignal { conn, signal } => self.remote_signal(me(conn), &signal),
            Output::Close { conn, .. } => self.close(me(conn)),
            Output::Probe { conn } => {
                self.counters.probes += 1;
                let from = me(conn);
                if let Some((to, arrival)) = self.carry_control(from) {
                    self.queue.push(arrival, Ev::Ping { to, from });
                }
            }
            Output::Event(event) => self.on_event(node, incarnation, event),
        }
    }

    fn on_event(&mut self, node: u32, incarnation: u32, event: Event) {
        let target = self.link_target;
        match event {
            Event::PeerConnected { .. } => {
                let peer = &mut self.peers[node as usize];
                peer.links += 1;
                if peer.links == target {
                    self.below_target -= 1;
                    self.check_converged();
                }
            }
            Event::PeerDisconnected { .. } => {
                let peer = &mut self.peers[node as usize];
                if peer.links == target && target > 0 {
                    self.below_target += 1;
                }
                peer.links = peer.links.saturating_sub(1);
            }
            Event::Message {
                from,
                data,
                path_len,
            } => self.on_delivery(node, incarnation, from, data.get(), path_len),
            Event::ConnectFailed { .. } => self.counters.connects_failed += 1,
            Event::BootstrapFailed { .. } => self.counters.bootstraps_failed += 1,
        }
    }

    fn on_delivery(&mut self, node: u32, incarnation: u32, from: PeerId, data: &str, hops: usize) {
        let record = data
            .parse::<usize>()
            .ok()
            .and_then(|id| self.messages.get_mut(id));
        let Some(record) = record else {
            self.counters.misdelivered += 1;
            return;
        };
        if record.to != node || record.to_incarnation != incarnation || record.from_id != from {
            self.counters.misdelivered += 1;
            return;
        }
        if record.delivered_at.is_some() {
            self.counters.duplicate_deliveries += 1;
            return;
        }
        record.delivered_at = Some(self.now);
        record.hops = hops.min(u8::MAX as usize) as u8;
        self.undelivered -= 1;
        let bucket = hops.min(self.hops_histogram.len() - 1);
        self.hops_histogram[bucket] += 1;
    }

    // ---- the network --------------------------------------------------------------------

    fn egress_model(&self, from: u32, to: u32) -> LinkModel {
        if !self.pair_models.is_empty() {
            if let Some(&index) = self.pair_models.get(&(from, to)) {
                return self.link_models[index as usize];
            }
        }
        self.link_models[self.peers[from as usize].egress as usize]
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        self.peers[a as usize].group == self.peers[b as usize].group
    }

    /// One-way delay of a control packet (no loss: TCP and ICE retry those).
    fn delay(&mut self, from: u32, to: u32) -> Duration {
        let model = self.egress_model(from, to);
        model.sample_delay(&mut self.net_rng)
    }

    fn transmit(&mut self, from: Endpoint, frame: String) {
        self.counters.frames += 1;
        if is_user_frame(&frame) {
            self.counters.user_frames += 1;
        }
        let (to, arrival, model) = match self.carry(from, Some(&frame)) {
            Ok(carried) => carried,
            Err(cut) => {
                let counter = match cut {
                    Cut::Unroutable => &mut self.counters.frames_unroutable,
                    Cut::Partitioned => &mut self.counters.frames_partitioned,
                    Cut::Filtered => &mut self.counters.frames_filtered,
                    Cut::Lost => &mut self.counters.frames_lost,
                };
                *counter += 1;
                return;
            }
        };
        if self.net_rng.chance(model.duplicate) {
            self.counters.frames_duplicated += 1;
            let copy = frame.clone();
            self.queue.push(
                arrival,
                Ev::Frame {
                    to,
                    from,
                    frame: copy,
                },
            );
        }
        self.queue.push(arrival, Ev::Frame { to, from, frame });
    }

    /// Where something sent on `from`'s connection arrives, when, and under which link
    /// model: it is cut by partitions and lost by the loss model, and kept in order behind
    /// what was sent before it. A frame (`Some`) also passes the frame filter; a transport
    /// control message (a ping or pong, `None`) does not.
    fn carry(
        &mut self,
        from: Endpoint,
        frame: Option<&str>,
    ) -> Result<(Endpoint, Time, LinkModel), Cut> {
        let (at, wire) = self.peers[from.node as usize]
            .wire(from.conn)
            .ok_or(Cut::Unroutable)?;
        let wire = *wire;
        let to = wire.remote().ok_or(Cut::Unroutable)?;
        if !self.reachable(from.node, to.node) {
            return Err(Cut::Partitioned);
        }
        if let (Some(filter), Some(frame)) = (&mut self.frame_filter, frame) {
            if !filter(from.node as PeerIndex, to.node as PeerIndex, frame) {
                return Err(Cut::Filtered);
            }
        }
        let model = self.egress_model(from.node, to.node);
        if self.net_rng.chance(model.loss) {
            return Err(Cut::Lost);
        }
        let arrival = (self.now + model.sample_delay(&mut self.net_rng)).max(wire.last_arrival);
        self.peers[from.node as usize].wires[at].last_arrival = arrival;
        Ok((to, arrival, model))
    }

    /// Where a ping or pong sent on `from`'s connection arrives, and when (see
    /// [`Sim::carry`]; never duplicated).
    fn carry_control(&mut self, from: Endpoint) -> Option<(Endpoint, Time)> {
        self.carry(from, None)
            .ok()
            .map(|(to, arrival, _)| (to, arrival))
    }

    /// Whether `to` is still open for what `from` sent; if not, answers as the receiver's
    /// stack would.
    fn arrives(&mut self, to: Endpoint, from: Endpoint) -> bool {
        if self.live_wire(to).is_some() {
            return true;
        }
        self.counters.frames_stale += 1;
        // The receiver closed this connection (or the sender's end outlived a lost close):
        // its stack answers with a reset, as TCP and SCTP do.
        if self.config.net.reset_on_stale_frames
            && self.is_current(to)
            && self.reachable(to.node, from.node)
        {
            let at = self.now + self.delay(to.node, from.node);
            self.queue.push(at, Ev::Closed(from));
        }
        false
    }

    /// A probe arrived: the receiving node hears from the link too, and its transport
    /// answers (WebSocket stacks pong by themselves).
    fn on_ping(&mut self, to: Endpoint, from: Endpoint) {
        if !self.arrives(to, from) {
            return;
        }
        self.input(to.node, Input::Alive { conn: to.conn });
        if let Some((prober, arrival)) = self.carry_control(to) {
            self.queue.push(arrival, Ev::Pong(prober));
        }
    }

    /// ICE gave a WebRTC link up: the driver forgets the connection and reports it lost.
    fn on_ice_lost(&mut self, at: Endpoint, generation: u32) {
        if generation != self.partition_generation {
            return;
        }
        let cut = self
            .live_wire(at)
            .and_then(WireEnd::remote)
            .is_some_and(|r| !self.reachable(at.node, r.node));
        if cut {
            self.peers[at.node as usize].remove_wire(at.conn);
            self.counters.ice_failures += 1;
            self.input(at.node, Input::Failed { conn: at.conn });
        }
    }

    fn on_pong(&mut self, at: Endpoint) {
        if self.live_wire(at).is_some() {
            self.counters.probes_answered += 1;
            self.input(at.node, Input::Alive { conn: at.conn });
        }
    }

    fn on_frame(&mut self, to: Endpoint, from: Endpoint, frame: String) {
        if !self.arrives(to, from) {
            return;
        }
        self.input(
            to.node,
            Input::Frame {
                conn: to.conn,
                frame: frame.as_bytes(),
            },
        );
    }

    fn dial(&mut self, client: Endpoint, url: &str) {
        self.counters.dials += 1;
        self.peers[client.node as usize].insert_wire(WireEnd {
            conn: client.conn,
            peer: DIALING,
            peer_incarnation: 0,
            peer_conn: client.conn,
            last_arrival: self.now,
        });
        let server = peer_of_url(url)
            .filter(|&s| s < self.peers.len())
            .map(|s| s as u32);
        match server {
            Some(server) if !self.reachable(client.node, server) => {
                let at = self.now + self.config.net.dial_timeout;
                self.queue.push(at, Ev::Closed(client));
            }
            Some(server) => {
                let at = self.now + self.delay(client.node, server);
                self.queue.push(at, Ev::Accept { server, client });
            }
            None => {
                // No such host: fails after a round trip to the resolver.
                let at = self.now + 2 * self.delay(client.node, client.node);
                self.queue.push(at, Ev::Closed(client));
            }
        }
    }

    fn on_accept(&mut self, server: u32, client: Endpoint) {
        let still_dialing = self.live_wire(client).is_some_and(|w| w.peer == DIALING);
        if !still_dialing {
            // The client gave up (or died) before the connection reached the server.
            return;
        }
        let reply = self.now + self.delay(server, client.node);
        let s = &self.peers[server as usize];
        let accepting =
            s.state == PeerState::Alive && s.server && self.reachable(server, client.node);
        let accepted = if accepting {
            let now = self.now;
            self.peers[server as usize]
                .node
                .as_mut()
                .map(|n| n.accept(now))
        } else {
            None
        };
        let Some(Ok(server_conn)) = accepted else {
            // Refused: no server process, `TooManyConnections` or `Joining`.
            self.queue.push(reply, Ev::Closed(client));
            return;
        };
        let server_incarnation = self.peers[server as usize].incarnation;
        self.peers[server as usize].insert_wire(WireEnd {
            conn: server_conn,
            peer: client.node,
            peer_incarnation: client.incarnation,
            peer_conn: client.conn,
            // The server's frames reach the client after its upgrade response.
            last_arrival: reply,
        });
        self.peers[client.node as usize].insert_wire(WireEnd {
            conn: client.conn,
            peer: server,
            peer_incarnation: server_incarnation,
            peer_conn: server_conn,
            last_arrival: self.now,
        });
        self.queue.push(reply, Ev::Opened(client));
        // `accept` queued the server's id handshake.
        self.drain(server);
    }

    fn on_closed(&mut self, at: Endpoint) {
        if !self.is_current(at) {
            return;
        }
        let wire = self.peers[at.node as usize].remove_wire(at.conn);
        if wire.is_some_and(|w| w.peer == DIALING) {
            self.counters.dials_failed += 1;
        }
        let had_wire = wire.is_some();
        let had_session = self.sessions.remove(&session_key(at)).is_some();
        if had_wire || had_session {
            if had_wire && self.peers[at.node as usize].wires.is_empty() {
                // Give a peer that lost everything its memory back.
                self.peers[at.node as usize].wires.shrink_to_fit();
            }
            self.input(at.node, Input::Closed { conn: at.conn });
        }
    }

    /// The node closed a connection: tell the other end (if the close can reach it).
    fn close(&mut self, at: Endpoint) {
        self.sessions.remove(&session_key(at));
        let Some(wire) = self.peers[at.node as usize].remove_wire(at.conn) else {
            return;
        };
        let Some(remote) = wire.remote() else {
            return;
        };
        if self.reachable(at.node, remote.node) {
            // The close travels behind the frames already sent.
            let when = (self.now + self.delay(at.node, remote.node)).max(wire.last_arrival);
            self.queue.push(when, Ev::Closed(remote));
        }
    }

    // ---- the WebRTC stack -----------------------------------------------------------------

    fn start_webrtc(&mut self, at: Endpoint, initiator: bool) {
        self.counters.webrtc_sessions += 1;
        self.sessions
            .insert(session_key(at), (at, Session::new(initiator)));
        if initiator {
            self.describe(at, SignalKind::Offer);
        }
    }

    /// Schedules our description and then our candidates.
    fn describe(&mut self, at: Endpoint, kind: SignalKind) {
        let model = self.config.net.webrtc;
        let mut when = self.now + model.describe_delay;
        self.queue.push(when, Ev::LocalSignal { at, kind });
        for n in 0..model.candidates {
            when += model.gather_delay;
            self.queue.push(
                when,
                Ev::LocalSignal {
                    at,
                    kind: SignalKind::Candidate(n),
                },
            );
        }
    }

    fn remote_signal(&mut self, at: Endpoint, signal: &str) {
        let Some((_, session)) = self.sessions.get_mut(&session_key(at)) else {
            // Late candidates for an open connection, or a session already gone.
            return;
        };
        match webrtc::parse_remote(signal) {
            Some(RemoteSignal::Description { offer, from }) => {
                if session.remote.is_some() || offer == session.initiator {
                    return;
                }
                session.remote = Some(from);
                if offer {
                    self.describe(at, SignalKind::Answer);
                }
            }
            Some(RemoteSignal::Candidate { .. }) => {
                session.remote_candidates = session.remote_candidates.saturating_add(1);
            }
            None => return,
        }
        self.try_connect(at);
    }

    /// Starts ICE when both sides have what they need.
    fn try_connect(&mut self, at: Endpoint) {
        let candidates = self.config.net.webrtc.candidates;
        let Some(&(_, session)) = self.sessions.get(&session_key(at)) else {
            return;
        };
        if session.opening || !session.ready(candidates) {
            return;
        }
        let Some(token) = session.remote else {
            return;
        };
        let Some(remote) = self.session_of(token) else {
            return;
        };
        let Some(&(_, other)) = self.sessions.get(&session_key(remote)) else {
            return;
        };
        let mutual = other.remote.is_some_and(|t| t.names(at));
        if !mutual || other.opening || !other.ready(candidates) {
            return;
        }
        for key in [at, remote] {
            if let Some((_, s)) = self.sessions.get_mut(&session_key(key)) {
                s.opening = true;
            }
        }
        let (initiator, responder) = if session.initiator {
            (at, remote)
        } else {
            (remote, at)
        };
        let round_trips = u32::from(self.config.net.webrtc.connect_round_trips.max(1));
        let mut when = self.now;
        for _ in 0..round_trips {
            when += self.delay(initiator.node, responder.node);
        }
        self.queue.push(
            when,
            Ev::WebRtcOpen {
                initiator,
                responder,
            },
        );
    }

    /// The running session a token names.
    fn session_of(&self, token: Token) -> Option<Endpoint> {
        self.sessions
            .get(&(token.node, token.incarnation, token.conn))
            .map(|(endpoint, _)| *endpoint)
    }

    fn on_webrtc_open(&mut self, initiator: Endpoint, responder: Endpoint) {
        let both_there = self.sessions.contains_key(&session_key(initiator))
            && self.sessions.contains_key(&session_key(responder))
            && self.is_current(initiator)
            && self.is_current(responder);
        if !both_there {
            return;
        }
        if !self.reachable(initiator.node, responder.node) {
            // ICE fails; the sessions sit until the core's webrtc_timeout closes them.
            return;
        }
        self.sessions.remove(&session_key(initiator));
        self.sessions.remove(&session_key(responder));
        self.counters.webrtc_opened += 1;
        for (end, other) in [(initiator, responder), (responder, initiator)] {
            self.peers[end.node as usize].insert_wire(WireEnd {
                conn: end.conn,
                peer: other.node,
                peer_incarnation: other.incarnation,
                peer_conn: other.conn,
                last_arrival: self.now,
            });
        }
        self.input(
            initiator.node,
            Input::Opened {
                conn: initiator.conn,
            },
        );
        self.input(
            responder.node,
            Input::Opened {
                conn: responder.conn,
            },
        );
    }
}

/// Sessions are keyed by node, incarnation and connection number, so that one node
/// incarnation's sessions form a contiguous range.
type SessionKey = (u32, u32, u64);

fn session_key(at: Endpoint) -> SessionKey {
    (at.node, at.incarnation, at.conn.as_u64())
}

/// Every session key of one node incarnation.
fn session_range(node: u32, incarnation: u32) -> std::ops::RangeInclusive<SessionKey> {
    (node, incarnation, 0)..=(node, incarnation, u64::MAX)
}

fn delivery<'a>(messages: impl Iterator<Item = &'a MessageRecord>) -> Delivery {
    let mut d = Delivery::default();
    for m in messages {
        d.sent += 1;
        d.delivered += u64::from(m.delivered_at.is_some());
    }
    d
}

/// Whether a frame carries a `user` payload. Frames written by the core are canonical
/// (`{"to":"…","from":"…","path":[…],"nonce":"…","data":PAYLOAD}`, ids hex and the nonce
/// digits), so the first `"data":` is the envelope's and the payload's type follows it;
/// an id handshake's first `"data":` is followed by an array.
pub fn is_user_frame(frame: &str) -> bool {
    static DATA_KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"data\":"));
    DATA_KEY.find(frame.as_bytes()).is_some_and(|at| {
        frame.as_bytes()[at + DATA_KEY.needle().len()..].starts_with(br#"{"type":"user""#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check every 65,536 events (progress, memory, pause) comes once: superseded timer
    /// entries popped after it are no events and must not bring it back, or a run resumed
    /// with no time budget would pause again where it stood, for ever if enough of them
    /// were queued.
    #[test]
    fn superseded_timer_entries_do_not_repeat_the_check() {
        let mut sim = Sim::new(SimConfig {
            peers: 3,
            servers: 1,
            ..SimConfig::default()
        })
        .unwrap();
        sim.run_for(Duration::from_secs(5));
        let next = sim.queue.peek_time().expect("the nodes' timers are queued");
        // The next event is the 65,536th, and stale timer entries queue right behind it.
        sim.counters.events = 0xffff;
        let stale = sim.peers[0].timer_generation.wrapping_add(1);
        for _ in 0..3 {
            sim.queue.push(
                next,
                Ev::Timer {
                    node: 0,
                    generation: stale,
                },
            );
        }
        sim.set_pause_at(Some(Instant::now()));
        sim.run_for(Duration::from_secs(10));
        assert!(sim.paused());
        assert_eq!(sim.counters.events, 0x10000);
        // Resumed with no budget: it goes on to the next check, which is far off.
        sim.set_pause_at(Some(Instant::now()));
        sim.run_for(Duration::from_secs(10));
        assert!(
            !sim.paused(),
            "paused again at {} events",
            sim.counters.events
        );
        assert!(sim.counters.events > 0x10000);
    }

    #[test]
    fn user_frames_are_told_from_the_rest() {
        let id = "0".repeat(40);
        let env = |payload: &str| {
            format!(
                r#"{{"to":"{id}","from":"{id}","path":["{id}"],"nonce":"12","data":{payload}}}"#
            )
        };
        assert!(is_user_frame(&env(r#"{"type":"user","data":7}"#)));
        assert!(!is_user_frame(&env(r#"{"type":"findPeers","data":"00"}"#)));
        // A signal whose data mentions a user payload is still a signal.
        assert!(!is_user_frame(&env(
            r#"{"type":"signal","data":{"data":{"type":"user"}}}"#
        )));
        assert!(!is_user_frame(r#"{"type":"Buffer","data":[1,2,3]}"#));
    }
}
