//! The `sim_scenario` fuzz entry point: a small network of real core nodes in the simulator,
//! driven by a scenario the fuzzer writes (peers, config knobs within their limits, then a
//! sequence of time steps, sends, crashes, restarts, departures, partitions and link-model
//! changes), with invariants checked after every step. Shared by the cargo-fuzz target in
//! `fuzz/` and by the stable test that replays its committed corpus
//! (`driver-sim/tests/fuzz_corpus.rs`), so CI runs exactly the checks the fuzzer runs.
//! Enabled by the `fuzzing` feature.
//!
//! Every function panics when an invariant breaks; that is the finding.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use peer_relay_core::{Config, LinkSelection};

use crate::{Action, Bootstrap, LinkModel, Sim, SimConfig, Traffic};

/// Most peers a scenario starts with (joins add up to [`MAX_PEERS`] in all).
pub const MAX_INITIAL_PEERS: usize = 12;
/// Most peers a scenario ever has, joins included.
pub const MAX_PEERS: usize = 16;
/// Most steps of a scenario that are run (the rest of the input is ignored).
pub const MAX_STEPS: usize = 48;
/// Outputs of all nodes at one virtual instant beyond which a run counts as a livelock. A
/// whole population joining at once produces a few thousand.
pub const SAME_INSTANT_OUTPUTS: u32 = 200_000;

/// Node configuration knobs, each mapped into a valid range.
#[derive(Debug, Clone, Arbitrary)]
pub struct Knobs {
    /// Start from `Config::original()` rather than `Config::default()`.
    pub original: bool,
    /// `k`: 1..=8.
    pub k: u8,
    /// `target_links`: 0..=max_links.
    pub target_links: u8,
    /// `max_links`: 1..=16.
    pub max_links: u8,
    /// Connections beyond `max_links`: 0..=15.
    pub extra_connections: u8,
    /// `max_hops`: 1..=24.
    pub max_hops: u8,
    /// `seen_nonces_max`: 2..=64.
    pub seen_nonces_max: u8,
    /// `seen_nonce_ttl` in seconds: 1..=64.
    pub seen_nonce_ttl: u8,
    /// `preferred_paths_max`: 0 (off) or 2..=31.
    pub preferred_paths_max: u8,
    /// `queue_max`: 0..=15.
    pub queue_max: u8,
    /// `max_pending_connects`: 0..=15.
    pub max_pending_connects: u8,
    /// `max_lookups`: 0..=7.
    pub max_lookups: u8,
    /// `refresh_interval` in seconds, 0 for none: 0..=31 (the low 5 bits); the high 3 bits
    /// set keepalive: 0 off, else `keepalive_interval` 4..=28 s and `keepalive_timeout`
    /// 2..=14 s (in the spare bits, so committed inputs keep their layout).
    pub refresh: u8,
    /// `max_violations`: 0..=7 (the low 3 bits); the high 5 bits set reach checks: 0 off,
    /// else `reach_check_interval` 1..=31 s, `reach_check_max` four times that.
    pub max_violations: u8,
}

impl Knobs {
    /// The node config, every knob within its valid range.
    fn config(&self) -> Config {
        let base = if self.original {
            Config::original()
        } else {
            Config {
                link_selection: LinkSelection::BucketDiverse { near: 2 },
                ..Config::default()
            }
        };
        let max_links = 1 + usize::from(self.max_links % 16);
        let k = 1 + usize::from(self.k % 8);
        Config {
            k,
            candidate_k: k,
            target_links: usize::from(self.target_links) % (max_links + 1),
            max_links,
            max_connections: max_links + usize::from(self.extra_connections % 16),
            max_hops: 1 + usize::from(self.max_hops % 24),
            seen_nonces_max: 2 + usize::from(self.seen_nonces_max % 63),
            seen_nonce_ttl: Duration::from_secs(1 + u64::from(self.seen_nonce_ttl % 64)),
            // 0 (off) or 2..=31: the core refuses 1.
            preferred_paths_max: match usize::from(self.preferred_paths_max % 32) {
                1 => 0,
                n => n,
            },
            queue_max: usize::from(self.queue_max % 16),
            max_pending_connects: usize::from(self.max_pending_connects % 16),
            max_lookups: usize::from(self.max_lookups % 8),
            refresh_interval: match self.refresh % 32 {
                0 => None,
                s => Some(Duration::from_secs(u64::from(s))),
            },
            max_violations: u32::from(self.max_violations % 8),
            keepalive_interval: match self.refresh >> 5 {
                0 => None,
                s => Some(Duration::from_secs(4 * u64::from(s))),
            },
            keepalive_timeout: Duration::from_secs(2 * u64::from((self.refresh >> 5).max(1))),
            reach_check_interval: match self.max_violations >> 3 {
                0 => None,
                s => Some(Duration::from_secs(u64::from(s))),
            },
            reach_check_max: Duration::from_secs(4 * u64::from((self.max_violations >> 3).max(1))),
            ..base
        }
    }
}

/// An egress model from a few bytes: loss and duplication in steps of 1/255, latency in ms.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct FuzzLink {
    /// Loss probability, `loss / 255`.
    pub loss: u8,
    /// Duplication probability, `duplicate / 255`.
    pub duplicate: u8,
    /// Minimum one-way latency in ms.
    pub latency_ms: u8,
    /// Jitter in ms.
    pub jitter_ms: u8,
}

impl FuzzLink {
    fn model(self) -> LinkModel {
        LinkModel {
            latency_min: Duration::from_millis(u64::from(self.latency_ms)),
            latency_tail_mean: Duration::from_millis(u64::from(self.latency_ms / 4)),
            jitter: Duration::from_millis(u64::from(self.jitter_ms)),
            loss: f64::from(self.loss) / 255.0,
            duplicate: f64::from(self.duplicate) / 255.0,
        }
    }
}

/// One scenario step. Peer indices wrap around the peers that exist.
#[derive(Debug, Clone, Arbitrary)]
pub enum Step {
    /// Let `ms * 16` milliseconds of virtual time pass (up to about 17 minutes).
    Advance(u16),
    /// One message.
    Send {
        /// The sender.
        from: u8,
        /// The recipient.
        to: u8,
    },
    /// A stream of `messages % 64` random-pair messages at 200 per second.
    Traffic(u8),
    /// `Node::connect` from one peer to another.
    Connect {
        /// The peer asking.
        from: u8,
        /// The peer to link to.
        to: u8,
    },
    /// A peer crashes.
    Crash(u8),
    /// A crashed or departed peer starts again.
    Restart(u8),
    /// A peer shuts down cleanly.
    Leave(u8),
    /// A new peer joins (up to [`MAX_PEERS`]).
    Join,
    /// Peers whose bit is set form one group, the rest another.
    Partition(u16),
    /// Ends the partition.
    Heal,
    /// Sets one peer's egress model, or the default (`None`).
    SetLink(Option<u8>, FuzzLink),
}

/// A whole `sim_scenario` run.
#[derive(Debug, Clone, Arbitrary)]
pub struct Scenario {
    /// The simulation's root seed.
    pub seed: u64,
    /// Initial peers: 2..=[`MAX_INITIAL_PEERS`].
    pub peers: u8,
    /// Of those, WebSocket servers: 1..=peers.
    pub servers: u8,
    /// Bootstrap topology: star, chain, random or seeds.
    pub bootstrap: u8,
    /// Whether servers also run WebRTC.
    pub server_webrtc: bool,
    /// Join interval in ms.
    pub join_interval_ms: u8,
    /// Node configuration.
    pub knobs: Knobs,
    /// The default egress model.
    pub link: FuzzLink,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The simulation config this scenario runs (always valid).
    pub fn sim_config(&self) -> SimConfig {
        let peers = 2 + usize::from(self.peers) % (MAX_INITIAL_PEERS - 1);
        let servers = 1 + usize::from(self.servers) % peers;
        let bootstrap = match self.bootstrap % 4 {
            0 => Bootstrap::Star,
            1 => Bootstrap::Chain,
            2 => Bootstrap::Random,
            _ => Bootstrap::Seeds {
                count: 1 + usize::from(self.bootstrap / 4) % servers,
            },
        };
        let mut config = SimConfig {
            seed: self.seed,
            peers,
            servers,
            node: self.knobs.config(),
            server_webrtc: self.server_webrtc,
            bootstrap,
            join_interval: Duration::from_millis(u64::from(self.join_interval_ms)),
            ..SimConfig::default()
        };
        config.net.link = self.link.model();
        config
    }
}

/// `sim_scenario`: interprets the bytes as a [`Scenario`] and runs it twice, checking every
/// invariant after every step and that both runs agree output for output.
pub fn sim_scenario(data: &[u8]) {
    if let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) {
        let first = run_scenario(&scenario, None);
        // The second run is also saved and loaded again half-way (a snapshot), which must
        // change nothing.
        let half = scenario.steps.len().min(MAX_STEPS) / 2;
        let second = run_scenario(&scenario, Some(half));
        assert_eq!(
            first, second,
            "the same scenario ran differently (the second saved and loaded after step {half})"
        );
    }
}

/// What a run is compared by: the trace hash over every output of every node, and every
/// message's fate.
type Outcome = (u64, Vec<crate::MessageRecord>);

/// Runs a scenario, checking every invariant after every step; with `restore_after`, the
/// simulation is saved and loaded again after that many steps.
pub fn run_scenario(scenario: &Scenario, restore_after: Option<usize>) -> Outcome {
    let config = scenario.sim_config();
    let mut sim = Sim::new(config).expect("the scenario's config is valid");
    watch_for_livelock(&mut sim);
    // Let the initial population join before the scripted part starts.
    sim.run_until(sim.config().joins_end());
    check(&sim);
    for (done, step) in scenario.steps.iter().take(MAX_STEPS).enumerate() {
        if restore_after == Some(done) {
            let mut saved = Vec::new();
            sim.save(&mut saved)
                .expect("a simulation without a frame filter saves");
            sim = Sim::load(saved.as_slice()).expect("a saved simulation loads");
            watch_for_livelock(&mut sim);
            check(&sim);
        }
        apply(&mut sim, step);
        check(&sim);
    }
    // A quiet end: every timer that was armed gets its chance to fire.
    sim.heal();
    sim.run_for(Duration::from_secs(60));
    check(&sim);
    (sim.trace_hash(), sim.messages().to_vec())
}

/// Virtual time that stops while outputs keep coming is a livelock (a storm of messages
/// with no timer between them): fail with that, rather than hang the fuzzer.
fn watch_for_livelock(sim: &mut Sim) {
    let mut instant = (peer_relay_core::Time::ZERO, 0u32);
    sim.set_observer(Some(Box::new(move |now, _, _| {
        instant = if now == instant.0 {
            (now, instant.1 + 1)
        } else {
            (now, 1)
        };
        assert!(
            instant.1 <= SAME_INSTANT_OUTPUTS,
            "livelock: {SAME_INSTANT_OUTPUTS} outputs at virtual time {now:?}"
        );
    })));
}

fn apply(sim: &mut Sim, step: &Step) {
    let peer = |i: u8| usize::from(i) % sim.peer_count();
    match *step {
        Step::Advance(ms) => sim.run_for(Duration::from_millis(u64::from(ms) * 16)),
        Step::Send { from, to } => {
            let (from, to) = (peer(from), peer(to));
            sim.send(from, to);
        }
        Step::Traffic(messages) => sim.apply(Action::Traffic(Traffic {
            messages: u64::from(messages % 64),
            rate: 200.0,
        })),
        Step::Connect { from, to } => {
            let (from, to) = (peer(from), peer(to));
            sim.connect(from, to);
        }
        Step::Crash(p) => sim.crash(peer(p)),
        Step::Restart(p) => sim.restart(peer(p)),
        Step::Leave(p) => sim.leave(peer(p)),
        Step::Join => {
            if sim.peer_count() < MAX_PEERS {
                sim.join_new_peer();
            }
        }
        Step::Partition(mask) => {
            let group: Vec<usize> = (0..sim.peer_count())
                .filter(|&i| mask & (1 << (i % 16)) != 0)
                .collect();
            sim.partition(&[group]);
        }
        Step::Heal => sim.heal(),
        Step::SetLink(who, link) => {
            let who = who.map(|p| [peer(p)]);
            sim.set_link_model(who.as_ref().map(|p| &p[..]), link.model());
        }
    }
}

/// The invariants: every running node's bounded structures are within their config bounds
/// and drained, the simulator's view of links matches the nodes', and nothing was
/// misdelivered or sent on a connection that does not exist.
pub fn check(sim: &Sim) {
    for index in 0..sim.peer_count() {
        let Some(node) = sim.node(index) else {
            continue;
        };
        peer_relay_core::fuzzing::check_sizes(node);
        assert_eq!(
            sim.links_of(index),
            node.sizes().links,
            "peer {index}: link events and the node's links disagree"
        );
    }
    let c = sim.counters();
    assert_eq!(c.misdelivered, 0, "a message reached the wrong peer");
    assert_eq!(
        c.frames_unroutable, 0,
        "a frame on a connection with no link"
    );
    let delivered = sim.messages().iter().filter(|m| m.delivered_at.is_some());
    assert!(
        delivered.clone().all(|m| !m.refused),
        "a refused message arrived"
    );
    assert!(
        delivered.count() as u64 + sim.undelivered() == sim.messages().len() as u64,
        "message accounting"
    );
}
