//! The JS original's own end-to-end scenarios (node_modules/peer-relay/test.js), run with
//! every mix of Rust and JS peers: both orders for the pairs, all eight mixes for the three
//! peer scenarios. With `CI=true` a missing `node` or npm install fails these tests.

use peer_relay_interop::{Kind, Peer, Spec, js_available};
use serde_json::json;

use Kind::{Js, Rust};

fn server() -> Spec {
    Spec {
        server: true,
        ..Spec::default()
    }
}

fn joining(hub: &Peer) -> Spec {
    Spec {
        server: true,
        bootstrap: vec![hub.url().to_owned()],
        ..Spec::default()
    }
}

/// 'two peers connect': c2 bootstraps through c1; both report the link.
async fn two_peers_connect(first: Kind, second: Kind) {
    let mut c1 = Peer::start(first, &server()).await;
    let mut c2 = Peer::start(second, &joining(&c1)).await;
    c1.expect_peer(c2.id).await;
    c2.expect_peer(c1.id).await;
    c2.destroy().await;
    c1.destroy().await;
}

/// 'direct message': once linked, each sends to the other.
async fn direct_message(first: Kind, second: Kind) {
    let mut c1 = Peer::start(first, &server()).await;
    let mut c2 = Peer::start(second, &joining(&c1)).await;
    c1.expect_peer(c2.id).await;
    c2.expect_peer(c1.id).await;
    c1.send(c2.id, &json!("TEST1")).await;
    c2.send(c1.id, &json!({"test": "TEST2", "n": [1, 2.5, null]}))
        .await;
    assert_eq!(c2.expect_message(c1.id).await, json!("TEST1"));
    assert_eq!(
        c1.expect_message(c2.id).await,
        json!({"test": "TEST2", "n": [1, 2.5, null]})
    );
    c2.destroy().await;
    c1.destroy().await;
}

/// 'send message before connect': both send before any link exists.
async fn send_before_connect(first: Kind, second: Kind) {
    let mut c1 = Peer::start(first, &server()).await;
    let mut c2 = Peer::start(second, &joining(&c1)).await;
    c2.send(c1.id, &json!("TEST2")).await;
    c1.send(c2.id, &json!("TEST1")).await;
    assert_eq!(c1.expect_message(c2.id).await, json!("TEST2"));
    assert_eq!(c2.expect_message(c1.id).await, json!("TEST1"));
    c2.destroy().await;
    c1.destroy().await;
}

/// 'relay message': c1 <-> c2 <-> c3 with no direct c1 - c3 link; messages both ways pass
/// through c2. Every link is awaited before sending (a JS relay drops a message for a target
/// it has no link to yet).
async fn relay(k1: Kind, k2: Kind, k3: Kind) {
    let line = |bootstrap: Vec<String>| Spec {
        server: true,
        bootstrap,
        no_populate: true,
        webrtc: false,
        config: None,
    };
    let mut c2 = Peer::start(k2, &line(vec![])).await;
    let mut c3 = Peer::start(k3, &line(vec![c2.url().to_owned()])).await;
    c2.expect_peer(c3.id).await;
    c3.expect_peer(c2.id).await;
    let mut c1 = Peer::start(k1, &line(vec![c2.url().to_owned()])).await;
    c2.expect_peer(c1.id).await;
    c1.expect_peer(c2.id).await;

    c1.send(c3.id, &json!({"test": "relay", "n": 1})).await;
    assert_eq!(
        c3.expect_message(c1.id).await,
        json!({"test": "relay", "n": 1})
    );
    c3.send(c1.id, &json!("TEST back")).await;
    assert_eq!(c1.expect_message(c3.id).await, json!("TEST back"));
    c1.destroy().await;
    c3.destroy().await;
    c2.destroy().await;
}

/// 'clients automatically populate': c1 and c3 join through c2, find each other and link;
/// with the c2 link dropped, c1's message reaches c3 over the link they made.
async fn populate(k1: Kind, k2: Kind, k3: Kind) {
    let c2 = Peer::start(k2, &server()).await;
    let mut c1 = Peer::start(k1, &joining(&c2)).await;
    let mut c3 = Peer::start(k3, &joining(&c2)).await;
    c1.expect_peer(c3.id).await;
    c3.expect_peer(c1.id).await;
    c1.disconnect(c2.id).await;
    c1.expect_removed(c2.id).await;
    c1.send(c3.id, &json!("TEST")).await;
    assert_eq!(c3.expect_message(c1.id).await, json!("TEST"));
    c1.destroy().await;
    c3.destroy().await;
    c2.destroy().await;
}

macro_rules! pairs {
    ($scenario:ident: $($name:ident = ($a:expr, $b:expr)),* $(,)?) => {
        mod $scenario {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if js_available() {
                        super::$scenario($a, $b).await;
                    }
                }
            )*
        }
    };
}

macro_rules! triples {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;
            triples!(@each $scenario:
                rust_rust_rust = (Rust, Rust, Rust),
                rust_rust_js = (Rust, Rust, Js),
                rust_js_rust = (Rust, Js, Rust),
                rust_js_js = (Rust, Js, Js),
                js_rust_rust = (Js, Rust, Rust),
                js_rust_js = (Js, Rust, Js),
                js_js_rust = (Js, Js, Rust),
                js_js_js = (Js, Js, Js),
            );
        }
    };
    (@each $scenario:ident: $($name:ident = ($a:expr, $b:expr, $c:expr)),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if js_available() {
                    super::$scenario($a, $b, $c).await;
                }
            }
        )*
    };
}

pairs!(two_peers_connect:
    rust_serves_rust = (Rust, Rust),
    rust_serves_js = (Rust, Js),
    js_serves_rust = (Js, Rust),
    js_serves_js = (Js, Js),
);

pairs!(direct_message:
    rust_serves_rust = (Rust, Rust),
    rust_serves_js = (Rust, Js),
    js_serves_rust = (Js, Rust),
    js_serves_js = (Js, Js),
);

pairs!(send_before_connect:
    rust_serves_rust = (Rust, Rust),
    rust_serves_js = (Rust, Js),
    js_serves_rust = (Js, Rust),
    js_serves_js = (Js, Js),
);

triples!(relay);
triples!(populate);
