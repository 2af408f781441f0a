//! Wire compatibility: every frame captured from the JS original decodes, and every kind of
//! frame our core emits is pinned by a snapshot (fixed seeds, so ids and nonces are stable).

mod harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use harness::Net;
use peer_relay_core::wire::{DecodeLimits, Envelope, Payload, decode_id_handshake};
use peer_relay_core::{Config, LinkSelection};
use serde_json::json;

const CAPTURED: &str = include_str!("fixtures/captured-frames.txt");
const SIGNALS: &str = include_str!("fixtures/captured-signal-payloads.txt");

/// (label, frame) pairs from a fixture file whose `#` lines label the line after them.
fn labelled(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut label = String::from("unlabelled");
    for line in text.lines().skip(1) {
        if let Some(l) = line.strip_prefix("# ") {
            label = l.to_string();
        } else if !line.is_empty() {
            out.push((label.clone(), line.to_string()));
        }
    }
    out
}

fn describe_payload(payload: &Payload<'_>) -> String {
    match payload {
        Payload::User(data) => format!("user {}", data.get()),
        Payload::FindPeers(id) => format!("findPeers {id}"),
        Payload::FoundPeers { ids, ignored } => {
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            format!("foundPeers [{}] (+{ignored} ignored)", ids.join(", "))
        }
        Payload::HandshakeOffer => "handshake-offer".into(),
        Payload::HandshakeAnswer { ws, wrtc } => format!("handshake-answer ws={ws:?} wrtc={wrtc}"),
        Payload::Signal(raw) => {
            let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            let kind = value
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("candidate");
            format!("signal {kind} ({} bytes)", raw.get().len())
        }
        Payload::Unknown => "unknown".into(),
    }
}

fn describe_frame(frame: &str) -> String {
    let limits = DecodeLimits::default();
    if let Ok(id) = decode_id_handshake(frame.as_bytes(), &limits) {
        return format!("id-handshake {id}");
    }
    let env = Envelope::decode(frame.as_bytes(), &limits).expect("frame decodes");
    let path: Vec<String> = env
        .path
        .iter()
        .map(|p| p.to_string()[..8].to_string())
        .collect();
    let payload = &env.payload;
    format!(
        "to={} from={} path=[{}] nonce={}\n  {}",
        env.to,
        env.from,
        path.join(","),
        env.nonce.as_str(),
        describe_payload(payload)
    )
}

#[test]
fn every_captured_frame_decodes() {
    let mut report = String::new();
    for (label, frame) in labelled(CAPTURED) {
        writeln!(report, "# {label}\n{}", describe_frame(&frame)).unwrap();
    }
    insta::assert_snapshot!("captured_frames_decoded", report);
}

#[test]
fn captured_signal_payloads_decode() {
    let mut report = String::new();
    for (_, payload) in labelled(&format!("header\n{SIGNALS}")) {
        let decoded = Payload::decode(&payload, 20).unwrap();
        writeln!(report, "{}", describe_payload(&decoded)).unwrap();
    }
    insta::assert_snapshot!("captured_signals_decoded", report);
}

#[test]
fn relayed_frames_keep_payload_bytes_and_append_our_id() {
    // The captured `user (sent)` frame relayed by our node must differ only in the envelope.
    let frames = labelled(CAPTURED);
    let sent = &frames.iter().find(|(l, _)| l == "user (sent)").unwrap().1;
    let env = Envelope::decode(sent.as_bytes(), &DecodeLimits::default()).unwrap();
    let relay =
        peer_relay_core::PeerId::from_hex("40f6ab6d185f7725d7e117134be4727926da3e1c").unwrap();
    let mut out = String::new();
    peer_relay_core::wire::write_envelope(
        &mut out,
        &env.to,
        &env.from,
        &env.path,
        Some(&relay),
        &env.nonce,
        env.payload_json(),
    );
    let js_relayed = &frames
        .iter()
        .find(|(l, _)| l == "user (relayed)")
        .unwrap()
        .1;
    let ours: serde_json::Value = serde_json::from_str(&out).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(js_relayed).unwrap();
    assert_eq!(ours["path"], theirs["path"]);
    assert_eq!(ours["data"], theirs["data"]);
    assert_eq!(ours["nonce"], theirs["nonce"]);
    assert!(out.ends_with(&format!("\"data\":{}}}", env.payload_json())));
}

/// Runs a small scripted network and returns the first frame of each kind any node sent.
fn emitted_frames() -> BTreeMap<String, String> {
    let plain = Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    };
    let rtc = Config {
        webrtc: true,
        ..plain.clone()
    };
    let mut net = Net::new();
    let a = net.add(plain.clone(), 11, false);
    let hub = net.add(plain.clone(), 12, true);
    let c = net.add(rtc.clone(), 13, false);
    let d = net.add(rtc, 14, false);
    let e = net.add(plain, 15, true);
    net.send(a, hub, &json!({"queued": true}));
    for n in [a, c, d, e] {
        net.bootstrap(n, hub);
    }
    net.run_for(Duration::from_secs(1));
    net.send(a, c, &json!({"test": "relay", "n": 1}));
    net.connect(c, d); // WebRTC: offer, answer with wrtc, signals
    net.connect(a, e); // WebSocket: answer with a url
    net.run_for(Duration::from_secs(2));

    let mut kinds = BTreeMap::new();
    for frame in &net.frames {
        kinds
            .entry(classify(frame))
            .or_insert_with(|| frame.clone());
    }
    kinds
}

fn classify(frame: &str) -> String {
    let limits = DecodeLimits::default();
    if decode_id_handshake(frame.as_bytes(), &limits).is_ok() {
        return "id-handshake".into();
    }
    let env = Envelope::decode(frame.as_bytes(), &limits).unwrap();
    let mut kind = match &env.payload {
        Payload::Signal(raw) => {
            let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            format!(
                "signal-{}",
                v.get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("candidate")
            )
        }
        Payload::HandshakeAnswer { ws, .. } => {
            format!(
                "handshake-answer-{}",
                if ws.is_some() { "ws" } else { "no-ws" }
            )
        }
        other => format!("{:?}", other.kind()).to_lowercase(),
    };
    if env.path.len() > 1 {
        kind.push_str(" (relayed)");
    }
    kind
}

#[test]
fn every_emitted_frame_kind_is_pinned() {
    let kinds = emitted_frames();
    for expected in [
        "id-handshake",
        "findpeers",
        "foundpeers",
        "user",
        "user (relayed)",
        "handshakeoffer",
        "handshakeoffer (relayed)",
        "handshake-answer-ws",
        "handshake-answer-no-ws",
        "signal-offer",
        "signal-answer",
    ] {
        assert!(
            kinds.contains_key(expected),
            "no {expected} frame in {:?}",
            kinds.keys()
        );
    }
    let mut report = String::new();
    for (kind, frame) in &kinds {
        writeln!(report, "# {kind}\n{frame}").unwrap();
    }
    insta::assert_snapshot!("emitted_frames", report);
}

#[test]
fn emitted_frames_have_the_shapes_js_peers_require() {
    // original-notes.md: string nonce, non-empty path ending with the sender's id, hex or
    // Buffer ids. Anything else crashes a JS peer.
    for frame in emitted_frames().values() {
        let value: serde_json::Value = serde_json::from_str(frame).unwrap();
        if value.get("type") == Some(&json!("Buffer")) {
            assert_eq!(value["data"].as_array().unwrap().len(), 20);
            continue;
        }
        assert!(value["nonce"].is_string());
        let path = value["path"].as_array().unwrap();
        assert!(
            !path.is_empty()
                && path
                    .iter()
                    .all(|p| p.as_str().is_some_and(|s| s.len() == 40))
        );
        assert!(value["to"].as_str().is_some_and(|s| s.len() == 40));
        assert!(value["from"].as_str().is_some_and(|s| s.len() == 40));
        assert!(value["data"]["type"].is_string());
    }
}
