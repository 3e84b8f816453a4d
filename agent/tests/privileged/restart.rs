//! Hitless restart: the real `xwan run` in a router namespace load-balances a steady UDP
//! stream (16 flows, sequence-numbered) from a LAN namespace over two Ethernet gateways. In
//! the middle of the stream the agent gets SIGTERM and a new `xwan run` with the same
//! configuration starts: it must adopt the pinned maps and links, replace the programs in
//! place, and keep every flow on its gateway; not one packet may be lost. Then `xwan stop`
//! must leave nothing behind: no pin, no links directory, no XDP, no TC filter.
//!
//! Needs root. Namespaces, the agent processes and the bpffs mount are removed even when the
//! test fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::support::{
    self,
    netns::Netns,
    wan::{
        Agent, AgentConfig, FAR, Roles, Rule, TwoWan, active, assert_nothing_left, request, status,
        wait_until,
    },
};
use xwan::{
    control::{Answer, Request},
    status::Status,
};

const WAIT: Duration = Duration::from_secs(10);
/// Packets per second of the stream, and its minimum length.
const RATE: u64 = 2500;
const MIN_PACKETS: u64 = 5000;
const FLOWS: u16 = 16;
const MAGIC: &[u8; 4] = b"XWRS";

/// Both gateways of router R are Active and Ready.
fn both_active(s: &Status) -> bool {
    active(s, "GW1") && active(s, "GW2")
}

/// The id of the XDP program on `dev` in namespace `ns`.
fn xdp_prog(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.try_ip(&["-d", "link", "show", "dev", dev]).ok()?;
    let rest = &out[out.find("prog/xdp")?..];
    let rest = &rest[rest.find(" id ")? + 4..];
    rest.split_whitespace().next()?.parse().ok()
}

/// (source port, sequence number) of one of our UDP packets.
fn parse(frame: &[u8]) -> Option<(u16, u32)> {
    if frame.len() < 14 + 20 || frame[12..14] != [8, 0] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ip[9] != 17 || ip.len() < ihl + 8 + 8 {
        return None;
    }
    let udp = &ip[ihl..];
    let payload = &udp[8..];
    (u16::from_be_bytes([udp[2], udp[3]]) == 5001 && &payload[..4] == MAGIC).then(|| {
        (
            u16::from_be_bytes([udp[0], udp[1]]),
            u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        )
    })
}

/// Reads our packets from `fd` until `stop` is set and none came for 300 ms (probes and ARP
/// do not count), at most 3 s after `stop`.
fn collect(fd: OwnedFd, stop: &AtomicBool) -> Vec<(u16, u32)> {
    let big: libc::c_int = 16 << 20;
    // SAFETY: setsockopt with a c_int of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &big as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut last = Instant::now();
    let mut stopped: Option<Instant> = None;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 20) };
        loop {
            // SAFETY: reading into a buffer we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            if let Some(p) = parse(&buf[..n as usize]) {
                last = Instant::now();
                out.push(p);
            }
        }
        if stopped.is_none() && stop.load(Ordering::Relaxed) {
            stopped = Some(Instant::now());
        }
        if stopped.is_some_and(|t| {
            last.elapsed() > Duration::from_millis(300) || t.elapsed() > Duration::from_secs(3)
        }) {
            return out;
        }
    }
}

/// Sends packet i (flow i % FLOWS, sequence i) from `host` in `lan` every 1/RATE s until `stop`
/// is set and at least MIN_PACKETS went out. Returns the number sent.
fn stream(lan: &Netns, host: Ipv4Addr, stop: &AtomicBool) -> u64 {
    lan.enter();
    let socks: Vec<UdpSocket> = (0..FLOWS)
        .map(|f| UdpSocket::bind(SocketAddrV4::new(host, 41000 + f)).unwrap())
        .collect();
    let dst = SocketAddrV4::new(FAR, 5001);
    let start = Instant::now();
    let mut i: u64 = 0;
    while i < MIN_PACKETS || !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_micros(i * 1_000_000 / RATE);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let mut payload = [0u8; 16];
        payload[..4].copy_from_slice(MAGIC);
        payload[4..8].copy_from_slice(&(i as u32).to_be_bytes());
        socks[(i % FLOWS as u64) as usize]
            .send_to(&payload, dst)
            .unwrap();
        i += 1;
    }
    i
}

/// What the receivers saw of a numbered stream.
struct Streamed {
    sent: u64,
    /// Packets received through GW1 and GW2.
    received: [usize; 2],
    lost: Vec<u32>,
    duplicates: usize,
    reordered: usize,
    /// Gateways each flow (source port) was seen on.
    gateways: BTreeMap<u16, BTreeSet<&'static str>>,
}

/// Every packet exactly once, in order per flow, each flow on one gateway?
fn analyse(sent: u64, got1: &[(u16, u32)], got2: &[(u16, u32)]) -> Streamed {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let mut reordered = 0;
    let mut last: BTreeMap<u16, u32> = BTreeMap::new();
    let mut gateways: BTreeMap<u16, BTreeSet<&'static str>> = BTreeMap::new();
    for (gw, got) in [("GW1", got1), ("GW2", got2)] {
        for &(sport, seq) in got {
            if !seen.insert(seq) {
                duplicates += 1;
            }
            if last.get(&sport).is_some_and(|&l| seq < l) {
                reordered += 1;
            }
            last.insert(sport, seq);
            gateways.entry(sport).or_default().insert(gw);
        }
    }
    let lost = (0..sent as u32).filter(|s| !seen.contains(s)).collect();
    Streamed {
        sent,
        received: [got1.len(), got2.len()],
        lost,
        duplicates,
        reordered,
        gateways,
    }
}

/// Runs `during` while the LAN host streams (at least MIN_PACKETS) and the WAN peers collect
/// what reaches them: what arrived, and what `during` returned. A panic in `during` stops the
/// stream, then goes on (the agents' directory shows their logs).
fn under_stream<T>(net: &TwoWan, during: impl FnOnce() -> T) -> (Streamed, T) {
    let [sniff1, sniff2] = net.sniff();
    let (lan, host) = (&net.lan, net.host);
    let stop_rx = AtomicBool::new(false);
    let stop_tx = AtomicBool::new(false);
    std::thread::scope(|s| {
        let r1 = s.spawn(|| collect(sniff1, &stop_rx));
        let r2 = s.spawn(|| collect(sniff2, &stop_rx));
        let tx = s.spawn(|| stream(lan, host, &stop_tx));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
        stop_tx.store(true, Ordering::Relaxed);
        let sent = tx.join().unwrap();
        stop_rx.store(true, Ordering::Relaxed);
        let (got1, got2) = (r1.join().unwrap(), r2.join().unwrap());
        match result {
            Ok(t) => (analyse(sent, &got1, &got2), t),
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

#[test]
fn restart_under_traffic_loses_nothing_and_stop_leaves_nothing() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.81.0");
    let rtr = &net.rtr;
    let (dir, mut first, ready) = net.start_agent("restart", Roles::BothMain, WAIT);
    let socket = dir.socket();
    let logs = || {
        let mut out = String::new();
        for f in ["agent.log", "agent2.log"] {
            out.push_str(&format!("---- {f}\n{}", dir.log(f)));
        }
        out
    };

    println!("first agent: both gateways Active after {ready:?}");
    let prog_before = xdp_prog(rtr, "l0").expect("XDP on l0");
    let epoch_before = status(&socket).unwrap().epoch;

    let (streamed, (mut second, [exited, spawned, replaced, committed])) =
        under_stream(&net, || {
            std::thread::sleep(Duration::from_secs(1));
            // Restart: SIGTERM, then a new agent with the same configuration.
            let t0 = Instant::now();
            first.signal(libc::SIGTERM);
            let exited = first.wait_exit(WAIT);
            let second = Agent::start(rtr, &dir, "agent2.log");
            let spawned = t0.elapsed();
            wait_until("the new agent to replace the XDP program", WAIT, || {
                xdp_prog(rtr, "l0").is_some_and(|p| p != prog_before)
            });
            let replaced = t0.elapsed();
            wait_until("the new agent to commit its first plan", WAIT, || {
                status(&socket).is_some_and(|s| s.epoch > epoch_before && both_active(&s))
            });
            let committed = t0.elapsed();
            // Keep streaming a while on the new agent's plan.
            std::thread::sleep(Duration::from_secs(1));
            (second, [exited, spawned, replaced, committed])
        });
    let prog_after = xdp_prog(rtr, "l0").expect("XDP on l0 after the restart");

    let Streamed {
        sent,
        received: [got1, got2],
        lost,
        duplicates,
        reordered,
        gateways,
    } = streamed;
    let per_gw = |gw: &str| gateways.values().filter(|g| g.contains(gw)).count();
    println!(
        "restart under {RATE} pkt/s: SIGTERM → old agent gone {exited:?}, new agent spawned \
         {spawned:?}, XDP program {prog_before} replaced by {prog_after} after {replaced:?}, \
         first plan committed after {committed:?}"
    );
    println!(
        "sent {sent}, received {} (GW1 {got1}, GW2 {got2}), lost {}, duplicates {duplicates}, \
         reordered {reordered}; flows on GW1 {}, on GW2 {}",
        got1 + got2,
        lost.len(),
        per_gw("GW1"),
        per_gw("GW2"),
    );
    assert!(
        lost.is_empty(),
        "{} packets lost (first ones: {:?})\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        logs()
    );
    assert_eq!(duplicates, 0, "duplicated packets");
    assert_eq!(reordered, 0, "packets reordered within a flow");
    assert_eq!(gateways.len(), FLOWS as usize, "every flow was seen");
    for (sport, g) in &gateways {
        assert_eq!(
            g.len(),
            1,
            "flow from port {sport} moved between gateways: {g:?}"
        );
    }
    assert!(
        per_gw("GW1") > 0 && per_gw("GW2") > 0,
        "flows are load-balanced over both gateways: {gateways:?}"
    );
    assert_ne!(prog_after, prog_before, "the XDP program was replaced");
    let log2 = dir.log("agent2.log");
    assert!(log2.contains("adopted"), "{log2}");

    // Stop: nothing left behind.
    second.stop(&dir, WAIT);
    assert_nothing_left(rtr, &dir);
}

/// `xwan reload` under the same stream: a valid new configuration whose change does not
/// concern the streamed flows (a new blocking rule for another port) moves none of them and
/// loses no packet, and takes effect for the traffic it concerns; a broken configuration is
/// rejected with an error naming the file, and changes nothing.
#[test]
fn reload_under_traffic_moves_only_what_changed() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.81.0");
    let (dir, _agent, _) = net.start_agent("reload", Roles::BothMain, WAIT);
    let socket = dir.socket();
    let log = || dir.log("agent.log");
    let reload = || request(&socket, Request::Reload).unwrap();
    let assert_blocks_5009 = || {
        let text = net.explain(&socket, 40000, 5009);
        assert!(
            text.contains("'no5009'") && text.contains("dropped"),
            "{text}"
        );
    };

    let (streamed, (before, after, rejected)) = under_stream(&net, || {
        std::thread::sleep(Duration::from_millis(700));
        let before = status(&socket).unwrap().epoch;
        let mut config = AgentConfig::two_wan(Roles::BothMain);
        config.rules.push(Rule {
            name: "no5009",
            udp_port: Some(5009),
            block: true,
        });
        dir.write(&config);
        let after = match reload() {
            Answer::Reloaded { epoch } => epoch,
            other => panic!("valid reload refused: {other:?}\n{}", log()),
        };
        // The new rule applies to the traffic it concerns.
        assert_blocks_5009();
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(dir.config(), "[[router]\nname = \"broken\"\n").unwrap();
        let rejected = match reload() {
            Answer::Error { message } => message,
            other => panic!("broken configuration accepted: {other:?}"),
        };
        // The running configuration stays (kernel events may still commit new epochs of it).
        assert_blocks_5009();
        std::thread::sleep(Duration::from_millis(700));
        (before, after, rejected)
    });
    assert!(
        after > before,
        "the valid reload committed a new ruleset ({before} -> {after})"
    );
    assert!(
        rejected.contains("xwan.toml:"),
        "the error names the file and line: {rejected}"
    );
    let Streamed {
        sent,
        lost,
        duplicates,
        reordered,
        gateways,
        ..
    } = streamed;
    println!(
        "reload under {RATE} pkt/s: sent {sent}, lost {}, duplicates {duplicates}, reordered \
         {reordered}; epochs {before} -> {after} (broken config rejected: {rejected})",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} packets lost across the reloads\n{}",
        lost.len(),
        log()
    );
    assert_eq!((duplicates, reordered), (0, 0));
    assert_eq!(gateways.len(), FLOWS as usize, "every flow was seen");
    assert!(
        gateways.values().all(|g| g.len() == 1),
        "a flow moved: {gateways:?}"
    );
}

/// A reload whose file is valid but cannot be applied (a LAN interface that is not
/// Ethernet, found only when the plan is made, after the new probes have started) is
/// rejected, and the running configuration stays whole: its gateways are probed as before
/// (the rejected file gave GW2 an unreachable check target, which would make it Unavailable
/// within a second), and the rejected interface is not left attached.
#[test]
fn a_reload_that_cannot_be_applied_rolls_back_probes_and_interfaces() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.82.0");
    let rtr = &net.rtr;
    rtr.ip(&["tuntap", "add", "t9", "mode", "tun"]);
    rtr.ip(&["link", "set", "t9", "up"]);
    let (dir, _agent, _) = net.start_agent("rollback", Roles::BothMain, WAIT);
    let socket = dir.socket();
    let log = || dir.log("agent.log");

    let mut config = AgentConfig::two_wan(Roles::BothMain);
    config.lan.push("t9");
    config.links[1].check = Some("198.51.100.99");
    dir.write(&config);
    let message = match request(&socket, Request::Reload).unwrap() {
        Answer::Error { message } => message,
        other => panic!(
            "an unusable configuration was accepted: {other:?}\n{}",
            log()
        ),
    };
    assert!(message.contains("t9"), "{message}");

    // GW2's detection takes 3 tries of 200 ms: well within this.
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&socket).unwrap();
    assert!(both_active(&s), "after the rollback: {s:?}\n{}", log());
    let t9 = rtr
        .try_ip(&["-d", "link", "show", "t9"])
        .unwrap_or_default();
    assert!(
        !t9.contains("xdp"),
        "the rejected LAN t9 stayed attached: {t9}"
    );
}
