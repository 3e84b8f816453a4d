//! `xwan-lab`, run by `cargo xtask lab`: the seed scenario on this machine with steady
//! traffic and a live view; sub-commands drive a running lab from another terminal.
//! See the `xwan_lab` crate documentation and the README's "The lab" section.

use std::{
    io::{IsTerminal, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xwan_lab::{
    agent::locate_xwan,
    config::{Failback, Options, Timing},
    control::{self, PREFIX, STATE_DIR},
    lab::{Lab, Place},
    netns,
    observe::{Class, LinkCounters},
    topology::{CLIENTS, LINKS, Medium, Tunnels, link_index},
    traffic::{Client, Traffic},
};

#[derive(Parser)]
#[command(
    name = "xwan-lab",
    about = "The xwan lab: branch, head office and three WAN links in network namespaces, \
             with steady HTTP/FTP/SQL/VoIP traffic and a live view (run as root)",
    after_help = "Usually run as `cargo xtask lab [ARGS]`. Ctrl-C stops the lab and removes \
                  everything it created."
)]
struct Cli {
    /// Remove the lab (also one whose process was killed) and exit.
    #[arg(long)]
    down: bool,
    /// Both sites run the standard stateful forward policy, and both agents forward through
    /// it (`forwarding = "netfilter"`): watch it with `ip netns exec xwanlab-branch nft list ruleset`.
    #[arg(long, global = true)]
    firewall: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the lab and show the live view (the default).
    Run {
        /// Stop and clean up after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Cut a link of the running lab.
    Cut {
        /// WAN1, WAN2 or WAN3.
        link: String,
        /// Packets vanish, carrier stays up: only probes notice (the default).
        #[arg(long, conflicts_with = "carrier")]
        silent: bool,
        /// The link loses carrier (veth link WAN3 only).
        #[arg(long)]
        carrier: bool,
    },
    /// Restore a cut link.
    Restore { link: String },
    /// Delay every packet of a TUN link (WAN1, WAN2) by MS milliseconds, each way.
    Delay { link: String, ms: u64 },
    /// Drop PERCENT of the packets of a TUN link at random.
    Loss { link: String, percent: f64 },
    /// Print where each agent's Prometheus metrics are.
    Metrics,
    /// Remove the lab (same as --down).
    Down,
}

/// Root-namespace loopback ports forwarded to each agent's metrics endpoint.
const METRICS_PORTS: [(&str, u16); 2] = [("branch", 19464), ("headoffice", 19465)];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match (cli.down, cli.command) {
        (true, _) | (_, Some(Cmd::Down)) => control::down(),
        (_, None) => run(None, cli.firewall),
        (_, Some(Cmd::Run { seconds })) => run(seconds.map(Duration::from_secs), cli.firewall),
        (_, Some(Cmd::Cut { link, carrier, .. })) => {
            let how = if carrier { "carrier" } else { "silent" };
            send(&format!("cut {link} {how}"))
        }
        (_, Some(Cmd::Restore { link })) => send(&format!("restore {link}")),
        (_, Some(Cmd::Delay { link, ms })) => send(&format!("delay {link} {ms}")),
        (_, Some(Cmd::Loss { link, percent })) => send(&format!("loss {link} {percent}")),
        (_, Some(Cmd::Metrics)) => {
            print_metrics();
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn send(line: &str) -> Result<()> {
    println!("{}", control::send(line)?.trim_end());
    Ok(())
}

fn print_metrics() {
    for (site, port) in METRICS_PORTS {
        println!(
            "{site:<10} http://127.0.0.1:{port}/metrics   (forwarded by the lab to \
             127.0.0.1:9464 in namespace {PREFIX}{}; also: ip netns exec {PREFIX}{} curl -s \
             http://127.0.0.1:9464/metrics)",
            ns_suffix(site),
            ns_suffix(site)
        );
    }
}

fn ns_suffix(site: &str) -> &'static str {
    if site == "branch" { "branch" } else { "ho" }
}

fn run(duration: Option<Duration>, firewall: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces and loads eBPF programs: run it as root");
    }
    if let Some(pid) = control::running_pid() {
        bail!(
            "a lab is already running (pid {pid}); stop it with Ctrl-C there or `cargo xtask lab --down`"
        );
    }
    if !netns::list(PREFIX).is_empty() {
        bail!(
            "namespaces of an earlier lab are still there ({}): remove them with `cargo xtask \
             lab --down`",
            netns::list(PREFIX).join(", ")
        );
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let xwan = locate_xwan()?;
    let place = Place {
        prefix: PREFIX.into(),
        dir: STATE_DIR.into(),
    };
    let opts = Options {
        timing: Timing::INTERACTIVE,
        failback: Failback::NewConnections,
        tunnels: Tunnels::StandIn,
        firewall,
    };
    println!("starting the lab (namespaces {PREFIX}*, state in {STATE_DIR}) ...");
    let lab = Lab::start(&xwan, &place, &opts)?;
    for (name, agent) in [("branch", &lab.branch), ("headoffice", &lab.headoffice)] {
        std::fs::write(
            lab.state_dir().join(name).join("agent.pid"),
            agent.pid().to_string(),
        )?;
    }
    let (tx, commands) = mpsc::channel();
    let _listener = control::Listener::start(tx)?;
    let _metrics = METRICS_PORTS
        .iter()
        .filter_map(|&(site, port)| {
            let ns = format!("{PREFIX}{}", ns_suffix(site));
            forward_metrics(port, ns)
                .map_err(|e| eprintln!("metrics of the {site} agent not forwarded: {e:#}"))
                .ok()
        })
        .collect::<Vec<_>>();
    let mut traffic = start_traffic(&lab);
    let result = live(&lab, &traffic, &commands, duration);
    traffic.stop();
    println!("\nstopping: agents (xwan stop), taps, servers, namespaces ...");
    drop(lab);
    let left = netns::list(PREFIX);
    if left.is_empty() {
        println!("the lab is gone: nothing left behind");
    } else {
        println!("namespaces left: {left:?}; run `cargo xtask lab --down`");
    }
    result
}

/// Steady traffic of each class: HTTP and FTP sessions, SQL sessions and a client opening a
/// connection per query, four VoIP calls and SIP.
fn start_traffic(lab: &Lab) -> Traffic {
    let mut t = Traffic::new(lab.topo.lan.name());
    let ms = Duration::from_millis;
    t.start(Client::Http, CLIENTS[0], ms(100));
    t.start(Client::Http, CLIENTS[1], ms(250));
    t.start(Client::Ftp, CLIENTS[1], ms(500));
    t.start(Client::SqlSession, CLIENTS[2], ms(100));
    t.start(Client::SqlSession, CLIENTS[3], ms(200));
    t.start(Client::SqlConnections, CLIENTS[2], ms(100));
    for call in 0..4 {
        t.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    t.start(Client::Sip, CLIENTS[3], ms(1000));
    t
}

/// Redraws the view every second and executes commands from the control socket, until a
/// signal (or `duration`).
fn live(
    lab: &Lab,
    traffic: &Traffic,
    commands: &mpsc::Receiver<control::Command>,
    duration: Option<Duration>,
) -> Result<()> {
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last = (Instant::now(), lab.observer.counters());
    let mut message = String::from("lab ready");
    let mut next = Instant::now();
    while !STOP.load(Ordering::Relaxed) && duration.is_none_or(|d| start.elapsed() < d) {
        if let Ok(cmd) = commands.recv_timeout(next.saturating_duration_since(Instant::now())) {
            let answer = match execute(lab, &cmd.line) {
                Ok(a) => a,
                Err(e) => format!("error: {e:#}"),
            };
            message = format!("`{}`: {answer}", cmd.line);
            let _ = cmd.reply.send(answer);
        }
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let now = (Instant::now(), lab.observer.counters());
        let view = render(lab, traffic, &last, &now, &message);
        last = now;
        lab.observer.forget_older_than(Duration::from_secs(60));
        let mut out = std::io::stdout().lock();
        if tty {
            // In place: a new screen each second would scroll the terminal.
            let _ = write!(out, "{}", xwan::status::redraw(&view));
        } else {
            let _ = writeln!(out, "{view}");
        }
        let _ = out.flush();
    }
    Ok(())
}

fn execute(lab: &Lab, line: &str) -> Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["cut", link, how] => {
            let i = link_index(link)?;
            match *how {
                "carrier" => lab.topo.cut_carrier(i)?,
                _ => {
                    lab.topo.cut_silently(i)?;
                }
            }
            Ok(format!("{} cut ({how})", LINKS[i].name))
        }
        ["restore", link] => {
            let i = link_index(link)?;
            lab.topo.restore(i)?;
            Ok(format!("{} restored", LINKS[i].name))
        }
        ["delay", link, ms] => {
            let i = link_index(link)?;
            lab.topo
                .wire(i)?
                .set_delay(Duration::from_millis(ms.parse()?));
            Ok(format!("{} delayed by {ms} ms each way", LINKS[i].name))
        }
        ["loss", link, pct] => {
            let i = link_index(link)?;
            lab.topo.wire(i)?.set_loss(pct.parse()?);
            Ok(format!("{} drops {pct} % of its packets", LINKS[i].name))
        }
        _ => bail!("unknown command '{line}'"),
    }
}

fn render(
    lab: &Lab,
    traffic: &Traffic,
    (t0, before): &(Instant, LinkCounters),
    (t1, after): &(Instant, LinkCounters),
    message: &str,
) -> String {
    use std::fmt::Write as _;
    let secs = t1.duration_since(*t0).as_secs_f64().max(0.001);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "xwan lab — branch ⇄ head office over WAN1..WAN3 (Ctrl-C stops and cleans up)\n"
    );
    let now = SystemTime::now();
    match lab.branch.status() {
        Some(st) => {
            let _ = writeln!(
                s,
                "branch `xwan status`:\n{}",
                xwan::status::render(&st, now)
            );
        }
        None => {
            let _ = writeln!(s, "branch agent: not answering");
        }
    }
    let _ = writeln!(
        s,
        "traffic per link, packets/s (branch → head office; replies back)"
    );
    let _ = write!(s, "{:<5} {:<6} {:<14}", "link", "medium", "state");
    for c in Class::ALL {
        let _ = write!(s, " {:>7}", c.name());
    }
    let _ = writeln!(s, " {:>8}", "replies");
    for (i, l) in LINKS.iter().enumerate() {
        let state = lab.topo.cut_state(i).unwrap_or("up");
        let mut impair = String::new();
        if let Ok(w) = lab.topo.wire(i) {
            if !w.delay().is_zero() {
                impair += &format!(" +{}ms", w.delay().as_millis());
            }
            if w.loss() > 0.0 {
                impair += &format!(" {}%loss", w.loss());
            }
        }
        let medium = match lab.topo.medium(i) {
            Medium::Tun => "TUN",
            Medium::Veth => "veth",
            Medium::Vti => "VTI",
        };
        let _ = write!(
            s,
            "{:<5} {:<6} {:<14}",
            l.name,
            medium,
            format!("{state}{impair}")
        );
        let mut replies = 0.0;
        for (k, _) in Class::ALL.iter().enumerate() {
            let rate = (after[i][k].0 - before[i][k].0) as f64 / secs;
            replies += (after[i][k].2 - before[i][k].2) as f64 / secs;
            let _ = write!(s, " {rate:>7.0}");
        }
        let _ = writeln!(s, " {replies:>8.0}");
    }
    let _ = writeln!(s, "\nclients (answered / sent, errors)");
    for st in &traffic.flows {
        let _ = writeln!(
            s,
            "  {:<30} {:>7} / {:<7} {}",
            st.label,
            st.answered.load(Ordering::Relaxed),
            st.sent.load(Ordering::Relaxed),
            st.errors.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "\n{message}\nfrom another terminal: cargo xtask lab cut WAN2 [--silent|--carrier] · \
         restore WAN2 · delay WAN1 80 · loss WAN1 5 · metrics · --down"
    );
    s
}

/// Forwards 127.0.0.1:`port` (this process's namespace) to the agent's metrics endpoint
/// 127.0.0.1:9464 in namespace `ns`, one thread per connection.
fn forward_metrics(port: u16, ns: String) -> Result<std::thread::JoinHandle<()>> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    Ok(std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let ns = ns.clone();
            std::thread::spawn(move || {
                if netns::enter_by_name(&ns).is_err() {
                    return;
                }
                let Ok(agent) = TcpStream::connect(("127.0.0.1", 9464)) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut a2)) = (client.try_clone(), agent.try_clone()) else {
                    return;
                };
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut a2);
                    let _ = a2.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut c) = (agent, client);
                let _ = std::io::copy(&mut a, &mut c);
                // The agent answered and closed: so does the client's side, which ends `up`.
                let _ = c.shutdown(std::net::Shutdown::Both);
                let _ = up.join();
            });
        }
    }))
}
