//! `xwan-bench scale`: the agent with many gateways (issue 20). A benchmark: it prints and
//! writes what it measured and asserts nothing.
//!
//! For each gateway count N: a router namespace and a peer namespace joined by one veth
//! (`sw0` ↔ `sp0`, 10.200.0.0/16), where the peer holds N addresses and answers their ARP and
//! ping; a second veth pair is the router's LAN. The agent (`xwan run`) gets one Ethernet
//! link with N gateways, N/4 routers of four gateways each (probed every second, 500 ms
//! wait) and one rule per router. Measured:
//! * how long after the start every gateway is Ready (the control socket's status);
//! * then, over a steady window: the agent's CPU (`/proc/PID/stat`, % of one core; the agent
//!   runs on CPU 0 and the link's receive work on CPU 1, so it is the agent's own), and what
//!   its log says it did: whole-plan commits (`plan applied`), gateway-only updates
//!   (`gateways updated`), netlink overflows and resyncs;
//! * then one gateway's address is removed from the peer: how long the agent took from that
//!   gateway's verdict to its router tables committed (the log's `commit_us`).
//!
//! Namespaces are named after this process (`xsc<pid>-…`) and deleted on every exit path.
//!
//! The kernel's neighbour table limits are host-wide (`net.ipv4.neigh.default.gc_thresh3`,
//! 1,024 by default): past them gateways never resolve. A count that needs more is measured
//! only with `--raise-neighbour-limits`, which raises them for the run and puts the host's
//! values back afterwards (also on failure); without it that count is skipped and said so.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xwan::control::{Answer, Request};
use xwan_testkit::Netns;

use super::load::modes::Agent;

const USAGE: &str = "usage: xwan-bench scale [--gateways 64,256,1000] [--window SECS (20)] \
                     [--ready-timeout SECS (120)] [--raise-neighbour-limits] [--json PATH] \
                     [--xwan PATH]";

struct Settings {
    gateways: Vec<usize>,
    window: Duration,
    ready_timeout: Duration,
    json: PathBuf,
    xwan: Option<PathBuf>,
    raise_neighbour_limits: bool,
}

/// One gateway count's results.
#[derive(Serialize, Debug)]
struct Sample {
    gateways: usize,
    routers: usize,
    /// From the agent's start until every gateway was Ready; `None` if they were not all
    /// Ready within the timeout.
    ready_after_s: Option<f64>,
    /// Gateways Ready at the end of the wait.
    ready: usize,
    window_s: f64,
    /// The agent's CPU over the window, % of one core.
    agent_cpu_percent: f64,
    /// During the window: whole-plan commits, gateway-only updates, netlink overflows
    /// (resyncs).
    whole_commits: usize,
    gateway_updates: usize,
    resyncs: usize,
    /// The same from the start to the end of the window.
    whole_commits_total: usize,
    gateway_updates_total: usize,
    resyncs_total: usize,
    /// One gateway lost: from its verdict to its router's table committed, µs (`None` if no
    /// verdict came within the timeout).
    verdict_commit_us: Option<u64>,
}

pub fn main(args: &[String]) -> Result<()> {
    let s = settings(args)?;
    if unsafe { libc::geteuid() } != 0 {
        bail!("the scale benchmark creates network namespaces: run it as root");
    }
    let xwan = super::load::find_xwan(&s.xwan)?;
    let machine = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    println!(
        "scale: {} CPUs, Linux {machine}, window {:?}, agent {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        s.window,
        xwan.display()
    );
    let mut samples = Vec::new();
    for &n in &s.gateways {
        // The gateways' entries, the router's own on the peer's side and a margin.
        let needed = n as u64 + 64;
        let limits = NeighbourLimits::read()?;
        let _raised = match (needed > limits.gc_thresh3, s.raise_neighbour_limits) {
            (false, _) => None,
            (true, true) => Some(limits.raise(needed)?),
            (true, false) => {
                println!(
                    "  {n:>5} gateways: skipped: they need about {needed} neighbour entries and \
                     this host's net.ipv4.neigh.default.gc_thresh3 is {} (host-wide); pass \
                     --raise-neighbour-limits to raise it for the run",
                    limits.gc_thresh3
                );
                continue;
            }
        };
        let sample = measure(n, &s, &xwan).with_context(|| format!("{n} gateways"))?;
        println!(
            "  {n:>5} gateways: Ready after {}, agent CPU {:.2} % of a core, in {:.0} s: {} \
             whole-plan commits, {} gateway updates, {} resyncs (since the start: {}, {}, {}); \
             one gateway lost: verdict to commit {}",
            sample
                .ready_after_s
                .map_or(format!("— ({} of {n} Ready)", sample.ready), |t| format!(
                    "{t:.1} s"
                )),
            sample.agent_cpu_percent,
            sample.window_s,
            sample.whole_commits,
            sample.gateway_updates,
            sample.resyncs,
            sample.whole_commits_total,
            sample.gateway_updates_total,
            sample.resyncs_total,
            sample
                .verdict_commit_us
                .map_or("— (no verdict)".to_owned(), |us| format!("{us} µs")),
        );
        samples.push(sample);
    }
    if let Some(dir) = s.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&s.json, serde_json::to_string_pretty(&samples)?)?;
    println!("results written to {}", s.json.display());
    Ok(())
}

fn settings(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        gateways: vec![64, 256, 1000],
        window: Duration::from_secs(20),
        ready_timeout: Duration::from_secs(120),
        json: PathBuf::from("target/bench/scale.json"),
        xwan: None,
        raise_neighbour_limits: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--gateways" => {
                s.gateways = val()?
                    .split(',')
                    .map(|n| n.parse().with_context(|| format!("--gateways: {n}")))
                    .collect::<Result<_>>()?
            }
            "--window" => s.window = Duration::from_secs_f64(val()?.parse()?),
            "--ready-timeout" => s.ready_timeout = Duration::from_secs_f64(val()?.parse()?),
            "--json" => s.json = val()?.into(),
            "--xwan" => s.xwan = Some(val()?.into()),
            "--raise-neighbour-limits" => s.raise_neighbour_limits = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if let Some(&n) = s.gateways.iter().find(|&&n| !(4..=64_000).contains(&n)) {
        bail!("--gateways: {n} is outside 4..=64000 (four per router, a /16 of addresses)");
    }
    Ok(s)
}

/// The host's IPv4 neighbour table limits (`net.ipv4.neigh.default.gc_thresh1..3`).
#[derive(Clone, Copy)]
struct NeighbourLimits {
    gc_thresh1: u64,
    gc_thresh2: u64,
    gc_thresh3: u64,
}

const NEIGH: &str = "/proc/sys/net/ipv4/neigh/default";

impl NeighbourLimits {
    fn read() -> Result<Self> {
        let get = |name: &str| -> Result<u64> {
            let path = format!("{NEIGH}/{name}");
            let v = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            v.trim().parse().with_context(|| format!("parsing {path}"))
        };
        Ok(NeighbourLimits {
            gc_thresh1: get("gc_thresh1")?,
            gc_thresh2: get("gc_thresh2")?,
            gc_thresh3: get("gc_thresh3")?,
        })
    }

    fn write(&self) -> Result<()> {
        // gc_thresh3 first when raising, last when lowering: the kernel wants them ordered.
        let mut values = [
            ("gc_thresh3", self.gc_thresh3),
            ("gc_thresh2", self.gc_thresh2),
            ("gc_thresh1", self.gc_thresh1),
        ];
        if NeighbourLimits::read()?.gc_thresh3 > self.gc_thresh3 {
            values.reverse();
        }
        for (name, v) in values {
            let path = format!("{NEIGH}/{name}");
            std::fs::write(&path, v.to_string()).with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }

    /// Raises the limits to hold `needed` entries without forced garbage collection; the
    /// guard puts these values back.
    fn raise(self, needed: u64) -> Result<RaisedLimits> {
        let want = needed.next_power_of_two();
        NeighbourLimits {
            gc_thresh1: self.gc_thresh1,
            gc_thresh2: want,
            gc_thresh3: 2 * want,
        }
        .write()?;
        println!(
            "  (net.ipv4.neigh.default.gc_thresh2/3 raised from {}/{} to {want}/{} for this \
             count)",
            self.gc_thresh2,
            self.gc_thresh3,
            2 * want
        );
        Ok(RaisedLimits(self))
    }
}

/// Puts the host's neighbour limits back when dropped.
struct RaisedLimits(NeighbourLimits);

impl Drop for RaisedLimits {
    fn drop(&mut self) {
        if let Err(e) = self.0.write() {
            eprintln!("putting the host's neighbour limits back: {e:#}");
        }
    }
}

/// The peer's address of gateway `i` (10.200.0.0/16, .0.1 is the router's).
fn gateway_addr(i: usize) -> String {
    let n = i + 2;
    format!("10.200.{}.{}", n / 250, n % 250 + 1)
}

fn measure(n: usize, s: &Settings, xwan: &Path) -> Result<Sample> {
    let pid = std::process::id();
    let rtr = Netns::replace(&format!("xsc{pid}-r"))?;
    let peer = Netns::replace(&format!("xsc{pid}-p"))?;
    for (dev, other) in [("sw0", "sp0"), ("sl0", "sh0")] {
        rtr.ip(&[
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            other,
            "netns",
            peer.name(),
        ])?;
        rtr.ip(&["link", "set", dev, "up"])?;
        peer.ip(&["link", "set", other, "up"])?;
    }
    // Both ends of the link receive on CPU 1 (RPS) and the agent runs on CPU 0: a veth
    // otherwise hands each frame to its peer inside the sender's syscall, and the agent's
    // CPU would include the peer's answer to every echo and the reply's way in, which a
    // real gateway's NIC interrupt takes elsewhere.
    let split = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if split {
        for (ns, dev) in [(&rtr, "sw0"), (&peer, "sp0")] {
            let rps = format!("echo 2 > /sys/class/net/{dev}/queues/rx-0/rps_cpus");
            ns.exec("sh", &["-c", &rps], "")?;
        }
    }
    rtr.ip(&["addr", "add", "10.200.0.1/16", "dev", "sw0"])?;
    rtr.ip(&["addr", "add", "10.201.0.1/24", "dev", "sl0"])?;
    peer.ip(&["addr", "add", "10.201.0.2/24", "dev", "sh0"])?;
    let batch: String = (0..n)
        .map(|i| format!("addr add {}/16 dev sp0\n", gateway_addr(i)))
        .collect();
    peer.exec("ip", &["-batch", "-"], &batch)?;

    let dir = std::env::temp_dir().join(format!("xwan-scale-{pid}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("xwan.toml");
    std::fs::write(&cfg, config(n, &dir))?;
    let routers = n / 4;

    let mut agent = Agent::start(xwan, &rtr, &cfg, &dir, false)?;
    let result = (|| {
        if split {
            // Threads made later inherit it from their makers.
            for task in std::fs::read_dir(format!("/proc/{}/task", agent.pid()))? {
                let tid: i32 = task?.file_name().to_string_lossy().parse()?;
                super::load::sys::pin(tid, 0)?;
            }
        }
        let started = Instant::now();
        let mut ready = 0;
        let mut ready_after = None;
        while started.elapsed() < s.ready_timeout {
            if let Some(r) = ready_gateways(&agent) {
                ready = r;
                if r == 4 * routers {
                    ready_after = Some(started.elapsed().as_secs_f64());
                    break;
                }
            }
            if let Some(status) = agent.exited() {
                bail!("xwan exited ({status}); log:\n{}", agent.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = (cpu_ticks(&agent)?, log_counts(&agent));
        let t = Instant::now();
        std::thread::sleep(s.window);
        let after = (cpu_ticks(&agent)?, log_counts(&agent));
        let window = t.elapsed().as_secs_f64();
        // One gateway goes silent: its verdict comes after its probes' tries. The last one:
        // removing the first, the subnet's primary address, would take every other with it.
        let last = n - 1;
        let silent = format!("{}/16", gateway_addr(last));
        peer.ip(&["addr", "del", &silent, "dev", "sp0"])?;
        let t = Instant::now();
        let mut verdict_commit_us = None;
        while verdict_commit_us.is_none() && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
            verdict_commit_us = commit_us_after(&agent, after.1.3, &format!("G{last}"));
        }
        // SAFETY: plain libc call.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(Sample {
            gateways: n,
            routers,
            ready_after_s: ready_after,
            ready,
            window_s: window,
            agent_cpu_percent: 100.0 * (after.0 - before.0) as f64 / hz / window,
            whole_commits: after.1.0 - before.1.0,
            gateway_updates: after.1.1 - before.1.1,
            resyncs: after.1.2 - before.1.2,
            whole_commits_total: after.1.0,
            gateway_updates_total: after.1.1,
            resyncs_total: after.1.2,
            verdict_commit_us,
        })
    })();
    if let Err(e) = agent.stop() {
        eprintln!("stopping the agent: {e:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop((rtr, peer));
    result
}

/// The agent's configuration: one Ethernet link, `n` gateways on it, `n / 4` routers of
/// four gateways, one rule per router.
fn config(n: usize, dir: &Path) -> String {
    let mut s = format!(
        "[agent]\nlan_interfaces = [\"sl0\"]\nbpffs = \"{d}/bpffs\"\ncontrol_socket = \
         \"{d}/ctl.sock\"\n\n[[link]]\nname = \"L1\"\ninterface = \
         \"sw0\"\nkind = \"ethernet\"\naddress = \"10.200.0.1/16\"\n",
        d = dir.display()
    );
    for i in 0..n {
        s.push_str(&format!(
            "\n[[gateway]]\nname = \"G{i}\"\nlink = \"L1\"\naddress = \"{}\"\n",
            gateway_addr(i)
        ));
    }
    for r in 0..n / 4 {
        let gws: Vec<String> = (0..4).map(|k| format!("\"G{}\"", 4 * r + k)).collect();
        s.push_str(&format!(
            "\n[[router]]\nname = \"R{r}\"\ngateways = [{}]\nfrequency = \"1s\"\nwait = \
             \"500ms\"\n\n[[rule]]\nname = \"r{r}\"\nprotocol = [\"udp\"]\ndst_port = [{}]\n\
             action = \"route\"\nrouter = \"R{r}\"\n",
            gws.join(", "),
            10_000 + r
        ));
    }
    s
}

/// How many gateways `agent`'s status says are Ready (`None` before it answers).
fn ready_gateways(agent: &Agent) -> Option<usize> {
    match agent.request(Request::Status) {
        Ok(Answer::Status(s)) => Some(
            s.routers
                .iter()
                .flat_map(|r| &r.gateways)
                .filter(|g| g.availability == xwan::status::Availability::Ready)
                .count(),
        ),
        _ => None,
    }
}

/// `agent`'s user + system CPU so far, in clock ticks.
fn cpu_ticks(agent: &Agent) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid()))?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// (whole-plan commits, gateway-only updates, netlink overflows, verdict commits) the log
/// reports so far.
fn log_counts(agent: &Agent) -> (usize, usize, usize, usize) {
    let log = agent.log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    (
        count("plan applied"),
        count("gateways updated"),
        count("notifications were lost"),
        count("router tables committed"),
    )
}

/// The `commit_us` of the first verdict commit after the first `skip` that names only
/// `gateway`.
fn commit_us_after(agent: &Agent, skip: usize, gateway: &str) -> Option<u64> {
    let log = agent.log();
    let line = log
        .lines()
        .filter(|l| l.contains("router tables committed"))
        .skip(skip)
        .find(|l| l.contains(&format!("\"gateways\":\"{gateway}\"")))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("commit_us")?.as_u64()
}
