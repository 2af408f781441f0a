//! The core's one error type: caller misuse and refusals of a command. Problems caused by
//! peers are never errors; they are counted in [`Stats`](crate::Stats) instead.

use core::fmt;

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The node was shut down.
    ShutDown,
    /// The command named our own id (`connect`, `send`).
    OwnId,
    /// `disconnect` for a peer we have no link to.
    NotLinked,
    /// A url that is not `ws://` or `wss://`, or longer than 2,048 bytes.
    InvalidUrl,
    /// The data given to `send` could not be serialised to JSON, or is not valid JSON.
    InvalidData(String),
    /// The frame for this message would exceed `max_frame_bytes`, or nest deeper than
    /// `max_json_depth`.
    TooLarge,
    /// The node has no link yet and its pre-link queue (`queue_max`) is full.
    QueueFull,
    /// `max_pending_connects` connect attempts are already in flight.
    TooManyPending,
    /// `max_connections` connections already exist.
    TooManyConnections,
    /// Still joining (no link yet, within `Config::join_hold` of bootstrapping): an incoming
    /// connection is refused, so its peer joins through someone already in the network.
    Joining,
    /// `max_bootstrap_urls` bootstrap urls are already registered.
    TooManyBootstrapUrls,
    /// The configuration is inconsistent.
    InvalidConfig(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShutDown => f.write_str("the node is shut down"),
            Error::OwnId => f.write_str("the command names our own id"),
            Error::NotLinked => f.write_str("no link to that peer"),
            Error::InvalidUrl => f.write_str("not a ws:// or wss:// url"),
            Error::InvalidData(why) => write!(f, "data is not valid JSON: {why}"),
            Error::TooLarge => f.write_str("message exceeds the frame size or depth limit"),
            Error::QueueFull => f.write_str("no link yet and the pre-link queue is full"),
            Error::TooManyPending => f.write_str("too many connect attempts in flight"),
            Error::TooManyConnections => f.write_str("connection limit reached"),
            Error::Joining => f.write_str("still joining the network"),
            Error::TooManyBootstrapUrls => f.write_str("bootstrap url limit reached"),
            Error::InvalidConfig(why) => write!(f, "invalid config: {why}"),
        }
    }
}

impl std::error::Error for Error {}
