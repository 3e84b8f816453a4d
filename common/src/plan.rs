//! The plan: what the data plane must do, as plain Rust values.
//!
//! The agent turns a validated configuration into a [`Plan`]; `agent::datapath` writes a plan
//! into the maps, and [`crate::model`] executes the same plan on packets. Ids are indexes:
//! a rule's index is its priority (0 first), a router's and a gateway's id index the maps.
//! Constructors check the data plane's limits so a plan that exists fits in the maps.

use std::fmt;
use std::net::IpAddr;

use crate::maps::{MAX_GATEWAYS, MAX_IFACES, MAX_ROUTERS, MAX_RULES, MarkLayout, ROUTER_SLOTS};

/// An IP network (address + prefix length), host bits cleared.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpNet {
    addr: IpAddr,
    len: u8,
}

impl IpNet {
    /// Fails when `len` exceeds the address family's width. Host bits are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PlanError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PlanError(format!(
                "prefix length /{len} is longer than /{max} for {addr}"
            )));
        }
        Ok(IpNet {
            addr: mask(addr, len),
            len,
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when `ip` is inside this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }

    /// True when `other` lies entirely inside this network.
    pub fn covers(&self, other: &IpNet) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl std::str::FromStr for IpNet {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, PlanError> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| PlanError(format!("'{a}' is not an IPv4 or IPv6 address")))?;
        let len = match l {
            Some(l) => l
                .parse()
                .map_err(|_| PlanError(format!("'/{l}' is not a prefix length")))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(addr, len)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len as u32)
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// An inclusive port range `first..=last` (a single port has `first == last`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, PlanError> {
        if first > last {
            return Err(PlanError(format!("port range {first}-{last} is reversed")));
        }
        Ok(PortRange { first, last })
    }

    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Steer through the router with this id.
    Route(u16),
    /// Hand to the kernel's routing.
    Pass,
    /// Drop.
    Block,
}

/// What a packet must carry for a rule to match: every non-empty criterion holds, an empty
/// one matches anything. `I` names an ingress interface: by name in the configuration, by
/// ifindex in a plan. The one definition of the match fields: a new one is added here, then
/// parsed by the config and compiled for the programs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Criteria<I> {
    pub src: Vec<IpNet>,
    pub dst: Vec<IpNet>,
    pub protocols: Vec<u8>,
    /// Only with protocols that have ports (or no protocol criterion).
    pub src_ports: Vec<PortRange>,
    pub dst_ports: Vec<PortRange>,
    /// DSCP values (0..=63) the packet must carry.
    pub dscp: Vec<u8>,
    /// Ingress interfaces.
    pub ifaces: Vec<I>,
}

impl<I> Default for Criteria<I> {
    fn default() -> Criteria<I> {
        Criteria {
            src: vec![],
            dst: vec![],
            protocols: vec![],
            src_ports: vec![],
            dst_ports: vec![],
            dscp: vec![],
            ifaces: vec![],
        }
    }
}

impl<I> Criteria<I> {
    /// The same criteria with each interface replaced by `f`'s answer (the first error
    /// stops).
    pub fn map_ifaces<J, E>(&self, f: impl FnMut(&I) -> Result<J, E>) -> Result<Criteria<J>, E> {
        Ok(Criteria {
            src: self.src.clone(),
            dst: self.dst.clone(),
            protocols: self.protocols.clone(),
            src_ports: self.src_ports.clone(),
            dst_ports: self.dst_ports.clone(),
            dscp: self.dscp.clone(),
            ifaces: self.ifaces.iter().map(f).collect::<Result<_, E>>()?,
        })
    }
}

/// One rule of a plan.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rule {
    /// Interfaces by ifindex.
    pub criteria: Criteria<u32>,
    pub action: Action,
    /// DSCP to impose on matching packets (`Route` and `Pass`).
    pub set_dscp: Option<u8>,
    /// Counter slot (stable across reloads; `< MAX_RULE_COUNTERS`).
    pub counter: u16,
}

impl Rule {
    /// A rule matching everything, with the given action.
    pub fn any(action: Action) -> Rule {
        Rule {
            criteria: Criteria::default(),
            action,
            set_dscp: None,
            counter: 0,
        }
    }
}

/// How a router hashes a flow onto its slots.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum HashMode {
    /// 5-tuple: each connection independently.
    #[default]
    Connection,
    /// Source address: a host's connections all take one gateway.
    Source,
}

/// A router's committed table: the output of the agent's router logic.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RouterTable {
    /// Gateway id per slot: empty (no gateway active) or exactly `ROUTER_SLOTS` long.
    pub slots: Vec<u16>,
    /// Gateways an existing flow may stay on (see [`crate::SlotTable::keep`]).
    pub keep: Vec<u16>,
    pub hash: HashMode,
    /// `on_failure = default-route` (true) or `drop` (false).
    pub on_failure_pass: bool,
}

impl RouterTable {
    /// A table that sends every slot to one gateway and keeps flows on it.
    pub fn single(gateway: u16) -> RouterTable {
        RouterTable {
            slots: vec![gateway; ROUTER_SLOTS],
            keep: vec![gateway],
            hash: HashMode::Connection,
            on_failure_pass: false,
        }
    }

    /// Distinct gateways present in the slots.
    pub fn active_gateways(&self) -> Vec<u16> {
        let mut seen = vec![0u64; (u16::MAX as usize + 1) / 64];
        for &g in &self.slots {
            seen[g as usize / 64] |= 1 << (g % 64);
        }
        let mut v = Vec::new();
        for (w, &bits) in seen.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                v.push((w * 64) as u16 + b.trailing_zeros() as u16);
                b &= b - 1;
            }
        }
        v
    }
}

/// How a gateway is reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GatewayKind {
    /// An L3 device: the packet is handed to TC, which redirects it into `ifindex`.
    Tunnel,
    /// An Ethernet next hop: MACs rewritten, redirected out of `ifindex`.
    Ethernet {
        next_hop_mac: [u8; 6],
        egress_mac: [u8; 6],
    },
    /// The kernel path (`netfilter` forwarding mode): the packet is handed to the kernel
    /// with the gateway's mark ([`Plan::marks`]); the kernel's routing (the gateway's table)
    /// sends it out of `ifindex`, and netfilter sees it.
    Kernel {
        /// The fast path of the gateway's flows that conntrack confirmed
        /// ([`crate::FLOW_OFFLOADED`]); `None`: every packet takes the kernel path.
        offload: Option<Offload>,
    },
}

impl GatewayKind {
    /// The kernel path without a fast path.
    pub const KERNEL: GatewayKind = GatewayKind::Kernel { offload: None };

    pub fn is_kernel(&self) -> bool {
        matches!(self, GatewayKind::Kernel { .. })
    }

    /// Whether XDP redirects some of the gateway's packets (through its DEVMAP entry).
    pub fn redirects(&self) -> bool {
        matches!(
            self,
            GatewayKind::Ethernet { .. } | GatewayKind::Kernel { offload: Some(_) }
        )
    }
}

/// How a kernel-path gateway's offloaded flows are forwarded: as an Ethernet gateway's, to
/// the next hop the gateway's routing table names for the packet's family (the kernel would
/// send it there), where that neighbour is known.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Offload {
    pub egress_mac: [u8; 6],
    /// The IPv4 next hop's MAC.
    pub v4: Option<[u8; 6]>,
    /// The IPv6 next hop's MAC.
    pub v6: Option<[u8; 6]>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Gateway {
    pub id: u16,
    pub kind: GatewayKind,
    /// Egress interface index.
    pub ifindex: u32,
    /// Egress L3 MTU.
    pub mtu: u32,
    pub ready: bool,
}

/// An interface the LAN program is attached to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Iface {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// A link whose arriving connections get return routes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Link {
    pub ifindex: u32,
    /// Frames on this link start with an Ethernet header.
    pub l2: bool,
    pub return_gateway: u16,
}

/// Everything the data plane is told.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Plan {
    pub ifaces: Vec<Iface>,
    pub local_addrs: Vec<IpAddr>,
    /// Ordered: the first matching rule wins.
    pub rules: Vec<Rule>,
    /// Index = router id.
    pub routers: Vec<RouterTable>,
    pub gateways: Vec<Gateway>,
    pub links: Vec<Link>,
    /// A flow unseen this long is decided anew (0 = never).
    pub flow_idle_ns: u64,
    /// Where kernel-path gateways' marks lie; needed when any gateway is
    /// [`GatewayKind::Kernel`].
    pub marks: Option<MarkLayout>,
}

impl Plan {
    /// Whether `other` differs from this plan in its gateways and router tables at most (the
    /// same routers, rules, interfaces, addresses, links and settings): what a neighbour, a
    /// link's carrier or a verdict changes, and the data plane can take without a new
    /// ruleset.
    pub fn differs_only_in_gateways(&self, other: &Plan) -> bool {
        self.routers.len() == other.routers.len()
            && self.ifaces == other.ifaces
            && self.local_addrs == other.local_addrs
            && self.rules == other.rules
            && self.links == other.links
            && self.flow_idle_ns == other.flow_idle_ns
            && self.marks == other.marks
    }

    /// Checks that the plan fits the data plane's maps and refers only to what it defines.
    pub fn validate(&self) -> Result<(), PlanError> {
        let err = |s: String| Err(PlanError(s));
        if self.rules.len() > MAX_RULES {
            return err(format!(
                "{} rules; the data plane holds {MAX_RULES}",
                self.rules.len()
            ));
        }
        if self.routers.len() > MAX_ROUTERS as usize {
            return err(format!(
                "{} routers; the data plane holds {MAX_ROUTERS}",
                self.routers.len()
            ));
        }
        if self.ifaces.len() + self.links.len() > 2 * MAX_IFACES as usize {
            return err(format!(
                "too many interfaces; the data plane holds {MAX_IFACES} of each kind"
            ));
        }
        // By id: the routers' slots name gateways a million times at a thousand gateways, so
        // a scan of the list per slot made validation the agent's main cost.
        let mut defined = vec![false; MAX_GATEWAYS as usize];
        for g in &self.gateways {
            if g.id as u32 >= MAX_GATEWAYS {
                return err(format!(
                    "gateway id {} is out of range (< {MAX_GATEWAYS})",
                    g.id
                ));
            }
            if std::mem::replace(&mut defined[g.id as usize], true) {
                return err(format!("gateway id {} is defined twice", g.id));
            }
            if g.kind.is_kernel() {
                match self.marks {
                    None => {
                        return err(format!(
                            "gateway id {} takes the kernel path, but the plan has no marks",
                            g.id
                        ));
                    }
                    Some(m) if m.bits < 32 && g.id as u32 + 1 >= 1 << m.bits => {
                        return err(format!(
                            "gateway id {}: its mark does not fit {} mark bits",
                            g.id, m.bits
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let gateway = |id: u16| defined.get(id as usize).copied().unwrap_or(false);
        for (i, r) in self.rules.iter().enumerate() {
            if let Action::Route(id) = r.action
                && id as usize >= self.routers.len()
            {
                return err(format!(
                    "rule {i} routes via router {id}, which does not exist"
                ));
            }
            if r.set_dscp.is_some_and(|d| d > 63) || r.criteria.dscp.iter().any(|&d| d > 63) {
                return err(format!("rule {i}: DSCP values are 0..=63"));
            }
            if r.counter as usize >= MAX_RULES {
                return err(format!(
                    "rule {i}: counter slot {} is out of range",
                    r.counter
                ));
            }
        }
        for (i, t) in self.routers.iter().enumerate() {
            if !t.slots.is_empty() && t.slots.len() != ROUTER_SLOTS {
                return err(format!(
                    "router {i}: {} slots, need 0 or {ROUTER_SLOTS}",
                    t.slots.len()
                ));
            }
            if let Some(g) = t.slots.iter().chain(&t.keep).find(|&&g| !gateway(g)) {
                return err(format!("router {i} uses gateway {g}, which does not exist"));
            }
        }
        for l in &self.links {
            if !gateway(l.return_gateway) {
                return err(format!(
                    "link ifindex {} returns via unknown gateway {}",
                    l.ifindex, l.return_gateway
                ));
            }
        }
        Ok(())
    }
}

/// A plan that does not fit the data plane.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_gateways_are_distinct_and_sorted() {
        let mut t = RouterTable::single(5);
        assert_eq!(t.active_gateways(), [5]);
        t.slots.clear();
        assert!(t.active_gateways().is_empty());
        // Interleaved ids across several bitset words and lanes, the last id of the range,
        // and ids beyond it (which a valid plan never holds, but must still be reported).
        let ids = [3u16, 700, 64, 3, 1023, 65_535, 1024, 64];
        t.slots = (0..ROUTER_SLOTS).map(|i| ids[i * 7 % ids.len()]).collect();
        assert_eq!(t.active_gateways(), [3, 64, 700, 1023, 1024, 65_535]);
    }
}
