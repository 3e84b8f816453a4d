//! `xwan`: the agent binary. `run` is the daemon; the other commands check a configuration
//! or talk to a running agent over its control socket.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xwan::{
    config,
    control::{self, Answer, Request},
    daemon, status,
};

/// Which running agent a command talks to: its control socket, given, or read from its
/// configuration file (`[agent] control_socket`, or the default when the file has none).
#[derive(clap::Args)]
struct Target {
    /// The agent's control socket [default: /run/xwan/control.sock]
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// The agent's configuration file, for its control socket (the agent itself reloads the
    /// file it was started with).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> PathBuf {
        match (&self.socket, &self.config) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => config::control_socket_of(c),
            (None, None) => PathBuf::from(config::DEFAULT_CONTROL_SOCKET),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "xwan",
    version,
    about = "Multi-link policy router on XDP",
    long_about = "xwan steers each flow of an edge router's LAN to a gateway of a router \
                  object (weighted, with backups and failover), in XDP, and probes every \
                  gateway. `xwan run` is the agent (packaged as xwan.service); the other \
                  commands check a configuration or talk to the running agent.",
    after_help = "Files: /etc/xwan/xwan.toml (configuration), /run/xwan/control.sock (control \
                  socket), /sys/fs/bpf/xwan (pinned maps and links). Metrics: \
                  http://127.0.0.1:9464/metrics. Documentation: /usr/share/doc/xwan."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["json", "text"], default_value = "json")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: attach, probe gateways, steer (SIGHUP reloads).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print the resolved configuration, or every error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show routers and gateways of the running agent.
    Status {
        /// The status as JSON (RFC 3339 times, snake_case values).
        #[arg(long)]
        json: bool,
        /// Redraw every N seconds in place, like watch(1), until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1", conflicts_with = "json")]
        watch: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
    /// Reload the running agent's configuration (a broken one is rejected and reported).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Which rule, router and gateway a packet would take now, and why.
    Explain {
        #[arg(long)]
        src: std::net::IpAddr,
        #[arg(long)]
        dst: std::net::IpAddr,
        /// Protocol name (tcp, udp, icmp, ...) or number.
        #[arg(long, default_value = "tcp")]
        proto: String,
        #[arg(long)]
        sport: Option<u16>,
        #[arg(long)]
        dport: Option<u16>,
        #[arg(long, default_value_t = 0)]
        dscp: u8,
        /// Ingress interface (default: the first LAN interface).
        #[arg(long = "in")]
        iface: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// What this kernel and each configured interface offer, and which fallback xwan uses
    /// (exit status 1 when xwan cannot run here). Run it as root before deploying.
    Doctor {
        /// Also check the configuration's interfaces (LAN and links).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the running agent's events as they happen, one JSON object per line (gateway
    /// and router state changes, reload results, IPsec SA loss), until interrupted or the
    /// agent stops.
    Events {
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Detach and remove everything the running agent created, and stop it; returns once all
    /// of it is removed.
    Stop {
        #[command(flatten)]
        target: Target,
    },
    /// Write the manual pages (section 8) and the bash, zsh and fish completions into DIR
    /// (`man/`, `completions/`): what `cargo xtask deb` packages.
    #[command(hide = true)]
    Generate { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // netlink-proto warns of every answer to a request whose caller stopped reading (a dump
    // cut short, a request past its deadline): the agent says what matters itself.
    let filter = tracing_subscriber::EnvFilter::try_from_env("XWAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_proto=error"));
    // Under systemd, stderr is the journal: entries with their fields (ROUTER=, GATEWAY=…)
    // rather than JSON text in MESSAGE=.
    let journal = (xwan::systemd::stderr_is_journal())
        .then(|| tracing_journald::layer().ok())
        .flatten();
    if let Some(layer) = journal {
        use tracing_subscriber::prelude::*;
        let layer = layer
            .with_field_prefix(None)
            .with_syslog_identifier("xwan".into());
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
    } else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        if cli.log_format == "json" {
            builder.json().flatten_event(true).init();
        } else {
            builder.init();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xwan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok((c, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                // Key files are read by `xwan run` (as root, on the router); here a problem
                // with them is a warning, since the check may run elsewhere.
                for l in &c.links {
                    if let Some(m) = l.ipsec.as_ref().and_then(|t| t.manual_sa.as_ref())
                        && let Err(e) = xwan::xfrm::keys::load(&l.name, m)
                    {
                        eprintln!("warning: {e}");
                    }
                }
                print!("{}", c.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match rt.block_on(daemon::run(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xwan: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Status {
            json,
            watch: Some(every),
            target,
        } if !json => rt.block_on(watch(&target.socket(), every)),
        Command::Status { json, target, .. } => {
            rt.block_on(ask(&target.socket(), Request::Status, |a| match a {
                Answer::Status(s) if json => serde_json::to_string_pretty(&s).unwrap_or_default(),
                Answer::Status(s) => status::render(&s, std::time::SystemTime::now()),
                other => format!("{other:?}"),
            }))
        }
        Command::Reload { target } => {
            rt.block_on(ask(&target.socket(), Request::Reload, |a| match a {
                Answer::Reloaded { epoch } => {
                    format!("reloaded: the configuration is applied (ruleset epoch {epoch})")
                }
                other => format!("{other:?}"),
            }))
        }
        Command::Explain {
            src,
            dst,
            proto,
            sport,
            dport,
            dscp,
            iface,
            target,
        } => {
            let proto = match xwan::explain::parse_protocol(&proto) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("xwan: --proto: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if dscp > 63 {
                eprintln!("xwan: --dscp: DSCP values are 0 to 63");
                return ExitCode::FAILURE;
            }
            let q = xwan::explain::Query {
                src,
                dst,
                proto,
                sport,
                dport,
                dscp,
                iface,
            };
            rt.block_on(ask(&target.socket(), Request::Explain(q), |a| match a {
                Answer::Explained { text } => text.trim_end().to_string(),
                other => format!("{other:?}"),
            }))
        }
        Command::Doctor { config, json } => {
            let config = match config.as_deref().map(config::load).transpose() {
                Ok(c) => c.map(|(c, _)| c),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let report = xwan::doctor::run(config.as_ref());
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
            }
            if report.fatal() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Stop { target } => rt.block_on(stop(&target.socket())),
        Command::Events { count, target } => rt.block_on(events(&target.socket(), count)),
        Command::Generate { dir } => match generate(&dir) {
            Ok(n) => {
                println!("wrote {n} files under {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xwan: writing under {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// `xwan generate DIR`: `xwan.8` and one `xwan-COMMAND.8` per command from the command
/// line's own definition, and the completions. Returns how many files it wrote.
fn generate(dir: &std::path::Path) -> std::io::Result<usize> {
    use clap::CommandFactory;
    let (man, completions) = (dir.join("man"), dir.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut cmd = Cli::command();
    cmd.build();
    let page = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("xwan manual")
            .render(&mut out)?;
        std::fs::write(man.join(format!("{name}.8")), out)
    };
    let mut n = 0;
    for sub in (cmd.get_subcommands()).filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("xwan-{}", sub.get_name());
        page(sub.clone().name(name.clone()).bin_name(&name), &name)?;
        n += 1;
    }
    page(cmd.clone(), "xwan")?;
    n += 1;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "xwan"),
        (clap_complete::Shell::Zsh, "_xwan"),
        (clap_complete::Shell::Fish, "xwan.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "xwan", &mut out);
        std::fs::write(completions.join(file), out)?;
        n += 1;
    }
    Ok(n)
}

/// `xwan events`: the stream on stdout, anything else on stderr.
async fn events(socket: &PathBuf, count: Option<u64>) -> ExitCode {
    use std::io::Write;
    let (mut seen, mut failed) = (0u64, None);
    let listened = control::listen(socket, |a| match a {
        Answer::Listening => {
            eprintln!("xwan: listening to the agent at {}", socket.display());
            true
        }
        Answer::Event(e) => {
            let mut out = std::io::stdout().lock();
            let line = serde_json::to_string(&e).unwrap_or_default();
            // A reader that went away (`| head`) ends it.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return false;
            }
            seen += 1;
            count.is_none_or(|c| seen < c)
        }
        Answer::Lost { events } => {
            eprintln!("xwan: {events} events lost: this reader did not keep up");
            true
        }
        Answer::Error { message } => {
            failed = Some(message);
            false
        }
        other => {
            failed = Some(format!("unexpected answer from the agent: {other:?}"));
            false
        }
    })
    .await;
    match (listened, failed) {
        (Err(e), _) => eprintln!("xwan: {e}"),
        (Ok(()), Some(message)) => eprintln!("xwan: {message}"),
        (Ok(()), None) if count.is_none_or(|c| seen < c) => {
            eprintln!("xwan: the agent closed the stream (it stopped)");
            return ExitCode::SUCCESS;
        }
        (Ok(()), None) => return ExitCode::SUCCESS,
    }
    ExitCode::FAILURE
}

/// How long `xwan stop` waits for the agent to say everything is removed: its teardown's
/// kernel requests each have a 5 s deadline.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `xwan stop`: returns once the agent has removed everything (or says why it could not).
async fn stop(socket: &PathBuf) -> ExitCode {
    let asked = tokio::time::timeout(STOP_WITHIN, control::call(socket, &Request::Stop)).await;
    match asked {
        Ok(Ok(Answer::Stopped)) => {
            println!(
                "stopped: programs detached; pinned maps and links, policy routing, manual SAs \
                 and the tunnel interfaces xwan created removed"
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(Answer::Error { message })) => {
            eprintln!("xwan: {message}");
            ExitCode::FAILURE
        }
        Ok(Ok(other)) => {
            eprintln!("xwan: unexpected answer from the agent: {other:?}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("xwan: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "xwan: the agent did not confirm its stop within {}; see its log",
                humantime::format_duration(STOP_WITHIN)
            );
            ExitCode::FAILURE
        }
    }
}

/// `xwan status --watch`: the status redrawn in place every `every` seconds.
async fn watch(socket: &PathBuf, every: f64) -> ExitCode {
    use std::io::Write;
    if !(every.is_finite() && every >= 0.1) {
        eprintln!("xwan: --watch: give an interval of at least 0.1 s");
        return ExitCode::FAILURE;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(every));
    // The first screen starts clean.
    print!("\x1b[H\x1b[2J");
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now();
        let text = match control::call(socket, &Request::Status).await {
            Ok(Answer::Status(s)) => status::render(&s, now),
            Ok(Answer::Error { message }) => format!("xwan: {message}\n"),
            Ok(other) => format!("xwan: unexpected answer from the agent: {other:?}\n"),
            Err(e) => format!("xwan: {e}\n"),
        };
        let head = format!(
            "every {every}s: xwan status  {}\n\n",
            humantime::format_rfc3339_seconds(now)
        );
        let screen = status::redraw(&(head + &text));
        let mut out = std::io::stdout().lock();
        if out
            .write_all(screen.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
    }
}

async fn ask(socket: &PathBuf, request: Request, show: impl Fn(Answer) -> String) -> ExitCode {
    match control::call(socket, &request).await {
        Ok(Answer::Error { message }) => {
            eprintln!("xwan: {message}");
            ExitCode::FAILURE
        }
        Ok(a) => {
            println!("{}", show(a));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xwan: {e}");
            ExitCode::FAILURE
        }
    }
}
