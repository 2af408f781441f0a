//! Counters a node keeps: traffic, outcomes, and every drop and close by reason.

use core::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::wire::DecodeError;

macro_rules! reason_enum {
    ($(#[$meta:meta])* $name:ident, $counts:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            const COUNT: usize = Self::ALL.len();

            /// A short stable label, used in JSON and logs.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }

        #[doc = concat!("Counters indexed by [`", stringify!($name), "`].")]
        #[derive(Clone, Copy, PartialEq, Eq, Default)]
        pub struct $counts([u64; $name::COUNT]);

        impl $counts {
            /// Adds one for `reason`.
            pub fn add(&mut self, reason: $name) {
                self.0[reason as usize] += 1;
            }

            /// The count for `reason`.
            pub fn get(&self, reason: $name) -> u64 {
                self.0[reason as usize]
            }

            /// The sum over all reasons.
            pub fn total(&self) -> u64 {
                self.0.iter().sum()
            }

            /// Non-zero counts, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = ($name, u64)> + '_ {
                $name::ALL.iter().copied().zip(self.0.iter().copied()).filter(|(_, n)| *n > 0)
            }
        }

        impl fmt::Debug for $counts {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.iter().map(|(r, n)| (r.label(), n))).finish()
            }
        }

        impl Serialize for $counts {
            /// A map from label to count, non-zero entries only (in a binary format, such
            /// as a simulator snapshot, every count in declaration order).
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if !serializer.is_human_readable() {
                    return serializer.collect_seq(self.0.iter());
                }
                let mut map = serializer.serialize_map(None)?;
                for (reason, count) in self.iter() {
                    map.serialize_entry(reason.label(), &count)?;
                }
                map.end()
            }
        }

        #[cfg(feature = "snapshot")]
        impl<'de> serde::Deserialize<'de> for $counts {
            /// The form [`Serialize`] writes: a map from label to count, or in a binary
            /// format every count.
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                let mut counts = $counts::default();
                if deserializer.is_human_readable() {
                    let labelled: std::collections::BTreeMap<String, u64> =
                        serde::Deserialize::deserialize(deserializer)?;
                    for (label, count) in labelled {
                        let reason = $name::ALL
                            .iter()
                            .find(|r| r.label() == label)
                            .ok_or_else(|| D::Error::custom(format_args!("unknown reason {label:?}")))?;
                        counts.0[*reason as usize] = count;
                    }
                } else {
                    let all: Vec<u64> = serde::Deserialize::deserialize(deserializer)?;
                    if all.len() != $name::COUNT {
                        return Err(D::Error::invalid_length(all.len(), &"one count per reason"));
                    }
                    counts.0.copy_from_slice(&all);
                }
                Ok(counts)
            }
        }
    };
}

reason_enum! {
    /// Why an incoming frame or message was dropped.
    DropReason, DropCounts {
        /// Frame larger than `max_frame_bytes`.
        Oversize => "oversize",
        /// JSON nested deeper than `max_json_depth`.
        TooDeep => "too-deep",
        /// Not JSON, or not an envelope.
        Malformed => "malformed",
        /// An id that is not 40 hex characters or the Buffer form.
        BadId => "bad-id",
        /// A nonce that is not a short plain string.
        BadNonce => "bad-nonce",
        /// An empty path or one longer than `max_hops`.
        BadPath => "bad-path",
        /// A binary frame (the protocol is text only).
        Binary => "binary",
        /// A payload whose `type`/`data` do not have the documented shape.
        MalformedPayload => "malformed-payload",
        /// A message that already travelled `max_hops` and is not for us.
        HopLimit => "hop-limit",
        /// No link to forward to (all candidates are on the path).
        NoRoute => "no-route",
        /// A frame on a link the routing table refused (original strategy only).
        NotListening => "not-listening",
        /// A message claiming to come from us that we never sent.
        FromSelf => "from-self",
        /// A message whose path already holds our id (a loop, or a forged path).
        Looped => "looped",
        /// A handshake answer for which we sent no offer.
        UnsolicitedAnswer => "unsolicited-answer",
        /// A WebRTC signal from a peer we are not setting up a session with.
        UnsolicitedSignal => "unsolicited-signal",
        /// A handshake offer we could not take: too many connects in flight.
        PendingFull => "pending-full",
        /// A frame on a connection that is not open yet.
        NotOpen => "not-open",
    }
}

impl From<DecodeError> for DropReason {
    fn from(err: DecodeError) -> Self {
        match err {
            DecodeError::Oversize => DropReason::Oversize,
            DecodeError::TooDeep => DropReason::TooDeep,
            DecodeError::Malformed => DropReason::Malformed,
            DecodeError::BadId => DropReason::BadId,
            DecodeError::BadNonce => DropReason::BadNonce,
            DecodeError::BadPath => DropReason::BadPath,
            DecodeError::MalformedPayload => DropReason::MalformedPayload,
        }
    }
}

reason_enum! {
    /// Why the node closed a connection.
    CloseReason, CloseCounts {
        /// The application asked (`disconnect`).
        Requested => "requested",
        /// The node is shutting down.
        Shutdown => "shutdown",
        /// A second link to a peer we already have a link to.
        Duplicate => "duplicate",
        /// The peer sent no id handshake in time.
        HandshakeTimeout => "handshake-timeout",
        /// The id handshake was not a valid id.
        InvalidHandshake => "invalid-handshake",
        /// The peer claimed our own id.
        SelfConnection => "self-connection",
        /// The connection sent more than `max_violations` malformed frames.
        ProtocolViolations => "protocol-violations",
        /// The link budget (`max_links`) is exhausted and this link is the least useful.
        LinkBudget => "link-budget",
        /// A WebRTC session did not open in time.
        WebRtcTimeout => "webrtc-timeout",
        /// Nothing was heard from the link for `keepalive_interval + keepalive_timeout`,
        /// probes included.
        Unresponsive => "unresponsive",
    }
}

/// Everything a node counts. Read it with [`Node::stats`](crate::Node::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "snapshot", derive(serde::Deserialize))]
pub struct Stats {
    /// Frames received on any connection.
    pub frames_in: u64,
    /// Bytes received on any connection.
    pub bytes_in: u64,
    /// Frames handed to the driver to transmit.
    pub frames_out: u64,
    /// Bytes handed to the driver to transmit.
    pub bytes_out: u64,
    /// Messages this node originated (user and protocol).
    pub originated: u64,
    /// User messages delivered to the application.
    pub delivered: u64,
    /// Messages for us of any type (user and protocol).
    pub received: u64,
    /// Messages forwarded for others.
    pub relayed: u64,
    /// Messages dropped because their nonce was already seen.
    pub duplicates: u64,
    /// Messages queued because no link existed yet.
    pub queued: u64,
    /// Links that came up.
    pub links_opened: u64,
    /// Links that went down.
    pub links_closed: u64,
    /// Of those, links the transport gave up on without a close ([`Input::Failed`]).
    ///
    /// [`Input::Failed`]: crate::Input::Failed
    pub links_failed: u64,
    /// Connect attempts that failed or expired.
    pub connects_failed: u64,
    /// Offers turned down because we are at the link budget and the link would be
    /// redundant for us.
    pub offers_declined: u64,
    /// Inbound connections refused by `max_connections`.
    pub connections_refused: u64,
    /// Keepalive probes asked of the driver for silent links.
    pub keepalive_probes: u64,
    /// Reach checks: `findPeers` routed to a bootstrap server we have no link to.
    pub reach_checks: u64,
    /// Bootstrap urls dialled again because their server did not answer a reach check.
    pub reach_redials: u64,
    /// Dropped frames and messages, by reason.
    pub dropped: DropCounts,
    /// Connections the node closed, by reason.
    pub closed: CloseCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_serialises_non_zero() {
        let mut stats = Stats::default();
        stats.dropped.add(DropReason::BadId);
        stats.dropped.add(DropReason::BadId);
        stats.closed.add(CloseReason::Duplicate);
        assert_eq!(stats.dropped.get(DropReason::BadId), 2);
        assert_eq!(stats.dropped.total(), 2);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["dropped"], serde_json::json!({"bad-id": 2}));
        assert_eq!(json["closed"], serde_json::json!({"duplicate": 1}));
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.extend(CloseReason::ALL.iter().map(|r| r.label()));
        let n = labels.len();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), n);
    }
}
