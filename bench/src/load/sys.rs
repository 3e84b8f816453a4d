//! The operating-system pieces of the load test that only it needs: removal of what a
//! killed earlier run left behind, CPU pinning, per-thread scheduler statistics, kernel
//! threads found by name, and the live-frames pacing of `BPF_PROG_TEST_RUN` (whose call is
//! the agent's, `xwan::datapath::xdp_live`). Network namespaces and TUN devices come from
//! `xwan-testkit`.

use std::{io, os::fd::BorrowedFd, process::Command};

use anyhow::{Result, bail};

/// Removes what an earlier run killed before its cleanup left behind: namespaces
/// `xload<PID>…` and directories `xwan-load-<PID>` (with the agent's bpffs mount) of processes
/// that no longer exist.
pub fn remove_stale() {
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix("xload") else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !pid.is_empty() && !alive(&pid) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
    let tmp = std::env::temp_dir();
    if let Ok(dir) = std::fs::read_dir(&tmp) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("xwan-load-") else {
                continue;
            };
            if pid.chars().all(|c| c.is_ascii_digit()) && !alive(pid) {
                let bpffs = e.path().join("agent/bpffs");
                if let Ok(c) = std::ffi::CString::new(bpffs.to_string_lossy().as_bytes()) {
                    // SAFETY: plain syscall on a valid path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::gettid() }
}

/// Pins thread (or process) `tid` to `cpu`.
pub fn pin(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning thread {tid} to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Sets the nice value of thread `tid` (Linux: per thread).
pub fn nice(tid: i32, value: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, value) };
}

/// Puts thread `tid` under `SCHED_FIFO` at `prio` (`--realtime`).
pub fn realtime(tid: i32, prio: i32) -> Result<()> {
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: plain syscall with a valid sched_param.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &p) } != 0 {
        bail!(
            "SCHED_FIFO for thread {tid}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `/proc/TID/schedstat`: ns spent on a CPU, ns spent waiting for one.
#[derive(Clone, Copy, Default, Debug)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
}

impl SchedStat {
    pub fn read(tid: i32) -> SchedStat {
        let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).unwrap_or_default();
        let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        SchedStat {
            run_ns: it.next().unwrap_or(0),
            wait_ns: it.next().unwrap_or(0),
        }
    }

    pub fn since(self, earlier: SchedStat) -> SchedStat {
        SchedStat {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
        }
    }
}

/// Kernel threads whose name starts with `prefix` (e.g. `napi/DEV-`: threaded NAPI).
pub fn kthreads(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            && comm.trim_end().starts_with(prefix)
        {
            out.push(pid);
        }
    }
    out.sort();
    out
}

extern "C" fn on_wakeup(_: libc::c_int) {}

/// A no-op handler for `SIGUSR1` without `SA_RESTART`: signalling a thread interrupts its
/// long `BPF_PROG_TEST_RUN` call (the kernel checks for pending signals between batches).
pub fn install_wakeup_signal() -> Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_wakeup as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            bail!("sigaction(SIGUSR1): {}", io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs XDP program `prog` `repeat` times in live-frames mode on `frame` arriving on
/// `ifindex` (see `xwan::datapath::xdp_live`), flushing every 64 runs: NAPI's budget, so a
/// flush never fills more than a quarter of the peer's 256-slot ring.
pub fn xdp_live(prog: BorrowedFd<'_>, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<()> {
    xwan::datapath::xdp_live(prog, frame, ifindex, repeat, 64)
}
