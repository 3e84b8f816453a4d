//! config → plan: turns a validated [`Config`], what the kernel says about interfaces and
//! neighbours ([`Facts`]) and the probes' verdicts into the data plane's [`Plan`] and the
//! routers' monitor rows ([`Planned`], one step: [`plan`]). After a probe verdict only the
//! router tables are recomputed ([`router_tables_of`]). Pure, and independent of history:
//! the same configuration, facts and verdicts give the same plan, whatever came before (a
//! router's table is a function of its gateways, see [`router::fill`]). The daemon gathers
//! the facts and keeps the committed plan, this module only decides.
//!
//! Ids: gateway and router ids in the plan are the config's indexes ([`GatewayId`],
//! [`RouterId`]); a rule's counter slot is its index (stable while the rule list is).

use std::{collections::HashMap, fmt, net::IpAddr, time::Duration};

use xwan_common::plan::{
    self, Gateway as PlanGateway, GatewayKind, Iface, Offload, Plan, RouterTable,
};

use crate::{
    config::{
        Config, DEFAULT_FIRST_TABLE, DEFAULT_MARK_MASK, DEFAULT_RULE_PRIORITY, Forwarding,
        GatewayId, LinkKind, MarkLayout, Netfilter, Router,
    },
    health::{Availability, HealthParams, Sla},
    netlink::{
        Interface,
        neighbours::Neighbour,
        policy::{GatewayRoute, Policy},
    },
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
pub fn router_spec(config: &Config, r: &Router) -> RouterSpec {
    let members = |v: &[crate::config::Member]| {
        v.iter()
            .map(|m| Member {
                gateway: m.gateway.0,
                weight: m.weight,
                placement: router::placement(&config.gateway(m.gateway).name),
            })
            .collect()
    };
    RouterSpec {
        name: r.name.clone(),
        mains: members(&r.mains),
        backups: members(&r.backups),
        options: r.options,
        preferred: None,
    }
}

/// Whose verdict on a gateway: a router's (each router judges its gateways with its own
/// `frequency`, `wait`, `tries`, `recover` and `sla`), or the gateway's own, for what is not
/// a router's (its return routes): the verdict of the router that probes it most often.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Judge {
    /// Router `i` of the configuration.
    Router(usize),
    Gateway,
}

/// The probes' verdicts: a gateway's (by id) availability as a [`Judge`] sees it.
pub type Verdicts<'a> = &'a dyn Fn(Judge, u16) -> Availability;

/// Routers with `load_balancing = "best-quality"`: the gateway router `i` takes new
/// connections to, as `router::quality::pick` chose it (`None`: its first candidate).
pub type Picks<'a> = &'a dyn Fn(usize) -> Option<u16>;

/// How router `r` judges `gateway`: its probe timing and SLA, the gateway's quorum.
pub fn router_health(config: &Config, r: &Router, gateway: GatewayId) -> HealthParams {
    HealthParams {
        frequency: r.frequency,
        wait: r.wait,
        tries: r.tries.get(),
        recover: r.recover.get(),
        sla: r.sla.as_ref().map(sla),
        sla_alarm: r.sla_alarm.as_ref().map(sla),
        damping: r.damping,
        quorum: config.gateway(gateway).quorum,
    }
}

fn sla(s: &crate::config::Sla) -> Sla {
    Sla {
        max_rtt: s.rtt,
        max_jitter: s.jitter,
        max_loss_pct: s.loss,
        window: s.window.get() as usize,
    }
}

/// How `judge` judges `gateway`.
pub fn judge_health(config: &Config, judge: Judge, gateway: GatewayId) -> HealthParams {
    match judge {
        Judge::Router(i) => router_health(config, &config.routers[i], gateway),
        Judge::Gateway => health_params(config, gateway),
    }
}

/// The gateway's own judgement ([`Judge::Gateway`]): that of the router using it that probes
/// it most often (the smallest `frequency`, the first such router), or the defaults when no
/// router uses it.
pub fn health_params(config: &Config, gateway: GatewayId) -> HealthParams {
    let routers = config.routers.iter().filter(|r| r.uses(gateway));
    match routers.min_by_key(|r| r.frequency) {
        Some(r) => router_health(config, r, gateway),
        None => HealthParams {
            quorum: config.gateway(gateway).quorum,
            ..HealthParams::default()
        },
    }
}

/// Every distinct judgement of `gateway` (equal settings share one): the gateway's own
/// first, then its routers' in configuration order. One probe task runs for each.
pub fn judgements(config: &Config, gateway: GatewayId) -> Vec<HealthParams> {
    let mut out = vec![health_params(config, gateway)];
    for r in config.routers.iter().filter(|r| r.uses(gateway)) {
        let p = router_health(config, r, gateway);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Router tables for the current availability, with each router's monitor rows (index =
/// router id), each router judging its gateways itself. [`plan`] calls it for a whole new
/// plan.
pub fn router_tables(
    config: &Config,
    ready: Verdicts,
    picks: Picks,
) -> (Vec<RouterTable>, Vec<Vec<router::GatewayStatus>>) {
    let ids: Vec<usize> = (0..config.routers.len()).collect();
    router_tables_of(config, &ids, ready, picks)
        .into_iter()
        .unzip()
}

/// [`router_tables`] for the routers `ids` only (indexes into the configuration's routers):
/// after one gateway's verdict only the routers it belongs to can change.
pub fn router_tables_of(
    config: &Config,
    ids: &[usize],
    ready: Verdicts,
    picks: Picks,
) -> Vec<(RouterTable, Vec<router::GatewayStatus>)> {
    ids.iter()
        .map(|&i| {
            let mut spec = router_spec(config, &config.routers[i]);
            spec.preferred = picks(i);
            router::table(&spec, &|g| ready(Judge::Router(i), g))
        })
        .collect()
}

/// The candidates of best-quality router `i`: the gateways it would make active if it
/// balanced over them, in list order (mains first).
pub fn quality_candidates(config: &Config, i: usize, ready: Verdicts) -> Vec<u16> {
    let mut spec = router_spec(config, &config.routers[i]);
    spec.options.load_balancing = router::LoadBalancing::Connection;
    let set = router::active_set(&spec, &|g| ready(Judge::Router(i), g));
    set.active.iter().map(|m| m.gateway).collect()
}

/// Gateways the data plane can use now: their interface exists and is up, and (XDP
/// forwarding) an Ethernet next hop's MAC is resolved; the kernel path resolves it itself.
/// Others are left out of the plan (and must not be in router tables).
pub fn usable(config: &Config, facts: &Facts, gateway: GatewayId) -> bool {
    let g = config.gateway(gateway);
    let link = config.link(g.link);
    let kernel = matches!(config.agent.forwarding, Forwarding::Netfilter(_));
    match (facts.interfaces.get(&link.interface), link.kind) {
        (Some(i), LinkKind::Tunnel) => i.is_up(),
        (Some(i), LinkKind::Ethernet) => {
            i.is_up() && (kernel || facts.neighbours.contains_key(&(i.ifindex, g.address)))
        }
        (None, _) => false,
    }
}

/// The marks, tables and rule priority of xwan's policy routing: `[agent.netfilter]`'s in
/// `netfilter` mode; in XDP mode, where only probes to remote targets use it, the defaults
/// (`None` if the configuration has more gateways than the default mask has marks).
pub fn policy_layout(config: &Config) -> Option<Netfilter> {
    match config.agent.forwarding {
        Forwarding::Netfilter(n) => Some(n),
        Forwarding::Xdp => Some(Netfilter {
            marks: MarkLayout::of_mask(DEFAULT_MARK_MASK, config.gateways.len() as u32)?,
            first_table: DEFAULT_FIRST_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
        }),
    }
}

/// Whether `gateway` has a check target beyond it: neither its own address nor on its
/// link's subnet. Those are probed through the gateway's mark and table ([`probe_mark`]).
pub fn has_remote_targets(config: &Config, gateway: GatewayId) -> bool {
    let g = config.gateway(gateway);
    let net = config.link(g.link).address.map(|a| a.network());
    (g.check.iter()).any(|&t| t != g.address && !net.is_some_and(|n| n.contains(t)))
}

/// The firewall mark `gateway`'s probes carry (`SO_MARK`): its policy-routing mark when it
/// has remote targets ([`has_remote_targets`]), so that they leave through the gateway's link
/// and next hop whatever the main table says.
pub fn probe_mark(config: &Config, gateway: GatewayId) -> Option<u32> {
    let n = policy_layout(config)?;
    has_remote_targets(config, gateway).then(|| n.marks.mark(gateway.0))
}

/// The policy routing xwan writes: per gateway, its mark's rule and its table's default
/// route (via its address on an Ethernet link, into the interface of a tunnel), and the next
/// hops the kernel keeps resolved ([`managed_neighbours`]).
/// * `netfilter` mode: every [`usable`] gateway; the kernel forwards steered traffic by it.
/// * XDP mode: the gateways with remote check targets whose interface is up (their next hop
///   need not be resolved: their probes resolve it); only their probes use it. `None` when
///   there are none and no next hop to keep resolved (nothing of xwan's stays in the kernel).
///
/// A gateway whose link is down has neither rule nor route: the kernel refuses a route
/// through it, and no flow is marked for it (it is not Ready); the plan that follows the link
/// coming up writes them.
pub fn policy(config: &Config, facts: &Facts) -> Option<Policy> {
    let layout = policy_layout(config);
    let xdp = config.agent.forwarding == Forwarding::Xdp;
    let gateways: Vec<GatewayRoute> = (config.gateways.iter().enumerate())
        .filter_map(|(id, g)| {
            let n = layout?;
            let id = GatewayId(id as u16);
            let link = config.link(g.link);
            let i = facts.interfaces.get(&link.interface)?;
            let wanted = match xdp {
                true => i.is_up() && has_remote_targets(config, id),
                false => usable(config, facts, id),
            };
            if !wanted {
                return None;
            }
            let (mark, table) = (n.marks.mark(id.0), n.table(id));
            Some(match link.kind {
                LinkKind::Ethernet => {
                    GatewayRoute::ethernet(mark, table, i.ifindex, g.address, g.address6)
                }
                LinkKind::Tunnel => GatewayRoute::tunnel(mark, table, i.ifindex),
            })
        })
        .collect();
    let neighbours = managed_neighbours(config, facts);
    if xdp && gateways.is_empty() && neighbours.is_empty() {
        return None;
    }
    Some(Policy {
        priority: layout.map_or(DEFAULT_RULE_PRIORITY, |n| n.rule_priority),
        mask: layout.map_or(0, |n| n.marks.mask()),
        gateways,
        neighbours,
    })
}

/// The next hops whose MAC the data plane writes into frames, on Ethernet links that are up:
/// a gateway's address under XDP forwarding, its next hop of each family for the fast path of
/// confirmed flows in `netfilter` mode. The kernel keeps them resolved
/// ([`crate::netlink::neighbours`]): nothing else would once the data plane, not the kernel,
/// sends to them, and a gateway checked through other targets would never become usable.
pub fn managed_neighbours(config: &Config, facts: &Facts) -> Vec<Neighbour> {
    let mut hops: Vec<Neighbour> = (config.gateways.iter())
        .filter_map(|g| {
            let link = config.link(g.link);
            let i = facts.interfaces.get(&link.interface)?;
            (link.kind == LinkKind::Ethernet && i.is_up()).then_some((g, i.ifindex))
        })
        .flat_map(|(g, ifindex)| {
            let hops: Vec<IpAddr> = match config.agent.forwarding {
                Forwarding::Xdp => vec![g.address],
                Forwarding::Netfilter(_) => g.next_hops().collect(),
            };
            hops.into_iter()
                .map(move |address| Neighbour { ifindex, address })
        })
        .collect();
    // Gateways may share a next hop (one router, several marks or SLAs).
    hops.sort_unstable();
    hops.dedup();
    hops
}

/// A configuration planned: what the data plane gets, and what `xwan status` and the metrics
/// show of its routers.
#[derive(Clone, Debug, Default)]
pub struct Planned {
    /// The maps' contents; `plan.routers` are the router tables (index = router id).
    pub plan: Plan,
    /// Each router's monitor rows (index = router id).
    pub rows: Vec<Vec<router::GatewayStatus>>,
}

/// The plan for `config` given `facts` and availability (`ready`: the probes' verdicts, the
/// plan adds whether the gateway is [`usable`]), best-quality routers on their first
/// candidate. A gateway's own ready flag (its return routes) is its [`Judge::Gateway`]
/// verdict.
pub fn plan(config: &Config, facts: &Facts, ready: Verdicts) -> Result<Planned, PlanningError> {
    plan_with(config, facts, ready, &|_| None)
}

/// [`plan`] with best-quality routers on the gateways `picks` gives.
pub fn plan_with(
    config: &Config,
    facts: &Facts,
    ready: Verdicts,
    picks: Picks,
) -> Result<Planned, PlanningError> {
    let ready = |j: Judge, id: u16| match usable(config, facts, GatewayId(id)) {
        true => ready(j, id),
        false => Availability::Unavailable,
    };
    let (tables, rows) = router_tables(config, &ready, picks);
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
        let kind = match (link.kind, config.agent.forwarding) {
            // The fast path of confirmed flows needs the next hops the gateway's routing
            // table names (per family) and the egress MAC: Ethernet links only.
            (LinkKind::Ethernet, Forwarding::Netfilter(_)) => {
                let mac = |v6| {
                    g.next_hop(v6)
                        .and_then(|a| facts.neighbours.get(&(i.ifindex, a)).copied())
                };
                let offload = match (i.mac, mac(false), mac(true)) {
                    (Some(egress_mac), v4, v6) if v4.is_some() || v6.is_some() => {
                        Some(Offload { egress_mac, v4, v6 })
                    }
                    _ => None,
                };
                GatewayKind::Kernel { offload }
            }
            (LinkKind::Tunnel, Forwarding::Netfilter(_)) => GatewayKind::KERNEL,
            (LinkKind::Tunnel, Forwarding::Xdp) => GatewayKind::Tunnel,
            (LinkKind::Ethernet, Forwarding::Xdp) => {
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
            ready: ready(Judge::Gateway, id.0).is_usable(),
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

    let plan = Plan {
        ifaces,
        local_addrs: facts.local_addrs.clone(),
        rules,
        routers: tables,
        gateways,
        links,
        flow_idle_ns: duration_ns(config.agent.flow_idle),
        marks: match config.agent.forwarding {
            Forwarding::Netfilter(n) => Some(n.marks),
            Forwarding::Xdp => None,
        },
    };
    Ok(Planned { plan, rows })
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::netlink::policy::NextHop;

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
        let Planned { plan: p, rows } = plan(&config, &f, &|_, _| Availability::Ready).unwrap();
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
        // Every router's table sends everything to its main while all are Ready, and its
        // monitor rows say so.
        assert_eq!(rows.len(), config.routers.len());
        for (i, r) in config.routers.iter().enumerate() {
            let main = r.mains[0].gateway.0;
            assert_eq!(p.routers[i].active_gateways(), vec![main], "{}", r.name);
            let row = rows[i].iter().find(|s| s.gateway == main).unwrap();
            assert_eq!(row.slots, xwan_common::maps::ROUTER_SLOTS, "{}", r.name);
        }
    }

    #[test]
    fn netfilter_forwarding_plans_the_kernel_path_and_its_policy_routing() {
        let text = SEED.replacen("[agent]\n", "[agent]\nforwarding = \"netfilter\"\n", 1);
        assert_ne!(text, SEED);
        let (config, _) = config::parse(&text, "seed-branch.toml").unwrap();
        let f = facts();
        let Planned { plan: p, .. } = plan(&config, &f, &|_, _| Availability::Ready).unwrap();
        p.validate().unwrap();
        assert!(p.gateways.iter().all(|g| g.kind.is_kernel() && g.ready));
        let marks = p.marks.expect("marks");
        assert_eq!(marks.mask(), crate::config::DEFAULT_MARK_MASK);
        let routing = policy(&config, &f).expect("a policy");
        assert_eq!(routing.priority, crate::config::DEFAULT_RULE_PRIORITY);
        // One per gateway: its mark, its table, into its tunnel interface.
        for (id, g) in config.gateways.iter().enumerate() {
            let ifindex = f.interfaces[&config.link(g.link).interface].ifindex;
            let want = GatewayRoute::tunnel(
                marks.mark(id as u16),
                crate::config::DEFAULT_FIRST_TABLE + id as u32,
                ifindex,
            );
            assert!(routing.gateways.contains(&want), "{}: {routing:?}", g.name);
        }
        // A gateway whose link is down gets no route (the kernel would refuse it).
        let mut down = f.clone();
        down.interfaces.get_mut("vti-wan2").unwrap().carrier = false;
        let wan2 = config.gateway_by_name("RemoteTunWAN2").unwrap();
        let routing = policy(&config, &down).unwrap();
        assert_eq!(routing.gateways.len(), config.gateways.len() - 1);
        assert!(
            routing
                .gateways
                .iter()
                .all(|g| g.mark != marks.mark(wan2.0))
        );
        // XDP forwarding has none.
        let (xdp, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        assert_eq!(policy(&xdp, &f), None);
    }

    #[test]
    fn missing_lan_interface_is_an_error_naming_it() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let mut f = facts();
        f.interfaces.remove("lan0");
        let e = plan(&config, &f, &|_, _| Availability::Ready).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LAN interface: interface 'lan0' does not exist; create it or fix the configuration"
        );
    }

    /// RemoteTunWAN2 is in ProductionRouter and VoIPRouter: with equal settings one task
    /// judges it for both; once VoIPRouter probes faster with an SLA, each router has its own
    /// judgement (and the gateway's own is VoIPRouter's, the most frequent).
    #[test]
    fn each_router_judges_a_shared_gateway_with_its_own_settings() {
        let (same, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let wan2 = GatewayId(1);
        assert_eq!(same.gateway(wan2).name, "RemoteTunWAN2");
        assert_eq!(judgements(&same, wan2).len(), 1);
        let text = SEED.replacen(
            "name = \"VoIPRouter\"\n",
            "name = \"VoIPRouter\"\nfrequency = \"1s\"\nwait = \"500ms\"\nsla = { rtt = \"150ms\" }\n",
            1,
        );
        let (split, _) = config::parse(&text, "seed-branch.toml").unwrap();
        let j = judgements(&split, wan2);
        assert_eq!(j.len(), 2);
        let production = Judge::Router(1);
        let voip = Judge::Router(2);
        assert_eq!(split.routers[2].name, "VoIPRouter");
        assert_eq!(
            judge_health(&split, voip, wan2).frequency,
            Duration::from_secs(1)
        );
        assert!(judge_health(&split, voip, wan2).sla.is_some());
        assert_eq!(
            judge_health(&split, production, wan2),
            HealthParams::default()
        );
        assert_eq!(j[0], judge_health(&split, voip, wan2));
        assert_eq!(j[0], judge_health(&split, Judge::Gateway, wan2));
        // WAN1 is not in VoIPRouter: one judgement still.
        assert_eq!(judgements(&split, GatewayId(0)).len(), 1);
        // The plan takes each router's own verdict: WAN2 Ready for VoIPRouter only.
        let f = facts();
        let ready = |j: Judge, g: u16| match g != wan2.0 || j == voip {
            true => Availability::Ready,
            false => Availability::Unavailable,
        };
        let Planned { plan: p, rows } = plan(&split, &f, &ready).unwrap();
        let wan2_ready = |r: usize| {
            let row = rows[r].iter().find(|s| s.gateway == wan2.0).unwrap();
            row.availability.is_usable()
        };
        assert!(wan2_ready(2) && !wan2_ready(1));
        // ProductionRouter's main is down for it: its backups take over.
        assert!(!p.routers[1].slots.contains(&wan2.0) && !p.routers[1].slots.is_empty());
        // Its own flag (return routes) is the gateway's judgement: not VoIPRouter's here.
        assert!(!p.gateways.iter().find(|g| g.id == wan2.0).unwrap().ready);
    }

    /// XDP mode: no policy routing at all until a gateway has a check target beyond it;
    /// then that gateway alone gets its rule and table (into its tunnel here), and its
    /// probes carry the mark. Targets on the link (its address, its subnet) need none.
    #[test]
    fn remote_check_targets_get_their_gateways_policy_routing() {
        let (plain, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let f = facts();
        assert_eq!(policy(&plain, &f), None);
        let with = |check: &str| {
            let line = format!("address = \"172.16.1.2\"\ncheck = [{check}]\n");
            let text = SEED.replacen("address = \"172.16.1.2\"\n", &line, 1);
            config::parse(&text, "seed-branch.toml").unwrap().0
        };
        let on_link = with("\"172.16.1.2\", \"172.16.1.1\"");
        assert!(!has_remote_targets(&on_link, GatewayId(0)));
        assert_eq!(policy(&on_link, &f), None);
        let remote = with("\"172.16.1.2\", \"10.2.0.1\"");
        assert!(has_remote_targets(&remote, GatewayId(0)));
        let p = policy(&remote, &f).expect("a policy for the remote target");
        let mark = probe_mark(&remote, GatewayId(0)).expect("a probe mark");
        assert_eq!(p.gateways.len(), 1);
        let g = p.gateways[0];
        assert_eq!((g.mark, g.table), (mark, DEFAULT_FIRST_TABLE));
        let ifindex = f.interfaces["vti-wan1"].ifindex;
        assert_eq!(g.v4, Some(NextHop::Device { ifindex }));
        assert_eq!(g.v6, Some(NextHop::Device { ifindex }));
        assert_eq!(probe_mark(&remote, GatewayId(1)), None);
        // Its interface down: no rule, no route (the kernel refuses a route through it).
        let mut down = f.clone();
        down.interfaces.get_mut("vti-wan1").unwrap().carrier = false;
        assert_eq!(policy(&remote, &down), None);
    }

    #[test]
    fn a_gateway_whose_link_is_down_is_not_ready() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let mut f = facts();
        f.interfaces.get_mut("vti-wan2").unwrap().carrier = false;
        let p = plan(&config, &f, &|_, _| Availability::Ready).unwrap().plan;
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
        let p = plan(&config, &f, &|_, _| Availability::Ready).unwrap().plan;
        p.validate().unwrap();
        assert_eq!(
            p.links.iter().map(|l| l.ifindex).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let wan3 = config.gateway_by_name("LocalTunWAN3").unwrap();
        f.neighbours
            .insert((12, config.gateway(wan3).address), [2, 0, 0, 0, 0, 9]);
        let p = plan(&config, &f, &|_, _| Availability::Ready).unwrap().plan;
        p.validate().unwrap();
        assert_eq!(p.links.len(), 3);
    }

    /// In `netfilter` mode an Ethernet gateway's confirmed flows may skip the kernel: its
    /// plan entry carries the next hop of each family whose neighbour is known (the address,
    /// and `address6` for IPv6), and none while no neighbour is known.
    #[test]
    fn a_kernel_path_ethernet_gateway_offloads_to_its_known_next_hops() {
        let text = SEED
            .replacen("[agent]\n", "[agent]\nforwarding = \"netfilter\"\n", 1)
            .replacen(
                "interface = \"vti-wan3\"\nkind = \"tunnel\"",
                "interface = \"vti-wan3\"\nkind = \"ethernet\"",
                1,
            );
        let (config, _) = config::parse(&text, "seed-branch.toml").unwrap();
        let wan3 = config.gateway_by_name("RemoteTunWAN3").unwrap();
        let mut config = config;
        config.gateways[wan3.0 as usize].address6 = Some("fd00:3::1".parse().unwrap());
        let g = config.gateway(wan3).clone();
        let mut f = facts();
        const EGRESS: [u8; 6] = [2, 0, 0, 0, 0, 3];
        f.interfaces.get_mut("vti-wan3").unwrap().mac = Some(EGRESS);
        let kind = |f: &Facts| {
            let p = plan(&config, f, &|_, _| Availability::Ready).unwrap().plan;
            p.validate().unwrap();
            p.gateways.iter().find(|x| x.id == wan3.0).unwrap().kind
        };
        assert_eq!(kind(&f), GatewayKind::KERNEL, "no neighbour known yet");
        f.neighbours.insert((12, g.address), [2, 0, 0, 0, 0, 4]);
        let want = |v6| GatewayKind::Kernel {
            offload: Some(Offload {
                egress_mac: EGRESS,
                v4: Some([2, 0, 0, 0, 0, 4]),
                v6,
            }),
        };
        assert_eq!(kind(&f), want(None));
        f.neighbours
            .insert((12, "fd00:3::1".parse().unwrap()), [2, 0, 0, 0, 0, 6]);
        assert_eq!(kind(&f), want(Some([2, 0, 0, 0, 0, 6])));
        // Tunnels have no next hop to rewrite to: every packet takes the kernel path.
        let wan1 = config.gateway_by_name("RemoteTunWAN1").unwrap();
        let p = plan(&config, &f, &|_, _| Availability::Ready).unwrap().plan;
        let k1 = p.gateways.iter().find(|x| x.id == wan1.0).unwrap().kind;
        assert_eq!(k1, GatewayKind::KERNEL);
    }

    /// The next hops whose MAC the data plane writes are kept resolved by the kernel: an
    /// Ethernet gateway's address under XDP, both its next hops in `netfilter` mode (for the
    /// fast path); none for tunnels or a link that is down. That alone makes a policy in XDP
    /// mode (no rule, no route).
    #[test]
    fn the_kernel_keeps_the_data_planes_next_hops_resolved() {
        let ethernet = SEED.replacen(
            "interface = \"vti-wan3\"\nkind = \"tunnel\"",
            "interface = \"vti-wan3\"\nkind = \"ethernet\"",
            1,
        );
        let netfilter = ethernet.replacen("[agent]\n", "[agent]\nforwarding = \"netfilter\"\n", 1);
        let mut f = facts();
        f.interfaces.get_mut("vti-wan3").unwrap().mac = Some([2, 0, 0, 0, 0, 3]);
        let parse = |text: &str| {
            let (mut config, _) = config::parse(text, "seed-branch.toml").unwrap();
            let wan3 = config.gateway_by_name("RemoteTunWAN3").unwrap();
            config.gateways[wan3.0 as usize].address6 = Some("fd00:3::1".parse().unwrap());
            let address = config.gateway(wan3).address;
            (config, address)
        };
        let hop = |address: IpAddr| Neighbour {
            ifindex: 12,
            address,
        };
        let v6 = hop("fd00:3::1".parse().unwrap());

        let (xdp, address) = parse(&ethernet);
        assert_eq!(managed_neighbours(&xdp, &f), vec![hop(address)]);
        let p = policy(&xdp, &f).expect("a policy for the next hop");
        assert!(p.gateways.is_empty());
        assert_eq!(p.neighbours, vec![hop(address)]);
        let (nf, _) = parse(&netfilter);
        let mut both = vec![hop(address), v6];
        both.sort();
        assert_eq!(managed_neighbours(&nf, &f), both);
        assert_eq!(policy(&nf, &f).unwrap().neighbours, both);

        let mut down = f.clone();
        down.interfaces.get_mut("vti-wan3").unwrap().carrier = false;
        assert_eq!(managed_neighbours(&xdp, &down), vec![]);
        assert_eq!(policy(&xdp, &down), None);
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
