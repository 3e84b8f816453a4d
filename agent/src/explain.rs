//! `xwan explain`: which rule, router and gateway a packet would take now, and why. Answered
//! by the reference model ([`xwan_common::model`]) over the plan the agent last committed,
//! so it says what the kernel programs do, not a second interpretation of the config.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use xwan_common::{
    FLOW_OFFLOADED, FlowKey, FlowValue, NO_ROUTER, ROUTER_SLOTS, ReturnValue, hash,
    model::{Model, Parsed, build},
    plan::{Action, HashMode, Plan},
    reason,
};

use crate::{
    config::{Config, PROTOCOLS, protocol_has_ports, protocol_name},
    router::{Availability, Failback, GatewayStatus, Keyword},
};

/// What the running agent adds to an explanation: the data plane's entries for the packet's
/// flow, and why each router judges its gateways as it does.
pub struct Live<'a> {
    /// The ruleset epoch in the data plane.
    pub epoch: u32,
    /// The data plane's clock (`CLOCK_MONOTONIC`, ns): a flow entry's age.
    pub now_ns: u64,
    /// The flow table's entry for a key.
    pub flow: &'a dyn Fn(&FlowKey) -> Option<FlowValue>,
    /// The return-route table's entry for a key (the packet's, with ifindex 0).
    pub return_route: &'a dyn Fn(&FlowKey) -> Option<ReturnValue>,
    /// Why router `r` (index) judges gateway `g` as it does: "answering", "timeout"...
    pub reason: &'a dyn Fn(usize, u16) -> String,
}

/// The packet to explain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Query {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub dscp: u8,
    /// Ingress interface name; the first LAN interface when absent.
    pub iface: Option<String>,
}

/// Protocol by name (as in the config) or number.
pub fn parse_protocol(s: &str) -> Result<u8, String> {
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    PROTOCOLS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!("unknown protocol '{s}' (a name such as tcp, udp, icmp, or a number)")
        })
}

/// The explanation, one fact per line: what a new connection with this packet's header
/// would take, then what the data plane holds for its flow and does with its next packet
/// (`live`). `ifindex` resolves interface names.
pub fn explain(
    config: &Config,
    plan: &Plan,
    rows: &[Vec<GatewayStatus>],
    ifindex: &dyn Fn(&str) -> Option<u32>,
    live: &Live,
    q: &Query,
) -> Result<String, String> {
    if q.src.is_ipv4() != q.dst.is_ipv4() {
        return Err("source and destination must be of one address family".into());
    }
    let iface = match &q.iface {
        Some(n) => n.clone(),
        None => config
            .agent
            .lan_interfaces
            .first()
            .cloned()
            .ok_or("no LAN interface is configured")?,
    };
    let idx = ifindex(&iface).ok_or_else(|| format!("interface '{iface}' does not exist"))?;
    let proto_name = protocol_name(q.proto)
        .map(str::to_string)
        .unwrap_or_else(|| q.proto.to_string());
    let ports = protocol_has_ports(q.proto).then(|| (q.sport.unwrap_or(0), q.dport.unwrap_or(0)));
    let mut out = format!(
        "packet {} -> {} {proto_name}{} dscp {} arriving on {iface}\n",
        q.src,
        q.dst,
        ports
            .map(|(s, d)| format!(" {s} -> {d}"))
            .unwrap_or_default(),
        q.dscp
    );
    if !plan.ifaces.iter().any(|i| i.ifindex == idx) {
        out.push_str(
            "not steered: xwan is not attached to this interface (the kernel routes it)\n",
        );
        return Ok(out);
    }
    if plan.local_addrs.contains(&q.dst) {
        out.push_str(
            "not steered: the destination is one of this router's addresses (local delivery)\n",
        );
        return Ok(out);
    }
    let p = Parsed {
        l3: 14,
        vlan_tags: 0,
        family: if q.src.is_ipv4() { 4 } else { 6 },
        src: q.src,
        dst: q.dst,
        proto: q.proto,
        dscp: q.dscp,
        ttl: 64,
        ports,
        tcp_flags: 0,
        fragment: false,
        l4: if q.src.is_ipv4() { 34 } else { 54 },
    };
    out += &new_connection(config, plan, rows, idx, &p);
    out += &live_flow(config, plan, rows, idx, &p, live);
    Ok(out)
}

/// What a new connection of `p` arriving on `idx` takes.
fn new_connection(
    config: &Config,
    plan: &Plan,
    rows: &[Vec<GatewayStatus>],
    idx: u32,
    p: &Parsed,
) -> String {
    let mut out = String::new();
    let model = Model::new(plan.clone(), 0);
    let Some(r) = model.classify(p, idx) else {
        out.push_str("no rule matches: the kernel routes it (normal routing table)\n");
        return out;
    };
    let rule = &config.rules[r];
    let name = rule
        .name
        .as_deref()
        .map(|n| format!(" '{n}'"))
        .unwrap_or_default();
    out.push_str(&format!(
        "rule #{}{name} matches (the first rule whose criteria all hold)\n",
        r + 1
    ));
    if let Some(d) = rule.set_dscp {
        out.push_str(&format!("DSCP set to {d}\n"));
    }
    match plan.rules[r].action {
        Action::Block => out.push_str("action block: dropped\n"),
        Action::Pass => out.push_str("action pass: the kernel routes it\n"),
        Action::Route(id) => {
            let router = &config.routers[id as usize];
            let table = &plan.routers[id as usize];
            out.push_str(&format!("router {}\n", router.name));
            for s in rows.get(id as usize).into_iter().flatten() {
                if s.availability == Availability::Degraded {
                    out.push_str(&format!(
                        "gateway {} is Degraded (beyond the router's sla_alarm): new connections \
                         use it only when no healthy gateway would be used\n",
                        config.gateways[s.gateway as usize].name
                    ));
                }
            }
            if table.slots.is_empty() {
                let what = if table.on_failure_pass {
                    "handed to the kernel (on_failure = default-route)"
                } else {
                    "dropped (on_failure = drop)"
                };
                out.push_str(&format!("no gateway is active: {what}\n"));
                return out;
            }
            let key = p.flow_key(idx);
            let h = match table.hash {
                HashMode::Connection => {
                    hash::connection_hash(&key.src, &key.dst, key.sport, key.dport, key.proto)
                }
                HashMode::Source => hash::source_hash(&key.src),
            };
            let slot = h as usize & (ROUTER_SLOTS - 1);
            let gw = table.slots[slot];
            let share = table.slots.iter().filter(|&&g| g == gw).count() as f64 * 100.0
                / ROUTER_SLOTS as f64;
            let g = &config.gateways[gw as usize];
            // Source hashing shares out sources (each with all its connections), not
            // connections.
            let of = match table.hash {
                HashMode::Connection => "new connections",
                HashMode::Source => "sources, each with all its connections",
            };
            out.push_str(&format!(
                "a new connection takes gateway {} ({}, slot {slot} of {ROUTER_SLOTS}; {share:.1} % of {of})\n",
                g.name, g.address
            ));
        }
    }
    out
}

/// The data plane's flow entry for `p` (and its return route), what the model does with the
/// next packet given them, when the kernel would take the flow's packets instead, and how
/// the router judges each of its gateways.
fn live_flow(
    config: &Config,
    plan: &Plan,
    rows: &[Vec<GatewayStatus>],
    idx: u32,
    p: &Parsed,
    live: &Live,
) -> String {
    let mut out = String::new();
    let name =
        |g: u16| (config.gateways.get(g as usize)).map_or(format!("#{g}"), |g| g.name.clone());
    let (key, reply) = (p.flow_key(idx), p.flow_key(0));
    let entry = (live.flow)(&key);
    let ret = (!plan.links.is_empty())
        .then(|| (live.return_route)(&reply))
        .flatten();
    let mut model = Model::new(plan.clone(), live.epoch);
    if let Some(e) = entry {
        model.insert_flow(key, e);
    }
    if let Some(r) = ret {
        model.insert_return(reply, r);
    }
    let o = model.xdp_lan(idx, &frame(plan, idx, p), live.now_ns);

    match entry {
        Some(e) => {
            let age = live.now_ns.saturating_sub(e.last_seen_ns) as f64 / 1e9;
            let via = match config.routers.get(e.router as usize) {
                Some(r) if e.router != NO_ROUTER => {
                    format!("router {}, gateway {}", r.name, name(e.gateway))
                }
                _ => "not routed".into(),
            };
            let epoch = match e.epoch == live.epoch {
                true => "this ruleset".to_owned(),
                false => format!("ruleset epoch {} (older: classified anew)", e.epoch),
            };
            let offloaded = match e.flags & FLOW_OFFLOADED {
                0 => "",
                _ => ", offloaded (conntrack confirmed it)",
            };
            out += &format!(
                "existing flow: rule #{}, {via}, last seen {age:.1} s ago, {epoch}{offloaded}\n",
                e.rule as usize + 1
            );
        }
        None => out += "no flow entry: its next packet opens a new connection\n",
    }
    if let Some(r) = ret {
        out += &format!(
            "return route: it answers a connection that arrived through gateway {}'s link\n",
            name(r.gateway as u16)
        );
    }
    let gw = o.gateway.map(name).unwrap_or_default();
    let next = match o.reason {
        reason::STEER_RETURN => format!("leaves through gateway {gw} (the return route)"),
        // Its rule may come from the entry (`STEER_FLOW`) while its gateway does not: the
        // gateway it had tells whether it stays.
        reason::STEER_FLOW | reason::STEER_OFFLOAD | reason::STEER_CLASSIFIED => match entry {
            Some(e) if e.router != NO_ROUTER && o.gateway == Some(e.gateway) => {
                let failback = (config.routers.get(e.router as usize))
                    .map_or("", |r| r.options.failback.keyword());
                format!(
                    "stays on gateway {gw}, which its router still allows (failback = \"{failback}\")"
                )
            }
            Some(e) if e.router != NO_ROUTER => format!(
                "moves from gateway {} to {gw}: its router no longer allows {}",
                name(e.gateway),
                name(e.gateway)
            ),
            _ => format!("takes gateway {gw}"),
        },
        r => format!(
            "is not steered ({})",
            reason::NAMES.get(r as usize).copied().unwrap_or("?")
        ),
    };
    out += &format!("its next packet {next}\n");
    if let Some(g) = o
        .gateway
        .and_then(|g| plan.gateways.iter().find(|x| x.id == g))
        && !g.kind.is_kernel()
    {
        out += &format!(
            "the kernel takes this flow's packets instead when their TTL is 1 or less, or they \
             exceed {} bytes from the IP header (gateway {gw}'s MTU)\n",
            g.mtu
        );
    }
    // The router the rule routes through: each gateway as it judges it.
    let router = o.rule.and_then(|r| match plan.rules.get(r)?.action {
        Action::Route(id) => Some(id as usize),
        _ => None,
    });
    if let Some(id) = router {
        let r = &config.routers[id];
        let quality = match r.options.load_balancing {
            crate::router::LoadBalancing::BestQuality => format!(
                "; new connections go to one gateway by probe score (RTT + 2 × jitter + 10 ms \
                 per % loss), margin {}",
                humantime::format_duration(r.quality_margin)
            ),
            _ => String::new(),
        };
        out += &format!(
            "router {}: backups take over below {} Ready main(s){}{quality}\n",
            r.name,
            r.options.backup_threshold,
            match r.options.failback {
                Failback::NewConnections => "; flows stay on a gateway while it is usable",
                Failback::All => "; flows follow the active set",
            }
        );
        for s in rows.get(id).into_iter().flatten() {
            out += &format!(
                "  {}: {}, {}, {} ({})\n",
                name(s.gateway),
                s.role,
                s.state,
                s.availability,
                (live.reason)(id, s.gateway)
            );
        }
    }
    out
}

/// A frame of `p` addressed to interface `idx`'s MAC, as it would arrive.
fn frame(plan: &Plan, idx: u32, p: &Parsed) -> Vec<u8> {
    let mac = (plan.ifaces.iter().find(|i| i.ifindex == idx)).map_or([0; 6], |i| i.mac);
    let payload = match p.ports {
        Some((s, d)) => build::l4(s, d),
        None => vec![0; 8],
    };
    let (ethertype, ip) = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = build::Ip4::new(s.octets(), d.octets(), p.proto, payload);
            h.tos = p.dscp << 2;
            (build::ETH_P_IP, h.bytes())
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            let mut h = build::Ip6::new(v6(s), v6(d), p.proto, payload);
            h.tc = p.dscp << 2;
            (build::ETH_P_IPV6, h.bytes())
        }
    };
    build::eth(mac, [0x02, 0, 0, 0, 0, 0x01], &[], ethertype, &ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config,
        netlink::Interface,
        planner::{self, Facts},
    };

    /// Two gateways weighted alike under `load_balancing` (ISP down unless `isp_up`), asked
    /// about one HTTPS packet with `live`'s view of the data plane.
    fn explained_live(load_balancing: &str, isp_up: bool, live: &Live) -> String {
        let text = include_str!("../../examples/minimal.toml")
            .replace(
                "gateways = [\"ISP\"]",
                &format!("gateways = [\"ISP\", \"ISP2\"]\nload_balancing = \"{load_balancing}\""),
            )
            .replace(
                "[[router]]",
                "[[gateway]]\nname = \"ISP2\"\nlink = \"Uplink\"\naddress = \"192.0.2.253\"\n\n[[router]]",
            );
        let (config, _) = config::parse(&text, "minimal.toml").unwrap();
        let mut facts = Facts::default();
        for (name, ifindex) in [("eth0", 2), ("eth1", 3)] {
            let i = Interface {
                ifindex,
                name: name.into(),
                mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
                mtu: 1500,
                l2: true,
                admin_up: true,
                carrier: true,
            };
            facts.interfaces.insert(name.into(), i);
        }
        for (last, mac) in [(254, 4), (253, 5)] {
            let a = IpAddr::from([192, 0, 2, last]);
            facts.neighbours.insert((2, a), [2, 0, 0, 0, 0, mac]);
        }
        let ready = |_, g: u16| match g == 0 && !isp_up {
            true => Availability::Unavailable,
            false => Availability::Ready,
        };
        let planned = planner::plan(&config, &facts, &ready).unwrap();
        let q = Query {
            src: "10.0.0.5".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            proto: 6,
            sport: Some(40000),
            dport: Some(443),
            dscp: 0,
            iface: None,
        };
        let ifindex = |n: &str| facts.interfaces.get(n).map(|i| i.ifindex);
        explain(&config, &planned.plan, &planned.rows, &ifindex, live, &q).unwrap()
    }

    fn explained(load_balancing: &str) -> String {
        // Nothing in the data plane, no probe yet.
        let none = Live {
            epoch: 0,
            now_ns: 0,
            flow: &|_| None,
            return_route: &|_| None,
            reason: &|_, _| String::new(),
        };
        explained_live(load_balancing, true, &none)
    }

    /// A flow entry on ISP (gateway 0), seen 1.5 s ago: its next packet stays there while ISP
    /// is Ready, and moves to ISP2 once it is not; the router's gateways come with the
    /// reasons the probes give.
    #[test]
    fn a_live_flow_stays_or_moves_as_its_router_allows() {
        let now = 10_000_000_000;
        let entry = FlowValue {
            last_seen_ns: now - 1_500_000_000,
            epoch: 1,
            rule: 0,
            router: 0,
            gateway: 0,
            flags: 0,
            _pad: [0; 2],
        };
        let flow = |k: &FlowKey| (k.dport == 443).then_some(entry);
        let reason = |_, g: u16| ["timeout", "answering"][g as usize].to_owned();
        let live = Live {
            epoch: 1,
            now_ns: now,
            flow: &flow,
            return_route: &|_| None,
            reason: &reason,
        };
        let up = explained_live("connection", true, &live);
        assert!(
            up.contains("existing flow: rule #1, router Internet, gateway ISP, last seen 1.5 s ago, this ruleset\n")
                && up.contains("its next packet stays on gateway ISP, which its router still allows (failback = \"new-connections\")"),
            "{up}"
        );
        let down = explained_live("connection", false, &live);
        assert!(
            down.contains("its next packet moves from gateway ISP to ISP2")
                && down.contains("  ISP: Main, Unavailable, Unavailable (timeout)\n")
                && down.contains("  ISP2: Main, Active, Ready (answering)\n")
                && down.contains("exceed 1500 bytes from the IP header (gateway ISP2's MTU)"),
            "{down}"
        );
        let none = explained("connection");
        assert!(
            none.contains("no flow entry: its next packet opens a new connection"),
            "{none}"
        );
    }

    #[test]
    fn the_share_is_of_connections_or_of_sources() {
        let by_connection = explained("connection");
        assert!(
            by_connection.contains("50.0 % of new connections)"),
            "{by_connection}"
        );
        let by_source = explained("source");
        assert!(
            by_source.contains("50.0 % of sources, each with all its connections)"),
            "{by_source}"
        );
    }
}
