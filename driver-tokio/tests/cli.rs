//! The `peer-relay` binary: its `--json` line contract (spawned, driven over stdin, read from
//! stdout) and its human mode.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_peer-relay");

/// A running `peer-relay --json`, killed when dropped (a failing test leaves nothing behind).
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    id: String,
    url: Value,
}

impl Node {
    async fn start(args: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            // WebRTC is tested in a private network namespace (`tests/`): WebSockets here.
            .args(["--json", "--no-webrtc"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn peer-relay");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = Node {
            child,
            stdin,
            stdout,
            id: String::new(),
            url: Value::Null,
        };
        let ready = node.next_line().await;
        assert_eq!(ready["event"], "ready", "{ready}");
        assert_eq!(ready.as_object().unwrap().len(), 3, "{ready}");
        node.id = ready["id"].as_str().unwrap().to_owned();
        assert!(
            node.id.len() == 40
                && node
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{ready}"
        );
        node.url = ready["url"].clone();
        node
    }

    fn url(&self) -> &str {
        self.url.as_str().expect("runs a server")
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a line within the wait")
            .expect("stdout readable")
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Reads lines until one matches, returning it.
    async fn expect(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.next_line().await;
            if wanted(&line) {
                return line;
            }
        }
    }

    async fn expect_event(&mut self, event: &str, key: &str, id: &str) -> Value {
        self.expect(|l| l["event"] == event && l[key] == id).await
    }

    async fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(command.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for the process to exit by itself and returns its status code.
    async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits within the wait")
            .unwrap();
        status.code().expect("exited, not killed")
    }
}

async fn linked_pair() -> (Node, Node) {
    let mut a = Node::start(&["--port", "0"]).await;
    let mut b = Node::start(&["--bootstrap", a.url()]).await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let peer = a.expect_event("peer", "id", &b_id).await;
    assert_eq!(
        peer,
        json!({"event": "peer", "id": b_id, "transport": "websocket"})
    );
    b.expect_event("peer", "id", &a_id).await;
    (a, b)
}

#[tokio::test]
async fn ready_line_then_destroy_exits_zero() {
    let mut a = Node::start(&["--port", "0"]).await;
    assert!(a.url().starts_with("ws://127.0.0.1:"), "{}", a.url);
    let port: u16 = a.url().rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    a.command(r#"{"cmd":"destroy"}"#).await;
    assert_eq!(a.exit_code().await, 0);
    // Without a port there is no server and the url is null.
    let mut client = Node::start(&[]).await;
    assert_eq!(client.url, Value::Null);
    client.command(r#"{"cmd":"destroy"}"#).await;
    assert_eq!(client.exit_code().await, 0);
}

#[tokio::test]
async fn link_and_messages_both_ways() {
    let (mut a, mut b) = linked_pair().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let data = json!({"n": [1, 2.5, null, true], "s": "h\u{e9}llo \"world\"\n"});
    b.command(&json!({"cmd": "send", "to": a_id, "data": data}).to_string())
        .await;
    a.command(&json!({"cmd": "send", "to": b_id, "data": null}).to_string())
        .await;
    let got = a.expect_event("message", "from", &b_id).await;
    assert_eq!(
        got,
        json!({"event": "message", "from": b_id, "data": data, "path_len": 1})
    );
    let got = b.expect_event("message", "from", &a_id).await;
    assert_eq!(
        got,
        json!({"event": "message", "from": a_id, "data": null, "path_len": 1})
    );
}

#[tokio::test]
async fn original_positional_form_and_disconnect() {
    let mut a = Node::start(&["0"]).await;
    let mut b = Node::start(&["0", a.url()]).await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.expect_event("peer", "id", &b_id).await;
    b.expect_event("peer", "id", &a_id).await;
    b.command(&json!({"cmd": "disconnect", "id": a_id}).to_string())
        .await;
    b.expect_event("peer-removed", "id", &a_id).await;
    a.expect_event("peer-removed", "id", &b_id).await;
    // Having lost every link, b dials its bootstrap url again.
    b.expect_event("peer", "id", &a_id).await;
    a.expect_event("peer", "id", &b_id).await;
}

#[tokio::test]
async fn malformed_lines_give_errors_and_the_node_keeps_running() {
    let (mut a, mut b) = linked_pair().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let bad = [
        "not json",
        "[1,2]",
        r#"{"cmd":"fly"}"#,
        r#"{"nocmd":1}"#,
        r#"{"cmd":"send","to":"xyz","data":1}"#,
        r#"{"cmd":"send","data":1}"#,
        &format!(r#"{{"cmd":"send","to":"{a_id}"}}"#),
        r#"{"cmd":"connect","id":42}"#,
        r#"{"cmd":"disconnect","id":"00000000000000000000000000000000000000ff"}"#,
        &format!(r#"{{"cmd":"send","to":"{b_id}","data":"to myself"}}"#),
        r#"{"cmd":"send","to":"#,
    ];
    for line in bad {
        b.command(line).await;
        let error = b.next_line().await;
        assert_eq!(error["event"], "error", "{line} -> {error}");
        assert_eq!(error.as_object().unwrap().len(), 2, "{error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // Blank lines are not commands and say nothing; invalid UTF-8 is a malformed line.
    b.stdin
        .as_mut()
        .unwrap()
        .write_all(b"\n  \n\xff\xfe\n")
        .await
        .unwrap();
    let error = b.next_line().await;
    assert_eq!(error["event"], "error", "{error}");
    // Still running and linked.
    b.command(&json!({"cmd": "send", "to": a_id, "data": "still here"}).to_string())
        .await;
    let got = a.expect_event("message", "from", &b_id).await;
    assert_eq!(got["data"], "still here");
}

#[tokio::test]
async fn eof_on_stdin_closes_everything_and_exits_zero() {
    let (mut a, mut b) = linked_pair().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    drop(b.stdin.take());
    // b reports its link going down on the way out, then exits cleanly.
    b.expect_event("peer-removed", "id", &a_id).await;
    assert_eq!(b.exit_code().await, 0);
    a.expect_event("peer-removed", "id", &b_id).await;
    a.command(r#"{"cmd":"destroy"}"#).await;
    assert_eq!(a.exit_code().await, 0);
}

#[tokio::test]
async fn a_taken_port_is_an_error_event_and_a_failure_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(BIN)
        .args(["--json", "--no-webrtc", "--port", &port])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["event"], "error", "{line}");
}

#[tokio::test]
async fn help_documents_the_flags_and_the_json_schema() {
    let output = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--port",
        "--bootstrap",
        "--advertise",
        "--json",
        "[PORT] [URL]...",
        r#"{"cmd":"send","to":"<hex>","data":<JSON>}"#,
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}

#[tokio::test]
async fn human_mode_prints_id_url_and_peers() {
    let mut hub = Node::start(&["--port", "0"]).await;
    let mut human = Command::new(BIN)
        .args(["--no-webrtc", "--port", "0", "--bootstrap", hub.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(human.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, "peer-relay node");
    let id_line = next().await;
    let id = id_line.trim().strip_prefix("id").unwrap().trim().to_owned();
    assert_eq!(id.len(), 40);
    assert!(next().await.trim().starts_with("url  ws://127.0.0.1:"));
    assert_eq!(next().await, format!("peer joined  {} (websocket)", hub.id));
    hub.expect_event("peer", "id", &id).await;
    hub.command(r#"{"cmd":"destroy"}"#).await;
    assert_eq!(next().await, format!("peer left    {}", hub.id));
}

#[tokio::test]
async fn logs_go_to_stderr_at_the_rust_log_level() {
    let run = |level: &'static str| async move {
        let mut child = Command::new(BIN)
            .args(["--json", "--no-webrtc", "--port", "0"])
            .env("RUST_LOG", level)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // EOF at once: start, then shut down.
        drop(child.stdin.take());
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success());
        // stdout holds nothing but the JSON lines.
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let _: Value = serde_json::from_str(line).unwrap();
        }
        String::from_utf8(output.stderr).unwrap()
    };
    assert!(run("info").await.contains("node started"));
    assert!(!run("warn").await.contains("node started"));
}
