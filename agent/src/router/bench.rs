//! Commit-latency benchmark of the router logic: from one gateway verdict to every router's
//! table ready to commit.
//!
//! [`bench_recompute`] builds `routers` routers over the same `gateways_per_router` gateways
//! (the worst case: the flapping gateway is a main of every router, so every table changes),
//! with varied weights, thresholds and backup modes, then alternates one gateway between
//! Unavailable and Ready. Each iteration times [`super::tables`] for all routers, including
//! allocating the new tables and the monitor rows. The map writes and the flip are the datapath's and are not included.
//!
//! [`bench_disruption`] measures what a history-independent table costs in moved slots: for
//! random weighted sets, the slots that change hands between the *other* gateways when one
//! leaves (or, read the other way, returns).
//!
//! What a reader may change: the router mix, as long as the flapping gateway still reaches
//! every router (otherwise the number says less than it seems).

use std::hint::black_box;
use std::time::Instant;

use super::{Failback, LoadBalancing, Member, OnFailure, RouterOptions, RouterSpec, tables};

/// Timings of one benchmark run, in microseconds per recomputation of all routers.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct BenchResult {
    pub routers: usize,
    pub gateways_per_router: usize,
    pub iterations: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "router recompute: {} routers x {} gateways, {} iterations: median {:.1} µs, \
             p99 {:.1} µs, mean {:.1} µs, max {:.1} µs",
            self.routers,
            self.gateways_per_router,
            self.iterations,
            self.median_us,
            self.p99_us,
            self.mean_us,
            self.max_us
        )
    }
}

/// The benchmark's routers: gateways `1..=gateways_per_router`; gateway 1 is a main of every
/// router; about half of the others are mains, the rest backups.
pub fn bench_specs(routers: usize, gateways_per_router: usize) -> Vec<RouterSpec> {
    let gpr = gateways_per_router.max(1) as u16;
    (0..routers)
        .map(|r| {
            let mains_n = 1 + (gpr - 1) / 2;
            let member = |g: u16| {
                let weight = 1 + (r as u32 * 7 + g as u32 * 13) % 100;
                Member::new(&format!("gw{g}"), g, weight).expect("weight is not 0")
            };
            RouterSpec {
                name: format!("bench{r}"),
                mains: (1..=mains_n).map(member).collect(),
                backups: (mains_n + 1..=gpr).map(member).collect(),
                options: RouterOptions {
                    // Varied: some routers bring backups in as soon as one main is down.
                    backup_threshold: 1 + r % mains_n as usize,
                    activate_all_backups: r % 2 == 0,
                    load_balancing: if r % 3 == 0 {
                        LoadBalancing::Source
                    } else {
                        LoadBalancing::Connection
                    },
                    on_failure: if r % 2 == 1 {
                        OnFailure::DefaultRoute
                    } else {
                        OnFailure::Drop
                    },
                    failback: if r % 4 == 0 {
                        Failback::All
                    } else {
                        Failback::NewConnections
                    },
                },
                preferred: None,
            }
        })
        .collect()
}

/// Times the recomputation of `routers` tables after one gateway verdict, `iterations`
/// times (at least 1), alternating the verdict (gateway 1 down, up, down, ...).
pub fn bench_recompute(
    routers: usize,
    gateways_per_router: usize,
    iterations: usize,
) -> BenchResult {
    let specs = bench_specs(routers, gateways_per_router);
    let iterations = iterations.max(1);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let gateway1_up = i % 2 == 1;
        let ready = move |g: u16| {
            if g != 1 || gateway1_up {
                crate::router::Availability::Ready
            } else {
                crate::router::Availability::Unavailable
            }
        };
        let start = Instant::now();
        let out = tables(black_box(&specs), &ready);
        let elapsed = start.elapsed();
        black_box(out);
        samples.push(elapsed.as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    BenchResult {
        routers,
        gateways_per_router,
        iterations,
        median_us: pick(0.5),
        p99_us: pick(0.99),
        mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
        max_us: samples[samples.len() - 1],
    }
}

/// Slots moved between the other gateways when one of `gateways` leaves, over `trials`
/// random sets (weights 1–100, a seeded generator: the same figures every run).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Disruption {
    pub gateways: usize,
    pub trials: usize,
    /// Mean and worst extra moves, in slots (of `ROUTER_SLOTS`).
    pub mean: f64,
    pub worst: usize,
    /// Mean time of one table, microseconds.
    pub fill_us: f64,
}

impl std::fmt::Display for Disruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |x: f64| x * 100.0 / xwan_common::maps::ROUTER_SLOTS as f64;
        write!(
            f,
            "{:>3} gateways, one leaves ({} sets): other slots moved mean {:.1} ({:.2} %), \
             worst {} ({:.2} %); one table {:.0} µs",
            self.gateways,
            self.trials,
            self.mean,
            pct(self.mean),
            self.worst,
            pct(self.worst as f64),
            self.fill_us
        )
    }
}

/// See [`Disruption`].
pub fn bench_disruption(gateways: usize, trials: usize) -> Disruption {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut sum, mut worst, mut time) = (0usize, 0usize, 0.0f64);
    let trials = trials.max(1);
    for t in 0..trials {
        let set: Vec<Member> = (0..gateways)
            .map(|g| {
                let name = format!("trial{t}-gw{g}");
                Member::new(&name, g as u16, 1 + (next() % 100) as u32).expect("weight >= 1")
            })
            .collect();
        let gone = (next() % gateways as u64) as u16;
        let rest: Vec<Member> = set.iter().copied().filter(|m| m.gateway != gone).collect();
        let start = Instant::now();
        let before = super::fill(black_box(&set));
        time += start.elapsed().as_secs_f64() * 1e6;
        let after = super::fill(&rest);
        let moved = (before.iter().zip(&after))
            .filter(|&(a, b)| a != b && *a != gone)
            .count();
        sum += moved;
        worst = worst.max(moved);
    }
    Disruption {
        gateways,
        trials,
        mean: sum as f64 / trials as f64,
        worst,
        fill_us: time / trials as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xwan_common::plan::RouterTable;

    #[test]
    fn every_router_changes_with_gateway_1() {
        let specs = bench_specs(64, 4);
        let up: Vec<RouterTable> = tables(&specs, &|_| crate::router::Availability::Ready)
            .into_iter()
            .map(|x| x.0)
            .collect();
        let down: Vec<RouterTable> = tables(&specs, &|g| {
            if g != 1 {
                crate::router::Availability::Ready
            } else {
                crate::router::Availability::Unavailable
            }
        })
        .into_iter()
        .map(|x| x.0)
        .collect();
        assert!(up.iter().zip(&down).all(|(a, b)| a.slots != b.slots));
        assert!(down.iter().all(|t| !t.slots.contains(&1)));
    }

    #[test]
    fn disruption_stays_within_the_bound() {
        let d = bench_disruption(8, 20);
        assert_eq!((d.gateways, d.trials), (8, 20));
        assert!(d.mean <= d.worst as f64);
        assert!(d.worst <= super::super::EXTRA_MOVES_BOUND, "{d}");
    }

    #[test]
    fn small_run() {
        let r = bench_recompute(4, 3, 5);
        assert_eq!((r.routers, r.iterations), (4, 5));
        assert!(r.median_us <= r.p99_us && r.p99_us <= r.max_us);
    }
}
