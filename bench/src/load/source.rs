//! The traffic source: which one sends, chosen once per run, and the generator thread that
//! drives it.
//!
//! * `live`: `load_gen` in one long `BPF_PROG_TEST_RUN` call with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`, `XDP_TX` out of the source veth. The cheaper source per
//!   frame, but some kernels refuse the flag (EPERM).
//! * `relay` ([`relay`](super::relay)): a PF_PACKET sender and `load_relay` on a feeder veth
//!   pair, redirecting into the source veth. Works without live frames, at a lower rate.
//!
//! `--source auto` (the default) probes live frames with one run of `load_gen` on the source
//! veth and falls back to the relay when the kernel refuses them.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{Ebpf, programs::Xdp};
use serde::Serialize;
use xwan_testkit::enter_by_name;

use super::{
    relay,
    sys::{SchedStat, gettid, nice, pin, realtime, xdp_live},
    topology::Topology,
    traffic::Mix,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Live,
    Relay,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Relay => "relay",
        }
    }

    /// The name `--compare-sources` reports it under.
    pub fn candidate(self) -> &'static str {
        match self {
            Source::Live => "xdp-live-frames",
            Source::Relay => "relay",
        }
    }

    pub fn parse(v: &str) -> Result<Option<Source>> {
        Ok(match v {
            "auto" => None,
            "live" => Some(Source::Live),
            "relay" => Some(Source::Relay),
            _ => bail!("--source wants auto, live or relay, not {v:?}"),
        })
    }
}

/// The source a run uses, and why.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub source: Source,
    /// Asked for (`--source`), or what the live-frames probe found.
    pub reason: String,
    /// Whether the kernel runs live frames here (the probe passed).
    pub live_works: bool,
}

/// Linux's internal ENOTSUPP, which `BPF_PROG_TEST_RUN` lets out to user space.
const ENOTSUPP: i32 = 524;

/// One live-frames run of `load_gen` on the source veth. `Ok(None)`: the kernel runs it;
/// `Ok(Some(why))`: it refuses live frames (EPERM, EINVAL, EOPNOTSUPP). Call it before the
/// templates are written: `load_gen` then aborts, and the probe sends nothing.
fn probe_live(tools: &Ebpf, topo: &Topology) -> Result<Option<String>> {
    let fd = program_fd(tools, "load_gen")?;
    let ifindex = topo.src_ifindex;
    let r = topo
        .src
        .run(|| Ok(xdp_live(fd.as_fd(), &[0u8; 64], ifindex, 1)))?;
    match r {
        Ok(()) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
            ) =>
        {
            Ok(Some(format!(
                "the kernel refuses XDP live frames, BPF_PROG_TEST_RUN: {e}"
            )))
        }
        Err(e) => Err(e).context("probing XDP live frames (BPF_PROG_TEST_RUN of load_gen)"),
    }
}

/// `--source`: `asked`, or (auto, `None`) live frames where the kernel runs them, else the
/// relay.
pub fn choose(asked: Option<Source>, tools: &Ebpf, topo: &Topology) -> Result<Chosen> {
    let refused = probe_live(tools, topo);
    let (source, reason, live_works) = match (asked, refused) {
        (Some(Source::Relay), r) => (
            Source::Relay,
            "asked for (--source relay)".to_string(),
            matches!(r, Ok(None)),
        ),
        (_, Err(e)) => return Err(e),
        (Some(Source::Live), Ok(Some(why))) => {
            bail!("--source live: {why}; use --source relay (or auto)")
        }
        (Some(Source::Live), Ok(None)) => {
            (Source::Live, "asked for (--source live)".to_string(), true)
        }
        (None, Ok(None)) => (
            Source::Live,
            "auto: the kernel runs XDP live frames".to_string(),
            true,
        ),
        (None, Ok(Some(why))) => (Source::Relay, format!("auto: {why}"), false),
    };
    Ok(Chosen {
        source,
        reason,
        live_works,
    })
}

fn program_fd(tools: &Ebpf, name: &str) -> Result<OwnedFd> {
    let prog: &Xdp = tools
        .program(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?;
    Ok(prog.fd()?.as_fd().try_clone_to_owned()?)
}

/// What the generator thread runs until its stop flag is set.
type Body = Box<dyn FnOnce(&AtomicBool) -> Result<()> + Send>;

/// The running source: a thread in the source namespace, pinned to one CPU below the sinks'
/// priority (nice 19, `SCHED_FIFO` 1 with `--realtime`), and for the relay the feeder's
/// receive thread beside it.
pub struct Generator {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
    /// The thread's id (for its schedstat).
    pub tid: i32,
    /// Kernel threads doing the rest of the source's work (the relay's feeder).
    helpers: Vec<i32>,
}

impl Generator {
    /// Starts `source` sending frames of `mix` (whose templates are in the maps).
    pub fn start(
        source: Source,
        tools: &Ebpf,
        topo: &Topology,
        mix: Mix,
        cpu: usize,
        rt: bool,
    ) -> Result<Generator> {
        let (body, helpers): (Body, Vec<i32>) = match source {
            Source::Live => {
                let fd = program_fd(tools, "load_gen")?;
                let ifindex = topo.src_ifindex;
                (Box::new(move |stop| live(fd, ifindex, stop)), vec![])
            }
            Source::Relay => {
                let feeder = topo
                    .feeder
                    .as_ref()
                    .context("the relay source needs the feeder veth, which was not set up")?;
                let helpers = feeder.threads();
                if helpers.is_empty() {
                    bail!("no NAPI thread for the relay's feeder: threaded NAPI is off");
                }
                for t in &helpers {
                    pin(*t, cpu)?;
                    nice(*t, 19);
                    if rt {
                        realtime(*t, 1)?;
                    }
                }
                // At least as long as the longest template: `load_relay` cannot grow what
                // the feeder received (from 74-byte frames, IMIX's longer ones were lost).
                let (ifindex, len) = (feeder.ifindex, mix.longest());
                (
                    Box::new(move |stop| relay::send(ifindex, len, stop)),
                    helpers,
                )
            }
        };
        // The thread outlives this borrow of `topo`, so it enters by name.
        let ns = topo.src.name().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || -> Result<()> {
            let setup = (|| {
                enter_by_name(&ns)?;
                let tid = gettid();
                pin(tid, cpu)?;
                nice(tid, 19);
                if rt {
                    realtime(tid, 1)?;
                }
                Ok::<_, anyhow::Error>(tid)
            })();
            let tid = match setup {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(0);
                    return Err(e);
                }
            };
            let _ = tx.send(tid);
            body(&stop2)
        });
        let tid = rx.recv_timeout(Duration::from_secs(5)).unwrap_or(0);
        let mut g = Generator {
            stop,
            handle: Some(handle),
            tid,
            helpers,
        };
        if tid == 0 {
            return Err(g
                .finish()
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("generator did not start")));
        }
        Ok(g)
    }

    /// The source's CPU time and wait so far: its thread and its helpers.
    pub fn stat(&self) -> SchedStat {
        self.helpers.iter().fold(SchedStat::read(self.tid), |a, t| {
            let s = SchedStat::read(*t);
            SchedStat {
                run_ns: a.run_ns + s.run_ns,
                wait_ns: a.wait_ns + s.wait_ns,
            }
        })
    }

    /// Whether the thread still runs (it ends on an error).
    pub fn running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the thread (signals it out of a blocking call) and returns its error, if any.
    pub fn finish(&mut self) -> Result<()> {
        use std::os::unix::thread::JoinHandleExt;
        let Some(h) = self.handle.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        while !h.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is valid.
            unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(2));
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the generator thread does not stop");
            }
        }
        h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The live-frames source: `load_gen` in one long test run on the source veth, again after
/// each signal.
fn live(prog: OwnedFd, ifindex: u32, stop: &AtomicBool) -> Result<()> {
    let frame = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match xdp_live(prog.as_fd(), &frame, ifindex, u32::MAX) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e).context("BPF_PROG_TEST_RUN (live frames) of load_gen"),
        }
    }
    Ok(())
}
