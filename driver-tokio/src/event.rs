//! Application events and the streams that deliver them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use peer_relay_core::{ConnectFailure, PeerId, RawValue, Transport};
use tokio::sync::mpsc;

/// Something that happened to the relay, delivered by [`Events`].
///
/// `Peer`, `PeerRemoved` and `Message` are the JS original's `peer` and `message` events
/// (plus the link-down event it lacks); the rest report failures the original swallows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A direct link to this peer formed, over this transport.
    Peer(PeerId, Transport),
    /// The direct link to this peer closed.
    PeerRemoved(PeerId),
    /// A message addressed to us arrived.
    Message {
        /// The sender.
        from: PeerId,
        /// What it sent.
        data: serde_json::Value,
        /// Peers the message passed through, the sender included: 1 is a direct link.
        path_len: usize,
    },
    /// A connect attempt to this peer failed (explicit `connect` or discovery's own).
    ConnectFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: ConnectFailure,
    },
    /// A WebRTC session with this peer ended before its data channel opened: `Timeout`
    /// (no channel within `webrtc_timeout`) or `WebRtcFailed` (ICE or DTLS failure, or a
    /// rejected description). The node then dials the peer's WebSocket url if its answer
    /// gave one; otherwise [`Event::ConnectFailed`] follows.
    WebRtcFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: ConnectFailure,
    },
    /// A bootstrap url could not be reached; it is dialled again after `retry_in`.
    BootstrapFailed {
        /// The url.
        url: String,
        /// Consecutive failures so far.
        attempt: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// What travels from the driver to a stream: messages stay raw JSON until the reader's task
/// parses them, so the driver task never pays for that.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event(Event),
    Message {
        from: PeerId,
        data: Box<RawValue>,
        path_len: usize,
    },
}

/// An async stream of [`Event`]s; see [`PeerRelay::events`](crate::PeerRelay::events).
///
/// Ends (yields `None`) once the relay is destroyed and every event before that was read.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Vec<Delivery>>,
    /// The rest of the last batch received.
    batch: std::vec::IntoIter<Delivery>,
    /// Bytes of message data queued for this stream and not read yet.
    queued_bytes: Arc<AtomicUsize>,
}

impl Events {
    /// The next event, or `None` once the relay is gone.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next delivery with message data still raw JSON, for readers (the
    /// [`Socket`](crate::Socket)) that decode it into their own types without a
    /// `serde_json::Value` in between.
    pub(crate) async fn next_delivery(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    fn poll_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            let Some(delivery) = self.batch.next() else {
                match std::task::ready!(self.rx.poll_recv(cx)) {
                    Some(batch) => self.batch = batch.into_iter(),
                    None => return Poll::Ready(None),
                }
                continue;
            };
            if let Delivery::Message { data, .. } = &delivery {
                self.queued_bytes
                    .fetch_sub(data.get().len(), Ordering::Relaxed);
            }
            return Poll::Ready(Some(delivery));
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match std::task::ready!(self.poll_delivery(cx)) {
                None => return Poll::Ready(None),
                Some(Delivery::Event(event)) => return Poll::Ready(Some(event)),
                Some(Delivery::Message {
                    from,
                    data,
                    path_len,
                }) => {
                    // The core checked the JSON (and its depth) before delivering it.
                    match serde_json::from_str(data.get()) {
                        Ok(data) => {
                            return Poll::Ready(Some(Event::Message {
                                from,
                                data,
                                path_len,
                            }));
                        }
                        Err(err) => tracing::warn!(%from, %err, "undecodable message skipped"),
                    }
                }
            }
        }
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

/// The driver's end of one [`Events`] stream. Deliveries are collected while the driver
/// handles a batch of inputs and sent together: one wake-up of the reader per batch.
#[derive(Debug)]
pub(crate) struct Subscriber {
    tx: mpsc::UnboundedSender<Vec<Delivery>>,
    pending: Vec<Delivery>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Subscriber {
    /// A new stream that buffers at most `max_bytes` of unread message data.
    pub(crate) fn new(max_bytes: usize) -> (Subscriber, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let subscriber = Subscriber {
            tx,
            pending: Vec::new(),
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes,
        };
        let events = Events {
            rx,
            batch: Vec::new().into_iter(),
            queued_bytes,
        };
        (subscriber, events)
    }

    /// Queues a delivery; false if it was a message dropped because the stream's queue is
    /// full. Link and failure events are never dropped: they are few (one per link change or
    /// failed attempt) and an application that lost one would misjudge which peers it is
    /// linked to.
    pub(crate) fn deliver(&mut self, delivery: Delivery) -> bool {
        if let Delivery::Message { data, .. } = &delivery {
            let len = data.get().len();
            if self.queued_bytes.load(Ordering::Relaxed) + len > self.max_bytes {
                return false;
            }
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
        self.pending.push(delivery);
        true
    }

    /// Sends what was queued since the last flush; false once the application dropped the
    /// stream.
    pub(crate) fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return !self.tx.is_closed();
        }
        self.tx.send(std::mem::take(&mut self.pending)).is_ok()
    }
}
