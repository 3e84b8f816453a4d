//! `xwan explain`: which rule, router and gateway a packet would take now, and why. Answered
//! by the reference model ([`xwan_common::model`]) over the plan the agent last committed,
//! so it says what the kernel programs do, not a second interpretation of the config.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use xwan_common::{
    ROUTER_SLOTS, hash,
    model::{Model, Parsed},
    plan::{Action, HashMode, Plan},
};

use crate::{
    config::{Config, PROTOCOLS, protocol_has_ports, protocol_name},
    router::{Availability, GatewayStatus},
};

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

/// The explanation, one fact per line. `ifindex` resolves interface names.
pub fn explain(
    config: &Config,
    plan: &Plan,
    rows: &[Vec<GatewayStatus>],
    ifindex: &dyn Fn(&str) -> Option<u32>,
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
    let model = Model::new(plan.clone(), 0);
    let Some(r) = model.classify(&p, idx) else {
        out.push_str("no rule matches: the kernel routes it (normal routing table)\n");
        return Ok(out);
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
                return Ok(out);
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
            out.push_str("an existing connection stays on its gateway while that gateway is allowed (failback policy)\n");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config,
        netlink::Interface,
        planner::{self, Facts},
    };

    /// Two gateways weighted alike under `load_balancing`: the share explain gives is of new
    /// connections, or of sources under source hashing.
    fn explained(load_balancing: &str) -> String {
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
        let planned = planner::plan(&config, &facts, &|_, _| Availability::Ready).unwrap();
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
        explain(&config, &planned.plan, &planned.rows, &ifindex, &q).unwrap()
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
