//! `snapshot`: saving and loading a converged 1,000-peer simulation (every node's whole
//! state, the event queue, link ends and random streams) to and from memory. Throughput is
//! in snapshot bytes; the size per peer is printed once, before the measurements.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use peer_relay_core::Time;
use peer_relay_sim::{Sim, SimConfig};

const PEERS: usize = 1_000;

fn converged() -> Sim {
    let mut sim = Sim::new(SimConfig {
        peers: PEERS,
        seed: 1,
        ..SimConfig::default()
    })
    .expect("a valid config");
    sim.run_until_converged(Time::from_millis(300_000))
        .expect("1,000 peers converge");
    sim
}

fn snapshot(c: &mut Criterion) {
    let mut sim = converged();
    let mut saved = Vec::new();
    sim.save(&mut saved).expect("saves");
    eprintln!(
        "snapshot of {PEERS} converged peers: {} bytes, {} per peer",
        saved.len(),
        saved.len() / PEERS
    );
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(saved.len() as u64));
    group.bench_function("save_1000_peers", |b| {
        let mut out = Vec::with_capacity(saved.len());
        b.iter(|| {
            out.clear();
            sim.save(&mut out).expect("saves");
            black_box(out.len())
        })
    });
    group.bench_function("load_1000_peers", |b| {
        b.iter(|| Sim::load(black_box(saved.as_slice())).expect("loads"))
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
