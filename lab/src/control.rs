//! Driving the lab that `cargo xtask lab` runs, from a second terminal, and removing it.
//!
//! The running lab keeps its state under [`STATE_DIR`] (`lab.pid`, the agents' directories)
//! and answers one-line commands on a Unix socket there (`lab.sock`, root only): `cut LINK
//! silent|carrier`, `restore LINK`, `delay LINK MS`, `loss LINK PERCENT`. [`down`] removes a
//! lab whether its process still runs (it is asked to stop and cleans up itself) or was
//! killed: agents are told to `xwan stop` (which unpins everything) or killed, their bpffs
//! unmounted, namespaces with the lab's prefix deleted, the state directory removed.
//!
//! What a reader may change: the command words (keep `xwan-lab --help` in step).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixListener, net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xwan::control::Request;

use crate::{agent, netns};

pub const STATE_DIR: &str = "/run/xwan-lab";
/// Prefix of the lab's namespace names.
pub const PREFIX: &str = "xwanlab-";
/// The agents' directories under [`STATE_DIR`].
pub const AGENTS: [&str; 2] = ["branch", "headoffice"];

pub fn socket_path() -> PathBuf {
    Path::new(STATE_DIR).join("lab.sock")
}

fn pid_path() -> PathBuf {
    Path::new(STATE_DIR).join("lab.pid")
}

/// A command received by the running lab, with where its answer goes.
pub struct Command {
    pub line: String,
    pub reply: mpsc::Sender<String>,
}

/// The running lab's side: accepts connections on the socket and hands each command line to
/// the lab's main loop through a channel. Stops and removes the socket on drop.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds the socket and writes `lab.pid`.
    pub fn start(commands: mpsc::Sender<Command>) -> Result<Listener> {
        let path = socket_path();
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        l.set_nonblocking(true)?;
        std::fs::write(pid_path(), std::process::id().to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = serve(s, &commands);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(s: UnixStream, commands: &mpsc::Sender<Command>) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let (tx, rx) = mpsc::channel();
    commands.send(Command {
        line: line.trim().to_owned(),
        reply: tx,
    })?;
    let answer = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "error: the lab did not answer".into());
    (&s).write_all(answer.as_bytes())?;
    Ok(())
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(socket_path());
        let _ = std::fs::remove_file(pid_path());
    }
}

/// Sends one command to the running lab and returns its answer (an answer starting with
/// `error:` is returned as an error).
pub fn send(line: &str) -> Result<String> {
    let path = socket_path();
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "no lab is running ({} does not answer): start one with `cargo xtask lab`",
            path.display()
        )
    })?;
    s.write_all(format!("{line}\n").as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer)?;
    match answer.strip_prefix("error: ") {
        Some(e) => bail!("{e}"),
        None => Ok(answer),
    }
}

/// The pid of the running lab process, if it is alive.
pub fn running_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

/// Whether `pid` is (still) an `xwan` process: a recorded pid may have been reused.
fn is_xwan(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "xwan")
}

/// Removes the lab: see the module documentation. Prints what it does.
pub fn down() -> Result<()> {
    if let Some(pid) = running_pid() {
        println!("asking the running lab (pid {pid}) to stop and clean up");
        // SAFETY: plain syscall; the lab handles SIGTERM like Ctrl-C.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while running_pid().is_some() && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid().is_some() {
            println!("the lab did not stop within 15 s: killing it");
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // What a killed lab left behind.
    for name in AGENTS {
        let dir = Path::new(STATE_DIR).join(name);
        let socket = dir.join("ctl.sock");
        if socket.exists() {
            match agent::request_at(&socket, Request::Stop) {
                Ok(_) => println!("{name} agent: asked to stop (xwan stop)"),
                Err(e) => println!("{name} agent: {e:#}"),
            }
        }
        if let Some(pid) = std::fs::read_to_string(dir.join("agent.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let t = Instant::now();
            while is_xwan(pid) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: plain syscall on the agent the lab recorded (checked to still be xwan).
            if is_xwan(pid) && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                println!("{name} agent: killed (pid {pid})");
            }
        }
        agent::unmount_bpffs(&dir);
    }
    for ns in netns::list(PREFIX) {
        netns::delete(&ns)?;
        println!("deleted network namespace {ns}");
    }
    if Path::new(STATE_DIR).exists() {
        std::fs::remove_dir_all(STATE_DIR).with_context(|| format!("removing {STATE_DIR}"))?;
        println!("removed {STATE_DIR}");
    }
    println!("nothing of the lab is left");
    Ok(())
}
