//! `socket_relay`: datagram throughput between two Rust [`Socket`]s linked only to a relay
//! peer (A -> R -> B over loopback WebSockets, all in this process), for several datagram
//! sizes. A keeps at most `window` datagrams in flight (B's count wakes it), so the bounded
//! queues never overflow; any loss is reported.
//!
//! ```text
//! cargo bench -p peer-relay --bench socket_relay
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peer_relay::{Config, LinkSelection, Options, PeerRelay, Socket};
use tokio::sync::Notify;

/// No progress for this long: the datagrams in flight are lost.
const IDLE: Duration = Duration::from_secs(2);

fn chain_config() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

/// One run: `count` datagrams of `size` bytes; returns (delivered, elapsed).
async fn run(size: usize, count: u64, window: u64) -> (u64, Duration) {
    let relay = PeerRelay::new(Options {
        port: Some(0),
        config: chain_config(),
        ..Options::default()
    })
    .await
    .unwrap();
    let joining = || Options {
        bootstrap: vec![relay.url().unwrap().to_owned()],
        config: chain_config(),
        ..Options::default()
    };
    let a = Socket::new(joining()).await.unwrap();
    let b = Arc::new(Socket::new(joining()).await.unwrap());
    a.bind(1).await.unwrap();
    b.bind(2).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let reader = tokio::spawn({
        let (b, received, progress) =
            (Arc::clone(&b), Arc::clone(&received), Arc::clone(&progress));
        async move {
            let mut buf = vec![0u8; size.max(1)];
            while b.recv_from(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
                progress.notify_one();
            }
        }
    });
    let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    let target = (b.peer().id(), 2);
    let start = Instant::now();
    let mut idle = Duration::ZERO;
    for sent in 0..count {
        while sent - received.load(Ordering::Relaxed) >= window {
            // A lost datagram would stall the window: give up on it after a while.
            if tokio::time::timeout(IDLE, progress.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        a.send_to(&data, target).await.unwrap();
    }
    while received.load(Ordering::Relaxed) < count {
        if tokio::time::timeout(IDLE, progress.notified())
            .await
            .is_err()
        {
            idle = IDLE; // the rest is lost; this wait is not part of the run
            break;
        }
    }
    let delivered = received.load(Ordering::Relaxed);
    let elapsed = start.elapsed().saturating_sub(idle);
    a.close().await.unwrap();
    b.close().await.unwrap();
    reader.await.unwrap();
    relay.destroy().await;
    (delivered, elapsed)
}

#[tokio::main]
async fn main() {
    // `-- SIZE COUNT WINDOW` runs one case (for profiling); `cargo bench` itself passes
    // `--bench`, which is skipped.
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("SIZE COUNT WINDOW are numbers"))
        .collect();
    let cases = match args[..] {
        [size, count, window] => vec![(size, count as u64, window as u64)],
        [] => vec![(64, 50_000, 1024), (1024, 20_000, 512), (60_000, 500, 8)],
        _ => panic!("usage: socket_relay [SIZE COUNT WINDOW]"),
    };
    println!("| datagram | sent | delivered | datagrams/s | datagram MiB/s |");
    println!("|---|---|---|---|---|");
    for (size, count, window) in cases {
        let mut best: Option<(u64, Duration)> = None;
        for _ in 0..3 {
            let (delivered, elapsed) = run(size, count, window).await;
            let rate = delivered as f64 / elapsed.as_secs_f64();
            if best.is_none_or(|(d, e)| rate > d as f64 / e.as_secs_f64()) {
                best = Some((delivered, elapsed));
            }
        }
        let (delivered, elapsed) = best.unwrap();
        let rate = delivered as f64 / elapsed.as_secs_f64();
        println!(
            "| {size} B | {count} | {delivered} | {rate:.0} | {:.1} |",
            rate * size as f64 / (1 << 20) as f64
        );
    }
}
