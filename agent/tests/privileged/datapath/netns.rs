//! The programs attached to real interfaces in network namespaces: a LAN host sends UDP
//! through a router namespace running xwan; packets must leave through the TUN device
//! (tunnel gateway, XDP → TC `bpf_redirect`) or the WAN veth (Ethernet gateway, MAC rewrite
//! and `XDP_REDIRECT`) as the rules say, and a reply to a connection that arrived over the
//! tunnel must go back out through that link's return gateway. A frame forging the tunnel
//! hand-off's tag is dropped, not steered. A redirect the egress does not take (a veth peer
//! without XDP, an interface down) counts as dropped, not steered. The `netfilter` mode's
//! kernel path forwards through the host's stateful firewall and NAT by the gateway's mark.
//!
//! Needs root. Namespaces are private to the test and removed even when it fails.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    frames::{self, V4},
    netns::{Netns, packet_socket, tun, wait_for},
    plans::ports,
};
use xwan::{
    datapath::{Datapath, EgressWatch, TRACE_DIR, TestBpffs},
    netlink::{
        Netlink,
        policy::{GatewayRoute, Policy},
    },
};
use xwan_common::{
    Counter, IFACE_ARRAY_SIZE, MarkLayout,
    plan::{Action, Gateway, GatewayKind, Iface, Link, Plan, RouterTable, Rule},
    reason, tunnel_tag,
};

const WAIT: Duration = Duration::from_secs(3);

fn udp_rule(dport: u16, router: u16, counter: u16) -> Rule {
    let mut r = Rule::any(Action::Route(router));
    r.criteria.protocols = vec![17];
    r.criteria.dst_ports = vec![ports(dport, dport)];
    r.counter = counter;
    r
}

/// UDP to `dport` with IPv4 TTL `ttl`, parsed from an IP packet: (dst, dport, ttl).
fn udp_of(ip: &[u8]) -> Option<(Ipv4Addr, u16, u8)> {
    if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let dport = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
    Some((dst, dport, ip[8]))
}

/// LAN host 10.77.0.2 (h0) — router l0 10.77.0.1; router w0 192.0.2.1 — WAN peer p0
/// 192.0.2.2; a TUN device t0 in the router. Each test gives l0 and w0 ifindexes of its own:
/// the egress programs of every test's datapath see every test's redirects, and must tell
/// their own from the others'.
struct Topology {
    lan: Netns,
    router: Netns,
    wan: Netns,
    tun: std::fs::File,
    plan: Plan,
}

impl Topology {
    fn new(l0_index: u32) -> Topology {
        let lan = Netns::new("lan");
        let router = Netns::new("rtr");
        let wan = Netns::new("wan");
        let (l0, w0) = (l0_index.to_string(), (l0_index + 1).to_string());
        router.ip(&[
            "link", "add", "l0", "index", &l0, "type", "veth", "peer", "name", "h0", "netns",
            &lan.name,
        ]);
        router.ip(&[
            "link", "add", "w0", "index", &w0, "type", "veth", "peer", "name", "p0", "netns",
            &wan.name,
        ]);
        router.ip(&["addr", "add", "10.77.0.1/24", "dev", "l0"]);
        router.ip(&["addr", "add", "192.0.2.1/30", "dev", "w0"]);
        lan.ip(&["addr", "add", "10.77.0.2/24", "dev", "h0"]);
        wan.ip(&["addr", "add", "192.0.2.2/30", "dev", "p0"]);
        for (ns, dev) in [(&router, "l0"), (&router, "w0"), (&lan, "h0"), (&wan, "p0")] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        lan.ip(&["route", "add", "default", "via", "10.77.0.1"]);
        let tun = router.run(|| tun("t0"));
        router.ip(&["addr", "add", "172.16.1.1/30", "dev", "t0"]);
        router.ip(&["link", "set", "t0", "up"]);
        let plan = Plan {
            ifaces: vec![Iface {
                ifindex: router.ifindex("l0"),
                mac: router.mac("l0"),
            }],
            local_addrs: vec![
                "10.77.0.1".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                "172.16.1.1".parse().unwrap(),
            ],
            rules: vec![udp_rule(5001, 0, 0), udp_rule(5002, 1, 1)],
            routers: vec![RouterTable::single(0), RouterTable::single(1)],
            gateways: vec![
                Gateway {
                    id: 0,
                    kind: GatewayKind::Tunnel,
                    ifindex: router.ifindex("t0"),
                    mtu: 1500,
                    ready: true,
                },
                Gateway {
                    id: 1,
                    kind: GatewayKind::Ethernet {
                        next_hop_mac: wan.mac("p0"),
                        egress_mac: router.mac("w0"),
                    },
                    ifindex: router.ifindex("w0"),
                    mtu: 1500,
                    ready: true,
                },
            ],
            links: vec![Link {
                ifindex: router.ifindex("t0"),
                l2: false,
                return_gateway: 1,
            }],
            flow_idle_ns: 0,
            marks: None,
        };
        Topology {
            lan,
            router,
            wan,
            tun,
            plan,
        }
    }

    /// Sends one UDP datagram from the LAN host.
    fn send(&self, dport: u16, sport: u16, dst: Ipv4Addr) {
        self.lan.run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), sport)).unwrap();
            s.send_to(b"xwan", SocketAddrV4::new(dst, dport)).unwrap();
        })
    }
}

const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

#[test]
fn packets_leave_through_the_gateway_the_rules_choose() {
    let _turn = support::shared(module_path!());
    // An ifindex above IFACE_ARRAY_SIZE: the LAN program finds l0 in the hash, not the
    // array (the other datapath tests run on lo, ifindex 1).
    let t = Topology::new(100_000);
    let Topology {
        lan,
        router,
        wan,
        tun: tun_dev,
        plan,
    } = &t;
    assert!(router.ifindex("l0") >= IFACE_ARRAY_SIZE);

    let fs = TestBpffs::new().unwrap();
    let mut dp = Datapath::load(fs.path()).unwrap();
    let report = router.run(|| {
        dp.apply(plan).unwrap();
        let r = dp.attach_lan("l0").unwrap();
        dp.attach_link("t0").unwrap();
        r
    });
    println!("attached: {report:?}");
    // The WAN peer must accept redirected frames: veth delivers XDP_REDIRECTs only to a peer
    // with an XDP program.
    wan.run(|| dp.attach_pass("p0").unwrap());
    let sniff = wan.run(|| packet_socket("p0"));

    // Tunnel gateway: out of t0, TTL decremented.
    t.send(5001, 40001, FAR);
    let got = wait_for(tun_dev.as_raw_fd(), WAIT, |p| {
        udp_of(p).is_some_and(|u| u.1 == 5001)
    });
    let got = got.expect("UDP/5001 did not leave through the tunnel device");
    assert_eq!(udp_of(&got), Some((FAR, 5001, 63)));

    // Ethernet gateway: out of w0 to the next hop's MAC.
    t.send(5002, 40002, FAR);
    let frame = wait_for(sniff.as_raw_fd(), WAIT, |f| {
        f.len() > 14 && udp_of(&f[14..]).is_some_and(|u| u.1 == 5002)
    })
    .expect("UDP/5002 did not leave through the WAN veth");
    assert_eq!(&frame[0..6], &wan.mac("p0"));
    assert_eq!(&frame[6..12], &router.mac("w0"));
    assert_eq!(udp_of(&frame[14..]), Some((FAR, 5002, 63)));

    // Return route: a connection arrives over the tunnel (written into the TUN device), and
    // the LAN host's reply, which no rule matches, leaves through the link's return gateway.
    let peer = Ipv4Addr::new(198, 51, 100, 20);
    let mut inbound = V4::new(peer, Ipv4Addr::new(10, 77, 0, 2), 17);
    inbound.ttl = 30;
    let pkt = inbound.packet(&frames::l4(17, 7000, 7001, b"hello"));
    // SAFETY: writing a buffer we own to the TUN fd.
    let n = unsafe { libc::write(tun_dev.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
    assert_eq!(n, pkt.len() as isize, "inject into t0");
    t.send(7000, 7001, peer);
    let frame = wait_for(sniff.as_raw_fd(), WAIT, |f| {
        f.len() > 14 && udp_of(&f[14..]).is_some_and(|u| u.1 == 7000)
    })
    .expect("the reply did not leave through the return gateway");
    assert_eq!(udp_of(&frame[14..]), Some((peer, 7000, 63)));

    // A LAN host forging the tunnel tag (the source MAC xwan_tc_steer trusts) for traffic no
    // rule steers: dropped in XDP, so it never reaches the tunnel unclassified.
    let mut forged = router.mac("l0").to_vec();
    forged.extend_from_slice(&tunnel_tag(router.ifindex("t0")));
    forged.extend_from_slice(&frames::ETH_P_IP.to_be_bytes());
    forged.extend(
        V4::new(Ipv4Addr::new(10, 77, 0, 2), FAR, 17)
            .packet(&frames::l4(17, 40009, 5009, b"forged")),
    );
    let raw = lan.run(|| packet_socket("h0"));
    // SAFETY: sending a buffer we own on a bound packet socket.
    let n = unsafe { libc::send(raw.as_raw_fd(), forged.as_ptr().cast(), forged.len(), 0) };
    assert_eq!(n, forged.len() as isize, "send the forged frame");
    let leaked = wait_for(tun_dev.as_raw_fd(), Duration::from_millis(500), |p| {
        udp_of(p).is_some_and(|u| u.1 == 5009)
    });
    assert_eq!(leaked, None, "a forged tag reached the tunnel");

    let reasons = dp.reason_counters().unwrap();
    assert_eq!(reasons[reason::DROP_FORGED_TAG as usize].packets, 1);
    assert!(reasons[reason::STEER_CLASSIFIED as usize].packets >= 2);
    assert_eq!(reasons[reason::STEER_RETURN as usize].packets, 1);
    let gws = dp.gateway_counters().unwrap();
    assert!(gws[0].packets >= 1 && gws[1].packets >= 2);

    router.run(|| dp.detach_all().unwrap());
}

/// The veth trap: a WAN veth whose peer has no XDP program (nor GRO) takes no frame
/// redirected into it. Those frames count as dropped (`drop_redirect` or `drop_xmit`, as the
/// kernel refuses them) and as the gateway's failures, not as steered; so do frames refused
/// because the egress is down (`drop_redirect`) and frames its driver drops at transmit (the
/// peer down: `drop_xmit`). Once the peer takes redirects, the same traffic counts as
/// steered and arrives.
#[test]
fn a_redirect_the_egress_does_not_take_counts_as_dropped_not_steered() {
    let _turn = support::shared(module_path!());
    let t = Topology::new(100_010);
    let (router, wan) = (&t.router, &t.wan);
    let fs = TestBpffs::new().unwrap();
    let mut dp = Datapath::load(fs.path()).unwrap();
    let report = router.run(|| {
        dp.apply(&t.plan).unwrap();
        dp.attach_lan("l0").unwrap()
    });
    // Only native XDP queues redirected frames for the egress driver (generic XDP hands the
    // kernel an skb, which a veth delivers).
    assert!(report.to_string().contains("native"), "{report}");
    assert_eq!(dp.watch_egress(), EgressWatch::Counting);
    assert!(fs.path().join(TRACE_DIR).join("xwan_trace_xmit").exists());

    let reasons = |dp: &Datapath| dp.reason_counters().unwrap();
    // Waits (bounded) until `count` of the reason counters reaches `at_least`.
    let settle = |dp: &Datapath, count: &dyn Fn(&[Counter]) -> u64, at_least: u64| {
        let deadline = Instant::now() + WAIT;
        while count(&reasons(dp)) < at_least && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        reasons(dp)
    };
    let packets = |code: u32| move |r: &[Counter]| r[code as usize].packets;
    let frame_len = |n: u64| n * (14 + 20 + 8 + 4);

    // The veth trap. Kernels with XDP features (6.3+) refuse the redirect up front, as the
    // veth does not advertise XDP transmit (`drop_redirect`); older ones queue the frames and
    // the veth drops them at transmit (`drop_xmit`). Either way: dropped, not steered.
    for sport in 41_000..41_005 {
        t.send(5002, sport, FAR);
    }
    let failed = |r: &[Counter]| {
        r[reason::DROP_XMIT as usize].packets + r[reason::DROP_REDIRECT as usize].packets
    };
    let r = settle(&dp, &failed, 5);
    println!(
        "veth trap: drop_xmit {}, drop_redirect {}",
        r[reason::DROP_XMIT as usize].packets,
        r[reason::DROP_REDIRECT as usize].packets
    );
    assert_eq!(failed(&r), 5);
    let bytes = r[reason::DROP_XMIT as usize].bytes + r[reason::DROP_REDIRECT as usize].bytes;
    assert_eq!(bytes, frame_len(5));
    assert_eq!(r[reason::STEER_CLASSIFIED as usize].packets, 0);
    assert_eq!(r[reason::STEER_FLOW as usize].packets, 0);
    assert_eq!(dp.gateway_counters().unwrap()[1].packets, 0);
    assert_eq!(dp.gateway_failures().unwrap()[1].packets, 5);
    let (xmit, refused) = (
        r[reason::DROP_XMIT as usize].packets,
        r[reason::DROP_REDIRECT as usize].packets,
    );

    // Refused: the egress is down.
    router.ip(&["link", "set", "w0", "down"]);
    for sport in 41_010..41_012 {
        t.send(5002, sport, FAR);
    }
    let r = settle(&dp, &packets(reason::DROP_REDIRECT), refused + 2);
    assert_eq!(r[reason::DROP_REDIRECT as usize].packets, refused + 2);
    assert_eq!(dp.gateway_failures().unwrap()[1].packets, 7);
    router.ip(&["link", "set", "w0", "up"]);

    // Dropped at transmit: the peer has an XDP program (so the veth advertises XDP
    // transmit) but is down (so its queue is gone).
    wan.run(|| dp.attach_pass("p0").unwrap());
    wan.ip(&["link", "set", "p0", "down"]);
    for sport in 41_030..41_034 {
        t.send(5002, sport, FAR);
    }
    let r = settle(&dp, &packets(reason::DROP_XMIT), xmit + 4);
    assert_eq!(r[reason::DROP_XMIT as usize].packets, xmit + 4);
    assert_eq!(r[reason::STEER_CLASSIFIED as usize].packets, 0);
    assert_eq!(dp.gateway_failures().unwrap()[1].packets, 11);
    wan.ip(&["link", "set", "p0", "up"]);

    // Taken: the peer has an XDP program and is up.
    let sniff = wan.run(|| packet_socket("p0"));
    for sport in 41_020..41_023 {
        t.send(5002, sport, FAR);
    }
    for _ in 0..3 {
        wait_for(sniff.as_raw_fd(), WAIT, |f| {
            f.len() > 14 && udp_of(&f[14..]).is_some_and(|u| u.1 == 5002)
        })
        .expect("UDP/5002 did not leave once the peer takes redirects");
    }
    let r = settle(&dp, &packets(reason::STEER_CLASSIFIED), 3);
    assert_eq!(r[reason::STEER_CLASSIFIED as usize].packets, 3);
    assert_eq!(r[reason::DROP_XMIT as usize].packets, xmit + 4);
    assert_eq!(r[reason::DROP_REDIRECT as usize].packets, refused + 2);
    assert_eq!(dp.gateway_counters().unwrap()[1].packets, 3);
    assert_eq!(dp.gateway_failures().unwrap()[1].packets, 11);

    router.run(|| dp.detach_all().unwrap());
    assert!(!fs.path().join(TRACE_DIR).exists(), "tracepoint links left");
}

/// The `netfilter` mode's kernel path on real interfaces, under the standard stateful
/// forward policy and masquerade: xwan chooses the gateway (XDP tags, TC marks, xwan's
/// policy routing sends each mark through its gateway, the main table has no route at all),
/// and the kernel forwards, so the firewall sees the connection open, masquerade applies on
/// the Ethernet WAN, and the reply comes back to the LAN host as established.
#[test]
fn the_kernel_path_goes_through_the_firewall_and_nat_by_the_gateways_mark() {
    let _turn = support::shared(module_path!());
    let t = Topology::new(100_020);
    let Topology {
        lan,
        router,
        wan,
        tun: tun_dev,
        plan,
    } = &t;
    let mut plan = plan.clone();
    for g in &mut plan.gateways {
        g.kind = GatewayKind::KERNEL;
    }
    let layout = MarkLayout::of_mask(0x0fff_0000, 2).unwrap();
    plan.marks = Some(layout);
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let ruleset = r#"
table inet fw {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state invalid counter drop
    iifname "l0" counter accept
    counter
  }
}
table ip nat {
  chain post { type nat hook postrouting priority 100; oifname "w0" masquerade; }
}
"#;
    let file = std::env::temp_dir().join(format!("xwan-kpath-{}.nft", std::process::id()));
    std::fs::write(&file, ruleset).unwrap();
    router.exec("nft", &["-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file).ok();

    let (t0, w0) = (router.ifindex("t0"), router.ifindex("w0"));
    router.block_on(async {
        let nl = Netlink::new().unwrap();
        let policy = Policy {
            priority: 10_000,
            mask: layout.mask(),
            gateways: vec![
                GatewayRoute::tunnel(layout.mark(0), 1000, t0),
                GatewayRoute::ethernet(
                    layout.mark(1),
                    1001,
                    w0,
                    "192.0.2.2".parse().unwrap(),
                    None,
                ),
            ],
            neighbours: Vec::new(),
        };
        nl.sync_policy(&policy).await.unwrap();
    });
    let fs = TestBpffs::new().unwrap();
    let mut dp = Datapath::load(fs.path()).unwrap();
    router.run(|| {
        dp.apply(&plan).unwrap();
        dp.attach_lan("l0").unwrap();
    });

    // UDP/5002 → gateway 1 (w0) to a server behind the WAN peer (only the mark routes
    // there): masqueraded, and the server's answer reaches the LAN host through conntrack.
    wan.ip(&["addr", "add", "198.51.100.30/32", "dev", "p0"]);
    let host = lan.run(|| UdpSocket::bind("10.77.0.2:40002").unwrap());
    host.set_read_timeout(Some(WAIT)).unwrap();
    let peer = wan.run(|| UdpSocket::bind("198.51.100.30:5002").unwrap());
    peer.set_read_timeout(Some(WAIT)).unwrap();
    host.send_to(b"out", "198.51.100.30:5002").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("UDP/5002 did not reach the WAN peer through the kernel path");
    assert_eq!(&buf[..n], b"out");
    assert_eq!(from.ip(), Ipv4Addr::new(192, 0, 2, 1), "masquerade applied");
    peer.send_to(b"back", from).unwrap();
    let (n, from) = host
        .recv_from(&mut buf)
        .expect("the reply did not come back through conntrack");
    assert_eq!((&buf[..n], from.port()), (&b"back"[..], 5002));

    // UDP/5001 → gateway 0 (t0): out of the tunnel device with the kernel's TTL decrement.
    t.send(5001, 40001, FAR);
    let got = wait_for(tun_dev.as_raw_fd(), WAIT, |p| {
        udp_of(p).is_some_and(|u| u.1 == 5001)
    })
    .expect("UDP/5001 did not leave through the tunnel device");
    assert_eq!(udp_of(&got), Some((FAR, 5001, 63)));

    // The firewall saw both connections open; none was invalid or dropped by the policy.
    let counters = router.exec("nft", &["list", "chain", "inet", "fw", "forward"]);
    let count = |what: &str| {
        let line = counters.lines().find(|l| l.contains(what)).unwrap();
        let packets = line.split("packets ").nth(1).unwrap();
        packets.split(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(count("iifname \"l0\""), 2, "{counters}");
    assert_eq!(count("invalid"), 0, "{counters}");
    let reasons = dp.reason_counters().unwrap();
    assert_eq!(reasons[reason::STEER_CLASSIFIED as usize].packets, 2);
    router.run(|| dp.detach_all().unwrap());
}
