//! Memory per idle peer, measured with a counting allocator (this test binary's own).

mod common;

use std::alloc::System;

use cap::Cap;
use common::{converged, network, secs};
use peer_relay_sim::Action;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

#[test]
fn an_idle_peer_costs_little_memory() {
    let peers = 2_000;
    let before = ALLOCATOR.allocated();
    let mut sim = converged(network(21, peers));
    // Idle well past the nonce and preferred-path memory of the joins (`seen_nonce_ttl` and
    // `preferred_path_ttl`, 30 s each), so only standing state remains.
    sim.run_for(secs(150));
    let idle = (ALLOCATOR.allocated() - before) as f64 / peers as f64;
    sim.apply(Action::Crash((0..peers).collect()));
    sim.run_for(secs(2));
    let simulator = (ALLOCATOR.allocated() - before) as f64 / peers as f64;
    eprintln!(
        "per idle peer: {:.1} KiB in all, {:.1} KiB of it the simulator, \
         {:.1} KiB the node",
        idle / 1024.0,
        simulator / 1024.0,
        (idle - simulator) / 1024.0
    );
    check!(
        sim,
        simulator < 1.5 * 1024.0,
        "simulator {simulator:.0} B per peer"
    );
    // Measured 12.0 KiB, 0.7 of it the simulator (README "Memory per peer"); the bounds
    // leave about 10% for changes that need it, so a regression past that fails here rather
    // than in a million-peer run.
    check!(sim, idle < 13.2 * 1024.0, "idle peer {idle:.0} B");
}
