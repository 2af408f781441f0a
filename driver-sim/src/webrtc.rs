//! The simulated WebRTC stack: opaque signals in simple-peer's format, and per-session state.
//!
//! The core relays signals through the overlay as real `signal` messages and never looks
//! inside. Like a real SDP (whose ICE credentials and fingerprint identify the endpoint), the
//! simulated descriptions and candidates carry a token naming the session that made them, so
//! a responder's stack knows which initiator it is talking to without asking the simulator.
//! A session opens only when the exchange completed on both sides: each side has the other's
//! description and, when candidates are trickled, at least one of its candidates.

use peer_relay_core::ConnId;
use serde::{Deserialize, Serialize};

/// One end of a connection: a node, in one incarnation, and its connection handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The peer's index.
    pub node: u32,
    /// Which life of the peer (bumped by every crash or leave).
    pub incarnation: u32,
    /// The connection, as the node named it.
    pub conn: ConnId,
}

/// A session's name as carried in its signals: node, incarnation and connection number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The peer's index.
    pub node: u32,
    /// Its incarnation.
    pub incarnation: u32,
    /// Its connection number ([`ConnId::as_u64`]).
    pub conn: u64,
}

impl Token {
    /// The token of `endpoint`.
    pub fn of(endpoint: Endpoint) -> Token {
        Token {
            node: endpoint.node,
            incarnation: endpoint.incarnation,
            conn: endpoint.conn.as_u64(),
        }
    }

    /// Whether this token names `endpoint`.
    pub fn names(&self, endpoint: Endpoint) -> bool {
        *self == Token::of(endpoint)
    }

    fn write(&self) -> String {
        format!("sim-{}-{}-{}", self.node, self.incarnation, self.conn)
    }

    fn find_in(text: &str) -> Option<Token> {
        let rest = &text[text.find("sim-")? + 4..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        let mut parts = rest[..end].split('-').map(str::parse::<u64>);
        let node = u32::try_from(parts.next()?.ok()?).ok()?;
        let incarnation = u32::try_from(parts.next()?.ok()?).ok()?;
        let conn = parts.next()?.ok()?;
        Some(Token {
            node,
            incarnation,
            conn,
        })
    }
}

/// A signal the simulated stack produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalKind {
    /// The initiator's session description.
    Offer,
    /// The responder's session description.
    Answer,
    /// A trickled ICE candidate (numbered from 0).
    Candidate(u8),
}

/// The JSON of a signal made by the session `from`, in simple-peer's format.
pub fn signal_json(kind: SignalKind, from: Endpoint) -> String {
    let token = Token::of(from).write();
    match kind {
        SignalKind::Offer => format!(r#"{{"type":"offer","sdp":"v=0 o=- {token} IN IP4 sim"}}"#),
        SignalKind::Answer => {
            format!(r#"{{"type":"answer","sdp":"v=0 o=- {token} IN IP4 sim"}}"#)
        }
        SignalKind::Candidate(n) => format!(
            r#"{{"candidate":{{"candidate":"candidate:{n} 1 udp 2122260223 {token} 9 typ host","sdpMLineIndex":0,"sdpMid":"0"}}}}"#
        ),
    }
}

/// A signal received from the remote side, as the stack understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSignal {
    /// The remote's description (an offer or an answer) and its session.
    Description {
        /// Whether it is an offer (else an answer).
        offer: bool,
        /// The remote session.
        from: Token,
    },
    /// A remote ICE candidate.
    Candidate {
        /// The remote session.
        from: Token,
    },
}

#[derive(Deserialize)]
struct SignalFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    sdp: Option<&'a str>,
    candidate: Option<CandidateFields>,
}

#[derive(Deserialize)]
struct CandidateFields {
    candidate: String,
}

/// Parses a remote signal; `None` for anything the stack does not understand (ignored, as
/// a real stack ignores garbage).
pub fn parse_remote(signal: &str) -> Option<RemoteSignal> {
    let fields: SignalFields<'_> = serde_json::from_str(signal).ok()?;
    if let Some(candidate) = fields.candidate {
        return Some(RemoteSignal::Candidate {
            from: Token::find_in(&candidate.candidate)?,
        });
    }
    let offer = match fields.kind? {
        "offer" => true,
        "answer" => false,
        _ => return None,
    };
    Some(RemoteSignal::Description {
        offer,
        from: Token::find_in(fields.sdp?)?,
    })
}

/// A WebRTC session the stack runs for one connection of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Whether this side makes the offer.
    pub initiator: bool,
    /// The remote session, once its description arrived.
    pub remote: Option<Token>,
    /// Remote candidates received (saturating).
    pub remote_candidates: u8,
    /// The connection is being opened (ICE and DTLS under way); nothing more to do.
    pub opening: bool,
}

impl Session {
    /// A session that has not heard from its peer yet.
    pub fn new(initiator: bool) -> Session {
        Session {
            initiator,
            remote: None,
            remote_candidates: 0,
            opening: false,
        }
    }

    /// Whether this side has everything it needs to connect.
    pub fn ready(&self, candidates_expected: u8) -> bool {
        self.remote.is_some() && (candidates_expected == 0 || self.remote_candidates > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_relay_core::{Config, Node, Time};

    fn endpoint(node: u32, incarnation: u32) -> Endpoint {
        let mut n = Node::with_seed(Config::default(), 1, Time::ZERO).unwrap();
        for _ in 0..3 {
            n.accept(Time::ZERO).unwrap();
        }
        Endpoint {
            node,
            incarnation,
            conn: n.accept(Time::ZERO).unwrap(),
        }
    }

    #[test]
    fn signals_round_trip_and_are_json_objects() {
        let from = endpoint(12, 3);
        for (kind, want) in [
            (
                SignalKind::Offer,
                RemoteSignal::Description {
                    offer: true,
                    from: Token::of(from),
                },
            ),
            (
                SignalKind::Answer,
                RemoteSignal::Description {
                    offer: false,
                    from: Token::of(from),
                },
            ),
            (
                SignalKind::Candidate(2),
                RemoteSignal::Candidate {
                    from: Token::of(from),
                },
            ),
        ] {
            let json = signal_json(kind, from);
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(value.is_object(), "{json}");
            assert_eq!(parse_remote(&json), Some(want), "{json}");
        }
        assert!(Token::of(from).names(from));
        assert_eq!(parse_remote(r#"{"type":"offer","sdp":"v=0"}"#), None);
        assert_eq!(parse_remote("[1]"), None);
    }

    #[test]
    fn readiness_needs_the_description_and_a_candidate() {
        let mut s = Session::new(true);
        assert!(!s.ready(1));
        s.remote = Some(Token {
            node: 1,
            incarnation: 0,
            conn: 1,
        });
        assert!(s.ready(0) && !s.ready(1));
        s.remote_candidates = 1;
        assert!(s.ready(1));
    }
}
