//! [`Socket`]: the JS original's `PeerRelay.Socket`, a datagram socket shaped like Node's
//! `dgram.Socket` (and tokio's `UdpSocket`) whose addresses are peer ids.

mod codec;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use peer_relay_core::PeerId;
use peer_relay_core::id::HexId;
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};

pub use codec::{Decoded, FAMILY, Malformed, Payload, decode_payload, encode_payload};

use crate::event::Delivery;
use crate::{Error, Event, Events, Options, PeerRelay};

/// Room in each [`SocketEvents`] stream; a reader further behind gets
/// [`SocketEvent::Lagged`] and continues with the newest events.
pub const SOCKET_EVENT_CAPACITY: usize = 256;

/// Options for [`Socket::new`]: the relay's [`Options`] plus the receive queue's bounds.
/// `Options` converts into it with the default bounds.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// The underlying relay's options, exactly as for [`PeerRelay::new`].
    pub relay: Options,
    /// Most datagrams that may wait unread; one more is dropped and counted in
    /// [`SocketStats::queue_dropped`]. At least 1.
    pub recv_queue_datagrams: usize,
    /// Most bytes of datagrams that may wait unread (the same drop). At least
    /// `relay.config.max_frame_bytes / 2`, the largest datagram one frame can carry, so that
    /// any datagram fits an empty queue.
    pub recv_queue_bytes: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Options::default().into()
    }
}

impl From<Options> for SocketOptions {
    fn from(relay: Options) -> Self {
        SocketOptions {
            relay,
            recv_queue_datagrams: 1024,
            recv_queue_bytes: 8 << 20,
        }
    }
}

/// Why a [`Socket`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// `offset..offset + length` is not inside the buffer given to [`Socket::send`].
    #[error("offset {offset} + length {length} is outside the buffer of {buffer_len} bytes")]
    OutOfRange {
        /// The offset given.
        offset: usize,
        /// The length given.
        length: usize,
        /// The buffer's length.
        buffer_len: usize,
    },
    /// [`Socket::bind`] was called a second time (the original throws "Socket is already
    /// bound").
    #[error("the socket is already bound")]
    AlreadyBound,
    /// The address is not a peer id of 40 hex characters. The original's IP-style
    /// addresses (`"localhost"`, `"127.0.0.1"`, which reach a socket in the same JS process
    /// by port) are refused too.
    #[error("{0:?} is not a peer id (40 hex characters)")]
    InvalidAddress(String),
    /// The datagram's payload would not fit one frame of `max_frame_bytes`.
    #[error("a datagram of {len} bytes does not fit one frame")]
    TooLarge {
        /// The datagram's length.
        len: usize,
    },
    /// The socket was closed (by [`Socket::close`] or because its relay was destroyed).
    #[error("the socket is closed")]
    Closed,
    /// The socket's own options are unusable (the message says why).
    #[error("invalid socket options: {0}")]
    InvalidOptions(String),
    /// The relay refused (starting it, or a send to our own id, ...).
    #[error(transparent)]
    Relay(Error),
}

impl From<Error> for SocketError {
    fn from(err: Error) -> Self {
        match err {
            Error::Destroyed => SocketError::Closed,
            other => SocketError::Relay(other),
        }
    }
}

/// A socket address in the relay network: Node's `{ address, port, family }`. Received
/// datagrams carry the sender's ([`Socket::recv_from`]); [`Socket::address`] gives ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RemoteInfo {
    /// The peer's id as 40 lowercase hex characters.
    pub address: String,
    /// The peer's socket port (the port it bound, or its random one).
    pub port: u16,
    /// Always [`FAMILY`], `"peer-relay"`.
    pub family: &'static str,
    #[serde(skip)]
    id: PeerId,
}

impl RemoteInfo {
    fn new(id: PeerId, port: u16) -> RemoteInfo {
        RemoteInfo {
            address: id.to_hex().as_str().to_owned(),
            port,
            family: FAMILY,
            id,
        }
    }

    /// The peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }
}

/// Something that names a datagram's destination: `(PeerId, port)`, `(&str, port)` with a
/// hex id, or a [`RemoteInfo`] (to answer a sender).
pub trait ToPeerAddr {
    /// The peer id and port.
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError>;
}

impl ToPeerAddr for (PeerId, u16) {
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError> {
        Ok(*self)
    }
}

impl ToPeerAddr for (&str, u16) {
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError> {
        let id =
            PeerId::from_hex(self.0).map_err(|_| SocketError::InvalidAddress(self.0.to_owned()))?;
        Ok((id, self.1))
    }
}

impl ToPeerAddr for (String, u16) {
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError> {
        (self.0.as_str(), self.1).to_peer_addr()
    }
}

impl ToPeerAddr for RemoteInfo {
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError> {
        Ok((self.id, self.port))
    }
}

impl<T: ToPeerAddr + ?Sized> ToPeerAddr for &T {
    fn to_peer_addr(&self) -> Result<(PeerId, u16), SocketError> {
        (**self).to_peer_addr()
    }
}

/// A received datagram, whole (see [`Socket::recv_datagram`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Who sent it.
    pub from: RemoteInfo,
    /// Peers it passed through, the sender included: 1 came over a direct link.
    pub path_len: usize,
}

/// The original's socket events, plus what it does not report. Read with
/// [`Socket::events`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SocketEvent {
    /// The socket is listening: it was bound and its peer has a link (the original's
    /// `listening`).
    Listening,
    /// A `user` message that is not a socket payload was dropped (also counted in
    /// [`SocketStats::malformed`]). The original would throw on most of these.
    Malformed {
        /// The message's sender.
        from: PeerId,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// A datagram was dropped because the receive queue was full (also counted in
    /// [`SocketStats::queue_dropped`]).
    Overflow {
        /// The sender.
        from: PeerId,
        /// The datagram's length.
        len: usize,
    },
    /// The relay reported a failure ([`Event::BootstrapFailed`], [`Event::ConnectFailed`]
    /// or [`Event::WebRtcFailed`]): the original's `error`, which it never actually emits.
    Error(Event),
    /// This stream fell more than [`SOCKET_EVENT_CAPACITY`] events behind and missed
    /// `missed` of them.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The socket closed (the original's `close`); the stream ends after it.
    Close,
}

/// A stream of [`SocketEvent`]s from the moment [`Socket::events`] was called.
#[derive(Debug)]
pub struct SocketEvents {
    rx: broadcast::Receiver<SocketEvent>,
    done: bool,
}

impl SocketEvents {
    /// The next event; `None` after [`SocketEvent::Close`].
    pub async fn next(&mut self) -> Option<SocketEvent> {
        if self.done {
            return None;
        }
        let event = match self.rx.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => SocketEvent::Lagged { missed },
            // The sender lives as long as the socket's state, which outlives the close.
            Err(broadcast::error::RecvError::Closed) => SocketEvent::Close,
        };
        self.done = event == SocketEvent::Close;
        Some(event)
    }
}

/// The socket's counters: see [`Socket::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SocketStats {
    /// Datagrams handed to the relay.
    pub sent: u64,
    /// `user` messages that arrived (socket payloads or not).
    pub received: u64,
    /// Datagrams queued for `recv_from` / `recv_datagram`.
    pub queued: u64,
    /// Messages dropped because they were not socket payloads.
    pub malformed: u64,
    /// Datagrams dropped because the receive queue was full.
    pub queue_dropped: u64,
    /// Datagrams cut short by [`Socket::recv_from`] because its buffer was too small.
    pub truncated: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    queued: AtomicU64,
    malformed: AtomicU64,
    queue_dropped: AtomicU64,
    truncated: AtomicU64,
}

/// Where the socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unbound,
    /// `bind` was called; waiting for the first link.
    Binding,
    Listening,
    Closed,
}

#[derive(Debug)]
struct Queue {
    datagrams: VecDeque<Datagram>,
    bytes: usize,
}

/// What the socket and its receiving task share. Holds no `PeerRelay` handle, so that
/// dropping every `Socket` lets the relay stop.
#[derive(Debug)]
struct State {
    phase: watch::Sender<Phase>,
    /// The peer has had a link (the original's `peers.count() > 0`, or a `peer` event).
    linked: AtomicBool,
    port: AtomicU16,
    queue: Mutex<Queue>,
    /// Wakes `recv` callers: one per queued datagram, all on close.
    arrived: Notify,
    events: broadcast::Sender<SocketEvent>,
    counters: Counters,
    max_datagrams: usize,
    max_bytes: usize,
}

/// A datagram socket over the relay network, wire-compatible with the JS original's
/// `PeerRelay.Socket`: a JS socket and a Rust socket exchange datagrams both ways.
///
/// Addresses are peer ids (40 hex characters) instead of IP addresses. As in the original,
/// the port is a label: every datagram carries the *sender's* port, which the receiver
/// reports in [`RemoteInfo::port`], and a socket receives every datagram addressed to its
/// peer whatever destination port the sender named (the original does not even send it).
/// Like UDP, delivery is not guaranteed.
///
/// ```no_run
/// # async fn example() -> Result<(), peer_relay::SocketError> {
/// use peer_relay::{Options, Socket};
///
/// let socket = Socket::new(Options {
///     bootstrap: vec!["ws://127.0.0.1:8000".into()],
///     ..Options::default()
/// })
/// .await?;
/// socket.bind(7).await?; // returns once the peer has a link
/// let mut buf = [0u8; 65536];
/// loop {
///     let (len, from) = socket.recv_from(&mut buf).await?;
///     socket.send_to(&buf[..len], &from).await?; // echo
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Socket {
    relay: PeerRelay,
    hex: HexId,
    state: Arc<State>,
}

impl Socket {
    /// Starts the socket's relay peer (like [`PeerRelay::new`]) with a random port below
    /// 9999, as the original does.
    pub async fn new(options: impl Into<SocketOptions>) -> Result<Socket, SocketError> {
        let options = options.into();
        if options.recv_queue_datagrams == 0 {
            return Err(SocketError::InvalidOptions(
                "`recv_queue_datagrams` must be at least 1".into(),
            ));
        }
        if options.recv_queue_bytes < options.relay.config.max_frame_bytes / 2 {
            return Err(SocketError::InvalidOptions(
                "`recv_queue_bytes` must hold the largest datagram, `max_frame_bytes / 2`".into(),
            ));
        }
        let relay = PeerRelay::new(options.relay).await?;
        // Taken before anything else can: this stream has every event since the start, so
        // the first link is never missed.
        let events = relay.events();
        let (phase, _) = watch::channel(Phase::Unbound);
        let state = Arc::new(State {
            phase,
            linked: AtomicBool::new(false),
            port: AtomicU16::new(random_port()?),
            queue: Mutex::new(Queue {
                datagrams: VecDeque::new(),
                bytes: 0,
            }),
            arrived: Notify::new(),
            events: broadcast::channel(SOCKET_EVENT_CAPACITY).0,
            counters: Counters::default(),
            max_datagrams: options.recv_queue_datagrams,
            max_bytes: options.recv_queue_bytes,
        });
        tokio::spawn(receive(Arc::clone(&state), events));
        Ok(Socket {
            hex: relay.id().to_hex(),
            relay,
            state,
        })
    }

    /// The underlying relay peer (the original's `socket.peer`). Its
    /// [`events`](PeerRelay::events) from now on are available to the caller; the socket
    /// reads its own stream.
    pub fn peer(&self) -> &PeerRelay {
        &self.relay
    }

    /// Sets the port (`0` picks a random one below 9999, as the original's `port ||
    /// random`) and returns once the socket is listening: at once if the peer already has a
    /// link, else at its first link. There is no real binding: nothing else can hold a port.
    ///
    /// Fails with [`SocketError::AlreadyBound`] on a second call and with
    /// [`SocketError::Closed`]. If the returned future is dropped early the socket still
    /// becomes listening at the first link ([`SocketEvent::Listening`]).
    pub async fn bind(&self, port: u16) -> Result<(), SocketError> {
        let port = if port == 0 { random_port()? } else { port };
        let mut outcome = Ok(());
        self.state.phase.send_if_modified(|phase| match *phase {
            Phase::Unbound => {
                self.state.port.store(port, Ordering::Relaxed);
                // `linked` is set before the receiving task takes this lock, so one of the
                // two always sees the other's step.
                if self.state.linked.load(Ordering::Acquire) {
                    *phase = Phase::Listening;
                    let _ = self.state.events.send(SocketEvent::Listening);
                } else {
                    *phase = Phase::Binding;
                }
                true
            }
            Phase::Closed => {
                outcome = Err(SocketError::Closed);
                false
            }
            Phase::Binding | Phase::Listening => {
                outcome = Err(SocketError::AlreadyBound);
                false
            }
        });
        outcome?;
        let mut phase = self.state.phase.subscribe();
        let reached = phase
            .wait_for(|p| matches!(p, Phase::Listening | Phase::Closed))
            .await
            .map(|p| *p);
        match reached {
            Ok(Phase::Listening) => Ok(()),
            _ => Err(SocketError::Closed),
        }
    }

    /// Whether [`bind`](Socket::bind) was called and the peer has a link.
    pub fn is_listening(&self) -> bool {
        *self.state.phase.borrow() == Phase::Listening
    }

    /// Our address: `{ address: <our id hex>, port, family: "peer-relay" }`.
    /// [`SocketError::Closed`] after close (the original throws "Not running").
    pub fn address(&self) -> Result<RemoteInfo, SocketError> {
        if *self.state.phase.borrow() == Phase::Closed {
            return Err(SocketError::Closed);
        }
        Ok(RemoteInfo::new(
            self.relay.id(),
            self.state.port.load(Ordering::Relaxed),
        ))
    }

    /// Sends `buf[offset..offset + length]` to the peer `address` (40 hex characters), like
    /// the original's `send(buffer, offset, length, port, address)`, and returns `length`.
    ///
    /// Unlike the original, which sends `buffer.slice(offset, length)` (bytes `offset` to
    /// `length`, so any `offset > 0` loses bytes), this sends exactly `length` bytes from
    /// `offset`, as Node's `dgram` does. A range outside `buf` is
    /// [`SocketError::OutOfRange`]. `port` is accepted for the original's signature only:
    /// the wire carries our own port, and the receiver takes every datagram.
    pub async fn send(
        &self,
        buf: &[u8],
        offset: usize,
        length: usize,
        port: u16,
        address: &str,
    ) -> Result<usize, SocketError> {
        let data = offset
            .checked_add(length)
            .and_then(|end| buf.get(offset..end))
            .ok_or(SocketError::OutOfRange {
                offset,
                length,
                buffer_len: buf.len(),
            })?;
        self.send_to(data, (address, port)).await
    }

    /// Sends `buf` as one datagram to `target` (`(PeerId, port)`, `(&str, port)` or a
    /// sender's [`RemoteInfo`]) and returns its length. `Ok` means the relay took it: like
    /// UDP, it may still be lost. Sent before the peer has a link, it waits for the first.
    ///
    /// Fails with [`SocketError::InvalidAddress`], [`SocketError::TooLarge`] (the JSON
    /// payload, up to 4 bytes per byte, exceeds `max_frame_bytes`),
    /// [`SocketError::Closed`], or [`SocketError::Relay`] (our own id, say).
    pub async fn send_to(&self, buf: &[u8], target: impl ToPeerAddr) -> Result<usize, SocketError> {
        let (to, _port) = target.to_peer_addr()?;
        if *self.state.phase.borrow() == Phase::Closed {
            return Err(SocketError::Closed);
        }
        let payload = Payload {
            data: buf,
            address: self.hex.as_str(),
            port: self.state.port.load(Ordering::Relaxed),
        };
        match self.relay.send(to, &payload).await {
            Ok(()) => {
                self.state.counters.sent.fetch_add(1, Ordering::Relaxed);
                Ok(buf.len())
            }
            Err(Error::Node(peer_relay_core::Error::TooLarge)) => {
                Err(SocketError::TooLarge { len: buf.len() })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Receives one datagram into `buf`, like tokio's `UdpSocket::recv_from`: returns the
    /// number of bytes written and the sender. A datagram longer than `buf` is truncated
    /// as UDP does: the first `buf.len()` bytes are written, the rest is discarded and
    /// counted in [`SocketStats::truncated`]. Use [`recv_datagram`](Socket::recv_datagram)
    /// to get datagrams whole.
    ///
    /// Datagrams queued before the socket closed are still returned; then
    /// [`SocketError::Closed`]. Cancel-safe: a datagram is taken only when returned.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, RemoteInfo), SocketError> {
        let datagram = self.recv_datagram().await?;
        let len = datagram.data.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram.data[..len]);
        if len < datagram.data.len() {
            self.state
                .counters
                .truncated
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok((len, datagram.from))
    }

    /// Receives one whole datagram. Otherwise as [`recv_from`](Socket::recv_from).
    pub async fn recv_datagram(&self) -> Result<Datagram, SocketError> {
        loop {
            // Registered before looking, so a datagram queued in between still wakes us.
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(datagram) = self.state.pop() {
                return Ok(datagram);
            }
            if *self.state.phase.borrow() == Phase::Closed {
                return Err(SocketError::Closed);
            }
            arrived.await;
        }
    }

    /// The socket's events from now on: [`SocketEvent::Listening`], errors, drops and
    /// [`SocketEvent::Close`].
    pub fn events(&self) -> SocketEvents {
        SocketEvents {
            rx: self.state.events.subscribe(),
            done: *self.state.phase.borrow() == Phase::Closed,
        }
    }

    /// The socket's counters (the relay's are in [`PeerRelay::stats`]).
    pub fn stats(&self) -> SocketStats {
        let c = &self.state.counters;
        SocketStats {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            queue_dropped: c.queue_dropped.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
        }
    }

    /// Destroys the peer and returns once it is gone and [`SocketEvent::Close`] was sent.
    /// [`SocketError::Closed`] if it was already closed (the original throws "Not
    /// running").
    pub async fn close(&self) -> Result<(), SocketError> {
        if *self.state.phase.borrow() == Phase::Closed {
            return Err(SocketError::Closed);
        }
        self.relay.destroy().await;
        let mut phase = self.state.phase.subscribe();
        // The receiving task marks the close when the relay's event stream ends.
        let _ = phase.wait_for(|p| *p == Phase::Closed).await;
        Ok(())
    }
}

impl State {
    fn pop(&self) -> Option<Datagram> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let datagram = queue.datagrams.pop_front()?;
        queue.bytes -= datagram.data.len();
        Some(datagram)
    }

    fn on_link(&self) {
        self.linked.store(true, Ordering::Release);
        self.phase.send_if_modified(|phase| {
            if *phase != Phase::Binding {
                return false;
            }
            *phase = Phase::Listening;
            let _ = self.events.send(SocketEvent::Listening);
            true
        });
    }

    fn on_message(&self, from: PeerId, json: &str, path_len: usize) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let decoded = decode_payload(json).and_then(|decoded| {
            // The original trusts `address`; a payload naming another peer than its sender
            // is forged or broken.
            if decoded.address.eq_ignore_ascii_case(from.to_hex().as_str()) {
                Ok(decoded)
            } else {
                Err(Malformed::AddressMismatch)
            }
        });
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(reason) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, %reason, "socket payload dropped");
                let _ = self.events.send(SocketEvent::Malformed { from, reason });
                return;
            }
        };
        let len = decoded.data.len();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.datagrams.len() >= self.max_datagrams || queue.bytes + len > self.max_bytes {
                drop(queue);
                self.counters.queue_dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.send(SocketEvent::Overflow { from, len });
                return;
            }
            queue.bytes += len;
            queue.datagrams.push_back(Datagram {
                data: decoded.data,
                from: RemoteInfo::new(from, decoded.port),
                path_len,
            });
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }

    fn on_close(&self) {
        self.phase.send_replace(Phase::Closed);
        let _ = self.events.send(SocketEvent::Close);
        self.arrived.notify_waiters();
    }
}

/// The socket's receiving task: decodes datagrams off the relay's task, tracks the first
/// link and ends with the relay's event stream.
async fn receive(state: Arc<State>, mut events: Events) {
    while let Some(delivery) = events.next_delivery().await {
        match delivery {
            Delivery::Message {
                from,
                data,
                path_len,
            } => state.on_message(from, data.get(), path_len),
            Delivery::Event(Event::Peer(..)) => state.on_link(),
            Delivery::Event(
                event @ (Event::BootstrapFailed { .. }
                | Event::ConnectFailed { .. }
                | Event::WebRtcFailed { .. }),
            ) => {
                let _ = state.events.send(SocketEvent::Error(event));
            }
            Delivery::Event(_) => {}
        }
    }
    state.on_close();
}

/// The original's `Math.floor(Math.random() * 9999)`.
fn random_port() -> Result<u16, SocketError> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| SocketError::Relay(Error::Entropy(e)))?;
    Ok((u32::from_le_bytes(bytes) % 9999) as u16)
}
