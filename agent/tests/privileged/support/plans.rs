//! Plans shared by the data-plane tests.

use std::net::IpAddr;

use xwan_common::{
    MarkLayout, ROUTER_SLOTS,
    plan::{
        Action, Gateway, GatewayKind, HashMode, Iface, IpNet, Plan, PortRange, RouterTable, Rule,
    },
};

/// MAC of the LAN interface in test plans.
pub const LAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// A host on the LAN.
pub const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn ports(first: u16, last: u16) -> PortRange {
    PortRange::new(first, last).unwrap()
}

/// Slots split by weight, interleaved so every gateway is spread over the table.
pub fn weighted(
    gws: &[(u16, u32)],
    keep: &[u16],
    hash: HashMode,
    on_failure_pass: bool,
) -> RouterTable {
    let total: u32 = gws.iter().map(|g| g.1).sum();
    let mut slots = Vec::with_capacity(ROUTER_SLOTS);
    if total > 0 {
        // Slot i goes to the gateway furthest behind its share: shares exact to one slot,
        // and each gateway's slots spread over the whole table.
        let mut given = vec![0f64; gws.len()];
        for i in 0..ROUTER_SLOTS {
            let deficit = |k: usize| (i + 1) as f64 * gws[k].1 as f64 / total as f64 - given[k];
            let k = (0..gws.len())
                .max_by(|&a, &b| deficit(a).total_cmp(&deficit(b)))
                .unwrap();
            given[k] += 1.0;
            slots.push(gws[k].0);
        }
    }
    RouterTable {
        slots,
        keep: keep.to_vec(),
        hash,
        on_failure_pass,
    }
}

/// A router with no active gateway: what it routes is dropped, or handed to the kernel with
/// `on_failure_pass`.
pub fn no_gateway(on_failure_pass: bool) -> RouterTable {
    weighted(&[], &[], HashMode::Connection, on_failure_pass)
}

pub fn ethernet_gateway(id: u16, ifindex: u32, mtu: u32) -> Gateway {
    Gateway {
        id,
        kind: GatewayKind::Ethernet {
            next_hop_mac: [0xaa, 0, 0, 0, 0, id as u8],
            egress_mac: [0xbb, 0, 0, 0, 0, id as u8],
        },
        ifindex,
        mtu,
        ready: true,
    }
}

pub fn tunnel_gateway(id: u16, ifindex: u32, mtu: u32) -> Gateway {
    Gateway {
        id,
        kind: GatewayKind::Tunnel,
        ifindex,
        mtu,
        ready: true,
    }
}

fn rule(action: Action, counter: u16, f: impl FnOnce(&mut Rule)) -> Rule {
    let mut r = Rule::any(action);
    r.counter = counter;
    f(&mut r);
    r
}

/// A plan exercising every criterion and action, on LAN ifindex `lan` (1 = lo in tests, so
/// that BPF_PROG_TEST_RUN can use it as the ingress interface). Ethernet gateways point at
/// `eth_ifindex` (must exist: the DEVMAP checks it).
pub fn feature_plan(lan: u32, eth_ifindex: u32) -> Plan {
    let gateways = vec![
        tunnel_gateway(0, 1001, 1400),
        ethernet_gateway(1, eth_ifindex, 1500),
        ethernet_gateway(2, eth_ifindex, 9000),
        Gateway {
            ready: false,
            ..tunnel_gateway(3, 1004, 1500)
        },
        tunnel_gateway(4, 1005, 1500),
        // The `netfilter` mode's kernel path (marks below), with the fast path of confirmed
        // flows for IPv4 only.
        Gateway {
            kind: GatewayKind::Kernel {
                offload: Some(xwan_common::plan::Offload {
                    egress_mac: [0x02, 0, 0, 0, 0x0e, 0x05],
                    v4: Some([0x02, 0, 0, 0, 0x0b, 0x05]),
                    v6: None,
                }),
            },
            ..tunnel_gateway(5, eth_ifindex, 1500)
        },
    ];
    let routers = vec![
        // 0: weighted 3:1 over a tunnel and an Ethernet next hop.
        weighted(&[(0, 3), (1, 1)], &[0, 1], HashMode::Connection, false),
        // 1: one Ethernet gateway.
        weighted(&[(2, 1)], &[2], HashMode::Connection, false),
        // 2: nothing active, drop.
        no_gateway(false),
        // 3: nothing active, hand to the kernel.
        no_gateway(true),
        // 4: by source, four gateways, one on the kernel path.
        weighted(
            &[(1, 1), (2, 1), (4, 2), (5, 1)],
            &[1, 2, 4, 5],
            HashMode::Source,
            false,
        ),
    ];
    let rules = vec![
        rule(Action::Route(0), 0, |r| {
            r.criteria.src = vec![net("10.1.0.0/16")];
            r.criteria.protocols = vec![17];
            r.criteria.dst_ports = vec![ports(5000, 5099)];
        }),
        rule(Action::Route(1), 1, |r| {
            r.criteria.dst = vec![net("203.0.113.0/24"), net("2001:db8:ff::/64")];
            r.criteria.protocols = vec![6];
            r.criteria.dst_ports = vec![ports(80, 80), ports(443, 443)];
            r.set_dscp = Some(10);
        }),
        rule(Action::Route(2), 2, |r| {
            r.criteria.dscp = vec![46];
            r.set_dscp = Some(18);
        }),
        rule(Action::Route(0), 3, |r| {
            r.criteria.src = vec![net("2001:db8:1::/48")];
            r.criteria.protocols = vec![6, 17];
        }),
        rule(Action::Block, 4, |r| {
            r.criteria.protocols = vec![17];
            r.criteria.src_ports = vec![ports(1024, 2047)];
        }),
        rule(Action::Pass, 5, |r| {
            r.criteria.dst = vec![net("198.51.100.0/24"), net("2001:db8:ee::/48")];
            r.set_dscp = Some(34);
        }),
        rule(Action::Route(3), 6, |r| {
            r.criteria.protocols = vec![1, 58];
            r.criteria.dst = vec![net("203.0.113.0/24"), net("2001:db8:ff::/64")];
        }),
        rule(Action::Block, 7, |r| {
            r.criteria.ifaces = vec![lan];
            r.criteria.protocols = vec![17];
            r.criteria.dst_ports = vec![ports(53, 53)];
        }),
        rule(Action::Block, 8, |r| r.criteria.ifaces = vec![lan + 1000]),
        rule(Action::Route(1), 9, |r| {
            r.criteria.src = vec![net("10.1.2.0/24"), net("10.2.0.0/15")]
        }),
        rule(Action::Route(0), 10, |r| r.criteria.protocols = vec![132]),
        rule(Action::Route(4), 11, |r| {
            r.criteria.dscp = (0..8).collect();
            r.criteria.dst = vec![net("192.0.2.0/24"), net("2001:db8:2::/48")];
        }),
        rule(Action::Route(4), 12, |r| {
            r.criteria.src_ports = vec![ports(40000, 40999)];
            r.criteria.dst_ports = vec![ports(1, 1023), ports(8000, 8080)];
        }),
    ];
    Plan {
        ifaces: vec![Iface {
            ifindex: lan,
            mac: LAN_MAC,
        }],
        local_addrs: vec![ip("10.0.0.1"), ip("fd00::1")],
        rules,
        routers,
        gateways,
        links: vec![],
        flow_idle_ns: 0,
        marks: MarkLayout::of_mask(0x0fff_0000, 6),
    }
}
