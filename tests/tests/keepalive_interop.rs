//! Keepalive against the JS original: a Rust peer pings a JS peer it has heard nothing from,
//! and the JS side answers by itself (the `ws` package pongs, in the server and the
//! client), so an idle link stays; a JS peer whose process is frozen (SIGSTOP: its sockets
//! open, its event loop stopped) answers nothing and is closed as `unresponsive`. Both
//! directions: the Rust peer serves and the JS peer joins, and the other way round. With
//! `CI=true` a missing `node` or npm install fails these tests.

use std::time::Duration;

use peer_relay::{CloseReason, Config, Stats};
use peer_relay_interop::{Kind, Peer, Spec, WAIT, js_available};

const INTERVAL: Duration = Duration::from_millis(400);

/// Keepalive in fractions of a second; discovery off, so the link is silent unless probed.
fn quick() -> Config {
    Config {
        keepalive_interval: Some(INTERVAL),
        keepalive_timeout: INTERVAL,
        refresh_interval: None,
        ..Config::default()
    }
}

fn unresponsive(stats: &Stats) -> u64 {
    stats.node.closed.get(CloseReason::Unresponsive)
}

async fn stats(rust: &Peer) -> Stats {
    rust.stats().await.expect("a Rust peer")
}

async fn idle_link_stays_and_a_frozen_js_peer_is_dropped(rust_serves: bool) {
    let rust_spec = |bootstrap: Vec<String>| Spec {
        server: rust_serves,
        bootstrap,
        config: Some(quick()),
        ..Spec::default()
    };
    let (mut rust, mut js) = if rust_serves {
        let rust = Peer::start(Kind::Rust, &rust_spec(vec![])).await;
        let js_spec = Spec {
            bootstrap: vec![rust.url().to_owned()],
            ..Spec::default()
        };
        let js = Peer::start(Kind::Js, &js_spec).await;
        (rust, js)
    } else {
        let js_spec = Spec {
            server: true,
            ..Spec::default()
        };
        let js = Peer::start(Kind::Js, &js_spec).await;
        let rust = Peer::start(Kind::Rust, &rust_spec(vec![js.url().to_owned()])).await;
        (rust, js)
    };
    rust.expect_peer(js.id).await;
    js.expect_peer(rust.id).await;
    // Ten intervals in which the JS peer sends nothing: only its pongs keep the link.
    tokio::time::sleep(INTERVAL * 10).await;
    let idle = stats(&rust).await;
    assert_eq!(idle.sizes.links, 1, "still linked: {idle:#?}");
    assert_eq!(unresponsive(&idle), 0);
    assert!(idle.node.keepalive_probes >= 3, "{idle:#?}");
    assert!(
        idle.node.frames_in <= 3,
        "the JS peer sent only its handshake and discovery: {idle:#?}"
    );
    js.freeze();
    rust.expect_removed(js.id).await;
    let after = stats(&rust).await;
    assert_eq!(unresponsive(&after), 1, "{after:#?}");
    assert!(WAIT > INTERVAL * 6, "the wait covers the keepalive window");
    js.thaw();
    js.destroy().await;
    rust.destroy().await;
}

#[tokio::test]
async fn rust_serves_js_pings_answered_then_frozen() {
    if js_available() {
        idle_link_stays_and_a_frozen_js_peer_is_dropped(true).await;
    }
}

#[tokio::test]
async fn js_serves_rust_pings_answered_then_frozen() {
    if js_available() {
        idle_link_stays_and_a_frozen_js_peer_is_dropped(false).await;
    }
}
