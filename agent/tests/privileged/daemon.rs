//! The real `xwan run` in a router namespace with two Ethernet WAN links to peer
//! namespaces: gateways become Ready from real ICMP probes, traffic leaves through the main
//! gateway, a silent blackhole (nftables in the peer) moves new flows to the backup, carrier
//! loss is seen at once, and `xwan stop` leaves no program or pin behind. Real HTTP scrapes of
//! `/metrics` follow it all: gateway up 1 → 0, a down transition, per-gateway packets, drops
//! of a blocking rule.
//!
//! Needs root. Namespaces, the agent process and the bpffs mount are removed even when the
//! test fails.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    netns::{Netns, packet_socket, wait_for},
    wan::{
        Agent, AgentDir, Roles, TwoWan, blackhole, config, gateway_state, metric, request, status,
        udp_dport, udp_sport, wait, wait_until,
    },
};
use xwan::{
    control::{Answer, Request},
    datapath::{Datapath, TestBpffs},
};

fn explain(socket: &Path, dport: u16) -> String {
    let q = xwan::explain::Query {
        src: "10.80.0.2".parse().unwrap(),
        dst: "198.51.100.9".parse().unwrap(),
        proto: 17,
        sport: Some(40009),
        dport: Some(dport),
        dscp: 0,
        iface: None,
    };
    match request(socket, Request::Explain(q)) {
        Ok(Answer::Explained { text }) => text,
        other => panic!("explain: {other:?}"),
    }
}

#[test]
fn agent_probes_fails_over_and_stops_cleanly() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.80.0");
    let (lan, rtr, wan1, wan2) = (&net.lan, &net.rtr, &net.wan1, &net.wan2);
    let sniff1 = wan1.run(|| packet_socket("p1"));
    let sniff2 = wan2.run(|| packet_socket("p2"));

    let agent_dir = AgentDir::new("daemon");
    let dir = agent_dir.path().to_path_buf();
    let cfg = dir.join("xwan.toml");
    std::fs::write(&cfg, config(&dir, Roles::MainAndBackup)).unwrap();
    let mut agent = Agent::start(rtr, &cfg, &dir.join("agent.log"));
    // On failure: the agent's log and its data-plane counters (adopted from its pins).
    let log = || {
        let mut out = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        if let Ok(dp) = Datapath::load(&dir.join("bpffs")) {
            for c in dp.named_reason_counters().unwrap_or_default() {
                out.push_str(&format!("{c:?}\n"));
            }
            out.push_str(&format!(
                "gateways: {:?}\n",
                dp.gateway_counters()
                    .unwrap_or_default()
                    .iter()
                    .take(2)
                    .collect::<Vec<_>>()
            ));
        }
        for (ns, dev) in [
            (&rtr.name, "w1"),
            (&rtr.name, "w2"),
            (&wan1.name, "p1"),
            (&wan2.name, "p2"),
        ] {
            let o = Command::new("ip")
                .args(["-n", ns, "-s", "-d", "link", "show", dev])
                .output()
                .unwrap();
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        out
    };

    let ready = wait_until("GW1 active", wait(), || {
        status(&agent_dir.socket())
            .and_then(|s| gateway_state(&s, "GW1"))
            .is_some_and(|st| st == ("Active".into(), "Ready".into()))
    });
    println!("GW1 Ready and Active {ready:?} after the control socket answered");
    // `xwan status` names each attachment's mode, and says why where it is a fallback: the
    // LAN's TC program runs on tcx, or on clsact only with the reason (a kernel without tcx,
    // such as the 6.1 of the VM suite).
    let s = status(&agent_dir.socket()).expect("status");
    let lan_attachment = s
        .attachments
        .iter()
        .find(|a| a.starts_with("l0 "))
        .expect("l0");
    assert!(
        lan_attachment.contains("TC ingress xwan_tc_steer tcx")
            || lan_attachment
                .contains("TC ingress xwan_tc_steer clsact (fallback: tcx: not in this kernel"),
        "{lan_attachment}"
    );

    let send = |sport: u16| {
        lan.run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 2), sport)).unwrap();
            s.send_to(
                b"xwan",
                SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 5001),
            )
            .unwrap();
        })
    };
    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R",gateway="GW1"}"#),
        Some(1.0)
    );
    let why = explain(&agent_dir.socket(), 5001);
    assert!(
        why.contains("rule #1 'udp5001' matches")
            && why.contains("router R")
            && why.contains("gateway GW1"),
        "{why}"
    );
    assert!(explain(&agent_dir.socket(), 5002).contains("no rule matches"));
    send(40001);
    assert!(
        wait_for(sniff1.as_raw_fd(), wait(), |f| udp_dport(f) == Some(5001)).is_some(),
        "UDP/5001 did not leave through GW1\n{}",
        log()
    );

    // Silent blackhole on WAN1: the peer drops echo requests.
    let t = Instant::now();
    blackhole(wan1);
    wait_until("GW2 to take over", wait(), || {
        status(&agent_dir.socket()).is_some_and(|s| {
            gateway_state(&s, "GW1").is_some_and(|g| g.1 == "Unavailable")
                && gateway_state(&s, "GW2").is_some_and(|g| g.0 == "Active")
        })
    });
    println!(
        "blackhole on WAN1 detected and GW2 active after {:?} (bound: 200 ms + 3 x 100 ms + commit)",
        t.elapsed()
    );
    let why = explain(&agent_dir.socket(), 5001);
    assert!(why.contains("gateway GW2"), "after failover: {why}");
    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R",gateway="GW1"}"#),
        Some(0.0)
    );
    let down = r#"xwan_gateway_transitions_total{router="R",gateway="GW1",direction="down",reason="timeout"}"#;
    assert_eq!(metric(rtr, down), Some(1.0), "one down transition counted");
    assert!(metric(rtr, r#"xwan_gateway_packets_total{gateway="GW1"}"#) >= Some(1.0));
    send(40002);
    assert!(
        wait_for(sniff2.as_raw_fd(), wait(), |f| udp_dport(f) == Some(5001)).is_some(),
        "a new flow did not move to GW2\n{}",
        log()
    );
    assert!(metric(rtr, r#"xwan_gateway_packets_total{gateway="GW2"}"#) >= Some(1.0));
    let dropped = |ns: &Netns| {
        metric(ns, r#"xwan_datapath_packets_total{reason="drop_rule"}"#).unwrap_or(0.0)
    };
    let before = dropped(rtr);
    lan.run(|| {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 2), 40003)).unwrap();
        s.send_to(
            b"xwan",
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 5003),
        )
        .unwrap();
    });
    wait_until("the blocked packet to be counted", wait(), || {
        dropped(rtr) > before
    });
    assert_eq!(
        metric(rtr, r#"xwan_rule_packets_total{rule="no5003"}"#),
        Some(1.0)
    );

    // Carrier loss on WAN2: Unavailable without waiting for probes.
    let t = Instant::now();
    wan2.ip(&["link", "set", "p2", "down"]);
    wait_until("GW2 unavailable on carrier loss", wait(), || {
        status(&agent_dir.socket())
            .and_then(|s| gateway_state(&s, "GW2"))
            .is_some_and(|g| g.1 == "Unavailable")
    });
    println!("carrier loss on WAN2 seen after {:?}", t.elapsed());

    // Stop: no program on the LAN interface, no pin left.
    let answer = request(&agent_dir.socket(), Request::Stop).unwrap();
    assert_eq!(answer, Answer::Stopping);
    agent.wait_exit(wait());
    // `maps.debug` and `progs.debug` are bpffs's own iterators, present on every mount.
    let pins: Vec<_> = std::fs::read_dir(dir.join("bpffs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".debug"))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pins left behind: {pins:?}");
    let link = Command::new("ip")
        .args(["-n", &rtr.name, "link", "show", "l0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after stop: {link}"
    );
    let tc = Command::new("ip")
        .args([
            "netns", "exec", &rtr.name, "tc", "filter", "show", "dev", "l0", "ingress",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tc.stdout).trim().is_empty(),
        "TC filter left behind"
    );
}

/// A WAN interface deleted under the agent and created again (new ifindex, new peer): its
/// gateway is Unavailable at once and its flows move to the backup; once the interface is
/// back, the agent re-resolves it (ifindex, neighbour, probe socket) and traffic returns.
#[test]
fn interface_removed_and_recreated_is_re_resolved() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.83.0");
    let (lan, rtr, wan1, wan2) = (&net.lan, &net.rtr, &net.wan1, &net.wan2);
    let sniff2 = wan2.run(|| packet_socket("p2"));
    let agent_dir = AgentDir::new("iface");
    let dir = agent_dir.path().to_path_buf();
    let cfg = dir.join("xwan.toml");
    std::fs::write(&cfg, config(&dir, Roles::MainAndBackup)).unwrap();
    let _agent = Agent::start(rtr, &cfg, &dir.join("agent.log"));
    let socket = agent_dir.socket();
    let state = |gw: &str| status(&socket).and_then(|s| gateway_state(&s, gw));
    wait_until("GW1 active", wait(), || {
        state("GW1").is_some_and(|st| st == ("Active".into(), "Ready".into()))
    });
    let send = |sport: u16| {
        lan.run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 83, 0, 2), sport)).unwrap();
            s.send_to(
                b"xwan",
                SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 5001),
            )
            .unwrap();
        })
    };
    let from =
        |sport: u16| move |f: &[u8]| udp_dport(f) == Some(5001) && udp_sport(f) == Some(sport);
    let sniff1 = wan1.run(|| packet_socket("p1"));
    send(41001);
    assert!(
        wait_for(sniff1.as_raw_fd(), wait(), from(41001)).is_some(),
        "the flow did not leave through GW1"
    );

    // The interface goes away (with its veth peer).
    let t = Instant::now();
    rtr.ip(&["link", "del", "w1"]);
    wait_until("GW1 unavailable and GW2 active", wait(), || {
        state("GW1").is_some_and(|g| g.1 == "Unavailable")
            && state("GW2").is_some_and(|g| g.0 == "Active")
    });
    println!(
        "w1 deleted: GW1 Unavailable, GW2 Active after {:?}",
        t.elapsed()
    );
    // The existing flow and a new one both leave through GW2.
    for sport in [41001, 41002] {
        send(sport);
        assert!(
            wait_for(sniff2.as_raw_fd(), wait(), from(sport)).is_some(),
            "flow from port {sport} did not move to GW2 after w1 was deleted"
        );
    }

    // The interface comes back: a new ifindex, a new peer (which needs its own XDP program
    // for veth to deliver redirected frames), the same name and addresses.
    let t = Instant::now();
    rtr.ip(&[
        "link", "add", "w1", "type", "veth", "peer", "name", "p1", "netns", &wan1.name,
    ]);
    rtr.ip(&["addr", "add", "192.0.2.1/30", "dev", "w1"]);
    wan1.ip(&["addr", "add", "192.0.2.2/30", "dev", "p1"]);
    rtr.ip(&["link", "set", "w1", "up"]);
    wan1.ip(&["link", "set", "p1", "up"]);
    let fs = TestBpffs::new().unwrap();
    let mut peer = Datapath::load(fs.path()).unwrap();
    wan1.run(|| peer.attach_pass("p1").unwrap());
    let sniff1 = wan1.run(|| packet_socket("p1"));
    wait_until("GW1 active again", Duration::from_secs(10), || {
        state("GW1").is_some_and(|st| st == ("Active".into(), "Ready".into()))
    });
    println!(
        "w1 re-created: GW1 Ready and Active after {:?}",
        t.elapsed()
    );
    let why = explain(&socket, 5001);
    assert!(
        why.contains("gateway GW1"),
        "after the interface came back: {why}"
    );
    send(41003);
    assert!(
        wait_for(sniff1.as_raw_fd(), wait(), from(41003)).is_some(),
        "a new flow did not leave through the re-created w1"
    );
    peer.detach_all().unwrap();
}
