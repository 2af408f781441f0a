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
pub mod trace;
pub mod webrtc;
pub mod workload;

use std::time::Duration;

use peer_relay_core::Time;
use serde::{Deserialize, Serialize};

pub use model::{LinkModel, NetConfig, WebRtcModel};
pub use report::Report;
pub use sim::{Action, Counters, Delivery, MessageId, MessageRecord, PeerIndex, Sim, SimConfig};
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
        if self.rate.is_nan() || self.rate <= 0.0 {
            return Err("rate must be positive".into());
        }
        let mut sim = Sim::new(self.sim.clone())?;
        sim.set_progress(progress);
        sim.set_rss_limit(rss_limit);
        let deadline = self.sim.joins_end() + self.warmup;
        sim.run_until_converged(deadline);
        // Traffic starts right after convergence (or at the deadline), never earlier than
        // the last join.
        sim.run_until(self.sim.joins_end());
        let settled = sim.now() + self.settle;
        sim.run_until(settled);
        let start = sim.now();
        if let Some(churn) = self.churn {
            sim.apply(Action::Churn(churn));
        }
        sim.apply(Action::Traffic(Traffic {
            messages: self.messages,
            rate: self.rate,
        }));
        let sending = Duration::from_secs_f64(self.messages as f64 / self.rate);
        sim.run_until_delivered(start + sending + self.drain);
        let report = sim.report();
        Ok((sim, report))
    }

    /// The time traffic would start in a run that never converges.
    pub fn latest_traffic_start(&self) -> Time {
        self.sim.joins_end() + self.warmup + self.settle
    }
}
