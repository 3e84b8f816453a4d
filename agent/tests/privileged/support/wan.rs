//! The two-WAN topology the agent tests share, and the agent process they run in it:
//!
//! ```text
//! lan (h0 NET.2/24) ── rtr (l0 NET.1/24; w1 192.0.2.1/30, w2 192.0.2.5/30) ── wan1 (p1 .2)
//!                                                                          └─ wan2 (p2 .6)
//! ```
//! The WAN peers carry an XDP program so that veth delivers XDP-redirected frames to them.

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xwan::{
    control::{Answer, Request, call},
    datapath::{Datapath, TestBpffs},
    status::Status,
};

/// Bound of every wait: 5 s, or `XWAN_TEST_WAIT_SECS` (the Linux 6.1 VM suite's emulated CPU
/// needs longer).
pub fn wait() -> Duration {
    let secs = std::env::var("XWAN_TEST_WAIT_SECS").ok();
    Duration::from_secs(secs.and_then(|s| s.parse().ok()).unwrap_or(5))
}

/// How router R of [`config`] uses its two gateways.
#[derive(Clone, Copy)]
pub enum Roles {
    /// GW1 main, GW2 backup.
    MainAndBackup,
    /// Both main: new flows are balanced over them.
    BothMain,
}

/// The agent's configuration for [`TwoWan`], its files under `dir`: router R on GW1 (WAN1) and
/// GW2 (WAN2) in `roles`, probed every 200 ms (wait 100 ms, 3 tries); UDP/5001 goes through R,
/// UDP/5003 is blocked.
pub fn config(dir: &Path, roles: Roles) -> String {
    let gateways = match roles {
        Roles::MainAndBackup => "gateways = [\"GW1\"]\nbackups = [\"GW2\"]",
        Roles::BothMain => "gateways = [\"GW1\", \"GW2\"]",
    };
    format!(
        r#"
[agent]
lan_interfaces = ["l0"]
bpffs = "{dir}/bpffs"
control_socket = "{dir}/ctl.sock"

[[link]]
name = "WAN1"
interface = "w1"
kind = "ethernet"
address = "192.0.2.1/30"

[[link]]
name = "WAN2"
interface = "w2"
kind = "ethernet"
address = "192.0.2.5/30"

[[gateway]]
name = "GW1"
link = "WAN1"
address = "192.0.2.2"

[[gateway]]
name = "GW2"
link = "WAN2"
address = "192.0.2.6"

[[router]]
name = "R"
{gateways}
frequency = "200ms"
wait = "100ms"
tries = 3
on_failure = "default-route"

[[rule]]
name = "udp5001"
protocol = ["udp"]
dst_port = ["5001"]
action = "route"
router = "R"

[[rule]]
name = "no5003"
protocol = ["udp"]
dst_port = ["5003"]
action = "block"
"#,
        dir = dir.display()
    )
}

/// (state, availability) of gateway `gw` in router R.
pub fn gateway_state(s: &Status, gw: &str) -> Option<(String, String)> {
    let r = s.routers.iter().find(|r| r.name == "R")?;
    let g = r.gateways.iter().find(|g| g.name == gw)?;
    Some((g.state.clone(), g.availability.clone()))
}

/// The value of the series `name{labels}` in a scrape of the agent in `ns`.
pub fn metric(ns: &Netns, series: &str) -> Option<f64> {
    let body = ns.run(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464").ok()?;
        s.set_read_timeout(Some(wait())).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    })?;
    assert!(
        body.contains("application/openmetrics-text"),
        "{}",
        &body[..body.len().min(300)]
    );
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn udp_dport(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 14 + 28 && frame[12..14] == [8, 0] && frame[14 + 9] == 17)
        .then(|| u16::from_be_bytes([frame[14 + 22], frame[14 + 23]]))
}

pub fn udp_sport(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 14 + 28 && frame[12..14] == [8, 0] && frame[14 + 9] == 17)
        .then(|| u16::from_be_bytes([frame[14 + 20], frame[14 + 21]]))
}

/// `nft ARGS` (split on spaces) in namespace `ns`; panics if it fails.
pub fn nft(ns: &Netns, args: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft"])
        .args(args.split(' '))
        .status()
        .unwrap();
    assert!(st.success(), "nft {args}");
}

/// A silent blackhole in a WAN peer: it drops the echo requests it receives (table
/// `blackhole`).
pub fn blackhole(ns: &Netns) {
    nft(ns, "add table inet blackhole");
    nft(
        ns,
        "add chain inet blackhole in { type filter hook input priority 0 ; }",
    );
    nft(ns, "add rule inet blackhole in icmp type echo-request drop");
}

/// Removes [`blackhole`]'s table.
pub fn clear_blackhole(ns: &Netns) {
    nft(ns, "delete table inet blackhole");
}

use super::netns::Netns;

pub struct TwoWan {
    pub lan: Netns,
    pub rtr: Netns,
    pub wan1: Netns,
    pub wan2: Netns,
    // One data plane per peer namespace (interface indexes are per namespace), then the
    // bpffs holding their pins.
    _peers: [Datapath; 2],
    _fs: TestBpffs,
}

impl TwoWan {
    /// `net` is the LAN's first three octets, e.g. "10.80.0".
    pub fn new(net: &str) -> TwoWan {
        let (lan, rtr, wan1, wan2) = (
            Netns::new("lan"),
            Netns::new("rtr"),
            Netns::new("wan1"),
            Netns::new("wan2"),
        );
        for (dev, peer, ns) in [("l0", "h0", &lan), ("w1", "p1", &wan1), ("w2", "p2", &wan2)] {
            rtr.ip(&[
                "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", &ns.name,
            ]);
        }
        rtr.ip(&["addr", "add", &format!("{net}.1/24"), "dev", "l0"]);
        rtr.ip(&["addr", "add", "192.0.2.1/30", "dev", "w1"]);
        rtr.ip(&["addr", "add", "192.0.2.5/30", "dev", "w2"]);
        lan.ip(&["addr", "add", &format!("{net}.2/24"), "dev", "h0"]);
        wan1.ip(&["addr", "add", "192.0.2.2/30", "dev", "p1"]);
        wan2.ip(&["addr", "add", "192.0.2.6/30", "dev", "p2"]);
        for (ns, dev) in [
            (&rtr, "l0"),
            (&rtr, "w1"),
            (&rtr, "w2"),
            (&lan, "h0"),
            (&wan1, "p1"),
            (&wan2, "p2"),
        ] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        lan.ip(&["route", "add", "default", "via", &format!("{net}.1")]);

        let fs = TestBpffs::new().unwrap();
        let peer = |ns: &Netns, dev: &str| {
            let dir = fs.path().join(dev);
            std::fs::create_dir_all(&dir).unwrap();
            let mut dp = Datapath::load(&dir).unwrap();
            ns.run(|| dp.attach_pass(dev).unwrap());
            dp
        };
        let peers = [peer(&wan1, "p1"), peer(&wan2, "p2")];
        TwoWan {
            lan,
            rtr,
            wan1,
            wan2,
            _peers: peers,
            _fs: fs,
        }
    }
}

/// The agents' directory (config, logs, control socket, bpffs mount point): unmounted and
/// removed on drop. Declare it before the [`Agent`]s so they are killed first.
pub struct AgentDir(pub PathBuf);

impl AgentDir {
    pub fn new(tag: &str) -> AgentDir {
        let dir = std::env::temp_dir().join(format!("xwan-{tag}-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        AgentDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn socket(&self) -> PathBuf {
        self.0.join("ctl.sock")
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        // A failing test shows what the agents said (the directory goes with it).
        if std::thread::panicking() {
            let mut logs: Vec<_> = std::fs::read_dir(&self.0)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- last lines of {} ---", log.display());
                tail.iter().rev().for_each(|l| eprintln!("{l}"));
            }
        }
        let c = std::ffi::CString::new(self.0.join("bpffs").to_str().unwrap()).unwrap();
        // SAFETY: plain syscall on a valid path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `xwan run` process; killed on drop.
pub struct Agent(pub Child);

impl Agent {
    /// `xwan run --config CFG` in namespace `ns`. Not `ip netns exec`: that also gives the
    /// agent a mount namespace of its own, hiding its bpffs from the test and from a restarted
    /// agent.
    pub fn start(ns: &Netns, cfg: &Path, log: &Path) -> Agent {
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xwan"));
        cmd.args(["run", "--config"]).arg(cfg);
        // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
        unsafe {
            use std::os::unix::process::CommandExt;
            let fd = netns.as_raw_fd();
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Agent(child)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our child's pid.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }

    /// Waits (at most `timeout`) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Duration {
        let t = Instant::now();
        while self.0.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < timeout, "xwan did not exit");
            std::thread::sleep(Duration::from_millis(2));
        }
        t.elapsed()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One control request (`xwan status` and friends) from the test.
pub fn request(socket: &Path, request: Request) -> std::io::Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(call(&socket.to_path_buf(), &request))
}

pub fn status(socket: &Path) -> Option<Status> {
    match request(socket, Request::Status) {
        Ok(Answer::Status(s)) => Some(s),
        _ => None,
    }
}

/// Polls `f` until it holds, at most `timeout`; returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
