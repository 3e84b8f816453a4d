//! Scrape-cost benchmark: what one `/metrics` request costs the agent in user space.
//!
//! [`bench_fixture`] fills a registry as the daemon would for `gateways` gateways (in routers
//! of 8: 4 mains and 4 backups, so every gateway has a row, transitions and probe series) and a
//! data-plane snapshot of `rules` rules. [`bench_scrape`] then times, per iteration, what the
//! scrape path does after the kernel counters are read: hand a fresh snapshot to
//! [`Metrics::set_datapath`] (a clone of the prepared one, standing in for the daemon building
//! it) and encode the whole exposition. Reading the per-CPU maps is the datapath's cost and is
//! not included.

use std::{
    hint::black_box,
    time::{Duration, Instant, SystemTime},
};

use xwan_common::{Counter, reason};

use super::{DatapathSnapshot, GatewaySnapshot, Metrics};
use crate::{
    datapath::{TcAttachMode, XdpAttachMode},
    health::{Availability, Reason, Stats, Transition},
    router::{GatewayState, Role},
};

/// Gateways per router in the fixture.
const PER_ROUTER: usize = 8;

/// Name of the fixture's gateway `i`.
pub fn bench_gateway_name(i: usize) -> String {
    format!("gw{i:03}")
}

/// Name of the fixture's rule `i`.
pub fn bench_rule_name(i: usize) -> String {
    format!("rule{i:04}")
}

/// A registry filled for `gateways` gateways and the data-plane snapshot of `rules` rules
/// (the benchmark's and the tests' fixture; the snapshot is also set into the registry).
pub fn bench_fixture(rules: usize, gateways: usize) -> (Metrics, DatapathSnapshot) {
    let m = Metrics::new();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let now = std::time::Instant::now();
    for i in 0..gateways {
        let router = format!("router{:02}", i / PER_ROUTER);
        let gw = bench_gateway_name(i);
        let main = i % PER_ROUTER < PER_ROUTER / 2;
        let ready = i % 16 != 15;
        let state = match (ready, main) {
            (false, _) => GatewayState::Unavailable,
            (true, true) => GatewayState::Active,
            (true, false) => GatewayState::OnStandby,
        };
        m.set_gateway(
            &router,
            &gw,
            GatewaySnapshot {
                availability: if ready {
                    Availability::Ready
                } else {
                    Availability::Unavailable
                },
                state,
                role: if main { Role::Main } else { Role::Backup },
                weight: 1 + (i as u32 * 13) % 100,
                distribution: if state == GatewayState::Active {
                    1.0 / (PER_ROUTER / 2) as f64
                } else {
                    0.0
                },
                last_change: Some(t0 + Duration::from_secs(i as u64)),
            },
        );
        let down = Transition {
            at: now,
            from: Availability::Ready,
            to: Availability::Unavailable,
            previous: Reason::Answering,
            reason: Reason::LinkDown,
            since: now,
            rtt: None,
            jitter: None,
            loss: 0.0,
        };
        m.record_transition(&router, &gw, &down);
        if ready {
            let up = Transition {
                from: Availability::Unavailable,
                to: Availability::Ready,
                previous: Reason::LinkDown,
                reason: Reason::Answering,
                ..down
            };
            m.record_transition(&router, &gw, &up);
        }
        for k in 0..10u64 {
            let rtt = (k != 9 || ready).then(|| Duration::from_micros(200 + 997 * k * i as u64));
            m.observe_probe(&gw, rtt);
        }
        m.set_probe_window(
            &gw,
            &Stats {
                last_rtt: Some(Duration::from_millis(3)),
                rtt: Some(Duration::from_millis(3)),
                jitter: Some(Duration::from_micros(150 + i as u64)),
                loss: if ready { 0.0 } else { 0.1 },
                sent: 10,
                lost: (!ready) as u64,
                ..Stats::default()
            },
        );
    }
    m.record_reload(true);
    for k in 0..20 {
        m.observe_commit(Duration::from_micros(50 + 40 * k));
    }
    let c = |i: usize| Counter {
        packets: 1_000 + 7 * i as u64,
        bytes: 1_500_000 + 10_501 * i as u64,
    };
    let snapshot = DatapathSnapshot {
        rules: (0..rules).map(|i| (bench_rule_name(i), c(i))).collect(),
        gateways: (0..gateways)
            .map(|i| (bench_gateway_name(i), c(i)))
            .collect(),
        gateway_failures: (0..gateways)
            .map(|i| (bench_gateway_name(i), c(i)))
            .collect(),
        gateway_new_flows: (0..gateways)
            .map(|i| (bench_gateway_name(i), i as u64))
            .collect(),
        reasons: (0..reason::COUNT as usize).map(c).collect(),
        flow_entries: Some(12_345),
        flow_capacity: Some(262_144),
        flow_memory: vec![("XWAN_FLOWS", 34_000_000), ("XWAN_RETURN", 34_000_000)],
        return_entries: Some(678),
        xdp_attach: vec![
            ("lan0".into(), XdpAttachMode::Native),
            ("lan1".into(), XdpAttachMode::Generic),
        ],
        tc_attach: vec![("lan0".into(), TcAttachMode::Tcx)],
    };
    m.set_datapath(snapshot.clone());
    (m, snapshot)
}

/// Times `iterations` scrapes of a registry with `rules` rules and `gateways` gateways (see the
/// module docs): returns the median and the 99th percentile, in microseconds.
pub fn bench_scrape(rules: usize, gateways: usize, iterations: usize) -> (f64, f64) {
    let (m, snapshot) = bench_fixture(rules, gateways);
    let iterations = iterations.max(1);
    // One warm-up scrape sizes the output buffer, as in a running agent.
    black_box(m.encode());
    let mut us: Vec<f64> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            m.set_datapath(black_box(snapshot.clone()));
            let text = m.encode();
            black_box(text.len());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
    (at(0.5), at(0.99))
}
