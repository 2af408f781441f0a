//! `socket_codec`: the socket payload of a 60,000-byte datagram (about 230 KB of JSON
//! numbers) encoded and decoded by `peer_relay`'s codec, next to the naive decode through a
//! `serde_json::Value` per byte for comparison.
//!
//! ```text
//! cargo bench -p peer-relay --bench socket_codec
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use peer_relay::{decode_payload, encode_payload};

const ID: &str = "0123456789abcdef0123456789abcdef01234567";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("socket_codec");
    for len in [256usize, 60_000] {
        // Every byte value, so numbers of one, two and three digits as in real data.
        let data: Vec<u8> = (0..len).map(|i| (i * 131 % 256) as u8).collect();
        let json = encode_payload(&data, ID, 4242);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("encode/{len}B"), |b| {
            b.iter(|| encode_payload(black_box(&data), ID, 4242))
        });
        group.bench_function(format!("decode/{len}B"), |b| {
            b.iter(|| decode_payload(black_box(&json)).unwrap())
        });
        group.bench_function(format!("decode-via-value/{len}B"), |b| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_str(black_box(&json)).unwrap();
                let bytes: Vec<u8> = value["buffer"]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap() as u8)
                    .collect();
                bytes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
