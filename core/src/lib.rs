//! # peer-relay-core
//!
//! The complete peer-relay protocol (wire-compatible with the JavaScript `peer-relay` 0.0.2)
//! as a deterministic, sans-IO state machine. A [`Node`] consumes inputs — connections
//! opening and closing, frames, WebRTC signals, timeouts and the application's commands — and
//! produces [`Output`]s for a driver to carry out: frames to transmit, WebSockets to dial,
//! WebRTC sessions to start, connections to close, and application [`Event`]s.
//!
//! The node never reads a clock, the OS RNG or the network: time is passed in as [`Time`]
//! and every random choice comes from the seed given to [`Node::new`]. The same seed and the
//! same inputs give the same outputs, byte for byte.
//!
//! Modules, one concept each:
//! - [`id`]: 160-bit peer ids and XOR distance.
//! - [`wire`]: the JSON frame codec.
//! - [`table`]: the k-bucket table (routing table and candidate list).
//! - [`router`]: duplicate suppression, preferred paths, the pre-link queue, next hops.
//! - [`discovery`]: candidates, which to link, what to tell askers.
//! - [`conn`]: connections, links and connect attempts.
//! - [`node`]: the [`Node`] that composes them.
//! - [`compact`]: growth policy of the per-node tables (memory per idle node).

pub mod compact;
pub mod config;
pub mod conn;
pub mod discovery;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod id;
pub mod node;
pub mod router;
pub mod stats;
pub mod table;
pub mod time;
pub mod wire;

pub use config::{Config, Forwarding, LinkSelection, Routing};
pub use conn::{ConnId, Link, Transport};
pub use error::Error;
pub use id::{Distance, IdError, PeerId};
pub use node::{ConnectFailure, Event, Input, Node, Output, Sizes};
pub use serde_json::value::RawValue;
pub use stats::{CloseReason, DropReason, Stats};
pub use time::Time;
