//! One measurement: the generator runs flat out (or at a set pace), and over a window the
//! harness reads what the sinks received per link and class, what the source sent, and how
//! long the router's receive thread ran and waited (`/proc/TID/schedstat`).
//!
//! Router CPU per packet = the router thread's CPU time in the window / packets forwarded.
//! All of the router's forwarding work (XDP, the kernel's IP stack, nftables, the transmit
//! into the link veth) runs in that one thread (threaded NAPI of its LAN veth), so this is
//! exact up to the thread's own bookkeeping, and it stays right when the thread is not
//! saturated. A window is *disturbed* when the router thread waited for its CPU (another
//! process ran there) for more than [`DISTURBED`] of it; such windows are retried.
//!
//! Priorities: the sinks share the source's CPU and must never be the bottleneck, so the
//! source's threads run at nice 19 below them. With `--realtime` the router and sink threads
//! run under `SCHED_FIFO` 2 and the source's under `SCHED_FIFO` 1, so other processes on a
//! shared machine cannot take the CPUs from them (the kernel's RT throttling still leaves
//! them 5 %).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aya::Ebpf;
use serde::Serialize;

use super::{
    Settings,
    modes::Mode,
    source::Generator,
    sys::{SchedStat, pin, realtime},
    topology::{LINKS, Links, Topology, drain},
    traffic::{self, CLASSES, Mix},
};

/// Share of a window the router thread may wait for its CPU before the window is retried.
pub const DISTURBED: f64 = 0.03;

/// The router thread's tolerated wait share: [`DISTURBED`], plus under `SCHED_FIFO` the
/// share the kernel keeps for other tasks (RT throttling, `sched_rt_runtime_us` of
/// `sched_rt_period_us`: 5 % by default), which a saturated RT thread always waits.
fn disturbed_share(realtime: bool) -> f64 {
    if !realtime {
        return DISTURBED;
    }
    let read = |f: &str| -> Option<f64> {
        std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    match (read("sched_rt_runtime_us"), read("sched_rt_period_us")) {
        (Some(r), Some(p)) if r > 0.0 && p > 0.0 => DISTURBED + (1.0 - r / p).max(0.0),
        _ => DISTURBED,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub links: Links,
    pub mode: Mode,
    pub rules: usize,
    pub mix: Mix,
    pub window_s: f64,
    /// Windows measured for this sample (1 = undisturbed at once).
    pub attempts: usize,
    pub disturbed: bool,
    pub offered_mpps: f64,
    pub forwarded_mpps: f64,
    /// 1 − forwarded / offered.
    pub loss: f64,
    /// Router thread CPU time per forwarded packet.
    pub router_ns_per_packet: f64,
    /// Share of the window the router thread was on its CPU (≈ 1: the router is the limit).
    pub router_busy: f64,
    pub router_wait_ms: f64,
    /// The router's receive threads (threaded NAPI of its LAN veth) measured.
    pub router_threads: Vec<i32>,
    pub source_wait_ms: f64,
    /// The source's CPU time per frame sent (its thread; for the relay also the feeder's
    /// receive thread).
    pub source_ns_per_packet: f64,
    pub sink_wait_ms: f64,
    /// Sink threads' CPU time per packet received.
    pub sink_ns_per_packet: f64,
    /// Packets per link (sink interface) in the window.
    pub per_link: [u64; LINKS],
    /// `[class][link]` packets in the window.
    pub class_link: Vec<[u64; LINKS]>,
    /// Packets of a class on a link the mode must not send it to.
    pub wrong_link: u64,
}

struct Snapshot {
    at: Instant,
    sent: u64,
    /// `[link][class]`.
    recv: Vec<[u64; 16]>,
    router: SchedStat,
    source: SchedStat,
    sinks: SchedStat,
}

fn sum_stats(tids: &[i32]) -> SchedStat {
    tids.iter().fold(SchedStat::default(), |a, t| {
        let s = SchedStat::read(*t);
        SchedStat {
            run_ns: a.run_ns + s.run_ns,
            wait_ns: a.wait_ns + s.wait_ns,
        }
    })
}

/// Where the sink counters of this mode live: the three sink veths, or (calibration) the
/// router's LAN veth.
fn counted_ifindexes(mode: Mode, topo: &Topology, lan_ifindex: u32) -> Vec<u32> {
    if mode == Mode::SourceSink {
        vec![lan_ifindex]
    } else {
        topo.sink_ifindex.to_vec()
    }
}

/// One window, retried while disturbed (at most `settings.retries` more times; the least
/// disturbed window is kept).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    mode: Mode,
    rules: usize,
    mix: Mix,
    links: Links,
    topo: &Topology,
    tools: &Ebpf,
    settings: &Settings,
    window: Duration,
) -> Result<Sample> {
    let mut best: Option<Sample> = None;
    let mut attempts = 0;
    for _ in 0..=settings.retries {
        attempts += 1;
        let s = window_once(mode, rules, mix, links, topo, tools, settings, window)?;
        let done = !s.disturbed;
        // An undisturbed window wins; among disturbed ones, the one that waited least.
        if done
            || best
                .as_ref()
                .is_none_or(|b| s.router_wait_ms < b.router_wait_ms)
        {
            best = Some(s);
        }
        if done {
            break;
        }
        eprintln!("    disturbed (router waited for its CPU), measuring again");
    }
    let mut b = best.expect("at least one attempt");
    b.attempts = attempts;
    Ok(b)
}

/// Pins the router's receive threads to the router CPU and the sinks' to the source CPU
/// (both `SCHED_FIFO` 2 with `--realtime`); returns the sink threads.
pub fn place_threads(topo: &Topology, settings: &Settings) -> Result<Vec<i32>> {
    for t in topo.router_threads() {
        pin(t, settings.router_cpu)?;
        if settings.realtime {
            realtime(t, 2)?;
        }
    }
    let sinks = topo.sink_threads();
    for t in &sinks {
        pin(*t, settings.source_cpu)?;
        if settings.realtime {
            realtime(*t, 2)?;
        }
    }
    Ok(sinks)
}

#[allow(clippy::too_many_arguments)]
fn window_once(
    mode: Mode,
    rules: usize,
    mix: Mix,
    links: Links,
    topo: &Topology,
    tools: &Ebpf,
    settings: &Settings,
    window: Duration,
) -> Result<Sample> {
    let router = topo.router_threads();
    if router.is_empty() {
        bail!(
            "no NAPI thread for {} in namespace {}: threaded NAPI is off (the harness turns it on \
             after attaching XDP; is the kernel older than 5.12?)",
            topo.lan_dev,
            topo.rtr.name()
        );
    }
    let sinks = place_threads(topo, settings)?;
    let lan_ifindex = topo.rtr.ifindex(&topo.lan_dev)?;
    let counted = counted_ifindexes(mode, topo, lan_ifindex);
    let tun = links == Links::Tun && mode != Mode::SourceSink;
    if tun {
        // Frames an earlier mode left queued must not count as this one's.
        for f in &topo.tun_files {
            drain(f);
        }
    }
    let mut source = Generator::start(
        settings.source,
        tools,
        topo,
        mix,
        settings.source_cpu,
        settings.realtime,
    )?;
    let snap = |g: &Generator| -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            sent: traffic::sent(tools)?,
            recv: if tun {
                // Totals only (class unknown): in the last class slot.
                tun_tx(topo)?
                    .iter()
                    .map(|n| {
                        let mut v = [0u64; 16];
                        v[15] = *n;
                        v
                    })
                    .collect()
            } else {
                counted
                    .iter()
                    .map(|i| traffic::received(tools, *i))
                    .collect::<Result<_>>()?
            },
            router: sum_stats(&router),
            source: g.stat(),
            sinks: sum_stats(if mode == Mode::SourceSink {
                &router
            } else {
                &sinks
            }),
        })
    };
    std::thread::sleep(settings.warmup);
    let a = snap(&source)?;
    std::thread::sleep(window);
    let b = snap(&source)?;
    if !source.running() {
        source.finish()?;
        bail!("the generator stopped during the window");
    }
    source.finish()?;

    let secs = b.at.duration_since(a.at).as_secs_f64();
    let sent = b.sent - a.sent;
    let mut class_link = vec![[0u64; LINKS]; CLASSES.len()];
    let mut per_link = [0u64; LINKS];
    let mut total = 0u64;
    for (l, (rb, ra)) in b.recv.iter().zip(&a.recv).enumerate() {
        for c in 0..16 {
            let n = rb[c] - ra[c];
            total += n;
            if l < LINKS {
                per_link[l] += n;
                if c < CLASSES.len() {
                    class_link[c][l] += n;
                }
            }
        }
    }
    if tun {
        // The frames still queued on each TUN (the kernel keeps up to its queue length).
        for (l, f) in topo.tun_files.iter().enumerate() {
            for frame in drain(f) {
                if let Some(c) = class_of_ip(&frame)
                    && c < CLASSES.len()
                {
                    class_link[c][l] += 1;
                }
            }
        }
    }
    let wrong_link = if mode == Mode::SourceSink {
        0
    } else {
        CLASSES
            .iter()
            .map(|c| {
                let expected = if mode.steers() { c.link } else { 0 };
                (0..LINKS)
                    .filter(|l| *l != expected)
                    .map(|l| class_link[c.id as usize][l])
                    .sum::<u64>()
            })
            .sum()
    };
    let router_tids = router.clone();
    let router = b.router.since(a.router);
    let source = b.source.since(a.source);
    let sinks_st = b.sinks.since(a.sinks);
    let router_wait = router.wait_ns as f64 / 1e9;
    Ok(Sample {
        links,
        mode,
        rules,
        mix,
        window_s: secs,
        attempts: 1,
        // A thread cannot run longer than the window: when schedstat says it did (seen
        // in this VM now and then), the window's accounting is not to be trusted either.
        disturbed: router_wait > disturbed_share(settings.realtime) * secs
            || router.run_ns as f64 / 1e9 > 1.05 * secs,
        offered_mpps: sent as f64 / secs / 1e6,
        forwarded_mpps: total as f64 / secs / 1e6,
        loss: if sent > 0 {
            1.0 - (total as f64 / sent as f64).min(1.0)
        } else {
            0.0
        },
        router_ns_per_packet: if total > 0 {
            router.run_ns as f64 / total as f64
        } else {
            0.0
        },
        router_busy: router.run_ns as f64 / 1e9 / secs,
        router_wait_ms: router_wait * 1e3,
        router_threads: router_tids,
        source_wait_ms: source.wait_ns as f64 / 1e6,
        source_ns_per_packet: if sent > 0 {
            source.run_ns as f64 / sent as f64
        } else {
            0.0
        },
        sink_wait_ms: sinks_st.wait_ns as f64 / 1e6,
        sink_ns_per_packet: if total > 0 {
            sinks_st.run_ns as f64 / total as f64
        } else {
            0.0
        },
        per_link,
        class_link,
        wrong_link,
    })
}

/// Packets the router handed to each TUN link (sent to its reader, queued or dropped when
/// the queue was full): the kernel's counters, via `ip -s -j link`.
fn tun_tx(topo: &Topology) -> Result<Vec<u64>> {
    let out = std::process::Command::new("ip")
        .args(["-n", topo.rtr.name(), "-s", "-j", "link", "show"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    topo.tun_devs
        .iter()
        .map(|d| {
            let dev = v
                .as_array()
                .and_then(|a| a.iter().find(|x| x["ifname"] == d.as_str()))
                .ok_or_else(|| anyhow::anyhow!("no statistics for {d}"))?;
            let tx = &dev["stats64"]["tx"];
            Ok(tx["packets"].as_u64().unwrap_or(0) + tx["dropped"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// The class a generated IP packet carries (IPv4 ID / IPv6 flow label, low 4 bits), for
/// TCP and UDP only.
fn class_of_ip(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 && matches!(p[9], 6 | 17) => Some((p[5] & 15) as usize),
        6 if p.len() >= 40 && matches!(p[6], 6 | 17) => Some((p[3] & 15) as usize),
        _ => None,
    }
}
