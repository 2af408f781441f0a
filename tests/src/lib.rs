//! Cross-crate and interoperability tests of peer-relay: Rust peers against the JS original.
//!
//! [`Peer`] runs either kind behind one interface: a Rust peer is an in-process
//! [`PeerRelay`]; a JS peer is `node js/peer.js`, the original `peer-relay` 0.0.2 from npm
//! behind the same JSON-lines contract as the `peer-relay --json` binary. Tests written
//! against [`Peer`] run unchanged with every mix of kinds.

pub mod netns;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use peer_relay::{Config, Event, Events, LinkSelection, Options, PeerId, PeerRelay};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Longest wait for any one expected event: a failing test fails here instead of hanging.
pub const WAIT: Duration = Duration::from_secs(15);

/// Which implementation a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This repository's `PeerRelay`, in process.
    Rust,
    /// The JS original in a `node` child process.
    Js,
    /// The JS original's browser bundle in a headless Chromium page (`js/browser.js`): no
    /// server, links over WebRTC. Needs [`browser_available`].
    Browser,
}

/// How to start a peer.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Run a WebSocket server (on a free port).
    pub server: bool,
    /// Urls to join through.
    pub bootstrap: Vec<String>,
    /// Whether discovered peers are linked automatically. Off, a chain stays a chain: Rust
    /// peers use the nearest-to-self strategy with one target link, JS peers get
    /// `--no-populate`.
    pub no_populate: bool,
    /// Link over WebRTC where the other side can: Rust peers keep `Options::webrtc` on, JS
    /// peers get `--wrtc` (`@roamhq/wrtc`). Off, links are WebSockets only. Tests with it on
    /// must run in a private network namespace ([`netns`]).
    pub webrtc: bool,
    /// Rust peers only: this config instead of the default (or `no_populate`'s).
    pub config: Option<Config>,
}

/// What a peer reports, whichever kind it is.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// A direct link formed, over this transport (`websocket` or `webrtc`).
    Peer(PeerId, String),
    /// A direct link closed.
    PeerRemoved(PeerId),
    /// A message arrived.
    Message {
        /// The sender.
        from: PeerId,
        /// Its data.
        data: Value,
        /// Peers it passed through, the sender included (1 = direct), where known.
        path_len: Option<usize>,
    },
    /// Anything reported as an error (refused commands, failed dials, a JS crash).
    Error(String),
}

/// A running peer of either kind. A JS peer's process is killed when this is dropped, so a
/// failing test leaves nothing behind.
pub struct Peer {
    /// Which implementation it runs.
    pub kind: Kind,
    /// Its id.
    pub id: PeerId,
    /// Its WebSocket url, if it runs a server.
    pub url: Option<String>,
    inner: Inner,
    /// Events an [`Peer::expect`] read past, oldest first, so a later `expect` still sees
    /// them: two links can come up in either order, and waiting for one must not lose the
    /// other.
    skipped: VecDeque<PeerEvent>,
}

/// How many skipped events a [`Peer`] keeps; older ones are dropped.
const SKIPPED_MAX: usize = 1024;

enum Inner {
    Rust { relay: PeerRelay, events: Events },
    Js(Box<JsProcess>),
}

struct JsProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// The directory with `package.json`, `peer.js` and (after `npm ci`) `node_modules`.
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether the JS side can run: `node` on PATH and `npm ci --prefix tests/js` done. Under
/// `CI=true` a missing piece is a failure (panic); elsewhere the caller skips, loudly.
pub fn js_available() -> bool {
    let problem = if std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
    {
        // Everything tests/js/package-lock.json pins (the WebRTC tests need the last two).
        ["peer-relay", "@roamhq/wrtc", "playwright-core"]
            .iter()
            .map(|name| {
                js_dir()
                    .join("node_modules")
                    .join(name)
                    .join("package.json")
            })
            .find(|package| !package.exists())
            .map(|package| {
                format!(
                    "{} is missing: run `npm ci --prefix tests/js`",
                    package.display()
                )
            })
    } else {
        Some("`node` is not on PATH".to_owned())
    };
    match problem {
        None => true,
        Some(problem) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("interop tests need the JS original under CI: {problem}")
        }
        Some(problem) => {
            // Written to the stderr handle itself: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPING an interop test: {problem} !!!\n"
            );
            false
        }
    }
}

/// Whether browser peers can run: the JS side ([`js_available`]) and Debian's Chromium at
/// `/usr/bin/chromium` (or `PEER_RELAY_CHROMIUM`). Under `CI=true` a missing piece fails.
pub fn browser_available() -> bool {
    if !js_available() {
        return false;
    }
    let chromium =
        std::env::var("PEER_RELAY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if std::path::Path::new(&chromium).exists() {
        return true;
    }
    netns::missing(
        "a browser test",
        &format!("Chromium at {chromium} (`apt-get install -y chromium`)"),
    )
}

impl Peer {
    /// Starts a peer and returns once it is listening (if it serves) and knows its id.
    pub async fn start(kind: Kind, spec: &Spec) -> Peer {
        match kind {
            Kind::Rust => Self::start_rust(spec).await,
            Kind::Js => Self::start_js(spec, "peer.js").await,
            Kind::Browser => Self::start_js(spec, "browser.js").await,
        }
    }

    async fn start_rust(spec: &Spec) -> Peer {
        let config = if let Some(config) = &spec.config {
            config.clone()
        } else if spec.no_populate {
            Config {
                link_selection: LinkSelection::NearestToSelf,
                target_links: 1,
                refresh_interval: None,
                ..Config::default()
            }
        } else {
            Config::default()
        };
        let relay = PeerRelay::new(Options {
            port: spec.server.then_some(0),
            bootstrap: spec.bootstrap.clone(),
            config,
            webrtc: spec.webrtc,
            ..Options::default()
        })
        .await
        .expect("Rust peer starts");
        let events = relay.events();
        Peer {
            kind: Kind::Rust,
            id: relay.id(),
            url: relay.url().map(str::to_owned),
            inner: Inner::Rust { relay, events },
            skipped: VecDeque::new(),
        }
    }

    async fn start_js(spec: &Spec, script: &str) -> Peer {
        let kind = if script == "peer.js" {
            Kind::Js
        } else {
            Kind::Browser
        };
        let mut command = Command::new("node");
        command.arg(js_dir().join(script));
        if spec.server {
            command.args(["--port", "0"]);
        }
        for url in &spec.bootstrap {
            command.args(["--bootstrap", url]);
        }
        if spec.no_populate {
            command.arg("--no-populate");
        }
        if spec.webrtc {
            command.arg("--wrtc");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node peer.js");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut process = JsProcess {
            child,
            stdin,
            stdout,
        };
        let ready = process.next_line().await.expect("JS peer prints ready");
        assert_eq!(ready["event"], "ready", "{ready}");
        let id = ready["id"].as_str().expect("id").parse().expect("hex id");
        let url = ready["url"].as_str().map(str::to_owned);
        Peer {
            kind,
            id,
            url,
            inner: Inner::Js(Box::new(process)),
            skipped: VecDeque::new(),
        }
    }

    /// The url, for peers that serve.
    pub fn url(&self) -> &str {
        self.url.as_deref().expect("this peer runs a server")
    }

    /// The next event, or `None` once the peer is gone.
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        match &mut self.inner {
            Inner::Rust { events, .. } => loop {
                match events.next().await? {
                    Event::Peer(id, transport) => {
                        return Some(PeerEvent::Peer(id, transport.to_string()));
                    }
                    Event::PeerRemoved(id) => return Some(PeerEvent::PeerRemoved(id)),
                    Event::Message {
                        from,
                        data,
                        path_len,
                    } => {
                        return Some(PeerEvent::Message {
                            from,
                            data,
                            path_len: Some(path_len),
                        });
                    }
                    Event::WebRtcFailed { peer, reason } => {
                        return Some(PeerEvent::Error(format!("webrtc {peer}: {reason:?}")));
                    }
                    Event::ConnectFailed { peer, reason } => {
                        return Some(PeerEvent::Error(format!("connect {peer}: {reason:?}")));
                    }
                    Event::BootstrapFailed { url, .. } => {
                        return Some(PeerEvent::Error(format!("bootstrap {url} failed")));
                    }
                    _ => continue,
                }
            },
            Inner::Js(process) => {
                let line = process.next_line().await?;
                let id = |key: &str| -> PeerId {
                    line[key]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("JS peer printed a bad id in {line}"))
                };
                Some(match line["event"].as_str() {
                    Some("peer") => PeerEvent::Peer(
                        id("id"),
                        line["transport"].as_str().unwrap_or("websocket").to_owned(),
                    ),
                    Some("peer-removed") => PeerEvent::PeerRemoved(id("id")),
                    Some("message") => PeerEvent::Message {
                        from: id("from"),
                        data: line["data"].clone(),
                        path_len: line["path_len"]
                            .as_u64()
                            .and_then(|n| usize::try_from(n).ok()),
                    },
                    Some("error") => PeerEvent::Error(line["message"].to_string()),
                    _ => panic!("JS peer printed an unknown line: {line}"),
                })
            }
        }
    }

    /// Waits (at most [`WAIT`]) for the first event `pick` accepts: the oldest skipped one,
    /// else the next new one. Events it reads past are kept for later calls.
    /// Panics on a JS crash report, a closed stream or the timeout.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&PeerEvent) -> Option<T>,
    ) -> T {
        let kind = self.kind;
        if let Some((index, found)) = self
            .skipped
            .iter()
            .enumerate()
            .find_map(|(index, event)| pick(event).map(|found| (index, found)))
        {
            self.skipped.remove(index);
            return found;
        }
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.next_event().await {
                if let PeerEvent::Error(message) = &event {
                    assert!(
                        !message.contains("uncaught exception"),
                        "{kind:?} peer crashed: {message}"
                    );
                }
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
                if let PeerEvent::PeerRemoved(gone) = &event {
                    // A link that already closed must not satisfy a later `expect_link`.
                    self.skipped
                        .retain(|e| !matches!(e, PeerEvent::Peer(id, _) if id == gone));
                }
                if self.skipped.len() == SKIPPED_MAX {
                    self.skipped.pop_front();
                }
                self.skipped.push_back(event);
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("{kind:?} peer's events ended while waiting for {what}"),
            Err(_) => panic!("{kind:?} peer: no {what} within {WAIT:?}"),
        }
    }

    /// Waits for a link to `peer`.
    pub async fn expect_peer(&mut self, peer: PeerId) {
        self.expect_link(peer).await;
    }

    /// Waits for a link to `peer` and returns its transport (`websocket` or `webrtc`).
    pub async fn expect_link(&mut self, peer: PeerId) -> String {
        let what = format!("peer {peer}");
        self.expect(&what, |e| match e {
            PeerEvent::Peer(id, transport) if *id == peer => Some(transport.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the link to `peer` to close.
    pub async fn expect_removed(&mut self, peer: PeerId) {
        let what = format!("peer-removed {peer}");
        self.expect(&what, |e| {
            (*e == PeerEvent::PeerRemoved(peer)).then_some(())
        })
        .await;
    }

    /// Waits for a message from `from` and returns its data.
    pub async fn expect_message(&mut self, from: PeerId) -> Value {
        self.expect_routed_message(from).await.0
    }

    /// Waits for a message from `from` and returns its data and path length.
    pub async fn expect_routed_message(&mut self, from: PeerId) -> (Value, Option<usize>) {
        let what = format!("message from {from}");
        self.expect(&what, |e| match e {
            PeerEvent::Message {
                from: f,
                data,
                path_len,
            } if *f == from => Some((data.clone(), *path_len)),
            _ => None,
        })
        .await
    }

    /// Freezes a JS peer's process (SIGSTOP): its sockets stay open, but it answers nothing,
    /// as a peer whose machine hung or went away without a close.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen JS peer's process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let Inner::Js(process) = &self.inner else {
            panic!("only a JS peer's process can be signalled");
        };
        let pid = process.child.id().expect("the JS peer runs");
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{name} {pid}")])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// The relay's counters, for a Rust peer.
    pub async fn stats(&self) -> Option<peer_relay::Stats> {
        match &self.inner {
            Inner::Rust { relay, .. } => Some(relay.stats().await.expect("stats")),
            Inner::Js(_) => None,
        }
    }

    /// Sends `data` to `to`.
    pub async fn send(&mut self, to: PeerId, data: &Value) {
        match &mut self.inner {
            Inner::Rust { relay, .. } => relay.send(to, data).await.expect("send"),
            Inner::Js(process) => {
                let line =
                    serde_json::json!({"cmd": "send", "to": to.to_hex().as_str(), "data": data});
                process.command(&line).await;
            }
        }
    }

    /// Asks for a direct link to `peer`.
    pub async fn connect(&mut self, peer: PeerId) {
        match &mut self.inner {
            Inner::Rust { relay, .. } => relay.connect(peer).await.expect("connect"),
            Inner::Js(process) => {
                let line = serde_json::json!({"cmd": "connect", "id": peer.to_hex().as_str()});
                process.command(&line).await;
            }
        }
    }

    /// Closes the direct link to `peer`.
    pub async fn disconnect(&mut self, peer: PeerId) {
        match &mut self.inner {
            Inner::Rust { relay, .. } => relay.disconnect(peer).await.expect("disconnect"),
            Inner::Js(process) => {
                let line = serde_json::json!({"cmd": "disconnect", "id": peer.to_hex().as_str()});
                process.command(&line).await;
            }
        }
    }

    /// Shuts the peer down and waits until it is gone (a JS peer must exit with status 0).
    pub async fn destroy(self) {
        match self.inner {
            Inner::Rust { relay, .. } => relay.destroy().await,
            Inner::Js(mut process) => {
                process
                    .command(&serde_json::json!({"cmd": "destroy"}))
                    .await;
                let status = tokio::time::timeout(WAIT, process.child.wait())
                    .await
                    .expect("JS peer exits after destroy")
                    .expect("wait for JS peer");
                assert!(status.success(), "JS peer exited with {status}");
            }
        }
    }
}

impl JsProcess {
    async fn next_line(&mut self) -> Option<Value> {
        let line = self.stdout.next_line().await.expect("read JS stdout")?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("JS printed non-JSON ({e}): {line}")),
        )
    }

    async fn command(&mut self, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .await
            .expect("write JS stdin");
        self.stdin.flush().await.expect("flush JS stdin");
    }
}
