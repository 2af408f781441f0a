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
    /// Link over WebRTC data channels. Not wired up in this driver yet: `true` makes
    /// [`PeerRelay::new`](crate::PeerRelay::new) fail with
    /// [`Error::WebRtcUnavailable`](crate::Error::WebRtcUnavailable).
    pub webrtc: bool,
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
            webrtc: false,
            config: Config::default(),
            connect_timeout: Duration::from_secs(10),
            send_queue_bytes: 4 << 20,
            event_queue_bytes: 16 << 20,
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
        if self.webrtc {
            return Err(Error::WebRtcUnavailable);
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
            webrtc: true,
            ..Options::default()
        };
        assert!(matches!(webrtc.validate(), Err(Error::WebRtcUnavailable)));
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
