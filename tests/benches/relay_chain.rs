//! Relay throughput over loopback WebSockets: a chain A -> B -> C (A not linked to C)
//! delivering N small `user` messages, measured side by side for
//!
//! - rust:    three `PeerRelay` nodes in this process;
//! - js:      three processes of the JS original (`tests/js/peer.js` and `tests/js/bench.js`);
//! - ceiling: a plain tokio-tungstenite forwarder with no protocol: B passes every text frame
//!   from A to C untouched, and C only counts them.
//!
//! ```text
//! cargo bench -p peer-relay-interop --bench relay_chain [-- --messages N --js-messages N
//!     --window W --rounds R --only rust|js|ceiling]
//! ```
//!
//! The Rust chain and the ceiling keep at most `window` messages in flight (A waits for C's
//! count), so they measure sustained throughput without overrunning the bounded queues; the JS
//! chain sends open loop, which is its natural mode (its queues are unbounded). Each run
//! reports messages/s from A's first send to C's last receipt, the loss, and the CPU time
//! (user + system, all three peers) per delivered message, which other load on the machine
//! hardly affects.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use peer_relay::{Config, Event, LinkSelection, Options, PeerId, PeerRelay};
use peer_relay_interop::js_dir;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A chain that received nothing new for this long is done (the rest is lost).
const IDLE: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(15);
/// The padding of each message's data: `{"seq":N,"pad":"xxx..."}` is about 64 bytes.
/// How often C's count wakes A; far below any useful window.
const NOTIFY_EVERY: u64 = 256;
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

#[derive(Debug, Clone)]
struct Settings {
    messages: u64,
    js_messages: u64,
    window: u64,
    rounds: usize,
    only: Option<String>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        messages: 200_000,
        js_messages: 20_000,
        window: 4_096,
        rounds: 3,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--messages" => settings.messages = value().parse().expect("--messages N"),
            "--js-messages" => settings.js_messages = value().parse().expect("--js-messages N"),
            "--window" => settings.window = value().parse().expect("--window W"),
            "--rounds" => settings.rounds = value().parse().expect("--rounds R"),
            "--only" => settings.only = Some(value()),
            // `cargo bench` passes `--bench`; anything else is cargo's business too.
            _ => {}
        }
    }
    settings
}

/// A message's data, as an application would send it.
#[derive(serde::Serialize)]
struct Data {
    seq: u64,
    pad: &'static str,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    sent: u64,
    delivered: u64,
    duplicates: u64,
    seconds: f64,
    /// CPU time (user + system, all threads or processes of the chain) for the run.
    cpu_seconds: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    fn loss(&self) -> f64 {
        1.0 - self.delivered as f64 / self.sent as f64
    }

    /// CPU microseconds per delivered message: unlike the rate, hardly affected by other
    /// load on the machine.
    fn cpu_per_message(&self) -> f64 {
        1e6 * self.cpu_seconds / self.delivered.max(1) as f64
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (Linux; clock
/// ticks of 1/100 s, the kernel's USER_HZ everywhere in practice).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// C's count, shared with A so that A keeps at most `window` messages in flight.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
    advanced: Notify,
}

impl Progress {
    /// Records C's count; wakes A only every `NOTIFY_EVERY` messages (or at the end), so the
    /// measurement does not pay a cross-thread wake-up per message.
    fn advance(&self, delivered: u64, total: u64) {
        self.delivered.store(delivered, Ordering::Release);
        if delivered % NOTIFY_EVERY == 0 || delivered == total {
            self.advanced.notify_one();
        }
    }

    async fn wait_below(&self, sent: u64, window: u64) {
        while sent.saturating_sub(self.delivered.load(Ordering::Acquire)) >= window {
            // A lost message would stall the window forever: give up after IDLE.
            if tokio::time::timeout(IDLE, self.advanced.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

// ---- (a) Rust peers -----------------------------------------------------------------------

async fn expect_peer(events: &mut peer_relay::Events, peer: PeerId) {
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if matches!(event, Event::Peer(id, _) if id == peer) {
                return;
            }
        }
        panic!("events ended");
    })
    .await
    .expect("link within the wait");
}

async fn rust_chain(messages: u64, window: u64) -> Outcome {
    // A chain stays a chain: no links beyond the first, no refresh.
    let line = |bootstrap: Vec<String>| Options {
        port: Some(0),
        bootstrap,
        config: Config {
            link_selection: LinkSelection::NearestToSelf,
            target_links: 1,
            refresh_interval: None,
            ..Config::default()
        },
        webrtc: false,
        ..Options::default()
    };
    let b = PeerRelay::new(line(vec![])).await.unwrap();
    let mut b_events = b.events();
    let b_url = b.url().unwrap().to_owned();
    let c = PeerRelay::new(line(vec![b_url.clone()])).await.unwrap();
    let mut c_events = c.events();
    expect_peer(&mut b_events, c.id()).await;
    expect_peer(&mut c_events, b.id()).await;
    let a = PeerRelay::new(line(vec![b_url])).await.unwrap();
    expect_peer(&mut a.events(), b.id()).await;
    expect_peer(&mut b_events, a.id()).await;

    let progress = Arc::new(Progress::default());
    let sink = {
        let progress = Arc::clone(&progress);
        let from = a.id();
        tokio::spawn(async move {
            let mut seen = vec![false; messages as usize];
            let (mut delivered, mut duplicates) = (0, 0);
            let mut last = Instant::now();
            while delivered < messages {
                let Ok(Some(event)) = tokio::time::timeout(IDLE, c_events.next()).await else {
                    break;
                };
                let Event::Message { from: f, data, .. } = event else {
                    continue;
                };
                let Some(seq) = data["seq"].as_u64().filter(|_| f == from) else {
                    continue;
                };
                last = Instant::now();
                if std::mem::replace(&mut seen[seq as usize], true) {
                    duplicates += 1;
                } else {
                    delivered += 1;
                    progress.advance(delivered, messages);
                }
            }
            (delivered, duplicates, last)
        })
    };
    let to = c.id();
    let cpu_before = cpu_seconds("self");
    let start = Instant::now();
    for seq in 0..messages {
        progress.wait_below(seq, window).await;
        a.send(to, &Data { seq, pad: PAD }).await.unwrap();
    }
    let (delivered, duplicates, last) = sink.await.unwrap();
    let cpu = cpu_seconds("self") - cpu_before;
    let stats = [a.stats().await.unwrap(), b.stats().await.unwrap()];
    if stats.iter().any(|s| s.driver.send_queue_drops > 0) {
        eprintln!(
            "  (rust: send queue drops {:?})",
            stats.map(|s| s.driver.send_queue_drops)
        );
    }
    for node in [a, b, c] {
        node.destroy().await;
    }
    Outcome {
        sent: messages,
        delivered,
        duplicates,
        seconds: last.duration_since(start).as_secs_f64(),
        cpu_seconds: cpu,
    }
}

// ---- (c) the ceiling: a protocol-free forwarder -------------------------------------------

/// The frame A sends: the size and shape of a real first-hop `user` frame.
fn ceiling_frame() -> Utf8Bytes {
    let id = "aa26b030a144fa86a1a884edb33ac39ce52ddce3";
    json!({
        "to": id, "from": id, "path": [id], "nonce": "394687779752301",
        "data": {"type": "user", "data": {"seq": 123_456, "pad": PAD}},
    })
    .to_string()
    .into()
}

async fn ceiling_chain(messages: u64, window: u64) -> Outcome {
    let c_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c_url = format!("ws://{}", c_listener.local_addr().unwrap());
    let b_url = format!("ws://{}", b_listener.local_addr().unwrap());
    let progress = Arc::new(Progress::default());

    let sink = {
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let (tcp, _) = c_listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut delivered = 0;
            let mut last = Instant::now();
            while delivered < messages {
                match tokio::time::timeout(IDLE, ws.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => {
                        delivered += 1;
                        last = Instant::now();
                        progress.advance(delivered, messages);
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            (delivered, last)
        })
    };
    let forwarder = tokio::spawn(async move {
        let (tcp, _) = b_listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let from_a = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (to_c, _) = tokio_tungstenite::connect_async_with_config(c_url.as_str(), None, true)
            .await
            .unwrap();
        // Feeds while frames are ready, flushes when A's side has nothing more: the best a
        // plain forwarder does.
        let _ = from_a.forward(to_c).await;
    });
    let (a_ws, _) = tokio_tungstenite::connect_async_with_config(b_url.as_str(), None, true)
        .await
        .unwrap();
    // A's writer has the shape of the driver's connection writer: a queue drained in batches,
    // each batch fed then flushed.
    let (queue, mut frames) = mpsc::unbounded_channel::<Utf8Bytes>();
    let writer = tokio::spawn(async move {
        let mut a_ws = a_ws;
        let mut batch = Vec::with_capacity(256);
        while frames.recv_many(&mut batch, 256).await > 0 {
            for frame in batch.drain(..) {
                a_ws.feed(Message::Text(frame)).await.unwrap();
            }
            a_ws.flush().await.unwrap();
        }
        a_ws
    });
    let frame = ceiling_frame();
    let cpu_before = cpu_seconds("self");
    let start = Instant::now();
    for seq in 0..messages {
        progress.wait_below(seq, window).await;
        queue.send(frame.clone()).unwrap();
    }
    let (delivered, last) = sink.await.unwrap();
    let cpu = cpu_seconds("self") - cpu_before;
    drop(queue);
    drop(writer.await.unwrap());
    forwarder.abort();
    Outcome {
        sent: messages,
        delivered,
        duplicates: 0,
        seconds: last.duration_since(start).as_secs_f64(),
        cpu_seconds: cpu,
    }
}

// ---- (b) the JS original ------------------------------------------------------------------

/// A node.js child speaking JSON lines, killed when dropped.
struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Script {
    fn spawn(args: &[&str]) -> Script {
        let mut child = Command::new("node")
            .current_dir(js_dir())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Script {
            child,
            stdin,
            stdout,
        }
    }

    async fn expect(&mut self, event: &str, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                let line: Value = serde_json::from_str(&line).unwrap();
                if line["event"] == event {
                    return line;
                }
            }
            panic!("JS script ended while waiting for {event}");
        })
        .await
        .ok()
    }

    async fn must(&mut self, event: &str) -> Value {
        self.expect(event, WAIT)
            .await
            .unwrap_or_else(|| panic!("no {event} from the JS script"))
    }
}

impl Script {
    fn cpu_seconds(&self) -> f64 {
        self.child
            .id()
            .map_or(f64::NAN, |pid| cpu_seconds(&pid.to_string()))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn js_chain(messages: u64) -> Outcome {
    let count = messages.to_string();
    let mut b = Script::spawn(&["peer.js", "--port", "0", "--no-populate"]);
    let url = b.must("ready").await["url"].as_str().unwrap().to_owned();
    let mut c = Script::spawn(&["bench.js", "sink", "--bootstrap", &url, "--count", &count]);
    let c_id = c.must("ready").await["id"].as_str().unwrap().to_owned();
    c.must("peer").await;
    b.must("peer").await;
    let mut a = Script::spawn(&[
        "bench.js",
        "source",
        "--bootstrap",
        &url,
        "--count",
        &count,
        "--to",
        &c_id,
    ]);
    let scripts_cpu = |scripts: [&Script; 3]| scripts.iter().map(|s| s.cpu_seconds()).sum::<f64>();
    let started = a.must("started").await["at"].as_f64().unwrap();
    // The source's CPU before `started` is its start-up; counted for all three alike.
    let cpu_before = scripts_cpu([&a, &b, &c]);
    // Generous: the original's rate is a few thousand messages per second.
    let patience = Duration::from_secs(messages / 500 + 10);
    let done = match c.expect("done", patience).await {
        Some(done) => done,
        None => {
            c.stdin.write_all(b"report\n").await.unwrap();
            c.must("done").await
        }
    };
    let cpu = scripts_cpu([&a, &b, &c]) - cpu_before;
    let last = done["last"].as_f64().unwrap_or(started);
    Outcome {
        sent: messages,
        delivered: done["received"].as_u64().unwrap(),
        duplicates: done["duplicates"].as_u64().unwrap(),
        seconds: (last - started) / 1000.0,
        cpu_seconds: cpu,
    }
}

// ---- report -------------------------------------------------------------------------------

fn best(outcomes: &[Outcome]) -> Option<Outcome> {
    outcomes
        .iter()
        .copied()
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
}

fn print_row(name: &str, outcome: &Outcome, all: &[Outcome]) {
    let rates: Vec<String> = all.iter().map(|o| format!("{:.0}", o.rate())).collect();
    println!(
        "{name:<8} {:>9} {:>10} {:>7.3}% {:>6} {:>8.3} {:>12.0} {:>10.2}   (rounds: {})",
        outcome.sent,
        outcome.delivered,
        100.0 * outcome.loss(),
        outcome.duplicates,
        outcome.seconds,
        outcome.rate(),
        outcome.cpu_per_message(),
        rates.join(", ")
    );
}

fn main() {
    let settings = settings();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let wants = |name: &str| settings.only.as_deref().is_none_or(|only| only == name);
    let js = wants("js") && peer_relay_interop::js_available();
    runtime.block_on(async {
        let (mut rust, mut js_runs, mut ceiling) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=settings.rounds {
            eprintln!("round {round}/{}", settings.rounds);
            if wants("rust") {
                rust.push(rust_chain(settings.messages, settings.window).await);
            }
            if wants("ceiling") {
                ceiling.push(ceiling_chain(settings.messages, settings.window).await);
            }
            if js {
                js_runs.push(js_chain(settings.js_messages).await);
            }
        }
        println!(
            "relay chain A -> B -> C over loopback WebSockets, ~64-byte user data, best of {} rounds",
            settings.rounds
        );
        println!(
            "{:<8} {:>9} {:>10} {:>8} {:>6} {:>8} {:>12} {:>10}",
            "chain", "messages", "delivered", "loss", "dups", "seconds", "msgs/s", "cpu us/msg"
        );
        let (rust_best, js_best, ceiling_best) = (best(&rust), best(&js_runs), best(&ceiling));
        for (name, outcome, all) in [
            ("rust", rust_best, &rust),
            ("js", js_best, &js_runs),
            ("ceiling", ceiling_best, &ceiling),
        ] {
            if let Some(outcome) = outcome {
                print_row(name, &outcome, all);
            }
        }
        if let (Some(r), Some(j)) = (rust_best, js_best) {
            println!("rust / js      = {:.1}x   (goal >= 30x)", r.rate() / j.rate());
        }
        if let (Some(r), Some(c)) = (rust_best, ceiling_best) {
            println!(
                "rust / ceiling = {:.1}%   (goal >= 70%)",
                100.0 * r.rate() / c.rate()
            );
            println!(
                "cpu per message: rust {:.2} us, ceiling {:.2} us ({:.1}%)",
                r.cpu_per_message(),
                c.cpu_per_message(),
                100.0 * c.cpu_per_message() / r.cpu_per_message()
            );
        }
    });
}
