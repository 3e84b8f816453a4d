//! The agent as `packaging/xwan.service` runs it, where no systemd is PID 1 to run the unit
//! itself: the capabilities bounded to the unit's `CapabilityBoundingSet` (with `setpriv`,
//! root without CAP_SYS_ADMIN), the bpf file system already mounted (systemd's), a
//! `NOTIFY_SOCKET` this test reads. It tells systemd it is ready once its first plan is
//! committed and its control socket answers; a reload (`ExecReload`) of a broken file fails
//! with the errors and the agent is ready again with the running configuration; a good one
//! applies. SIGTERM (`RestartKillSignal`) leaves the data plane forwarding for the next
//! agent, which adopts it; SIGUSR1 (`KillSignal`, `systemctl stop`) removes everything.
//!
//! Needs root and `setpriv` (util-linux). Namespaces, the agents and the bpffs mount are
//! removed even when the test fails.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    wan::{
        Agent, AgentConfig, AgentDir, Roles, TwoWan, active, assert_nothing_left, status, wait,
        wait_until,
    },
};

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/xwan.service");
    std::fs::read_to_string(path).expect("read packaging/xwan.service")
}

/// The unit's `CapabilityBoundingSet`, as `setpriv` names capabilities (`net_admin`).
fn bounding_set(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// The datagrams the agent sent to its `NOTIFY_SOCKET` within `within`, until one has `want`.
fn notices_until(socket: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.iter().any(|n: &String| n.contains(want)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} within {within:?}; got {got:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn xwan(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(crate::support::wan::xwan_bin())
        .args(args)
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn the_agent_runs_as_its_systemd_unit_would() {
    let _turn = support::exclusive();
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("SKIPPED: no setpriv (util-linux): the unit's capabilities are not checked");
        return;
    }
    let caps = bounding_set(&unit());
    assert!(
        !caps.iter().any(|c| c == "sys_admin"),
        "the unit grants CAP_SYS_ADMIN: {caps:?}"
    );
    let setpriv = |caps: &[String]| -> Vec<String> {
        let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
        vec![
            "setpriv".into(),
            format!("--bounding-set=-all{set}"),
            format!("--inh-caps=-all{set}"),
            format!("--ambient-caps=-all{set}"),
            "--".into(),
        ]
    };
    let net = TwoWan::new("10.86.0");
    let dir = AgentDir::new("service");
    dir.write(&AgentConfig::two_wan(Roles::MainAndBackup));
    // systemd mounts /sys/fs/bpf; mounting one needs CAP_SYS_ADMIN, which the unit lacks.
    let bpffs = dir.path().join("bpffs");
    std::fs::create_dir_all(&bpffs).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpffs)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a bpffs for the agent");
    let notify_path: PathBuf = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let env = [("NOTIFY_SOCKET", notify_path.as_path())];
    let socket = dir.socket();

    let started = Instant::now();
    let mut agent = Agent::start_wrapped(&net.rtr, &dir, "agent.log", &setpriv(&caps), &env);
    let got = notices_until(&notify, "READY=1", wait());
    println!("READY=1 {:?} after the start: {got:?}", started.elapsed());
    assert!(
        got.last().unwrap().contains("STATUS=steering: 1 routers, "),
        "{got:?}"
    );
    // Ready means the plan is committed and the control socket answers.
    assert!(status(&socket).is_some_and(|s| s.epoch > 0));
    wait_until("GW1 active", wait(), || {
        status(&socket).is_some_and(|s| active(&s, "GW1"))
    });
    // Nothing refused for want of a capability; only the tracefs this host lacks and systemd
    // mounts (sys-kernel-tracing.mount) could not be mounted privately without
    // CAP_SYS_ADMIN: then failed redirects count as steered, and the agent says so.
    let log = dir.log("agent.log");
    let refused: Vec<&str> = (log.lines())
        .filter(|l| l.contains("Operation not permitted") && !l.contains("no tracefs mounted"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // ExecReload: a broken file is refused, the agent is ready again on the running one.
    let good = std::fs::read_to_string(dir.config()).unwrap();
    std::fs::write(dir.config(), good.replace("tries = 3", "tries = 0")).unwrap();
    let refused = xwan(&["reload", "--config"], &dir.config());
    assert!(!refused.status.success(), "{refused:?}");
    let got = notices_until(&notify, "READY=1", wait());
    assert!(got[0].starts_with("RELOADING=1"), "{got:?}");
    std::fs::write(dir.config(), &good).unwrap();
    let applied = xwan(&["reload", "--config"], &dir.config());
    assert!(applied.status.success(), "{applied:?}");
    notices_until(&notify, "READY=1", wait());

    // RestartKillSignal: the agent exits, the programs stay attached and forward.
    agent.signal(libc::SIGTERM);
    agent.wait_exit(wait());
    let link = net.rtr.try_ip(&["link", "show", "l0"]).unwrap_or_default();
    assert!(link.contains("xdp"), "SIGTERM detached the program: {link}");
    let mut agent = Agent::start_wrapped(&net.rtr, &dir, "agent2.log", &setpriv(&caps), &env);
    notices_until(&notify, "READY=1", wait());
    assert!(
        dir.log("agent2.log")
            .contains("adopted pinned maps of a previous run"),
        "{}",
        dir.log("agent2.log")
    );

    // KillSignal: what `xwan stop` does.
    agent.signal(libc::SIGUSR1);
    notices_until(&notify, "STOPPING=1", wait());
    agent.wait_exit(wait());
    assert_nothing_left(&net.rtr, &dir);
}
