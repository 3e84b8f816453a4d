//! The two `xwan run` processes of the lab, one per site, each in its site's network
//! namespace with a directory of its own: configuration, log, control socket and bpffs
//! mount point (so the agents' pins never meet those of an agent on the host).
//!
//! Agents are spawned with `setns` in `pre_exec`, not `ip netns exec`: that would also give
//! them a private mount namespace, hiding their bpffs from the lab and from a restarted agent.
//!
//! What a reader may change: how the binary is found ([`locate_xwan`]).

use std::{
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xwan::{
    control::{Answer, Request, call},
    status::Status,
};

use crate::netns::Netns;

/// The `xwan` binary: `$XWAN_BIN`, else `xwan` next to the running executable or one
/// directory up (`target/release/xwan-lab` and `target/release/deps/<test>` both find
/// `target/release/xwan`).
pub fn locate_xwan() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("XWAN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("xwan");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "the xwan binary was not found next to {} or in its parent directory: build it with \
         `cargo build --release -p xwan` (`cargo xtask lab` and `cargo test --workspace` do), \
         or point XWAN_BIN at it",
        exe.display()
    )
}

/// An agent's lab directory. Dropping it unmounts the agent's bpffs (releasing whatever is
/// still pinned there) and removes the directory.
pub struct AgentDir(PathBuf);

impl AgentDir {
    pub fn create(path: PathBuf) -> Result<AgentDir> {
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(AgentDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn socket(&self) -> PathBuf {
        self.0.join("ctl.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.0.join("xwan.toml")
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        unmount_bpffs(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lazily unmounts `<dir>/bpffs` if something is mounted there.
pub fn unmount_bpffs(dir: &Path) {
    let Ok(c) = std::ffi::CString::new(dir.join("bpffs").as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: plain syscall on a valid path; fails harmlessly when nothing is mounted.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// An `xwan run` process; killed on drop (use [`Agent::stop`] first to also remove what it
/// attached and pinned).
pub struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts `xwan run --config <dir>/xwan.toml` in `ns`, logging to `<dir>/<log_name>`.
    pub fn start(xwan: &Path, ns: &Netns, dir: &AgentDir, log_name: &str) -> Result<Agent> {
        let netns = ns.file()?;
        let log = dir.path().join(log_name);
        let mut cmd = Command::new(xwan);
        cmd.args(["run", "--config"]).arg(dir.config());
        let fd = netns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `netns` stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {} in namespace {}", xwan.display(), ns.name()))?;
        drop(netns);
        Ok(Agent {
            child,
            socket: dir.socket(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One control request.
    pub fn request(&self, request: Request) -> Result<Answer> {
        request_at(&self.socket, request)
    }

    pub fn status(&self) -> Option<Status> {
        match self.request(Request::Status) {
            Ok(Answer::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// Fails if the process has exited (with its log).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("xwan exited ({st}); its log:\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit: the data plane stays attached
    /// and pinned for the next agent.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        // SAFETY: plain syscall on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(timeout)?;
        Ok(t.elapsed())
    }

    /// `xwan stop`: the agent detaches and unpins everything, then exits.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        match self.request(Request::Stop)? {
            Answer::Stopped => self.wait_exit(timeout),
            other => bail!("xwan stop answered {other:?}"),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t.elapsed() > timeout {
                bail!("xwan (pid {}) did not exit within {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long an agent gets to answer a control request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One control request to the agent whose socket is `socket`.
pub fn request_at(socket: &Path, request: Request) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(async {
        tokio::time::timeout(REQUEST_TIMEOUT, call(&socket.to_path_buf(), &request)).await
    });
    match answer {
        Ok(a) => Ok(a?),
        Err(_) => bail!(
            "the agent at {} did not answer within {REQUEST_TIMEOUT:?}",
            socket.display()
        ),
    }
}

/// The value of series `series` (name and labels, exactly as exposed) in a scrape of the
/// agent running in `ns` (default metrics address).
pub fn metric(ns: &Netns, series: &str) -> Result<Option<f64>> {
    let body = ns.run(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: lab\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()))
}
