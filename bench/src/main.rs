//! `cargo xtask bench`: BPF_PROG_TEST_RUN micro-benchmark of the data plane; with the first
//! argument `load`, `cargo xtask load`: the line-rate load test (module [`load`]); with
//! `scale`, the agent with many gateways (module [`scale`]).
//!
//! Prints ns/packet (the kernel's own per-repeat timing, median of several runs of at least
//! `--repeat` repeats) for: the parse-only baseline program, a flow hit, and
//! classification misses (on port, on address) with 10 / 100 / 1,000 / 4,096 rules, each for IPv4 and
//! IPv6; ratios to the baseline; writes the results as JSON; then the agent-side cost of a
//! failover (every router's table recomputed after one verdict) and of a metrics scrape. A
//! benchmark, not a test: it asserts nothing.
//!
//! Needs root (loads eBPF). Runs in a private, unnamed network namespace that vanishes with
//! the process: `xwan_xdp_lan` is attached natively to a veth there so the kernel's XDP
//! dispatcher already holds it; otherwise every BPF_PROG_TEST_RUN call with `repeat > 1`
//! swaps it in and out of the dispatcher and waits for an RCU grace period.

mod load;
mod scale;

use std::{net::IpAddr, path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};
use xwan::datapath::{Datapath, TestBpffs};
use xwan_common::{
    PROG_TC_STEER, PROG_XDP_BASELINE, PROG_XDP_LAN,
    plan::{Action, Gateway, GatewayKind, Iface, IpNet, Plan, PortRange, RouterTable, Rule},
};

/// The tunnel gateway of [`plan`].
const TUNNEL_GW: u16 = 1;

/// Ingress interface for BPF_PROG_TEST_RUN (loopback exists in every namespace).
const LO: u32 = 1;
const LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

struct Args {
    runs: usize,
    repeat: u32,
    json: PathBuf,
    /// Only the agent-side benchmarks (recompute, verdict to commit, scrape).
    agent_only: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        runs: 7,
        repeat: 1_000_000,
        json: PathBuf::from("target/bench/datapath.json"),
        agent_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = val()?.parse().context("--runs")?,
            "--repeat" => a.repeat = val()?.parse().context("--repeat")?,
            "--json" => a.json = val()?.into(),
            "--agent-only" => a.agent_only = true,
            "-h" | "--help" => {
                println!(
                    "usage: xwan-bench [--runs N (7)] [--repeat N (1000000)] [--json PATH] \
                     [--agent-only (skip the data-plane cases)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.runs == 0 || a.repeat < 1000 {
        bail!("--runs must be ≥ 1 and --repeat ≥ 1000");
    }
    Ok(a)
}

/// `n` rules, each on its own source and destination /24 and destination port, so every
/// field's table grows with `n`. Rule 0 covers the benchmark's source and destination.
fn plan(n: usize) -> Plan {
    let net = |s: String| s.parse::<IpNet>().unwrap();
    let rules = (0..n)
        .map(|i| {
            let mut r = Rule::any(Action::Route(0));
            r.counter = i as u16;
            let (a, b) = (i / 250, i % 250);
            r.criteria.src = vec![
                net(format!("10.{a}.{b}.0/24")),
                net(format!("2001:db8:{a:x}:{b:x}::/64")),
            ];
            r.criteria.dst = vec![
                net(format!("172.16.{a}.{b}/32")),
                net(format!("2001:db8:ffff:{i:x}::/64")),
            ];
            r.criteria.protocols = vec![17];
            // 2,000 distinct ports at most: their bounds cut the port space into 4,001 classes,
            // within MAX_PORT_CLASSES (4,096) at any rule count.
            let port = 1000 + (i % 2000) as u16;
            r.criteria.dst_ports = vec![PortRange::new(port, port).unwrap()];
            r
        })
        .collect();
    Plan {
        ifaces: vec![Iface {
            ifindex: LO,
            mac: LAN_MAC,
        }],
        local_addrs: vec![],
        rules,
        routers: vec![RouterTable::single(0)],
        gateways: vec![
            Gateway {
                id: 0,
                kind: GatewayKind::Ethernet {
                    next_hop_mac: [0xaa, 0, 0, 0, 0, 1],
                    egress_mac: [0xbb, 0, 0, 0, 0, 1],
                },
                ifindex: LO,
                mtu: 1500,
                ready: true,
            },
            // The tunnel case's gateway (router 0 is pointed at it for that case only).
            Gateway {
                id: TUNNEL_GW,
                kind: GatewayKind::Tunnel,
                ifindex: LO,
                mtu: 1500,
                ready: true,
            },
        ],
        links: vec![],
        flow_idle_ns: 0,
        marks: None,
    }
}

/// Ethernet + IPv4/IPv6 + UDP frame, 64 bytes of payload.
fn frame(src: IpAddr, dst: IpAddr, dport: u16, ttl: u8) -> Vec<u8> {
    let mut udp = vec![0u8; 8 + 64];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    let udp_len = udp.len() as u16;
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut f = LAN_MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 17, 0, 0];
            h[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = xwan_common::csum::ipv4_header_sum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            h.extend_from_slice(&[17, ttl]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            f.extend(h);
        }
        _ => unreachable!(),
    }
    f.extend(udp);
    f
}

struct Case {
    name: String,
    family: &'static str,
    rules: usize,
    ns: f64,
    runs: Vec<f64>,
}

/// Median over `runs` of the kernel-measured ns/repeat. `batch` limits repeats per
/// BPF_PROG_TEST_RUN call (the kernel re-runs the program on the same buffer, so a
/// forwarding path would keep decrementing TTL: each call starts from a fresh copy).
fn measure(
    dp: &Datapath,
    prog: &str,
    f: &[u8],
    runs: usize,
    repeat: u32,
    batch: u32,
    expect: u32,
) -> Result<Vec<f64>> {
    let first = dp.xdp_test_run(prog, f, LO, 1)?;
    if first.action != expect {
        bail!(
            "{prog}: benchmark packet got action {} instead of {expect}: the scenario is wrong",
            first.action
        );
    }
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (mut ns, mut done) = (0f64, 0u64);
        while done < repeat as u64 {
            let n = batch.min(repeat - done as u32);
            let r = dp.xdp_test_run(prog, f, LO, n)?;
            ns += r.duration_ns as f64 * n as f64;
            done += n as u64;
        }
        out.push(ns / done as f64);
    }
    Ok(out)
}

/// [`measure`] for a TC program that must redirect `f`.
fn measure_tc(dp: &Datapath, prog: &str, f: &[u8], runs: usize, repeat: u32) -> Result<Vec<f64>> {
    const TC_ACT_REDIRECT: i32 = 7;
    let first = dp.skb_test_run(prog, f, LO, 1)?;
    if first.retval != TC_ACT_REDIRECT {
        bail!(
            "{prog}: benchmark packet got {} instead of TC_ACT_REDIRECT: the scenario is wrong",
            first.retval
        );
    }
    (0..runs)
        .map(|_| Ok(dp.skb_test_run(prog, f, LO, repeat)?.duration_ns as f64))
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("load") => return load::main(&argv[2..]),
        Some("scale") => return scale::main(&argv[2..]),
        Some("flows") => return load::flows::main(&argv[2..]),
        _ => {}
    }
    let a = args()?;
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    let started = Instant::now();
    private_netns()?;
    let fs = TestBpffs::new().context("mount a private bpffs")?;
    if !a.agent_only {
        datapath_cases(&a, &fs)?;
    }
    agent_cases(&fs)?;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// BPF_PROG_TEST_RUN cases of the data plane: printed, and written to `a.json`.
fn datapath_cases(a: &Args, fs: &TestBpffs) -> Result<()> {
    let mut cases = Vec::new();
    let families: [(&str, IpAddr, IpAddr); 2] = [
        ("ipv4", "10.0.0.5".parse()?, "172.16.0.0".parse()?),
        ("ipv6", "2001:db8::5".parse()?, "2001:db8:ffff::5".parse()?),
    ];
    let other_dst: [IpAddr; 2] = ["192.0.2.77".parse()?, "2001:db8:eeee::1".parse()?];
    let mut baseline = [0f64; 2];
    for (n, rules) in [10usize, 100, 1000, xwan_common::MAX_RULES]
        .into_iter()
        .enumerate()
    {
        // A fresh data plane per rule count: pins live in their own directory.
        let dir = fs.path().join(format!("r{rules}"));
        std::fs::create_dir_all(&dir)?;
        let mut dp = Datapath::load(&dir)?;
        dp.apply(&plan(rules))?;
        dp.attach_lan(HOLDER_VETH)?;
        for (fi, (family, src, dst)) in families.iter().enumerate() {
            if n == 0 {
                let f = frame(*src, *dst, 9, 64);
                let runs = measure(
                    &dp,
                    PROG_XDP_BASELINE,
                    &f,
                    a.runs,
                    a.repeat,
                    a.repeat,
                    XDP_PASS,
                )?;
                baseline[fi] = median(&runs);
                cases.push(Case {
                    name: "baseline (parse only)".into(),
                    family,
                    rules: 0,
                    ns: baseline[fi],
                    runs,
                });
                // Flow hit: rule 0's packet, steered through an Ethernet gateway; after the first
                // repeat it is answered from the per-CPU flow cache.
                let f = frame(*src, *dst, 1000, 255);
                let runs = measure(&dp, PROG_XDP_LAN, &f, a.runs, a.repeat, 250, XDP_REDIRECT)?;
                cases.push(Case {
                    name: "flow hit (flow cache)".into(),
                    family,
                    rules,
                    ns: median(&runs),
                    runs,
                });
                // The same flow through a tunnel gateway: the source-MAC hand-off instead of
                // the MAC rewrite and redirect, then xwan_tc_steer's side of it.
                dp.set_router(0, &RouterTable::single(TUNNEL_GW))?;
                let runs = measure(&dp, PROG_XDP_LAN, &f, a.runs, a.repeat, 250, XDP_PASS)?;
                cases.push(Case {
                    name: "flow hit, tunnel hand-off".into(),
                    family,
                    rules,
                    ns: median(&runs),
                    runs,
                });
                let tagged = dp.xdp_test_run(PROG_XDP_LAN, &f, LO, 1)?.frame;
                let runs = measure_tc(&dp, PROG_TC_STEER, &tagged, a.runs, a.repeat)?;
                cases.push(Case {
                    name: "xwan_tc_steer (redirect)".into(),
                    family,
                    rules: 0,
                    ns: median(&runs),
                    runs,
                });
                dp.set_router(0, &RouterTable::single(0))?;
            }
            // Port miss: source and destination hit rule 0's prefixes, port 9 matches no rule
            // (the array lookups already rule everything out).
            let f = frame(*src, *dst, 9, 64);
            let runs = measure(&dp, PROG_XDP_LAN, &f, a.runs, a.repeat, a.repeat, XDP_PASS)?;
            cases.push(Case {
                name: format!("miss on port, {rules} rules"),
                family,
                rules,
                ns: median(&runs),
                runs,
            });
            // Address miss: rule 0's port, a destination no rule has: both LPM tries walked.
            let f = frame(*src, other_dst[fi], 1000, 64);
            let runs = measure(&dp, PROG_XDP_LAN, &f, a.runs, a.repeat, a.repeat, XDP_PASS)?;
            cases.push(Case {
                name: format!("miss on address, {rules} rules"),
                family,
                rules,
                ns: median(&runs),
                runs,
            });
        }
        // Attachments outlive a dropped Datapath (so restarts are hitless): detach explicitly.
        dp.detach_all()?;
    }

    println!(
        "\nxwan data plane, BPF_PROG_TEST_RUN, ns/packet (median of {} runs × {} repeats)",
        a.runs, a.repeat
    );
    println!(
        "{:<34} {:>6} {:>10} {:>12}",
        "case", "family", "ns/packet", "× baseline"
    );
    for c in &cases {
        let b = baseline[if c.family == "ipv4" { 0 } else { 1 }];
        println!(
            "{:<34} {:>6} {:>10.1} {:>12.2}",
            c.name,
            c.family,
            c.ns,
            c.ns / b
        );
    }
    for (family, ..) in &families {
        for kind in ["miss on port", "miss on address"] {
            let ns = |r: usize| {
                let c = cases
                    .iter()
                    .find(|c| c.family == *family && c.rules == r && c.name.starts_with(kind));
                c.expect("every rule count was measured").ns
            };
            println!(
                "{family}: {kind}: 1000 rules / 10 rules = {:.3}, {} rules / 10 rules = {:.3}",
                ns(1000) / ns(10),
                xwan_common::MAX_RULES,
                ns(xwan_common::MAX_RULES) / ns(10)
            );
        }
    }

    let json = format!(
        "{{\n  \"unit\": \"ns/packet\",\n  \"runs\": {},\n  \"repeat\": {},\n  \"kernel\": \"{}\",\n  \"cases\": [\n{}\n  ]\n}}\n",
        a.runs,
        a.repeat,
        kernel_release(),
        cases
            .iter()
            .map(|c| {
                let b = baseline[if c.family == "ipv4" { 0 } else { 1 }];
                format!(
                    "    {{\"case\": \"{}\", \"family\": \"{}\", \"rules\": {}, \"ns_per_packet\": {:.2}, \"ratio_to_baseline\": {:.3}, \"runs\": [{}]}}",
                    c.name,
                    c.family,
                    c.rules,
                    c.ns,
                    c.ns / b,
                    c.runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(",\n")
    );
    if let Some(dir) = a.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, json).with_context(|| format!("writing {}", a.json.display()))?;
    println!("results written to {}", a.json.display());
    Ok(())
}

/// The agent side: router recompute, verdict to committed tables, metrics scrape.
fn agent_cases(fs: &TestBpffs) -> Result<()> {
    // The agent side of a failover: from one gateway verdict to every router's new table (the
    // map writes come on top: one update and an RCU grace period per changed router).
    println!("\nrouter tables recomputed after one gateway verdict (2000 iterations):");
    for (routers, per_router) in [(64, 4), (64, 8), (256, 4)] {
        println!(
            "  {}",
            xwan::router::bench_recompute(routers, per_router, 2000)
        );
    }
    println!("\nrouter tables: slots moved beyond the leaving gateway's own (Maglev):");
    for (gateways, trials) in [
        (2, 200),
        (3, 200),
        (4, 200),
        (8, 200),
        (16, 200),
        (64, 50),
        (300, 10),
    ] {
        println!("  {}", xwan::router::bench_disruption(gateways, trials));
    }
    // The whole fast path of a verdict: recompute every router and write the changed tables
    // into the maps (slot table into the inactive buffer, then the version flip).
    let dir = fs.path().join("commit");
    std::fs::create_dir_all(&dir)?;
    let mut dp = Datapath::load(&dir)?;
    let specs = xwan::router::bench::bench_specs(64, 4);
    let max_id = specs
        .iter()
        .flat_map(|r| r.mains.iter().chain(&r.backups))
        .map(|m| m.gateway)
        .max();
    let gateways = (0..=max_id.unwrap_or(0))
        .map(|id| Gateway {
            id,
            kind: GatewayKind::Tunnel,
            ifindex: LO,
            mtu: 1500,
            ready: true,
        })
        .collect();
    let ready_all = |_: u16| xwan::health::Availability::Ready;
    let mut tables: Vec<RouterTable> = xwan::router::tables(&specs, &ready_all)
        .into_iter()
        .map(|t| t.0)
        .collect();
    dp.apply(&Plan {
        gateways,
        routers: tables.clone(),
        ..plan(0)
    })?;
    let (mut samples, mut writes) = (Vec::new(), Vec::new());
    for i in 0..200 {
        // Gateway 1 (in every router) goes down, then up again.
        let down = i % 2 == 0;
        let ready = |g: u16| match down && g == 1 {
            true => xwan::health::Availability::Unavailable,
            false => xwan::health::Availability::Ready,
        };
        let t = Instant::now();
        let new = xwan::router::tables(&specs, &ready);
        let computed = t.elapsed();
        let changed: Vec<(u16, RouterTable)> = new
            .into_iter()
            .enumerate()
            .filter(|(r, (table, _))| *table != tables[*r])
            .map(|(r, (table, _))| (r as u16, table))
            .collect();
        let refs: Vec<(u16, &RouterTable)> = changed.iter().map(|(r, t)| (*r, t)).collect();
        dp.set_routers(&refs)?;
        for (r, table) in changed {
            tables[r as usize] = table;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        writes.push((t.elapsed() - computed).as_secs_f64() * 1e6);
        // The next flip of the same routers would wait for an RCU grace period: let one pass,
        // as verdicts for one gateway are at least a probe interval apart.
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    samples.sort_by(f64::total_cmp);
    writes.sort_by(f64::total_cmp);
    println!(
        "\nverdict to committed tables, 64 routers x 4 gateways, every router changing (200 verdicts): \
         median {:.0} µs, p99 {:.0} µs (of which map writes: median {:.0} µs)",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        writes[writes.len() / 2]
    );
    dp.detach_all()?;

    // A metrics scrape: encoding a snapshot of every series (the kernel reads come on top).
    println!("\nmetrics scrape, snapshot handed over and encoded (500 iterations):");
    for (rules, gateways) in [(10, 4), (100, 32), (1000, 256)] {
        let (median, p99) = xwan::metrics::bench_scrape(rules, gateways, 500);
        println!("  {rules} rules, {gateways} gateways: median {median:.0} µs, p99 {p99:.0} µs");
    }
    // The kernel reads of the same scrape, through the scrape's own map descriptors.
    println!("\nmetrics scrape, kernel counters read (1,000 rules, 256 gateways, every reason):");
    for (flows, iterations) in [
        (0, 200),
        (10_000, 100),
        (xwan_common::FLOW_TABLE_SIZE, 10),
        (1_000_000, 5),
    ] {
        let dir = fs.path().join(format!("scrape{flows}"));
        std::fs::create_dir_all(&dir)?;
        // A full default table, or room for the flows (a data-centre edge's flow_table_size).
        let table = flows.max(xwan_common::FLOW_TABLE_SIZE);
        let dp = Datapath::load_sized(&dir, table)?;
        let (median, p99) =
            xwan::datapath::bench_counter_reads(&dir, 1000, 256, flows, iterations)?;
        println!("  {flows} flows in a table of {table}: median {median:.0} µs, p99 {p99:.0} µs");
        drop(dp);
    }
    Ok(())
}

/// veth whose native XDP attachment keeps the program in the XDP dispatcher.
const HOLDER_VETH: &str = "xbench0";

/// Moves this (single-threaded) process into a new network namespace with `lo` and a veth.
fn private_netns() -> Result<()> {
    // SAFETY: plain syscall; only this thread exists, so the whole process moves.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    for args in [
        vec!["link", "set", "lo", "up"],
        vec![
            "link",
            "add",
            HOLDER_VETH,
            "type",
            "veth",
            "peer",
            "name",
            "xbench1",
        ],
        vec!["link", "set", HOLDER_VETH, "up"],
        vec!["link", "set", "xbench1", "up"],
    ] {
        let st = std::process::Command::new("ip")
            .args(&args)
            .status()
            .context("run `ip` (iproute2)")?;
        if !st.success() {
            bail!("`ip {}` failed", args.join(" "));
        }
    }
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
