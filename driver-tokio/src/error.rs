//! The driver's error type.

use std::io;
use std::net::SocketAddr;

/// Why a [`PeerRelay`](crate::PeerRelay) call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The WebSocket server could not bind its address (in use, no permission, ...).
    #[error("could not listen on {addr}: {source}")]
    Listen {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// Why the OS refused.
        source: io::Error,
    },
    /// The options contradict each other or name something unusable (the message says what).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The OS random number generator failed while seeding the node.
    #[error("could not seed the node from the OS RNG: {0}")]
    Entropy(getrandom::Error),
    /// The data given to `send` could not be serialised to JSON.
    #[error("could not serialise the data to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The node refused the command (own id, no such link, too large, too many pending, ...).
    #[error(transparent)]
    Node(#[from] peer_relay_core::Error),
    /// The relay was destroyed (by `destroy` or because every handle was dropped).
    #[error("the relay has been destroyed")]
    Destroyed,
}
