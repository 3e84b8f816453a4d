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
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crate::support::{
    self,
    netns::{Netns, packet_socket, wait_for},
    wan::{
        Agent, AgentConfig, AgentDir, FAR, Roles, Rule, TwoWan, active, assert_nothing_left,
        blackhole, clear_blackhole, gateway_state, metric, status, udp_dport, udp_sport, wait,
        wait_until,
    },
};
use xwan::{
    datapath::{Datapath, TestBpffs},
    status::RouterState,
};

#[test]
fn agent_probes_fails_over_and_stops_cleanly() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.80.0");
    let (rtr, wan1, wan2) = (&net.rtr, &net.wan1, &net.wan2);
    let [sniff1, sniff2] = net.sniff();

    let (dir, mut agent, ready) = net.start_agent("daemon", Roles::MainAndBackup, wait());
    println!("GW1 Ready and Active {ready:?} after the agent started");
    // On failure: the agent's log and its data-plane counters (adopted from its pins).
    let log = || {
        let mut out = dir.log("agent.log");
        if let Ok(dp) = Datapath::load(&dir.path().join("bpffs")) {
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
        for (ns, dev) in [(rtr, "w1"), (rtr, "w2"), (wan1, "p1"), (wan2, "p2")] {
            out.push_str(
                &ns.try_ip(&["-s", "-d", "link", "show", dev])
                    .unwrap_or_default(),
            );
        }
        out
    };

    // `xwan status` names each attachment's mode, and says why where it is a fallback: the
    // LAN's TC program runs on tcx, or on clsact only with the reason (a kernel without tcx,
    // such as the 6.1 of the VM suite).
    let s = status(&dir.socket()).expect("status");
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

    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R",gateway="GW1"}"#),
        Some(1.0)
    );
    let why = net.explain(&dir.socket(), 40009, 5001);
    assert!(
        why.contains("rule #1 'udp5001' matches")
            && why.contains("router R")
            && why.contains("gateway GW1"),
        "{why}"
    );
    assert!(
        net.explain(&dir.socket(), 40009, 5002)
            .contains("no rule matches")
    );
    net.send(40001, 5001);
    assert!(
        wait_for(sniff1.as_raw_fd(), wait(), |f| udp_dport(f) == Some(5001)).is_some(),
        "UDP/5001 did not leave through GW1\n{}",
        log()
    );

    let r = status(&dir.socket()).unwrap().routers.remove(0);
    assert_eq!(
        (r.state, r.active_mains, r.active_backups),
        (RouterState::OnMains, 1, 0)
    );
    // Long enough for "since the start" and "since the failover" to read differently.
    std::thread::sleep(Duration::from_millis(1_500));

    // Silent blackhole on WAN1: the peer drops echo requests.
    let (t, cut) = (Instant::now(), SystemTime::now());
    blackhole(wan1);
    wait_until("GW2 to take over", wait(), || {
        status(&dir.socket()).is_some_and(|s| {
            gateway_state(&s, "GW1").is_some_and(|g| g.1 == "Unavailable")
                && gateway_state(&s, "GW2").is_some_and(|g| g.0 == "Active")
        })
    });
    println!(
        "blackhole on WAN1 detected and GW2 active after {:?} (bound: 200 ms + 3 x 100 ms + commit)",
        t.elapsed()
    );
    // The router says it runs on its backup, since the failover; GW2's LAST CHANGE is its
    // turn to Active in R (not when it became Ready, at the start).
    let s = status(&dir.socket()).unwrap();
    let r = &s.routers[0];
    assert_eq!(
        (r.state, r.active_mains, r.active_backups),
        (RouterState::OnBackups, 0, 1)
    );
    let gw2 = r.gateways.iter().find(|g| g.name == "GW2").unwrap();
    for (what, t) in [("router", r.last_change), ("GW2", gw2.last_change)] {
        let t = t.unwrap_or_else(|| panic!("{what}: no last change"));
        assert!(
            t >= cut && t <= SystemTime::now(),
            "{what} changed at {t:?}"
        );
    }
    assert!(gw2.available_since.unwrap() < cut);
    let text = xwan::status::render(&s, SystemTime::now());
    assert!(
        text.contains("router R  on backups (1 backup and 0 mains active), since "),
        "{text}"
    );
    let why = net.explain(&dir.socket(), 40009, 5001);
    assert!(why.contains("gateway GW2"), "after failover: {why}");
    // The flow sent through GW1 before: its entry still names GW1, and its next packet moves.
    let why = net.explain(&dir.socket(), 40001, 5001);
    assert!(
        why.contains("existing flow: rule #1, router R, gateway GW1, last seen")
            && why.contains("its next packet moves from gateway GW1 to GW2")
            && why.contains("  GW1: Main, Unavailable, Unavailable (timeout)")
            && why.contains("  GW2: Backup, Active, Ready (answering)"),
        "{why}"
    );
    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R",gateway="GW1"}"#),
        Some(0.0)
    );
    let down = r#"xwan_gateway_transitions_total{router="R",gateway="GW1",direction="down",reason="timeout"}"#;
    assert_eq!(metric(rtr, down), Some(1.0), "one down transition counted");
    assert!(metric(rtr, r#"xwan_gateway_packets_total{gateway="GW1"}"#) >= Some(1.0));
    net.send(40002, 5001);
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
    net.send(40003, 5003);
    wait_until("the blocked packet to be counted", wait(), || {
        dropped(rtr) > before
    });
    assert_eq!(
        metric(rtr, r#"xwan_rule_packets_total{rule="no5003"}"#),
        Some(1.0)
    );

    // GW1 back: new connections return to it, the flow opened on GW2 meanwhile stays there
    // (failback = "new-connections"), and explain says both.
    clear_blackhole(wan1);
    wait_until("GW1 active again", wait(), || {
        status(&dir.socket())
            .and_then(|s| gateway_state(&s, "GW1"))
            .is_some_and(|g| g.0 == "Active")
    });
    let why = net.explain(&dir.socket(), 40002, 5001);
    assert!(
        why.contains("a new connection takes gateway GW1")
            && why.contains("existing flow: rule #1, router R, gateway GW2")
            && why.contains(
                "its next packet stays on gateway GW2, which its router still allows \
                 (failback = \"new-connections\")"
            ),
        "{why}"
    );
    net.send(40002, 5001);
    assert!(
        wait_for(sniff2.as_raw_fd(), wait(), |f| udp_sport(f) == Some(40002)).is_some(),
        "the flow on GW2 did not stay there after failback\n{}",
        log()
    );

    // Carrier loss on WAN2: Unavailable without waiting for probes.
    let t = Instant::now();
    wan2.ip(&["link", "set", "p2", "down"]);
    wait_until("GW2 unavailable on carrier loss", wait(), || {
        status(&dir.socket())
            .and_then(|s| gateway_state(&s, "GW2"))
            .is_some_and(|g| g.1 == "Unavailable")
    });
    println!("carrier loss on WAN2 seen after {:?}", t.elapsed());

    // Stop: no program on the LAN interface, no pin left.
    agent.stop(&dir, wait());
    assert_nothing_left(rtr, &dir);
}

/// A WAN interface deleted under the agent and created again (new ifindex, new peer): its
/// gateway is Unavailable at once and its flows move to the backup; once the interface is
/// back, the agent re-resolves it (ifindex, neighbour, probe socket) and traffic returns.
#[test]
fn interface_removed_and_recreated_is_re_resolved() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.83.0");
    let (rtr, wan1) = (&net.rtr, &net.wan1);
    let [sniff1, sniff2] = net.sniff();
    let (dir, _agent, _) = net.start_agent("iface", Roles::MainAndBackup, wait());
    let socket = dir.socket();
    let state = |gw: &str| status(&socket).and_then(|s| gateway_state(&s, gw));
    let from =
        |sport: u16| move |f: &[u8]| udp_dport(f) == Some(5001) && udp_sport(f) == Some(sport);
    net.send(41001, 5001);
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
        net.send(sport, 5001);
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
        status(&socket).is_some_and(|s| active(&s, "GW1"))
    });
    println!(
        "w1 re-created: GW1 Ready and Active after {:?}",
        t.elapsed()
    );
    let why = net.explain(&socket, 40009, 5001);
    assert!(
        why.contains("gateway GW1"),
        "after the interface came back: {why}"
    );
    net.send(41003, 5001);
    assert!(
        wait_for(sniff1.as_raw_fd(), wait(), from(41003)).is_some(),
        "a new flow did not leave through the re-created w1"
    );
    peer.detach_all().unwrap();
}

/// `forwarding = "netfilter"` on a box with the standard stateful forward policy and
/// masquerade on both WANs: steered traffic goes through the firewall (it counts each
/// connection, none is invalid) and NAT (each WAN sees its own address as the source), a
/// silent blackhole of GW1 still moves new flows to GW2, and `xwan stop` leaves no rule or
/// route of xwan's behind.
#[test]
fn netfilter_forwarding_fails_over_through_the_hosts_stateful_firewall() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.84.0");
    let (rtr, wan1) = (&net.rtr, &net.wan1);
    let [sniff1, sniff2] = net.sniff();
    stateful_firewall(rtr);
    rtr.exec(
        "nft",
        &["add table ip nat; \
           add chain ip nat post { type nat hook postrouting priority 100; }; \
           add rule ip nat post oifname \"w1\" snat to 192.0.2.1; \
           add rule ip nat post oifname \"w2\" snat to 192.0.2.5"],
    );
    let dir = AgentDir::new("netfilter");
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.agent.push("forwarding = \"netfilter\"".into());
    dir.write(&config);
    let mut agent = Agent::start(rtr, &dir, "agent.log");
    let socket = dir.socket();
    wait_until("GW1 active", wait(), || {
        status(&socket).is_some_and(|s| active(&s, "GW1"))
    });
    let rules = rtr.try_ip(&["rule"]).unwrap();
    assert!(rules.contains("fwmark"), "no policy rule: {rules}");

    // Source of a UDP/5001 frame from `sport`, as the WAN peer sees it.
    let source = |f: &[u8]| [f[14 + 12], f[14 + 13], f[14 + 14], f[14 + 15]];
    let from =
        |sport: u16| move |f: &[u8]| udp_dport(f) == Some(5001) && udp_sport(f) == Some(sport);
    net.send(42001, 5001);
    let f = wait_for(sniff1.as_raw_fd(), wait(), from(42001))
        .expect("UDP/5001 did not leave through GW1");
    assert_eq!(source(&f), [192, 0, 2, 1], "translated on WAN1");

    blackhole(wan1);
    wait_until("GW2 active after GW1's blackhole", wait(), || {
        status(&socket).is_some_and(|s| active(&s, "GW2"))
    });
    net.send(42002, 5001);
    let f =
        wait_for(sniff2.as_raw_fd(), wait(), from(42002)).expect("a new flow did not move to GW2");
    assert_eq!(source(&f), [192, 0, 2, 5], "translated on WAN2");

    // The first flow moves to GW2 too. Its conntrack entry holds WAN1's NAT binding: the
    // packet that moves it leaves with WAN1's address; the agent then deletes the entry, and
    // the flow's next packets open a new one, translated to WAN2's. (Static `snat`: with
    // `masquerade` the kernel itself drops a packet whose connection was masqueraded on
    // another interface and removes the entry.)
    // The deletion is asynchronous (data plane → ring → the agent's conntrack thread): the
    // next packet waits until it is counted.
    let deleted = || metric(rtr, r#"xwan_conntrack_resets_total{result="deleted"}"#).unwrap_or(0.0);
    let mut sources = Vec::new();
    for _ in 0..20 {
        net.send(42001, 5001);
        if let Some(f) = wait_for(sniff2.as_raw_fd(), Duration::from_millis(500), from(42001)) {
            sources.push(source(&f));
            if source(&f) == [192, 0, 2, 5] {
                break;
            }
            wait_until("the moved flow's conntrack entry deleted", wait(), || {
                deleted() >= 1.0
            });
        }
    }
    assert_eq!(
        sources.last(),
        Some(&[192, 0, 2, 5]),
        "the moved flow never left WAN2 with WAN2's address: {sources:?}"
    );
    assert!(
        sources.len() <= 2,
        "more than the moving packet left with WAN1's address: {sources:?}"
    );

    let chain = rtr.exec("nft", &["list", "chain", "inet", "fw", "forward"]);
    let packets = |what: &str| -> u64 {
        let line = chain.lines().find(|l| l.contains(what)).unwrap();
        line.split("packets ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Nobody answers these UDP flows, so each of their packets is `new` to conntrack and
    // passes the policy's LAN rule: one of each flow, then those the moved flow sent on WAN2.
    assert_eq!(
        packets("iifname \"l0\""),
        2 + sources.len() as u64,
        "{chain}{sources:?}"
    );
    assert_eq!(packets("invalid"), 0, "{chain}");

    agent.stop(&dir, wait());
    assert_nothing_left(rtr, &dir);
    let table = rtr.try_ip(&["route", "show", "table", "30000"]).unwrap();
    assert!(
        table.trim().is_empty(),
        "route left in GW1's table: {table}"
    );
}

/// The fast path of confirmed flows behind the standard stateful forward policy (no NAT): a
/// UDP exchange and a TCP connection are offloaded once conntrack confirms them (their
/// packets are then counted `steer_offload`), every reply still passes the firewall as
/// established (none invalid, though the kernel no longer sees the offloaded direction), and
/// TCP's close takes its flow back to the kernel path.
#[test]
fn netfilter_forwarding_offloads_confirmed_flows_behind_the_hosts_firewall() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.86.0");
    let rtr = &net.rtr;
    stateful_firewall(rtr);
    // No NAT: FAR routes the LAN back through the router.
    net.wan1
        .ip(&["route", "add", "10.86.0.0/24", "via", "192.0.2.1"]);
    let (dir, mut agent) = start_offloading_agent(&net, "offload");
    let echoes = Echoes::start(&net);

    // UDP: conntrack assures a stream still answered two seconds after its first packet.
    echoes.offload_udp(rtr, &dir, "agent.log");
    echoes.udp_on_the_fast_path(rtr);

    // TCP: offloaded once established; its replies (on the kernel path, acknowledging
    // segments the kernel did not see) are still established, not invalid. The close: FIN is
    // conntrack's to see, and the flow goes back to the kernel path.
    echoes.tcp_offloaded_and_closed(rtr, &dir);
    assert_eq!(offloads(rtr, "failed"), 0.0);

    // A new agent (`xwan stop` took the flow table with it) finds the UDP connection
    // confirmed in conntrack's dump, before its flow has an entry: the flow is offloaded once
    // its next packet has made one.
    agent.stop(&dir, wait());
    agent = Agent::start(rtr, &dir, "agent2.log");
    wait_until("GW1 active again", wait(), || {
        status(&dir.socket()).is_some_and(|s| active(&s, "GW1"))
    });
    echoes.offload_udp(rtr, &dir, "agent2.log");
    assert_eq!(echoes.exchange(5), 5);
    echoes.stop();

    assert_no_invalid(rtr);
    agent.stop(&dir, wait());
    assert_nothing_left(rtr, &dir);
}

/// The fast path of masqueraded flows: behind the standard stateful forward policy with
/// masquerade on WAN1 (to ports 30000-30099, so conntrack changes the port too), a UDP
/// exchange and a TCP connection are offloaded with conntrack's translation. The servers
/// see one source, WAN1's address and conntrack's port, before and after the offload; a
/// wrong address, port or checksum would leave the echoes unanswered.
#[test]
fn netfilter_forwarding_offloads_masqueraded_flows_with_conntracks_translation() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.87.0");
    let rtr = &net.rtr;
    stateful_firewall(rtr);
    rtr.exec(
        "nft",
        &["add table ip nat; \
           add chain ip nat post { type nat hook postrouting priority 100; }; \
           add rule ip nat post oifname \"w1\" meta l4proto { tcp, udp } \
             masquerade to :30000-30099"],
    );
    // FAR answers to the masqueraded address only: no route to the LAN.
    let (dir, mut agent) = start_offloading_agent(&net, "offload-nat");
    let echoes = Echoes::start(&net);
    let masqueraded = |peer: &SocketAddr| {
        peer.ip() == std::net::IpAddr::from([192, 0, 2, 1]) && (30000..30100).contains(&peer.port())
    };

    echoes.offload_udp(rtr, &dir, "agent.log");
    echoes.udp_on_the_fast_path(rtr);
    let peers = echoes.udp_peers();
    assert!(masqueraded(&peers[0]), "not masqueraded: {}", peers[0]);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "the fast path translated differently from conntrack: {peers:?}"
    );

    // TCP: offloaded once established, translated as its handshake was.
    let peer = echoes.tcp_offloaded_and_closed(rtr, &dir);
    assert!(masqueraded(&peer), "not masqueraded: {peer}");
    assert_eq!(offloads(rtr, "failed"), 0.0);
    echoes.stop();

    assert_no_invalid(rtr);
    agent.stop(&dir, wait());
    drop(agent);
    assert_nothing_left(rtr, &dir);
}

/// An agent in `net`'s router with `forwarding = "netfilter"` and a rule taking every
/// packet (TCP too) to router R; returned once GW1 is Active. FAR answers from behind WAN1.
fn start_offloading_agent(net: &TwoWan, name: &str) -> (AgentDir, Agent) {
    net.wan1
        .ip(&["addr", "add", &format!("{FAR}/32"), "dev", "lo"]);
    let dir = AgentDir::new(name);
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.agent.push("forwarding = \"netfilter\"".into());
    config.rules.push(Rule {
        name: "everything",
        udp_port: None,
        block: false,
    });
    dir.write(&config);
    let agent = Agent::start(&net.rtr, &dir, "agent.log");
    wait_until("GW1 active", wait(), || {
        status(&dir.socket()).is_some_and(|s| active(&s, "GW1"))
    });
    (dir, agent)
}

/// Packets the data plane steered on the fast path (-1: no scrape).
fn steered_fast(rtr: &Netns) -> f64 {
    metric(rtr, "xwan_datapath_packets_total{reason=\"steer_offload\"}").unwrap_or(-1.0)
}

/// Flows offloaded, returned or failed (`event`), from the agent's metrics (-1: no scrape).
fn offloads(rtr: &Netns, event: &str) -> f64 {
    metric(
        rtr,
        &format!("xwan_flow_offloads_total{{event=\"{event}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// No packet counted invalid by the stateful firewall's forward policy.
fn assert_no_invalid(rtr: &Netns) {
    let chain = rtr.exec("nft", &["list", "chain", "inet", "fw", "forward"]);
    let invalid = chain.lines().find(|l| l.contains("invalid")).unwrap();
    assert!(invalid.contains("packets 0 "), "{chain}");
}

/// Echo servers at FAR behind WAN1 (UDP 5001, recording each datagram's source; TCP 5002,
/// one connection) and the LAN host's UDP client (port 42101), whose packets carry complete
/// checksums as from a wire (a veth passes on a local sender's unfinished one, which XDP
/// forwarding would not finish).
struct Echoes<'a> {
    net: &'a TwoWan,
    udp: UdpSocket,
    udp_peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    udp_server: Option<JoinHandle<()>>,
    tcp_server: Mutex<Option<JoinHandle<(SocketAddr, usize)>>>,
}

impl<'a> Echoes<'a> {
    fn start(net: &'a TwoWan) -> Self {
        // Sockets keep the namespace they were made in.
        let udp_echo = net
            .wan1
            .run(|| UdpSocket::bind(SocketAddrV4::new(FAR, 5001)).unwrap());
        let tcp_echo = net
            .wan1
            .run(|| TcpListener::bind(SocketAddrV4::new(FAR, 5002)).unwrap());
        udp_echo
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let udp_peers = Arc::new(Mutex::new(Vec::new()));
        let udp_server = {
            let (stop, peers) = (stop.clone(), udp_peers.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = udp_echo.recv_from(&mut buf) {
                        peers.lock().unwrap().push(from);
                        udp_echo.send_to(&buf[..n], from).unwrap();
                    }
                }
            })
        };
        // Serves one connection until the client closes it: its peer and the bytes echoed.
        let tcp_server = std::thread::spawn(move || {
            let (mut conn, peer) = tcp_echo.accept().unwrap();
            let mut buf = [0u8; 2048];
            let mut echoed = 0;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
                echoed += n;
            }
            (peer, echoed)
        });
        net.lan
            .run(|| xwan_testkit::set_feature("h0", xwan_testkit::Feature::TxChecksum, false))
            .unwrap();
        let udp = net
            .lan
            .run(|| UdpSocket::bind(SocketAddrV4::new(net.host, 42101)).unwrap());
        udp.connect(SocketAddrV4::new(FAR, 5001)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        Echoes {
            net,
            udp,
            udp_peers,
            stop,
            udp_server: Some(udp_server),
            tcp_server: Mutex::new(Some(tcp_server)),
        }
    }

    /// `n` UDP echoes, one at a time: how many were answered.
    fn exchange(&self, n: usize) -> usize {
        let mut buf = [0u8; 64];
        (0..n)
            .filter(|_| {
                self.udp.send(b"xwan").unwrap();
                self.udp.recv(&mut buf).is_ok()
            })
            .count()
    }

    /// Echoes every 100 ms, each answered, until the agent counts one more flow offloaded
    /// (bounded: 8 s). The agent's `log` is shown on failure.
    fn offload_udp(&self, rtr: &Netns, dir: &AgentDir, log: &str) {
        let goal = offloads(rtr, "offloaded") + 1.0;
        let log = || dir.log(log);
        let t = Instant::now();
        while offloads(rtr, "offloaded") < goal && t.elapsed() < Duration::from_secs(8) {
            assert_eq!(self.exchange(1), 1, "a UDP echo went unanswered\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            offloads(rtr, "offloaded"),
            goal,
            "the UDP flow was never offloaded\n{}",
            log()
        );
    }

    /// 20 UDP echoes, each answered and its packet counted on the fast path.
    fn udp_on_the_fast_path(&self, rtr: &Netns) {
        let before = steered_fast(rtr);
        assert_eq!(
            self.exchange(20),
            20,
            "offloaded UDP echoes went unanswered"
        );
        assert!(
            steered_fast(rtr) >= before + 20.0,
            "the UDP flow's packets did not take the fast path: {before} → {}",
            steered_fast(rtr)
        );
    }

    /// One TCP connection from the LAN host: 30 echoes of 100 bytes, offloaded on the way
    /// (at least 20 segments on the fast path), then closed, its flow back on the kernel
    /// path. The server's view of its peer.
    fn tcp_offloaded_and_closed(&self, rtr: &Netns, dir: &AgentDir) -> SocketAddr {
        let (offloaded, returned) = (offloads(rtr, "offloaded"), offloads(rtr, "returned"));
        let mut tcp = self
            .net
            .lan
            .run(|| TcpStream::connect(SocketAddrV4::new(FAR, 5002)).unwrap());
        tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let before = steered_fast(rtr);
        let mut buf = [0u8; 100];
        for i in 0..30u8 {
            tcp.write_all(&[i; 100]).unwrap();
            tcp.read_exact(&mut buf)
                .unwrap_or_else(|e| panic!("TCP echo {i}: {e}\n{}", dir.log("agent.log")));
            assert_eq!(buf, [i; 100]);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            offloads(rtr, "offloaded"),
            offloaded + 1.0,
            "TCP never offloaded"
        );
        assert!(
            steered_fast(rtr) >= before + 20.0,
            "the TCP flow's segments did not take the fast path: {before} → {}",
            steered_fast(rtr)
        );
        drop(tcp);
        wait_until("TCP's flow back on the kernel path", wait(), || {
            offloads(rtr, "returned") > returned
        });
        let server = self.tcp_server.lock().unwrap().take();
        let (peer, echoed) = server.expect("one TCP connection").join().unwrap();
        assert_eq!(
            echoed, 3000,
            "every segment reached the server on one connection"
        );
        peer
    }

    /// The sources of the UDP datagrams the server received, in order.
    fn udp_peers(&self) -> Vec<SocketAddr> {
        self.udp_peers.lock().unwrap().clone()
    }

    /// Stops the UDP server (a panic in it fails the test).
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.udp_server.take().unwrap().join().unwrap();
    }
}

impl Drop for Echoes<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// IPv4 forwarding on in `rtr`, behind the standard stateful forward policy (table `inet fw`,
/// LAN `l0`): established and related accepted, invalid counted and dropped, new connections
/// from the LAN counted and accepted, the rest dropped.
fn stateful_firewall(rtr: &Netns) {
    rtr.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    rtr.exec(
        "nft",
        &["add table inet fw; \
           add chain inet fw forward { type filter hook forward priority 0; policy drop; }; \
           add rule inet fw forward ct state established,related accept; \
           add rule inet fw forward ct state invalid counter drop; \
           add rule inet fw forward iifname \"l0\" counter accept"],
    );
}

/// Two mains of equal weight: 400 new UDP flows are shared out about half and half, and
/// `xwan status` shows it beside the configured 50/50 once its window has two samples of the
/// counters (they are read every 10 s); `xwan_gateway_new_flows_total` counts the same flows.
#[test]
fn status_measures_the_distribution_of_new_flows() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.87.0");
    let (dir, mut agent, _) = net.start_agent("measured", Roles::BothMain, wait());
    let socket = dir.socket();
    for sport in 41_000..41_400 {
        net.send(sport, 5001);
    }
    let took = wait_until(
        "a measured window with the 400 flows",
        Duration::from_secs(25),
        || status(&socket).is_some_and(|s| s.routers[0].new_flows.is_some_and(|n| n >= 400)),
    );
    let s = status(&socket).unwrap();
    let r = &s.routers[0];
    println!(
        "measured after {took:?} over {:?} s: {:?}",
        r.window_s,
        (r.gateways.iter())
            .map(|g| (
                &g.name,
                g.new_flows,
                g.measured_distribution,
                g.distribution
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.new_flows, Some(400), "one new flow per datagram");
    for g in &r.gateways {
        let m = g.measured_distribution.unwrap();
        assert!(
            (m - g.distribution).abs() < 10.0,
            "{}: {m} measured",
            g.name
        );
    }
    let text = xwan::status::render(&s, SystemTime::now());
    assert!(text.contains(", 400 new flows: GW1 "), "{text}");
    let counted: f64 = ["GW1", "GW2"]
        .iter()
        .map(|g| {
            metric(
                &net.rtr,
                &format!("xwan_gateway_new_flows_total{{gateway=\"{g}\"}}"),
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(counted, 400.0);
    agent.stop(&dir, wait());
}
