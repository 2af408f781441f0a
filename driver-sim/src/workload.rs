//! Workloads: who runs a WebSocket server, how peers bootstrap, message traffic and churn.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How joining peers find the network. Only peers with a WebSocket server can be dialled, so
/// every topology bootstraps through servers; with `--servers` equal to `--peers` "server"
/// means "peer".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// Everyone bootstraps through peer 0.
    Star,
    /// The first `count` servers are seeds. Every other peer is given all their urls (as a
    /// client with a built-in seed list); a seed is given the seeds before it.
    Seeds {
        /// How many seed peers.
        count: usize,
    },
    /// Each peer bootstraps through the latest server that joined before it: a chain when
    /// every peer is a server.
    Chain,
    /// Each peer bootstraps through a uniformly random server among those that joined before
    /// it and are alive.
    Random,
}

/// [`Bootstrap`]'s JSON form: `{"kind":"seeds","count":4}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum Tagged {
    Star,
    Seeds { count: usize },
    Chain,
    Random,
}

impl Serialize for Bootstrap {
    /// `{"kind":…}` in JSON; in a binary format (a snapshot, whose format cannot read an
    /// internally tagged enum) the [`Display`](fmt::Display) form, `seeds:4`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.collect_str(self);
        }
        match *self {
            Bootstrap::Star => Tagged::Star,
            Bootstrap::Seeds { count } => Tagged::Seeds { count },
            Bootstrap::Chain => Tagged::Chain,
            Bootstrap::Random => Tagged::Random,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Bootstrap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let text = String::deserialize(d)?;
            return text.parse().map_err(serde::de::Error::custom);
        }
        Ok(match Tagged::deserialize(d)? {
            Tagged::Star => Bootstrap::Star,
            Tagged::Seeds { count } => Bootstrap::Seeds { count },
            Tagged::Chain => Bootstrap::Chain,
            Tagged::Random => Bootstrap::Random,
        })
    }
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bootstrap::Star => f.write_str("star"),
            Bootstrap::Seeds { count } => write!(f, "seeds:{count}"),
            Bootstrap::Chain => f.write_str("chain"),
            Bootstrap::Random => f.write_str("random"),
        }
    }
}

impl FromStr for Bootstrap {
    type Err = String;

    /// `star`, `seeds:N`, `chain` or `random`.
    fn from_str(s: &str) -> Result<Bootstrap, String> {
        match s {
            "star" => Ok(Bootstrap::Star),
            "chain" => Ok(Bootstrap::Chain),
            "random" => Ok(Bootstrap::Random),
            _ => match s.strip_prefix("seeds:").map(str::parse::<usize>) {
                Some(Ok(count)) if count > 0 => Ok(Bootstrap::Seeds { count }),
                _ => Err(format!(
                    "unknown bootstrap {s:?}: expected star, seeds:N (N >= 1), chain or random"
                )),
            },
        }
    }
}

/// Whether peer `index` runs a WebSocket server when `servers` of every `peers` do. Servers
/// are spread evenly over join order (peer 0 is always one), so every stage of a growing
/// network has servers to bootstrap through; peers added later by churn continue the
/// pattern.
pub fn is_server(index: usize, servers: usize, peers: usize) -> bool {
    if index == 0 {
        return servers > 0;
    }
    let (i, s, n) = (index as u128, servers as u128, peers.max(1) as u128);
    (i * s) / n != ((i - 1) * s) / n
}

/// The virtual url of peer `index`'s WebSocket server.
pub fn url_of(index: usize) -> String {
    format!("ws://p{index}.sim")
}

/// The peer whose server `url` names, if it is one of ours.
pub fn peer_of_url(url: &str) -> Option<usize> {
    url.strip_prefix("ws://p")?
        .strip_suffix(".sim")?
        .parse()
        .ok()
}

/// Random-pair message traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// How many messages.
    pub messages: u64,
    /// Messages per second of virtual time, evenly spaced.
    pub rate: f64,
}

/// Peers joining and leaving.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    /// Joins per second of virtual time (a Poisson process).
    pub joins_per_sec: f64,
    /// Leaves per second of virtual time (a Poisson process).
    pub leaves_per_sec: f64,
    /// Leaving peers crash instead of shutting down cleanly.
    pub crash: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_spread_evenly_and_counted_exactly() {
        for (servers, peers) in [
            (1, 1),
            (1, 1000),
            (100, 1000),
            (7, 100),
            (1000, 1000),
            (3, 10),
        ] {
            let picked: Vec<usize> = (0..peers)
                .filter(|&i| is_server(i, servers, peers))
                .collect();
            assert_eq!(picked.len(), servers, "{servers} of {peers}");
            assert_eq!(picked[0], 0);
        }
        assert!(!(0..10).any(|i| is_server(i, 0, 10)));
        // Churn joiners continue the pattern: about one in ten.
        let later = (1000..2000).filter(|&i| is_server(i, 100, 1000)).count();
        assert_eq!(later, 100);
    }

    #[test]
    fn urls_round_trip() {
        assert_eq!(peer_of_url(&url_of(1234)), Some(1234));
        assert_eq!(peer_of_url("ws://example.com"), None);
        assert_eq!(peer_of_url("ws://px.sim"), None);
    }

    #[test]
    fn bootstrap_parses_and_prints() {
        for s in ["star", "seeds:3", "chain", "random"] {
            assert_eq!(s.parse::<Bootstrap>().unwrap().to_string(), s);
        }
        assert!("seeds:0".parse::<Bootstrap>().is_err());
        assert!("mesh".parse::<Bootstrap>().is_err());
    }
}
