//! Hostile and broken input: every bad frame is counted and dropped, a connection that keeps
//! sending them is closed with a reason, and none of it panics or stops honest traffic.

mod harness;

use std::time::Duration;

use harness::Net;
use peer_relay_core::{CloseReason, Config, DropReason, Input, LinkSelection, Output, PeerId};
use serde_json::json;

fn config() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        max_violations: 1_000,
        ..Config::default()
    }
}

/// A -- B -- C; returns the net and B's connection to A (where we inject).
fn line(config: Config) -> (Net, peer_relay_core::ConnId) {
    let mut net = Net::new();
    let a = net.add(config.clone(), 1, false);
    let b = net.add(config.clone(), 2, true);
    let c = net.add(config, 3, false);
    net.bootstrap(a, b);
    net.bootstrap(c, b);
    net.run_for(Duration::from_secs(1));
    let conn = net.conn_between(b, a).expect("a-b link");
    (net, conn)
}

fn envelope(to: &str, from: &str, path: &str, nonce: &str, data: &str) -> String {
    format!(r#"{{"to":{to},"from":{from},"path":{path},"nonce":{nonce},"data":{data}}}"#)
}

#[test]
fn every_bad_frame_is_counted_by_reason_and_honest_traffic_continues() {
    let (mut net, conn) = line(config());
    let (a, c) = (net.id(0).to_string(), net.id(2).to_string());
    let qa = format!("\"{a}\"");
    let qc = format!("\"{c}\"");
    let path = format!("[\"{a}\"]");
    let user = r#"{"type":"user","data":1}"#;
    let long_path = format!("[{}]", vec![qa.as_str(); 10_000].join(","));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_payload = envelope(
        &qc,
        &qa,
        &path,
        "\"1\"",
        &format!(r#"{{"type":"user","data":{deep}}}"#),
    );
    let cases: Vec<(String, DropReason)> = vec![
        ("not json at all".into(), DropReason::Malformed),
        ("{\"to\":".into(), DropReason::Malformed),
        ("[1,2,3]".into(), DropReason::Malformed),
        ("null".into(), DropReason::Malformed),
        (
            envelope("12345", &qa, &path, "\"1\"", user),
            DropReason::BadId,
        ),
        (
            envelope("null", &qa, &path, "\"2\"", user),
            DropReason::BadId,
        ),
        (
            envelope("\"abc\"", &qa, &path, "\"3\"", user),
            DropReason::BadId,
        ),
        (envelope(&qc, "{}", &path, "\"4\"", user), DropReason::BadId),
        (
            envelope(&qc, &qa, "[\"zz\"]", "\"5\"", user),
            DropReason::BadId,
        ),
        (envelope(&qc, &qa, &path, "5", user), DropReason::BadNonce),
        (
            envelope(&qc, &qa, &path, "\"\"", user),
            DropReason::BadNonce,
        ),
        (
            envelope(&qc, &qa, &path, "null", user),
            DropReason::BadNonce,
        ),
        (envelope(&qc, &qa, "[]", "\"6\"", user), DropReason::BadPath),
        (
            envelope(&qc, &qa, &long_path, "\"7\"", user),
            DropReason::BadPath,
        ),
        (deep_payload, DropReason::TooDeep),
        (" ".repeat(2 << 20), DropReason::Oversize),
        // Payloads that would crash a JS peer are not relayed.
        (
            envelope(&qc, &qa, &path, "\"8\"", "null"),
            DropReason::MalformedPayload,
        ),
        (
            envelope(
                &qc,
                &qa,
                &path,
                "\"9\"",
                r#"{"type":"foundPeers","data":5}"#,
            ),
            DropReason::MalformedPayload,
        ),
        (
            envelope(
                &qc,
                &qa,
                &path,
                "\"10\"",
                r#"{"type":"findPeers","data":{}}"#,
            ),
            DropReason::MalformedPayload,
        ),
    ];
    for (frame, reason) in cases {
        let before = net.nodes[1].stats().dropped.get(reason);
        net.inject(1, conn, frame.as_bytes());
        let after = net.nodes[1].stats().dropped.get(reason);
        assert_eq!(
            after,
            before + 1,
            "{reason} not counted for {}",
            &frame[..frame.len().min(80)]
        );
    }
    net.input(1, Input::BinaryFrame { conn });
    assert_eq!(net.nodes[1].stats().dropped.get(DropReason::Binary), 1);
    // Nothing was relayed, and the link is still up and relaying honest traffic.
    assert_eq!(net.nodes[1].stats().relayed, 0);
    net.run_for(Duration::from_millis(100));
    net.send(0, 2, &json!("still works"));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.received(2), vec![(0, json!("still works"), 2)]);
    // Memory stayed bounded.
    let sizes = net.nodes[1].sizes();
    assert!(sizes.seen_nonces < 100 && sizes.preferred_paths < 10);
}

#[test]
fn a_connection_that_keeps_breaking_rules_is_closed() {
    let (mut net, conn) = line(Config {
        max_violations: 3,
        ..config()
    });
    for _ in 0..3 {
        net.inject(1, conn, b"garbage");
        assert!(net.conn_between(1, 0).is_some());
    }
    net.inject(1, conn, b"garbage");
    assert!(net.conn_between(1, 0).is_none());
    assert_eq!(
        net.nodes[1]
            .stats()
            .closed
            .get(CloseReason::ProtocolViolations),
        1
    );
}

#[test]
fn bad_or_missing_id_handshakes_close_the_connection() {
    let mut net = Net::new();
    let b = net.add(config(), 2, true);
    let own_id = net.id(b);
    let now = net.now;
    let bad = ["12345", "null", "{}", "not json", "\"abcd\""];
    for frame in bad {
        let conn = net.nodes[b].accept(now).unwrap();
        net.inject(b, conn, frame.as_bytes());
    }
    assert_eq!(
        net.nodes[b]
            .stats()
            .closed
            .get(CloseReason::InvalidHandshake),
        bad.len() as u64
    );
    let conn = net.nodes[b].accept(now).unwrap();
    net.inject(b, conn, own_id.to_buffer_json().as_bytes());
    assert_eq!(
        net.nodes[b].stats().closed.get(CloseReason::SelfConnection),
        1
    );
    // A link that never sends its id is closed after the timeout.
    let _silent = net.nodes[b].accept(now).unwrap();
    net.drain(b);
    net.run_for(Duration::from_secs(11));
    assert_eq!(
        net.nodes[b]
            .stats()
            .closed
            .get(CloseReason::HandshakeTimeout),
        1
    );
    assert_eq!(net.nodes[b].sizes().connections, 0);
}

#[test]
fn connection_limit_refuses_inbound() {
    let mut net = Net::new();
    let b = net.add(
        Config {
            max_connections: 3,
            max_links: 3,
            target_links: 1,
            ..config()
        },
        2,
        true,
    );
    let now = net.now;
    for _ in 0..3 {
        net.nodes[b].accept(now).unwrap();
    }
    assert_eq!(
        net.nodes[b].accept(now),
        Err(peer_relay_core::Error::TooManyConnections)
    );
    assert_eq!(net.nodes[b].stats().connections_refused, 1);
}

#[test]
fn nonce_flood_keeps_memory_bounded() {
    let limits = Config {
        seen_nonces_max: 1_000,
        preferred_paths_max: 100,
        ..config()
    };
    let (mut net, conn) = line(limits);
    let a = net.id(0).to_string();
    for n in 0..20_000u64 {
        let to = PeerId::from_bytes([(n % 251) as u8; 20]).to_string();
        let from = PeerId::from_bytes([(n % 241) as u8 + 1; 20]).to_string();
        let frame = envelope(
            &format!("\"{to}\""),
            &format!("\"{from}\""),
            &format!("[\"{a}\"]"),
            &format!("\"{n}\""),
            r#"{"type":"user","data":0}"#,
        );
        net.inject(1, conn, frame.as_bytes());
        // The relay output is not carried (the flood would echo); drain it away.
        let sizes = net.nodes[1].sizes();
        assert!(sizes.seen_nonces <= 1_000 && sizes.preferred_paths <= 100);
    }
    let _ = net.nodes[1].poll_output();
}

#[test]
fn unsolicited_answers_and_signals_do_not_make_us_dial() {
    let (mut net, conn) = line(Config {
        webrtc: true,
        ..config()
    });
    let b = net.id(1).to_string();
    let stranger = PeerId::from_bytes([7; 20]).to_string();
    let answer = envelope(
        &format!("\"{b}\""),
        &format!("\"{stranger}\""),
        &format!("[\"{stranger}\"]"),
        "\"1\"",
        r#"{"type":"handshake-answer","data":{"ws":"ws://victim.test:1","wrtc":false}}"#,
    );
    // A candidate (not an offer) from a stranger must not start a session.
    let signal = envelope(
        &format!("\"{b}\""),
        &format!("\"{stranger}\""),
        &format!("[\"{stranger}\"]"),
        "\"2\"",
        r#"{"type":"signal","data":{"candidate":{"candidate":"c","sdpMLineIndex":0,"sdpMid":"0"}}}"#,
    );
    let now = net.now;
    net.nodes[1].handle_input(
        now,
        Input::Frame {
            conn,
            frame: answer.as_bytes(),
        },
    );
    net.nodes[1].handle_input(
        now,
        Input::Frame {
            conn,
            frame: signal.as_bytes(),
        },
    );
    while let Some(out) = net.nodes[1].poll_output() {
        assert!(
            !matches!(
                out,
                Output::DialWebSocket { .. } | Output::StartWebRtc { .. }
            ),
            "{out:?}"
        );
    }
    let stats = net.nodes[1].stats();
    assert_eq!(stats.dropped.get(DropReason::UnsolicitedAnswer), 1);
    assert_eq!(stats.dropped.get(DropReason::UnsolicitedSignal), 1);
}

#[test]
fn messages_forged_from_us_are_dropped() {
    let (mut net, conn) = line(config());
    let b = net.id(1).to_string();
    let frame = envelope(
        &format!("\"{}\"", net.id(2)),
        &format!("\"{b}\""),
        &format!("[\"{}\"]", net.id(0)),
        "\"77\"",
        r#"{"type":"user","data":0}"#,
    );
    net.inject(1, conn, frame.as_bytes());
    assert_eq!(net.nodes[1].stats().dropped.get(DropReason::FromSelf), 1);
}

#[test]
fn send_refuses_data_that_would_nest_the_frame_too_deep() {
    // Found by the node_ops fuzzer: data at the depth limit made a frame two levels deeper,
    // which every receiver drops.
    let (mut net, _) = line(config());
    let limit = net.nodes[0].config().max_json_depth;
    let nested = |depth: usize| -> serde_json::Value {
        (0..depth).fold(serde_json::Value::Null, |v, _| {
            serde_json::Value::Array(vec![v])
        })
    };
    let (now, to) = (net.now, net.id(2));
    assert_eq!(
        net.nodes[0].send(now, to, &nested(limit - 1)),
        Err(peer_relay_core::Error::TooLarge)
    );
    net.nodes[0].send(now, to, &nested(limit - 2)).unwrap();
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.received(2).len(),
        1,
        "the deepest accepted message is delivered"
    );
}
