//! Crafted packets for each data-plane feature, run through the real `xwan_xdp_lan`
//! (BPF_PROG_TEST_RUN). Every packet is also checked against the reference model
//! (`Harness::check`); the assertions here pin the behaviour a user relies on.
//!
//! Needs root (loads eBPF).

use std::{net::Ipv4Addr, time::Duration};

use crate::support::{
    self,
    frames::{self, Ext, V4, V6},
    harness::{Harness, LO, TC_ACT_OK, TC_ACT_REDIRECT, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    plans::{
        HOST_MAC, LAN_MAC, ethernet_gateway, ip, net, no_gateway, ports, tunnel_gateway, weighted,
    },
};
use xwan_common::{
    FLOW_REFRESH_NS, MarkLayout, csum, kernel_tag,
    model::XdpAction,
    plan::{Action, GatewayKind, HashMode, Iface, Plan, RouterTable, Rule},
    reason, tunnel_tag,
};

const TUN_IFINDEX: u32 = 1001;

/// The fast path's next-hop MAC and the egress interface's own, in [`offloading_plan`].
const HOP: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
const EGRESS: [u8; 6] = [0x02, 0, 0, 0, 0x0e, 0x01];

/// [`plan`] in the `netfilter` mode (its marks), gateway 1 on the kernel path with a fast
/// path out of [`EGRESS`] to [`HOP`] for IPv4, and for IPv6 too when `v6`.
fn offloading_plan(v6: bool) -> Plan {
    let mut p = plan();
    p.gateways[1].kind = GatewayKind::Kernel {
        offload: Some(xwan_common::plan::Offload {
            egress_mac: EGRESS,
            v4: Some(HOP),
            v6: v6.then_some(HOP),
        }),
    };
    p.marks = MarkLayout::of_mask(0x0fff_0000, 2);
    p
}

/// Small plan with one router per gateway kind and each action.
fn plan() -> Plan {
    let mut rules = Vec::new();
    let mut add = |counter: u16, action: Action, f: &dyn Fn(&mut Rule)| {
        let mut r = Rule::any(action);
        r.counter = counter;
        f(&mut r);
        rules.push(r);
    };
    add(0, Action::Route(0), &|r| {
        r.criteria.protocols = vec![17];
        r.criteria.dst_ports = vec![ports(5001, 5001)];
    });
    add(1, Action::Route(1), &|r| {
        r.criteria.protocols = vec![6];
        r.criteria.dst_ports = vec![ports(443, 443)];
    });
    add(2, Action::Block, &|r| {
        r.criteria.dst_ports = vec![ports(53, 53)]
    });
    add(3, Action::Route(1), &|r| {
        r.criteria.dscp = vec![46];
        r.set_dscp = Some(18);
    });
    add(4, Action::Route(2), &|r| {
        r.criteria.dst_ports = vec![ports(9, 9)]
    });
    add(5, Action::Route(3), &|r| {
        r.criteria.dst_ports = vec![ports(7, 7)]
    });
    add(6, Action::Route(4), &|r| {
        r.criteria.dst_ports = vec![ports(6000, 6999)]
    });
    add(7, Action::Pass, &|r| r.criteria.protocols = vec![17]);
    add(8, Action::Route(0), &|r| {
        r.criteria.dst_ports = vec![ports(22, 22)]
    });
    Plan {
        ifaces: vec![Iface {
            ifindex: LO,
            mac: LAN_MAC,
        }],
        local_addrs: vec![ip("10.0.0.1"), ip("fd00::1")],
        rules,
        routers: vec![
            RouterTable::single(0),
            RouterTable::single(1),
            no_gateway(false),
            no_gateway(true),
            weighted(&[(0, 1), (1, 1)], &[0, 1], HashMode::Connection, false),
        ],
        gateways: vec![
            tunnel_gateway(0, TUN_IFINDEX, 1400),
            ethernet_gateway(1, LO, 1500),
        ],
        links: vec![],
        flow_idle_ns: 0,
        marks: None,
    }
}

fn udp4(dst: &str) -> V4 {
    V4::new(Ipv4Addr::new(10, 1, 0, 7), dst.parse().unwrap(), 17)
}

fn frame4(h: &V4, sport: u16, dport: u16, vlans: &[u16]) -> Vec<u8> {
    let ip = h.packet(&frames::l4(h.proto, sport, dport, &[1, 2, 3, 4]));
    frames::eth(LAN_MAC, HOST_MAC, vlans, frames::ETH_P_IP, &ip)
}

fn frame6(h: &V6, sport: u16, dport: u16) -> Vec<u8> {
    let ip = h.packet(&frames::l4(h.proto, sport, dport, &[1, 2, 3, 4]));
    frames::eth(LAN_MAC, HOST_MAC, &[], frames::ETH_P_IPV6, &ip)
}

fn assert_ipv4_checksum(frame: &[u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    assert_eq!(
        csum::ipv4_header_sum(&frame[14..14 + ihl]),
        0,
        "IPv4 header checksum is wrong"
    );
}

#[test]
fn tunnel_gateway_gets_its_tag_ttl_decrement_and_vlan_strip() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    for (sport, vlans) in [
        (40000, &[][..]),
        (40001, &[frames::ETH_P_8021Q]),
        (40002, &[frames::ETH_P_8021AD, frames::ETH_P_8021Q]),
    ] {
        let f = frame4(&udp4("203.0.113.9"), sport, 5001, vlans);
        let out = h.check(&f);
        assert_eq!(
            out.reason,
            reason::STEER_CLASSIFIED,
            "a new flow is classified"
        );
        assert_eq!(out.gateway, Some(0));
        assert_eq!(
            h.check(&f).reason,
            reason::STEER_FLOW,
            "the next packet hits the flow table"
        );
        let k = h.kernel(&f);
        assert_eq!(k.action, XDP_PASS);
        assert!(
            k.meta.is_empty(),
            "no XDP metadata: not every kernel allows it"
        );
        assert_eq!(
            k.frame[6..12],
            tunnel_tag(TUN_IFINDEX),
            "the tunnel in the source MAC"
        );
        assert_eq!(
            h.tc_steer(&k.frame).retval,
            TC_ACT_REDIRECT,
            "xwan_tc_steer redirects what XDP tagged"
        );
        assert_eq!(
            k.frame.len(),
            f.len() - 4 * vlans.len(),
            "VLAN tags removed"
        );
        assert_eq!(&k.frame[12..14], &frames::ETH_P_IP.to_be_bytes());
        assert_eq!(&k.frame[..6], &f[..6], "destination MAC kept for a tunnel");
        assert_eq!(k.frame[14 + 8], 63, "TTL decremented");
        assert_ipv4_checksum(&k.frame);
    }
}

/// The `netfilter` mode's kernel path: the gateway in the destination MAC for
/// `xwan_tc_steer`, which puts the LAN MAC back and marks the packet; nothing else changes
/// (the kernel forwards it: TTL, VLAN tags and MTU are its business); a mark set before
/// keeps its other bits.
#[test]
fn kernel_path_gateway_is_tagged_then_marked_for_the_kernel() {
    let _turn = support::shared(module_path!());
    let mut p = plan();
    p.gateways[1].kind = GatewayKind::KERNEL;
    p.gateways[1].mtu = 100;
    p.marks = MarkLayout::of_mask(0x0fff_0000, 2);
    let mut h = Harness::new(p);
    for (sport, vlans) in [(40000, &[][..]), (40001, &[frames::ETH_P_8021Q])] {
        // DSCP 46: router 1 (gateway 1), imposing DSCP 18; TTL 1 and above the "MTU".
        let mut v4 = udp4("198.51.100.1");
        v4.tos = 46 << 2;
        v4.ttl = 1;
        let f = frame4(&v4, sport, 1234, vlans);
        let out = h.check(&f);
        assert_eq!(
            (out.reason, out.gateway, out.mark),
            (reason::STEER_CLASSIFIED, Some(1), Some(0x2_0000))
        );
        assert_eq!(
            &out.frame[..6],
            &kernel_tag(1),
            "the gateway in the destination MAC"
        );
        let l3 = 14 + 4 * vlans.len();
        assert_eq!(out.frame.len(), f.len(), "VLAN tags kept");
        assert_eq!(
            &out.frame[6..l3],
            &f[6..l3],
            "source MAC and VLAN tags kept"
        );
        assert_eq!(out.frame[l3 + 8], 1, "TTL left to the kernel");
        assert_eq!(out.frame[l3 + 1] >> 2, 18, "DSCP imposed");
        assert_eq!(
            csum::ipv4_header_sum(&out.frame[l3..l3 + 20]),
            0,
            "IPv4 checksum"
        );
        let tc = h.tc_steer(&out.frame);
        assert_eq!((tc.retval, tc.mark), (TC_ACT_OK, 0x2_0000));
        assert_eq!(&tc.frame[..6], &LAN_MAC, "the LAN MAC back");
        assert_eq!(h.check(&f).reason, reason::STEER_FLOW);
    }
    // A frame arriving with the tag is forged: dropped before anything else.
    let mut forged = frame4(&udp4("203.0.113.9"), 40002, 5001, &[]);
    forged[..6].copy_from_slice(&kernel_tag(1));
    assert_eq!(h.check(&forged).reason, reason::DROP_FORGED_TAG);
}

/// The `netfilter` mode's fast path: a flow conntrack confirmed (the agent sets its
/// offload flag) skips the kernel on its kernel-path gateway, forwarded as through an
/// Ethernet gateway to the next hop of its family; a TCP segment that opens, closes or
/// resets the connection, a family without a known next hop, and a flow that moved or was
/// cleared take the kernel path. From the flow table and from the flow cache alike.
#[test]
fn a_confirmed_flow_skips_the_kernel_on_its_gateways_fast_path() {
    use xwan_common::FLOW_OFFLOADED;
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(offloading_plan(false));
    let flags = |h: &Harness, f: &[u8]| {
        let key = xwan_common::model::parse_ethernet(f).unwrap().flow_key(LO);
        h.model.flows().get(&key).map(|v| v.flags)
    };

    // UDP with DSCP 46: router 1, gateway 1, DSCP 18 imposed.
    let mut v4 = udp4("198.51.100.1");
    v4.tos = 46 << 2;
    let f = frame4(&v4, 40000, 1234, &[]);
    assert!(
        !h.set_offloaded(&f, true),
        "no entry before the first packet"
    );
    let out = h.check(&f);
    assert_eq!(
        (out.reason, out.mark),
        (reason::STEER_CLASSIFIED, Some(0x2_0000))
    );
    assert!(h.set_offloaded(&f, true));
    for hit in ["flow table", "flow cache"] {
        let out = h.check(&f);
        assert_eq!(
            (out.action, out.reason, out.gateway, out.mark),
            (XdpAction::Redirect, reason::STEER_OFFLOAD, Some(1), None),
            "{hit}"
        );
        assert_eq!(&out.frame[..12], &[HOP, EGRESS].concat()[..], "{hit}: MACs");
        assert_eq!(out.frame[14 + 8], 63, "{hit}: TTL decremented");
        assert_eq!(out.frame[15] >> 2, 18, "{hit}: DSCP imposed");
        assert_ipv4_checksum(&out.frame);
    }
    assert_eq!(flags(&h, &f), Some(FLOW_OFFLOADED));
    // TTL 1: the kernel answers, as for any forwarded packet.
    let mut last_hop = udp4("198.51.100.1");
    last_hop.tos = 46 << 2;
    last_hop.ttl = 1;
    assert_eq!(
        h.check(&frame4(&last_hop, 40000, 1234, &[])).reason,
        reason::PASS_TTL
    );
    // Cleared (conntrack forgot the flow): the kernel path again, from the next packet.
    assert!(h.set_offloaded(&f, false));
    let out = h.check(&f);
    assert_eq!((out.reason, out.mark), (reason::STEER_FLOW, Some(0x2_0000)));
    assert_eq!(
        h.check(&f).reason,
        reason::STEER_FLOW,
        "not from a stale cache entry"
    );

    // TCP to 443: router 1. SYN, FIN and RST are conntrack's to see; the rest skips it.
    let tcp = V4::new(
        Ipv4Addr::new(10, 1, 0, 8),
        "198.51.100.2".parse().unwrap(),
        6,
    );
    let segment = |flags: u8| {
        let mut f = frame4(&tcp, 40001, 443, &[]);
        f[14 + 20 + 13] = flags;
        f
    };
    assert_eq!(h.check(&segment(0x02)).reason, reason::STEER_CLASSIFIED);
    assert!(h.set_offloaded(&segment(0x10), true));
    for (flags, want) in [
        (0x10, reason::STEER_OFFLOAD),
        (0x18, reason::STEER_OFFLOAD),
        (0x11, reason::STEER_FLOW),
        (0x04, reason::STEER_FLOW),
        (0x12, reason::STEER_FLOW),
        (0x10, reason::STEER_OFFLOAD),
    ] {
        assert_eq!(h.check(&segment(flags)).reason, want, "flags {flags:#04x}");
    }
    // A segment too short to show its flags is not known to be harmless.
    let mut short = segment(0x10);
    short.truncate(14 + 20 + 12);
    let ip_len = (short.len() - 14) as u16;
    short[16..18].copy_from_slice(&ip_len.to_be_bytes());
    short[24..26].copy_from_slice(&[0, 0]);
    let sum = csum::ipv4_header_sum(&short[14..34]);
    short[24..26].copy_from_slice(&(!sum).to_be_bytes());
    assert_eq!(h.check(&short).reason, reason::STEER_FLOW);

    // IPv6: the gateway has no IPv6 next hop known, so the kernel path, flag kept.
    let mut v6 = V6::new(
        "fd00::7".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
        17,
    );
    v6.tclass = 46 << 2;
    let f6 = frame6(&v6, 40002, 1234);
    assert_eq!(h.check(&f6).reason, reason::STEER_CLASSIFIED);
    assert!(h.set_offloaded(&f6, true));
    assert_eq!(h.check(&f6).reason, reason::STEER_FLOW);
    assert_eq!(flags(&h, &f6), Some(FLOW_OFFLOADED));

    // The flow moves (router 1 now uses gateway 0, a tunnel) and back: its conntrack entry
    // is reset, so it is no longer offloaded.
    let tcp_ack = segment(0x10);
    h.set_router(1, RouterTable::single(0));
    assert_eq!(h.check(&tcp_ack).gateway, Some(0));
    assert_eq!(flags(&h, &tcp_ack), Some(0), "the move drops the flag");
    h.set_router(1, RouterTable::single(1));
    let out = h.check(&tcp_ack);
    assert_eq!((out.gateway, out.reason), (Some(1), reason::STEER_FLOW));
}

/// A kernel-path flow that changes gateway is recorded once, with the LAN side's 5-tuple
/// (the original direction of its conntrack entry), for the agent's conntrack reset; a flow
/// that stays, a new flow, and XDP forwarding record nothing.
#[test]
fn a_kernel_path_flow_that_changes_gateway_is_recorded_once() {
    let _turn = support::shared(module_path!());
    for kernel_path in [true, false] {
        let mut p = plan();
        if kernel_path {
            for g in &mut p.gateways {
                g.kind = GatewayKind::KERNEL;
            }
            p.marks = MarkLayout::of_mask(0x0fff_0000, 2);
        }
        let mut h = Harness::new(p);
        // Router 4 balances 50/50 over gateways 0 and 1.
        let flows: Vec<Vec<u8>> = (0..32)
            .map(|i| frame4(&udp4("203.0.113.9"), 30000 + i, 6000, &[]))
            .collect();
        let first: Vec<u16> = flows.iter().map(|f| h.check(f).gateway.unwrap()).collect();
        assert!(first.contains(&0) && first.contains(&1));
        assert!(h.last_moved.is_empty(), "a new flow moves nowhere");

        // Gateway 0 leaves: its flows move to gateway 1, each recorded once.
        h.set_router(4, RouterTable::single(1));
        for (i, (f, g)) in flows.iter().zip(&first).enumerate() {
            assert_eq!(h.check(f).gateway, Some(1));
            if *g == 0 && kernel_path {
                assert_eq!(h.last_moved.len(), 1, "flow {i}");
                let m = h.last_moved[0];
                assert_eq!((m.from, m.to), (0, 1));
                let key = (m.key.sport, m.key.dport, m.key.proto, m.key.family);
                assert_eq!(key, (30000 + i as u16, 6000, 17, 4));
                assert_eq!(m.key.src[0], u32::from_ne_bytes([10, 1, 0, 7]));
                assert_eq!(m.key.ifindex, LO);
            } else {
                assert!(
                    h.last_moved.is_empty(),
                    "flow {i} stayed: {:?}",
                    h.last_moved
                );
            }
            h.check(f);
            assert!(h.last_moved.is_empty(), "flow {i} recorded twice");
        }
    }
}

#[test]
fn ethernet_gateway_rewrites_macs_and_redirects() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let f = frame4(
        &V4::new(
            Ipv4Addr::new(10, 1, 0, 7),
            Ipv4Addr::new(198, 51, 100, 1),
            6,
        ),
        40000,
        443,
        &[],
    );
    let out = h.check(&f);
    assert_eq!(out.action, XdpAction::Redirect);
    assert_eq!(out.gateway, Some(1));
    assert_eq!(&out.frame[0..6], &[0xaa, 0, 0, 0, 0, 1], "next hop's MAC");
    assert_eq!(&out.frame[6..12], &[0xbb, 0, 0, 0, 0, 1], "egress MAC");
    assert_eq!(out.frame[14 + 8], 63);
    assert_ipv4_checksum(&out.frame);

    let v6 = V6::new(
        "2001:db8::7".parse().unwrap(),
        "2001:db8:9::1".parse().unwrap(),
        6,
    );
    let out = h.check(&frame6(&v6, 40000, 443));
    assert_eq!(out.action, XdpAction::Redirect);
    assert_eq!(out.frame[14 + 7], 63, "hop limit decremented");
    assert_eq!(h.kernel(&frame6(&v6, 40000, 443)).action, XDP_REDIRECT);
}

#[test]
fn dscp_is_imposed_with_ecn_kept_and_checksum_fixed() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let mut v4 = V4::new(
        Ipv4Addr::new(10, 1, 0, 7),
        Ipv4Addr::new(198, 51, 100, 1),
        17,
    );
    v4.tos = 46 << 2 | 0b01;
    let out = h.check(&frame4(&v4, 40000, 1234, &[]));
    assert_eq!(out.rule, Some(3));
    assert_eq!(out.frame[15], 18 << 2 | 0b01);
    assert_ipv4_checksum(&out.frame);

    let mut v6 = V6::new(
        "2001:db8::7".parse().unwrap(),
        "2001:db8:9::1".parse().unwrap(),
        17,
    );
    v6.tclass = 46 << 2 | 0b10;
    let out = h.check(&frame6(&v6, 40000, 1234));
    let tclass = ((out.frame[14] & 0x0f) << 4) | (out.frame[15] >> 4);
    assert_eq!(tclass, 18 << 2 | 0b10);
}

#[test]
fn block_drops_and_counts_rule_and_reason() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let f = frame4(&udp4("203.0.113.9"), 40000, 53, &[]);
    for _ in 0..3 {
        assert_eq!(h.check(&f).action, XdpAction::Drop);
    }
    assert_eq!(h.kernel(&f).action, XDP_DROP);
    let rules = h.dp.rule_counters().unwrap();
    assert_eq!(rules[2].packets, 4);
    assert_eq!(rules[2].bytes, 4 * f.len() as u64);
    assert_eq!(h.dp.reason_counter(reason::DROP_RULE).unwrap().packets, 4);
}

#[test]
fn kernel_gets_what_it_must_see() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    // TTL 1: the kernel answers with time exceeded.
    let v4 = V4 {
        ttl: 1,
        ..udp4("203.0.113.9")
    };
    assert_eq!(
        h.check(&frame4(&v4, 40000, 5001, &[])).reason,
        reason::PASS_TTL
    );
    // Larger than the tunnel's MTU (1400): the kernel fragments or says "too big".
    let big = frames::eth(
        LAN_MAC,
        HOST_MAC,
        &[],
        frames::ETH_P_IP,
        &udp4("203.0.113.9").packet(&frames::l4(17, 40000, 5001, &[0; 1400])),
    );
    assert_eq!(h.check(&big).reason, reason::PASS_TOO_BIG);
    // Local delivery: SSH to the box is not steered by the port-22 rule.
    let ssh = frame4(
        &V4::new(Ipv4Addr::new(10, 1, 0, 7), Ipv4Addr::new(10, 0, 0, 1), 6),
        40000,
        22,
        &[],
    );
    assert_eq!(h.check(&ssh).reason, reason::PASS_LOCAL);
    // Broadcast / other MACs, ARP, multicast.
    let mut bcast = frame4(&udp4("203.0.113.9"), 40000, 5001, &[]);
    bcast[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(h.check(&bcast).reason, reason::PASS_NOT_FOR_US);
    let arp = frames::eth(LAN_MAC, HOST_MAC, &[], frames::ETH_P_ARP, &[0; 28]);
    assert_eq!(h.check(&arp).reason, reason::PASS_NOT_IP);
    assert_eq!(
        h.check(&frame4(&udp4("224.0.0.9"), 1, 5001, &[])).reason,
        reason::PASS_NOT_FOR_US
    );
    let nd = V6::new(
        "fe80::1".parse().unwrap(),
        "ff02::1:ff00:1".parse().unwrap(),
        58,
    );
    assert_eq!(h.check(&frame6(&nd, 0, 0)).reason, reason::PASS_NOT_FOR_US);
    // Three VLAN tags: not parsed, the kernel decides.
    let f = frame4(&udp4("203.0.113.9"), 40000, 5001, &[0x8100, 0x8100, 0x8100]);
    assert_eq!(h.check(&f).reason, reason::PASS_NOT_IP);
}

#[test]
fn non_first_fragments_never_match_port_criteria() {
    let _turn = support::shared(module_path!());
    // Bytes where the ports would be say 5001, but this is a non-first fragment.
    let v4 = V4 {
        frag_offset: 100,
        ..udp4("203.0.113.9")
    };
    let mut h = Harness::new(plan());
    let out = h.check(&frame4(&v4, 40000, 5001, &[]));
    assert_eq!(out.rule, Some(7), "only the port-less UDP rule may match");
    assert_eq!(out.reason, reason::PASS_RULE);
    // The first fragment carries the ports and is steered.
    let first = V4 {
        more_fragments: true,
        ..udp4("203.0.113.9")
    };
    assert_eq!(h.check(&frame4(&first, 40000, 5001, &[])).rule, Some(0));

    let mut v6 = V6::new(
        "2001:db8::7".parse().unwrap(),
        "2001:db8:9::1".parse().unwrap(),
        17,
    );
    v6.exts = vec![Ext::Fragment {
        offset: 12,
        more: false,
    }];
    assert_eq!(h.check(&frame6(&v6, 40000, 5001)).rule, Some(7));
    v6.exts = vec![
        Ext::HopByHop(1),
        Ext::DestOpts(0),
        Ext::Fragment {
            offset: 0,
            more: true,
        },
    ];
    assert_eq!(
        h.check(&frame6(&v6, 40000, 5001)).rule,
        Some(0),
        "walked 3 headers to the ports"
    );
    v6.exts = vec![Ext::DestOpts(0); 7];
    assert_eq!(
        h.check(&frame6(&v6, 40000, 5001)).reason,
        reason::PASS_MALFORMED
    );
}

#[test]
fn ipv4_options_and_bad_ihl() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let v4 = V4 {
        options: vec![1; 12],
        ..udp4("203.0.113.9")
    };
    let out = h.check(&frame4(&v4, 40000, 5001, &[]));
    assert_eq!(out.rule, Some(0), "ports found after 12 bytes of options");
    let mut f = frame4(&udp4("203.0.113.9"), 40000, 5001, &[]);
    f[14] = 0x44;
    assert_eq!(h.check(&f).reason, reason::PASS_MALFORMED);
}

#[test]
fn router_without_gateway_drops_or_passes_per_policy() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let out = h.check(&frame4(&udp4("203.0.113.9"), 40000, 9, &[]));
    assert_eq!(
        (out.action, out.reason),
        (XdpAction::Drop, reason::DROP_NO_GATEWAY)
    );
    let out = h.check(&frame4(&udp4("203.0.113.9"), 40000, 7, &[]));
    assert_eq!(
        (out.action, out.reason),
        (XdpAction::Pass, reason::PASS_NO_GATEWAY)
    );
}

/// Gateway a flow of router 4 (tunnel 0 / Ethernet 1) took, seen from the kernel's output.
fn kernel_gateway(h: &Harness, f: &[u8]) -> u16 {
    let k = h.kernel(f);
    match k.action {
        XDP_REDIRECT => 1,
        XDP_PASS if h.tc_steer(&k.frame).retval == TC_ACT_REDIRECT => 0,
        a => panic!("flow not steered (action {a})"),
    }
}

#[test]
fn flows_stick_to_their_gateway_while_it_is_kept() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let flows: Vec<Vec<u8>> = (0..64)
        .map(|i| frame4(&udp4("203.0.113.9"), 30000 + i, 6000, &[]))
        .collect();
    let first: Vec<u16> = flows.iter().map(|f| h.check(f).gateway.unwrap()).collect();
    assert!(
        first.contains(&0) && first.contains(&1),
        "50/50 router used both gateways"
    );
    for (f, g) in flows.iter().zip(&first) {
        assert_eq!(kernel_gateway(&h, f), *g);
    }

    // Gateway 0 leaves the active set but flows may stay on it (failback new-connections).
    h.set_router(
        4,
        RouterTable {
            keep: vec![0, 1],
            ..RouterTable::single(1)
        },
    );
    for (f, g) in flows.iter().zip(&first) {
        let out = h.check(f);
        assert_eq!(out.gateway, Some(*g), "existing flow moved");
        assert_eq!(out.reason, reason::STEER_FLOW);
    }
    let new = frame4(&udp4("203.0.113.10"), 1, 6000, &[]);
    assert_eq!(
        h.check(&new).gateway,
        Some(1),
        "new connections use the active set"
    );

    // Gateway 0 no longer kept (down, or failback all): its flows move, the others stay.
    h.set_router(4, RouterTable::single(1));
    for f in &flows {
        assert_eq!(h.check(f).gateway, Some(1));
    }
}

#[test]
fn reload_keeps_flows_whose_decision_did_not_change() {
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(plan());
    let steered = frame4(&udp4("203.0.113.9"), 30001, 6000, &[]);
    let gw = h.check(&steered).gateway.unwrap();
    let blocked_later = frame4(&udp4("203.0.113.9"), 30002, 5001, &[]);
    assert_eq!(h.check(&blocked_later).reason, reason::STEER_CLASSIFIED);

    let mut p = plan();
    p.rules[0].action = Action::Block;
    // Router 4 now prefers the other gateway for new flows; the old flow is kept.
    p.routers[4] = RouterTable {
        keep: vec![0, 1],
        ..RouterTable::single(1 - gw)
    };
    h.apply(p);
    let out = h.check(&steered);
    assert_eq!(
        out.gateway,
        Some(gw),
        "a reload must not move a flow whose rule and router are unchanged"
    );
    assert_eq!(
        out.reason,
        reason::STEER_CLASSIFIED,
        "re-classified after the reload"
    );
    assert_eq!(h.check(&steered).reason, reason::STEER_FLOW);
    assert_eq!(h.check(&blocked_later).action, XdpAction::Drop);
}

#[test]
fn gateway_and_rule_counters_follow_traffic() {
    let _turn = support::shared(module_path!());
    let f = frame4(&udp4("203.0.113.9"), 40000, 5001, &[]);
    let mut h = Harness::new(plan());
    for _ in 0..5 {
        h.check(&f);
    }
    let gws = h.dp.gateway_counters().unwrap();
    assert_eq!(gws[0].packets, 5);
    assert_eq!(gws[0].bytes, 5 * f.len() as u64);
    assert_eq!(gws[1].packets, 0);
    assert_eq!(h.dp.rule_counters().unwrap()[0].packets, 5);
    // One flow, given to its gateway once: its first packet; the others keep it.
    let new = h.dp.new_flow_counters().unwrap();
    assert_eq!((new[0].packets, new[0].bytes), (1, f.len() as u64));
    let other = frame4(&udp4("203.0.113.9"), 40001, 5001, &[]);
    h.check(&other);
    h.check(&other);
    assert_eq!(h.dp.new_flow_counters().unwrap()[0].packets, 2);
}

#[test]
fn unconfigured_interface_is_left_alone() {
    let _turn = support::shared(module_path!());
    let mut p = plan();
    p.ifaces.clear();
    let mut h = Harness::new(p);
    let f = frame4(&udp4("203.0.113.9"), 40000, 5001, &[]);
    let out = h.check(&f);
    assert_eq!(out.reason, reason::PASS_NOT_CONFIGURED);
    assert_eq!(out.frame, f);
}

#[test]
fn many_prefixes_and_rules_classify_like_the_model() {
    let _turn = support::shared(module_path!());
    // 1,000 rules with distinct /24s and port ranges: the bit-vector tables must still give
    // the first match.
    let mut p = plan();
    let mut rules = Vec::new();
    for i in 0..1000u32 {
        let mut r = Rule::any(if i % 2 == 0 {
            Action::Route(0)
        } else {
            Action::Block
        });
        r.counter = (i % 1000) as u16;
        r.criteria.dst = vec![net(&format!("10.{}.{}.0/24", 100 + i / 250, i % 250))];
        r.criteria.dst_ports = vec![ports(1000 + i as u16, 1000 + i as u16 + 10)];
        r.criteria.protocols = vec![17];
        rules.push(r);
    }
    p.rules = rules;
    let mut h = Harness::new(p);
    for i in (0..1000u32).step_by(7) {
        let dst = format!("10.{}.{}.5", 100 + i / 250, i % 250);
        let f = frame4(&udp4(&dst), 5, 1000 + i as u16 + 3, &[]);
        assert_eq!(h.check(&f).rule, Some(i as usize));
    }
}

/// Flow hits are answered from the per-CPU flow cache, but only while the flow table would
/// give the same answer: an idle flow is still decided anew, and a busy flow's table entry is
/// still refreshed once a second (the agent and the LRU see it as live).
#[test]
fn flow_cache_keeps_idle_expiry_and_table_refresh() {
    let _turn = support::shared(module_path!());
    const IDLE_MS: u64 = 1_500;
    let mut p = plan();
    p.flow_idle_ns = IDLE_MS * 1_000_000;
    let mut h = Harness::new(p);
    let f = frame4(&udp4("203.0.113.9"), 40001, 5001, &[]);
    let last_seen = |h: &Harness| {
        let flows = h.dp.flows().unwrap();
        assert_eq!(flows.len(), 1, "one flow in the table: {flows:?}");
        flows[0].1.last_seen_ns
    };
    assert_eq!(h.check(&f).reason, reason::STEER_CLASSIFIED);
    let first = last_seen(&h);
    // Hits for 1.2 s, every 100 ms: never idle, always the flow's decision.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(h.check(&f).reason, reason::STEER_FLOW);
    }
    let refreshed = last_seen(&h);
    assert!(
        refreshed >= first + FLOW_REFRESH_NS,
        "flow entry not refreshed while its hits came from the cache: {first} → {refreshed}"
    );
    // Idle for longer than the timeout: decided anew (the model agrees, see `check`).
    std::thread::sleep(Duration::from_millis(IDLE_MS + 200));
    assert_eq!(h.check(&f).reason, reason::STEER_CLASSIFIED);
    assert_eq!(h.check(&f).reason, reason::STEER_FLOW);
}

/// The one's complement sum of the pseudo-header and the TCP / UDP segment of an untagged
/// frame (IPv4 without options, or IPv6 without extension headers): `0xffff` when the
/// segment's checksum is right.
fn l4_sum(frame: &[u8]) -> u16 {
    let v6 = frame[12..14] == [0x86, 0xdd];
    let (l4, proto, addrs) = if v6 {
        (54, frame[20], &frame[22..54])
    } else {
        (34, frame[23], &frame[26..34])
    };
    let len = frame.len() - l4;
    let mut data = addrs.to_vec();
    data.extend_from_slice(&[0, proto]);
    data.extend_from_slice(&(len as u16).to_be_bytes());
    data.extend_from_slice(&frame[l4..]);
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Writes a right TCP / UDP checksum into `frame` (see [`l4_sum`]).
fn fill_l4_checksum(frame: &mut [u8]) {
    let v6 = frame[12..14] == [0x86, 0xdd];
    let (l4, proto) = if v6 { (54, frame[20]) } else { (34, frame[23]) };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let check = match !l4_sum(frame) {
        0 if proto == 17 => 0xffff,
        c => c,
    };
    frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
}

/// A masqueraded flow, once offloaded, leaves from the fast path as conntrack would have
/// translated it: the uplink's address and the port it chose as source, every checksum right
/// (a UDP datagram without one keeps none), for both families and from the flow table and
/// the flow cache alike; a fragment, and the flow put back, take the kernel path.
#[test]
fn a_translated_flow_leaves_the_fast_path_with_conntracks_source() {
    use xwan_common::{FlowPath, Snat};
    let _turn = support::shared(module_path!());
    let mut h = Harness::new(offloading_plan(true));
    let uplink4 = Snat {
        src: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
        sport: 61001,
        _pad: 0,
    };
    let uplink6: std::net::Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let uplink6 = Snat {
        src: std::array::from_fn(|i| {
            let o = uplink6.octets();
            u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        }),
        sport: 61002,
        _pad: 0,
    };

    // TCP to 443 (router 1), UDP with DSCP 46 (router 1, DSCP 18 imposed) with and without
    // a checksum, IPv6 UDP with DSCP 46.
    let tcp = V4::new(
        Ipv4Addr::new(10, 1, 0, 8),
        "198.51.100.2".parse().unwrap(),
        6,
    );
    let mut ack = frame4(&tcp, 40001, 443, &[]);
    ack[14 + 20 + 13] = 0x10;
    fill_l4_checksum(&mut ack);
    let mut syn = ack.clone();
    syn[14 + 20 + 13] = 0x02;
    fill_l4_checksum(&mut syn);
    let mut v4 = udp4("198.51.100.1");
    v4.tos = 46 << 2;
    let mut udp = frame4(&v4, 40000, 1234, &[]);
    fill_l4_checksum(&mut udp);
    let bare = frame4(&v4, 40003, 1234, &[]);
    let mut v6 = V6::new(
        "fd00::7".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
        17,
    );
    v6.tclass = 46 << 2;
    let mut udp6 = frame6(&v6, 40002, 1234);
    fill_l4_checksum(&mut udp6);
    for (name, f, snat, l4, check_at) in [
        ("TCP", &ack, uplink4, 34, 34 + 16),
        ("UDP", &udp, uplink4, 34, 34 + 6),
        ("UDP without checksum", &bare, uplink4, 34, 34 + 6),
        ("IPv6 UDP", &udp6, uplink6, 54, 54 + 6),
    ] {
        assert_eq!(h.check(f).reason, reason::STEER_CLASSIFIED, "{name}");
        assert!(h.set_path(f, FlowPath::Fast(Some(snat))), "{name}");
        for hit in ["flow table", "flow cache"] {
            let out = h.check(f);
            assert_eq!(
                (out.action, out.reason, out.gateway),
                (XdpAction::Redirect, reason::STEER_OFFLOAD, Some(1)),
                "{name}, {hit}"
            );
            let o = &out.frame;
            let src: &[u8] = if l4 == 34 { &o[26..30] } else { &o[22..38] };
            let want: Vec<u8> = snat.src.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(src, &want[..src.len()], "{name}, {hit}: source address");
            assert_eq!(
                o[l4..l4 + 2],
                snat.sport.to_be_bytes(),
                "{name}, {hit}: port"
            );
            if l4 == 34 {
                assert_ipv4_checksum(o);
            }
            if f[check_at..check_at + 2] == [0, 0] {
                assert_eq!(o[check_at..check_at + 2], [0, 0], "{name}, {hit}: none");
            } else {
                assert_eq!(l4_sum(o), 0xffff, "{name}, {hit}: L4 checksum");
            }
        }
    }
    // TCP's SYN, FIN and RST are conntrack's to see, translated by the kernel.
    assert_eq!(h.check(&syn).reason, reason::STEER_FLOW);
    // A fragment: conntrack reassembles the datagram, so it goes with the others.
    let mut first = udp.clone();
    first[14 + 6] |= 0x20;
    first[24..26].copy_from_slice(&[0, 0]);
    let sum = csum::ipv4_header_sum(&first[14..34]);
    first[24..26].copy_from_slice(&(!sum).to_be_bytes());
    assert_eq!(h.check(&first).reason, reason::STEER_FLOW);
    // Put back on the kernel path: from the next packet, untranslated.
    assert!(h.set_path(&udp, FlowPath::Kernel));
    let out = h.check(&udp);
    assert_eq!((out.reason, out.mark), (reason::STEER_FLOW, Some(0x2_0000)));
    assert_eq!(&out.frame[26..30], &udp[26..30]);
}

/// A change of gateways alone (a neighbour's new MAC, a gateway gone) is written without a
/// new ruleset: a flow keeps its rule and, where its gateway stays, its gateway, and leaves
/// with the new MAC at once; a flow whose gateway went is decided anew by its router. A rule
/// change is refused, with nothing written.
#[test]
fn a_gateway_change_is_committed_without_a_new_ruleset() {
    let _turn = support::shared(module_path!());
    let p = plan();
    let mut h = Harness::new(p.clone());
    // TCP to 443: router 1, the Ethernet gateway 1; to 22: router 0, the tunnel.
    let tcp = |dst: &str| V4::new(Ipv4Addr::new(10, 1, 0, 8), dst.parse().unwrap(), 6);
    let https = frame4(&tcp("198.51.100.2"), 40001, 443, &[]);
    let ssh = frame4(&tcp("198.51.100.3"), 40002, 22, &[]);
    assert_eq!(h.check(&https).reason, reason::STEER_CLASSIFIED);
    assert_eq!(h.check(&ssh).reason, reason::STEER_CLASSIFIED);

    // The next hop answers from a new MAC.
    let mut moved = p.clone();
    let new_mac = [0xaa, 0, 0, 0, 0x99, 1];
    moved.gateways[1].kind = GatewayKind::Ethernet {
        next_hop_mac: new_mac,
        egress_mac: [0xbb, 0, 0, 0, 0, 1],
    };
    assert!(h.update(moved.clone()));
    let out = h.check(&https);
    assert_eq!((out.reason, out.gateway), (reason::STEER_FLOW, Some(1)));
    assert_eq!(out.frame[0..6], new_mac, "the new MAC at once");
    assert_eq!(
        h.check(&ssh).reason,
        reason::STEER_FLOW,
        "other flows untouched"
    );

    // Gateway 1 gone (its neighbour failed): router 1 uses the tunnel now.
    let mut gone = moved.clone();
    gone.gateways.truncate(1);
    gone.routers[1] = RouterTable::single(0);
    gone.routers[4] = RouterTable::single(0);
    assert!(h.update(gone.clone()));
    let out = h.check(&https);
    assert_eq!((out.reason, out.gateway), (reason::STEER_FLOW, Some(0)));

    // And back.
    assert!(h.update(moved));
    assert_eq!(h.check(&https).gateway, Some(1));

    // A new rule is a new ruleset: refused, nothing written.
    let mut ruled = p.clone();
    ruled.rules.truncate(1);
    assert!(!h.update(ruled));
    assert_eq!(h.check(&ssh).reason, reason::STEER_FLOW);
}
