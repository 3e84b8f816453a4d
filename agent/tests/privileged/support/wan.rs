//! The two-WAN topology the agent tests share, the builder of the configurations every agent
//! test runs ([`AgentConfig`]), and the agent process:
//!
//! ```text
//! lan (h0 NET.2/24) ── rtr (l0 NET.1/24; w1 192.0.2.1/30, w2 192.0.2.5/30) ── wan1 (p1 .2)
//!                                                                          └─ wan2 (p2 .6)
//! ```
//! The WAN peers carry an XDP program so that veth delivers XDP-redirected frames to them.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xwan::{
    control::{Answer, Request, call},
    datapath::{Datapath, LINKS_DIR, TestBpffs},
    status::Status,
};

use super::netns::{Netns, packet_socket};

/// Bound of every wait: 5 s, or `XWAN_TEST_WAIT_SECS` (the Linux 6.1 VM suite's emulated CPU
/// needs longer).
pub fn wait() -> Duration {
    let secs = std::env::var("XWAN_TEST_WAIT_SECS").ok();
    Duration::from_secs(secs.and_then(|s| s.parse().ok()).unwrap_or(5))
}

/// How router R of [`AgentConfig::two_wan`] uses its two gateways.
#[derive(Clone, Copy)]
pub enum Roles {
    /// GW1 main, GW2 backup.
    MainAndBackup,
    /// Both main: new flows are balanced over them.
    BothMain,
}

/// An agent's configuration, as the tests vary it: its LAN interfaces, links (each with one
/// gateway), rules and one router, `R`, probing every 200 ms (wait 100 ms, 3 tries). [`AgentConfig::toml`]
/// writes the TOML for an [`AgentDir`] (the bpffs and control socket are there).
pub struct AgentConfig {
    /// `lan_interfaces`.
    pub lan: Vec<&'static str>,
    /// Further `key = value` lines of `[agent]` (`forwarding = "netfilter"`).
    pub agent: Vec<String>,
    pub links: Vec<Link>,
    /// R's `gateways` and `backups`.
    pub main: Vec<&'static str>,
    pub backups: Vec<&'static str>,
    /// R's `on_failure`.
    pub on_failure: &'static str,
    /// Further `key = value` lines of R (an `sla`, say).
    pub router: Vec<String>,
    pub rules: Vec<Rule>,
    /// Further TOML at the end of the file (another router).
    pub more: Vec<String>,
}

/// A link, and the one gateway behind it.
pub struct Link {
    pub name: &'static str,
    pub interface: &'static str,
    pub kind: &'static str,
    pub address: &'static str,
    /// Further `key = value` lines (an IPsec link's key, owner, endpoints, manual SA).
    pub more: Vec<String>,
    /// The gateway's name and address, and its `check` target (none: the address is probed).
    pub gateway: &'static str,
    pub gateway_address: &'static str,
    pub check: Option<&'static str>,
    /// Further `key = value` lines of the gateway (several targets, a `quorum`).
    pub gateway_more: Vec<String>,
}

pub struct Rule {
    pub name: &'static str,
    /// Matches UDP to this port; `None`: every packet.
    pub udp_port: Option<u16>,
    /// Drops what it matches, instead of routing it through R.
    pub block: bool,
}

impl AgentConfig {
    /// [`TwoWan`]'s: router R on GW1 (WAN1, w1) and GW2 (WAN2, w2) in `roles`, `on_failure =
    /// "default-route"`; UDP/5001 goes through R, UDP/5003 is blocked.
    pub fn two_wan(roles: Roles) -> AgentConfig {
        let link = |name, interface, address, gateway, gateway_address| Link {
            name,
            interface,
            kind: "ethernet",
            address,
            more: vec![],
            gateway,
            gateway_address,
            check: None,
            gateway_more: vec![],
        };
        let (main, backups) = match roles {
            Roles::MainAndBackup => (vec!["GW1"], vec!["GW2"]),
            Roles::BothMain => (vec!["GW1", "GW2"], vec![]),
        };
        AgentConfig {
            lan: vec!["l0"],
            agent: vec![],
            links: vec![
                link("WAN1", "w1", "192.0.2.1/30", "GW1", "192.0.2.2"),
                link("WAN2", "w2", "192.0.2.5/30", "GW2", "192.0.2.6"),
            ],
            main,
            backups,
            on_failure: "default-route",
            router: vec![],
            more: vec![],
            rules: vec![
                Rule {
                    name: "udp5001",
                    udp_port: Some(5001),
                    block: false,
                },
                Rule {
                    name: "no5003",
                    udp_port: Some(5003),
                    block: true,
                },
            ],
        }
    }

    /// The configuration file for an agent whose bpffs and control socket are in `dir`.
    pub fn toml(&self, dir: &Path) -> String {
        let list = |names: &[&str]| {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let dir = dir.display();
        let mut t = format!(
            "[agent]\nlan_interfaces = {}\nbpffs = \"{dir}/bpffs\"\ncontrol_socket = \"{dir}/ctl.sock\"\n",
            list(&self.lan)
        );
        self.agent.iter().for_each(|line| t += &format!("{line}\n"));
        for l in &self.links {
            t += &format!(
                "\n[[link]]\nname = {:?}\ninterface = {:?}\nkind = {:?}\naddress = {:?}\n",
                l.name, l.interface, l.kind, l.address
            );
            l.more.iter().for_each(|line| t += &format!("{line}\n"));
        }
        for l in &self.links {
            t += &format!(
                "\n[[gateway]]\nname = {:?}\nlink = {:?}\naddress = {:?}\n",
                l.gateway, l.name, l.gateway_address
            );
            if let Some(target) = l.check {
                t += &format!("check = [{target:?}]\n");
            }
            l.gateway_more
                .iter()
                .for_each(|line| t += &format!("{line}\n"));
        }
        t += &format!(
            "\n[[router]]\nname = \"R\"\ngateways = {}\n",
            list(&self.main)
        );
        if !self.backups.is_empty() {
            t += &format!("backups = {}\n", list(&self.backups));
        }
        t += &format!(
            "frequency = \"200ms\"\nwait = \"100ms\"\ntries = 3\non_failure = {:?}\n",
            self.on_failure
        );
        self.router
            .iter()
            .for_each(|line| t += &format!("{line}\n"));
        for r in &self.rules {
            t += &format!("\n[[rule]]\nname = {:?}\n", r.name);
            if let Some(port) = r.udp_port {
                t += &format!("protocol = [\"udp\"]\ndst_port = [\"{port}\"]\n");
            }
            t += if r.block {
                "action = \"block\"\n"
            } else {
                "action = \"route\"\nrouter = \"R\"\n"
            };
        }
        self.more.iter().for_each(|line| t += &format!("{line}\n"));
        t
    }
}

/// (state, availability) of gateway `gw` in router R, as the table shows them ("Active",
/// "Ready").
pub fn gateway_state(s: &Status, gw: &str) -> Option<(String, String)> {
    let r = s.routers.iter().find(|r| r.name == "R")?;
    let g = r.gateways.iter().find(|g| g.name == gw)?;
    Some((g.state.to_string(), g.availability.to_string()))
}

/// Whether gateway `gw` of router R is Active and Ready.
pub fn active(s: &Status, gw: &str) -> bool {
    gateway_state(s, gw)
        .is_some_and(|(state, availability)| state == "Active" && availability == "Ready")
}

/// A scrape of `/metrics` of the agent in `ns` (`None`: no answer).
pub fn scrape(ns: &Netns) -> Option<String> {
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
    Some(body)
}

/// The value of the series `name{labels}` in a scrape of the agent in `ns`.
pub fn metric(ns: &Netns, series: &str) -> Option<f64> {
    scrape(ns)?
        .lines()
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

/// A silent blackhole in a WAN peer: it drops the echo requests it receives (table
/// `blackhole`).
pub fn blackhole(ns: &Netns) {
    ns.exec(
        "nft",
        &["add table inet blackhole; \
             add chain inet blackhole in { type filter hook input priority 0 ; }; \
             add rule inet blackhole in icmp type echo-request drop"],
    );
}

/// Removes [`blackhole`]'s table.
pub fn clear_blackhole(ns: &Netns) {
    ns.exec("nft", &["delete", "table", "inet", "blackhole"]);
}

/// Where the tests send their UDP: an address behind the WANs.
pub const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

pub struct TwoWan {
    pub lan: Netns,
    pub rtr: Netns,
    pub wan1: Netns,
    pub wan2: Netns,
    /// The LAN host's address, NET.2.
    pub host: Ipv4Addr,
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
            host: format!("{net}.2").parse().unwrap(),
            _peers: peers,
            _fs: fs,
        }
    }

    /// Packet sockets on the WAN peers' interfaces (p1, p2): what leaves through GW1 and GW2.
    pub fn sniff(&self) -> [OwnedFd; 2] {
        [
            self.wan1.run(|| packet_socket("p1")),
            self.wan2.run(|| packet_socket("p2")),
        ]
    }

    /// One UDP datagram from the LAN host, port `sport`, to [`FAR`] port `dport`.
    pub fn send(&self, sport: u16, dport: u16) {
        let from = SocketAddrV4::new(self.host, sport);
        self.lan.run(|| {
            let s = UdpSocket::bind(from).unwrap();
            s.send_to(b"xwan", SocketAddrV4::new(FAR, dport)).unwrap();
        });
    }

    /// What `xwan explain` (the agent at `socket`) says of [`TwoWan::send`]'s datagram.
    pub fn explain(&self, socket: &Path, sport: u16, dport: u16) -> String {
        let q = xwan::explain::Query {
            src: self.host.into(),
            dst: FAR.into(),
            proto: 17,
            sport: Some(sport),
            dport: Some(dport),
            dscp: 0,
            iface: None,
        };
        match request(socket, Request::Explain(q)) {
            Ok(Answer::Explained { text }) => text,
            other => panic!("explain: {other:?}"),
        }
    }

    /// `xwan run` in the router with [`AgentConfig::two_wan`] in `roles`, its files in a new
    /// [`AgentDir`] named `tag` (its log `agent.log`), once R's main gateways are Active and
    /// Ready (waiting at most `within`): the directory, the agent, and how long after its start
    /// that took.
    pub fn start_agent(
        &self,
        tag: &str,
        roles: Roles,
        within: Duration,
    ) -> (AgentDir, Agent, Duration) {
        self.start_agent_with(tag, &AgentConfig::two_wan(roles), within)
    }

    /// [`TwoWan::start_agent`] with `config`: once R's mains are Active and Ready.
    pub fn start_agent_with(
        &self,
        tag: &str,
        config: &AgentConfig,
        within: Duration,
    ) -> (AgentDir, Agent, Duration) {
        let dir = AgentDir::new(tag);
        dir.write(config);
        let agent = Agent::start(&self.rtr, &dir, "agent.log");
        let main = &config.main;
        let socket = dir.socket();
        let took = wait_until(&format!("{} active", main.join(" and ")), within, || {
            status(&socket).is_some_and(|s| main.iter().all(|gw| active(&s, gw)))
        });
        (dir, agent, took)
    }
}

/// The agents' directory (config, logs, control socket, bpffs mount point): unmounted and
/// removed on drop. Declare it before the [`Agent`]s so they are killed first.
pub struct AgentDir(PathBuf);

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

    /// The configuration file [`Agent::start`] runs.
    pub fn config(&self) -> PathBuf {
        self.0.join("xwan.toml")
    }

    /// Writes `config` as [`AgentDir::config`].
    pub fn write(&self, config: &AgentConfig) {
        std::fs::write(self.config(), config.toml(&self.0)).unwrap();
    }

    /// What the agent logged to `log` so far.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.0.join(log)).unwrap_or_default()
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

/// The `xwan` binary the tests run: `$XWAN_BIN` (the Linux 6.1 VM sets it to the installed
/// package's `/usr/sbin/xwan`), else this build's.
pub fn xwan_bin() -> PathBuf {
    std::env::var_os("XWAN_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xwan")), PathBuf::from)
}

/// An `xwan run` process; killed on drop.
pub struct Agent(pub Child);

impl Agent {
    /// `xwan run` with `dir`'s configuration, in namespace `ns`, logging to `log` in `dir`.
    /// Not `ip netns exec`: that also gives the agent a mount namespace of its own, hiding its
    /// bpffs from the test and from a restarted agent.
    pub fn start(ns: &Netns, dir: &AgentDir, log: &str) -> Agent {
        Agent::start_wrapped(ns, dir, log, &[], &[])
    }

    /// [`Agent::start`] through `wrapper` (a command that runs its arguments: `setpriv …`),
    /// with `env` added to its environment.
    pub fn start_wrapped(
        ns: &Netns,
        dir: &AgentDir,
        log: &str,
        wrapper: &[String],
        env: &[(&str, &Path)],
    ) -> Agent {
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(xwan_bin());
                c
            }
            None => Command::new(xwan_bin()),
        };
        cmd.envs(env.iter().copied());
        cmd.args(["run", "--config"]).arg(dir.config());
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
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .spawn()
            .unwrap();
        Agent(child)
    }

    /// `xwan stop` through `dir`'s control socket: answered, and the agent gone within
    /// `within`.
    pub fn stop(&mut self, dir: &AgentDir, within: Duration) {
        let answer = request(&dir.socket(), Request::Stop).unwrap();
        assert_eq!(answer, Answer::Stopped);
        self.wait_exit(within);
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

/// What a stopped agent leaves behind, its files in `dir` and its LAN interface l0 in `ns`:
/// nothing. No pin, no links directory; no XDP program, TC filter or xwan program on l0.
pub fn assert_nothing_left(ns: &Netns, dir: &AgentDir) {
    let bpffs = dir.path().join("bpffs");
    // `maps.debug` and `progs.debug` are bpffs's own iterators, present on every mount.
    let pins: Vec<_> = std::fs::read_dir(&bpffs)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".debug"))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pins left behind: {pins:?}");
    assert!(
        !bpffs.join(LINKS_DIR).exists(),
        "links directory left behind"
    );
    let link = ns.try_ip(&["link", "show", "l0"]).unwrap_or_default();
    assert!(
        !link.contains("xdp"),
        "XDP still attached after stop: {link}"
    );
    let tc = ns.try_exec("tc", &["filter", "show", "dev", "l0", "ingress"]);
    let tc = tc.unwrap_or_default();
    assert!(tc.trim().is_empty(), "TC filter left behind: {tc}");
    let net = ns.try_exec("bpftool", &["net", "show", "dev", "l0"]);
    let net = net.unwrap_or_default();
    assert!(!net.contains("xwan"), "program left on l0: {net}");
    for family in ["-4", "-6"] {
        let rules = ns.try_ip(&[family, "rule"]).unwrap_or_default();
        assert!(
            !rules.contains("fwmark"),
            "policy rule left behind: {rules}"
        );
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

/// `xwan events` for the agent at `socket`, printing to `out`; once it says it listens.
/// Killed on drop.
pub struct Events(Child);

impl Events {
    pub fn listen(socket: &Path, out: &Path, count: Option<u64>) -> Events {
        use std::io::BufRead;
        let mut cmd = Command::new(xwan_bin());
        cmd.arg("events").arg("--socket").arg(socket);
        if let Some(n) = count {
            cmd.args(["--count", &n.to_string()]);
        }
        let mut child = cmd
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut said)
            .unwrap();
        assert!(
            said.starts_with("xwan: listening to the agent at "),
            "{said}"
        );
        Events(child)
    }

    /// Whether it exited (with `count`: after that many events), successfully.
    pub fn exited(&mut self) -> Option<bool> {
        self.0.try_wait().unwrap().map(|s| s.success())
    }

    /// The events printed so far in `out`, as JSON.
    pub fn read(out: &Path) -> Vec<serde_json::Value> {
        (std::fs::read_to_string(out).unwrap_or_default().lines())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
