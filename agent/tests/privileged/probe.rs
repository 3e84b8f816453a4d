//! Real probes through real interfaces: ICMP/ICMPv6 echo and TCP connect between two network
//! namespaces joined by a veth pair, a silent blackhole made with nftables in the peer, and a
//! carrier loss. Needs root (skipped otherwise).
//!
//! Each test creates its own namespaces with unique names (`xwp<pid>-<n><tag>`), never
//! touches the root namespace, deletes them on drop (also when a test panics) and bounds
//! every wait. Probers run on a thread that entered the agent's namespace, in a
//! current-thread tokio runtime.
//!
//! Layout (per test):
//!
//! ```text
//!  agent ns                      peer ns
//!  xa0 10.77.0.1/24 fd77::1/64 ─ xp0 10.77.0.2/24 fd77::2/64   (veth)
//! ```
//!
//! The netns helper is deliberately small and local to this file.

use std::{
    fs::File,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use crate::support;
use xwan::{
    health::{Availability, HealthParams, Transition},
    probe::{
        GatewayEvent, IcmpProber, LinkBinding, LinkState, ProbeError, Prober, TcpProber,
        run_gateway,
    },
};

/// Every test body is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

const A4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const P4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const P6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (network namespaces, raw sockets)");
    }
    root
}

/// Runs a command (bounded by coreutils `timeout`), panicking with its stderr on failure.
fn run(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("10")
        .args(args)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("xwp{}-{n}{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `ip netns exec NAME ARGS…`
    fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs `f` on a thread that entered this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
                // SAFETY: setns on a valid namespace fd; it affects the calling thread only.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Runs the future `f` builds in a current-thread runtime inside this namespace, bounded
    /// by [`LIMIT`].
    fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(LIMIT, f())
                    .await
                    .expect("test body took longer than its bound")
            })
        })
    }

    /// Whether `dev` in this namespace has lost its carrier (or is down).
    fn no_carrier(&self, dev: &str) -> bool {
        let out = self.ip(&["-o", "link", "show", dev]);
        out.contains("NO-CARRIER") || out.contains("state DOWN")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ok = Command::new("timeout")
            .args(["10", "ip", "netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// The agent namespace and its peer, joined by xa0 ↔ xp0.
struct Pair {
    agent: Netns,
    peer: Netns,
}

fn pair(tag: &str) -> Pair {
    let agent = Netns::new(&format!("{tag}a"));
    let peer = Netns::new(&format!("{tag}p"));
    agent.ip(&[
        "link", "add", "xa0", "type", "veth", "peer", "name", "xp0", "netns", &peer.name,
    ]);
    for (ns, dev, v4, v6) in [
        (&agent, "xa0", "10.77.0.1/24", "fd77::1/64"),
        (&peer, "xp0", "10.77.0.2/24", "fd77::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", dev]);
        // no duplicate address detection: the address is usable at once
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    // A fresh veth answers IPv6 neighbour solicitations only about a second after carrier
    // (measured: the first ping6 takes ~1 s even without DAD); wait until it does, with the
    // system's ping so that the code under test plays no part in the setup.
    wait_for(
        || {
            Command::new("timeout")
                .args(["5", "ip", "netns", "exec", &agent.name])
                .args(["ping", "-6", "-c1", "-W1", "-I", "xa0", "fd77::2"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
        "IPv6 between the namespaces",
    );
    Pair { agent, peer }
}

fn xa0() -> LinkBinding {
    LinkBinding {
        device: Some("xa0".into()),
        source_v4: Some(A4),
        source_v6: Some(A6),
        mark: None,
    }
}

/// Drops what `rule` matches (e.g. `icmp type echo-request`) on input in `ns`: a silent
/// blackhole. One nft batch, applied atomically before `nft` returns.
fn blackhole(ns: &Netns, rule: &str) {
    ns.exec(&[
        "nft",
        &format!(
            "add table inet xwp; \
             add chain inet xwp in {{ type filter hook input priority 0; }}; \
             add rule inet xwp in {rule} drop"
        ),
    ]);
}

fn clear_blackhole(ns: &Netns) {
    ns.exec(&["nft", "delete", "table", "inet", "xwp"]);
}

fn fast() -> HealthParams {
    HealthParams {
        frequency: Duration::from_millis(200),
        wait: Duration::from_millis(100),
        tries: 3,
        recover: 1,
        ..HealthParams::default()
    }
}

/// The next transition, skipping probe reports; panics after `within`.
async fn next_transition(rx: &mut mpsc::Receiver<GatewayEvent>, within: Duration) -> Transition {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Some(GatewayEvent::Transition(t)) => return t,
                Some(GatewayEvent::Probed(_)) => {}
                None => panic!("gateway task ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no transition within {within:?}"))
}

/// Runs a blocking shell step off the runtime thread, so probes keep running meanwhile.
async fn step(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f).await.expect("step panicked");
}

#[test]
fn icmp_echo_v4_and_v6_over_a_veth() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("e");
    let (v4, v6) = p.agent.block_on(|| async {
        let prober = IcmpProber::new(xa0());
        let mut v4 = vec![];
        let mut v6 = vec![];
        for _ in 0..5 {
            v4.push(prober.probe(P4.into(), Duration::from_secs(2)).await);
            v6.push(prober.probe(P6.into(), Duration::from_secs(2)).await);
        }
        (v4, v6)
    });
    println!("icmp rtt v4: {v4:?}");
    println!("icmp rtt v6: {v6:?}");
    for r in v4.iter().chain(&v6) {
        let rtt = r.as_ref().expect("echo answered");
        assert!(*rtt > Duration::ZERO && *rtt < Duration::from_secs(1));
    }
}

#[test]
fn concurrent_probes_on_one_socket_are_never_confused() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("c");
    let results = p.agent.block_on(|| async {
        let first = IcmpProber::new(xa0());
        // a second prober on the same interface: another socket that sees the same replies
        let second = IcmpProber::new(xa0());
        let silent4: IpAddr = Ipv4Addr::new(10, 77, 0, 3).into();
        let silent6: IpAddr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3).into();
        let wait = Duration::from_millis(500);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..64 {
            // every kind of target through both sockets
            let prober = if (i / 4) % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let target = match i % 4 {
                0 | 1 => IpAddr::from(P4),
                2 => IpAddr::from(P6),
                _ => {
                    if i % 8 == 3 {
                        silent4
                    } else {
                        silent6
                    }
                }
            };
            set.spawn(async move { (target, prober.probe(target, wait).await) });
        }
        set.join_all().await
    });
    let mut answered = 0;
    let mut silent = 0;
    for (target, r) in &results {
        if *target == IpAddr::from(P4) || *target == IpAddr::from(P6) {
            assert!(r.is_ok(), "{target}: {r:?}");
            answered += 1;
        } else {
            // nobody owns .3 / ::3: no reply may ever be attributed to it
            assert!(r.is_err(), "{target}: {r:?}");
            silent += 1;
        }
    }
    println!("{answered} probes answered, {silent} unanswered, all attributed correctly");
    assert_eq!((answered, silent), (48, 16));
}

#[test]
fn probes_leave_through_the_bound_device() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    // a second link xb0 ↔ xq0 (10.78.0.0/24) to a third namespace that knows nothing of
    // 10.77.0.0/24
    let p = pair("b");
    let other = Netns::new("bq");
    p.agent.ip(&[
        "link",
        "add",
        "xb0",
        "type",
        "veth",
        "peer",
        "name",
        "xq0",
        "netns",
        &other.name,
    ]);
    p.agent.ip(&["addr", "add", "10.78.0.1/24", "dev", "xb0"]);
    p.agent.ip(&["link", "set", "xb0", "up"]);
    other.ip(&["addr", "add", "10.78.0.2/24", "dev", "xq0"]);
    other.ip(&["link", "set", "xq0", "up"]);
    let q4: IpAddr = Ipv4Addr::new(10, 78, 0, 2).into();
    let r = p.agent.block_on(|| async {
        let wait = Duration::from_millis(500);
        let via_a = IcmpProber::new(LinkBinding::device("xa0"));
        let via_b = IcmpProber::new(LinkBinding::device("xb0"));
        let unbound = IcmpProber::new(LinkBinding::default());
        [
            via_a.probe(P4.into(), wait).await,
            via_b.probe(P4.into(), wait).await,
            via_b.probe(q4, wait).await,
            via_a.probe(q4, wait).await,
            unbound.probe(P4.into(), wait).await,
        ]
    });
    println!("xa0→peer, xb0→peer, xb0→q, xa0→q, unbound→peer: {r:?}");
    assert!(r[0].is_ok());
    assert!(r[1].is_err(), "the peer is not reachable through xb0");
    assert!(r[2].is_ok());
    assert!(r[3].is_err(), "q is not reachable through xa0");
    assert!(r[4].is_ok());
}

/// One blackhole cycle: the rule's delay after a round start, the detection time from just
/// before `nft` ran and from when it returned, the failing attempts, the recovery time.
struct Cycle {
    phase: Duration,
    detect_before: Duration,
    detect_after: Duration,
    attempts: Vec<u32>,
    recovery: Duration,
}

#[test]
fn silent_blackhole_is_detected_and_recovery_follows() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("h");
    let peer = p.peer.name.clone();
    let params = fast();
    let cycles = p.agent.block_on(|| async move {
        let (_link_tx, link_rx) = watch::channel(LinkState::Up);
        let (tx, mut rx) = mpsc::channel(1024);
        let prober = IcmpProber::new(xa0());
        tokio::spawn(run_gateway(params, prober, vec![P4.into()], link_rx, tx));
        let t = next_transition(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(t.to, Availability::Ready, "{t}");
        let mut cycles = vec![];
        // the rule lands at several points of the 200 ms cycle
        for phase in [0, 50, 100, 150].map(Duration::from_millis) {
            // align on the start of a round (its first attempt answers within ~1 ms)
            loop {
                match rx.recv().await.expect("task alive") {
                    GatewayEvent::Probed(r) if r.attempt == 1 && r.outcome.is_ok() => break,
                    GatewayEvent::Probed(_) => {}
                    GatewayEvent::Transition(t) => panic!("unexpected {t}"),
                }
            }
            tokio::time::sleep(phase).await;
            let before = Instant::now();
            let ns = peer.clone();
            step(move || blackhole(&Netns::borrowed(&ns), "icmp type echo-request")).await;
            let after = Instant::now();
            let mut attempts = vec![];
            let t = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match rx.recv().await.expect("task alive") {
                        GatewayEvent::Probed(r) if r.outcome.is_err() => attempts.push(r.attempt),
                        GatewayEvent::Probed(_) => {}
                        GatewayEvent::Transition(t) => return t,
                    }
                }
            })
            .await
            .expect("blackhole detected within 5 s");
            assert_eq!(
                (t.from, t.to, t.reason.code()),
                (Availability::Ready, Availability::Unavailable, "timeout"),
                "{t}"
            );
            let (detect_before, detect_after) = (t.at - before, t.at - after);

            let before = Instant::now();
            let ns = peer.clone();
            step(move || clear_blackhole(&Netns::borrowed(&ns))).await;
            let t = next_transition(&mut rx, Duration::from_secs(5)).await;
            assert_eq!((t.to, t.reason.code()), (Availability::Ready, "answering"));
            cycles.push(Cycle {
                phase,
                detect_before,
                detect_after,
                attempts,
                recovery: t.at - before,
            });
        }
        cycles
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "blackhole detection (frequency 200 ms, wait 100 ms, tries 3: expected between \
         tries × wait = 300 ms and frequency + tries × wait = 500 ms after the rule):"
    );
    for c in &cycles {
        println!(
            "  rule {:>3.0} ms into a round: Unavailable {:>5.1} ms after nft started, \
             {:>5.1} ms after it returned; Ready again {:>5.1} ms after the rule was removed",
            ms(c.phase),
            ms(c.detect_before),
            ms(c.detect_after),
            ms(c.recovery)
        );
    }
    for c in &cycles {
        assert_eq!(c.attempts, [1, 2, 3], "three attempts, wait apart");
        // a failing round needs tries × wait at least; the rule is in force when nft returns,
        // the next round starts within a frequency: + slack for a busy scheduler (the exact
        // timing is pinned on virtual time in probe::schedule's tests)
        assert!(
            c.detect_before >= Duration::from_millis(299),
            "{:?}",
            c.detect_before
        );
        assert!(
            c.detect_after <= Duration::from_millis(1000),
            "{:?}",
            c.detect_after
        );
        assert!(
            c.recovery <= Duration::from_millis(1000),
            "{:?}",
            c.recovery
        );
    }
}

#[test]
fn all_targets_must_answer_v6_blackhole() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("6");
    let peer = p.peer.name.clone();
    let t = p.agent.block_on(|| async move {
        let (_link_tx, link_rx) = watch::channel(LinkState::Up);
        let (tx, mut rx) = mpsc::channel(1024);
        let prober = IcmpProber::new(xa0());
        let targets = vec![P4.into(), P6.into()];
        tokio::spawn(run_gateway(fast(), prober, targets, link_rx, tx));
        let t = next_transition(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(t.to, Availability::Ready, "{t}");
        // only ICMPv6 is dropped: IPv4 still answers, yet the gateway is down
        step(move || blackhole(&Netns::borrowed(&peer), "icmpv6 type echo-request")).await;
        next_transition(&mut rx, Duration::from_secs(5)).await
    });
    assert_eq!(
        (t.to, t.reason.code()),
        (Availability::Unavailable, "timeout")
    );
}

#[test]
fn carrier_loss_and_admin_down_are_immediate() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("l");
    let agent = p.agent.name.clone();
    let peer = p.peer.name.clone();
    let (down, quiet_reports, up, admin_down) = p.agent.block_on(|| async move {
        let (link_tx, link_rx) = watch::channel(LinkState::Up);
        let (tx, mut rx) = mpsc::channel(1024);
        let prober = IcmpProber::new(xa0());
        tokio::spawn(run_gateway(fast(), prober, vec![P4.into()], link_rx, tx));
        let t = next_transition(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(t.to, Availability::Ready, "{t}");

        // carrier loss: the far end goes down, xa0 reports NO-CARRIER
        let (a, pn) = (agent.clone(), peer.clone());
        step(move || {
            Netns::borrowed(&pn).ip(&["link", "set", "xp0", "down"]);
            wait_for(|| Netns::borrowed(&a).no_carrier("xa0"), "carrier loss");
        })
        .await;
        // rtnetlink would say so; here the test does
        let sent = Instant::now();
        link_tx.send_replace(LinkState::Down);
        let t = next_transition(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(
            (t.from, t.to, t.reason.code()),
            (Availability::Ready, Availability::Unavailable, "link down")
        );
        let down = t.at - sent;

        // no probing while down: nothing for 3 frequencies
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut quiet = 0;
        while let Ok(ev) = rx.try_recv() {
            assert!(
                !matches!(ev, GatewayEvent::Transition(_)),
                "no change while down: {ev:?}"
            );
            quiet += 1;
        }

        let (a, pn) = (agent.clone(), peer.clone());
        step(move || {
            Netns::borrowed(&pn).ip(&["link", "set", "xp0", "up"]);
            wait_for(|| !Netns::borrowed(&a).no_carrier("xa0"), "carrier");
        })
        .await;
        let sent = Instant::now();
        link_tx.send_replace(LinkState::Up);
        let t = next_transition(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(
            (t.to, t.reason.code()),
            (Availability::Unavailable, "link up")
        );
        let t = next_transition(&mut rx, Duration::from_secs(5)).await;
        assert_eq!((t.to, t.reason.code()), (Availability::Ready, "answering"));
        let up = t.at - sent;

        // admin down of the local end
        let a = agent.clone();
        step(move || {
            Netns::borrowed(&a).ip(&["link", "set", "xa0", "down"]);
        })
        .await;
        let sent = Instant::now();
        link_tx.send_replace(LinkState::Down);
        let t = next_transition(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(
            (t.to, t.reason.code()),
            (Availability::Unavailable, "link down")
        );
        (down, quiet, up, t.at - sent)
    });
    println!(
        "link down → Unavailable in {:.3} ms; link up → Ready in {:.1} ms; admin down → \
         Unavailable in {:.3} ms",
        down.as_secs_f64() * 1e3,
        up.as_secs_f64() * 1e3,
        admin_down.as_secs_f64() * 1e3
    );
    assert_eq!(quiet_reports, 0, "no probes while the link is down");
    assert!(down < Duration::from_millis(50), "{down:?}");
    assert!(admin_down < Duration::from_millis(50), "{admin_down:?}");
    assert!(up < Duration::from_millis(500), "{up:?}");
}

#[test]
fn tcp_monitor_connects_is_refused_or_times_out() {
    let _turn = support::exclusive();
    if !is_root() {
        return;
    }
    let p = pair("t");
    // listeners in the peer; the kernel completes handshakes without accept()
    let _listeners: Vec<TcpListener> = p.peer.run(|| {
        vec![
            TcpListener::bind((P4, 8080)).unwrap(),
            TcpListener::bind((P6, 8080)).unwrap(),
        ]
    });
    let wait = Duration::from_millis(500);
    let first = p.agent.block_on(|| async move {
        let open = TcpProber::new(xa0(), 8080);
        let closed = TcpProber::new(xa0(), 8081);
        [
            open.probe(P4.into(), wait).await,
            open.probe(P6.into(), wait).await,
            closed.probe(P4.into(), wait).await,
            closed.probe(P6.into(), wait).await,
        ]
    });
    blackhole(&p.peer, "tcp dport 8080");
    let dropped = p.agent.block_on(|| async move {
        let open = TcpProber::new(xa0(), 8080);
        let start = Instant::now();
        (open.probe(P4.into(), wait).await, start.elapsed())
    });
    println!("tcp open v4/v6, closed v4/v6: {first:?}; dropped: {dropped:?}");
    assert!(first[0].as_ref().is_ok_and(|r| *r > Duration::ZERO));
    assert!(first[1].as_ref().is_ok_and(|r| *r > Duration::ZERO));
    assert_eq!(first[2], Err(ProbeError::Refused));
    assert_eq!(first[3], Err(ProbeError::Refused));
    assert_eq!(dropped.0, Err(ProbeError::Timeout));
    assert!(dropped.1 >= wait && dropped.1 < wait * 2, "{:?}", dropped.1);
}

#[test]
fn namespaces_are_deleted_on_panic() {
    let _turn = support::shared(module_path!());
    if !is_root() {
        return;
    }
    let name = std::panic::catch_unwind(|| {
        let p = pair("x");
        let name = p.agent.name.clone();
        std::panic::panic_any(name);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    let list = run(&["ip", "netns", "list"]);
    assert!(!list.contains(name.as_str()), "{name} left behind: {list}");
}

/// Polls `cond` every 10 ms for at most 5 s.
fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < end, "no {what} within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Netns {
    /// A handle on a namespace owned elsewhere (not deleted on drop).
    fn borrowed(name: &str) -> std::mem::ManuallyDrop<Netns> {
        std::mem::ManuallyDrop::new(Netns {
            name: name.to_string(),
        })
    }
}
