//! Connections, links and connect attempts as the node tracks them.
//!
//! A *connection* is one transport session the driver runs (a WebSocket or a WebRTC data
//! channel), named by a [`ConnId`] the node allocates. A *link* is an established connection
//! to a known peer id. A *pending connect* is a handshake in progress with a peer we have no
//! link to yet.

use core::fmt;
use core::num::NonZeroU64;

use crate::id::PeerId;
use crate::time::Time;

/// A connection handle, allocated by the node and never reused.
///
/// Never zero, so an `Option<ConnId>` (a link's spare, a connect's session) takes no more
/// room than the id. Serialized as its number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[cfg_attr(feature = "snapshot", derive(serde::Deserialize))]
pub struct ConnId(NonZeroU64);

impl ConnId {
    /// The first id a node allocates.
    pub(crate) const FIRST: ConnId = ConnId(NonZeroU64::MIN);

    /// The raw number (for logs and driver-side maps).
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// The id allocated after this one.
    pub(crate) fn next(self) -> ConnId {
        ConnId(self.0.checked_add(1).expect("fewer than 2^64 connections"))
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The transport a connection runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "snapshot", derive(serde::Deserialize))]
pub enum Transport {
    /// A WebSocket, dialled or accepted.
    WebSocket,
    /// A WebRTC data channel.
    WebRtc,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "websocket",
            Transport::WebRtc => "webrtc",
        })
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum ConnState {
    /// We asked the driver to dial a WebSocket (or it handed us an accepted one); waiting
    /// for it to open. `connect` is the peer whose connect attempt dialled it (not a
    /// bootstrap url or an inbound socket), told if it fails.
    Dialing { connect: Option<PeerId> },
    /// WebSocket open and our id sent; waiting for the peer's id until `deadline`.
    AwaitingId {
        deadline: Time,
        connect: Option<PeerId>,
    },
    /// A WebRTC session is being set up; `fallback_ws` is dialled if it fails.
    WebRtcConnecting {
        peer: PeerId,
        /// Boxed: a thin pointer to the rarely-set url keeps every connection's state at
        /// 32 bytes rather than 48.
        #[expect(clippy::box_collection, reason = "a thin pointer, for size")]
        fallback_ws: Option<Box<String>>,
    },
    /// A link to `peer` (maybe a spare one; see [`Link`]). `heard` is when we last heard
    /// from it (a frame, or the transport's ping or pong), in wrapping milliseconds
    /// ([`heard_stamp`]): silence is checked against `Config::keepalive_interval` long before
    /// the stamp wraps (49 days).
    Established { peer: PeerId, heard: u32 },
    /// A connection we gave up (a shed link, a duplicate): no longer ours to send on, but
    /// frames from `peer` are still taken until it closes after `Config::shed_grace`, with
    /// `reason`.
    Retiring {
        peer: PeerId,
        reason: crate::CloseReason,
        until: Time,
    },
}

/// `now` as a wrapping millisecond stamp; `stamp(now) - stamp(then)` (wrapping) is the
/// time between, for spans under 49 days.
pub(crate) fn heard_stamp(now: Time) -> u32 {
    now.as_millis() as u32
}

/// One connection.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Connection {
    pub transport: Transport,
    pub state: ConnState,
    /// The bootstrap url (by index) it was dialled for, told when it ends. A `u32` rather
    /// than a `usize` saves 8 bytes per connection (the node caps the url count).
    pub bootstrap: Option<u32>,
    /// We set it up (dialled, or initiated the WebRTC session) rather than accepted it.
    pub outbound: bool,
    /// Malformed frames received so far.
    pub violations: u32,
}

/// An established link to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Link {
    /// The connection we send on.
    pub conn: ConnId,
    /// Its transport.
    pub transport: Transport,
    /// When it came up.
    pub since: Time,
    /// Whether it is listened to and routed over (always, except links the original's
    /// routing table refused).
    pub routable: bool,
    /// We asked for it (sent the offer, dialled), so we picked the peer for coverage; the
    /// other side usually did not need it. Redundant links we picked are shed first.
    pub outbound: bool,
    /// A second connection to the same peer kept while the peer closes it (the side with the
    /// smaller id closes duplicates); promoted if the primary closes first.
    pub spare: Option<ConnId>,
}

/// Which side of the offer/answer exchange we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum Role {
    /// We sent `handshake-offer`.
    Offered,
    /// We answered the peer's offer and wait for it to connect.
    Answered,
}

/// A connect attempt in flight.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Pending {
    pub deadline: Time,
    pub role: Role,
    /// The application asked for it (`connect`), so failures are reported.
    pub explicit: bool,
    /// The dial or WebRTC session started for it.
    pub session: Option<ConnId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node holds a few dozen of each for its whole life (see `crate::compact`): keep
    /// them from growing unnoticed.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn entry_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<Option<ConnId>>(), 8);
        assert_eq!(size_of::<ConnState>(), 32);
        assert_eq!(size_of::<(ConnId, Connection)>(), 56);
        assert_eq!(size_of::<(PeerId, Link)>(), 56);
        assert_eq!(size_of::<(PeerId, Pending)>(), 48);
    }
}
