//! Churn at 10,000 peers (issue 8): delivery recovers within 30 s after 30% of the peers
//! crash at once, and stays >= 99% while 1% of the peers leave and 1% join per minute.

mod common;

use common::{converged, network, secs, traffic};
use peer_relay_sim::{Action, Churn};

#[test]
fn ten_thousand_peers_recover_within_thirty_seconds_after_thirty_percent_crash() {
    let mut sim = converged(network(30, 10_000));
    let crash_at = sim.now();
    let victims: Vec<usize> = (0..sim.peer_count()).filter(|i| i % 10 < 3).collect();
    sim.apply(Action::Crash(victims));
    check!(
        sim,
        sim.alive_count() == 7_000,
        "alive {}",
        sim.alive_count()
    );
    let mut curve = Vec::new();
    for _ in 0..6 {
        let ids = traffic(&mut sim, 500, 100.0, secs(0));
        curve.push(ids);
    }
    let probe = traffic(&mut sim, 2_000, 200.0, secs(10));
    let rates: Vec<String> = curve
        .iter()
        .map(|ids| format!("{:.3}", sim.delivery_of(ids.clone()).rate()))
        .collect();
    eprintln!("delivery per 5 s after the crash: {}", rates.join(" "));
    let sent_at = sim.messages()[probe.start].sent_at;
    check!(
        sim,
        sent_at.saturating_duration_since(crash_at) <= secs(31),
        "probe started late"
    );
    let after = sim.delivery_of(probe);
    check!(
        sim,
        after.rate() >= 0.99,
        "30 s after the crash: {:.4} ({} of {})",
        after.rate(),
        after.delivered,
        after.sent
    );
}

#[test]
fn ten_thousand_peers_deliver_under_steady_churn_of_one_percent_per_minute() {
    let mut sim = converged(network(31, 10_000));
    // 1% of 10,000 per minute: 100 crashes and 100 new peers a minute.
    let per_sec = 100.0 / 60.0;
    sim.apply(Action::Churn(Churn {
        joins_per_sec: per_sec,
        leaves_per_sec: per_sec,
        crash: true,
    }));
    // Let the churn run a minute before measuring, then three minutes of traffic.
    sim.run_for(secs(60));
    let ids = traffic(&mut sim, 18_000, 100.0, secs(10));
    let delivery = sim.delivery_of(ids);
    let counters = sim.report().counters;
    eprintln!(
        "delivery {:.4} with {} crashes and {} joins so far",
        delivery.rate(),
        counters.crashes,
        counters.joins
    );
    check!(
        sim,
        counters.crashes >= 300,
        "churn ran: {} crashes",
        counters.crashes
    );
    check!(
        sim,
        delivery.rate() >= 0.99,
        "delivery under churn {:.4} ({} of {})",
        delivery.rate(),
        delivery.delivered,
        delivery.sent
    );
}
