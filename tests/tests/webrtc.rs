//! WebRTC links with their signaling relayed through the overlay, each test in its own private
//! network namespace (see `peer_relay_interop::netns`): two peers without a WebSocket server,
//! both joined through a third (ws) peer, link directly over a data channel, Rust with Rust
//! and Rust with the JS original (`@roamhq/wrtc` in Node). Failures fall back to WebSockets.

use std::time::Duration;

use peer_relay::{
    CloseReason, Config, ConnectFailure, Event, Events, LinkSelection, Options, PeerRelay,
};
use peer_relay_interop::netns::{inside, runtime};
use peer_relay_interop::{Kind, Peer, Spec, WAIT, browser_available, js_available};
use serde_json::json;

/// A config that links nothing by itself beyond the first link: links come from `connect`.
fn no_populate() -> Config {
    Config {
        link_selection: LinkSelection::NearestToSelf,
        target_links: 1,
        refresh_interval: None,
        ..Config::default()
    }
}

async fn hub() -> PeerRelay {
    PeerRelay::new(Options {
        port: Some(0),
        ..Options::default()
    })
    .await
    .expect("hub starts")
}

/// A peer without a server, joined through `hub`.
async fn serverless(hub: &PeerRelay, config: Config) -> PeerRelay {
    PeerRelay::new(Options {
        bootstrap: vec![hub.url().expect("hub serves").to_owned()],
        config,
        ..Options::default()
    })
    .await
    .expect("peer starts")
}

async fn next_matching<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("events ended while waiting for {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}"),
    }
}

/// Waits for the link to `peer` and returns its transport.
async fn link_to(events: &mut Events, peer: peer_relay::PeerId) -> peer_relay::Transport {
    next_matching(events, &format!("link to {peer}"), |e| match e {
        Event::Peer(id, transport) if *id == peer => Some(*transport),
        _ => None,
    })
    .await
}

/// Waits for a message from `from`; returns its data and path length.
async fn message_from(events: &mut Events, from: peer_relay::PeerId) -> (serde_json::Value, usize) {
    next_matching(events, &format!("message from {from}"), |e| match e {
        Event::Message {
            from: f,
            data,
            path_len,
        } if *f == from => Some((data.clone(), *path_len)),
        _ => None,
    })
    .await
}

/// Waits until `hub` reports links to all of `peers` (a peer's own link event can come
/// before the hub's, and a message relayed meanwhile would find no route).
async fn hub_links(events: &mut Events, peers: &[peer_relay::PeerId]) {
    let mut missing = peers.to_vec();
    next_matching(events, "the hub's links", |e| {
        if let Event::Peer(id, _) = e {
            missing.retain(|m| m != id);
        }
        missing.is_empty().then_some(())
    })
    .await;
}

/// Both directions over the link between `a` and `b` are direct (path length 1).
/// After a failed WebRTC attempt from `a` to `b`: they link over WebSocket (the url in
/// b's handshake-answer), exchange direct messages, and `a` counted one failure.
async fn fell_back_to_websocket(
    a: PeerRelay,
    mut ea: Events,
    b: PeerRelay,
    mut eb: Events,
    hub: PeerRelay,
) {
    assert_eq!(
        link_to(&mut ea, b.id()).await,
        peer_relay::Transport::WebSocket
    );
    direct_both_ways(&a, &mut ea, &b, &mut eb).await;
    assert_eq!(a.stats().await.unwrap().driver.webrtc_failed, 1);
    for relay in [a, b, hub] {
        relay.destroy().await;
    }
}

async fn direct_both_ways(a: &PeerRelay, ea: &mut Events, b: &PeerRelay, eb: &mut Events) {
    a.send(b.id(), &json!({"hello": "b"})).await.unwrap();
    assert_eq!(message_from(eb, a.id()).await, (json!({"hello": "b"}), 1));
    b.send(a.id(), &json!(["to", "a"])).await.unwrap();
    assert_eq!(message_from(ea, b.id()).await, (json!(["to", "a"]), 1));
}

/// Checks that after the link is up no stray session exists: exactly one connection per
/// linked peer (late candidates went to the open session) and no failed session.
async fn no_stray_sessions(relay: &PeerRelay, links: usize) {
    // Late candidates are trickled within a few hundred milliseconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = relay.stats().await.unwrap();
    assert_eq!(stats.driver.connections, links, "{stats:?}");
    assert_eq!(stats.driver.webrtc_failed, 0, "{stats:?}");
    // The namespace has a multicast route: mDNS resolution (needed for Chromium) is on.
    assert_eq!(stats.driver.webrtc_without_mdns, 0, "{stats:?}");
}

#[test]
fn rust_peers_link_over_webrtc_by_discovery() {
    if !inside("rust_peers_link_over_webrtc_by_discovery") {
        return;
    }
    runtime().block_on(async {
        let hub = hub().await;
        let a = serverless(&hub, Config::default()).await;
        let mut ea = a.events();
        assert_eq!(
            link_to(&mut ea, hub.id()).await,
            peer_relay::Transport::WebSocket
        );
        let b = serverless(&hub, Config::default()).await;
        let mut eb = b.events();
        // Discovery (findPeers through the hub) links a and b; neither has a server.
        assert_eq!(
            link_to(&mut eb, a.id()).await,
            peer_relay::Transport::WebRtc
        );
        assert_eq!(
            link_to(&mut ea, b.id()).await,
            peer_relay::Transport::WebRtc
        );
        direct_both_ways(&a, &mut ea, &b, &mut eb).await;
        no_stray_sessions(&a, 2).await;
        no_stray_sessions(&b, 2).await;
        for relay in [a, b, hub] {
            relay.destroy().await;
        }
    });
}

#[test]
fn rust_peers_link_over_webrtc_by_connect() {
    if !inside("rust_peers_link_over_webrtc_by_connect") {
        return;
    }
    runtime().block_on(async {
        let hub = hub().await;
        let mut eh = hub.events();
        let a = serverless(&hub, no_populate()).await;
        let b = serverless(&hub, no_populate()).await;
        let (mut ea, mut eb) = (a.events(), b.events());
        link_to(&mut ea, hub.id()).await;
        link_to(&mut eb, hub.id()).await;
        hub_links(&mut eh, &[a.id(), b.id()]).await;
        // Relayed through the hub first.
        a.send(b.id(), &"via hub").await.unwrap();
        assert_eq!(message_from(&mut eb, a.id()).await, (json!("via hub"), 2));
        a.connect(b.id()).await.unwrap();
        assert_eq!(
            link_to(&mut ea, b.id()).await,
            peer_relay::Transport::WebRtc
        );
        assert_eq!(
            link_to(&mut eb, a.id()).await,
            peer_relay::Transport::WebRtc
        );
        direct_both_ways(&a, &mut ea, &b, &mut eb).await;
        no_stray_sessions(&a, 2).await;
        no_stray_sessions(&b, 2).await;
        // Closing the data channel is seen on both sides.
        a.disconnect(b.id()).await.unwrap();
        next_matching(&mut eb, "link down", |e| {
            (*e == Event::PeerRemoved(a.id())).then_some(())
        })
        .await;
        for relay in [a, b, hub] {
            relay.destroy().await;
        }
    });
}

/// Keepalive over WebRTC: the node probes a silent link, and the session answers from its
/// ICE state (ICE checks the path every 2 s on its own). With a 0.4 s keepalive and nothing
/// sent, an unanswered probe would close the link within about a second.
#[test]
fn an_idle_webrtc_link_stays_through_keepalive_probes() {
    if !inside("an_idle_webrtc_link_stays_through_keepalive_probes") {
        return;
    }
    runtime().block_on(async {
        let interval = Duration::from_millis(400);
        let quick = Config {
            keepalive_interval: Some(interval),
            keepalive_timeout: interval,
            ..no_populate()
        };
        let hub = hub().await;
        let mut eh = hub.events();
        let a = serverless(&hub, quick.clone()).await;
        let b = serverless(&hub, quick).await;
        let (mut ea, mut eb) = (a.events(), b.events());
        link_to(&mut ea, hub.id()).await;
        link_to(&mut eb, hub.id()).await;
        hub_links(&mut eh, &[a.id(), b.id()]).await;
        a.connect(b.id()).await.unwrap();
        assert_eq!(
            link_to(&mut ea, b.id()).await,
            peer_relay::Transport::WebRtc
        );
        link_to(&mut eb, a.id()).await;
        tokio::time::sleep(interval * 10).await;
        for relay in [&a, &b] {
            let stats = relay.stats().await.unwrap();
            assert_eq!(stats.sizes.links, 2, "hub and peer: {stats:#?}");
            assert_eq!(stats.node.closed.get(CloseReason::Unresponsive), 0);
            assert!(stats.node.keepalive_probes >= 6, "{stats:#?}");
        }
        direct_both_ways(&a, &mut ea, &b, &mut eb).await;
        for relay in [a, b, hub] {
            relay.destroy().await;
        }
    });
}

#[test]
fn webrtc_timeout_falls_back_to_the_peers_websocket() {
    if !inside("webrtc_timeout_falls_back_to_the_peers_websocket") {
        return;
    }
    runtime().block_on(async {
        let hub = hub().await;
        let mut eh = hub.events();
        // `a` gives its sessions no time at all: each one times out before its channel can
        // open, and `a` dials the url from b's handshake-answer instead.
        let a = serverless(
            &hub,
            Config {
                webrtc_timeout: Duration::from_millis(1),
                ..no_populate()
            },
        )
        .await;
        let b = PeerRelay::new(Options {
            port: Some(0),
            bootstrap: vec![hub.url().unwrap().to_owned()],
            config: no_populate(),
            ..Options::default()
        })
        .await
        .unwrap();
        let (mut ea, mut eb) = (a.events(), b.events());
        link_to(&mut ea, hub.id()).await;
        link_to(&mut eb, hub.id()).await;
        hub_links(&mut eh, &[a.id(), b.id()]).await;
        a.connect(b.id()).await.unwrap();
        let reason = next_matching(&mut ea, "WebRTC failure", |e| match e {
            Event::WebRtcFailed { peer, reason } if *peer == b.id() => Some(*reason),
            _ => None,
        })
        .await;
        assert_eq!(reason, ConnectFailure::Timeout);
        fell_back_to_websocket(a, ea, b, eb, hub).await;
    });
}

/// A Rust hub for [`Peer`] tests: it serves WebSockets and links over WebRTC; `config`
/// instead of the default, if given.
async fn webrtc_hub(config: Option<Config>) -> Peer {
    let spec = Spec {
        server: true,
        webrtc: true,
        config,
        ..Spec::default()
    };
    Peer::start(Kind::Rust, &spec).await
}

/// A peer without a server that joins through `hub`, links over WebRTC where it can, and
/// links nothing by itself beyond its first link.
fn serverless_spec(hub: &Peer) -> Spec {
    Spec {
        bootstrap: vec![hub.url().to_owned()],
        no_populate: true,
        webrtc: true,
        ..Spec::default()
    }
}

/// A Rust peer and `other` (the JS original in Node with `@roamhq/wrtc`, or its bundle in
/// Chromium, whose addresses hide behind mDNS `.local` candidates that the Rust side
/// resolves), both without servers, joined through a Rust hub; `initiator` sends the
/// handshake-offer, so it creates the WebRTC offer. They link over WebRTC and messages go
/// both ways directly.
async fn rust_link_over_webrtc(other: Kind, initiator: Kind) {
    let mut hub = webrtc_hub(None).await;
    let joining = serverless_spec(&hub);
    let mut rust = Peer::start(Kind::Rust, &joining).await;
    let mut peer = Peer::start(other, &joining).await;
    rust.expect_peer(hub.id).await;
    peer.expect_peer(hub.id).await;
    hub.expect_peer(rust.id).await;
    hub.expect_peer(peer.id).await;
    let (first, second) = if initiator == Kind::Rust {
        (&mut rust, &mut peer)
    } else {
        (&mut peer, &mut rust)
    };
    first.connect(second.id).await;
    assert_eq!(first.expect_link(second.id).await, "webrtc");
    assert_eq!(second.expect_link(first.id).await, "webrtc");
    rust.send(peer.id, &json!({"from": "rust"})).await;
    assert_eq!(
        peer.expect_routed_message(rust.id).await,
        (json!({"from": "rust"}), Some(1))
    );
    let back = if other == Kind::Browser {
        json!(["from", "chromium"])
    } else {
        json!([1, "js"])
    };
    peer.send(rust.id, &back).await;
    assert_eq!(rust.expect_routed_message(peer.id).await, (back, Some(1)));
    if other == Kind::Browser {
        // Chromium offers only `.local` host candidates. Whether the selected pair is the one
        // we resolved by mDNS or the peer-reflexive one learned from Chromium's checks is a
        // race (`DriverStats::webrtc_mdns_links` says which; see the README), so it is not
        // asserted.
        let stats = rust.stats().await.expect("a Rust peer");
        assert_eq!(stats.driver.webrtc_without_mdns, 0, "{stats:?}");
    }
    peer.destroy().await;
    rust.destroy().await;
    hub.destroy().await;
}

/// A JS peer (Node with `@roamhq/wrtc`) linked to a Rust peer over WebRTC freezes
/// (SIGSTOP): it answers no ICE consent check, and the Rust side's ICE gives the path up (25
/// s). The driver reports the link as lost, not closed (`Input::Failed`): the node counts it
/// in `links_failed` and starts reach checks, since a lost path may mean a split network.
/// The Rust peer's keepalive is off, so ICE alone decides.
#[test]
fn a_frozen_js_wrtc_peer_is_lost_by_ice() {
    if !inside("a_frozen_js_wrtc_peer_is_lost_by_ice") || !js_available() {
        return;
    }
    runtime().block_on(async {
        let mut hub = webrtc_hub(None).await;
        let joining = serverless_spec(&hub);
        let ice_only = Spec {
            config: Some(Config {
                keepalive_interval: None,
                ..no_populate()
            }),
            ..joining.clone()
        };
        let mut rust = Peer::start(Kind::Rust, &ice_only).await;
        let mut js = Peer::start(Kind::Js, &joining).await;
        rust.expect_peer(hub.id).await;
        js.expect_peer(hub.id).await;
        hub.expect_peer(js.id).await;
        rust.connect(js.id).await;
        assert_eq!(rust.expect_link(js.id).await, "webrtc");
        js.freeze();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let stats = loop {
            let stats = rust.stats().await.expect("a Rust peer");
            if stats.node.links_failed > 0 {
                break stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ICE did not give the frozen peer up: {stats:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(stats.node.links_failed, 1, "{stats:#?}");
        assert_eq!(stats.sizes.links, 1, "only the hub is left: {stats:#?}");
        js.thaw();
        drop(js);
        rust.destroy().await;
        hub.destroy().await;
    });
}

#[test]
fn rust_and_js_wrtc_link_rust_initiates() {
    if !inside("rust_and_js_wrtc_link_rust_initiates") || !js_available() {
        return;
    }
    runtime().block_on(rust_link_over_webrtc(Kind::Js, Kind::Rust));
}

#[test]
fn rust_and_js_wrtc_link_js_initiates() {
    if !inside("rust_and_js_wrtc_link_js_initiates") || !js_available() {
        return;
    }
    runtime().block_on(rust_link_over_webrtc(Kind::Js, Kind::Js));
}

/// Keepalive with the original's browser bundle in Chromium: the page's WebSocket to a Rust
/// hub with a 0.4 s keepalive sends nothing after joining, yet the link stays, since
/// Chromium answers the hub's pings by itself; then the page links to a Rust peer (0.4 s
/// keepalive too) over WebRTC, and that idle link stays as well, each probe answered from
/// the ICE state, whose consent checks Chromium answers.
#[test]
fn chromium_links_stay_through_keepalive_probes() {
    if !inside("chromium_links_stay_through_keepalive_probes") || !browser_available() {
        return;
    }
    runtime().block_on(async {
        let interval = Duration::from_millis(400);
        let quick = Config {
            keepalive_interval: Some(interval),
            keepalive_timeout: interval,
            ..no_populate()
        };
        let mut hub = webrtc_hub(Some(quick.clone())).await;
        let joining = serverless_spec(&hub);
        let mut page = Peer::start(Kind::Browser, &joining).await;
        hub.expect_peer(page.id).await;
        tokio::time::sleep(interval * 10).await;
        let stats = hub.stats().await.expect("a Rust peer");
        assert_eq!(
            stats.sizes.links, 1,
            "the page's WebSocket stays: {stats:#?}"
        );
        assert_eq!(stats.node.closed.get(CloseReason::Unresponsive), 0);
        assert!(stats.node.keepalive_probes >= 3, "{stats:#?}");
        let rust_spec = Spec {
            config: Some(quick),
            ..joining.clone()
        };
        let mut rust = Peer::start(Kind::Rust, &rust_spec).await;
        rust.expect_peer(hub.id).await;
        rust.connect(page.id).await;
        assert_eq!(rust.expect_link(page.id).await, "webrtc");
        assert_eq!(page.expect_link(rust.id).await, "webrtc");
        let before = rust
            .stats()
            .await
            .expect("a Rust peer")
            .node
            .keepalive_probes;
        tokio::time::sleep(interval * 10).await;
        let stats = rust.stats().await.expect("a Rust peer");
        assert_eq!(stats.sizes.links, 2, "hub and page: {stats:#?}");
        assert_eq!(stats.node.closed.get(CloseReason::Unresponsive), 0);
        assert!(stats.node.keepalive_probes >= before + 6, "{stats:#?}");
        rust.send(page.id, &json!("still there")).await;
        assert_eq!(
            page.expect_routed_message(rust.id).await,
            (json!("still there"), Some(1))
        );
        page.destroy().await;
        rust.destroy().await;
        hub.destroy().await;
    });
}

#[test]
fn rust_and_chromium_link_rust_initiates() {
    if !inside("rust_and_chromium_link_rust_initiates") || !browser_available() {
        return;
    }
    runtime().block_on(rust_link_over_webrtc(Kind::Browser, Kind::Rust));
}

#[test]
fn rust_and_chromium_link_chromium_initiates() {
    if !inside("rust_and_chromium_link_chromium_initiates") || !browser_available() {
        return;
    }
    runtime().block_on(rust_link_over_webrtc(Kind::Browser, Kind::Browser));
}

#[test]
fn ice_failure_falls_back_to_the_peers_websocket() {
    if !inside("ice_failure_falls_back_to_the_peers_websocket") {
        return;
    }
    runtime().block_on(async {
        let hub = hub().await;
        let mut eh = hub.events();
        // No candidate pair can form: `a` gathers only IPv6 loopback, `b` only IPv4.
        let only = |addr: &str| peer_relay::WebRtcOptions {
            bind: vec![addr.parse().unwrap()],
            ..peer_relay::WebRtcOptions::default()
        };
        let a = PeerRelay::new(Options {
            bootstrap: vec![hub.url().unwrap().to_owned()],
            config: Config {
                webrtc_timeout: Duration::from_secs(60),
                ..no_populate()
            },
            rtc: only("[::1]:0"),
            ..Options::default()
        })
        .await
        .unwrap();
        let b = PeerRelay::new(Options {
            port: Some(0),
            bootstrap: vec![hub.url().unwrap().to_owned()],
            config: no_populate(),
            rtc: only("127.0.0.1:0"),
            ..Options::default()
        })
        .await
        .unwrap();
        let (mut ea, mut eb) = (a.events(), b.events());
        link_to(&mut ea, hub.id()).await;
        link_to(&mut eb, hub.id()).await;
        hub_links(&mut eh, &[a.id(), b.id()]).await;
        a.connect(b.id()).await.unwrap();
        // The stack declares ICE failed after about 30 s (its fixed failed timeout).
        let reason = tokio::time::timeout(Duration::from_secs(50), async {
            loop {
                match ea.next().await {
                    Some(Event::WebRtcFailed { peer, reason }) if peer == b.id() => {
                        return reason;
                    }
                    Some(Event::Peer(peer, transport)) if peer == b.id() => {
                        panic!("linked over {transport} before the session failed");
                    }
                    Some(_) => {}
                    None => panic!("events ended"),
                }
            }
        })
        .await
        .expect("the session fails within 50 s");
        assert_eq!(reason, ConnectFailure::WebRtcFailed);
        fell_back_to_websocket(a, ea, b, eb, hub).await;
    });
}
