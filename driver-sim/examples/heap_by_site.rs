//! Where an idle peer's memory goes: live heap by allocation site.
//!
//! Runs a network (default 1,000 peers; the first argument overrides) until it converged,
//! lets it idle for 150 s of virtual time (past the nonce and preferred-path memory of the
//! join; the second argument overrides, and `0` shows a peer as it is right at convergence,
//! still holding its join's traffic), and prints the live heap per peer grouped by the first
//! two peer-relay frames of each allocation's stack, largest first. dhat records every
//! allocation's stack, so this is slow (a minute for 1,000 peers).
//!
//! The second argument can instead be `at=SECS`: stop at that virtual time, while peers are
//! still joining, and count per joined peer. A third argument `rate=R` sets the joins per
//! second (default 50); `6000 at=20 rate=200` shows a flash crowd.
//!
//! ```text
//! cargo run --release -p peer-relay-sim --example heap_by_site [-- PEERS [IDLE_SECS|at=SECS [rate=R]]]
//! ```

use std::collections::HashMap;
use std::time::Duration;

use peer_relay_sim::{Sim, SimConfig};
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() {
    let peers: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("PEERS: a number"),
        None => 1_000,
    };
    let (idle_secs, stop_at): (u64, Option<u64>) = match std::env::args().nth(2) {
        Some(arg) => match arg.strip_prefix("at=") {
            Some(at) => (0, Some(at.parse().expect("at=SECS: a number"))),
            None => (arg.parse().expect("IDLE_SECS: a number"), None),
        },
        None => (150, None),
    };
    let join_rate: u32 = match std::env::args().nth(3) {
        Some(arg) => arg
            .strip_prefix("rate=")
            .and_then(|r| r.parse().ok())
            .expect("rate=R: joins per second"),
        None => 50,
    };
    let profile = std::env::temp_dir().join(format!("heap_by_site-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder().file_name(&profile).build();
    let mut sim = Sim::new(SimConfig {
        seed: 21,
        peers,
        servers: peers / 10,
        join_interval: Duration::from_secs(1) / join_rate.max(1),
        ..SimConfig::default()
    })
    .expect("valid config");
    let (peers, when) = match stop_at {
        Some(at) => {
            sim.run_for(Duration::from_secs(at));
            (sim.alive_count(), format!("{at} s into the joins"))
        }
        None => {
            let deadline = sim.config().joins_end() + Duration::from_secs(60);
            sim.run_until_converged(deadline)
                .expect("the network converges");
            sim.run_for(Duration::from_secs(idle_secs));
            (peers, format!("{idle_secs} s after converging"))
        }
    };
    let live = dhat::HeapStats::get().curr_bytes;
    println!(
        "{peers} peers, {when}: {:.1} KiB of live heap per peer",
        live as f64 / peers as f64 / 1024.0
    );
    drop(profiler);

    let text = std::fs::read_to_string(&profile).expect("dhat wrote its profile");
    let _ = std::fs::remove_file(&profile);
    let json: Value = serde_json::from_str(&text).expect("dhat's profile is JSON");
    let frames: Vec<&str> = json["ftbl"]
        .as_array()
        .expect("frame table")
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut sites: HashMap<String, (u64, u64)> = HashMap::new();
    for point in json["pps"].as_array().expect("program points") {
        let bytes = point["eb"].as_u64().unwrap_or(0);
        if bytes == 0 {
            continue;
        }
        let site = point["fs"]
            .as_array()
            .expect("frames")
            .iter()
            .filter_map(|i| frames.get(i.as_u64()? as usize))
            .filter(|f| f.contains("peer_relay") && !f.contains("compact::"))
            .take(2)
            .map(|f| short_frame(f))
            .collect::<Vec<_>>()
            .join(" <- ");
        let entry = sites.entry(site).or_default();
        entry.0 += bytes;
        entry.1 += point["ebk"].as_u64().unwrap_or(0);
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    println!("KiB/peer  blocks/peer  site (allocating function <- its caller)");
    for (site, (bytes, blocks)) in sites.iter().take(20) {
        println!(
            "{:8.2}  {:11.1}  {site}",
            *bytes as f64 / peers as f64 / 1024.0,
            *blocks as f64 / peers as f64
        );
    }
}

/// `0x55d4c2fd35dd: peer_relay_core::node::Node::link_up (core/src/node.rs:1103:13)` to
/// `Node::link_up (node.rs:1103)`.
fn short_frame(frame: &str) -> String {
    let frame = frame.split_once(": ").map_or(frame, |(_, rest)| rest);
    let (path, location) = frame.split_once(" (").unwrap_or((frame, ""));
    let parts: Vec<&str> = path.split("::").collect();
    let function = parts[parts.len().saturating_sub(2)..].join("::");
    let file = location
        .trim_end_matches(')')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let mut file_line = file.split(':');
    let (file, line) = (
        file_line.next().unwrap_or(""),
        file_line.next().unwrap_or(""),
    );
    format!("{function} ({file}:{line})")
}
