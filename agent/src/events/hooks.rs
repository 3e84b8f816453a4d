//! `[[hook]]` entries: per hook, a task that runs its command once per event it wants, in
//! the order emitted, one run at a time. The event is in the environment
//! ([`Event::env`]) and, as one JSON line, on stdin. A run that outlasts the hook's `timeout`
//! is killed with its process group. What it prints (at most [`OUTPUT_LOGGED`] bytes of each
//! stream) is logged line by line, and each run's outcome is counted in
//! `xwan_hook_events_total`.
//!
//! The daemon never waits for a hook: events queue (at most [`QUEUE`] per hook) and a hook
//! that falls further behind loses events, counted as `dropped` and logged once per episode.

use std::{
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    sync::mpsc::{self, error::TrySendError},
};
use tracing::{info, warn};

use super::Event;
use crate::{config::Hook, metrics::Metrics, router::Keyword};

/// Events waiting for one hook.
pub const QUEUE: usize = 256;
/// Bytes of a run's stdout, and of its stderr, that are logged; the rest is read and dropped.
pub const OUTPUT_LOGGED: usize = 4096;

/// What became of an event handed to a hook (the `result` label of `xwan_hook_events_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with status 0.
    Success,
    /// It exited with another status, or a signal ended it.
    Failure,
    /// It ran longer than the hook's `timeout` and was killed.
    Timeout,
    /// It could not be started (missing, not executable).
    Error,
    /// The hook's queue was full: the event was not run.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Timeout,
        Outcome::Error,
        Outcome::Dropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }
}

/// The running hooks of the configuration.
pub struct Hooks {
    metrics: Arc<Metrics>,
    runners: Vec<Runner>,
}

struct Runner {
    hook: Hook,
    /// Dropping it ends the hook's task once its queue is run.
    queue: mpsc::Sender<Arc<Event>>,
    /// Events dropped since the hook last kept up (logged when it starts and ends).
    dropping: u64,
}

impl Hooks {
    pub fn new(hooks: &[Hook], metrics: Arc<Metrics>) -> Hooks {
        let mut h = Hooks {
            metrics,
            runners: Vec::new(),
        };
        h.set(hooks);
        h
    }

    /// Runs `hooks` from now on: a hook unchanged keeps its task and queue; one removed or
    /// changed finishes what it has queued.
    pub fn set(&mut self, hooks: &[Hook]) {
        let mut old = std::mem::take(&mut self.runners);
        for hook in hooks {
            if let Some(i) = old.iter().position(|r| r.hook == *hook) {
                self.runners.push(old.swap_remove(i));
                continue;
            }
            if let Some(problem) = unrunnable(&hook.command) {
                warn!(hook = %hook.name, command = %hook.command.display(), "{problem}: its runs will fail until it is");
            }
            let (queue, events) = mpsc::channel(QUEUE);
            tokio::spawn(serve(hook.clone(), events, self.metrics.clone()));
            self.runners.push(Runner {
                hook: hook.clone(),
                queue,
                dropping: 0,
            });
        }
    }

    /// Queues `event` for every hook that wants its kind; never waits.
    pub fn hand(&mut self, event: &Arc<Event>) {
        let kind = event.what.kind();
        for r in self
            .runners
            .iter_mut()
            .filter(|r| r.hook.on.contains(&kind))
        {
            match r.queue.try_send(event.clone()) {
                Ok(()) if r.dropping > 0 => {
                    info!(hook = %r.hook.name, dropped = r.dropping, "hook caught up; events were dropped meanwhile");
                    r.dropping = 0;
                }
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    if r.dropping == 0 {
                        warn!(
                            hook = %r.hook.name,
                            queued = QUEUE,
                            "hook too slow: its queue is full, events are dropped until it catches up"
                        );
                    }
                    r.dropping += 1;
                    self.metrics.record_hook(&r.hook.name, Outcome::Dropped);
                }
                // Its task ended: only a panic does that, and it was logged.
                Err(TrySendError::Closed(_)) => {
                    self.metrics.record_hook(&r.hook.name, Outcome::Dropped)
                }
            }
        }
    }
}

/// Why `command` cannot be run, if it cannot.
fn unrunnable(command: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(command) {
        Err(e) => Some(format!("cannot read the command: {e}")),
        Ok(m) if !m.is_file() => Some("the command is not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some("the command is not executable (chmod +x)".into())
        }
        Ok(_) => None,
    }
}

/// A hook's task: its events one after the other.
async fn serve(hook: Hook, mut events: mpsc::Receiver<Arc<Event>>, metrics: Arc<Metrics>) {
    while let Some(event) = events.recv().await {
        let outcome = run(&hook, &event).await;
        metrics.record_hook(&hook.name, outcome);
    }
}

/// Runs `hook` for `event` and logs what it did.
pub async fn run(hook: &Hook, event: &Event) -> Outcome {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&hook.command);
    cmd.args(&hook.args)
        .envs(event.env())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let kind = event.what.kind().keyword();
    let (name, seq) = (hook.name.as_str(), event.seq);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(hook = name, seq, event = kind, command = %hook.command.display(), "hook could not be started: {e}");
            return Outcome::Error;
        }
    };
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let ran = tokio::time::timeout(hook.timeout, async {
        let write = async move {
            // A command that does not read its stdin closes it: not an error.
            if let Some(mut s) = stdin {
                let _ = s.write_all(&line).await;
            }
        };
        let (_, out, err) = tokio::join!(write, read_capped(stdout), read_capped(stderr));
        (out, err, child.wait().await)
    })
    .await;
    let took_ms = started.elapsed().as_millis() as u64;
    let (out, err, status) = match ran {
        Ok(r) => r,
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: signals the process group the child leads; no memory is involved.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            warn!(
                hook = name,
                seq,
                event = kind,
                timeout_ms = hook.timeout.as_millis() as u64,
                "hook ran past its timeout and was killed"
            );
            return Outcome::Timeout;
        }
    };
    log_output(name, seq, "stdout", &out);
    log_output(name, seq, "stderr", &err);
    match status {
        Ok(s) if s.success() => {
            info!(hook = name, seq, event = kind, took_ms, "hook ran");
            Outcome::Success
        }
        Ok(s) => {
            warn!(hook = name, seq, event = kind, took_ms, status = %s, "hook failed");
            Outcome::Failure
        }
        Err(e) => {
            warn!(
                hook = name,
                seq,
                event = kind,
                "waiting for the hook failed: {e}"
            );
            Outcome::Error
        }
    }
}

/// What a stream printed: at most [`OUTPUT_LOGGED`] bytes, and whether there was more (read
/// to its end all the same, so that the command never blocks on a full pipe).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>) -> (Vec<u8>, bool) {
    let (mut kept, mut more) = (Vec::new(), false);
    let Some(mut s) = stream else {
        return (kept, more);
    };
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, more),
            Ok(n) => {
                let room = OUTPUT_LOGGED - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
}

fn log_output(hook: &str, seq: u64, stream: &str, (bytes, more): &(Vec<u8>, bool)) {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        info!(hook, seq, stream, "{line}");
    }
    if *more {
        info!(
            hook,
            seq, stream, "(output beyond {OUTPUT_LOGGED} bytes not logged)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::SystemTime};

    use super::*;
    use crate::{
        events::{Kind, ReloadResult, What},
        metrics::Metrics,
    };

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("xwan-hook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn script(dir: &Dir, name: &str, body: &str) -> PathBuf {
        let p = dir.0.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn hook(name: &str, command: PathBuf, timeout: Duration) -> Hook {
        Hook {
            name: name.into(),
            command,
            args: vec!["first arg".into()],
            on: vec![Kind::Gateway, Kind::Router, Kind::Reload, Kind::Ipsec],
            timeout,
        }
    }

    fn reload(seq: u64) -> Event {
        Event {
            seq,
            time: SystemTime::UNIX_EPOCH,
            what: What::Reload {
                result: ReloadResult::Applied,
                epoch: Some(seq as u32),
                error: None,
            },
        }
    }

    /// The hook gets its arguments, the event in its environment and as JSON on stdin.
    #[tokio::test]
    async fn a_hook_gets_the_event_in_its_environment_and_on_stdin() {
        let d = dir("env");
        let out = d.0.join("out");
        let cmd = script(
            &d,
            "h",
            &format!(
                "echo \"$1|$XWAN_EVENT|$XWAN_RESULT|$XWAN_EPOCH|$XWAN_SEQ\" > {o}; cat >> {o}",
                o = out.display()
            ),
        );
        let h = hook("h", cmd, Duration::from_secs(5));
        assert_eq!(run(&h, &reload(9)).await, Outcome::Success);
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("first arg|reload|applied|9|9"));
        let json: Event = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(json, reload(9));
    }

    #[tokio::test]
    async fn failures_timeouts_and_missing_commands_are_told_apart() {
        let d = dir("outcomes");
        let failing = hook(
            "f",
            script(&d, "f", "echo oops >&2; exit 3"),
            Duration::from_secs(5),
        );
        assert_eq!(run(&failing, &reload(1)).await, Outcome::Failure);

        // The command and what it started are killed at the timeout.
        let pidfile = d.0.join("pid");
        let slow = script(
            &d,
            "s",
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
        );
        let started = Instant::now();
        let slow = hook("s", slow, Duration::from_millis(300));
        assert_eq!(run(&slow, &reload(2)).await, Outcome::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Reaped by its parent's death (init adopts it): give it a moment.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: signal 0 only checks that the process exists.
            let signalled = unsafe { libc::kill(pid, 0) };
            signalled != 0
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "the hook's child {pid} survived its timeout");

        let missing = hook("m", d.0.join("absent"), Duration::from_secs(1));
        assert_eq!(run(&missing, &reload(3)).await, Outcome::Error);

        // Much output is read to its end, not left blocking the command.
        let chatty = script(&d, "c", "yes hello | head -c 1000000");
        let chatty = hook("c", chatty, Duration::from_secs(5));
        assert_eq!(run(&chatty, &reload(4)).await, Outcome::Success);
    }

    /// Events run in the order emitted, one at a time; a hook that cannot keep up loses the
    /// excess (counted), never blocking the caller.
    #[tokio::test]
    async fn events_run_in_order_and_a_slow_hook_drops_the_excess() {
        let d = dir("order");
        let out = d.0.join("out");
        let cmd = script(&d, "o", &format!("echo $XWAN_SEQ >> {}", out.display()));
        let metrics = Arc::new(Metrics::new());
        let mut hooks = Hooks::new(&[hook("o", cmd, Duration::from_secs(5))], metrics.clone());
        for seq in 1..=20 {
            hooks.hand(&Arc::new(reload(seq)));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 20 {
            assert!(Instant::now() < deadline, "20 runs not done in 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seqs: Vec<u64> = (std::fs::read_to_string(&out).unwrap().lines())
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());

        let slow = script(&d, "slow", "sleep 5");
        let mut hooks = Hooks::new(
            &[hook("slow", slow, Duration::from_secs(10))],
            metrics.clone(),
        );
        let handed = Instant::now();
        for seq in 0..(QUEUE as u64 + 11) {
            hooks.hand(&Arc::new(reload(seq)));
        }
        assert!(
            handed.elapsed() < Duration::from_secs(1),
            "handing events waited"
        );
        let text = metrics.encode();
        // This test's runtime has one thread: the hook's task takes nothing before the test
        // awaits, so QUEUE events wait and 11 are dropped.
        assert!(
            text.contains(r#"xwan_hook_events_total{hook="slow",result="dropped"} 11"#),
            "{}",
            text.lines()
                .filter(|l| l.contains("hook"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[tokio::test]
    async fn only_the_kinds_a_hook_is_on_reach_it() {
        let d = dir("kinds");
        let out = d.0.join("out");
        let cmd = script(&d, "k", &format!("echo $XWAN_EVENT >> {}", out.display()));
        let mut h = hook("k", cmd, Duration::from_secs(5));
        h.on = vec![Kind::Ipsec];
        let mut hooks = Hooks::new(&[h], Arc::new(Metrics::new()));
        hooks.hand(&Arc::new(reload(1)));
        hooks.hand(&Arc::new(Event {
            seq: 2,
            time: SystemTime::UNIX_EPOCH,
            what: What::Ipsec {
                link: "WAN1".into(),
                state: crate::events::SaState::Lost,
                missing: Some("both".into()),
            },
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.exists() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ipsec\n");
    }
}
