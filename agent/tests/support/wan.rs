//! The two-WAN topology the agent tests share, and the agent process they run in it:
//!
//! ```text
//! lan (h0 NET.2/24) ── rtr (l0 NET.1/24; w1 192.0.2.1/30, w2 192.0.2.5/30) ── wan1 (p1 .2)
//!                                                                          └─ wan2 (p2 .6)
//! ```
//! The WAN peers carry an XDP program so that veth delivers XDP-redirected frames to them.

#![allow(dead_code)]

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
