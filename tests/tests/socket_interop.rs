//! The Rust `Socket` against the JS original's `PeerRelay.Socket` (`tests/js/socket.js`):
//! datagrams both ways, every byte value and 60,000 bytes, with the ports each side reports,
//! over a direct link (either side serving) and through a Rust relay peer; and two Rust
//! sockets through a JS relay peer. With `CI=true` a missing `node` or npm install fails
//! these tests.

use peer_relay::{
    Config, Event, LinkSelection, Options, PeerId, PeerRelay, Socket, encode_payload,
};
use peer_relay_interop::{Kind, Peer, Spec, WAIT, js_available, js_dir};
use serde_json::{Value, json};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A JS socket in a `node` child process, killed when dropped.
struct JsSocket {
    id: PeerId,
    url: Option<String>,
    port: u16,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl JsSocket {
    /// Starts `socket.js`, bound to `bind`, and returns once it printed `ready`.
    async fn start(server: bool, bootstrap: Option<&str>, bind: u16, no_populate: bool) -> Self {
        let mut command = Command::new("node");
        command
            .arg(js_dir().join("socket.js"))
            .args(["--bind", &bind.to_string()]);
        if server {
            command.args(["--port", "0"]);
        }
        if let Some(url) = bootstrap {
            command.args(["--bootstrap", url]);
        }
        if no_populate {
            command.arg("--no-populate");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node socket.js");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut js = JsSocket {
            id: PeerId::from_hex(&"0".repeat(40)).unwrap(),
            url: None,
            port: 0,
            child,
            stdin,
            stdout,
        };
        let ready = js.next_line().await;
        assert_eq!(ready["event"], "ready", "{ready}");
        js.id = ready["id"].as_str().unwrap().parse().unwrap();
        js.url = ready["url"].as_str().map(str::to_owned);
        // Before `listening` the original reports its random port; bind sets ours.
        assert_eq!(ready["address"]["address"], js.id.to_hex().as_str());
        js.port = bind;
        js
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("JS socket printed nothing within WAIT")
            .expect("read JS stdout")
            .expect("JS socket exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("JS printed non-JSON ({e}): {line}"))
    }

    /// The next line with this `event`; panics on a JS error report.
    async fn expect(&mut self, event: &str) -> Value {
        loop {
            let line = self.next_line().await;
            assert_ne!(line["event"], "error", "JS socket reported {line}");
            if line["event"] == event {
                return line;
            }
        }
    }

    async fn command(&mut self, line: Value) {
        let mut text = line.to_string();
        text.push('\n');
        self.stdin.write_all(text.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn send(&mut self, to: PeerId, port: u16, data: &[u8]) {
        self.command(
            json!({"cmd": "send", "to": to.to_hex().as_str(), "port": port, "data": hex(data)}),
        )
        .await;
    }

    /// Closes the socket; the process must print `close` and exit with status 0.
    async fn close(mut self) {
        self.command(json!({"cmd": "close"})).await;
        self.expect("close").await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("JS socket exits after close")
            .unwrap();
        assert!(status.success(), "JS socket exited with {status}");
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn chain_config() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

/// Every byte value and 60,000 bytes each way between a bound Rust socket (port 4100) and a
/// bound JS socket (port `js.port`), checking the data, the sender each side reports and (on
/// the Rust side) the path length: 1 direct, 2 through one relay.
async fn exchange(rust: &Socket, js: &mut JsSocket, path_len: usize) {
    let every: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let rust_hex = rust.peer().id().to_hex();
    let rust_rinfo = json!({"address": rust_hex.as_str(), "port": 4100, "family": "peer-relay"});

    for data in [&every, &big] {
        // Rust -> JS.
        rust.send_to(data, (js.id, js.port)).await.unwrap();
        let message = js.expect("message").await;
        assert_eq!(message["rinfo"], rust_rinfo);
        let received = unhex(message["data"].as_str().unwrap());
        assert_eq!(received.len(), data.len());
        assert!(received == *data, "JS received other bytes");

        // JS -> Rust. A second event stream sees the raw message too: the JS payload is
        // exactly what the Rust codec makes of the same datagram.
        let mut raw = rust.peer().events();
        js.send(rust.peer().id(), 4100, data).await;
        let payload = loop {
            match tokio::time::timeout(WAIT, raw.next()).await {
                Ok(Some(Event::Message { data, .. })) => break data,
                Ok(Some(_)) => {}
                _ => panic!("no raw message from JS within WAIT"),
            }
        };
        let ours = encode_payload(data, js.id.to_hex().as_str(), js.port);
        assert_eq!(payload, serde_json::from_str::<Value>(&ours).unwrap());
        let datagram = tokio::time::timeout(WAIT, rust.recv_datagram())
            .await
            .expect("Rust socket: no datagram from JS within WAIT")
            .unwrap();
        assert_eq!(datagram.data.len(), data.len());
        assert!(datagram.data == *data, "Rust received other bytes");
        assert_eq!(datagram.from.address, js.id.to_hex().as_str());
        assert_eq!(
            (datagram.from.port, datagram.from.family),
            (js.port, "peer-relay")
        );
        assert_eq!(datagram.path_len, path_len, "hops from the JS socket");
    }
    assert_eq!(rust.stats().malformed, 0);
}

async fn bind(socket: &Socket) {
    tokio::time::timeout(WAIT, socket.bind(4100))
        .await
        .expect("Rust socket listening within WAIT")
        .unwrap();
}

/// The Rust socket serves; the JS socket joins it.
async fn rust_serves_js() {
    let rust = Socket::new(Options {
        port: Some(0),
        ..Options::default()
    })
    .await
    .unwrap();
    let url = rust.peer().url().unwrap().to_owned();
    let mut js = JsSocket::start(false, Some(&url), 4242, false).await;
    let listening = js.expect("listening").await;
    assert_eq!(listening["address"]["port"], 4242);
    bind(&rust).await;
    exchange(&rust, &mut js, 1).await;
    js.close().await;
    rust.close().await.unwrap();
}

/// The JS socket serves; the Rust socket joins it.
async fn js_serves_rust() {
    let mut js = JsSocket::start(true, None, 9000, false).await;
    let rust = Socket::new(Options {
        bootstrap: vec![js.url.clone().unwrap()],
        ..Options::default()
    })
    .await
    .unwrap();
    bind(&rust).await;
    js.expect("listening").await;
    exchange(&rust, &mut js, 1).await;
    rust.close().await.unwrap();
    js.close().await;
}

/// Both join a Rust relay peer and never link to each other: every datagram is relayed.
async fn through_a_rust_relay() {
    let relay = PeerRelay::new(Options {
        port: Some(0),
        config: chain_config(),
        ..Options::default()
    })
    .await
    .unwrap();
    let url = relay.url().unwrap().to_owned();
    let mut js = JsSocket::start(false, Some(&url), 31337, true).await;
    js.expect("listening").await;
    let rust = Socket::new(Options {
        bootstrap: vec![url],
        config: chain_config(),
        ..Options::default()
    })
    .await
    .unwrap();
    bind(&rust).await;
    // The relay passes datagrams on only once it has both links.
    let mut linked = Vec::new();
    let mut events = relay.events();
    while !(linked.contains(&js.id) && linked.contains(&rust.peer().id())) {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Peer(id, _))) => linked.push(id),
            Ok(Some(_)) => {}
            _ => panic!("the relay did not link both sockets within WAIT"),
        }
    }
    exchange(&rust, &mut js, 2).await;
    assert!(
        rust.peer().disconnect(js.id).await.is_err(),
        "the sockets linked directly"
    );
    assert!(relay.stats().await.unwrap().node.relayed >= 4);
    js.close().await;
    rust.close().await.unwrap();
    relay.destroy().await;
}

#[tokio::test]
async fn rust_socket_serves_js_socket() {
    if js_available() {
        rust_serves_js().await;
    }
}

#[tokio::test]
async fn js_socket_serves_rust_socket() {
    if js_available() {
        js_serves_rust().await;
    }
}

#[tokio::test]
async fn rust_and_js_sockets_through_a_rust_relay() {
    if js_available() {
        through_a_rust_relay().await;
    }
}

/// Two Rust sockets joined only through a JS relay peer (the original, `--no-populate`),
/// which parses and re-serialises every payload on the way.
async fn through_a_js_relay() {
    let mut relay = Peer::start(
        Kind::Js,
        &Spec {
            server: true,
            no_populate: true,
            ..Spec::default()
        },
    )
    .await;
    let joining = || Options {
        bootstrap: vec![relay.url().to_owned()],
        config: chain_config(),
        ..Options::default()
    };
    let a = Socket::new(joining()).await.unwrap();
    let b = Socket::new(joining()).await.unwrap();
    bind(&a).await;
    bind(&b).await;
    // A JS relay drops a message for a target it has no link to yet: wait for both.
    relay.expect_peer(a.peer().id()).await;
    relay.expect_peer(b.peer().id()).await;
    let every: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i * 17 % 256) as u8).collect();
    for data in [&every, &big] {
        a.send_to(data, (b.peer().id(), 4100)).await.unwrap();
        let datagram = tokio::time::timeout(WAIT, b.recv_datagram())
            .await
            .expect("no datagram through the JS relay within WAIT")
            .unwrap();
        assert!(datagram.data == *data, "the datagram changed on the way");
        assert_eq!(
            (datagram.from.id(), datagram.from.port),
            (a.peer().id(), 4100)
        );
        assert_eq!(datagram.path_len, 2, "a -> JS relay -> b");
    }
    assert_eq!(b.stats().malformed, 0);
    a.close().await.unwrap();
    b.close().await.unwrap();
    relay.destroy().await;
}

#[tokio::test]
async fn rust_sockets_through_a_js_relay() {
    if js_available() {
        through_a_js_relay().await;
    }
}
