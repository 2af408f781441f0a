//! The network model: netem-style link impairments and the timing of transports.
//!
//! Like Linux netem, impairments apply on a peer's *egress*: every frame a peer sends passes
//! through its [`LinkModel`] (the run's default, or one set for that peer or for one pair of
//! peers). A frame is dropped with probability `loss`, otherwise delayed by
//! `latency_min + Exp(latency_tail_mean) + Uniform(0, jitter)`, and sent a second time with
//! probability `duplicate`. Links are ordered like the TCP and SCTP streams under WebSockets
//! and data channels: a frame never overtakes an earlier frame on the same link and
//! direction, so jitter becomes head-of-line delay rather than reordering.
//!
//! Loss here is a frame that vanishes. Real WebSockets and (reliable) data channels
//! retransmit, so they turn loss into delay; dropping is the pessimistic model of a relay
//! that loses what it was handed, and it is what exercises the protocol's tolerance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::SimRng;

/// Impairments on one peer's outgoing frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkModel {
    /// The smallest one-way delay.
    #[serde(with = "micros")]
    pub latency_min: Duration,
    /// Mean of the exponential tail added to `latency_min`.
    #[serde(with = "micros")]
    pub latency_tail_mean: Duration,
    /// Uniform extra delay in `[0, jitter]`.
    #[serde(with = "micros")]
    pub jitter: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
}

impl Default for LinkModel {
    /// A continental internet path: 20 ms + Exp(10 ms) + U(0, 5 ms), no loss.
    fn default() -> Self {
        LinkModel {
            latency_min: Duration::from_millis(20),
            latency_tail_mean: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

impl LinkModel {
    /// One-way delay of one frame.
    pub fn sample_delay(&self, rng: &mut SimRng) -> Duration {
        self.latency_min
            + rng.exponential(self.latency_tail_mean)
            + rng.uniform_duration(self.jitter)
    }

    /// Checks the probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [("loss", self.loss), ("duplicate", self.duplicate)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability in [0, 1], got {p}"));
            }
        }
        Ok(())
    }
}

/// How the simulated WebRTC stack behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebRtcModel {
    /// Time to create a local description (offer or answer) after it is due.
    #[serde(with = "micros")]
    pub describe_delay: Duration,
    /// ICE candidates each side trickles after its description (0: none, the description
    /// carries them). With candidates, a side must receive at least one before the
    /// connection can open.
    pub candidates: u8,
    /// Time to gather each candidate.
    #[serde(with = "micros")]
    pub gather_delay: Duration,
    /// One-way delays spent on ICE checks and the DTLS and SCTP handshakes once both sides
    /// have what they need.
    pub connect_round_trips: u8,
}

impl Default for WebRtcModel {
    fn default() -> Self {
        WebRtcModel {
            describe_delay: Duration::from_millis(5),
            candidates: 1,
            gather_delay: Duration::from_millis(20),
            connect_round_trips: 3,
        }
    }
}

/// Timing and failure behaviour of the network around the links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// Every peer's egress model unless set otherwise.
    pub link: LinkModel,
    /// The WebRTC stack.
    pub webrtc: WebRtcModel,
    /// How long a WebSocket dial to an unreachable address (across a partition) hangs before
    /// it fails. A dial to a reachable address with no server fails after one round trip.
    #[serde(with = "micros")]
    pub dial_timeout: Duration,
    /// How long after a peer crashes its links are seen to close on the other side: a
    /// process that dies while its host stays up (the kernel resets its TCP connections, a
    /// closing browser tab ends its data channels). A host that vanishes silently is a
    /// partition, which ICE (`ice_failed_timeout`) and the nodes' keepalive find out.
    #[serde(with = "micros")]
    pub crash_close_delay: Duration,
    /// How long into a partition that cuts it a WebRTC link's ICE gives the path up (its
    /// consent checks unanswered): each end's driver reports `Input::Failed`, unless the
    /// partition healed first. WebSocket links across are left to the nodes' keepalive.
    #[serde(with = "micros")]
    pub ice_failed_timeout: Duration,
    /// Whether a frame that reaches a connection its receiver has already closed (or
    /// forgotten by restarting) resets the sender's end, as TCP and SCTP do.
    pub reset_on_stale_frames: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            link: LinkModel::default(),
            webrtc: WebRtcModel::default(),
            dial_timeout: Duration::from_secs(5),
            crash_close_delay: Duration::from_secs(1),
            ice_failed_timeout: Duration::from_secs(25),
            reset_on_stale_frames: true,
        }
    }
}

/// Serialises durations as whole microseconds (stable, unambiguous JSON).
pub(crate) mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn delays_respect_the_minimum_and_the_mean() {
        let model = LinkModel::default();
        let mut rng = SimRng::new(1, Stream::Network);
        let samples: Vec<Duration> = (0..20_000).map(|_| model.sample_delay(&mut rng)).collect();
        assert!(samples.iter().all(|d| *d >= model.latency_min));
        let mean = samples.iter().map(|d| d.as_micros()).sum::<u128>() / samples.len() as u128;
        // 20 ms + 10 ms + 2.5 ms.
        assert!((32_000..33_000).contains(&mean), "{mean}");
    }

    #[test]
    fn probabilities_are_validated() {
        let bad = LinkModel {
            loss: 1.5,
            ..LinkModel::default()
        };
        assert!(bad.validate().is_err());
        assert!(LinkModel::default().validate().is_ok());
    }
}
