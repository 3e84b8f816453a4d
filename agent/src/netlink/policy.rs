//! Policy routing xwan owns for the `netfilter` forwarding mode (docs/firewall.md): the
//! kernel forwards a packet that `xwan_tc_steer` marked with a gateway's mark through that
//! gateway, so filtering, conntrack and NAT see it. The same marks take the probes of remote
//! check targets through their gateway in both modes, and a [`Policy`] also names the next
//! hops the kernel keeps resolved for the data plane ([`super::neighbours`]).
//!
//! Per gateway: a routing table holding one default route per family (via the gateway's
//! address on its link, or straight into its tunnel interface), and one rule per family
//! `fwmark MARK/MASK lookup TABLE`, all at one priority. Everything xwan writes carries the
//! routing protocol [`RTPROT_XWAN`]: that is how a later run adopts it and `xwan stop`
//! removes it, and nothing without it is ever changed or removed. What would make xwan's
//! routing silently wrong is an error naming it: a route someone else put in one of xwan's
//! tables, or a rule of someone else's that catches one of xwan's marks before xwan's rule.
//!
//! [`changes`] decides (pure, table-driven tests); [`Netlink::sync_policy`] reads the
//! kernel's rules and routes, applies the changes, and [`Netlink::remove_policy`] undoes all.
//!
//! # What a reader may change
//!
//! [`RTPROT_XWAN`] is how a later run recognises its rules and routes: changing it orphans
//! what older versions wrote.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use futures::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType, RouteVia,
    },
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use netlink_sys::AsyncSocket;
use rtnetlink::IpVersion;

use super::{
    Netlink, NetlinkError,
    neighbours::{self, Neighbour},
};

/// The routing protocol number on every rule and route xwan writes (`ip rule`/`ip route`
/// show it as `proto 120`); unassigned in iproute2's `rt_protos`.
pub const RTPROT_XWAN: u8 = 120;

/// The policy routing xwan wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Priority of every rule (the main table's rule is at 32766: this must be lower).
    pub priority: u32,
    /// The mark bits xwan uses; the gateways' marks lie within it.
    pub mask: u32,
    pub gateways: Vec<GatewayRoute>,
    /// Next hops the kernel keeps resolved for the data plane ([`super::neighbours`]).
    pub neighbours: Vec<Neighbour>,
}

/// One gateway's mark, table and the next hop of each family it routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GatewayRoute {
    pub mark: u32,
    pub table: u32,
    /// `None`: a packet of that family marked for this gateway finds no rule of xwan's and
    /// follows the main table.
    pub v4: Option<NextHop>,
    pub v6: Option<NextHop>,
}

impl GatewayRoute {
    /// An Ethernet gateway: via `address` for its family and via `address6`, if any, for
    /// IPv6 (the kernel has no IPv6 route via an IPv4 next hop).
    pub fn ethernet(
        mark: u32,
        table: u32,
        ifindex: u32,
        address: IpAddr,
        address6: Option<Ipv6Addr>,
    ) -> GatewayRoute {
        let via = |address| NextHop::Via { ifindex, address };
        let (v4, v6) = match address {
            IpAddr::V4(_) => (Some(via(address)), address6.map(|a| via(IpAddr::V6(a)))),
            IpAddr::V6(_) => (None, Some(via(address))),
        };
        GatewayRoute {
            mark,
            table,
            v4,
            v6,
        }
    }

    /// A tunnel gateway: straight into its interface, both families.
    pub fn tunnel(mark: u32, table: u32, ifindex: u32) -> GatewayRoute {
        let dev = Some(NextHop::Device { ifindex });
        GatewayRoute {
            mark,
            table,
            v4: dev,
            v6: dev,
        }
    }

    /// (family is IPv6, next hop) of each family this gateway routes.
    fn routes(&self) -> impl Iterator<Item = (bool, NextHop)> {
        [(false, self.v4), (true, self.v6)]
            .into_iter()
            .filter_map(|(v6, nh)| Some((v6, nh?)))
    }
}

/// Where a gateway's table sends one family's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// An Ethernet link: via this address (of the route's family) on interface `ifindex`.
    Via { ifindex: u32, address: IpAddr },
    /// An L3 tunnel interface: straight into it.
    Device { ifindex: u32 },
}

/// A rule as [`changes`] compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub v6: bool,
    pub priority: u32,
    /// `None`: the rule matches every mark.
    pub fwmark: Option<(u32, u32)>,
    pub table: u32,
    /// Carries [`RTPROT_XWAN`].
    pub ours: bool,
}

/// A route as [`changes`] compares them: only routes in xwan's tables matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub v6: bool,
    pub table: u32,
    /// `None`: something else than a default route via a next hop or into a device.
    pub next_hop: Option<NextHop>,
    pub ours: bool,
    /// As `ip route` would show it, for errors.
    pub text: String,
}

/// What [`changes`] asks of the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub delete_rules: Vec<Rule>,
    pub add_rules: Vec<Rule>,
    pub delete_routes: Vec<Route>,
    /// (family is IPv6, table, next hop): written with replace.
    pub set_routes: Vec<(bool, u32, NextHop)>,
    pub neighbours: neighbours::Changes,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Why the policy cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "routing table {table} holds a route xwan did not write ({route}): xwan uses one table \
         per gateway; remove that route or choose other tables for xwan"
    )]
    ForeignRoute { table: u32, route: String },
    #[error(
        "the rule '{rule}' (priority {priority}) catches packets xwan marks {mark:#x} before \
         xwan's rule at priority {ours}: remove it or give xwan other mark bits"
    )]
    ForeignRule {
        rule: String,
        priority: u32,
        mark: u32,
        ours: u32,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The rules `policy` wants: one per gateway and family it routes.
fn wanted_rules(policy: &Policy) -> Vec<Rule> {
    (policy.gateways.iter())
        .flat_map(|g| {
            g.routes().map(|(v6, _)| Rule {
                v6,
                priority: policy.priority,
                fwmark: Some((g.mark, policy.mask)),
                table: g.table,
                ours: true,
            })
        })
        .collect()
}

/// What to change so that the kernel's `rules` and `routes` become `policy`; an error when
/// someone else's rule or route stands in the way.
pub fn changes(policy: &Policy, rules: &[Rule], routes: &[Route]) -> Result<Changes, PolicyError> {
    let mut c = Changes::default();
    // Someone else's fwmark rule that matches one of xwan's marks and comes first.
    for r in rules
        .iter()
        .filter(|r| !r.ours && r.priority <= policy.priority)
    {
        let Some((mark, mask)) = r.fwmark else {
            continue;
        };
        if let Some(g) = (policy.gateways.iter()).find(|g| g.mark & mask == mark) {
            return Err(PolicyError::ForeignRule {
                rule: r.to_string(),
                priority: r.priority,
                mark: g.mark,
                ours: policy.priority,
            });
        }
    }
    let wanted_rules = wanted_rules(policy);
    c.delete_rules = (rules.iter())
        .filter(|r| r.ours && !wanted_rules.contains(r))
        .copied()
        .collect();
    c.add_rules = (wanted_rules.iter())
        .filter(|w| !rules.contains(w))
        .copied()
        .collect();

    let tables: Vec<u32> = policy.gateways.iter().map(|g| g.table).collect();
    if let Some(r) = routes.iter().find(|r| !r.ours && tables.contains(&r.table)) {
        return Err(PolicyError::ForeignRoute {
            table: r.table,
            route: r.text.clone(),
        });
    }
    // One default route per gateway and family, written with replace: a route whose next hop
    // changed is rewritten in place (no moment without a route).
    let routed = |v6: bool, table: u32| {
        (policy.gateways.iter()).any(|g| g.table == table && g.routes().any(|(f, _)| f == v6))
    };
    for g in &policy.gateways {
        for (v6, next_hop) in g.routes() {
            let present = routes.iter().any(|r| {
                r.ours && r.v6 == v6 && r.table == g.table && r.next_hop == Some(next_hop)
            });
            if !present {
                c.set_routes.push((v6, g.table, next_hop));
            }
        }
    }
    // Ours and not wanted: in a table no gateway has now, or of a family it does not route.
    c.delete_routes = (routes.iter())
        .filter(|r| r.ours && r.next_hop.is_some() && !routed(r.v6, r.table))
        .cloned()
        .collect();
    Ok(c)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = if self.v6 { "-6 " } else { "" };
        write!(f, "{family}{}: ", self.priority)?;
        match self.fwmark {
            Some((mark, mask)) => write!(f, "fwmark {mark:#x}/{mask:#x} ")?,
            None => write!(f, "from all ")?,
        }
        write!(f, "lookup {}", self.table)
    }
}

fn request(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what, source }
}

impl Netlink {
    /// Makes the kernel's policy routing what `policy` says, changing only what differs
    /// (a route rewritten needlessly would invalidate every cached route). Returns what
    /// changed.
    pub async fn sync_policy(&self, policy: &Policy) -> Result<Changes, PolicyError> {
        let (rules, routes) = self.read_policy(policy).await?;
        let mut c = changes(policy, &rules, &routes)?;
        self.apply_policy(&c).await?;
        c.neighbours = self.sync_neighbours(&policy.neighbours).await?;
        Ok(c)
    }

    /// Removes every rule, route and managed neighbour xwan wrote (`xwan stop`).
    pub async fn remove_policy(&self) -> Result<Changes, PolicyError> {
        let (rules, routes) = self.read_policy(&Policy::default()).await?;
        let mut c = Changes {
            delete_rules: rules.into_iter().filter(|r| r.ours).collect(),
            delete_routes: routes.into_iter().filter(|r| r.ours).collect(),
            ..Changes::default()
        };
        self.apply_policy(&c).await?;
        c.neighbours = self.remove_neighbours().await?;
        Ok(c)
    }

    /// Every rule, and the routes that are xwan's or in one of `policy`'s tables. Routes are
    /// read through dumps the kernel filters (`NETLINK_GET_STRICT_CHK`): by xwan's protocol,
    /// then table by table. A box with a full routing table (a million routes) is never
    /// dumped whole: that would take seconds at every start, also where xwan forwards with
    /// XDP and has nothing here.
    async fn read_policy(&self, policy: &Policy) -> Result<(Vec<Rule>, Vec<Route>), NetlinkError> {
        let (mut conn, strict, _) = rtnetlink::new_connection()?;
        conn.socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true)?;
        let conn = tokio::spawn(conn);
        let mut rules = Vec::new();
        let mut routes = Vec::new();
        let mut tables: Vec<u32> = policy.gateways.iter().map(|g| g.table).collect();
        tables.sort_unstable();
        tables.dedup();
        let read = async {
            for (v6, version) in [(false, IpVersion::V4), (true, IpVersion::V6)] {
                let mut dump = self.handle.rule().get(version).execute();
                while let Some(m) = dump.try_next().await.map_err(request("dump rules"))? {
                    rules.push(rule(v6, &m));
                }
                routes.extend(dump_routes(&strict, v6, Filter::Ours).await?);
                for &t in &tables {
                    let theirs = dump_routes(&strict, v6, Filter::Table(t)).await?;
                    routes.extend(theirs.into_iter().filter(|r| !r.ours));
                }
            }
            Ok((rules, routes))
        };
        let r = read.await;
        conn.abort();
        r
    }

    async fn apply_policy(&self, c: &Changes) -> Result<(), NetlinkError> {
        for r in &c.delete_rules {
            self.handle
                .rule()
                .del(rule_message(r))
                .execute()
                .await
                .map_err(request("delete rule"))?;
        }
        for r in &c.delete_routes {
            let Some(next_hop) = r.next_hop else {
                continue;
            };
            self.handle
                .route()
                .del(route_message(r.v6, r.table, next_hop))
                .execute()
                .await
                .map_err(request("delete route"))?;
        }
        for &(v6, table, next_hop) in &c.set_routes {
            self.handle
                .route()
                .add(route_message(v6, table, next_hop))
                .replace()
                .execute()
                .await
                .map_err(request("replace route"))?;
        }
        for r in &c.add_rules {
            let mut add = self.handle.rule().add();
            *add.message_mut() = rule_message(r);
            add.execute().await.map_err(request("add rule"))?;
        }
        Ok(())
    }
}

/// Which routes a filtered dump returns.
#[derive(Clone, Copy)]
enum Filter {
    /// xwan's, in every table.
    Ours,
    /// Everything in this table.
    Table(u32),
}

/// The routes of family `v6` that `filter` selects, through `strict`, a connection with
/// `NETLINK_GET_STRICT_CHK` set (otherwise the kernel ignores the filter and dumps all).
async fn dump_routes(
    strict: &rtnetlink::Handle,
    v6: bool,
    filter: Filter,
) -> Result<Vec<Route>, NetlinkError> {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    match filter {
        Filter::Ours => m.header.protocol = RouteProtocol::from(RTPROT_XWAN),
        Filter::Table(t) => m.attributes.push(RouteAttribute::Table(t)),
    }
    let mut routes = Vec::new();
    let mut dump = strict.route().get(m).execute();
    loop {
        match dump.try_next().await {
            Ok(Some(m)) => routes.push(route(v6, &m)),
            Ok(None) => return Ok(routes),
            // A table that does not exist yet has no route.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => {
                return Ok(routes);
            }
            Err(e) => return Err(request("dump routes")(e)),
        }
    }
}

fn rule(v6: bool, m: &RuleMessage) -> Rule {
    let mut r = Rule {
        v6,
        priority: 0,
        fwmark: None,
        table: m.header.table as u32,
        ours: false,
    };
    let (mut mark, mut mask) = (None, None);
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::FwMark(v) => mark = Some(*v),
            RuleAttribute::FwMask(v) => mask = Some(*v),
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Protocol(p) => r.ours = u8::from(*p) == RTPROT_XWAN,
            _ => {}
        }
    }
    // A mark without a mask matches all 32 bits.
    r.fwmark = mark.map(|m| (m, mask.unwrap_or(u32::MAX)));
    r
}

fn rule_message(r: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = RuleAction::ToTable;
    // The table goes in the attribute: table ids above 255 do not fit the header.
    m.header.table = 0;
    m.attributes.push(RuleAttribute::Priority(r.priority));
    if let Some((mark, mask)) = r.fwmark {
        m.attributes.push(RuleAttribute::FwMark(mark));
        m.attributes.push(RuleAttribute::FwMask(mask));
    }
    m.attributes.push(RuleAttribute::Table(r.table));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_XWAN)));
    m
}

fn route(v6: bool, m: &RouteMessage) -> Route {
    let mut table = m.header.table as u32;
    let (mut oif, mut gateway, mut via, mut default) = (None, None, None, true);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Via(RouteVia::Inet(a)) => via = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => via = Some(IpAddr::V6(*a)),
            RouteAttribute::Destination(_) => default = false,
            _ => {}
        }
    }
    default &= m.header.destination_prefix_length == 0 && m.header.kind == RouteType::Unicast;
    let next_hop = match (default, oif, gateway.or(via)) {
        (true, Some(ifindex), Some(address)) => Some(NextHop::Via { ifindex, address }),
        (true, Some(ifindex), None) => Some(NextHop::Device { ifindex }),
        _ => None,
    };
    let text = format!(
        "{}{} table {table}{}{}",
        if v6 { "-6 " } else { "" },
        if default { "default" } else { "a prefix" },
        gateway
            .or(via)
            .map(|a| format!(" via {a}"))
            .unwrap_or_default(),
        oif.map(|i| format!(" dev #{i}")).unwrap_or_default(),
    );
    Route {
        v6,
        table,
        next_hop,
        ours: u8::from(m.header.protocol) == RTPROT_XWAN,
        text,
    }
}

/// The default route of `table` for one family towards `next_hop`.
fn route_message(v6: bool, table: u32, next_hop: NextHop) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    // Table ids above 255 only fit the attribute, which the kernel reads first.
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::from(RTPROT_XWAN);
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(table));
    let ifindex = match next_hop {
        NextHop::Via { ifindex, address } => {
            m.header.scope = RouteScope::Universe;
            m.attributes.push(RouteAttribute::Gateway(address.into()));
            ifindex
        }
        NextHop::Device { ifindex } => {
            m.header.scope = RouteScope::Link;
            ifindex
        }
    };
    m.attributes.push(RouteAttribute::Oif(ifindex));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIO: u32 = 10_000;
    const MASK: u32 = 0x0fff_0000;

    fn via(ifindex: u32, a: &str) -> NextHop {
        NextHop::Via {
            ifindex,
            address: a.parse().unwrap(),
        }
    }

    /// A gateway routing the family of its next hop (both for a device).
    fn policy(gateways: &[(u32, u32, NextHop)]) -> Policy {
        Policy {
            priority: PRIO,
            mask: MASK,
            gateways: (gateways.iter())
                .map(|&(mark, table, next_hop)| match next_hop {
                    NextHop::Via { ifindex, address } => {
                        GatewayRoute::ethernet(mark, table, ifindex, address, None)
                    }
                    NextHop::Device { ifindex } => GatewayRoute::tunnel(mark, table, ifindex),
                })
                .collect(),
            neighbours: Vec::new(),
        }
    }

    fn rule(v6: bool, priority: u32, fwmark: Option<(u32, u32)>, table: u32, ours: bool) -> Rule {
        Rule {
            v6,
            priority,
            fwmark,
            table,
            ours,
        }
    }

    fn route(v6: bool, table: u32, next_hop: Option<NextHop>, ours: bool) -> Route {
        Route {
            v6,
            table,
            next_hop,
            ours,
            text: format!("default table {table}"),
        }
    }

    /// The rules and routes `changes` asks for, as the kernel would then hold them.
    fn applied(p: &Policy, rules: &[Rule], routes: &[Route]) -> (Vec<Rule>, Vec<Route>) {
        let c = changes(p, rules, routes).unwrap();
        let mut rules: Vec<Rule> = (rules.iter())
            .filter(|r| !c.delete_rules.contains(r))
            .chain(&c.add_rules)
            .copied()
            .collect();
        rules.sort_by_key(|r| (r.v6, r.priority, r.table));
        let mut routes: Vec<Route> = (routes.iter())
            .filter(|r| !c.delete_routes.contains(r))
            .filter(|r| {
                !c.set_routes
                    .iter()
                    .any(|&(v6, t, _)| v6 == r.v6 && t == r.table)
            })
            .cloned()
            .chain((c.set_routes.iter()).map(|&(v6, table, nh)| route(v6, table, Some(nh), true)))
            .collect();
        routes.sort_by_key(|r| (r.v6, r.table));
        (rules, routes)
    }

    #[test]
    fn an_empty_kernel_gets_one_rule_and_route_per_gateway_and_family() {
        let p = policy(&[
            (0x1_0000, 1001, via(4, "192.0.2.2")),
            (0x2_0000, 1002, via(5, "2001:db8::2")),
            (0x3_0000, 1003, NextHop::Device { ifindex: 6 }),
        ]);
        let c = changes(&p, &[], &[]).unwrap();
        assert!(c.delete_rules.is_empty() && c.delete_routes.is_empty());
        let fw = |m| Some((m, MASK));
        assert_eq!(
            c.add_rules,
            vec![
                rule(false, PRIO, fw(0x1_0000), 1001, true),
                rule(true, PRIO, fw(0x2_0000), 1002, true),
                rule(false, PRIO, fw(0x3_0000), 1003, true),
                rule(true, PRIO, fw(0x3_0000), 1003, true),
            ]
        );
        assert_eq!(
            c.set_routes,
            vec![
                (false, 1001, via(4, "192.0.2.2")),
                (true, 1002, via(5, "2001:db8::2")),
                (false, 1003, NextHop::Device { ifindex: 6 }),
                (true, 1003, NextHop::Device { ifindex: 6 }),
            ]
        );
    }

    #[test]
    fn an_ethernet_gateway_routes_ipv6_via_its_address6_and_only_then() {
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        let both = GatewayRoute::ethernet(0x1_0000, 1001, 4, v4, Some("fe80::2".parse().unwrap()));
        assert_eq!(
            both.routes().collect::<Vec<_>>(),
            vec![(false, via(4, "192.0.2.2")), (true, via(4, "fe80::2"))]
        );
        let only4 = GatewayRoute::ethernet(0x1_0000, 1001, 4, v4, None);
        assert_eq!(
            only4.routes().collect::<Vec<_>>(),
            vec![(false, via(4, "192.0.2.2"))]
        );
        let only6 = GatewayRoute::ethernet(0x1_0000, 1001, 4, "2001:db8::2".parse().unwrap(), None);
        assert_eq!(
            only6.routes().collect::<Vec<_>>(),
            vec![(true, via(4, "2001:db8::2"))]
        );

        // Adding address6 later adds the IPv6 rule and route, and touches nothing else.
        let p = Policy {
            priority: PRIO,
            mask: MASK,
            gateways: vec![only4],
            neighbours: Vec::new(),
        };
        let (rules, routes) = applied(&p, &[], &[]);
        let q = Policy {
            gateways: vec![both],
            ..p
        };
        let c = changes(&q, &rules, &routes).unwrap();
        assert_eq!(
            c.add_rules,
            vec![rule(true, PRIO, Some((0x1_0000, MASK)), 1001, true)]
        );
        assert_eq!(c.set_routes, vec![(true, 1001, via(4, "fe80::2"))]);
        assert!(c.delete_rules.is_empty() && c.delete_routes.is_empty());
    }

    #[test]
    fn a_second_sync_changes_nothing_and_a_changed_policy_only_what_differs() {
        let p = policy(&[
            (0x1_0000, 1001, via(4, "192.0.2.2")),
            (0x2_0000, 1002, via(5, "192.0.2.6")),
        ]);
        let (rules, routes) = applied(&p, &[], &[]);
        assert!(changes(&p, &rules, &routes).unwrap().is_empty());

        // Gateway 2 gone, gateway 1's next hop moved, a tunnel gateway added.
        let q = policy(&[
            (0x1_0000, 1001, via(7, "198.51.100.1")),
            (0x3_0000, 1003, NextHop::Device { ifindex: 6 }),
        ]);
        let c = changes(&q, &rules, &routes).unwrap();
        assert_eq!(
            c.delete_rules,
            vec![rule(false, PRIO, Some((0x2_0000, MASK)), 1002, true)]
        );
        assert_eq!(
            c.delete_routes,
            vec![route(false, 1002, Some(via(5, "192.0.2.6")), true)]
        );
        assert_eq!(
            c.set_routes,
            vec![
                (false, 1001, via(7, "198.51.100.1")),
                (false, 1003, NextHop::Device { ifindex: 6 }),
                (true, 1003, NextHop::Device { ifindex: 6 }),
            ]
        );
        let (rules, routes) = applied(&q, &rules, &routes);
        assert!(changes(&q, &rules, &routes).unwrap().is_empty());
    }

    #[test]
    fn what_is_not_ours_is_left_alone_unless_it_stands_in_the_way() {
        let p = policy(&[(0x1_0000, 1001, via(4, "192.0.2.2"))]);
        let kernel_rules = [
            rule(false, 0, None, 255, false),
            rule(false, 32766, None, 254, false),
            // Someone else's mark rules: other bits, or after ours.
            rule(false, 100, Some((0x1, 0xff)), 100, false),
            rule(false, 20_000, Some((0x1_0000, MASK)), 100, false),
        ];
        let other_tables = [route(false, 254, Some(via(4, "192.0.2.2")), false)];
        let c = changes(&p, &kernel_rules, &other_tables).unwrap();
        assert!(c.delete_rules.is_empty() && c.delete_routes.is_empty());

        // A rule of someone else's that catches xwan's mark first.
        let mut rules = kernel_rules.to_vec();
        rules.push(rule(false, 50, Some((0x1_0000, 0x1_0000)), 100, false));
        let e = changes(&p, &rules, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the rule '50: fwmark 0x10000/0x10000 lookup 100' (priority 50) catches packets \
             xwan marks 0x10000 before xwan's rule at priority 10000: remove it or give xwan \
             other mark bits"
        );

        // A route of someone else's in one of xwan's tables.
        let foreign = [route(false, 1001, Some(via(4, "192.0.2.9")), false)];
        let e = changes(&p, &kernel_rules, &foreign).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routing table 1001 holds a route xwan did not write (default table 1001): xwan \
             uses one table per gateway; remove that route or choose other tables for xwan"
        );
    }
}
