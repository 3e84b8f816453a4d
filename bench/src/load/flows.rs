//! `xwan-bench flows` (`cargo xtask bench -- flows`): the router's CPU per packet of steady
//! forwarding (every packet a flow hit) against the number of concurrent flows, on the load
//! test's topology and source. `xwan` at 1,000 rules, with `bare-xdp-3` beside it: the same
//! fan-out without any per-flow state, which shows what the flow count costs the rest of the
//! path (frames, caches of the source and sinks); and `bare-xdp-flows`: that fan-out with
//! nothing but a flow table as large as xwan's, the floor of per-flow state at each count. Before each window every flow has been sent
//! at least once (a warm-up scaled to the flow count), so the window holds only flow hits.
//! A benchmark: it asserts nothing.

use anyhow::{Context, Result, bail};

use super::{Mode, Settings, measure::Sample, on_topology, report::median, run_all};

const USAGE: &str = "usage: xwan-bench flows [--flows 4096,65536,262144,1000000] [--runs N (3)] \
[--json PATH (target/bench/flows.json)] [--xwan PATH]";

/// One flow count's medians.
struct Row {
    flows: usize,
    /// (mode, router ns/packet, forwarded Mpps).
    modes: Vec<(Mode, f64, f64)>,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut counts = vec![4096, 65_536, 262_144, 1_000_000];
    let mut runs = "3".to_owned();
    let mut json = std::path::PathBuf::from("target/bench/flows.json");
    let mut xwan = vec![];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--flows" => {
                counts = val()?
                    .split(',')
                    .map(|n| n.trim().parse().with_context(|| format!("bad count {n:?}")))
                    .collect::<Result<_>>()?
            }
            "--runs" => runs = val()?.clone(),
            "--json" => json = val()?.into(),
            "--xwan" => xwan = vec!["--xwan".to_owned(), val()?.clone()],
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if counts.is_empty() {
        bail!("--flows needs at least one count\n{USAGE}");
    }
    let mut load_args: Vec<String> = [
        "--modes",
        "xwan,bare-xdp-3,bare-xdp-flows",
        "--rules",
        "1000",
        "--imix-rules",
        "none",
        "--tun-rules",
        "none",
        "--no-failover",
        "--no-latency",
        "--runs",
        &runs,
    ]
    .map(str::to_owned)
    .to_vec();
    load_args.extend(xwan);
    // The largest count sizes `bare-xdp-flows`' table once, for every row.
    let largest = counts.iter().max().copied().unwrap_or(4096);
    load_args.extend(["--flows".to_owned(), largest.to_string()]);
    let settings = super::parse(&load_args)?;
    let started = std::time::Instant::now();
    let (settings, rows) = on_topology(settings, |settings, chosen, topo, tools, bin, work| {
        let mut rows = Vec::new();
        for &flows in &counts {
            let s = Settings {
                flows,
                warmup: warmup(flows),
                ..settings.clone()
            };
            eprintln!(
                "{flows} flows, {:.1} s warm-up per window",
                s.warmup.as_secs_f64()
            );
            let r = run_all(&s, chosen.clone(), topo, tools, bin, work)?;
            rows.push(Row {
                flows,
                modes: s.modes.iter().map(|m| medians(&r.samples, *m)).collect(),
            });
        }
        Ok(rows)
    })?;

    println!(
        "\nsteady forwarding (flow hits) against concurrent flows, router CPU per packet, \
         1,000 rules, 64-byte frames, source {}, median of {} runs:",
        settings.source.name(),
        settings.runs
    );
    print!("{:>10}", "flows");
    for (m, ..) in &rows[0].modes {
        print!(" {:>14} {:>8} {:>9}", m.name(), "Mpps", "× first");
    }
    println!();
    for r in &rows {
        print!("{:>10}", r.flows);
        for (i, (_, ns, mpps)) in r.modes.iter().enumerate() {
            print!(" {ns:>14.0} {mpps:>8.3} {:>9.2}", ns / rows[0].modes[i].1);
        }
        println!();
    }
    let cases: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.modes.iter().map(move |(m, ns, mpps)| {
                format!(
                    "    {{\"flows\": {}, \"mode\": \"{}\", \"router_ns_per_packet\": {ns:.1}, \"forwarded_mpps\": {mpps:.3}}}",
                    r.flows,
                    m.name()
                )
            })
        })
        .collect();
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json,
        format!(
            "{{\n  \"source\": \"{}\",\n  \"runs\": {},\n  \"cases\": [\n{}\n  ]\n}}\n",
            settings.source.name(),
            settings.runs,
            cases.join(",\n")
        ),
    )
    .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "results written to {} ({:.0} s)",
        json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Long enough for the relay (about 0.3–0.5 Mpps) to send every flow at least once.
fn warmup(flows: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64(0.4 + flows as f64 * 5e-6)
}

/// `mode`'s median router ns/packet and forwarded Mpps over its samples.
fn medians(samples: &[Sample], mode: Mode) -> (Mode, f64, f64) {
    let of = |f: fn(&Sample) -> f64| {
        let v: Vec<f64> = samples.iter().filter(|s| s.mode == mode).map(f).collect();
        median(&v)
    };
    (
        mode,
        of(|s| s.router_ns_per_packet),
        of(|s| s.forwarded_mpps),
    )
}
