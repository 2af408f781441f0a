//! `relay_frame`: one 200-byte `user` frame arriving at a relay with a full table: decoded,
//! deduplicated, routed and re-encoded, and the output drained. Each iteration writes a fresh
//! nonce into the frame so the duplicate filter never short-circuits.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use peer_relay_core::{Config, ConnId, Input, Node, Output, PeerId, Time};

/// A node with `links` established WebSocket links to peers with ids from `seed`.
fn relay_with_links(config: Config, links: usize) -> (Node, ConnId) {
    let now = Time::ZERO;
    let mut node = Node::with_seed(config, 1, now).unwrap();
    let mut first = None;
    for i in 0..links as u64 {
        let conn = node.accept(now).unwrap();
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555).to_be_bytes());
        id[8..16].copy_from_slice(&i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f).to_be_bytes());
        let peer = PeerId::from_bytes(id);
        node.handle_input(
            now,
            Input::Frame {
                conn,
                frame: peer.to_buffer_json().as_bytes(),
            },
        );
        first.get_or_insert(conn);
    }
    while node.poll_output().is_some() {}
    (node, first.unwrap())
}

/// A user frame from a distant origin to a distant target whose `data` is a string of
/// `payload` bytes (JSON quotes included); returns it with the offset of its 15-digit nonce.
/// With a one-entry path the smallest such frame is 210 bytes.
fn frame(payload: usize) -> (Vec<u8>, usize) {
    let to = PeerId::from_bytes([0xa5; 20]);
    let from = PeerId::from_bytes([0x3c; 20]);
    let head = format!(r#"{{"to":"{to}","from":"{from}","path":["{from}"],"nonce":""#);
    let offset = head.len();
    let data = format!("\"{}\"", "x".repeat(payload.saturating_sub(2)));
    let frame = format!(r#"{head}000000000000000","data":{{"type":"user","data":{data}}}}}"#);
    (frame.into_bytes(), offset)
}

fn write_nonce(frame: &mut [u8], offset: usize, mut n: u64) {
    for i in (0..15).rev() {
        frame[offset + i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay_frame");
    for (name, config, links, payload) in [
        ("default-32-links/frame-210B", Config::default(), 32, 2),
        ("default-32-links/payload-200B", Config::default(), 32, 200),
        (
            "original-full-kbucket/payload-200B",
            Config::original(),
            400,
            200,
        ),
    ] {
        let (mut node, conn) = relay_with_links(config, links);
        let (mut frame, offset) = frame(payload);
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                write_nonce(&mut frame, offset, n);
                node.handle_input(
                    Time::ZERO,
                    Input::Frame {
                        conn,
                        frame: black_box(&frame),
                    },
                );
                while let Some(out) = node.poll_output() {
                    if let Output::Transmit { frame, .. } = out {
                        black_box(frame);
                    }
                }
            })
        });
        if n == 0 {
            // Filtered out on the command line (`cargo bench -- NAME`): nothing ran.
            continue;
        }
        assert!(node.stats().relayed > 0, "{name}: frames were relayed");
        assert_eq!(
            node.stats().dropped.total(),
            0,
            "{name}: {:?}",
            node.stats().dropped
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
