//! # peer-relay-sim
//!
//! A deterministic discrete-event simulator that runs many real [`peer_relay_core::Node`]s in
//! one process on virtual time, so routing, discovery, churn and faults can be tested and
//! measured reproducibly from one seed.
//!
//! The nodes run the same core logic and exchange the same frames as under the tokio driver:
//! every frame is the `String` a node produced, delivered to its peer as bytes, decoded by the
//! peer's core. The simulator only plays the network and the transports:
//!
//! - an event queue ordered by (virtual time, sequence) ([`queue`]);
//! - a netem-style link model: latency minimum plus exponential tail, jitter, loss,
//!   duplication, partitions, crashes and churn ([`model`], [`Sim`]);
//! - WebSocket servers at virtual urls, and a simulated WebRTC stack whose signals travel
//!   through the overlay as real `signal` messages ([`webrtc`]);
//! - workloads: bootstrap topologies, random-pair traffic, churn ([`workload`]) and a
//!   scenario API ([`Action`], [`Sim::at`]);
//! - a report with a trace hash over every output of every node ([`report`], [`trace`]).
//!
//! ```
//! use std::time::Duration;
//! use peer_relay_sim::{Action, Sim, SimConfig, Traffic};
//! use peer_relay_core::Time;
//!
//! let mut sim = Sim::new(SimConfig { peers: 50, servers: 5, seed: 7, ..SimConfig::default() })
//!     .unwrap();
//! sim.run_until_converged(Time::from_millis(60_000)).expect("converges");
//! let start = sim.now();
//! sim.at(start, Action::Traffic(Traffic { messages: 200, rate: 100.0 }));
//! sim.at(start + Duration::from_secs(1), Action::Crash(vec![3, 4]));
//! sim.run_for(Duration::from_secs(10));
//! let report = sim.report();
//! assert_eq!(report.sent, 200);
//! assert!(report.delivery_rate > 0.9, "{}", sim.replay_hint());
//! ```

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod graph;
pub mod model;
pub mod queue;
pub mod report;
pub mod rng;
pub mod sim;
pub mod snapshot;
pub mod trace;
pub mod webrtc;
pub mod workload;

use std::time::Duration;

use peer_relay_core::Time;
use serde::{Deserialize, Serialize};

pub use model::{LinkModel, NetConfig, WebRtcModel};
pub use report::Report;
pub use sim::{Action, Counters, Delivery, MessageId, MessageRecord, PeerIndex, Sim, SimConfig};
pub use snapshot::SnapshotError;
pub use workload::{Bootstrap, Churn, Traffic};

/// The standard run the CLI performs: the initial population joins, the network warms up
/// until it converged (or `warmup` after the last join), then `messages` random-pair
/// messages are sent at `rate` (with churn, if any, from the same moment), and the run ends
/// when every message arrived or `drain` after the last one was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// The simulation.
    pub sim: SimConfig,
    /// Messages to send.
    pub messages: u64,
    /// Messages per second of virtual time.
    pub rate: f64,
    /// Longest wait after the last join for the network to converge.
    #[serde(with = "model::micros")]
    pub warmup: Duration,
    /// Extra time after convergence (or the warmup deadline) before traffic starts: links
    /// keep reorganising for a while after every peer reached its target.
    #[serde(with = "model::micros", default)]
    pub settle: Duration,
    /// Time allowed after the last send for messages to arrive.
    #[serde(with = "model::micros")]
    pub drain: Duration,
    /// Churn during the traffic phase.
    pub churn: Option<Churn>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            sim: SimConfig::default(),
            messages: 10_000,
            rate: 1_000.0,
            warmup: Duration::from_secs(60),
            settle: Duration::ZERO,
            drain: Duration::from_secs(10),
            churn: None,
        }
    }
}

impl Run {
    /// Performs the run, printing progress to stderr if asked, and stopping early (with a
    /// report saying so) if resident memory passes `rss_limit` bytes.
    pub fn execute(&self, progress: bool, rss_limit: Option<u64>) -> Result<(Sim, Report), String> {
        let mut running = self.start()?;
        running.sim_mut().set_progress(progress);
        running.sim_mut().set_rss_limit(rss_limit);
        running.advance();
        let report = running.sim().report();
        Ok((running.into_sim(), report))
    }

    /// The run set up and not yet started: [`Running::advance`] performs it, in one go or
    /// (pausing, saving and resuming) in steps.
    pub fn start(&self) -> Result<Running, String> {
        if self.rate.is_nan() || self.rate <= 0.0 {
            return Err("rate must be positive".into());
        }
        Ok(Running {
            sim: Sim::new(self.sim.clone())?,
            run: self.clone(),
            phase: Phase::Forming,
        })
    }

    /// The time traffic would start in a run that never converges.
    pub fn latest_traffic_start(&self) -> Time {
        self.sim.joins_end() + self.warmup + self.settle
    }
}

/// Where a [`Running`] run is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Peers join; the network converges (or the warmup runs out).
    Forming,
    /// Waiting `Run::settle` after convergence, until this time.
    Settling { until: Time },
    /// Traffic (and churn) started; the run ends when every message arrived or at `end`.
    Traffic { end: Time },
    /// Over: the report is final.
    Done,
}

/// A [`Run`] under way. It can pause ([`Sim::set_pause_at`]), be saved to a file
/// ([`Running::save`]) and go on in another process ([`Running::load`]) with the same
/// report and trace hash as a run that never stopped: how the CLI's `--pause-after-s` and
/// `--resume` carry a run too long for one sitting.
#[derive(Debug)]
pub struct Running {
    run: Run,
    phase: Phase,
    sim: Sim,
}

impl Running {
    /// Runs on until the run is over (true) or the simulation paused (false; call again to
    /// go on).
    pub fn advance(&mut self) -> bool {
        loop {
            match self.phase {
                Phase::Forming => {
                    let joins_end = self.run.sim.joins_end();
                    self.sim.run_until_converged(joins_end + self.run.warmup);
                    if self.sim.paused() {
                        return false;
                    }
                    // Traffic starts right after convergence (or at the deadline), never
                    // earlier than the last join.
                    self.sim.run_until(joins_end);
                    if self.sim.paused() {
                        return false;
                    }
                    self.phase = Phase::Settling {
                        until: self.sim.now() + self.run.settle,
                    };
                }
                Phase::Settling { until } => {
                    self.sim.run_until(until);
                    if self.sim.paused() {
                        return false;
                    }
                    let start = self.sim.now();
                    if let Some(churn) = self.run.churn {
                        self.sim.apply(Action::Churn(churn));
                    }
                    self.sim.apply(Action::Traffic(Traffic {
                        messages: self.run.messages,
                        rate: self.run.rate,
                    }));
                    let sending = Duration::from_secs_f64(self.run.messages as f64 / self.run.rate);
                    self.phase = Phase::Traffic {
                        end: start + sending + self.run.drain,
                    };
                }
                Phase::Traffic { end } => {
                    self.sim.run_until_delivered(end);
                    if self.sim.paused() {
                        return false;
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => return true,
            }
        }
    }

    /// Whether the run is over.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The run's definition.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// The simulation.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The simulation, to set its progress printing, memory limit or pause time.
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// The simulation, the run set aside.
    pub fn into_sim(self) -> Sim {
        self.sim
    }

    /// Saves the run where it is (see [`Sim::save`]).
    pub fn save(&mut self, out: impl std::io::Write) -> Result<(), SnapshotError> {
        self.sim.save_with(&(&self.run, self.phase), out)
    }

    /// A run saved by [`Running::save`].
    pub fn load(input: impl std::io::Read) -> Result<Running, SnapshotError> {
        let (sim, (run, phase)) = Sim::load_with::<(Run, Phase)>(input)?;
        Ok(Running { run, phase, sim })
    }
}
