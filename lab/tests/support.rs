//! What the end-to-end tests share: one lab at a time (they measure timings on a shared
//! machine), bounded waits, and the agents' logs when something fails.

#![allow(dead_code)]

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use xwan_lab::{
    agent::locate_xwan,
    config::{Failback, Options, Timing},
    lab::{Lab, Place},
    topology::Tunnels,
};

static ONE_LAB: Mutex<()> = Mutex::new(());

/// A lab with the seed configuration and fast probes, and the guard that keeps other tests
/// of this binary from running meanwhile (drop the lab first: declare it after the guard).
pub fn lab(failback: Failback) -> (MutexGuard<'static, ()>, Lab) {
    lab_with(&Options {
        timing: Timing::FAST,
        failback,
        tunnels: Tunnels::StandIn,
    })
}

/// A lab with these options, and the guard (as [`lab`]).
pub fn lab_with(opts: &Options) -> (MutexGuard<'static, ()>, Lab) {
    let guard = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let xwan = locate_xwan().unwrap();
    let t = Instant::now();
    let lab = Lab::start(&xwan, &Place::unique(), opts).unwrap_or_else(|e| panic!("{e:#}"));
    println!("lab ready after {:?}", t.elapsed());
    (guard, lab)
}

/// Polls `f` until it holds, at most `timeout`; returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        if t.elapsed() > timeout {
            // Bounds hold on an idle 2-core machine; say how busy this one was.
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for {what} (load average: {load})");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Both agents' logs, for failure messages.
pub fn logs(lab: &Lab) -> String {
    format!(
        "---- branch agent log\n{}\n---- head office agent log\n{}",
        lab.branch.log(),
        lab.headoffice.log()
    )
}
