//! The IO tasks around the node: the listener, WebSocket handshakes and dials, and one task
//! per open connection. They make no protocol decision; they move frames and report what
//! happened to the driver through its inbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use peer_relay_core::{CloseReason, ConnId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// After sending our close frame, how long to wait for the peer's before dropping the
/// socket.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// After the node closed a connection, how long its task may take to flush and say goodbye
/// before the socket is dropped anyway: a peer that stopped reading (frozen, or gone without
/// a close) would otherwise hold a writer, and the socket, for as long as TCP keeps its
/// zero window open, which can be forever.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);
/// Batches of frames taken per flush at most; larger batches only delay the flush.
const WRITE_BATCH: usize = 16;
/// Frames read before handing them to the driver at most, if more are ready at once.
pub(crate) const READ_BATCH: usize = 64;
/// Bytes read before handing them to the driver, if more are ready at once.
pub(crate) const READ_BATCH_BYTES: usize = 64 * 1024;

/// An inbound WebSocket after its upgrade.
pub(crate) type InboundWs = WebSocketStream<TcpStream>;
/// An outbound WebSocket after its upgrade.
pub(crate) type OutboundWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the IO tasks tell the driver.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// The listener accepted a TCP connection; the driver decides whether to upgrade it.
    Accepted(TcpStream, SocketAddr),
    /// An inbound WebSocket completed its upgrade.
    Upgraded(Box<InboundWs>),
    /// An inbound upgrade failed or timed out.
    UpgradeFailed,
    /// A dial finished.
    Dialed {
        conn: ConnId,
        result: Result<Box<OutboundWs>, String>,
    },
    /// Frames arrived: those that were ready together, in order. `bytes` of the driver's
    /// read budget were taken for them; the driver returns them once the node had them.
    Frames {
        conn: ConnId,
        frames: Vec<Inbound>,
        bytes: usize,
    },
    /// The connection ended (closed by either side, or failed). `oversize`: it ended because
    /// the peer sent a message over the WebSocket limit (see [`ws_config`]). `lost`: the
    /// transport gave up on the path (a WebRTC session whose ICE failed).
    Closed {
        conn: ConnId,
        oversize: bool,
        lost: bool,
    },
    /// A WebRTC session produced a local signal (simple-peer's JSON form) for its peer.
    LocalSignal { conn: ConnId, signal: String },
    /// A WebRTC session's data channel opened.
    WebRtcOpened { conn: ConnId },
    /// The connection showed itself alive without a frame: a WebSocket ping or pong, or a
    /// WebRTC session asked to probe whose ICE connection holds.
    Alive { conn: ConnId },
}

/// A frame as the driver gets it.
#[derive(Debug)]
pub(crate) enum Inbound {
    Text(Utf8Bytes),
    /// The protocol is text only; the node counts these.
    Binary,
}

/// What the driver asks a connection task to do.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Frames to write, in order.
    Frames(Vec<Utf8Bytes>),
    Close(CloseReason),
    /// A remote WebRTC signal for a WebRTC session (never sent to a WebSocket).
    Signal(String),
    /// Check that the peer is there: a WebSocket ping, or a WebRTC session's ICE state.
    Probe,
}

/// The WebSocket limits for a node whose frames are at most `max_frame_bytes`. Slack covers
/// what tungstenite counts beyond the JSON (nothing today), so the core's own limit is the one
/// that bites and is counted.
pub(crate) fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    let limit = max_frame_bytes.saturating_add(4096);
    WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        // Reads are small JSON frames: a smaller eager buffer per connection suffices.
        .read_buffer_size(32 * 1024)
}

/// Accepts TCP connections and hands them to the driver, until the driver is gone.
pub(crate) async fn listen(listener: TcpListener, inbox: mpsc::Sender<ConnEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if inbox.send(ConnEvent::Accepted(stream, peer)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Upgrades an accepted TCP connection to a WebSocket.
pub(crate) async fn upgrade(
    stream: TcpStream,
    config: WebSocketConfig,
    timeout: Duration,
    inbox: mpsc::Sender<ConnEvent>,
) {
    // Frames are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let upgraded = tokio::time::timeout(
        timeout,
        tokio_tungstenite::accept_async_with_config(stream, Some(config)),
    )
    .await;
    let event = match upgraded {
        Ok(Ok(ws)) => ConnEvent::Upgraded(Box::new(ws)),
        Ok(Err(err)) => {
            tracing::debug!(%err, "inbound upgrade failed");
            ConnEvent::UpgradeFailed
        }
        Err(_) => {
            tracing::debug!("inbound upgrade timed out");
            ConnEvent::UpgradeFailed
        }
    };
    let _ = inbox.send(event).await;
}

/// Dials `url` for connection `conn`.
pub(crate) async fn dial(
    conn: ConnId,
    url: String,
    config: WebSocketConfig,
    timeout: Duration,
    inbox: mpsc::Sender<ConnEvent>,
) {
    let dialled = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    let result = match dialled {
        Ok(Ok((ws, _response))) => Ok(Box::new(ws)),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    };
    if let Err(err) = &result {
        tracing::debug!(%conn, %url, %err, "dial failed");
    }
    let _ = inbox.send(ConnEvent::Dialed { conn, result }).await;
}

/// Refuses an upgraded WebSocket the node would not take.
pub(crate) async fn refuse(mut ws: InboundWs) {
    let frame = CloseFrame {
        code: CloseCode::Again,
        reason: "connection limit reached".into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
}

/// The driver's handle on an open connection's task.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// Frames queued since the last flush, sent to the task together.
    pending: Vec<Utf8Bytes>,
    /// Bytes queued (pending or handed to the task) and not yet written to the socket.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Notified when the node closes the connection; the task ends within
    /// [`CLOSE_DEADLINE`] of it.
    closing: Arc<Notify>,
}

/// What became of a frame given to [`ConnHandle::transmit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued; the connection had nothing pending, so it needs a flush.
    First,
    /// Queued behind other pending frames.
    More,
    /// The queue is full: dropped.
    Dropped,
}

impl ConnHandle {
    /// A handle for a connection task that takes its orders from the returned receiver and
    /// subtracts what it wrote from the returned counter.
    pub(crate) fn new(
        max_queued_bytes: usize,
    ) -> (
        ConnHandle,
        mpsc::UnboundedReceiver<Outgoing>,
        Arc<AtomicUsize>,
    ) {
        let (outgoing, rx) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let handle = ConnHandle {
            outgoing,
            pending: Vec::new(),
            queued_bytes: Arc::clone(&queued_bytes),
            max_queued_bytes,
            closing: Arc::new(Notify::new()),
        };
        (handle, rx, queued_bytes)
    }

    /// Hands a remote signal to a WebRTC session, after the frames queued before it.
    pub(crate) fn signal(&mut self, signal: String) {
        self.flush();
        let _ = self.outgoing.send(Outgoing::Signal(signal));
    }

    /// Queues a frame for the next [`ConnHandle::flush`], or drops it when the queue is full.
    pub(crate) fn transmit(&mut self, frame: String) -> Queued {
        let len = frame.len();
        if self.queued_bytes.load(Ordering::Relaxed) + len > self.max_queued_bytes {
            return Queued::Dropped;
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.pending.push(frame.into());
        if self.pending.len() == 1 {
            Queued::First
        } else {
            Queued::More
        }
    }

    /// Hands the pending frames to the task.
    pub(crate) fn flush(&mut self) {
        if !self.pending.is_empty() {
            // If the task already ended, its `Closed` report is on its way: nothing to do.
            let _ = self
                .outgoing
                .send(Outgoing::Frames(std::mem::take(&mut self.pending)));
        }
    }

    /// Asks for a keepalive probe, after the frames queued before.
    pub(crate) fn probe(&mut self) {
        self.flush();
        let _ = self.outgoing.send(Outgoing::Probe);
    }

    /// Asks the task to close the connection, after the frames queued before.
    pub(crate) fn close(mut self, reason: CloseReason) {
        self.flush();
        let _ = self.outgoing.send(Outgoing::Close(reason));
        self.closing.notify_one();
    }
}

/// Starts the task for an open WebSocket; the returned future is the task to spawn.
/// `read_budget` bounds the bytes of frames read and not yet taken by the node, over all
/// connections.
pub(crate) fn open<S>(
    conn: ConnId,
    ws: WebSocketStream<S>,
    max_queued_bytes: usize,
    inbox: mpsc::Sender<ConnEvent>,
    read_budget: Arc<Semaphore>,
) -> (ConnHandle, impl Future<Output = ()> + Send + 'static)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (handle, rx, queued_bytes) = ConnHandle::new(max_queued_bytes);
    let closing = Arc::clone(&handle.closing);
    let task = run(conn, ws, rx, queued_bytes, inbox, read_budget, closing);
    (handle, task)
}

/// Hands a batch of frames read from `conn` to the driver. Memory between a socket and the
/// node is bounded in bytes: without budget (or room in the inbox) this waits, the reader
/// stops reading, and the transport pushes back on the peer. False once the driver is gone.
pub(crate) async fn hand_over(
    conn: ConnId,
    frames: Vec<Inbound>,
    bytes: usize,
    read_budget: &Semaphore,
    inbox: &mpsc::Sender<ConnEvent>,
) -> bool {
    if frames.is_empty() {
        return true;
    }
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    let Ok(taken) = read_budget.acquire_many(permits).await else {
        return false;
    };
    taken.forget();
    let event = ConnEvent::Frames {
        conn,
        frames,
        bytes: permits as usize,
    };
    inbox.send(event).await.is_ok()
}

/// One connection: reads frames into the driver's inbox and writes what the driver queued,
/// concurrently (a peer that stops reading must not stop us reading from it), until either
/// side closes.
async fn run<S>(
    conn: ConnId,
    ws: WebSocketStream<S>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
    inbox: mpsc::Sender<ConnEvent>,
    read_budget: Arc<Semaphore>,
    closing: Arc<Notify>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // Set by the reader when the peer sent a message over the limit; tungstenite refuses it
    // from its header, before buffering it.
    let mut oversize = false;
    let read = async {
        loop {
            // Wait for one frame, then take whatever else is ready without waiting.
            let mut frames = Vec::new();
            let mut bytes = 0;
            let mut ended = false;
            // A ping or pong: the peer is there, even if it sends no frame.
            let mut alive = false;
            let mut next = stream.next().await;
            loop {
                match next {
                    Some(Ok(Message::Text(text))) => {
                        bytes += text.len();
                        frames.push(Inbound::Text(text));
                    }
                    Some(Ok(Message::Binary(_))) => frames.push(Inbound::Binary),
                    // Pings are answered by tungstenite itself (on its next read).
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => alive = true,
                    Some(Ok(Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => ended = true,
                    Some(Err(err)) => {
                        tracing::debug!(%conn, %err, "read failed");
                        oversize = matches!(
                            err,
                            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. })
                        );
                        ended = true;
                    }
                }
                if ended || frames.len() >= READ_BATCH || bytes >= READ_BATCH_BYTES {
                    break;
                }
                match stream.next().now_or_never() {
                    Some(ready) => next = ready,
                    None => break,
                }
            }
            // Frames say as much; a batch of none but pings and pongs says it alone.
            if alive && frames.is_empty() && inbox.send(ConnEvent::Alive { conn }).await.is_err() {
                return;
            }
            if !hand_over(conn, frames, bytes, &read_budget, &inbox).await {
                return;
            }
            if ended {
                return;
            }
        }
    };
    let write = async {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let reason = 'writing: loop {
            if outgoing.recv_many(&mut batch, WRITE_BATCH).await == 0 {
                // The driver is gone without a word: just end.
                return;
            }
            let mut bytes = 0;
            for item in batch.drain(..) {
                match item {
                    Outgoing::Frames(frames) => {
                        for text in frames {
                            bytes += text.len();
                            if let Err(err) = sink.feed(Message::Text(text)).await {
                                tracing::debug!(%conn, %err, "write failed");
                                return;
                            }
                        }
                    }
                    Outgoing::Close(reason) => break 'writing reason,
                    Outgoing::Probe => {
                        if let Err(err) = sink.feed(Message::Ping(Default::default())).await {
                            tracing::debug!(%conn, %err, "write failed");
                            return;
                        }
                    }
                    // Only WebRTC sessions get signals.
                    Outgoing::Signal(_) => {}
                }
            }
            if let Err(err) = sink.flush().await {
                tracing::debug!(%conn, %err, "write failed");
                return;
            }
            queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        };
        let frame = CloseFrame {
            code: close_code(reason),
            reason: reason.label().into(),
        };
        // Sends what was fed before, then the close frame. The reader ends on the peer's
        // reply; if none comes, give up after the grace period.
        let _ = sink.send(Message::Close(Some(frame))).await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let deadline = async {
        closing.notified().await;
        tokio::time::sleep(CLOSE_DEADLINE).await;
    };
    tokio::select! {
        () = read => {}
        () = write => {}
        () = deadline => tracing::debug!(%conn, "close deadline passed: socket dropped"),
    }
    let closed = ConnEvent::Closed {
        conn,
        oversize,
        lost: false,
    };
    let _ = inbox.send(closed).await;
}

/// The WebSocket close code for why the node closed a connection.
fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::Requested
        | CloseReason::Duplicate
        | CloseReason::LinkBudget
        | CloseReason::SelfConnection => CloseCode::Normal,
        CloseReason::Shutdown => CloseCode::Away,
        CloseReason::HandshakeTimeout
        | CloseReason::InvalidHandshake
        | CloseReason::ProtocolViolations
        | CloseReason::WebRtcTimeout => CloseCode::Policy,
        // Rarely read: the peer did not answer pings, so it is unlikely to read this.
        CloseReason::Unresponsive => CloseCode::Away,
    }
}
