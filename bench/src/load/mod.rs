//! `cargo xtask load`: the line-rate load test of xwan against the kernel's own policy
//! routing, on a topology of network namespaces it creates (see [`topology`]).
//!
//! For each frame mix and rule count, every mode ([`modes`]) is measured once per round,
//! rounds repeated `--runs` times, so slow drift of this shared machine hits every mode
//! alike; each mode's figure is the median of its runs. Results: a table on stdout, JSON and
//! an SVG chart (throughput against rule count per mode). The TUN variant (links are TUN
//! devices: xwan's TC redirect path) runs at `--tun-rules`. Then every mode at the same
//! offered rate ([`equal_rate`]), in `--runs` rounds as well: latency percentiles and the
//! router's CPU per packet at equal load. The source ([`source`]) is XDP live frames, or the
//! relay where the kernel refuses them (`--source`). `--smoke` is the short version
//! the test suite runs: every mode once at 100 rules over veth and over TUN links, and it fails
//! when a mode forwards nothing or xwan sends a class to the wrong link.
//!
//! Needs root. Everything it creates (namespaces, the agent, its bpffs mount) is removed on
//! exit, also on error.

mod chart;
mod confirm;
mod failover;
pub mod flows;
pub mod layout;
mod measure;
pub(crate) mod modes;
mod pfpacket;
mod relay;
mod report;
mod source;
pub(crate) mod sys;
mod topology;
mod traffic;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{Ebpf, programs::Xdp};

use measure::Sample;
use modes::{ALL, EXTRA, Mode};
use source::Source;
use traffic::Mix;

// SAFETY (Pod): plain #[repr(C)] data without padding-sensitive invariants.
unsafe impl aya::Pod for layout::Template {}
unsafe impl aya::Pod for layout::GenConfig {}
unsafe impl aya::Pod for layout::GenState {}
unsafe impl aya::Pod for layout::SinkCount {}
unsafe impl aya::Pod for layout::SinkConfig {}
unsafe impl aya::Pod for layout::RedirectConfig {}

/// The load-test tooling object, built by `bench/build.rs`.
static TOOLS: &[u8] = aya::include_bytes_aligned!(env!("XWAN_LOAD_EBPF_OBJECT"));

#[derive(Clone)]
pub struct Settings {
    pub runs: usize,
    pub rules: Vec<usize>,
    pub imix_rules: Vec<usize>,
    pub tun_rules: Vec<usize>,
    pub window: Duration,
    pub warmup: Duration,
    pub retries: usize,
    pub flows: usize,
    pub train: u32,
    pub source_cpu: usize,
    pub router_cpu: usize,
    pub json: PathBuf,
    pub svg: PathBuf,
    pub xwan: Option<PathBuf>,
    pub smoke: bool,
    pub latency: bool,
    pub failover: bool,
    pub realtime: bool,
    pub compare_sources: bool,
    /// `--source`: `None` = auto (live frames where the kernel runs them, else the relay).
    pub source_asked: Option<Source>,
    /// The source in use, once chosen (`source::choose`).
    pub source: Source,
    pub modes: Vec<Mode>,
}

const USAGE: &str = "usage: xwan-bench load [--smoke] [--runs N (3)] [--rules 10,100,1000] \
[--imix-rules 1000 | none] [--tun-rules 1000 | none] [--window SECS (2)] [--warmup SECS (0.4)] [--retries N (3)] \
[--flows N (4096; up to 1048576, with --warmup long enough to send each once)] [--train N (1)] \
[--cpus SOURCE,ROUTER (0,1)] [--modes xwan,kernel-maps,...] [--source auto|live|relay (auto)] [--realtime] [--compare-sources] [--no-latency] [--no-failover] [--json PATH] [--svg PATH] [--xwan PATH]";

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        runs: 3,
        rules: vec![10, 100, 1000],
        imix_rules: vec![1000],
        tun_rules: vec![1000],
        window: Duration::from_secs(2),
        warmup: Duration::from_millis(400),
        retries: 3,
        flows: 4096,
        train: 1,
        source_cpu: 0,
        router_cpu: 1,
        json: PathBuf::from("target/bench/load.json"),
        svg: PathBuf::from("target/bench/load.svg"),
        xwan: None,
        smoke: false,
        latency: true,
        failover: true,
        realtime: false,
        compare_sources: false,
        source_asked: None,
        source: Source::Live,
        modes: ALL.to_vec(),
    };
    let list = |v: &str| -> Result<Vec<usize>> {
        if v == "none" {
            return Ok(vec![]);
        }
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .with_context(|| format!("bad number {x:?}"))
            })
            .collect()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => {
                s.smoke = true;
                s.runs = 1;
                s.rules = vec![100];
                s.imix_rules = vec![];
                s.tun_rules = vec![100];
                s.window = Duration::from_millis(700);
                s.warmup = Duration::from_millis(200);
                s.retries = 0;
                s.latency = false;
                s.failover = false;
            }
            "--runs" => s.runs = val()?.parse().context("--runs")?,
            "--rules" => s.rules = list(val()?)?,
            "--imix-rules" => s.imix_rules = list(val()?)?,
            "--tun-rules" => s.tun_rules = list(val()?)?,
            "--window" => s.window = Duration::from_secs_f64(val()?.parse().context("--window")?),
            "--warmup" => s.warmup = Duration::from_secs_f64(val()?.parse().context("--warmup")?),
            "--retries" => s.retries = val()?.parse().context("--retries")?,
            "--flows" => s.flows = val()?.parse().context("--flows")?,
            "--train" => s.train = val()?.parse().context("--train")?,
            "--cpus" => {
                let v = list(val()?)?;
                let [a, b] = v[..] else {
                    bail!("--cpus wants SOURCE,ROUTER");
                };
                (s.source_cpu, s.router_cpu) = (a, b);
            }
            "--no-latency" => s.latency = false,
            "--no-failover" => s.failover = false,
            "--realtime" => s.realtime = true,
            "--compare-sources" => s.compare_sources = true,
            "--source" => s.source_asked = Source::parse(val()?)?,
            "--modes" => {
                s.modes = val()?
                    .split(',')
                    .map(|n| {
                        (ALL.into_iter().chain(EXTRA))
                            .find(|m| m.name() == n.trim())
                            .with_context(|| format!("unknown mode {n:?}"))
                    })
                    .collect::<Result<_>>()?
            }
            "--json" => s.json = val()?.into(),
            "--svg" => s.svg = val()?.into(),
            "--xwan" => s.xwan = Some(val()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if s.train == 0 {
        bail!("--train must be at least 1 (frames each flow sends in a row)");
    }
    if s.runs == 0 || s.rules.is_empty() || s.rules.iter().any(|r| *r < modes::REAL_RULES) {
        bail!(
            "--runs must be ≥ 1 and every rule count ≥ {}",
            modes::REAL_RULES
        );
    }
    if s.source_cpu == s.router_cpu {
        bail!("the source and the router need different CPUs (--cpus)");
    }
    Ok(s)
}

/// The `xwan` binary: `--xwan`, or next to this one (`target/release/`), or one level up
/// (when this is a test binary in `target/release/deps/`).
pub(crate) fn find_xwan(explicit: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("xwan");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "cannot find the xwan binary next to {}: build it (`cargo build --release -p xwan`) or \
         pass --xwan PATH",
        exe.display()
    )
}

pub fn main(args: &[String]) -> Result<()> {
    let settings = parse(args)?;
    let started = Instant::now();
    let (settings, report) = on_topology(settings, |settings, chosen, topo, tools, xwan, work| {
        run_all(settings, chosen, topo, tools, xwan, work)
    })?;
    report::write(&settings, &report)?;
    println!(
        "results written to {} and {} ({:.0} s)",
        settings.json.display(),
        settings.svg.display(),
        started.elapsed().as_secs_f64()
    );
    if settings.smoke {
        report::smoke_check(&report)?;
        println!("smoke: every mode forwarded, xwan sent every class to its link");
    }
    Ok(())
}

/// Runs `f` on the load test's topology with its tools loaded and its source chosen, then
/// removes it all (also when `f` fails).
fn on_topology<T>(
    mut settings: Settings,
    f: impl FnOnce(
        &Settings,
        source::Chosen,
        &topology::Topology,
        &mut Ebpf,
        &std::path::Path,
        &std::path::Path,
    ) -> Result<T>,
) -> Result<(Settings, T)> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the load test creates network namespaces and loads eBPF: run it as root");
    }
    let xwan_bin = find_xwan(&settings.xwan)?;
    sys::remove_stale();
    sys::install_wakeup_signal()?;
    let work = std::env::temp_dir().join(format!("xwan-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // `bare-xdp-flows`' table, as xwan's: twice the flows (one entry when it does not run).
    let flow_entries = match settings.modes.contains(&Mode::BareXdpFlows) {
        true => 2 * settings.flows as u32,
        false => 1,
    };
    let mut tools = aya::EbpfLoader::new()
        .map_max_entries("LOAD_FLOWS", flow_entries)
        .load(TOOLS)
        .context("loading the load-test eBPF programs")?;
    for name in [
        "load_gen",
        "load_relay",
        "load_sink",
        "load_pass",
        "load_redirect",
        "load_redirect_class",
        "load_flow_class",
    ] {
        let p: &mut Xdp = tools
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        p.load().with_context(|| format!("verifying {name}"))?;
    }
    let p: &mut aya::programs::SchedClassifier = tools
        .program_mut("load_tc_redirect")
        .context("load_tc_redirect missing")?
        .try_into()?;
    p.load().context("verifying load_tc_redirect")?;
    let mut topo = topology::Topology::new(&mut tools)?;
    let result = start_source(&mut settings, &mut topo, &mut tools)
        .and_then(|chosen| f(&settings, chosen, &topo, &mut tools, &xwan_bin, &work));
    topo.detach(&mut tools);
    drop(topo);
    let _ = std::fs::remove_dir_all(&work);
    Ok((settings, result?))
}

/// Chooses the source (`--source`, a probe of live frames) and sets up the relay's feeder
/// where the run uses or compares it.
fn start_source(
    settings: &mut Settings,
    topo: &mut topology::Topology,
    tools: &mut Ebpf,
) -> Result<source::Chosen> {
    let chosen = source::choose(settings.source_asked, tools, topo)?;
    if chosen.source == Source::Relay || settings.compare_sources {
        topo.add_feeder(tools)
            .context("setting up the relay source's feeder")?;
    }
    settings.source = chosen.source;
    Ok(chosen)
}

pub struct Results {
    /// The source the run used, and why.
    pub source: source::Chosen,
    pub calibration: Vec<Sample>,
    pub sources: Vec<report::SourceRun>,
    pub samples: Vec<Sample>,
    pub latency: Vec<report::Latency>,
    /// Over TUN links, every mode at the same offered rate.
    pub equal_load_tun: Vec<report::EqualLoad>,
    pub failover: Vec<failover::Failover>,
}

fn run_all(
    settings: &Settings,
    chosen: source::Chosen,
    topo: &topology::Topology,
    tools: &mut Ebpf,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
) -> Result<Results> {
    eprintln!(
        "load test: source {} ({}), source CPU {}, router CPU {}, {} s windows, {} run(s)",
        chosen.source.name(),
        chosen.reason,
        settings.source_cpu,
        settings.router_cpu,
        settings.window.as_secs_f64(),
        settings.runs
    );
    let live_works = chosen.live_works;
    let mut out = Results {
        source: chosen,
        calibration: vec![],
        sources: vec![],
        samples: vec![],
        latency: vec![],
        equal_load_tun: vec![],
        failover: vec![],
    };
    use topology::Links;
    let mut sweeps: Vec<(Links, Mix, usize)> = settings
        .rules
        .iter()
        .map(|r| (Links::Veth, Mix::Small, *r))
        .collect();
    sweeps.extend(
        settings
            .imix_rules
            .iter()
            .map(|r| (Links::Veth, Mix::Imix, *r)),
    );
    sweeps.extend(
        settings
            .tun_rules
            .iter()
            .map(|r| (Links::Tun, Mix::Small, *r)),
    );
    let mut current_mix = None;
    let mut calibrated = vec![];
    for (links, mix, rules) in sweeps {
        if current_mix != Some(mix) {
            traffic::program(tools, settings.flows, settings.train, mix, topo.lan_mac, 0)?;
            current_mix = Some(mix);
        }
        if !calibrated.contains(&mix) {
            calibrated.push(mix);
            // The source alone (sink on the router's veth): what the generator can offer.
            let s = one(
                Mode::SourceSink,
                0,
                mix,
                Links::Veth,
                topo,
                tools,
                xwan_bin,
                work,
                settings,
            )?;
            if settings.compare_sources {
                for candidate in [Source::Live, Source::Relay] {
                    if candidate == Source::Live && !live_works {
                        continue;
                    }
                    let c = if candidate == settings.source {
                        s.clone()
                    } else {
                        let other = Settings {
                            source: candidate,
                            ..settings.clone()
                        };
                        one(
                            Mode::SourceSink,
                            0,
                            mix,
                            Links::Veth,
                            topo,
                            tools,
                            xwan_bin,
                            work,
                            &other,
                        )?
                    };
                    out.sources.push(report::SourceRun {
                        source: candidate.candidate(),
                        mix,
                        offered_mpps: c.offered_mpps,
                        received_mpps: c.forwarded_mpps,
                        source_ns_per_packet: c.source_ns_per_packet,
                        source_busy: c.source_ns_per_packet * c.offered_mpps / 1e3,
                    });
                }
                out.sources
                    .push(tx_ring(mix, topo, tools, xwan_bin, work, settings)?);
            }
            out.calibration.push(s);
        }
        for run in 0..settings.runs {
            for mode in settings.modes.iter().copied() {
                if !mode.runs_on(links) {
                    continue;
                }
                eprintln!(
                    "  {} links, {} frames, {rules} rules, run {}/{}: {}",
                    links.name(),
                    mix.name(),
                    run + 1,
                    settings.runs,
                    mode.name()
                );
                let s = one(
                    mode, rules, mix, links, topo, tools, xwan_bin, work, settings,
                )?;
                eprintln!(
                    "    {:.3} Mpps forwarded, {:.0} ns/packet router CPU, busy {:.0} %, loss {:.1} %",
                    s.forwarded_mpps,
                    s.router_ns_per_packet,
                    s.router_busy * 100.0,
                    s.loss * 100.0
                );
                out.samples.push(s);
            }
        }
    }
    if settings.latency && settings.modes.contains(&Mode::Xwan) {
        (out.latency, out.equal_load_tun) =
            equal_loads(settings, topo, tools, xwan_bin, work, &out)?;
    }
    if settings.failover && settings.modes.contains(&Mode::Xwan) {
        let rules = *settings.rules.iter().max().expect("rule counts");
        let pps = equal_rate(&out, rules, topology::Links::Veth)?;
        small_frames(tools, settings, topo, 0)?;
        for cut in [failover::Cut::Silent, failover::Cut::Carrier] {
            eprintln!(
                "  failover at {:.3} Mpps, {rules} rules: {cut:?} cut of link 2",
                pps / 1e6
            );
            let f = failover::run(cut, rules, pps, topo, tools, settings, xwan_bin, work)?;
            eprintln!(
                "    SQL flows on the backup link after {:.0} ms, {} packets lost",
                f.moved_after_ms, f.lost_packets
            );
            out.failover.push(f);
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn one(
    mode: Mode,
    rules: usize,
    mix: Mix,
    links: topology::Links,
    topo: &topology::Topology,
    tools: &mut Ebpf,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
    settings: &Settings,
) -> Result<Sample> {
    let active = modes::setup(
        mode,
        rules,
        links,
        topo,
        tools,
        xwan_bin,
        work,
        settings.realtime,
        settings.flows,
    )
    .with_context(|| format!("setting up mode {} ({} links)", mode.name(), links.name()))?;
    let r = measure::measure(
        mode,
        rules,
        mix,
        links,
        topo,
        tools,
        settings,
        settings.window,
    );
    let t = modes::teardown(mode, active, topo, tools);
    let s = r.with_context(|| format!("measuring mode {}", mode.name()))?;
    t.with_context(|| format!("tearing down mode {}", mode.name()))?;
    Ok(s)
}

/// Every mode at [`equal_rate`], at the largest rule count, 64-byte frames: over veth links
/// for latency and the router's CPU per packet at equal load; over TUN links (with
/// `--tun-rules`) for the latter. At full rate over TUN links the router's
/// veth drops the source's surplus: the source then returns those frames' pages to the page
/// pool while the router returns the pages of the frames TUN dropped, and the pool's lock
/// (its slow path took a fifth of xwan's router time in `perf`) charges a slower router
/// more. At a rate every mode carries, it does not.
fn equal_loads(
    settings: &Settings,
    topo: &topology::Topology,
    tools: &mut Ebpf,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
    done: &Results,
) -> Result<(Vec<report::Latency>, Vec<report::EqualLoad>)> {
    let (mut latency, mut tun) = (vec![], vec![]);
    for (links, rules) in [
        (topology::Links::Veth, &settings.rules),
        (topology::Links::Tun, &settings.tun_rules),
    ] {
        let Some(&rules) = rules.iter().max() else {
            continue;
        };
        let pps = equal_rate(done, rules, links)?;
        let runs = equal_load(settings, topo, tools, xwan_bin, work, links, rules, pps)?;
        for (_, runs, hist) in &runs {
            match links {
                topology::Links::Veth => latency.push(report::Latency::new(runs, hist, pps / 1e6)),
                topology::Links::Tun => tun.push(report::EqualLoad::new(runs, pps / 1e6)),
            }
        }
    }
    Ok((latency, tun))
}

/// A mode, its runs at one offered rate and the sum of their latency histograms (empty over
/// TUN links, where nothing stamps or reads the frames).
type ModeRuns = (Mode, Vec<Sample>, Vec<u64>);

/// Every mode that runs on `links` offered `pps` 64-byte frames per second at `rules`, in
/// `--runs` rounds that interleave the modes, as the throughput rounds do. Per mode: its
/// runs and, over veth links, the sum of their latency histograms.
#[allow(clippy::too_many_arguments)]
fn equal_load(
    settings: &Settings,
    topo: &topology::Topology,
    tools: &mut Ebpf,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
    links: topology::Links,
    rules: usize,
    pps: f64,
) -> Result<Vec<ModeRuns>> {
    let gap_ns = (1e9 / pps) as u64;
    small_frames(tools, settings, topo, gap_ns)?;
    let stamped = links == topology::Links::Veth;
    let mut per_mode: Vec<ModeRuns> = settings
        .modes
        .iter()
        .filter(|m| m.runs_on(links))
        .map(|&m| (m, vec![], vec![]))
        .collect();
    for run in 1..=settings.runs {
        for (mode, runs, hist) in per_mode.iter_mut() {
            let mode = *mode;
            eprintln!(
                "  {} links at {:.3} Mpps offered, {rules} rules, run {run}/{}: {}",
                links.name(),
                pps / 1e6,
                settings.runs,
                mode.name()
            );
            let active = modes::setup(
                mode,
                rules,
                links,
                topo,
                tools,
                xwan_bin,
                work,
                settings.realtime,
                settings.flows,
            )?;
            if stamped {
                traffic::set_latency(tools, true)?;
            }
            let r = measure::measure(
                mode,
                rules,
                Mix::Small,
                links,
                topo,
                tools,
                settings,
                settings.window,
            );
            let h = if stamped {
                let h = traffic::latency_histogram(tools);
                traffic::set_latency(tools, false)?;
                Some(h)
            } else {
                None
            };
            modes::teardown(mode, active, topo, tools)?;
            let r = r?;
            eprintln!(
                "    {:.3} Mpps forwarded, {:.0} ns/packet router CPU, busy {:.0} %, loss {:.1} %, \
                 per link {:?}",
                r.forwarded_mpps,
                r.router_ns_per_packet,
                r.router_busy * 100.0,
                r.loss * 100.0,
                r.per_link
            );
            runs.push(r);
            if let Some(h) = h {
                let h = h?;
                hist.resize(h.len(), 0);
                hist.iter_mut().zip(h).for_each(|(sum, n)| *sum += n);
            }
        }
    }
    traffic::set_rate(tools, settings.flows, settings.train, 0)?;
    Ok(per_mode)
}

/// The PF_PACKET TX-ring source on the calibration topology (sink on the router's veth).
fn tx_ring(
    mix: Mix,
    topo: &topology::Topology,
    tools: &mut Ebpf,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
    settings: &Settings,
) -> Result<report::SourceRun> {
    let frames: Vec<Vec<u8>> = (0..settings.flows)
        .map(|i| traffic::flow_frame(i, settings.flows, mix, topo.lan_mac))
        .collect();
    let active = modes::setup(
        Mode::SourceSink,
        0,
        topology::Links::Veth,
        topo,
        tools,
        xwan_bin,
        work,
        settings.realtime,
        settings.flows,
    )?;
    for t in topo.router_threads() {
        sys::pin(t, settings.router_cpu)?;
    }
    let lan = topo.rtr.ifindex(&topo.lan_dev)?;
    let count = |tools: &Ebpf| -> Result<u64> { Ok(traffic::received(tools, lan)?.iter().sum()) };
    let before = count(tools)?;
    let run = pfpacket::run(
        &topo.src,
        topo.src_ifindex,
        &frames,
        settings.source_cpu,
        settings.realtime,
        settings.window,
    );
    let after = count(tools)?;
    modes::teardown(Mode::SourceSink, active, topo, tools)?;
    let run = run?;
    Ok(report::SourceRun {
        source: "pf-packet-tx-ring",
        mix,
        offered_mpps: run.sent as f64 / run.secs / 1e6,
        received_mpps: (after - before) as f64 / run.secs / 1e6,
        source_ns_per_packet: run.stat.run_ns as f64 / run.sent.max(1) as f64,
        source_busy: run.stat.run_ns as f64 / 1e9 / run.secs,
    })
}

/// Share of the source's own rate (the calibration, 64-byte frames) it holds paced while
/// the sinks share its CPU: the relay sent 96–100 % of the rate asked at 0.30–0.49 of its own.
const SOURCE_HOLDS: f64 = 0.45;

/// The offered rate of the equal-load and failover runs at `rules` over `links`, in
/// packets/s: half of xwan's median forwarded rate (64-byte frames), and at most
/// [`SOURCE_HOLDS`] of the source's own rate. Where the source limits xwan (the relay),
/// xwan's rate is the source's, and paced it must leave room for the sinks as well; with
/// live frames half of xwan's rate is the lower one.
fn equal_rate(done: &Results, rules: usize, links: topology::Links) -> Result<f64> {
    let xwan: Vec<f64> = done
        .samples
        .iter()
        .filter(|s| {
            s.mode == Mode::Xwan && s.rules == rules && s.mix == Mix::Small && s.links == links
        })
        .map(|s| s.forwarded_mpps)
        .collect();
    let half = report::median(&xwan) * 1e6 * 0.5;
    if half <= 0.0 {
        bail!(
            "xwan forwarded nothing at {rules} rules over {} links: no rate for the equal-load \
             runs",
            links.name()
        );
    }
    let source = done
        .calibration
        .iter()
        .find(|c| c.mix == Mix::Small)
        .map_or(f64::INFINITY, |c| c.offered_mpps * 1e6 * SOURCE_HOLDS);
    Ok(half.min(source))
}

/// The generator programmed with 64-byte frames of the settings' flows, `gap_ns` apart.
fn small_frames(
    tools: &mut Ebpf,
    settings: &Settings,
    topo: &topology::Topology,
    gap_ns: u64,
) -> Result<()> {
    traffic::program(
        tools,
        settings.flows,
        settings.train,
        Mix::Small,
        topo.lan_mac,
        gap_ns,
    )
}
