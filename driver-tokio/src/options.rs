//! What [`PeerRelay::new`](crate::PeerRelay::new) is configured with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use peer_relay_core::Config;

use crate::error::Error;

/// Options for [`PeerRelay::new`](crate::PeerRelay::new), mirroring the JS original's
/// `{ port, bootstrap, wrtc }` plus the listen address, the advertised url and the core
/// [`Config`].
///
/// ```
/// let options = peer_relay::Options {
///     port: Some(0), // any free port
///     bootstrap: vec!["ws://127.0.0.1:8000".into()],
///     ..peer_relay::Options::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// Port of the WebSocket server: `None` runs no server (the node only dials out, like a
    /// browser peer), `Some(0)` takes any free port.
    pub port: Option<u16>,
    /// Address the server listens on. Default `127.0.0.1`; use `0.0.0.0` (or `::`) together
    /// with [`Options::advertise`] to be reachable from other machines.
    pub listen_addr: IpAddr,
    /// The url other peers are told to dial (in `handshake-answer`). Default: `ws://IP:PORT`
    /// with the listen address, or with loopback when listening on an unspecified address,
    /// which works on one machine. Ignored without a server.
    pub advertise: Option<String>,
    /// WebSocket urls of peers already in the network.
    pub bootstrap: Vec<String>,
    /// Link over WebRTC data channels where the other peer supports them (the JS original's
    /// `wrtc`): answers to our `handshake-offer` saying `wrtc: true` start a WebRTC session,
    /// with the signals relayed through the network, and our answers say `wrtc: true`.
    /// Default on. The session falls back to the peer's WebSocket url if it fails.
    pub webrtc: bool,
    /// The WebRTC stack's settings (ICE servers, bind addresses, mDNS, bounds).
    pub rtc: WebRtcOptions,
    /// The protocol configuration. Its `advertised_url` and `webrtc` fields are set from the
    /// options above.
    pub config: Config,
    /// How long a WebSocket dial (TCP connect and upgrade) may take before it counts as
    /// failed.
    pub connect_timeout: Duration,
    /// Bytes of frames that may wait to be written on one connection; a frame that does not
    /// fit is dropped and counted in [`DriverStats::send_queue_drops`](crate::DriverStats).
    pub send_queue_bytes: usize,
    /// Bytes of message data that may wait unread in one [`Events`](crate::Events) stream;
    /// a message that does not fit is dropped and counted in
    /// [`DriverStats::events_dropped`](crate::DriverStats). Link and failure events are never
    /// dropped (they are few, and losing one would misinform the application).
    pub event_queue_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: None,
            listen_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
            bootstrap: Vec::new(),
            webrtc: true,
            rtc: WebRtcOptions::default(),
            config: Config::default(),
            connect_timeout: Duration::from_secs(10),
            send_queue_bytes: 4 << 20,
            event_queue_bytes: 16 << 20,
        }
    }
}

/// A STUN or TURN server for WebRTC sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` / `turn:host:port?transport=udp` urls.
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN password (empty for STUN).
    pub credential: String,
}

/// How WebRTC sessions run; see [`Options::rtc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcOptions {
    /// STUN/TURN servers. Default none: host candidates only, which link peers on one
    /// machine or one LAN. (The original defaults to public STUN servers.)
    pub ice_servers: Vec<IceServer>,
    /// Local UDP addresses to gather host candidates on; port 0 picks a free one per
    /// session. A wildcard (`0.0.0.0:0`) stands for every non-loopback interface, so the
    /// default, `127.0.0.1:0` and `0.0.0.0:0`, covers loopback and the machine's networks.
    pub bind: Vec<SocketAddr>,
    /// Resolve the remote peer's mDNS (`.local`) host candidates, which is how Chromium
    /// hides its addresses. Needs a multicast route; where the mDNS socket cannot be opened
    /// the session runs without it (counted in
    /// [`DriverStats::webrtc_without_mdns`](crate::DriverStats)). Default on.
    pub mdns: bool,
    /// Remote ICE candidates one session accepts at most; more are ignored and counted in
    /// [`DriverStats::webrtc_signals_ignored`](crate::DriverStats). Default 64.
    pub max_remote_candidates: usize,
}

impl Default for WebRtcOptions {
    fn default() -> Self {
        WebRtcOptions {
            ice_servers: Vec::new(),
            bind: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            ],
            mdns: true,
            max_remote_candidates: 64,
        }
    }
}

impl Options {
    /// The url to advertise once the server is bound to `local`.
    pub(crate) fn advertised_url(&self, local: SocketAddr) -> String {
        if let Some(url) = &self.advertise {
            return url.clone();
        }
        // An unspecified address is not dialable; loopback is, on this machine.
        let ip = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("ws://{}", SocketAddr::new(ip, local.port()))
    }

    /// Checks what the core's `Config::validate` cannot see.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.webrtc && self.rtc.bind.is_empty() {
            return Err(Error::InvalidOptions(
                "WebRTC needs at least one address in `rtc.bind`".into(),
            ));
        }
        if self.port.is_none() && self.advertise.is_some() {
            return Err(Error::InvalidOptions(
                "`advertise` needs a server: set `port`".into(),
            ));
        }
        if self.send_queue_bytes < self.config.max_frame_bytes {
            return Err(Error::InvalidOptions(
                "`send_queue_bytes` must hold at least one frame of `max_frame_bytes`".into(),
            ));
        }
        if self.event_queue_bytes < self.config.max_frame_bytes {
            return Err(Error::InvalidOptions(
                "`event_queue_bytes` must hold at least one frame of `max_frame_bytes`".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_is_dialable_on_this_machine() {
        let options = Options::default();
        let any4: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let any6: SocketAddr = "[::]:8000".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(options.advertised_url(any4), "ws://127.0.0.1:8000");
        assert_eq!(options.advertised_url(any6), "ws://[::1]:8000");
        assert_eq!(options.advertised_url(lo), "ws://127.0.0.1:9000");
        let options = Options {
            advertise: Some("ws://relay.example:80".into()),
            ..Options::default()
        };
        assert_eq!(options.advertised_url(lo), "ws://relay.example:80");
    }

    #[test]
    fn contradictions_are_refused() {
        let webrtc = Options {
            rtc: WebRtcOptions {
                bind: Vec::new(),
                ..WebRtcOptions::default()
            },
            ..Options::default()
        };
        assert!(matches!(webrtc.validate(), Err(Error::InvalidOptions(_))));
        let ws_only = Options {
            webrtc: false,
            ..webrtc
        };
        assert!(ws_only.validate().is_ok());
        let advertise_without_server = Options {
            advertise: Some("ws://x:1".into()),
            ..Options::default()
        };
        assert!(matches!(
            advertise_without_server.validate(),
            Err(Error::InvalidOptions(_))
        ));
        assert!(Options::default().validate().is_ok());
    }
}
