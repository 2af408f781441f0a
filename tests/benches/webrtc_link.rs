//! WebRTC link benchmark, run in a private network namespace (the binary re-runs itself under
//! `unshare -n`, as root, like the WebRTC tests):
//!
//! - connect: two Rust peers without servers, joined through a third (ws) peer; time from
//!   `connect(id)` to the `Peer` event over WebRTC on loopback, `--connects` fresh pairs
//!   (default 20), reported as median, min and max;
//! - throughput: `--messages` small `user` messages (about 64 bytes of data) from A to B over
//!   one direct link, WebRTC and then WebSocket, at most `--window` in flight (A waits for
//!   B's count), reported as messages/s from A's first send to B's last receipt.
//!
//! ```text
//! cargo bench -p peer-relay-interop --bench webrtc_link [-- --connects N --messages N
//!     --window W]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peer_relay::{Config, Event, LinkSelection, Options, PeerRelay, Transport};
use peer_relay_interop::netns::{reexec_inside, runtime};
use serde_json::json;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// How often B's count wakes A.
const NOTIFY_EVERY: u64 = 256;

struct Settings {
    connects: usize,
    messages: u64,
    window: u64,
}

fn settings(args: &[String]) -> Settings {
    let mut settings = Settings {
        connects: 20,
        messages: 100_000,
        window: 2_048,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--connects" => settings.connects = value() as usize,
            "--messages" => settings.messages = value(),
            "--window" => settings.window = value(),
            // What `cargo bench` adds.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    settings
}

fn no_populate() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn wait_link(events: &mut peer_relay::Events, peer: &PeerRelay) -> Transport {
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let Event::Peer(id, transport) = event {
                if id == peer.id() {
                    return transport;
                }
            }
            if let Event::ConnectFailed { .. } | Event::WebRtcFailed { .. } = event {
                panic!("{event:?}");
            }
        }
        panic!("events ended")
    })
    .await
    .expect("link within the wait")
}

/// Two serverless peers joined through `hub`, each linked to it.
async fn pair(hub: &PeerRelay) -> (PeerRelay, PeerRelay) {
    let url = hub.url().unwrap().to_owned();
    let start = || {
        PeerRelay::new(Options {
            bootstrap: vec![url.clone()],
            config: no_populate(),
            ..Options::default()
        })
    };
    let mut hub_events = hub.events();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    let (mut ea, mut eb) = (a.events(), b.events());
    wait_link(&mut ea, hub).await;
    wait_link(&mut eb, hub).await;
    // The hub must know both links too, or the relayed handshake may find no route.
    let mut missing = vec![a.id(), b.id()];
    tokio::time::timeout(WAIT, async {
        while !missing.is_empty() {
            if let Some(Event::Peer(id, _)) = hub_events.next().await {
                missing.retain(|m| *m != id);
            }
        }
    })
    .await
    .expect("hub links within the wait");
    (a, b)
}

async fn connect_times(count: usize) -> Vec<Duration> {
    let hub = PeerRelay::new(Options {
        port: Some(0),
        ..Options::default()
    })
    .await
    .unwrap();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let (a, b) = pair(&hub).await;
        let mut ea = a.events();
        let started = Instant::now();
        a.connect(b.id()).await.unwrap();
        let transport = wait_link(&mut ea, &b).await;
        times.push(started.elapsed());
        assert_eq!(transport, Transport::WebRtc);
        a.destroy().await;
        b.destroy().await;
    }
    hub.destroy().await;
    times.sort();
    times
}

/// Messages/s from `a` to `b` over their direct link.
async fn throughput(a: &PeerRelay, b: &PeerRelay, messages: u64, window: u64) -> (f64, u64) {
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut eb = b.events();
    let counter = {
        let (received, progress) = (Arc::clone(&received), Arc::clone(&progress));
        tokio::spawn(async move {
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_secs(3), eb.next()).await
            {
                if let Event::Message { .. } = event {
                    let n = received.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % NOTIFY_EVERY == 0 {
                        progress.notify_one();
                    }
                    if n == messages {
                        break;
                    }
                }
            }
            progress.notify_one();
        })
    };
    let started = Instant::now();
    for seq in 0..messages {
        while seq - received.load(Ordering::Relaxed).min(seq) >= window {
            let _ = tokio::time::timeout(Duration::from_millis(50), progress.notified()).await;
        }
        a.send(b.id(), &json!({"seq": seq, "pad": PAD}))
            .await
            .unwrap();
    }
    counter.await.unwrap();
    let got = received.load(Ordering::Relaxed);
    (got as f64 / started.elapsed().as_secs_f64(), messages - got)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !reexec_inside(&args) {
        return;
    }
    let settings = settings(&args);
    runtime().block_on(async {
        let times = connect_times(settings.connects).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "connect -> peer event over WebRTC ({} pairs): median {:.0} ms, min {:.0} ms, max {:.0} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );

        let hub = PeerRelay::new(Options {
            port: Some(0),
            ..Options::default()
        })
        .await
        .unwrap();
        let (a, b) = pair(&hub).await;
        let mut ea = a.events();
        a.connect(b.id()).await.unwrap();
        assert_eq!(wait_link(&mut ea, &b).await, Transport::WebRtc);
        let (rate, lost) = throughput(&a, &b, settings.messages, settings.window).await;
        println!(
            "throughput over one WebRTC link: {rate:.0} msg/s ({} messages, window {}, {lost} lost)",
            settings.messages, settings.window
        );
        for relay in [a, b, hub] {
            relay.destroy().await;
        }

        let a = PeerRelay::new(Options {
            port: Some(0),
            config: no_populate(),
            webrtc: false,
            ..Options::default()
        })
        .await
        .unwrap();
        let b = PeerRelay::new(Options {
            bootstrap: vec![a.url().unwrap().to_owned()],
            config: no_populate(),
            webrtc: false,
            ..Options::default()
        })
        .await
        .unwrap();
        let mut eb = b.events();
        assert_eq!(wait_link(&mut eb, &a).await, Transport::WebSocket);
        drop(eb);
        let (rate, lost) = throughput(&b, &a, settings.messages, settings.window).await;
        println!(
            "throughput over one WebSocket link: {rate:.0} msg/s ({} messages, window {}, {lost} lost)",
            settings.messages, settings.window
        );
        a.destroy().await;
        b.destroy().await;
    });
}
