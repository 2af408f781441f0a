//! Node configuration: strategy knobs and every bound on state the network can grow.

use std::time::Duration;

use crate::error::Error;
use crate::wire::{DecodeLimits, PATH_DECODE_LIMIT};

/// Which links a node reads messages from and routes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// The original: only links that fit in the k-bucket routing table are listened to and
    /// routed over; a link refused by a full bucket stays open but is ignored.
    TableOnly,
    /// Every established link is listened to and routed over.
    AllLinks,
}

/// How a node picks which candidates to link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkSelection {
    /// The original: the `target_links` candidates nearest to our own id.
    NearestToSelf,
    /// The `near` candidates nearest to us plus one per distinct XOR-distance bucket, so
    /// links spread over the id space and greedy routing halves the distance per hop.
    BucketDiverse {
        /// How many nearest candidates to link besides the one-per-bucket picks.
        near: usize,
    },
}

/// How many copies a node forwards and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarding {
    /// The original: `concurrency` copies at every hop, plus one towards the preferred path.
    Spread,
    /// One copy along the greedy (or preferred) path; `concurrency` copies only where greedy
    /// progress fails (no link is closer to the target than we are).
    Greedy,
}

/// Node configuration. [`Config::default`] is the scalable strategy; [`Config::original`]
/// reproduces the JS original's choices for comparison. Every limit is a field here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Our WebSocket url, sent in `handshake-answer` (`None`: we run no server).
    pub advertised_url: Option<String>,
    /// Whether we can link over WebRTC (the driver runs a WebRTC stack).
    pub webrtc: bool,

    /// Which links are listened to and routed over.
    pub routing: Routing,
    /// Which candidates to link.
    pub link_selection: LinkSelection,
    /// How many copies to forward.
    pub forwarding: Forwarding,
    /// Copies per hop for [`Forwarding::Spread`]; copies at a local minimum for
    /// [`Forwarding::Greedy`]. The original uses 2.
    pub concurrency: usize,

    /// Contacts per k-bucket in the routing table (20).
    pub k: usize,
    /// Contacts per k-bucket in the candidate table, the peers we know of and might link
    /// to or name in a `foundPeers` reply (original: 20, its one `k`). The table has a full
    /// bucket for each of about `log2(n) - log2(candidate_k)` leading bits, so at a million
    /// peers it is most of an idle node's memory: 20 bytes per id, `candidate_k` ids per
    /// bucket.
    pub candidate_k: usize,
    /// Links to populate up to, counting pending connects (original: 15).
    pub target_links: usize,
    /// Most established links; past it the node sheds surplus links (keeping the links that
    /// make routing work) and refuses new ones. A link over it is closed with
    /// [`CloseReason::LinkBudget`](crate::CloseReason::LinkBudget).
    pub max_links: usize,
    /// At `max_links`, answer an offer with no transport (`{"ws":null,"wrtc":false}`, which
    /// the offerer takes as a failed connect and picks someone else) when the link would be
    /// redundant for us: its bucket already has a link and it is not among our `near`
    /// nearest. Accepting would shed one of our links, whose far end often relied on it and
    /// links again: in a growing network these cascades were half of all links opened.
    /// Only with [`LinkSelection::BucketDiverse`]; explicit connects are never declined.
    /// The JS original keeps a declined connect pending, as it does when an answer is lost.
    pub decline_redundant_offers: bool,
    /// A shed link stops carrying our traffic at once but is closed only this much later, so
    /// frames the other side sent before it learns of the close still arrive and are relayed
    /// (closing at once loses them), and a shed joiner can finish the link setups it started
    /// through us. Retiring connections count against `max_connections`.
    pub shed_grace: Duration,
    /// Most connections in any state (dialing, handshaking, established, retiring). An
    /// inbound connection past it is refused.
    ///
    /// This sets how fast a seed that everyone bootstraps through admits joiners: each
    /// joiner past `max_links` retires someone for `shed_grace`, so a seed takes about
    /// `(max_connections - max_links) / shed_grace` joiners per second (96/s by default)
    /// and refuses the rest, who retry after a backoff. Refusing is what keeps an
    /// overloaded seed useful: admitting more would cut every joiner's grace below the time
    /// it needs to link elsewhere, and they would all come back.
    pub max_connections: usize,

    /// Hops after which a message is dropped instead of relayed (20). Paths longer than this
    /// are refused at decode.
    pub max_hops: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Deepest JSON nesting accepted in a frame.
    pub max_json_depth: usize,
    /// Most ids taken from one `foundPeers` message; the rest are ignored.
    pub max_found_peers: usize,
    /// Ids we put in a `foundPeers` reply (original: 20).
    pub found_peers_reply: usize,

    /// Most nonces remembered for duplicate suppression.
    pub seen_nonces_max: usize,
    /// How long a nonce is remembered (between half of this and all of it). Copies of a
    /// message race each other over paths of at most `max_hops` hops, so a duplicate comes
    /// within seconds of the first copy: the simulator's 10,000-peer run gives the same trace
    /// at 5 s as at 30 s. A longer window only costs memory: it holds every nonce seen in it.
    pub seen_nonce_ttl: Duration,
    /// Most senders remembered in the preferred-path table (sender -> link it came from).
    pub preferred_paths_max: usize,
    /// How long a preferred path is kept (between half of this and all of it): replies follow
    /// their requests, and offers their introductions, within seconds. 15 s measured as well
    /// as 30 s (10,000 simulated peers: the same delivery and hops, slightly fewer frames and
    /// failed connects) with a fifth less memory.
    pub preferred_path_ttl: Duration,
    /// Most messages queued while the node has no link.
    pub queue_max: usize,

    /// Most connect attempts in flight (offers sent or answered, sessions being set up).
    pub max_pending_connects: usize,
    /// A pending connect that has not produced a link after this long is dropped (the
    /// original never clears them).
    pub pending_connect_timeout: Duration,
    /// A candidate whose connect failed is not retried for this long, doubled per failure.
    pub connect_retry_backoff: Duration,
    /// Most peers whose retry time and failure count are remembered (at least 2). Kept
    /// apart from the candidate table, so an evicted and re-learned candidate keeps its
    /// backoff; past the bound the oldest half is forgotten.
    pub connect_backoffs_max: usize,
    /// A WebSocket link that sends no id handshake within this time is closed.
    pub id_handshake_timeout: Duration,
    /// A WebRTC session that has not opened its data channel within this time is abandoned.
    pub webrtc_timeout: Duration,

    /// Malformed frames tolerated on one connection before it is closed.
    pub max_violations: u32,

    /// Most bootstrap urls (never more than `u32::MAX`).
    pub max_bootstrap_urls: usize,
    /// First delay before re-dialling a bootstrap url that failed; doubled per failure.
    pub bootstrap_backoff_initial: Duration,
    /// Longest delay between bootstrap dial attempts.
    pub bootstrap_backoff_max: Duration,
    /// For this long after its first bootstrap url is given, a node without a link refuses
    /// incoming WebSockets ([`Error::Joining`]); when it ends without a link, the bootstrap
    /// urls waiting for a retry are dialled at once. Zero accepts at once, as the original
    /// does. A server not in the network yet knows no one but those
    /// who join through it, and they grow into an overlay of their own: 3,000 peers started
    /// within a second formed two such *worlds*, each routing only within itself, for
    /// minutes. Two peers bootstrapping through each other at once link when it ends.
    pub join_hold: Duration,
    /// Interval of the discovery refresh (asking for peers to fill empty buckets and top up
    /// links). `None` disables it, as in the original.
    pub refresh_interval: Option<Duration>,
    /// Most bucket lookups in progress at once (each is one outstanding `findPeers`).
    pub max_lookups: usize,
    /// A bucket whose lookup found no one to link is not looked up again for twice the
    /// refresh interval, doubled per fruitless lookup in a row up to this (zero: looked up
    /// at every refresh, as before). Buckets deeper than about log2 n are empty in any
    /// network; looking them up every 15 s was three quarters of an idle node's frames.
    pub lookup_retry_max: Duration,
    /// A link we have heard nothing from (no frame, no transport pong or ping) for this long
    /// is probed: [`Output::Probe`](crate::Output::Probe) asks the driver for a WebSocket
    /// ping, or for the WebRTC stack's word that ICE still holds. Probes repeat every half
    /// of the shorter of this and `keepalive_timeout` while the silence lasts. `None` never
    /// probes or closes a silent link, as in the original; a peer that vanished without a
    /// close (power lost, network gone, process frozen) then stays a link, and a black hole
    /// for what is routed over it, until its transport gives up.
    pub keepalive_interval: Option<Duration>,
    /// A link still silent this long after `keepalive_interval` is closed as
    /// [`Unresponsive`](crate::CloseReason::Unresponsive). A dead link is closed between
    /// `keepalive_interval + keepalive_timeout` and that plus the probe period.
    pub keepalive_timeout: Duration,
    /// After it closes a link as unresponsive, or its transport loses one
    /// ([`Input::Failed`](crate::Input::Failed): ICE gave the path up), a sign that a peer
    /// vanished or the network split, a node checks that it still reaches its bootstrap
    /// servers: it routes a `findPeers` to
    /// each one it has no link to, and dials the url of any that did not answer by the next
    /// check. Both halves of a split network otherwise stay apart after it heals, each a
    /// world of its own that knows nothing of the other. Checks start this long after the
    /// close and repeat at doubling intervals up to `reach_check_max`. `None` never checks,
    /// as in the original.
    pub reach_check_interval: Option<Duration>,
    /// Longest interval between reach checks (at least `reach_check_interval`).
    pub reach_check_max: Duration,
}

/// Longest `keepalive_interval + keepalive_timeout`.
const KEEPALIVE_WINDOW_MAX: Duration = Duration::from_secs(86_400);

impl Default for Config {
    fn default() -> Self {
        Config {
            advertised_url: None,
            webrtc: false,
            routing: Routing::AllLinks,
            link_selection: LinkSelection::BucketDiverse { near: 4 },
            forwarding: Forwarding::Greedy,
            concurrency: 2,
            k: 20,
            candidate_k: 20,
            target_links: 15,
            max_links: 32,
            decline_redundant_offers: true,
            shed_grace: Duration::from_secs(1),
            max_connections: 128,
            max_hops: 20,
            max_frame_bytes: 1 << 20,
            max_json_depth: 128,
            max_found_peers: 20,
            found_peers_reply: 20,
            seen_nonces_max: 65_536,
            seen_nonce_ttl: Duration::from_secs(10),
            preferred_paths_max: 4_096,
            preferred_path_ttl: Duration::from_secs(15),
            queue_max: 256,
            max_pending_connects: 32,
            pending_connect_timeout: Duration::from_secs(10),
            connect_retry_backoff: Duration::from_secs(5),
            connect_backoffs_max: 1_024,
            id_handshake_timeout: Duration::from_secs(10),
            webrtc_timeout: Duration::from_secs(20),
            max_violations: 8,
            max_bootstrap_urls: 16,
            bootstrap_backoff_initial: Duration::from_millis(500),
            bootstrap_backoff_max: Duration::from_secs(30),
            join_hold: Duration::from_secs(5),
            refresh_interval: Some(Duration::from_secs(15)),
            max_lookups: 8,
            lookup_retry_max: Duration::from_secs(240),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            reach_check_interval: Some(Duration::from_secs(15)),
            reach_check_max: Duration::from_secs(240),
        }
    }
}

impl Config {
    /// The original's strategy: table-only links, 15 links nearest to self, two copies per
    /// hop, no refresh. Bounds stay on (the original has none) but are generous enough that
    /// a seed peer can hold everyone, as it does in the original.
    pub fn original() -> Self {
        Config {
            routing: Routing::TableOnly,
            link_selection: LinkSelection::NearestToSelf,
            forwarding: Forwarding::Spread,
            concurrency: 2,
            max_links: 1 << 20,
            decline_redundant_offers: false,
            max_connections: 1 << 20,
            join_hold: Duration::ZERO,
            refresh_interval: None,
            keepalive_interval: None,
            reach_check_interval: None,
            ..Config::default()
        }
    }

    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |why: &'static str| Err(Error::InvalidConfig(why));
        if self.k == 0 {
            return fail("k must be at least 1");
        }
        if self.candidate_k == 0 {
            return fail("candidate_k must be at least 1");
        }
        if self.max_hops == 0 || self.max_hops > PATH_DECODE_LIMIT {
            return fail("max_hops must be in 1..=64");
        }
        if self.concurrency == 0 {
            return fail("concurrency must be at least 1");
        }
        if self.max_links == 0 || self.max_connections < self.max_links.min(1 << 20) {
            return fail("max_connections must be at least max_links");
        }
        if self.target_links > self.max_links {
            return fail("target_links must not exceed max_links");
        }
        if self.max_frame_bytes < 256 {
            return fail("max_frame_bytes must be at least 256");
        }
        if self.max_json_depth < 4 {
            return fail("max_json_depth must be at least 4");
        }
        // Two generations of at most half the bound each (an odd bound rounds down).
        if self.seen_nonces_max < 2 {
            return fail("seen_nonces_max must be at least 2");
        }
        if self.connect_backoffs_max < 2 {
            return fail("connect_backoffs_max must be at least 2");
        }
        if self.preferred_paths_max == 1 {
            return fail("preferred_paths_max must be 0 (off) or at least 2");
        }
        if let Some(url) = &self.advertised_url {
            if !crate::node::is_ws_url(url) {
                return fail("advertised_url must be a ws:// or wss:// url");
            }
        }
        if self.refresh_interval.is_some_and(|d| d.is_zero()) {
            return fail("refresh_interval must be positive");
        }
        if let Some(interval) = self.reach_check_interval {
            if interval.is_zero() {
                return fail("reach_check_interval must be positive");
            }
            // A zero maximum would re-arm the check at the same instant forever.
            if self.reach_check_max < interval {
                return fail("reach_check_max must be at least reach_check_interval");
            }
        }
        // Silence is measured in wrapping 32-bit milliseconds: the whole window must fit.
        if let Some(interval) = self.keepalive_interval {
            let window = interval.saturating_add(self.keepalive_timeout);
            if interval.is_zero() || self.keepalive_timeout.is_zero() {
                return fail("keepalive_interval and keepalive_timeout must be positive");
            }
            if window > KEEPALIVE_WINDOW_MAX {
                return fail("keepalive_interval + keepalive_timeout must be at most a day");
            }
        }
        Ok(())
    }

    /// The decode limits implied by this config.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_frame_bytes: self.max_frame_bytes,
            max_json_depth: self.max_json_depth,
            max_path_len: self.max_hops,
            max_found_peers: self.max_found_peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::default().validate().unwrap();
        Config::original().validate().unwrap();
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            Config {
                k: 0,
                ..Config::default()
            },
            Config {
                candidate_k: 0,
                ..Config::default()
            },
            Config {
                max_hops: 65,
                ..Config::default()
            },
            Config {
                concurrency: 0,
                ..Config::default()
            },
            Config {
                target_links: 40,
                ..Config::default()
            },
            Config {
                advertised_url: Some("http://x".into()),
                ..Config::default()
            },
            Config {
                connect_backoffs_max: 1,
                ..Config::default()
            },
            Config {
                keepalive_interval: Some(Duration::ZERO),
                ..Config::default()
            },
            Config {
                keepalive_timeout: Duration::ZERO,
                ..Config::default()
            },
            Config {
                keepalive_interval: Some(Duration::from_secs(86_400)),
                ..Config::default()
            },
            Config {
                reach_check_interval: Some(Duration::ZERO),
                ..Config::default()
            },
            Config {
                reach_check_max: Duration::ZERO,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = Config::original();
        let json = serde_json::to_string(&config).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let partial: Config = serde_json::from_str(r#"{"target_links":5}"#).unwrap();
        assert_eq!(partial.target_links, 5);
    }
}
