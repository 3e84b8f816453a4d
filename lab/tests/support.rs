//! What the end-to-end tests share: one lab at a time (they measure timings on a shared
//! machine), bounded waits, and the agents' logs when something fails.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::Arc,
    sync::atomic::Ordering::Relaxed,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use xwan_lab::{
    agent::locate_xwan,
    config::{Failback, Options, Timing},
    lab::{Lab, Place},
    observe::{Class, FlowKey, FlowSeen},
    topology::Tunnels,
    traffic::FlowStats,
};

static ONE_LAB: Mutex<()> = Mutex::new(());

/// A lab with the seed configuration and fast probes, and the guard that keeps other tests
/// of this binary from running meanwhile (drop the lab first: declare it after the guard).
pub fn lab(failback: Failback) -> (MutexGuard<'static, ()>, Lab) {
    lab_with(&Options {
        timing: Timing::FAST,
        failback,
        tunnels: Tunnels::StandIn,
        firewall: false,
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

/// The link the seed scenario steers `class` to while every link is up: HTTP and FTP WAN1,
/// SQL WAN2, VoIP and SIP WAN3.
pub fn main_link(class: Class) -> usize {
    match class {
        Class::Http | Class::Ftp => 0,
        Class::Sql => 1,
        _ => 2,
    }
}

/// What the observer saw of a client's flow; fails with the agents' logs when it saw nothing.
pub fn seen<'a>(lab: &Lab, flows: &'a HashMap<FlowKey, FlowSeen>, st: &FlowStats) -> &'a FlowSeen {
    let key = st.key().expect("the client made a connection");
    flows
        .get(&key)
        .unwrap_or_else(|| panic!("{}: no packet seen on any link\n{}", st.label, logs(lab)))
}

/// A client's flow as the seed scenario wants it with every link up: answered without
/// errors, carried both ways over its class's main link (replies by the head office's
/// return routes), VoIP arriving with DSCP 18 (imposed by the branch), the rest with 0.
pub fn assert_main_link_both_ways(lab: &Lab, st: &FlowStats, seen: &FlowSeen) {
    let answered = st.answered.load(std::sync::atomic::Ordering::Relaxed);
    let errors = st.errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        answered > 0 && errors == 0,
        "{}: {answered} answers, {errors} errors",
        st.label
    );
    let want = main_link(st.class);
    assert_eq!(
        seen.forward_links(),
        vec![want],
        "{}: forward links",
        st.label
    );
    assert_eq!(
        seen.reply_links(),
        vec![want],
        "{}: reply links (return route)\n{}",
        st.label,
        logs(lab)
    );
    let dscp = if st.class == Class::Voip { 1 << 18 } else { 1 };
    assert_eq!(seen.dscp, dscp, "{}: DSCP bits on arrival", st.label);
}

/// Every request answered, every VoIP packet echoed, not one packet lost on the WAN either
/// way (the taps count what the client and the server sent and what arrived over the
/// links). Call once the traffic stopped.
pub fn assert_no_loss(what: &str, flows: &[Arc<FlowStats>], lab: &Lab) {
    std::thread::sleep(Duration::from_millis(300));
    for st in flows {
        let (sent, answered, errors, retrans) = (
            st.sent.load(Relaxed),
            st.answered.load(Relaxed),
            st.errors.load(Relaxed),
            st.retransmits.load(Relaxed),
        );
        let seen = lab.observer.flow(&st.key().unwrap()).unwrap();
        let lost = seen.lost();
        println!(
            "{what}: {}: {sent} requests/packets, {answered} answered, {errors} errors; WAN \
             packets {} out / {} back over {:?}, lost {lost:?} (TCP retransmissions {retrans})",
            st.label,
            seen.sent_forward,
            seen.sent_replies,
            seen.forward_links()
        );
        assert!(answered > 0, "{}: nothing answered", st.label);
        assert!(
            seen.sent_forward > 0 && seen.sent_replies > 0,
            "{}: taps saw nothing",
            st.label
        );
        assert_eq!(
            (sent, errors),
            (answered, 0),
            "{}: unanswered\n{}",
            st.label,
            logs(lab)
        );
        assert_eq!(
            lost,
            (0, 0),
            "{}: packets lost on the WAN\n{}",
            st.label,
            logs(lab)
        );
    }
}

/// The branch agent's events, recorded two ways: a `[[hook]]` appending the JSON it gets on
/// stdin to a file, and an `xwan events` client printing to another. Both start before the
/// reload that adds the hook, so the first event of both is that reload.
pub struct Recorder {
    hooked: std::path::PathBuf,
    streamed: std::path::PathBuf,
    listener: std::process::Child,
}

impl Recorder {
    pub fn start(lab: &Lab) -> Recorder {
        use std::{io::BufRead, os::unix::fs::PermissionsExt, process::Stdio};
        let dir = lab.state_dir();
        let (hooked, streamed) = (dir.join("hooked.jsonl"), dir.join("streamed.jsonl"));
        let script = dir.join("record-event");
        std::fs::write(&script, format!("#!/bin/sh\ncat >> {}\n", hooked.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut listener = std::process::Command::new(locate_xwan().unwrap())
            .arg("events")
            .arg("--socket")
            .arg(lab.branch_dir.socket())
            .stdout(std::fs::File::create(&streamed).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = String::new();
        std::io::BufReader::new(listener.stderr.take().unwrap())
            .read_line(&mut said)
            .unwrap();
        assert!(said.starts_with("xwan: listening"), "xwan events: {said}");
        let mut config = lab.branch_config().unwrap();
        let mut hook = toml::Table::new();
        hook.insert("name".into(), "recorder".into());
        hook.insert("command".into(), script.display().to_string().into());
        config.insert("hook".into(), toml::Value::Array(vec![hook.into()]));
        let answer = lab
            .reload_branch(&xwan_lab::config::render(&config))
            .unwrap();
        assert!(
            matches!(answer, xwan::control::Answer::Reloaded { .. }),
            "{answer:?}"
        );
        Recorder {
            hooked,
            streamed,
            listener,
        }
    }

    fn read(path: &std::path::Path) -> Vec<xwan::events::Event> {
        (std::fs::read_to_string(path).unwrap_or_default().lines())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    /// What the hook recorded so far.
    pub fn hooked(&self) -> Vec<xwan::events::Event> {
        Self::read(&self.hooked)
    }

    /// What `xwan events` printed so far.
    pub fn streamed(&self) -> Vec<xwan::events::Event> {
        Self::read(&self.streamed)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
    }
}
