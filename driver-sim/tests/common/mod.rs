//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use std::ops::Range;
use std::time::Duration;

use peer_relay_core::Time;
use peer_relay_sim::{Action, Churn, LinkModel, MessageId, NetConfig, Sim, SimConfig, Traffic};

/// Asserts `cond`; on failure prints the message and the line that replays the run.
#[macro_export]
macro_rules! check {
    ($sim:expr, $cond:expr, $($msg:tt)+) => {
        assert!($cond, "{}\n{}", format!($($msg)+), $sim.replay_hint())
    };
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A simulation of `config` run until it converged (at most 60 s after the last join).
pub fn converged(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config).expect("valid config");
    let deadline = sim.config().joins_end() + secs(60);
    let converged = sim.run_until_converged(deadline);
    check!(
        sim,
        converged.is_some(),
        "not converged by {deadline:?}: {} peers below target",
        (0..sim.peer_count())
            .filter(|&i| sim.is_alive(i) && sim.links_of(i) < sim.link_target())
            .count()
    );
    sim
}

/// Sends `messages` random-pair messages at `rate` per second from now, runs until they
/// were all sent plus `drain`, and returns their ids.
pub fn traffic(sim: &mut Sim, messages: u64, rate: f64, drain: Duration) -> Range<MessageId> {
    let first = sim.messages().len();
    sim.apply(Action::Traffic(Traffic { messages, rate }));
    let sending = Duration::from_secs_f64(messages as f64 / rate);
    let deadline = sim.now() + sending + drain;
    sim.run_until_delivered(deadline);
    first..sim.messages().len()
}

/// A time `d` after now.
pub fn after(sim: &Sim, d: Duration) -> Time {
    sim.now() + d
}

/// Issue 8's routing bounds on a report of random-pair traffic: mean hops at most
/// 0.5 x log2(n) + 1, p99 at most 14, at most 1.2 frames per hop of a delivered message,
/// and no peer above the link budget.
pub fn check_routing_quality(sim: &Sim) {
    let report = sim.report();
    let mean_bound = 0.5 * report.log2_peers + 1.0;
    check!(
        sim,
        report.hops_mean <= mean_bound,
        "mean hops {:.2} above {mean_bound:.2}",
        report.hops_mean
    );
    check!(sim, report.hops_p99 <= 14, "p99 hops {}", report.hops_p99);
    check!(
        sim,
        report.transmissions_per_delivery <= 1.2 * report.hops_mean,
        "{:.2} transmissions per delivery at {:.2} hops",
        report.transmissions_per_delivery,
        report.hops_mean
    );
    check!(
        sim,
        report.links_max <= sim.config().node.max_links as u64,
        "links_max {} above the budget",
        report.links_max
    );
}

/// The stable-network check: `config` converges, then 10,000 random-pair messages
/// arrive at >= 99.9% with the routing-quality bounds.
pub fn check_converges_and_delivers(config: SimConfig) {
    let mut sim = converged(config);
    let ids = traffic(&mut sim, 10_000, 1000.0, secs(10));
    let delivery = sim.delivery_of(ids);
    let report = sim.report();
    eprintln!("{}", report.human());
    check!(
        sim,
        delivery.rate() >= 0.999,
        "delivery {:.4}",
        delivery.rate()
    );
    check!(sim, report.counters.misdelivered == 0, "misdelivered");
    check_routing_quality(&sim);
}

/// A network of `peers` with the default strategy and one peer in ten running a server.
pub fn network(seed: u64, peers: usize) -> SimConfig {
    SimConfig {
        seed,
        peers,
        servers: peers / 10,
        ..SimConfig::default()
    }
}

/// Links one end holds and the other does not, among those that last: a check at one
/// instant can catch a close on its way to the far end (closes travel behind the frames
/// sent before them), so only problems still there 2 s later count.
pub fn lasting_link_inconsistencies(sim: &mut Sim) -> Vec<String> {
    let first = sim.link_inconsistencies();
    if first.is_empty() {
        return first;
    }
    sim.run_for(secs(2));
    let again = sim.link_inconsistencies();
    first.into_iter().filter(|p| again.contains(p)).collect()
}

/// 300 peers and a scenario that touches every source of randomness and every fault:
/// latency tail, jitter, loss, duplication, churn with crashes, a partition, restarts and
/// traffic, all scheduled by 22 s (run it to 40 s).
pub fn eventful(seed: u64) -> Sim {
    let config = SimConfig {
        seed,
        peers: 300,
        servers: 30,
        net: NetConfig {
            link: LinkModel {
                loss: 0.01,
                duplicate: 0.01,
                ..LinkModel::default()
            },
            ..NetConfig::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config).expect("valid");
    let t = |s: u64| Time::ZERO + secs(s);
    sim.at(
        t(8),
        Action::Traffic(Traffic {
            messages: 1_000,
            rate: 50.0,
        }),
    );
    sim.at(
        t(10),
        Action::Churn(Churn {
            joins_per_sec: 2.0,
            leaves_per_sec: 2.0,
            crash: true,
        }),
    );
    sim.at(t(12), Action::Crash(vec![5, 6, 7]));
    sim.at(t(14), Action::Partition(vec![(0..100).collect()]));
    sim.at(t(18), Action::Heal);
    sim.at(t(20), Action::Restart(vec![5, 6, 7]));
    sim.at(t(22), Action::StopChurn);
    sim
}
