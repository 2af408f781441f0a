//! One task per WebRTC session: runs a `webrtc` peer connection with one data channel, hands
//! the local signals (simple-peer's JSON forms) to the driver, applies the remote ones, and
//! once the channel is open moves frames like a WebSocket connection task. It makes no
//! protocol decision: the node chose to start it, relays its signals, and closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use futures_util::FutureExt;
use peer_relay_core::ConnId;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceConnectionState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, SettingEngineBuilder,
};

use crate::connection::{
    ConnEvent, ConnHandle, Inbound, Outgoing, READ_BATCH, READ_BATCH_BYTES, hand_over,
};

/// What every session of one driver shares: the WebRTC options and the counters.
#[derive(Debug)]
pub(crate) struct Settings {
    /// STUN/TURN servers (none by default: host candidates only).
    pub ice_servers: Vec<RTCIceServer>,
    /// Local UDP addresses to gather host candidates on.
    pub bind: Vec<SocketAddr>,
    /// Resolve remote mDNS (`.local`) candidates, as Chromium sends them.
    pub mdns: bool,
    /// Remote candidates one session takes at most; more are ignored and counted.
    pub max_remote_candidates: usize,
    /// Bytes the data channel may hold unacknowledged before writes wait.
    pub send_buffer_bytes: usize,
    /// Counters reported in [`DriverStats`](crate::DriverStats).
    pub counters: Counters,
}

/// Counters the session tasks update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Remote signals ignored: malformed, unexpected, or over the candidate bound.
    pub signals_ignored: AtomicU64,
    /// Peer connections built without mDNS because the mDNS socket could not be opened.
    pub mdns_unavailable: AtomicU64,
    /// Sessions whose channel opened over a remote `.local` candidate we resolved.
    pub mdns_links: AtomicU64,
}

/// A signal as simple-peer sends it: a session description or a wrapped candidate.
#[derive(Debug, Deserialize)]
struct RemoteSignal {
    #[serde(rename = "type")]
    kind: Option<String>,
    sdp: Option<String>,
    candidate: Option<RTCIceCandidateInit>,
}

/// What the peer connection's callbacks report to the session task.
enum PcEvent {
    Candidate(String),
    /// ICE or the peer connection failed: the path is gone.
    Failed(String),
    /// The peer connection closed.
    Closed,
    DataChannel(Arc<dyn DataChannel>),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
    /// ICE is connected: its consent checks (every 2 s) keep getting answers. The node's
    /// keepalive probes of a WebRTC link are answered from this.
    ice_up: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.events.send(PcEvent::Candidate(init.candidate));
            }
            Err(err) => tracing::debug!(%err, "local candidate not serialisable"),
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let up = matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        );
        self.ice_up.store(up, Ordering::Relaxed);
        if state == RTCIceConnectionState::Failed {
            let _ = self.events.send(PcEvent::Failed(format!("ICE {state}")));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Failed => {
                let _ = self
                    .events
                    .send(PcEvent::Failed(format!("connection {state}")));
            }
            RTCPeerConnectionState::Closed => {
                let _ = self.events.send(PcEvent::Closed);
            }
            _ => {}
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.events.send(PcEvent::DataChannel(channel));
    }
}

/// Starts a session for `conn`; the returned future is the task to spawn.
pub(crate) fn start(
    conn: ConnId,
    initiator: bool,
    settings: Arc<Settings>,
    max_queued_bytes: usize,
    inbox: mpsc::Sender<ConnEvent>,
    read_budget: Arc<Semaphore>,
) -> (ConnHandle, impl Future<Output = ()> + Send + 'static) {
    let (handle, orders, queued_bytes) = ConnHandle::new(max_queued_bytes);
    let task = async move {
        let session = Session {
            conn,
            initiator,
            settings,
            inbox: inbox.clone(),
            mid: "0".to_owned(),
            remote_set: false,
            early: Vec::new(),
            remote_candidates: 0,
            ice_up: Arc::new(AtomicBool::new(false)),
        };
        let lost = match session.run(orders, queued_bytes, read_budget).await {
            Ok(ending) => ending == Ending::Lost,
            Err(err) => {
                tracing::debug!(%conn, %err, "WebRTC session ended");
                false
            }
        };
        let _ = inbox
            .send(ConnEvent::Closed {
                conn,
                oversize: false,
                lost,
            })
            .await;
    };
    (handle, task)
}

/// How an open session ended without an error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Closed: by us, by the peer, or its channel ended.
    Closed,
    /// ICE or DTLS gave up on the path (the peer stopped answering consent checks).
    Lost,
}

struct Session {
    conn: ConnId,
    initiator: bool,
    settings: Arc<Settings>,
    inbox: mpsc::Sender<ConnEvent>,
    /// The media id of our data-channel m-line, for the candidates we send.
    mid: String,
    /// Whether the remote description is set (candidates before it wait in `early`).
    remote_set: bool,
    early: Vec<RTCIceCandidateInit>,
    remote_candidates: usize,
    /// See [`Handler::ice_up`].
    ice_up: Arc<AtomicBool>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Session {
    async fn run(
        mut self,
        mut orders: mpsc::UnboundedReceiver<Outgoing>,
        queued_bytes: Arc<AtomicUsize>,
        read_budget: Arc<Semaphore>,
    ) -> Result<Ending, BoxError> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let pc = self.build(events_tx).await?;
        let result = self
            .negotiate_and_relay(&pc, &mut orders, &mut events, &queued_bytes, &read_budget)
            .await;
        let _ = pc.close().await;
        result
    }

    async fn build(
        &self,
        events: mpsc::UnboundedSender<PcEvent>,
    ) -> Result<Arc<dyn PeerConnection>, BoxError> {
        use rtc::ice::mdns::MulticastDnsMode;
        let settings = &self.settings;
        let attempt = |mode: MulticastDnsMode| {
            let handler = Arc::new(Handler {
                events: events.clone(),
                ice_up: Arc::clone(&self.ice_up),
            });
            PeerConnectionBuilder::new()
                .with_configuration(
                    RTCConfigurationBuilder::new()
                        .with_ice_servers(settings.ice_servers.clone())
                        .build(),
                )
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(mode)
                        .build(),
                )
                .with_handler(handler)
                .with_udp_addrs(settings.bind.clone())
                .with_data_channel_send_buffer_limit(settings.send_buffer_bytes)
                .build()
        };
        if settings.mdns {
            match attempt(MulticastDnsMode::QueryOnly).await {
                Ok(pc) => return Ok(Arc::new(pc)),
                Err(err) => {
                    // No multicast route (e.g. loopback only): host IP candidates still work.
                    settings
                        .counters
                        .mdns_unavailable
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%err, "mDNS unavailable: session without it");
                }
            }
        }
        Ok(Arc::new(attempt(MulticastDnsMode::Disabled).await?))
    }

    async fn negotiate_and_relay(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        orders: &mut mpsc::UnboundedReceiver<Outgoing>,
        events: &mut mpsc::UnboundedReceiver<PcEvent>,
        queued_bytes: &AtomicUsize,
        read_budget: &Semaphore,
    ) -> Result<Ending, BoxError> {
        let mut channel = None;
        if self.initiator {
            // simple-peer's label: 40 random hex characters; ordered and reliable.
            channel = Some(pc.create_data_channel(&random_label()?, None).await?);
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer.clone()).await?;
            self.mid = mid_of(&offer.sdp);
            self.local_signal(serde_json::to_string(&offer)?).await?;
        }
        // Until the data channel opens.
        let channel = loop {
            let polled = async {
                match &channel {
                    Some(dc) => dc.poll().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                order = orders.recv() => match order {
                    None | Some(Outgoing::Close(_)) => return Ok(Ending::Closed),
                    Some(Outgoing::Signal(signal)) => self.remote_signal(pc, &signal).await?,
                    // The node transmits and probes only once the channel is open.
                    Some(Outgoing::Frames(frames)) => release(queued_bytes, &frames),
                    Some(Outgoing::Probe) => {}
                },
                event = events.recv() => match event {
                    Some(PcEvent::Candidate(candidate)) => self.local_candidate(candidate).await?,
                    Some(PcEvent::Failed(why)) => return Err(why.into()),
                    Some(PcEvent::Closed) => return Err("peer connection closed".into()),
                    // As responder, the initiator's channel, whatever its label.
                    Some(PcEvent::DataChannel(dc)) if channel.is_none() => channel = Some(dc),
                    Some(PcEvent::DataChannel(_)) | None => {}
                },
                event = polled => match event {
                    Some(DataChannelEvent::OnOpen) => break channel.take().ok_or("no channel")?,
                    Some(DataChannelEvent::OnClose) | None => {
                        return Err("data channel closed before opening".into());
                    }
                    Some(_) => {}
                },
            }
        };
        if linked_through_mdns(pc).await {
            self.settings
                .counters
                .mdns_links
                .fetch_add(1, Ordering::Relaxed);
        }
        self.inbox
            .send(ConnEvent::WebRtcOpened { conn: self.conn })
            .await?;
        let conn = self.conn;
        let inbox = self.inbox.clone();
        let mid = self.mid.clone();
        // Reading, writing and watching the connection run concurrently: a peer that stops
        // reading must not stop us reading from it.
        let read = async {
            loop {
                let mut frames = Vec::new();
                let mut bytes = 0;
                let mut ended = false;
                let mut next = channel.poll().await;
                loop {
                    match next {
                        Some(DataChannelEvent::OnMessage(message)) => {
                            if message.is_string {
                                match Utf8Bytes::try_from(message.data).ok() {
                                    Some(text) => {
                                        bytes += text.len();
                                        frames.push(Inbound::Text(text));
                                    }
                                    None => frames.push(Inbound::Binary),
                                }
                            } else {
                                frames.push(Inbound::Binary);
                            }
                        }
                        Some(DataChannelEvent::OnClose) | None => ended = true,
                        Some(_) => {}
                    }
                    if ended || frames.len() >= READ_BATCH || bytes >= READ_BATCH_BYTES {
                        break;
                    }
                    match channel.poll().now_or_never() {
                        Some(ready) => next = ready,
                        None => break,
                    }
                }
                if !hand_over(conn, frames, bytes, read_budget, &inbox).await {
                    return;
                }
                if ended {
                    return;
                }
            }
        };
        let write = async {
            let mut batch = Vec::new();
            loop {
                if orders.recv_many(&mut batch, 16).await == 0 {
                    return Ok(());
                }
                for order in batch.drain(..) {
                    match order {
                        Outgoing::Frames(frames) => {
                            for text in &frames {
                                // Waits while the channel holds `send_buffer_bytes`.
                                if let Err(err) = channel.send_text(text.as_str()).await {
                                    tracing::debug!(%conn, %err, "data channel write failed");
                                    return Ok(());
                                }
                                queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
                            }
                        }
                        Outgoing::Signal(signal) => self.remote_signal(pc, &signal).await?,
                        // ICE checks the path on its own; if it holds, the link is alive.
                        // If not, ICE fails it (25 s) or the node's keepalive closes it.
                        Outgoing::Probe => {
                            if self.ice_up.load(Ordering::Relaxed) {
                                let alive = ConnEvent::Alive { conn };
                                if self.inbox.send(alive).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                        Outgoing::Close(_) => {
                            let _ = channel.close().await;
                            return Ok(());
                        }
                    }
                }
            }
        };
        let watch = async {
            while let Some(event) = events.recv().await {
                match event {
                    PcEvent::Failed(why) => {
                        tracing::debug!(%conn, %why, "WebRTC link lost");
                        return Ok(Ending::Lost);
                    }
                    PcEvent::Closed => return Ok(Ending::Closed),
                    // Candidates gathered late still go out.
                    PcEvent::Candidate(candidate) => {
                        let signal = ConnEvent::LocalSignal {
                            conn,
                            signal: candidate_signal(&candidate, &mid),
                        };
                        if inbox.send(signal).await.is_err() {
                            return Err("driver gone".into());
                        }
                    }
                    // A second channel from the peer is not ours to use.
                    PcEvent::DataChannel(_) => {}
                }
            }
            Err("peer connection gone".into())
        };
        tokio::select! {
            () = read => Ok(Ending::Closed),
            written = write => written.map(|()| Ending::Closed),
            ended = watch => ended,
        }
    }

    async fn local_signal(&self, signal: String) -> Result<(), BoxError> {
        self.inbox
            .send(ConnEvent::LocalSignal {
                conn: self.conn,
                signal,
            })
            .await?;
        Ok(())
    }

    async fn local_candidate(&self, candidate: String) -> Result<(), BoxError> {
        self.local_signal(candidate_signal(&candidate, &self.mid))
            .await
    }

    /// Applies a remote signal. A malformed or unexpected one is ignored and counted; a
    /// description the stack rejects ends the session (the node then falls back).
    async fn remote_signal(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        signal: &str,
    ) -> Result<(), BoxError> {
        let ignored = || {
            self.settings
                .counters
                .signals_ignored
                .fetch_add(1, Ordering::Relaxed);
        };
        let Ok(parsed) = serde_json::from_str::<RemoteSignal>(signal) else {
            ignored();
            return Ok(());
        };
        if let (Some(kind), Some(sdp)) = (parsed.kind.as_deref(), parsed.sdp) {
            let expected = if self.initiator { "answer" } else { "offer" };
            // Renegotiation is not supported (the original never renegotiates).
            if kind != expected || self.remote_set {
                ignored();
                return Ok(());
            }
            let description = if self.initiator {
                RTCSessionDescription::answer(sdp)?
            } else {
                RTCSessionDescription::offer(sdp)?
            };
            pc.set_remote_description(description).await?;
            self.remote_set = true;
            if !self.initiator {
                let answer = pc.create_answer(None).await?;
                pc.set_local_description(answer.clone()).await?;
                self.mid = mid_of(&answer.sdp);
                debug_assert_eq!(answer.sdp_type, RTCSdpType::Answer);
                self.local_signal(serde_json::to_string(&answer)?).await?;
            }
            for candidate in std::mem::take(&mut self.early) {
                self.add_candidate(pc, candidate).await;
            }
            return Ok(());
        }
        let Some(candidate) = parsed.candidate else {
            // e.g. simple-peer's `{"renegotiate":true}`.
            ignored();
            return Ok(());
        };
        // An empty candidate marks the end of the remote candidates.
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        if self.remote_candidates >= self.settings.max_remote_candidates {
            ignored();
            return Ok(());
        }
        self.remote_candidates += 1;
        if self.remote_set {
            self.add_candidate(pc, candidate).await;
        } else {
            // The stack refuses candidates before the remote description: keep them.
            self.early.push(candidate);
        }
        Ok(())
    }

    async fn add_candidate(&self, pc: &Arc<dyn PeerConnection>, candidate: RTCIceCandidateInit) {
        if let Err(err) = pc.add_ice_candidate(candidate).await {
            self.settings
                .counters
                .signals_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(conn = %self.conn, %err, "remote candidate refused");
        }
    }
}

/// Whether the nominated candidate pair's remote side is an mDNS (`.local`) host candidate:
/// the link runs over an address we resolved (rather than one learned from the peer's
/// checks).
async fn linked_through_mdns(pc: &Arc<dyn PeerConnection>) -> bool {
    use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    report.iter().any(|entry| {
        let RTCStatsReportEntry::IceCandidatePair(pair) = entry else {
            return false;
        };
        pair.nominated
            && report.iter().any(|candidate| {
                matches!(candidate, RTCStatsReportEntry::RemoteCandidate(remote)
                    if remote.stats.id.ends_with(&pair.remote_candidate_id)
                        && remote.address.as_deref().is_some_and(|a| a.ends_with(".local")))
            })
    })
}

/// Gives back the queue bytes of frames that will not be written.
fn release(queued_bytes: &AtomicUsize, frames: &[Utf8Bytes]) {
    let bytes: usize = frames.iter().map(|text| text.len()).sum();
    queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
}

/// simple-peer's wrapper around an `RTCIceCandidateInit`.
fn candidate_signal(candidate: &str, mid: &str) -> String {
    serde_json::json!({
        "candidate": {
            "candidate": candidate,
            "sdpMLineIndex": 0,
            "sdpMid": mid,
        }
    })
    .to_string()
}

/// The first `a=mid:` of an SDP (the data channel's m-line), `"0"` if there is none.
fn mid_of(sdp: &str) -> String {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .unwrap_or("0")
        .to_owned()
}

fn random_label() -> Result<String, BoxError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|err| err.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_is_read_from_the_sdp() {
        assert_eq!(mid_of("v=0\r\nm=application 9\r\na=mid:data\r\n"), "data");
        assert_eq!(mid_of("v=0\r\n"), "0");
    }

    #[test]
    fn simple_peer_signals_parse() {
        let offer: RemoteSignal = serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).unwrap();
        assert_eq!(offer.kind.as_deref(), Some("offer"));
        let candidate: RemoteSignal = serde_json::from_str(
            r#"{"candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMLineIndex":0,"sdpMid":"0"}}"#,
        )
        .unwrap();
        assert_eq!(candidate.candidate.unwrap().sdp_mid.as_deref(), Some("0"));
        let renegotiate: RemoteSignal = serde_json::from_str(r#"{"renegotiate":true}"#).unwrap();
        assert!(renegotiate.kind.is_none() && renegotiate.candidate.is_none());
    }

    #[test]
    fn candidates_are_wrapped_as_simple_peer_does() {
        let signal: serde_json::Value = serde_json::from_str(&candidate_signal(
            "candidate:1 1 udp 5 10.0.0.1 9 typ host",
            "0",
        ))
        .unwrap();
        assert_eq!(
            signal,
            serde_json::json!({"candidate": {
                "candidate": "candidate:1 1 udp 5 10.0.0.1 9 typ host",
                "sdpMLineIndex": 0,
                "sdpMid": "0",
            }})
        );
    }

    #[test]
    fn labels_are_40_hex() {
        let label = random_label().unwrap();
        assert_eq!(label.len(), 40);
        assert!(label.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
