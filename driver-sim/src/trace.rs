//! The trace hash: one fingerprint of every output of every node, in order.
//!
//! Each output is written as a record into a byte stream, and the stream is hashed in
//! blocks of [`BLOCK`] bytes with XXH3-64, each block's hash the seed of the next one's
//! (the first block's seed is 0; the last, partial or empty, block is hashed the same way
//! when the hash is read). XXH3 is fixed, specified and portable, so the same run gives the
//! same `trace_hash` on any machine and any build; and the whole state is a seed and less
//! than a block of bytes, so a saved run (a snapshot) carries its hash on exactly. A record
//! is
//!
//! ```text
//! time_us:u64  node:u32  incarnation:u32  tag:u8  fields...
//! ```
//!
//! all integers little-endian, strings and byte strings as `len:u32` then the bytes. The tag
//! and fields per output are in [`TraceHasher::record`].

use peer_relay_core::{ConnectFailure, Event, Output, Time, Transport};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bytes of the record stream hashed at a time.
pub const BLOCK: usize = 64 * 1024;

/// XXH3-64 over the records of every output, block by block.
#[derive(Clone, Serialize, Deserialize)]
pub struct TraceHasher {
    /// The hash of the blocks so far: the seed of the next block's.
    chain: u64,
    /// The stream past the last full block (always shorter than [`BLOCK`] between records).
    pending: Vec<u8>,
    records: u64,
}

impl std::fmt::Debug for TraceHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceHasher")
            .field("records", &self.records)
            .field("hash", &self.finish())
            .finish()
    }
}

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            chain: 0,
            pending: Vec::with_capacity(BLOCK + 512),
            records: 0,
        }
    }
}

impl TraceHasher {
    /// Records one output of `node` (in its `incarnation`) at `now`.
    pub fn record(&mut self, now: Time, node: u32, incarnation: u32, output: &Output) {
        let r = &mut self.pending;
        r.extend_from_slice(&now.as_micros().to_le_bytes());
        r.extend_from_slice(&node.to_le_bytes());
        r.extend_from_slice(&incarnation.to_le_bytes());
        match output {
            Output::Transmit { conn, frame } => {
                // The hot case: hash the frame in place rather than copying it.
                r.push(1);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
                put_bytes(r, frame.as_bytes());
            }
            Output::DialWebSocket { conn, url } => {
                r.push(2);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
                put_bytes(r, url.as_bytes());
            }
            Output::StartWebRtc {
                conn,
                peer,
                initiator,
            } => {
                r.push(3);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
                r.extend_from_slice(peer.as_bytes());
                r.push(u8::from(*initiator));
            }
            Output::RemoteSignal { conn, signal } => {
                r.push(4);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
                put_bytes(r, signal.as_bytes());
            }
            Output::Close { conn, reason } => {
                r.push(5);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
                put_bytes(r, reason.label().as_bytes());
            }
            Output::Probe { conn } => {
                r.push(7);
                r.extend_from_slice(&conn.as_u64().to_le_bytes());
            }
            Output::Event(event) => {
                r.push(6);
                record_event(r, event);
            }
        }
        self.records += 1;
        if self.pending.len() >= BLOCK {
            let full = self.pending.len() / BLOCK * BLOCK;
            for block in self.pending[..full].chunks_exact(BLOCK) {
                self.chain = xxh3_64_with_seed(block, self.chain);
            }
            self.pending.drain(..full);
        }
    }

    /// Outputs recorded so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The hash of everything recorded so far.
    pub fn finish(&self) -> u64 {
        xxh3_64_with_seed(&self.pending, self.chain)
    }
}

fn put_bytes(r: &mut Vec<u8>, bytes: &[u8]) {
    r.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    r.extend_from_slice(bytes);
}

fn record_event(r: &mut Vec<u8>, event: &Event) {
    match event {
        Event::PeerConnected { peer, transport } => {
            r.push(1);
            r.extend_from_slice(peer.as_bytes());
            r.push(match transport {
                Transport::WebSocket => 0,
                Transport::WebRtc => 1,
            });
        }
        Event::PeerDisconnected { peer } => {
            r.push(2);
            r.extend_from_slice(peer.as_bytes());
        }
        Event::Message {
            from,
            data,
            path_len,
        } => {
            r.push(3);
            r.extend_from_slice(from.as_bytes());
            r.extend_from_slice(&(*path_len as u32).to_le_bytes());
            put_bytes(r, data.get().as_bytes());
        }
        Event::ConnectFailed {
            peer,
            reason,
            explicit,
        } => {
            r.push(4);
            r.extend_from_slice(peer.as_bytes());
            r.push(match reason {
                ConnectFailure::Timeout => 0,
                ConnectFailure::NoTransport => 1,
                ConnectFailure::DialFailed => 2,
                ConnectFailure::WebRtcFailed => 3,
                ConnectFailure::ConnectionLimit => 4,
            });
            r.push(u8::from(*explicit));
        }
        Event::BootstrapFailed {
            url,
            attempt,
            retry_in,
        } => {
            r.push(5);
            put_bytes(r, url.as_bytes());
            r.extend_from_slice(&attempt.to_le_bytes());
            r.extend_from_slice(&(retry_in.as_micros() as u64).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_relay_core::{CloseReason, Config, Node};

    fn conn_of(node: &mut Node) -> peer_relay_core::ConnId {
        node.accept(Time::ZERO).unwrap()
    }

    #[test]
    fn the_hash_is_fixed_and_depends_on_every_field() {
        let mut node = Node::with_seed(Config::default(), 1, Time::ZERO).unwrap();
        let conn = conn_of(&mut node);
        let frame = |s: &str| Output::Transmit {
            conn,
            frame: s.to_owned(),
        };
        let hash = |outputs: &[(u64, u32, Output)]| {
            let mut h = TraceHasher::default();
            for (t, n, o) in outputs {
                h.record(Time::from_micros(*t), *n, 0, o);
            }
            h.finish()
        };
        let base = hash(&[(1, 0, frame("a")), (2, 1, frame("b"))]);
        // XXH3-64 is specified: this value never changes between builds or machines.
        assert_eq!(base, 0x5012_19a5_3300_5eb9, "{base:#018x}");
        assert_eq!(base, hash(&[(1, 0, frame("a")), (2, 1, frame("b"))]));
        assert_ne!(base, hash(&[(2, 1, frame("b")), (1, 0, frame("a"))]));
        assert_ne!(base, hash(&[(1, 0, frame("a")), (3, 1, frame("b"))]));
        assert_ne!(base, hash(&[(1, 0, frame("a")), (2, 2, frame("b"))]));
        assert_ne!(base, hash(&[(1, 0, frame("a")), (2, 1, frame("c"))]));
        // Length prefixes keep field boundaries apart.
        assert_ne!(hash(&[(1, 0, frame("ab"))]), hash(&[(1, 0, frame("a"))]));
        let close = Output::Close {
            conn,
            reason: CloseReason::Duplicate,
        };
        assert_ne!(hash(&[(1, 0, close)]), hash(&[(1, 0, frame(""))]));
        assert_eq!(TraceHasher::default().finish(), xxh3_64_with_seed(&[], 0));
    }

    #[test]
    fn blocks_chain_and_a_saved_hasher_goes_on_the_same() {
        let mut node = Node::with_seed(Config::default(), 1, Time::ZERO).unwrap();
        let conn = conn_of(&mut node);
        let frame = |i: usize| Output::Transmit {
            conn,
            frame: "x".repeat(i % 700),
        };
        let mut whole = TraceHasher::default();
        let mut stream = Vec::new();
        for i in 0..1_000 {
            let mut one = TraceHasher::default();
            one.record(Time::from_micros(i as u64), 3, 0, &frame(i));
            stream.extend_from_slice(&one.pending);
            whole.record(Time::from_micros(i as u64), 3, 0, &frame(i));
            if i == 400 {
                let saved = postcard::to_stdvec(&whole).unwrap();
                whole = postcard::from_bytes(&saved).unwrap();
            }
        }
        assert!(stream.len() > 3 * BLOCK);
        let mut chain = 0;
        let mut blocks = stream.chunks_exact(BLOCK);
        for block in &mut blocks {
            chain = xxh3_64_with_seed(block, chain);
        }
        assert_eq!(whole.finish(), xxh3_64_with_seed(blocks.remainder(), chain));
        assert_eq!(whole.records(), 1_000);
    }
}
