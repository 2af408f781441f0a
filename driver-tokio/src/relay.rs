//! [`PeerRelay`]: the application's handle on a running node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use peer_relay_core::wire::{self, DecodeLimits};
use peer_relay_core::{Node, PeerId, Time};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use webrtc::peer_connection::RTCIceServer;

use crate::driver::{Command, Driver, Setup};
use crate::event::{Events, Subscriber};
use crate::{Error, Options, Stats};
use crate::{connection, session};

/// Commands that may wait for the driver; past this, `send` waits (backpressure).
const COMMAND_QUEUE: usize = 1024;

/// A peer in the relay network: the JS original's `PeerRelay` as an async Rust handle.
///
/// Cheap to clone; every clone drives the same node and may be used from any task. The node
/// runs on its own tokio task until [`PeerRelay::destroy`] is called or every handle is
/// dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), peer_relay::Error> {
/// use peer_relay::{Event, Options, PeerRelay};
///
/// let relay = PeerRelay::new(Options {
///     port: Some(0),
///     bootstrap: vec!["ws://127.0.0.1:8000".into()],
///     ..Options::default()
/// })
/// .await?;
/// println!("I am {} at {:?}", relay.id(), relay.url());
/// let mut events = relay.events();
/// while let Some(event) = events.next().await {
///     match event {
///         Event::Peer(id, _) => relay.send(id, &serde_json::json!({"hello": "there"})).await?,
///         Event::Message { from, data, .. } => println!("{from}: {data}"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PeerRelay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: PeerId,
    url: Option<String>,
    commands: mpsc::Sender<Command>,
    subscribe: mpsc::UnboundedSender<Subscriber>,
    /// The stream that has buffered every event since the start, for the first `events()`.
    first_events: Mutex<Option<Events>>,
    event_queue_bytes: usize,
    /// The node's limits for one message's data, checked before it is queued.
    data_limits: DecodeLimits,
}

impl PeerRelay {
    /// Starts a node: binds the server (if `options.port` is set), dials the bootstrap urls
    /// and returns once the server is listening.
    pub async fn new(options: Options) -> Result<PeerRelay, Error> {
        options.validate()?;
        let mut config = options.config.clone();
        config.webrtc = options.webrtc;
        for url in &options.bootstrap {
            if !peer_relay_core::node::is_ws_url(url) {
                return Err(Error::InvalidOptions(format!(
                    "bootstrap url {url:?} is not a ws:// or wss:// url"
                )));
            }
        }
        let listener = match options.port {
            Some(port) => {
                let addr = SocketAddr::new(options.listen_addr, port);
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Listen { addr, source })?;
                Some(listener)
            }
            None => None,
        };
        let url = match &listener {
            Some(listener) => {
                let local = listener.local_addr().map_err(|source| Error::Listen {
                    addr: SocketAddr::new(options.listen_addr, options.port.unwrap_or(0)),
                    source,
                })?;
                Some(options.advertised_url(local))
            }
            None => None,
        };
        config.advertised_url.clone_from(&url);
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(Error::Entropy)?;
        let node = Node::new(config, seed, Time::ZERO)?;
        let id = node.id();
        let limits = node.config().decode_limits();
        // The envelope and the payload object wrap the data in two more levels.
        let data_limits = DecodeLimits {
            max_json_depth: limits.max_json_depth.saturating_sub(2),
            ..limits
        };
        let ws_config = connection::ws_config(node.config().max_frame_bytes);
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (subscribe, subscriptions) = mpsc::unbounded_channel();
        let (first_subscriber, first_events) = Subscriber::new(options.event_queue_bytes);
        tracing::info!(%id, url = url.as_deref().unwrap_or("-"), "node started");
        Driver::spawn(Setup {
            node,
            listener,
            commands,
            subscriptions,
            first_subscriber,
            ws_config,
            connect_timeout: options.connect_timeout,
            send_queue_bytes: options.send_queue_bytes,
            bootstrap: options.bootstrap,
            webrtc: Arc::new(session::Settings {
                ice_servers: options
                    .rtc
                    .ice_servers
                    .iter()
                    .map(|server| RTCIceServer {
                        urls: server.urls.clone(),
                        username: server.username.clone(),
                        credential: server.credential.clone(),
                    })
                    .collect(),
                bind: options.rtc.bind.clone(),
                mdns: options.rtc.mdns,
                max_remote_candidates: options.rtc.max_remote_candidates,
                send_buffer_bytes: options.send_queue_bytes,
                counters: session::Counters::default(),
            }),
        });
        Ok(PeerRelay {
            inner: Arc::new(Inner {
                id,
                url,
                commands: commands_tx,
                subscribe,
                first_events: Mutex::new(Some(first_events)),
                event_queue_bytes: options.event_queue_bytes,
                data_limits,
            }),
        })
    }

    /// Our id.
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The url other peers dial to reach us (`None` without a server).
    pub fn url(&self) -> Option<&str> {
        self.inner.url.as_deref()
    }

    /// A stream of events. The first call returns every event since the node started (so
    /// none is missed between `new` and subscribing); each later call returns a new stream
    /// of the events from then on. Every stream gets every event.
    pub fn events(&self) -> Events {
        let first = self
            .inner
            .first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(events) = first {
            return events;
        }
        let (subscriber, events) = Subscriber::new(self.inner.event_queue_bytes);
        // If the driver is gone the subscriber is dropped and the stream simply ends.
        let _ = self.inner.subscribe.send(subscriber);
        events
    }

    /// Sends `data` (anything serde can serialise) to the peer `to`, relayed through the
    /// network when it is not linked directly. Like UDP, delivery is not guaranteed: `Ok`
    /// means the node took the message. A message sent before the node has any link waits
    /// for the first one.
    ///
    /// Waits only when the node is behind on earlier commands. Fails with
    /// [`Error::Serialize`], with [`Error::Node`] for our own id or data larger than
    /// `max_frame_bytes` or nested deeper than `max_json_depth`, and with
    /// [`Error::Destroyed`]. What the node refuses later is counted in
    /// [`DriverStats::sends_refused`](crate::DriverStats): a full pre-link queue, or data
    /// just under `max_frame_bytes` that does not fit one frame with the envelope and a full
    /// path.
    pub async fn send<T: Serialize + ?Sized>(&self, to: PeerId, data: &T) -> Result<(), Error> {
        if to == self.inner.id {
            return Err(peer_relay_core::Error::OwnId.into());
        }
        // Serialised here, on the caller's task, not on the node's.
        let data = serde_json::value::to_raw_value(data)?;
        if wire::precheck(data.get().as_bytes(), &self.inner.data_limits).is_err() {
            return Err(peer_relay_core::Error::TooLarge.into());
        }
        self.command(Command::Send { to, data }).await
    }

    /// Forms a direct link to `peer` (through a relayed handshake). Returns once the attempt
    /// started; the link shows up as [`Event::Peer`](crate::Event::Peer), a failure as
    /// [`Event::ConnectFailed`](crate::Event::ConnectFailed). A no-op if a link or an attempt
    /// already exists.
    pub async fn connect(&self, peer: PeerId) -> Result<(), Error> {
        let (reply, verdict) = oneshot::channel();
        self.command(Command::Connect { peer, reply }).await?;
        verdict.await.map_err(|_| Error::Destroyed)?
    }

    /// Closes the direct link to `peer` ([`Error::Node`] with `NotLinked` if there is none).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Error> {
        let (reply, verdict) = oneshot::channel();
        self.command(Command::Disconnect { peer, reply }).await?;
        verdict.await.map_err(|_| Error::Destroyed)?
    }

    /// The node's counters and sizes, and the driver's.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let (reply, stats) = oneshot::channel();
        self.command(Command::Stats { reply }).await?;
        stats.await.map_err(|_| Error::Destroyed)
    }

    /// Closes every link and the server, and returns once every socket and task is gone:
    /// after it the port can be bound again. Commands sent before it are carried out first.
    /// Later calls (from any clone) return at once, or when the first one is done.
    pub async fn destroy(&self) {
        let _ = self.inner.commands.send(Command::Destroy).await;
        // The driver drops its receiver last, after everything else is freed.
        self.inner.commands.closed().await;
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Destroyed)
    }
}
