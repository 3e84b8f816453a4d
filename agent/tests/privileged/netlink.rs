//! rtnetlink in a private network namespace: carrier loss on a veth is seen as an event (the
//! agent marks gateways Unavailable on it), TUN devices read as L3, neighbour MACs and
//! addresses are found; the `netfilter` mode's policy routing (a table and a `fwmark` rule
//! per gateway) routes marked packets through their gateway, is rewritten only where it
//! differs, refuses a route of someone else's in its tables, and is removed entirely; the
//! next hops it names are kept resolved by the kernel (managed neighbour entries).
//!
//! Needs root. The namespace is removed even when the test fails.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    netns::{Netns, tun},
};
use futures::StreamExt;
use xwan::netlink::{
    Event, Netlink,
    neighbours::Neighbour,
    policy::{GatewayRoute, Policy, PolicyError},
    subscribe,
};

const WAIT: Duration = Duration::from_secs(3);

#[test]
fn interfaces_neighbours_addresses_and_carrier_events() {
    let _turn = support::exclusive();
    let ns = Netns::new("nl");
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "a0"]);
    ns.ip(&["link", "set", "a0", "up"]);
    let _tun = ns.run(|| tun("t0"));

    ns.block_on(async {
            let nl = Netlink::new().unwrap();
            let a0 = nl.interface("a0").await.unwrap().expect("a0 exists");
            assert!(a0.l2 && a0.mac.is_some() && a0.mtu == 1500);
            assert!(a0.admin_up && !a0.carrier, "a veth has no carrier while its peer is down");
            let t0 = nl.interface("t0").await.unwrap().expect("t0 exists");
            assert!(!t0.l2 && t0.mac.is_none(), "a TUN device is an L3 device: {t0:?}");
            assert_eq!(nl.interface("nope0").await.unwrap(), None);

            let addrs = nl.addresses().await.unwrap();
            assert!(addrs.contains(&(a0.ifindex, "10.9.0.1".parse().unwrap(), 24)), "{addrs:?}");

            let mut events = subscribe().unwrap();
            let carrier = |up: bool| move |e: &Event| matches!(e, Event::Link(i) if i.name == "a0" && i.carrier == up);

            let t = Instant::now();
            ns.ip(&["link", "set", "b0", "up"]);
            wait(&mut events, carrier(true)).await.expect("carrier-up event for a0");
            let t = Instant::now().max(t);
            ns.ip(&["link", "set", "b0", "down"]);
            wait(&mut events, carrier(false)).await.expect("carrier-loss event for a0");
            println!("carrier loss seen {:?} after `ip link set down`", t.elapsed());

            let peer: IpAddr = "10.9.0.2".parse().unwrap();
            ns.ip(&["neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:05", "dev", "a0", "nud", "permanent"]);
            let mac = Some([2, 0, 0, 0, 0, 5]);
            let ev = wait(&mut events, |e| matches!(e, Event::Neighbour { ip, .. } if *ip == peer)).await;
            assert_eq!(ev, Some(Event::Neighbour { ifindex: a0.ifindex, ip: peer, mac }));
            assert_eq!(nl.neighbour(a0.ifindex, peer).await.unwrap(), mac);
            assert_eq!(nl.neighbour(a0.ifindex, "10.9.0.3".parse().unwrap()).await.unwrap(), None);
    });
}

/// Notifications lost to a full socket buffer are not silent: the subscription says so
/// ([`Event::Resync`]), and the agent reads the kernel again (`daemon::resync_kernel`).
#[test]
fn lost_notifications_come_as_a_resync() {
    let _turn = support::shared(module_path!());
    let ns = Netns::new("nlov");
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "a0"]);
    ns.ip(&["link", "set", "a0", "up"]);
    ns.block_on(async {
        // The smallest buffer the kernel allows, not read while the neighbours change: the
        // runtime's only thread is busy here, so the subscription cannot drain its socket.
        let mut events = xwan::netlink::subscribe_buffered(1).unwrap();
        for i in 2..102 {
            let (ip, mac) = (format!("10.9.0.{i}"), format!("02:00:00:00:01:{i:02x}"));
            ns.ip(&[
                "neigh",
                "add",
                &ip,
                "lladdr",
                &mac,
                "dev",
                "a0",
                "nud",
                "permanent",
            ]);
        }
        let resync = wait(&mut events, |e| *e == Event::Resync).await;
        assert_eq!(
            resync,
            Some(Event::Resync),
            "no resync after 100 unread neighbour changes"
        );
    });
}

#[test]
fn policy_routing_routes_marked_packets_through_their_gateway_and_is_removed() {
    let _turn = support::shared(module_path!());
    let ns = Netns::new("nlpol");
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "192.0.2.1/29", "dev", "a0"]);
    ns.ip(&["link", "set", "a0", "up"]);
    ns.ip(&["link", "set", "b0", "up"]);
    let _tun = ns.run(|| tun("t0"));
    ns.ip(&["link", "set", "t0", "up"]);
    let route_get = |args: &[&str]| ns.try_ip(&[&["route", "get"], args].concat()).unwrap();
    let rules = || ns.try_ip(&["rule"]).unwrap() + &ns.try_ip(&["-6", "rule"]).unwrap();

    ns.block_on(async {
        let nl = Netlink::new().unwrap();
        let a0 = nl.interface("a0").await.unwrap().unwrap().ifindex;
        let t0 = nl.interface("t0").await.unwrap().unwrap().ifindex;
        // An Ethernet gateway with an IPv6 next hop too, a tunnel, an IPv4-only Ethernet one.
        let gw1 = GatewayRoute::ethernet(
            0x1_0000,
            1001,
            a0,
            "192.0.2.2".parse().unwrap(),
            Some("fe80::2".parse().unwrap()),
        );
        let policy = |gateways: Vec<GatewayRoute>| Policy {
            priority: 10_000,
            mask: 0x0fff_0000,
            gateways,
            neighbours: Vec::new(),
        };
        // A table id above 255 too: it only fits the attribute.
        let p = policy(vec![
            gw1,
            GatewayRoute::tunnel(0x2_0000, 70_000, t0),
            GatewayRoute::ethernet(0x3_0000, 1003, a0, "192.0.2.3".parse().unwrap(), None),
        ]);
        let c = nl.sync_policy(&p).await.unwrap();
        assert_eq!((c.add_rules.len(), c.set_routes.len()), (5, 5), "{c:?}");

        // The kernel routes each mark through its gateway, and unmarked packets as before.
        let via = route_get(&["198.51.100.7", "mark", "0x10000"]);
        assert!(via.contains("via 192.0.2.2 dev a0 table 1001"), "{via}");
        let dev = route_get(&["198.51.100.7", "mark", "0x20000"]);
        assert!(dev.contains("dev t0 table 70000"), "{dev}");
        let dev6 = ns
            .try_ip(&["-6", "route", "get", "2001:db8::7", "mark", "0x20000"])
            .unwrap();
        assert!(
            dev6.contains("dev t0") && dev6.contains("table 70000"),
            "{dev6}"
        );
        let via6 = ns
            .try_ip(&["-6", "route", "get", "2001:db8::7", "mark", "0x10000"])
            .unwrap();
        assert!(via6.contains("via fe80::2 dev a0 table 1001"), "{via6}");
        let plain = ns.try_ip(&["route", "get", "198.51.100.7"]);
        assert!(plain.is_err(), "no default route in main: {plain:?}");
        // The IPv4-only gateway's table routes IPv4 only (no IPv6 route via an IPv4 next
        // hop): no IPv6 rule for its mark, its IPv6 packets follow the main table.
        let rules6 = ns.try_ip(&["-6", "rule"]).unwrap();
        assert!(
            rules6.contains("0x10000") && rules6.contains("0x20000") && !rules6.contains("0x30000"),
            "{rules6}"
        );

        // Nothing differs: nothing is written (a rewritten route invalidates cached ones).
        assert!(nl.sync_policy(&p).await.unwrap().is_empty());

        // A route of someone else's in one of xwan's tables is an error naming it.
        ns.ip(&["route", "add", "10.0.0.0/8", "dev", "a0", "table", "1001"]);
        let e = nl.sync_policy(&p).await.unwrap_err();
        assert!(
            matches!(e, PolicyError::ForeignRoute { table: 1001, .. }),
            "{e}"
        );
        ns.ip(&["route", "del", "10.0.0.0/8", "dev", "a0", "table", "1001"]);

        // One gateway less: only its rules and routes go.
        let q = policy(vec![p.gateways[0], p.gateways[2]]);
        let c = nl.sync_policy(&q).await.unwrap();
        assert_eq!(
            (
                c.delete_rules.len(),
                c.delete_routes.len(),
                c.add_rules.len()
            ),
            (2, 2, 0),
            "{c:?}"
        );
        assert!(!rules().contains("0x20000"), "{}", rules());

        // Removed: no rule or route of xwan's is left, the kernel's own rules stay.
        let c = nl.remove_policy().await.unwrap();
        assert_eq!(
            (c.delete_rules.len(), c.delete_routes.len()),
            (3, 3),
            "{c:?}"
        );
        let left = rules();
        assert!(
            !left.contains("fwmark") && left.contains("lookup main"),
            "{left}"
        );
        assert_eq!(
            ns.try_ip(&["route", "show", "table", "1001"])
                .unwrap()
                .trim(),
            ""
        );
        assert!(nl.remove_policy().await.unwrap().is_empty());
    });
}

/// The next hops a policy names are kept resolved by the kernel (managed entries, `proto
/// 120`) with no traffic of the kernel's to them; an existing dynamic entry is adopted in
/// place (its MAC kept), the operator's static entry is never touched, and removing the
/// policy removes only xwan's.
#[test]
fn managed_neighbours_are_resolved_adopted_and_removed() {
    let _turn = support::shared(module_path!());
    let ns = Netns::new("nlnb");
    let peer = Netns::new("nlnbp");
    ns.ip(&[
        "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", &peer.name,
    ]);
    ns.ip(&["addr", "add", "192.0.2.1/29", "dev", "a0"]);
    ns.ip(&["link", "set", "a0", "up"]);
    for a in ["192.0.2.2/29", "192.0.2.3/29", "192.0.2.4/29"] {
        peer.ip(&["addr", "add", a, "dev", "b0"]);
    }
    peer.ip(&["link", "set", "b0", "up"]);
    // .3: the kernel's own dynamic entry, resolved by a ping; .4: the operator's static one.
    ns.exec("ping", &["-c1", "-W2", "192.0.2.3"]);
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.4",
        "dev",
        "a0",
        "lladdr",
        "02:00:00:00:00:04",
    ]);
    let show = |a: &str| ns.try_ip(&["-d", "neigh", "show", a, "dev", "a0"]).unwrap();
    let peer_mac = peer.mac("b0");
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        peer_mac[0], peer_mac[1], peer_mac[2], peer_mac[3], peer_mac[4], peer_mac[5]
    );

    ns.block_on(async {
        let nl = Netlink::new().unwrap();
        let a0 = nl.interface("a0").await.unwrap().unwrap().ifindex;
        let hop = |a: &str| Neighbour {
            ifindex: a0,
            address: a.parse().unwrap(),
        };
        let p = Policy {
            priority: 10_000,
            mask: 0x0fff_0000,
            gateways: Vec::new(),
            neighbours: vec![hop("192.0.2.2"), hop("192.0.2.3"), hop("192.0.2.4")],
        };
        let c = nl.sync_policy(&p).await.unwrap();
        assert_eq!(
            c.neighbours.manage,
            vec![hop("192.0.2.2"), hop("192.0.2.3")],
            "the static entry is not taken over"
        );
        // Resolved with nothing sent to it but the kernel's own ARP.
        let t = Instant::now();
        while !show("192.0.2.2").contains(&mac) && t.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for a in ["192.0.2.2", "192.0.2.3"] {
            let s = show(a);
            assert!(
                s.contains(&mac) && s.contains("managed") && s.contains("proto 120"),
                "{a}: {s}"
            );
        }
        let fixed = show("192.0.2.4");
        assert!(
            fixed.contains("PERMANENT") && !fixed.contains("managed"),
            "{fixed}"
        );
        assert_eq!(
            nl.neighbour(a0, "192.0.2.2".parse().unwrap())
                .await
                .unwrap(),
            Some(peer_mac)
        );
        // Nothing differs: nothing is written.
        assert!(nl.sync_policy(&p).await.unwrap().is_empty());

        // One next hop less: only it is released.
        let q = Policy {
            neighbours: vec![hop("192.0.2.3"), hop("192.0.2.4")],
            ..p.clone()
        };
        let c = nl.sync_policy(&q).await.unwrap();
        assert_eq!(c.neighbours.release, vec![hop("192.0.2.2")], "{c:?}");
        assert_eq!(show("192.0.2.2").trim(), "");

        // Removed: xwan's entries go, the operator's stays.
        let c = nl.remove_policy().await.unwrap();
        assert_eq!(c.neighbours.release, vec![hop("192.0.2.3")], "{c:?}");
        assert!(!show("192.0.2.3").contains("managed"));
        assert!(show("192.0.2.4").contains("PERMANENT"));
        assert!(nl.remove_policy().await.unwrap().is_empty());
    });
}

async fn wait(
    events: &mut futures::channel::mpsc::UnboundedReceiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if want(&e) {
                return Some(e);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The conntrack reset of the `netfilter` mode: a moved flow's entry is deleted, translated
/// (masqueraded) or not; a missing one is no error; the flow's next packet opens a new one.
/// A masqueraded connection's original direction is found from its reply direction.
#[test]
fn conntrack_reset_deletes_a_moved_flows_entry_translated_or_not() {
    use std::net::UdpSocket;
    use xwan::netlink::conntrack::{Conntrack, Reset};
    use xwan_common::FlowKey;

    let _turn = support::shared(module_path!());
    let ns = Netns::new("nlct");
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "192.0.2.1/30", "dev", "a0"]);
    ns.ip(&["addr", "add", "10.9.9.9/32", "dev", "lo"]);
    for dev in ["a0", "b0", "lo"] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "a0",
        "nud",
        "permanent",
    ]);
    // Masquerade what leaves a0 from another source than a0's own.
    let ruleset = "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    \
                   oifname \"a0\" ip saddr != 192.0.2.1 masquerade\n  }\n}\n";
    let file = std::env::temp_dir().join(format!("xwan-ct-{}.nft", std::process::id()));
    std::fs::write(&file, ruleset).unwrap();
    ns.exec("nft", &["-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file).ok();

    let key = |src: [u8; 4], sport: u16| FlowKey {
        src: [u32::from_ne_bytes(src), 0, 0, 0],
        dst: [u32::from_ne_bytes([192, 0, 2, 2]), 0, 0, 0],
        sport,
        dport: 5353,
        proto: 17,
        family: 4,
        _pad: 0,
        ifindex: 0,
    };
    ns.run(|| {
        // Distinct fixed ports: masquerade keeps the source port, so the reply direction is
        // known.
        let send = |from: &str, port: u16| {
            let s = UdpSocket::bind(format!("{from}:{port}")).unwrap();
            s.send_to(b"x", "192.0.2.2:5353").unwrap();
            s
        };
        let (nat_port, plain_port) = (40001, 40002);
        let _a = send("10.9.9.9", nat_port);
        let _b = send("192.0.2.1", plain_port);
        let mut ct = Conntrack::new().unwrap();
        let nat = key([10, 9, 9, 9], nat_port);
        let plain = key([192, 0, 2, 1], plain_port);
        let reply = |k: &FlowKey| FlowKey {
            src: k.dst,
            dst: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
            sport: k.dport,
            dport: k.sport,
            ..*k
        };
        assert_eq!(ct.original(&reply(&nat)).unwrap(), Some(nat), "masqueraded");
        assert_eq!(ct.original(&reply(&plain)).unwrap(), Some(plain));
        assert_eq!(
            ct.original(&FlowKey {
                sport: 9,
                ..reply(&nat)
            })
            .unwrap(),
            None,
            "no such connection"
        );
        assert_eq!(ct.reset(&plain).unwrap(), Reset::Deleted);
        assert_eq!(ct.reset(&plain).unwrap(), Reset::Absent, "gone");
        assert_eq!(ct.reset(&nat).unwrap(), Reset::Deleted);
        assert_eq!(ct.reset(&nat).unwrap(), Reset::Absent, "gone");
        let icmp = FlowKey { proto: 1, ..nat };
        assert_eq!(ct.reset(&icmp).unwrap(), Reset::Unsupported);
        // The flow's next packet opens a new, translated entry.
        _a.send_to(b"y", "192.0.2.2:5353").unwrap();
        assert_eq!(ct.reset(&nat).unwrap(), Reset::Deleted);
    });
}

/// What the fast path of confirmed flows reads from conntrack: a TCP connection's events
/// (created, established and assured, destroyed) with both tuples and its TCP state, the
/// same entry in a dump, and window tracking turned off on it.
#[test]
fn conntrack_events_and_dump_follow_a_connection_and_be_liberal_reaches_it() {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };
    use xwan::netlink::conntrack::{Change, Conntrack, Events, IPS_ASSURED, TCP_ESTABLISHED};

    let _turn = support::shared(module_path!());
    let ns = Netns::new("nlev");
    ns.ip(&["link", "set", "lo", "up"]);
    // Conntrack runs in a namespace only where a rule needs it.
    ns.exec(
        "nft",
        &[
            "add table inet t; add chain inet t in { type filter hook input priority 0; }; \
           add rule inet t in ct state invalid counter drop",
        ],
    );
    ns.run(|| {
        let mut events = Events::subscribe().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        let cport = client.local_addr().unwrap().port();
        let ours = |k: &xwan_common::FlowKey| k.proto == 6 && k.sport == cport && k.dport == port;

        // Created, then established and assured, each as an update of the entry.
        let mut seen = Vec::new();
        let t = Instant::now();
        while t.elapsed() < WAIT
            && !seen.iter().any(|c| {
                matches!(c, Change::Updated(e)
                    if e.status & IPS_ASSURED != 0 && e.tcp_state == Some(TCP_ESTABLISHED))
            })
        {
            seen.extend(events.receive().unwrap().into_iter().filter(
                |c| matches!(c, Change::Updated(e) | Change::Destroyed(e) if ours(&e.original)),
            ));
        }
        let Some(Change::Updated(e)) = seen.last().copied() else {
            panic!("no event of the connection: {seen:?}");
        };
        assert_eq!((e.reply.sport, e.reply.dport), (port, cport), "{e:?}");
        assert!(
            e.status & IPS_ASSURED != 0 && e.tcp_state == Some(TCP_ESTABLISHED),
            "{e:?}"
        );

        let mut ct = Conntrack::new().unwrap();
        let dumped: Vec<_> = ct
            .dump()
            .unwrap()
            .into_iter()
            .filter(|d| ours(&d.original))
            .collect();
        assert_eq!(dumped.len(), 1, "the dump holds the connection once");
        assert_eq!(dumped[0].original, e.original);
        assert!(
            ct.be_liberal(&e.original).unwrap(),
            "the entry takes the flags"
        );
        let gone = xwan_common::FlowKey {
            sport: 1,
            ..e.original
        };
        assert!(!ct.be_liberal(&gone).unwrap(), "no such entry");

        // Deleted: a destroy event.
        ct.reset(&e.original).unwrap();
        let t = Instant::now();
        let mut destroyed = false;
        while t.elapsed() < WAIT && !destroyed {
            destroyed = events
                .receive()
                .unwrap()
                .iter()
                .any(|c| matches!(c, Change::Destroyed(d) if ours(&d.original)));
        }
        assert!(destroyed, "no destroy event");
    });
}
