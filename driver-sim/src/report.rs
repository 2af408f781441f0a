//! The run report: a human summary, a stable JSON schema, and an SVG hop histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use peer_relay_core::{Config, Forwarding, LinkSelection, Routing};
use serde::Serialize;

use crate::sim::{Counters, Sim};

/// What a run measured. Every field but `wall_ms`, `events_per_sec` and `peak_rss_bytes`
/// is a function of the seed and the config alone.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Peers in the initial population.
    pub peers: usize,
    /// Peers running at the end.
    pub alive: usize,
    /// The root seed.
    pub seed: u64,
    /// `default`, `original` (the core's presets) or `custom`.
    pub strategy: String,
    /// Copies per hop (`concurrency` of the node config).
    pub concurrency: usize,
    /// The bootstrap topology.
    pub bootstrap: String,
    /// Peers with a WebSocket server in the initial population.
    pub servers: usize,
    /// Messages sent.
    pub sent: u64,
    /// Messages that arrived (first copies).
    pub delivered: u64,
    /// delivered / sent.
    pub delivery_rate: f64,
    /// Mean path length of delivered messages (1 = direct).
    pub hops_mean: f64,
    /// Median path length.
    pub hops_p50: u64,
    /// 99th percentile path length.
    pub hops_p99: u64,
    /// Longest path.
    pub hops_max: u64,
    /// `hops_histogram[h]`: messages delivered over `h` hops.
    pub hops_histogram: Vec<u64>,
    /// log2 of the initial population, for comparison with hop counts.
    pub log2_peers: f64,
    /// Median virtual time from send to arrival, in ms.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Frames carrying a `user` payload that were transmitted, per delivered message.
    pub transmissions_per_delivery: f64,
    /// Mean links per running peer at the end.
    pub links_mean: f64,
    /// Most links of one peer at the end.
    pub links_max: u64,
    /// The link count peers aim for.
    pub link_target: usize,
    /// Virtual ms until every peer of the initial population first reached its link target
    /// (`null`: never).
    pub converge_ms: Option<u64>,
    /// Virtual time simulated, in ms.
    pub virtual_ms: u64,
    /// Events processed.
    pub events: u64,
    /// Wall time since the simulation was created, in ms.
    pub wall_ms: u64,
    /// events / wall time.
    pub events_per_sec: f64,
    /// Peak resident memory of the process (Linux VmHWM; 0 where unknown).
    pub peak_rss_bytes: u64,
    /// Live heap bytes at the end, where the program installed a heap meter (the
    /// `peer-relay-sim` binary does; see [`set_heap_meter`]).
    pub heap_bytes: Option<u64>,
    /// `heap_bytes` per running peer: the memory one peer costs, simulator included.
    pub heap_bytes_per_peer: Option<f64>,
    /// Why the run stopped early, if it did (`null`: it ran to the end).
    pub aborted: Option<String>,
    /// XXH3-64 of every output of every node, in order, as 16 hex digits.
    pub trace_hash: String,
    /// The simulator's counters.
    pub counters: Counters,
    /// The core's own counters, summed over the nodes running at the end.
    pub nodes: NodeTotals,
}

/// Core [`Stats`](peer_relay_core::Stats) summed over nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeTotals {
    /// Messages relayed for others.
    pub relayed: u64,
    /// Messages dropped as already seen.
    pub duplicates: u64,
    /// Links that came up.
    pub links_opened: u64,
    /// Links that went down.
    pub links_closed: u64,
    /// Connect attempts that failed.
    pub connects_failed: u64,
    /// Inbound connections refused.
    pub connections_refused: u64,
    /// Offers declined at the link budget (each is also a failed connect at the offerer).
    pub offers_declined: u64,
    /// Links the transport lost without a close (ICE failed across a partition).
    pub links_failed: u64,
    /// Keepalive probes of silent links.
    pub keepalive_probes: u64,
    /// Reach checks: `findPeers` routed to a bootstrap server out of link.
    pub reach_checks: u64,
    /// Bootstrap urls dialled again after an unanswered reach check.
    pub reach_redials: u64,
    /// Drops by reason label.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Closes by reason label.
    pub closed: BTreeMap<&'static str, u64>,
}

fn node_totals(sim: &Sim) -> NodeTotals {
    let mut t = NodeTotals::default();
    for node in sim.nodes() {
        let s = node.stats();
        t.relayed += s.relayed;
        t.duplicates += s.duplicates;
        t.links_opened += s.links_opened;
        t.links_closed += s.links_closed;
        t.connects_failed += s.connects_failed;
        t.connections_refused += s.connections_refused;
        t.offers_declined += s.offers_declined;
        t.links_failed += s.links_failed;
        t.keepalive_probes += s.keepalive_probes;
        t.reach_checks += s.reach_checks;
        t.reach_redials += s.reach_redials;
        for (reason, n) in s.dropped.iter() {
            *t.dropped.entry(reason.label()).or_default() += n;
        }
        for (reason, n) in s.closed.iter() {
            *t.closed.entry(reason.label()).or_default() += n;
        }
    }
    t
}

/// The strategy preset a node config matches.
pub fn strategy_name(config: &Config) -> &'static str {
    let default = Config::default();
    let original = Config::original();
    let knobs = |c: &Config| {
        (
            c.routing,
            c.link_selection,
            c.forwarding,
            c.refresh_interval,
        )
    };
    if knobs(config) == knobs(&default) {
        "default"
    } else if knobs(config) == knobs(&original) {
        "original"
    } else {
        match (config.routing, config.link_selection, config.forwarding) {
            (Routing::TableOnly, LinkSelection::NearestToSelf, Forwarding::Spread) => "original",
            _ => "custom",
        }
    }
}

pub(crate) fn build(sim: &Sim) -> Report {
    let config = sim.config();
    let counters = sim.counters().clone();
    let histogram = sim.hops_histogram().to_vec();
    let delivered: u64 = histogram.iter().sum();
    let sent = sim.messages().len() as u64;
    let hop_sum: u64 = histogram
        .iter()
        .enumerate()
        .map(|(h, n)| h as u64 * n)
        .sum();
    let mut latencies: Vec<u64> = sim
        .messages()
        .iter()
        .filter_map(|m| Some(m.delivered_at?.as_micros() - m.sent_at.as_micros()))
        .collect();
    latencies.sort_unstable();
    let (mut links_sum, mut links_max, mut alive) = (0u64, 0u64, 0u64);
    for links in sim.alive_link_counts() {
        links_sum += u64::from(links);
        links_max = links_max.max(u64::from(links));
        alive += 1;
    }
    let wall = sim.wall_elapsed();
    let mut histogram = histogram;
    // Trim trailing empty buckets; keep at least up to 1 hop.
    while histogram.len() > 2 && histogram.last() == Some(&0) {
        histogram.pop();
    }
    Report {
        peers: config.peers,
        alive: sim.alive_count(),
        seed: config.seed,
        strategy: strategy_name(&config.node).to_owned(),
        concurrency: config.node.concurrency,
        bootstrap: config.bootstrap.to_string(),
        servers: config.servers,
        sent,
        delivered,
        delivery_rate: ratio(delivered, sent),
        hops_mean: if delivered == 0 {
            0.0
        } else {
            hop_sum as f64 / delivered as f64
        },
        hops_p50: percentile_of_histogram(&histogram, 0.50),
        hops_p99: percentile_of_histogram(&histogram, 0.99),
        hops_max: histogram.iter().rposition(|&n| n > 0).unwrap_or(0) as u64,
        hops_histogram: histogram,
        // Rounded, and from basic float operations only, so the report is the same on
        // every platform.
        log2_peers: (crate::rng::portable_ln(config.peers as f64) / std::f64::consts::LN_2 * 1e3)
            .round()
            / 1e3,
        latency_p50_ms: percentile_sorted(&latencies, 0.50) as f64 / 1e3,
        latency_p99_ms: percentile_sorted(&latencies, 0.99) as f64 / 1e3,
        transmissions_per_delivery: if delivered == 0 {
            0.0
        } else {
            counters.user_frames as f64 / delivered as f64
        },
        links_mean: if alive == 0 {
            0.0
        } else {
            links_sum as f64 / alive as f64
        },
        links_max,
        link_target: sim.link_target(),
        converge_ms: sim.converged_at().map(|t| t.as_millis()),
        virtual_ms: sim.now().as_millis(),
        events: counters.events,
        wall_ms: wall.as_millis() as u64,
        events_per_sec: counters.events as f64 / wall.as_secs_f64().max(1e-9),
        peak_rss_bytes: sim.peak_rss(),
        heap_bytes: heap_bytes(),
        heap_bytes_per_peer: heap_bytes().map(|b| b as f64 / sim.alive_count().max(1) as f64),
        aborted: sim.aborted().map(str::to_owned),
        trace_hash: format!("{:016x}", sim.trace_hash()),
        counters,
        nodes: node_totals(sim),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// The smallest `h` with at least a `q` share of the mass at or below it.
fn percentile_of_histogram(histogram: &[u64], q: f64) -> u64 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0;
    }
    let needed = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (h, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= needed.max(1) {
            return h as u64;
        }
    }
    histogram.len() as u64 - 1
}

fn percentile_sorted(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Report {
    /// The report as JSON without the fields that depend on the machine or the process
    /// (`wall_ms`, `events_per_sec`, `peak_rss_bytes`, `heap_bytes`,
    /// `heap_bytes_per_peer`): equal for equal seeds and configs.
    pub fn deterministic_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            for key in [
                "wall_ms",
                "events_per_sec",
                "peak_rss_bytes",
                "heap_bytes",
                "heap_bytes_per_peer",
            ] {
                map.remove(key);
            }
        }
        value
    }

    /// The human summary, with an ASCII histogram of hop counts.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let converge = self
            .converge_ms
            .map_or("never".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1e3));
        let _ = writeln!(
            out,
            "peer-relay-sim: {} peers ({} servers, {} alive at the end), seed {}, strategy {} \
             (concurrency {}), bootstrap {}",
            self.peers,
            self.servers,
            self.alive,
            self.seed,
            self.strategy,
            self.concurrency,
            self.bootstrap
        );
        let _ = writeln!(
            out,
            "  delivered      {} / {} = {:.3}%",
            self.delivered,
            self.sent,
            100.0 * self.delivery_rate
        );
        let _ = writeln!(
            out,
            "  hops           mean {:.2}  p50 {}  p99 {}  max {}   (log2 n = {:.1})",
            self.hops_mean, self.hops_p50, self.hops_p99, self.hops_max, self.log2_peers
        );
        let _ = writeln!(
            out,
            "  latency        p50 {:.1} ms  p99 {:.1} ms",
            self.latency_p50_ms, self.latency_p99_ms
        );
        let _ = writeln!(
            out,
            "  transmissions  {:.2} user frames per delivered message",
            self.transmissions_per_delivery
        );
        let _ = writeln!(
            out,
            "  links          mean {:.1}  max {}  (target {}), converged after {}",
            self.links_mean, self.links_max, self.link_target, converge
        );
        let c = &self.counters;
        let _ = writeln!(
            out,
            "  frames         {} sent, {} lost, {} duplicated, {} cut by partitions, {} stale",
            c.frames, c.frames_lost, c.frames_duplicated, c.frames_partitioned, c.frames_stale
        );
        let _ = writeln!(
            out,
            "  peers          {} joins, {} leaves, {} crashes, {} restarts",
            c.joins, c.leaves, c.crashes, c.restarts
        );
        let _ = writeln!(
            out,
            "  run            {:.1} s virtual, {} events in {:.2} s wall ({:.2}M events/s), \
             peak RSS {} MiB",
            self.virtual_ms as f64 / 1e3,
            self.events,
            self.wall_ms as f64 / 1e3,
            self.events_per_sec / 1e6,
            self.peak_rss_bytes >> 20
        );
        let drops: Vec<String> = self
            .nodes
            .dropped
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  node drops     {}",
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join(", ")
            }
        );
        if let (Some(heap), Some(per_peer)) = (self.heap_bytes, self.heap_bytes_per_peer) {
            let _ = writeln!(
                out,
                "  memory         {} MiB live heap at the end = {:.1} KiB per running peer",
                heap >> 20,
                per_peer / 1024.0
            );
        }
        if let Some(why) = &self.aborted {
            let _ = writeln!(out, "  ABORTED        {why}");
        }
        let _ = writeln!(out, "  trace hash     {}", self.trace_hash);
        out.push_str("\nhops  messages\n");
        out.push_str(&self.ascii_histogram(50));
        out
    }

    /// One row per hop count from 1 to the longest path, bars scaled to `width`.
    pub fn ascii_histogram(&self, width: usize) -> String {
        let mut out = String::new();
        let top = self
            .hops_histogram
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        for (h, &n) in self.hops_histogram.iter().enumerate().skip(1) {
            let bar = (n as u128 * width as u128).div_ceil(top as u128) as usize;
            let share = 100.0 * ratio(n, self.delivered.max(1));
            let _ = writeln!(out, "{h:>4}  {n:>9}  {:5.1}%  {}", share, "#".repeat(bar));
        }
        out
    }

    /// The hop histogram as a standalone SVG bar chart.
    pub fn svg(&self) -> String {
        let bars: Vec<(usize, u64)> = self
            .hops_histogram
            .iter()
            .copied()
            .enumerate()
            .skip(1)
            .collect();
        let (width, height) = (640.0_f64, 360.0_f64);
        let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
        let plot_w = width - left - right;
        let plot_h = height - top - bottom;
        let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
        let slot = plot_w / bars.len().max(1) as f64;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{width}" height="{height}" fill="white"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Hops per delivered message: {} peers, {} strategy, mean {:.2}, p99 {} (log2 n = {:.1})</text>"#,
            width / 2.0,
            self.peers,
            xml_escape(&self.strategy),
            self.hops_mean,
            self.hops_p99,
            self.log2_peers
        );
        // Axes and four horizontal grid lines labelled with message counts.
        for i in 0..=4 {
            let y = top + plot_h - plot_h * i as f64 / 4.0;
            let value = max as f64 * i as f64 / 4.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{value:.0}</text>"##,
                left + plot_w,
                left - 6.0,
                y + 4.0
            );
        }
        for (i, (hops, n)) in bars.iter().enumerate() {
            let h = plot_h * *n as f64 / max as f64;
            let x = left + slot * i as f64;
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4a7ab5"><title>{hops} hops: {n}</title></rect>"##,
                x + slot * 0.1,
                top + plot_h - h,
                slot * 0.8
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{hops}</text>"#,
                x + slot / 2.0,
                top + plot_h + 16.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">hops (path length, 1 = direct)</text>"#,
            left + plot_w / 2.0,
            height - 12.0
        );
        svg.push_str("</svg>\n");
        svg
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
}

static HEAP_METER: OnceLock<fn() -> usize> = OnceLock::new();

/// Registers a function returning the live heap bytes of the process (for example a
/// counting global allocator's total), so reports include `heap_bytes`. First call wins.
pub fn set_heap_meter(meter: fn() -> usize) {
    let _ = HEAP_METER.set(meter);
}

/// Live heap bytes, if a meter was registered.
pub fn heap_bytes() -> Option<u64> {
    HEAP_METER.get().map(|meter| meter() as u64)
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident memory of this process (Linux `VmRSS`), if known.
pub fn current_rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_histogram() {
        // 10 messages: 1 hop x1, 2 hops x5, 3 hops x3, 7 hops x1.
        let h = [0, 1, 5, 3, 0, 0, 0, 1];
        assert_eq!(percentile_of_histogram(&h, 0.5), 2);
        assert_eq!(percentile_of_histogram(&h, 0.9), 3);
        assert_eq!(percentile_of_histogram(&h, 0.99), 7);
        assert_eq!(percentile_of_histogram(&[0, 0], 0.5), 0);
        assert_eq!(percentile_sorted(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile_sorted(&[], 0.5), 0);
    }

    #[test]
    fn presets_are_named() {
        assert_eq!(strategy_name(&Config::default()), "default");
        assert_eq!(strategy_name(&Config::original()), "original");
        let concurrency_one = Config {
            concurrency: 1,
            ..Config::original()
        };
        assert_eq!(strategy_name(&concurrency_one), "original");
    }

    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() >= current_rss_bytes().unwrap() / 2);
        }
    }
}
