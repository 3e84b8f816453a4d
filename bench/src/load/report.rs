//! Summaries (medians, ratios, goals), the table on stdout, the JSON file, and the smoke
//! checks.
//!
//! A mode's own maximum measures the router only when the router is the limit. Where the
//! source (with the sinks, which share its CPU) limits it instead, the row is marked
//! *source-limited*: its rate is the source's, its cost per packet that of a light load, and
//! the equal-load rows (every mode offered the same rate) are the comparison to read.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{
    Results, Settings, chart,
    layout::LAT_BUCKET_NS,
    measure::Sample,
    modes::{ALL, Mode},
    source::Source,
    topology::Links,
    traffic::{CLASSES, Mix},
};

/// A row is source-limited when its router forwarded nearly all it was offered (loss below
/// this)...
const SOURCE_LIMITED_LOSS: f64 = 0.05;
/// ...or its router thread had nothing to do for more than the rest of the window (neither
/// ran nor waited for its CPU for this share of it).
const SOURCE_LIMITED_BUSY: f64 = 0.8;
/// An equal-load run's source must send at least this share of the rate asked of it.
const SOURCE_HELD: f64 = 0.97;

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// One mode at one rule count and frame mix: medians over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub links: Links,
    pub mix: Mix,
    pub rules: usize,
    pub mode: Mode,
    pub forwarded_mpps: f64,
    pub runs_mpps: Vec<f64>,
    pub router_ns_per_packet: f64,
    /// What the router CPU could forward if this mode had it to itself: 1 / ns per packet.
    /// The fair comparison where the source and sinks, not the router, limit the
    /// forwarded rate (router busy well below 100 %).
    pub router_capacity_mpps: f64,
    pub router_busy: f64,
    pub loss: f64,
    /// The source, not the router, limited this rate (see the module doc): its Mpps and
    /// ratios by Mpps say nothing about the router; read the equal-load rows.
    pub source_limited: bool,
    /// Windows that stayed disturbed after every retry.
    pub disturbed_runs: usize,
    pub wrong_link: u64,
    pub vs_kernel_maps: f64,
    pub vs_bare_xdp: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    #[serde(flatten)]
    pub load: EqualLoad,
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Percentiles at this value are "at least": the histogram's last bucket.
    pub max_us: f64,
}

/// One mode at an offered rate every mode shares: medians over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct EqualLoad {
    pub mode: Mode,
    pub rules: usize,
    pub offered_mpps: f64,
    /// What the source actually sent (below `offered_mpps`: it could not hold the rate).
    pub sent_mpps: f64,
    pub forwarded_mpps: f64,
    pub loss: f64,
    /// The router thread's CPU time per forwarded packet at this offered rate: every mode
    /// carrying the same load, none saturated (unless it cannot carry it).
    pub router_ns_per_packet: f64,
}

impl EqualLoad {
    /// From a mode's runs at one offered rate (non-empty).
    pub fn new(runs: &[Sample], offered_mpps: f64) -> EqualLoad {
        let med = |f: fn(&Sample) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        EqualLoad {
            mode: runs[0].mode,
            rules: runs[0].rules,
            offered_mpps,
            sent_mpps: med(|s| s.offered_mpps),
            forwarded_mpps: med(|s| s.forwarded_mpps),
            loss: med(|s| s.loss),
            router_ns_per_packet: med(|s| s.router_ns_per_packet),
        }
    }

    /// The mode, what it forwarded and what that cost the router, for the table on stdout.
    fn line(&self) -> String {
        let short = if self.sent_mpps < SOURCE_HELD * self.offered_mpps {
            format!(" (the source sent only {:.3} Mpps)", self.sent_mpps)
        } else {
            String::new()
        };
        format!(
            "{:<16} forwarded {:.3} Mpps, loss {:.1} %, router {:.0} ns/packet{short}",
            self.mode.name(),
            self.forwarded_mpps,
            self.loss * 100.0,
            self.router_ns_per_packet
        )
    }
}

impl Latency {
    /// From a mode's runs at one offered rate (non-empty) and their summed histogram:
    /// percentiles over every packet, the rest medians over the runs.
    pub fn new(runs: &[Sample], hist: &[u64], offered_mpps: f64) -> Latency {
        let total: u64 = hist.iter().sum();
        let pct = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let want = (total as f64 * p).ceil() as u64;
            let mut acc = 0;
            for (i, n) in hist.iter().enumerate() {
                acc += n;
                if acc >= want {
                    // The bucket's upper edge.
                    return ((i as u64 + 1) * LAT_BUCKET_NS) as f64 / 1e3;
                }
            }
            (hist.len() as u64 * LAT_BUCKET_NS) as f64 / 1e3
        };
        Latency {
            load: EqualLoad::new(runs, offered_mpps),
            samples: total,
            p50_us: pct(0.5),
            p90_us: pct(0.9),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            max_us: (hist.len() as u64 * LAT_BUCKET_NS) as f64 / 1e3,
        }
    }
}

#[derive(Serialize)]
struct Goals {
    rules: usize,
    xwan_vs_kernel_maps: f64,
    xwan_vs_kernel_maps_goal: f64,
    xwan_vs_bare_xdp: f64,
    xwan_vs_bare_xdp_goal: f64,
    xwan_max_rules_vs_min_rules: f64,
    xwan_max_rules_vs_min_rules_goal: f64,
    /// The same three ratios by router CPU per packet (capacity), which holds also when the
    /// source or the sinks limit the forwarded rate (see `bare_xdp_router_busy`).
    xwan_vs_kernel_maps_by_cpu: f64,
    xwan_vs_bare_xdp_by_cpu: f64,
    xwan_max_rules_vs_min_rules_by_cpu: f64,
    bare_xdp_router_busy: f64,
    /// Against `bare-xdp-3` (the bare redirect with the policy's fan-out over three links),
    /// by router CPU per packet: the bound for the same work.
    xwan_vs_bare_xdp_3_by_cpu: f64,
    /// By router CPU per packet with every mode offered the same rate (the latency runs, at
    /// `equal_load_mpps`; 0 without them). The ratios above compare each mode at its own
    /// load, and a router's cost per packet falls as its load rises (fuller polls, fewer
    /// wake-ups per packet): a bound measured below saturation is held to a dearer point.
    equal_load_mpps: f64,
    xwan_vs_kernel_maps_by_cpu_at_equal_load: f64,
    xwan_vs_bare_xdp_by_cpu_at_equal_load: f64,
    xwan_vs_bare_xdp_3_by_cpu_at_equal_load: f64,
    /// The `netfilter` mode at equal load: kernel-maps' CPU per packet over the kernel
    /// path's (`xwan-netfilter`, a flow's first packets; goal ≥ 1) and over the fast path's
    /// (`xwan-offload`, established flows; goal ≥ 2), and over the fast path's with source
    /// NAT (`xwan-offload-nat`). 0 where a mode did not run.
    netfilter_first_packets_vs_kernel_maps_by_cpu_at_equal_load: f64,
    netfilter_established_vs_kernel_maps_by_cpu_at_equal_load: f64,
    netfilter_established_nat_vs_kernel_maps_by_cpu_at_equal_load: f64,
    /// The same over TUN links (the bare mode is XDP pass + TC redirect there), and against
    /// kernel policy routing with maps; 0 without those runs.
    tun_equal_load_mpps: f64,
    tun_xwan_vs_kernel_maps_by_cpu_at_equal_load: f64,
    tun_xwan_vs_bare_by_cpu_at_equal_load: f64,
    /// Modes whose own maximum at `rules` (veth, 64-byte frames) the source limited: the
    /// ratios by forwarded rate and "at its own load" involving them compare the source with
    /// itself; the equal-load ratios are the ones to read.
    source_limited: Vec<&'static str>,
}

/// One traffic-source candidate on the calibration topology (`--compare-sources`).
#[derive(Clone, Debug, Serialize)]
pub struct SourceRun {
    pub source: &'static str,
    pub mix: Mix,
    pub offered_mpps: f64,
    pub received_mpps: f64,
    pub source_ns_per_packet: f64,
    /// Share of the window the source thread ran (TX ring only; live frames always ≈ 1).
    pub source_busy: f64,
}

#[derive(Serialize)]
struct ClassInfo {
    name: &'static str,
    link: usize,
    share: f64,
}

#[derive(Serialize)]
struct Machine {
    kernel: String,
    cpu_model: String,
    cpus: usize,
    source_cpu: usize,
    router_cpu: usize,
}

#[derive(Serialize)]
struct Json<'a> {
    unit: &'static str,
    machine: Machine,
    /// The traffic source (`live` or `relay`) and why it was chosen.
    source: Source,
    source_reason: &'a str,
    runs: usize,
    window_s: f64,
    flows: usize,
    /// Frames each flow sends in a row (`--train`; 1 = no two frames of a flow in a row).
    train: u32,
    /// Index = the class index of `class_link`; `link` is where policy modes send it.
    classes: Vec<ClassInfo>,
    calibration: &'a [Sample],
    sources: &'a [SourceRun],
    summary: &'a [Row],
    goals: Option<Goals>,
    latency: &'a [Latency],
    equal_load_tun: &'a [EqualLoad],
    failover: &'a [super::failover::Failover],
    samples: &'a [Sample],
}

pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(Links, Mix, usize)> = vec![];
    for s in samples {
        if !keys.contains(&(s.links, s.mix, s.rules)) {
            keys.push((s.links, s.mix, s.rules));
        }
    }
    let mut out = vec![];
    for (links, mix, rules) in keys {
        let pick = |m: Mode| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.links == links && s.mix == mix && s.rules == rules && s.mode == m)
                .collect()
        };
        let mpps = |m: Mode| median(&pick(m).iter().map(|s| s.forwarded_mpps).collect::<Vec<_>>());
        let (maps, bare) = (mpps(Mode::KernelMaps), mpps(Mode::BareXdp));
        for mode in ALL {
            let v = pick(mode);
            if v.is_empty() {
                continue;
            }
            let f = mpps(mode);
            let busy = median(&v.iter().map(|s| s.router_busy).collect::<Vec<_>>());
            let loss = median(&v.iter().map(|s| s.loss).collect::<Vec<_>>());
            let wanted = median(
                &v.iter()
                    .map(|s| s.router_busy + s.router_wait_ms / 1e3 / s.window_s)
                    .collect::<Vec<_>>(),
            );
            out.push(Row {
                links,
                mix,
                rules,
                mode,
                forwarded_mpps: f,
                runs_mpps: v.iter().map(|s| s.forwarded_mpps).collect(),
                router_ns_per_packet: median(
                    &v.iter().map(|s| s.router_ns_per_packet).collect::<Vec<_>>(),
                ),
                router_capacity_mpps: {
                    let ns = median(&v.iter().map(|s| s.router_ns_per_packet).collect::<Vec<_>>());
                    if ns > 0.0 { 1e3 / ns } else { 0.0 }
                },
                router_busy: busy,
                loss,
                source_limited: loss < SOURCE_LIMITED_LOSS || wanted < SOURCE_LIMITED_BUSY,
                disturbed_runs: v.iter().filter(|s| s.disturbed).count(),
                wrong_link: v.iter().map(|s| s.wrong_link).sum(),
                vs_kernel_maps: if maps > 0.0 { f / maps } else { 0.0 },
                vs_bare_xdp: if bare > 0.0 { f / bare } else { 0.0 },
            });
        }
    }
    out
}

fn goals(rows: &[Row], latency: &[Latency], tun: &[EqualLoad]) -> Option<Goals> {
    let small: Vec<&Row> = rows
        .iter()
        .filter(|r| r.mix == Mix::Small && r.links == Links::Veth)
        .collect();
    let max = small.iter().map(|r| r.rules).max()?;
    let min = small.iter().map(|r| r.rules).min()?;
    let xwan = |rules| {
        small
            .iter()
            .find(|r| r.mode == Mode::Xwan && r.rules == rules)
            .copied()
    };
    let top = xwan(max)?;
    let mode_at = |m: Mode| {
        small
            .iter()
            .find(|r| r.mode == m && r.rules == max)
            .copied()
    };
    let cap = |r: Option<&Row>| r.map_or(0.0, |r| r.router_capacity_mpps);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let equal_load_ns = |m: Mode| {
        latency
            .iter()
            .find(|l| l.load.mode == m && l.load.rules == max)
            .map_or(0.0, |l| l.load.router_ns_per_packet)
    };
    let xwan_equal_load_ns = equal_load_ns(Mode::Xwan);
    let tun_ns = |m: Mode| {
        tun.iter()
            .find(|l| l.mode == m)
            .map_or(0.0, |l| l.router_ns_per_packet)
    };
    Some(Goals {
        tun_equal_load_mpps: tun.first().map_or(0.0, |l| l.offered_mpps),
        tun_xwan_vs_kernel_maps_by_cpu_at_equal_load: ratio(
            tun_ns(Mode::KernelMaps),
            tun_ns(Mode::Xwan),
        ),
        tun_xwan_vs_bare_by_cpu_at_equal_load: ratio(tun_ns(Mode::BareXdp), tun_ns(Mode::Xwan)),
        equal_load_mpps: latency.first().map_or(0.0, |l| l.load.offered_mpps),
        xwan_vs_kernel_maps_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::KernelMaps),
            xwan_equal_load_ns,
        ),
        xwan_vs_bare_xdp_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::BareXdp),
            xwan_equal_load_ns,
        ),
        xwan_vs_bare_xdp_3_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::BareXdp3),
            xwan_equal_load_ns,
        ),
        netfilter_first_packets_vs_kernel_maps_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::KernelMaps),
            equal_load_ns(Mode::XwanNetfilter),
        ),
        netfilter_established_vs_kernel_maps_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::KernelMaps),
            equal_load_ns(Mode::XwanOffload),
        ),
        netfilter_established_nat_vs_kernel_maps_by_cpu_at_equal_load: ratio(
            equal_load_ns(Mode::KernelMaps),
            equal_load_ns(Mode::XwanOffloadNat),
        ),
        xwan_vs_kernel_maps_by_cpu: ratio(top.router_capacity_mpps, cap(mode_at(Mode::KernelMaps))),
        xwan_vs_bare_xdp_by_cpu: ratio(top.router_capacity_mpps, cap(mode_at(Mode::BareXdp))),
        xwan_max_rules_vs_min_rules_by_cpu: ratio(top.router_capacity_mpps, cap(xwan(min))),
        bare_xdp_router_busy: mode_at(Mode::BareXdp).map_or(0.0, |r| r.router_busy),
        xwan_vs_bare_xdp_3_by_cpu: ratio(top.router_capacity_mpps, cap(mode_at(Mode::BareXdp3))),
        source_limited: small
            .iter()
            .filter(|r| r.rules == max && r.source_limited)
            .map(|r| r.mode.name())
            .collect(),
        rules: max,
        xwan_vs_kernel_maps: top.vs_kernel_maps,
        xwan_vs_kernel_maps_goal: 3.0,
        xwan_vs_bare_xdp: top.vs_bare_xdp,
        xwan_vs_bare_xdp_goal: 0.75,
        xwan_max_rules_vs_min_rules: top.forwarded_mpps / xwan(min)?.forwarded_mpps.max(1e-9),
        xwan_max_rules_vs_min_rules_goal: 0.9,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}

pub fn write(settings: &Settings, r: &Results) -> Result<()> {
    let rows = rows(&r.samples);
    println!("\nsource: {} ({})", r.source.source.name(), r.source.reason);
    println!(
        "{:<10} {:>6} {:<16} {:>8} {:>10} {:>9} {:>6} {:>7} {:>9} {:>8} {:>6} {:>7}",
        "mix",
        "rules",
        "mode",
        "Mpps",
        "ns/packet",
        "capacity",
        "busy",
        "loss",
        "×maps",
        "×bare",
        "wrong",
        "limit"
    );
    for c in &r.calibration {
        println!(
            "{:<10} {:>6} {:<16} {:>8.3} {:>10.1} {:>9} {:>5.0}% {:>6.1}% {:>9} {:>8} {:>6}",
            format!("veth/{}", c.mix.name()),
            "-",
            "source alone",
            c.forwarded_mpps,
            c.router_ns_per_packet,
            "",
            c.router_busy * 100.0,
            c.loss * 100.0,
            "",
            "",
            ""
        );
    }
    for row in &rows {
        println!(
            "{:<10} {:>6} {:<16} {:>8.3} {:>10.1} {:>9.3} {:>5.0}% {:>6.1}% {:>9.2} {:>8.2} {:>6} {:>7}",
            format!("{}/{}", row.links.name(), row.mix.name()),
            row.rules,
            row.mode.name(),
            row.forwarded_mpps,
            row.router_ns_per_packet,
            row.router_capacity_mpps,
            row.router_busy * 100.0,
            row.loss * 100.0,
            row.vs_kernel_maps,
            row.vs_bare_xdp,
            row.wrong_link,
            if row.source_limited { "source" } else { "" }
        );
    }
    let limited: Vec<String> = rows
        .iter()
        .filter(|r| r.source_limited)
        .map(|r| {
            format!(
                "{} ({}/{}, {} rules)",
                r.mode.name(),
                r.links.name(),
                r.mix.name(),
                r.rules
            )
        })
        .collect();
    if !limited.is_empty() {
        println!(
            "limit \"source\": the {} source (with the sinks on its CPU), not the router, set these \
             modes' own maximum (forwarded ≥ {:.0} % of offered, or router idle > {:.0} %): {}. \
             Their Mpps is the source's and their ns/packet that of a lighter load; compare them \
             by router CPU per packet at equal load (below).",
            r.source.source.name(),
            (1.0 - SOURCE_LIMITED_LOSS) * 100.0,
            (1.0 - SOURCE_LIMITED_BUSY) * 100.0,
            limited.join(", ")
        );
    }
    for c in &r.sources {
        println!(
            "source candidate {:<18} {:>4} frames: offered {:.3} Mpps, received {:.3} Mpps, {:.0} ns CPU per frame",
            c.source,
            c.mix.name(),
            c.offered_mpps,
            c.received_mpps,
            c.source_ns_per_packet
        );
    }
    let goals = goals(&rows, &r.latency, &r.equal_load_tun);
    if let Some(g) = &goals {
        println!(
            "\ngoals at {} rules: xwan / kernel-maps = {:.2} (goal ≥ 3), xwan / bare-xdp = {:.2} \
             (goal ≥ 0.75), xwan at max / min rules = {:.2} (goal ≥ 0.9)",
            g.rules, g.xwan_vs_kernel_maps, g.xwan_vs_bare_xdp, g.xwan_max_rules_vs_min_rules
        );
        println!(
            "by router CPU per packet, each mode at its own load: xwan / kernel-maps = {:.2}, \
             xwan / bare-xdp = {:.2}, xwan at max / min rules = {:.2} (bare-xdp's router was busy \
             {:.0} %: below 100 %, the source and sinks limit its forwarded rate, and its cost per \
             packet is that of a lighter load)",
            g.xwan_vs_kernel_maps_by_cpu,
            g.xwan_vs_bare_xdp_by_cpu,
            g.xwan_max_rules_vs_min_rules_by_cpu,
            g.bare_xdp_router_busy * 100.0
        );
        println!(
            "by router CPU per packet against bare-xdp-3 (the same fan-out over three links): \
             xwan / bare-xdp-3 = {:.2}",
            g.xwan_vs_bare_xdp_3_by_cpu
        );
        if !g.source_limited.is_empty() {
            println!(
                "at {} rules the source limited {}: the ratios above that involve them compare \
                 the source with itself; read the equal-load ratios",
                g.rules,
                g.source_limited.join(", ")
            );
        }
        if g.equal_load_mpps > 0.0 {
            println!(
                "by router CPU per packet at equal load ({:.3} Mpps offered to every mode, the \
                 latency runs): xwan / kernel-maps = {:.2}, xwan / bare-xdp = {:.2}, \
                 xwan / bare-xdp-3 = {:.2}",
                g.equal_load_mpps,
                g.xwan_vs_kernel_maps_by_cpu_at_equal_load,
                g.xwan_vs_bare_xdp_by_cpu_at_equal_load,
                g.xwan_vs_bare_xdp_3_by_cpu_at_equal_load
            );
            println!(
                "netfilter forwarding, by router CPU per packet at equal load: kernel-maps / \
                 xwan-netfilter (first packets) = {:.2} (goal ≥ 1), kernel-maps / xwan-offload \
                 (established flows) = {:.2} (goal ≥ 2), kernel-maps / xwan-offload-nat \
                 (established, masqueraded) = {:.2}",
                g.netfilter_first_packets_vs_kernel_maps_by_cpu_at_equal_load,
                g.netfilter_established_vs_kernel_maps_by_cpu_at_equal_load,
                g.netfilter_established_nat_vs_kernel_maps_by_cpu_at_equal_load
            );
        }
        if g.tun_equal_load_mpps > 0.0 {
            println!(
                "TUN links, by router CPU per packet at equal load ({:.3} Mpps offered to every \
                 mode): xwan / kernel-maps = {:.2}, xwan / bare (XDP pass + TC redirect) = {:.2}",
                g.tun_equal_load_mpps,
                g.tun_xwan_vs_kernel_maps_by_cpu_at_equal_load,
                g.tun_xwan_vs_bare_by_cpu_at_equal_load
            );
        }
    }
    if !r.equal_load_tun.is_empty() {
        println!(
            "\nTUN links at {:.3} Mpps offered:",
            r.equal_load_tun[0].offered_mpps
        );
        for l in &r.equal_load_tun {
            println!("  {}", l.line());
        }
    }
    if !r.latency.is_empty() {
        println!(
            "\nlatency (source → sink, one-way, IPv4) at {:.3} Mpps offered:",
            r.latency[0].load.offered_mpps
        );
        for l in &r.latency {
            let us = |v: f64| {
                if v >= l.max_us {
                    format!("≥ {v:.0} µs")
                } else {
                    format!("{v:.0} µs")
                }
            };
            println!(
                "  {}, p50 {}, p90 {}, p99 {}, p99.9 {}",
                l.load.line(),
                us(l.p50_us),
                us(l.p90_us),
                us(l.p99_us),
                us(l.p999_us)
            );
        }
    }
    for f in &r.failover {
        println!(
            "failover, {:?} cut of link 2 at {:.3} Mpps: SQL flows on the backup link after {:.0} ms, {} packets lost ({:.1} % of those sent meanwhile)",
            f.cut,
            f.offered_mpps,
            f.moved_after_ms,
            f.lost_packets,
            f.lost_share * 100.0
        );
    }
    let json = Json {
        unit: "Mpps forwarded (median of runs); router CPU ns per forwarded packet",
        machine: Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpu_model: cpu_model(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            source_cpu: settings.source_cpu,
            router_cpu: settings.router_cpu,
        },
        source: r.source.source,
        source_reason: &r.source.reason,
        runs: settings.runs,
        window_s: settings.window.as_secs_f64(),
        flows: settings.flows,
        train: settings.train,
        classes: CLASSES
            .iter()
            .map(|c| ClassInfo {
                name: c.name,
                link: c.link + 1,
                share: c.weight as f64 / 20.0,
            })
            .collect(),
        calibration: &r.calibration,
        sources: &r.sources,
        summary: &rows,
        goals,
        latency: &r.latency,
        equal_load_tun: &r.equal_load_tun,
        failover: &r.failover,
        samples: &r.samples,
    };
    for p in [&settings.json, &settings.svg] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
    }
    std::fs::write(&settings.json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", settings.json.display()))?;
    std::fs::write(&settings.svg, chart::svg(&rows, &r.calibration))
        .with_context(|| format!("writing {}", settings.svg.display()))?;
    Ok(())
}

/// The smoke test's verdict: every mode forwarded something; xwan sent every class only to
/// its link.
pub fn smoke_check(r: &Results) -> Result<()> {
    let mut errors = vec![];
    for s in &r.samples {
        if s.forwarded_mpps <= 0.0 {
            errors.push(format!(
                "{} at {} rules forwarded nothing ({:.3} Mpps offered)",
                s.mode.name(),
                s.rules,
                s.offered_mpps
            ));
        }
        if s.mode == Mode::Xwan && s.wrong_link > 0 {
            errors.push(format!(
                "xwan at {} rules sent {} packets to the wrong link (per class and link: {:?})",
                s.rules, s.wrong_link, s.class_link
            ));
        }
    }
    if !errors.is_empty() {
        bail!("load smoke test failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}
