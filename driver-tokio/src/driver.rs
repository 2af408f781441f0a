//! The driver task: the one owner of the [`Node`]. It feeds the node what the IO tasks and
//! the application report, carries out every output right after each input, and sleeps until
//! the node's next timeout. Every protocol decision is the node's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use peer_relay_core::{
    CloseReason, ConnId, ConnectFailure, Event as CoreEvent, Input, Node, Output, PeerId, RawValue,
    Time,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::connection::{self, ConnEvent, ConnHandle, Inbound, Queued};
use crate::event::{Delivery, Event, Subscriber};
use crate::session;
use crate::{DriverStats, Error, Stats};

/// Inputs (frames, reports) taken from the inbox per wake-up at most.
const INBOX_BATCH: usize = 256;
/// Commands taken per wake-up at most.
const COMMAND_BATCH: usize = 256;
/// Bytes of frames read from sockets and not yet taken by the node, over all connections (plus
/// two frames of `max_frame_bytes`, so that any one batch fits).
const READ_BUDGET: usize = 16 << 20;
/// How long `destroy` waits for connections to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a [`PeerRelay`](crate::PeerRelay) handle asks the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        to: PeerId,
        data: Box<RawValue>,
    },
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Destroy,
}

/// Maps tokio's clock to the core's [`Time`]: microseconds since the driver started.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> Time {
        Time::from_duration(self.start.elapsed())
    }

    fn instant(&self, time: Time) -> Instant {
        // `Time::MAX` and its neighbours overflow `Instant`: a year away is never reached.
        self.start
            .checked_add(time.since_epoch())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }
}

/// A connection as the driver tracks it.
#[derive(Debug)]
enum Conn {
    /// A dial in progress.
    Dialing(AbortHandle),
    /// An open WebSocket with its task.
    Open(ConnHandle),
    /// A WebRTC session with its task, setting up (`open` false) or open.
    WebRtc {
        handle: ConnHandle,
        peer: PeerId,
        open: bool,
    },
}

impl Conn {
    /// The handle of a connection that takes frames.
    fn handle(&mut self) -> Option<&mut ConnHandle> {
        match self {
            Conn::Open(handle) | Conn::WebRtc { handle, .. } => Some(handle),
            Conn::Dialing(_) => None,
        }
    }
}

/// Everything [`PeerRelay::new`](crate::PeerRelay::new) hands to the driver.
pub(crate) struct Setup {
    pub node: Node,
    pub listener: Option<TcpListener>,
    pub commands: mpsc::Receiver<Command>,
    pub subscriptions: mpsc::UnboundedReceiver<Subscriber>,
    pub first_subscriber: Subscriber,
    pub ws_config: WebSocketConfig,
    pub connect_timeout: Duration,
    pub send_queue_bytes: usize,
    pub bootstrap: Vec<String>,
    /// The WebRTC stack's settings (used only if the node's config has `webrtc`).
    pub webrtc: Arc<session::Settings>,
}

pub(crate) struct Driver {
    node: Node,
    clock: Clock,
    commands: mpsc::Receiver<Command>,
    subscriptions: mpsc::UnboundedReceiver<Subscriber>,
    inbox: mpsc::Receiver<ConnEvent>,
    inbox_tx: mpsc::Sender<ConnEvent>,
    /// Bounds the bytes of frames between the sockets and the node.
    read_budget: Arc<Semaphore>,
    conns: HashMap<ConnId, Conn>,
    /// Connections with frames queued since the last flush.
    dirty: Vec<ConnId>,
    /// The listener and the inbound upgrades: aborted first on shutdown.
    accepting: JoinSet<()>,
    /// Dials, connections and refusals: given a grace period on shutdown to finish their
    /// close handshakes. Both sets are awaited, so `destroy` returns only once every socket
    /// is closed.
    tasks: JoinSet<()>,
    /// Inbound upgrades in progress, bounded by `max_connections`.
    upgrading: usize,
    subscribers: Vec<Subscriber>,
    stats: DriverStats,
    ws_config: WebSocketConfig,
    connect_timeout: Duration,
    send_queue_bytes: usize,
    webrtc: Arc<session::Settings>,
}

impl Driver {
    /// Starts the driver task; it runs until `Destroy` or until every handle is dropped.
    pub(crate) fn spawn(setup: Setup) -> tokio::task::JoinHandle<()> {
        let (inbox_tx, inbox) = mpsc::channel(1024);
        let mut accepting = JoinSet::new();
        if let Some(listener) = setup.listener {
            accepting.spawn(connection::listen(listener, inbox_tx.clone()));
        }
        let mut driver = Driver {
            node: setup.node,
            clock: Clock {
                start: Instant::now(),
            },
            commands: setup.commands,
            subscriptions: setup.subscriptions,
            inbox,
            inbox_tx,
            read_budget: Arc::new(Semaphore::new(
                READ_BUDGET
                    .saturating_add(
                        setup
                            .ws_config
                            .max_message_size
                            .unwrap_or(0)
                            .saturating_mul(2),
                    )
                    .min(Semaphore::MAX_PERMITS),
            )),
            conns: HashMap::new(),
            dirty: Vec::new(),
            accepting,
            tasks: JoinSet::new(),
            upgrading: 0,
            subscribers: vec![setup.first_subscriber],
            stats: DriverStats::default(),
            ws_config: setup.ws_config,
            connect_timeout: setup.connect_timeout,
            send_queue_bytes: setup.send_queue_bytes,
            webrtc: setup.webrtc,
        };
        let now = driver.clock.now();
        for url in &setup.bootstrap {
            // The urls were checked by `PeerRelay::new`; a refusal here is a bound.
            if let Err(err) = driver.node.bootstrap(now, url) {
                tracing::warn!(%url, %err, "bootstrap url refused");
            }
        }
        driver.carry_out();
        driver.flush();
        tokio::spawn(driver.run())
    }

    async fn run(mut self) {
        let mut inputs = Vec::with_capacity(INBOX_BATCH);
        let mut commands = Vec::with_capacity(COMMAND_BATCH);
        let sleep = tokio::time::sleep_until(self.clock.instant(Time::MAX));
        tokio::pin!(sleep);
        let mut armed = None;
        'running: loop {
            let deadline = self.node.poll_timeout();
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(self.clock.instant(at));
                }
                armed = deadline;
            }
            tokio::select! {
                _ = self.inbox.recv_many(&mut inputs, INBOX_BATCH) => {
                    // One clock read per batch: these inputs arrived together.
                    let now = self.clock.now();
                    for event in inputs.drain(..) {
                        self.on_conn_event(now, event);
                        self.carry_out();
                    }
                    self.flush();
                }
                received = self.commands.recv_many(&mut commands, COMMAND_BATCH) => {
                    if received == 0 {
                        tracing::debug!("every handle dropped: shutting down");
                        break 'running;
                    }
                    let now = self.clock.now();
                    for command in commands.drain(..) {
                        if let Command::Destroy = command {
                            break 'running;
                        }
                        self.on_command(now, command);
                        self.carry_out();
                    }
                    self.flush();
                }
                Some(subscriber) = self.subscriptions.recv() => self.subscribers.push(subscriber),
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = self.clock.now();
                    self.node.handle_input(now, Input::Timeout);
                    self.carry_out();
                    self.flush();
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    report_panic(joined);
                }
                Some(joined) = self.accepting.join_next(), if !self.accepting.is_empty() => {
                    report_panic(joined);
                }
            }
        }
        self.shut_down().await;
    }

    /// Closes everything and waits (bounded) for every task to end.
    async fn shut_down(mut self) {
        // No new connections: the port is released once the listener task is gone.
        self.accepting.abort_all();
        while self.accepting.join_next().await.is_some() {}
        let now = self.clock.now();
        self.node.shutdown(now);
        self.carry_out();
        self.flush();
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => {
                    if joined.is_none() {
                        break;
                    }
                }
                // Tasks may wait on a full inbox: keep emptying it. Sockets in it (accepted,
                // upgraded, dialled) are closed by dropping them.
                Some(event) = self.inbox.recv() => drop(event),
                () = &mut grace => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Subscribers see their stream end after the last events; the command receiver goes
        // last, which is what `destroy` waits for.
        self.subscribers.clear();
        tracing::debug!(id = %self.node.id(), "destroyed");
    }

    fn on_command(&mut self, now: Time, command: Command) {
        match command {
            Command::Send { to, data } => {
                if let Err(err) = self.node.send_raw(now, to, &data) {
                    self.stats.sends_refused += 1;
                    tracing::debug!(%to, %err, "send refused by the node");
                }
            }
            Command::Connect { peer, reply } => {
                let _ = reply.send(self.node.connect(now, peer).map_err(Error::from));
            }
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.node.disconnect(now, peer).map_err(Error::from));
            }
            Command::Stats { reply } => {
                let mut driver = self.stats;
                driver.connections = self.conns.len();
                driver.io_tasks = self.tasks.len();
                let counters = &self.webrtc.counters;
                driver.webrtc_signals_ignored = counters
                    .signals_ignored
                    .load(std::sync::atomic::Ordering::Relaxed);
                driver.webrtc_without_mdns = counters
                    .mdns_unavailable
                    .load(std::sync::atomic::Ordering::Relaxed);
                driver.webrtc_mdns_links = counters
                    .mdns_links
                    .load(std::sync::atomic::Ordering::Relaxed);
                let _ = reply.send(Stats {
                    node: self.node.stats().clone(),
                    sizes: self.node.sizes(),
                    driver,
                });
            }
            // Handled by the loop.
            Command::Destroy => {}
        }
    }

    fn on_conn_event(&mut self, now: Time, event: ConnEvent) {
        match event {
            ConnEvent::Accepted(stream, peer) => {
                if self.upgrading >= self.node.config().max_connections {
                    self.stats.inbound_refused += 1;
                    tracing::debug!(%peer, "too many upgrades in progress: refused");
                    return;
                }
                self.upgrading += 1;
                let timeout = self.node.config().id_handshake_timeout;
                self.accepting.spawn(connection::upgrade(
                    stream,
                    self.ws_config,
                    timeout,
                    self.inbox_tx.clone(),
                ));
            }
            ConnEvent::UpgradeFailed => self.upgrading -= 1,
            ConnEvent::Upgraded(ws) => {
                self.upgrading -= 1;
                match self.node.accept(now) {
                    Ok(conn) => self.start_connection(conn, *ws),
                    Err(err) => {
                        self.stats.inbound_refused += 1;
                        tracing::debug!(%err, "inbound connection refused by the node");
                        self.tasks.spawn(connection::refuse(*ws));
                    }
                }
            }
            ConnEvent::Dialed { conn, result } => {
                // A dial the node gave up on meanwhile is no longer in the map.
                if !matches!(self.conns.get(&conn), Some(Conn::Dialing(_))) {
                    return;
                }
                match result {
                    Ok(ws) => {
                        self.start_connection(conn, *ws);
                        self.node.handle_input(now, Input::Opened { conn });
                    }
                    Err(_) => {
                        self.stats.dials_failed += 1;
                        self.conns.remove(&conn);
                        self.node.handle_input(now, Input::Closed { conn });
                    }
                }
            }
            ConnEvent::Frames {
                conn,
                frames,
                bytes,
            } => {
                for frame in &frames {
                    let input = match frame {
                        Inbound::Text(text) => Input::Frame {
                            conn,
                            frame: text.as_bytes(),
                        },
                        Inbound::Binary => Input::BinaryFrame { conn },
                    };
                    self.node.handle_input(now, input);
                    self.carry_out();
                }
                drop(frames);
                self.read_budget.add_permits(bytes);
            }
            ConnEvent::Closed {
                conn,
                oversize,
                lost,
            } => {
                if oversize {
                    self.stats.oversize_closed += 1;
                }
                // Closed by the node already: it forgot the connection then.
                match self.conns.remove(&conn) {
                    None => return,
                    Some(Conn::WebRtc {
                        peer, open: false, ..
                    }) => self.webrtc_failed(peer, ConnectFailure::WebRtcFailed),
                    Some(_) => {}
                }
                let input = if lost {
                    Input::Failed { conn }
                } else {
                    Input::Closed { conn }
                };
                self.node.handle_input(now, input);
            }
            ConnEvent::LocalSignal { conn, signal } => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_input(
                        now,
                        Input::LocalSignal {
                            conn,
                            signal: &signal,
                        },
                    );
                }
            }
            ConnEvent::Alive { conn } => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_input(now, Input::Alive { conn });
                }
            }
            ConnEvent::WebRtcOpened { conn } => {
                if let Some(Conn::WebRtc { open, .. }) = self.conns.get_mut(&conn) {
                    *open = true;
                    self.node.handle_input(now, Input::Opened { conn });
                }
            }
        }
    }

    fn start_connection<S>(&mut self, conn: ConnId, ws: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (handle, task) = connection::open(
            conn,
            ws,
            self.send_queue_bytes,
            self.inbox_tx.clone(),
            Arc::clone(&self.read_budget),
        );
        self.tasks.spawn(task);
        self.conns.insert(conn, Conn::Open(handle));
    }

    /// Carries out every output the node has, in order.
    fn carry_out(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit { conn, frame } => {
                    if let Some(handle) = self.conns.get_mut(&conn).and_then(Conn::handle) {
                        match handle.transmit(frame) {
                            Queued::First => self.dirty.push(conn),
                            Queued::More => {}
                            Queued::Dropped => {
                                self.stats.send_queue_drops += 1;
                                tracing::debug!(%conn, "send queue full: frame dropped");
                            }
                        }
                    }
                }
                Output::DialWebSocket { conn, url } => {
                    let abort = self.tasks.spawn(connection::dial(
                        conn,
                        url,
                        self.ws_config,
                        self.connect_timeout,
                        self.inbox_tx.clone(),
                    ));
                    self.conns.insert(conn, Conn::Dialing(abort));
                }
                Output::Probe { conn } => {
                    if let Some(handle) = self.conns.get_mut(&conn).and_then(Conn::handle) {
                        handle.probe();
                    }
                }
                Output::Close { conn, reason } => match self.conns.remove(&conn) {
                    Some(Conn::Dialing(abort)) => abort.abort(),
                    Some(Conn::Open(handle)) => handle.close(reason),
                    Some(Conn::WebRtc { handle, peer, open }) => {
                        if !open && reason == CloseReason::WebRtcTimeout {
                            self.webrtc_failed(peer, ConnectFailure::Timeout);
                        }
                        handle.close(reason);
                    }
                    None => {}
                },
                Output::StartWebRtc {
                    conn,
                    peer,
                    initiator,
                } => {
                    tracing::debug!(%conn, %peer, initiator, "WebRTC session starting");
                    let (handle, task) = session::start(
                        conn,
                        initiator,
                        Arc::clone(&self.webrtc),
                        self.send_queue_bytes,
                        self.inbox_tx.clone(),
                        Arc::clone(&self.read_budget),
                    );
                    self.tasks.spawn(task);
                    self.conns.insert(
                        conn,
                        Conn::WebRtc {
                            handle,
                            peer,
                            open: false,
                        },
                    );
                }
                Output::RemoteSignal { conn, signal } => {
                    if let Some(Conn::WebRtc { handle, .. }) = self.conns.get_mut(&conn) {
                        handle.signal(signal);
                    }
                }
                Output::Event(event) => self.publish(event),
            }
        }
    }

    fn publish(&mut self, event: CoreEvent) {
        let delivery = match event {
            CoreEvent::PeerConnected { peer, transport } => {
                tracing::info!(%peer, %transport, "peer linked");
                Delivery::Event(Event::Peer(peer, transport))
            }
            CoreEvent::PeerDisconnected { peer } => {
                tracing::info!(%peer, "peer unlinked");
                Delivery::Event(Event::PeerRemoved(peer))
            }
            CoreEvent::Message {
                from,
                data,
                path_len,
            } => Delivery::Message {
                from,
                data,
                path_len,
            },
            CoreEvent::ConnectFailed { peer, reason, .. } => {
                tracing::debug!(%peer, ?reason, "connect failed");
                Delivery::Event(Event::ConnectFailed { peer, reason })
            }
            CoreEvent::BootstrapFailed {
                url,
                attempt,
                retry_in,
            } => {
                tracing::warn!(%url, attempt, ?retry_in, "bootstrap url unreachable");
                Delivery::Event(Event::BootstrapFailed {
                    url,
                    attempt,
                    retry_in,
                })
            }
        };
        self.deliver(delivery);
    }

    /// A WebRTC session that never opened: reported, whatever the node does next (dial the
    /// peer's url, or report the connect failed).
    fn webrtc_failed(&mut self, peer: PeerId, reason: ConnectFailure) {
        self.stats.webrtc_failed += 1;
        tracing::debug!(%peer, ?reason, "WebRTC session failed");
        self.deliver(Delivery::Event(Event::WebRtcFailed { peer, reason }));
    }

    /// Hands a delivery to every subscriber (a copy each but the last).
    fn deliver(&mut self, delivery: Delivery) {
        let last = self.subscribers.len().saturating_sub(1);
        let mut delivery = Some(delivery);
        for (index, subscriber) in self.subscribers.iter_mut().enumerate() {
            let item = if index == last {
                delivery.take()
            } else {
                delivery.as_ref().map(clone_delivery)
            };
            let Some(item) = item else { break };
            if !subscriber.deliver(item) {
                self.stats.events_dropped += 1;
            }
        }
    }

    /// Sends what the last batch of inputs produced: frames to their connections, events to
    /// their streams. One channel send (and at most one wake-up) per receiver per batch.
    fn flush(&mut self) {
        for conn in self.dirty.drain(..) {
            if let Some(handle) = self.conns.get_mut(&conn).and_then(Conn::handle) {
                handle.flush();
            }
        }
        self.subscribers.retain_mut(Subscriber::flush);
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined {
        if err.is_panic() {
            tracing::error!(%err, "an IO task panicked");
        }
    }
}

fn clone_delivery(delivery: &Delivery) -> Delivery {
    match delivery {
        Delivery::Event(event) => Delivery::Event(event.clone()),
        Delivery::Message {
            from,
            data,
            path_len,
        } => Delivery::Message {
            from: *from,
            data: data.clone(),
            path_len: *path_len,
        },
    }
}
