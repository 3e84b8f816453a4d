//! config → plan: turns a validated [`Config`], what the kernel says about interfaces and
//! neighbours ([`Facts`]) and the routers' current tables into the data plane's [`Plan`].
//! Pure: the daemon gathers the facts, this module only decides.
//!
//! Ids: gateway and router ids in the plan are the config's indexes ([`GatewayId`],
//! [`RouterId`]); a rule's counter slot is its index (stable while the rule list is).

use std::{collections::HashMap, fmt, net::IpAddr, time::Duration};

use xwan_common::plan::{self, Gateway as PlanGateway, GatewayKind, Iface, Plan, RouterTable};

use crate::{
    config::{Config, GatewayId, LinkKind, Router},
    health::{HealthParams, Sla},
    netlink::Interface,
    router::{self, Member, RouterSpec},
};

/// What the kernel says, gathered by the daemon.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// By interface name.
    pub interfaces: HashMap<String, Interface>,
    /// Every address configured on this box.
    pub local_addrs: Vec<IpAddr>,
    /// Resolved next-hop MACs, by (ifindex, address).
    pub neighbours: HashMap<(u32, IpAddr), [u8; 6]>,
}

/// Why a plan cannot be made (the daemon logs it and keeps the previous plan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanningError {
    /// A configured interface does not exist.
    MissingInterface { what: String, interface: String },
    /// A LAN interface has no Ethernet header: XDP steering needs one.
    LanNotEthernet { interface: String },
}

impl fmt::Display for PlanningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanningError::MissingInterface { what, interface } => write!(
                f,
                "{what}: interface '{interface}' does not exist; create it or fix the configuration"
            ),
            PlanningError::LanNotEthernet { interface } => write!(
                f,
                "LAN interface '{interface}' is not an Ethernet interface; xwan steers on Ethernet LANs"
            ),
        }
    }
}

impl std::error::Error for PlanningError {}

/// The router module's view of a configured router.
pub fn router_spec(r: &Router) -> RouterSpec {
    let members = |v: &[crate::config::Member]| {
        v.iter()
            .map(|m| Member {
                gateway: m.gateway.0,
                weight: m.weight,
            })
            .collect()
    };
    RouterSpec {
        name: r.name.clone(),
        mains: members(&r.mains),
        backups: members(&r.backups),
        options: r.options,
    }
}

/// Probe timing of a gateway. A gateway used by several routers is probed once, with the
/// timing of the router that probes it most often (the smallest `frequency`): the stricter
/// detection serves every router using it.
pub fn health_params(config: &Config, gateway: GatewayId) -> HealthParams {
    let routers = config.routers.iter().filter(|r| {
        r.mains
            .iter()
            .chain(&r.backups)
            .any(|m| m.gateway == gateway)
    });
    match routers.min_by_key(|r| r.frequency) {
        Some(r) => HealthParams {
            frequency: r.frequency,
            wait: r.wait,
            tries: r.tries.get(),
            recover: r.recover.get(),
            sla: r.sla.as_ref().map(|s| Sla {
                max_rtt: s.rtt,
                max_jitter: s.jitter,
                max_loss_pct: s.loss,
                window: s.window.get() as usize,
            }),
        },
        None => HealthParams::default(),
    }
}

/// Router tables for the current availability. `previous` keeps slots in place.
pub fn router_tables(
    config: &Config,
    ready: &dyn Fn(u16) -> bool,
    previous: &[RouterTable],
) -> Vec<(RouterTable, Vec<router::GatewayStatus>)> {
    let specs: Vec<RouterSpec> = config.routers.iter().map(router_spec).collect();
    router::tables(&specs, ready, previous)
}

/// Gateways the data plane can use now: their interface exists, and an Ethernet next hop's
/// MAC is resolved. Others are left out of the plan (and must not be in router tables).
pub fn usable(config: &Config, facts: &Facts, gateway: GatewayId) -> bool {
    let g = config.gateway(gateway);
    let link = config.link(g.link);
    match (facts.interfaces.get(&link.interface), link.kind) {
        (Some(i), LinkKind::Tunnel) => i.is_up(),
        (Some(i), LinkKind::Ethernet) => {
            i.is_up() && facts.neighbours.contains_key(&(i.ifindex, g.address))
        }
        (None, _) => false,
    }
}

/// The plan for `config` given `facts`, availability and router tables (index = router id).
pub fn plan(
    config: &Config,
    facts: &Facts,
    ready: &dyn Fn(u16) -> bool,
    tables: Vec<RouterTable>,
) -> Result<Plan, PlanningError> {
    let iface = |what: String, name: &str| {
        facts
            .interfaces
            .get(name)
            .ok_or_else(|| PlanningError::MissingInterface {
                what,
                interface: name.to_string(),
            })
    };
    let mut ifaces = Vec::new();
    for name in &config.agent.lan_interfaces {
        let i = iface("LAN interface".into(), name)?;
        let mac = i.mac.ok_or_else(|| PlanningError::LanNotEthernet {
            interface: name.clone(),
        })?;
        ifaces.push(Iface {
            ifindex: i.ifindex,
            mac,
        });
    }

    let mut gateways = Vec::new();
    for (id, g) in config.gateways.iter().enumerate() {
        let id = GatewayId(id as u16);
        let link = config.link(g.link);
        // A missing interface makes the gateway unusable, not the plan impossible.
        let Some(i) = facts.interfaces.get(&link.interface) else {
            continue;
        };
        let kind = match link.kind {
            LinkKind::Tunnel => GatewayKind::Tunnel,
            LinkKind::Ethernet => {
                let Some(mac) = facts.neighbours.get(&(i.ifindex, g.address)) else {
                    continue;
                };
                let Some(egress) = i.mac else { continue };
                GatewayKind::Ethernet {
                    next_hop_mac: *mac,
                    egress_mac: egress,
                }
            }
        };
        gateways.push(PlanGateway {
            id: id.0,
            kind,
            ifindex: i.ifindex,
            mtu: link.mtu.unwrap_or(i.mtu),
            ready: ready(id.0) && usable(config, facts, id),
        });
    }

    let rules = config
        .rules
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let criteria = r
                .criteria
                .map_ifaces(|name| iface(format!("rule #{}", n + 1), name).map(|i| i.ifindex))?;
            Ok(plan::Rule {
                criteria,
                action: r.action.to_plan(),
                set_dscp: r.set_dscp,
                counter: n as u16,
            })
        })
        .collect::<Result<Vec<_>, PlanningError>>()?;

    let mut links = Vec::new();
    for rr in &config.return_routes {
        let link = config.link(rr.link);
        let i = iface(
            format!("return route of link '{}'", link.name),
            &link.interface,
        )?;
        // An Ethernet return gateway whose neighbour is not resolved yet is not in the plan;
        // until it is, replies over that link follow the kernel's routes (the neighbour
        // event that resolves it commits a new plan).
        if !gateways.iter().any(|g| g.id == rr.gateway.0) {
            continue;
        }
        links.push(plan::Link {
            ifindex: i.ifindex,
            l2: i.l2,
            return_gateway: rr.gateway.0,
        });
    }

    Ok(Plan {
        ifaces,
        local_addrs: facts.local_addrs.clone(),
        rules,
        routers: tables,
        gateways,
        links,
        flow_idle_ns: duration_ns(config.agent.flow_idle),
    })
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const SEED: &str = include_str!("../../examples/seed-branch.toml");

    fn facts() -> Facts {
        let mut f = Facts::default();
        let mut add = |name: &str, ifindex: u32, mac: Option<[u8; 6]>| {
            f.interfaces.insert(
                name.into(),
                Interface {
                    ifindex,
                    name: name.into(),
                    mac,
                    mtu: 1400,
                    l2: mac.is_some(),
                    admin_up: true,
                    carrier: true,
                },
            );
        };
        add("lan0", 2, Some([2, 0, 0, 0, 0, 2]));
        for (i, name) in ["vti-wan1", "vti-wan2", "vti-wan3"].iter().enumerate() {
            add(name, 10 + i as u32, None);
        }
        f.local_addrs = vec!["10.0.0.1".parse().unwrap()];
        f
    }

    #[test]
    fn seed_branch_plans_with_all_gateways_ready() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let f = facts();
        let ready = |_: u16| true;
        let tables = router_tables(&config, &ready, &[])
            .into_iter()
            .map(|t| t.0)
            .collect();
        let p = plan(&config, &f, &ready, tables).unwrap();
        p.validate().unwrap();
        assert_eq!(
            p.ifaces,
            vec![Iface {
                ifindex: 2,
                mac: [2, 0, 0, 0, 0, 2]
            }]
        );
        assert_eq!(p.gateways.len(), 3);
        assert!(
            p.gateways
                .iter()
                .all(|g| g.kind == GatewayKind::Tunnel && g.ready && g.mtu == 1400)
        );
        assert_eq!(p.rules.len(), config.rules.len());
        // VoIP imposes DSCP 18 through the VoIP router.
        let voip = config.router_by_name("VoIPRouter").unwrap();
        assert!(
            p.rules
                .iter()
                .any(|r| r.action == plan::Action::Route(voip.0) && r.set_dscp == Some(18))
        );
        // Every router's table sends everything to its main while all are Ready.
        for (i, r) in config.routers.iter().enumerate() {
            assert_eq!(
                p.routers[i].active_gateways(),
                vec![r.mains[0].gateway.0],
                "{}",
                r.name
            );
        }
    }

    #[test]
    fn missing_lan_interface_is_an_error_naming_it() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let mut f = facts();
        f.interfaces.remove("lan0");
        let e = plan(&config, &f, &|_| true, vec![]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LAN interface: interface 'lan0' does not exist; create it or fix the configuration"
        );
    }

    #[test]
    fn a_gateway_whose_link_is_down_is_not_ready() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let mut f = facts();
        f.interfaces.get_mut("vti-wan2").unwrap().carrier = false;
        let p = plan(&config, &f, &|_| true, vec![]).unwrap();
        let wan2 = config.gateway_by_name("RemoteTunWAN2").unwrap();
        assert!(!p.gateways.iter().find(|g| g.id == wan2.0).unwrap().ready);
        assert!(!usable(&config, &f, wan2));
    }

    #[test]
    fn a_return_route_waits_for_its_ethernet_neighbour() {
        const HEADOFFICE: &str = include_str!("../../examples/seed-headoffice.toml");
        let text = HEADOFFICE.replacen(
            "interface = \"vti-wan3\"\nkind = \"tunnel\"",
            "interface = \"vti-wan3\"\nkind = \"ethernet\"",
            1,
        );
        assert_ne!(text, HEADOFFICE);
        let (config, _) = config::parse(&text, "seed-headoffice.toml").unwrap();
        let mut f = facts();
        f.interfaces.get_mut("vti-wan3").unwrap().mac = Some([2, 0, 0, 0, 0, 3]);
        // No neighbour for the branch's end of WAN3 yet: the plan is valid, without WAN3's
        // return route.
        let p = plan(&config, &f, &|_| true, vec![]).unwrap();
        p.validate().unwrap();
        assert_eq!(
            p.links.iter().map(|l| l.ifindex).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let wan3 = config.gateway_by_name("LocalTunWAN3").unwrap();
        f.neighbours
            .insert((12, config.gateway(wan3).address), [2, 0, 0, 0, 0, 9]);
        let p = plan(&config, &f, &|_| true, vec![]).unwrap();
        p.validate().unwrap();
        assert_eq!(p.links.len(), 3);
    }

    #[test]
    fn shared_gateways_are_probed_with_the_fastest_routers_timing() {
        let voip = "name = \"VoIPRouter\"\n";
        let text = SEED.replace(voip, &format!("{voip}frequency = \"5s\"\nwait = \"1s\"\n"));
        assert_ne!(text, SEED);
        let (config, _) = config::parse(&text, "seed-branch.toml").unwrap();
        let wan2 = config.gateway_by_name("RemoteTunWAN2").unwrap();
        let wan1 = config.gateway_by_name("RemoteTunWAN1").unwrap();
        assert_eq!(
            health_params(&config, wan2).frequency,
            Duration::from_secs(5)
        );
        assert_eq!(
            health_params(&config, wan1).frequency,
            Duration::from_secs(15)
        );
    }
}
