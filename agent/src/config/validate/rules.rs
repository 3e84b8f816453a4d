//! `[[rule]]` checks, and rules shadowed by earlier ones.

use std::net::IpAddr;
use std::ops::Range;

use xwan_common::plan::{IpNet, PortRange};

use super::super::diag::{Kind, Object, suggest};
use super::super::model::*;
use super::super::raw::{self, IntOrStr, Item, List, Str};
use super::{Names, Validator, at, valid_name};

#[derive(Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Route,
    Pass,
    Block,
}

/// IP families a criterion allows.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    const BOTH: Families = Families { v4: true, v6: true };

    fn of_nets(nets: &[IpNet]) -> Families {
        if nets.is_empty() {
            return Families::BOTH;
        }
        Families {
            v4: nets.iter().any(|n| n.is_ipv4()),
            v6: nets.iter().any(|n| !n.is_ipv4()),
        }
    }

    fn and(self, o: Families) -> Families {
        Families {
            v4: self.v4 && o.v4,
            v6: self.v6 && o.v6,
        }
    }

    fn name(self) -> &'static str {
        match (self.v4, self.v6) {
            (true, false) => "IPv4",
            (false, true) => "IPv6",
            _ => "IPv4 and IPv6",
        }
    }
}

fn ranges_cover(outer: &[PortRange], inner: &PortRange) -> bool {
    // Walk `inner` forward through the union of `outer`.
    let mut next = inner.first() as u32;
    loop {
        match outer
            .iter()
            .filter(|r| r.first() as u32 <= next && next <= r.last() as u32)
            .map(|r| r.last() as u32)
            .max()
        {
            Some(end) if end >= inner.last() as u32 => return true,
            Some(end) => next = end + 1,
            None => return false,
        }
    }
}

/// True when every packet `later` matches is matched by `earlier` (conservative: a `false`
/// does not prove the opposite).
fn covers(earlier: &Rule, later: &Rule) -> bool {
    fn all<T>(e: &[T], l: &[T], covered: impl Fn(&T) -> bool) -> bool {
        e.is_empty() || (!l.is_empty() && l.iter().all(covered))
    }
    all(&earlier.criteria.src, &later.criteria.src, |n| {
        earlier.criteria.src.iter().any(|e| e.covers(n))
    }) && all(&earlier.criteria.dst, &later.criteria.dst, |n| {
        earlier.criteria.dst.iter().any(|e| e.covers(n))
    }) && all(
        &earlier.criteria.protocols,
        &later.criteria.protocols,
        |p| earlier.criteria.protocols.contains(p),
    ) && all(
        &earlier.criteria.src_ports,
        &later.criteria.src_ports,
        |r| ranges_cover(&earlier.criteria.src_ports, r),
    ) && all(
        &earlier.criteria.dst_ports,
        &later.criteria.dst_ports,
        |r| ranges_cover(&earlier.criteria.dst_ports, r),
    ) && all(&earlier.criteria.dscp, &later.criteria.dscp, |d| {
        earlier.criteria.dscp.contains(d)
    }) && all(&earlier.criteria.ifaces, &later.criteria.ifaces, |i| {
        earlier.criteria.ifaces.contains(i)
    })
}

/// How an earlier rule's criterion meets a later one's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meet {
    /// Every value the later rule matches, the earlier one matches.
    Covers,
    /// Some of them.
    Overlaps,
    /// None of them, or the earlier rule narrows what the later one leaves open.
    Apart,
}

/// How `earlier`'s values of one criterion meet `later`'s (empty: any value).
fn meet<T>(
    earlier: &[T],
    later: &[T],
    covers: impl Fn(&T, &T) -> bool,
    overlap: impl Fn(&T, &T) -> bool,
) -> Meet {
    if earlier.is_empty() {
        Meet::Covers
    } else if later.is_empty() {
        Meet::Apart
    } else if later.iter().all(|l| earlier.iter().any(|e| covers(e, l))) {
        Meet::Covers
    } else if later.iter().any(|l| earlier.iter().any(|e| overlap(e, l))) {
        Meet::Overlaps
    } else {
        Meet::Apart
    }
}

/// The criteria in which `earlier` takes part of `later`'s packets: `later` is partly
/// shadowed when, in every criterion it constrains, `earlier` overlaps it, and `earlier`
/// constrains nothing `later` leaves open. (A rule by DSCP before a rule by port overlaps it
/// too, on packets carrying both, but in two different criteria: that is the order doing its
/// job, not a shadow.) Empty when `later` is not partly shadowed (covered entirely is
/// [`covers`]'s error).
fn partly_shadowed(earlier: &Rule, later: &Rule) -> Vec<&'static str> {
    let (e, l) = (&earlier.criteria, &later.criteria);
    let nets = |a: &IpNet, b: &IpNet| a.covers(b);
    let nets_meet = |a: &IpNet, b: &IpNet| a.covers(b) || b.covers(a);
    let ports = |e: &[PortRange], l: &[PortRange]| {
        let inside = |a: &PortRange, b: &PortRange| a.first() <= b.first() && b.last() <= a.last();
        let meets = |a: &PortRange, b: &PortRange| a.first() <= b.last() && b.first() <= a.last();
        match meet(e, l, inside, meets) {
            // Ranges that cover only together.
            Meet::Overlaps if l.iter().all(|r| ranges_cover(e, r)) => Meet::Covers,
            m => m,
        }
    };
    let meets = [
        ("src", meet(&e.src, &l.src, nets, nets_meet)),
        ("dst", meet(&e.dst, &l.dst, nets, nets_meet)),
        (
            "protocol",
            meet(&e.protocols, &l.protocols, |a, b| a == b, |a, b| a == b),
        ),
        ("src_port", ports(&e.src_ports, &l.src_ports)),
        ("dst_port", ports(&e.dst_ports, &l.dst_ports)),
        ("dscp", meet(&e.dscp, &l.dscp, |a, b| a == b, |a, b| a == b)),
        (
            "interface",
            meet(&e.ifaces, &l.ifaces, |a, b| a == b, |a, b| a == b),
        ),
    ];
    if meets.iter().any(|(_, m)| *m == Meet::Apart) {
        return Vec::new();
    }
    (meets.iter())
        .filter(|(_, m)| *m == Meet::Overlaps)
        .map(|(name, _)| *name)
        .collect()
}

impl Validator<'_, '_, '_> {
    // ---- [[rule]] --------------------------------------------------------------------------

    pub(super) fn rule(
        &mut self,
        item: &Item<raw::RawRule>,
        router_names: &Names,
        lan: Option<&[String]>,
    ) -> Option<Rule> {
        let r = &item.value;
        let at = at(Kind::Rule, item, r.name.as_ref());
        let o = &at.object;
        let mut ok = r.name.as_ref().is_none_or(|n| valid_name(n.get_ref()));

        let src = self.nets(&r.src, o, "src", "source");
        let dst = self.nets(&r.dst, o, "dst", "destination");
        let protocols = self.protocols(&r.protocol, o);
        let src_ports = self.ports(&r.src_port, o, "src_port", "source port");
        let dst_ports = self.ports(&r.dst_port, o, "dst_port", "destination port");

        let mut dscp: Vec<(u8, usize)> = Vec::new();
        let mut dscp_ok = true;
        if let Some(l) = &r.dscp {
            match self.nonempty_list(l, o, "dscp", "DSCP value") {
                None => dscp_ok = false,
                Some(values) => {
                    for (j, d) in values.iter().enumerate() {
                        let field = format!("dscp[{j}]");
                        match self.int(d, o, &field, (0, 63), " (6-bit DSCP values)") {
                            Some(v)
                                if self.once(
                                    &dscp,
                                    &(v as u8),
                                    &d.span(),
                                    o,
                                    &field,
                                    &format!("DSCP {v}"),
                                ) =>
                            {
                                dscp.push((v as u8, j))
                            }
                            _ => dscp_ok = false,
                        }
                    }
                }
            }
        }

        let mut ifaces: Vec<(String, usize)> = Vec::new();
        let mut ifaces_ok = true;
        if let Some(l) = &r.in_ {
            match self.nonempty_list(l, o, "in", "interface") {
                None => ifaces_ok = false,
                Some(values) => {
                    for (j, i) in values.iter().enumerate() {
                        let field = format!("in[{j}]");
                        let name = i.get_ref();
                        if let Some(lan) = lan
                            && !lan.contains(name)
                        {
                            let msg = match suggest(name, lan.iter().map(String::as_str)) {
                                Some(s) => format!(
                                    "unknown LAN interface '{name}'; did you mean '{s}'? (or \
                                     add it to [agent] lan_interfaces)"
                                ),
                                None => format!(
                                    "unknown LAN interface '{name}'; add it to [agent] \
                                     lan_interfaces or fix the name"
                                ),
                            };
                            self.err(&i.span(), o, Some(&field), msg);
                            ifaces_ok = false;
                        } else if self.once(
                            &ifaces,
                            name,
                            &i.span(),
                            o,
                            &field,
                            &format!("interface '{name}'"),
                        ) {
                            ifaces.push((name.clone(), j));
                        } else {
                            ifaces_ok = false;
                        }
                    }
                }
            }
        }

        let action = self
            .required(
                &r.action,
                &at,
                &item.span,
                "action",
                "\"route\" (with router = \"NAME\"), \"pass\" or \"block\"",
            )
            .and_then(|a| {
                self.choice(
                    a,
                    o,
                    "action",
                    &[
                        ("route", ActionKind::Route),
                        ("pass", ActionKind::Pass),
                        ("block", ActionKind::Block),
                    ],
                )
                .map(|k| (k, a))
            });
        let action = match (action, &r.router) {
            (Some((ActionKind::Route, a)), None) => {
                self.err(
                    &a.span(),
                    o,
                    Some("action"),
                    "action \"route\" needs a router; add router = \"NAME\"".to_owned(),
                );
                None
            }
            (Some((ActionKind::Route, _)), Some(name)) => self
                .resolve(Kind::Router, router_names, name, o, "router")
                .map(|i| RuleAction::Route(RouterId(i as u16))),
            (Some((_, a)), Some(name)) => {
                self.err(
                    &name.span(),
                    o,
                    Some("router"),
                    format!(
                        "a router is only used with action = \"route\", but the action is \
                         \"{}\"; remove router or set action = \"route\"",
                        a.get_ref()
                    ),
                );
                None
            }
            (Some((ActionKind::Pass, _)), None) => Some(RuleAction::Pass),
            (Some((ActionKind::Block, _)), None) => Some(RuleAction::Block),
            (None, _) => None,
        };
        let set_dscp = match &r.set_dscp {
            None => Some(None),
            Some(d) => {
                let v = self.int(d, o, "set_dscp", (0, 63), " (6-bit DSCP values)");
                if v.is_some() && action == Some(RuleAction::Block) {
                    self.err(
                        &d.span(),
                        o,
                        Some("set_dscp"),
                        "a blocked packet is dropped, its DSCP cannot be set; remove set_dscp \
                         or change the action"
                            .to_owned(),
                    );
                    None
                } else {
                    v.map(|v| Some(v as u8))
                }
            }
        };

        // Protocols that cannot match given the other criteria.
        if let (Some(protocols), Some(src), Some(dst)) = (&protocols, &src, &dst) {
            let has_ports = r.src_port.is_some() || r.dst_port.is_some();
            let nets = Families::of_nets(src).and(Families::of_nets(dst));
            for (j, (p, span)) in protocols.iter().enumerate() {
                let field = format!("protocol[{j}]");
                let shown = protocol_name(*p).map_or(p.to_string(), |n| format!("'{n}'"));
                if has_ports && !protocol_has_ports(*p) {
                    let which = match (&r.src_port, &r.dst_port) {
                        (Some(_), Some(_)) => "src_port and dst_port",
                        (Some(_), None) => "src_port",
                        _ => "dst_port",
                    };
                    self.err(
                        span,
                        o,
                        Some(&field),
                        format!(
                            "protocol {shown} has no ports, so it never matches a rule with \
                             {which}; move it to a rule without ports (only tcp, udp and sctp \
                             have ports)"
                        ),
                    );
                    ok = false;
                    continue;
                }
                let pf = match p {
                    1 => Families {
                        v4: true,
                        v6: false,
                    },
                    58 => Families {
                        v4: false,
                        v6: true,
                    },
                    _ => Families::BOTH,
                };
                if nets != Families::BOTH
                    && nets.and(pf)
                        == (Families {
                            v4: false,
                            v6: false,
                        })
                {
                    let instead = if *p == 1 { "'icmpv6'" } else { "'icmp'" };
                    self.err(
                        span,
                        o,
                        Some(&field),
                        format!(
                            "protocol {shown} is {} only but this rule's networks are {}; use \
                             {instead} instead",
                            pf.name(),
                            nets.name()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let (Some(src), Some(dst), Some(dl)) = (&src, &dst, &r.dst) {
            let (fs, fd) = (Families::of_nets(src), Families::of_nets(dst));
            if fs.and(fd)
                == (Families {
                    v4: false,
                    v6: false,
                })
            {
                self.err(
                    &dl.span(),
                    o,
                    Some("dst"),
                    format!(
                        "only {} destinations but only {} sources: no packet has both; split \
                         this rule into one rule per family",
                        fd.name(),
                        fs.name()
                    ),
                );
                ok = false;
            }
        }
        if !(ok && dscp_ok && ifaces_ok) {
            return None;
        }
        Some(Rule {
            name: r.name.as_ref().map(|n| n.get_ref().clone()),
            criteria: Criteria {
                src: src?,
                dst: dst?,
                protocols: protocols?.into_iter().map(|(p, _)| p).collect(),
                src_ports: src_ports?,
                dst_ports: dst_ports?,
                dscp: dscp.into_iter().map(|(d, _)| d).collect(),
                ifaces: ifaces.into_iter().map(|(i, _)| i).collect(),
            },
            action: action?,
            set_dscp: set_dscp?,
        })
    }

    fn nets(
        &mut self,
        l: &Option<List<String>>,
        o: &Object,
        field: &str,
        what: &str,
    ) -> Option<Vec<IpNet>> {
        let Some(l) = l else { return Some(Vec::new()) };
        let values = self.nonempty_list(l, o, field, what)?;
        let mut out: Vec<(IpNet, usize)> = Vec::new();
        let mut ok = true;
        for (j, v) in values.iter().enumerate() {
            let f = format!("{field}[{j}]");
            match self.net(v, o, &f) {
                Some(n) if self.once(&out, &n, &v.span(), o, &f, &format!("network {n}")) => {
                    out.push((n, j))
                }
                _ => ok = false,
            }
        }
        ok.then(|| out.into_iter().map(|(n, _)| n).collect())
    }

    fn net(&mut self, v: &Str, o: &Object, field: &str) -> Option<IpNet> {
        let s = v.get_ref().trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let msg = match (a.parse::<IpAddr>(), l.map(str::parse::<u8>)) {
            (Err(_), _) | (_, Some(Err(_))) => format!(
                "'{s}' is not a network; write an address or address/prefix, e.g. \
                 \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\""
            ),
            (Ok(addr), l) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len = match l {
                    Some(Ok(len)) => len,
                    _ => max,
                };
                match IpNet::new(addr, len) {
                    Err(_) => {
                        format!("prefix length /{len} is longer than /{max}; use /0 to /{max}")
                    }
                    Ok(n) if n.addr() != addr => format!(
                        "'{s}' has host bits set; write the network \"{n}\" (or \"{addr}/{max}\" \
                         for the single host)"
                    ),
                    Ok(n) => return Some(n),
                }
            }
        };
        self.err(&v.span(), o, Some(field), msg);
        None
    }

    fn protocols(
        &mut self,
        l: &Option<List<IntOrStr>>,
        o: &Object,
    ) -> Option<Vec<(u8, Range<usize>)>> {
        let Some(l) = l else { return Some(Vec::new()) };
        let values = self.nonempty_list(l, o, "protocol", "protocol")?;
        let mut out: Vec<(u8, usize)> = Vec::new();
        let mut spans = Vec::new();
        let mut ok = true;
        for (j, v) in values.iter().enumerate() {
            let field = format!("protocol[{j}]");
            let p = match v.get_ref() {
                IntOrStr::Int(n) => u8::try_from(*n).ok(),
                IntOrStr::Str(s) => {
                    let lower = s.trim().to_ascii_lowercase();
                    PROTOCOLS
                        .iter()
                        .find(|(n, _)| *n == lower || (*n == "icmpv6" && lower == "ipv6-icmp"))
                        .map(|(_, p)| *p)
                        .or_else(|| lower.parse::<u8>().ok())
                }
            };
            let Some(p) = p else {
                let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
                let msg = match v.get_ref() {
                    IntOrStr::Int(n) => format!(
                        "protocol number {n} is out of range; use 0 to 255 or a name ({})",
                        names.join(", ")
                    ),
                    IntOrStr::Str(s) => match suggest(s, names.iter().copied()) {
                        Some(g) => format!("unknown protocol '{s}'; did you mean '{g}'?"),
                        None => format!(
                            "unknown protocol '{s}'; use {} or a number from 0 to 255",
                            names.join(", ")
                        ),
                    },
                };
                self.err(&v.span(), o, Some(&field), msg);
                ok = false;
                continue;
            };
            let shown =
                protocol_name(p).map_or(format!("protocol {p}"), |n| format!("protocol '{n}'"));
            if self.once(&out, &p, &v.span(), o, &field, &shown) {
                out.push((p, j));
                spans.push(v.span());
            } else {
                ok = false;
            }
        }
        ok.then(|| out.into_iter().map(|(p, _)| p).zip(spans).collect())
    }

    fn ports(
        &mut self,
        l: &Option<List<IntOrStr>>,
        o: &Object,
        field: &str,
        what: &str,
    ) -> Option<Vec<PortRange>> {
        let Some(l) = l else { return Some(Vec::new()) };
        let values = self.nonempty_list(l, o, field, what)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (j, v) in values.iter().enumerate() {
            let f = format!("{field}[{j}]");
            match port_range(v.get_ref()) {
                Ok(r) => out.push(r),
                Err(msg) => {
                    self.err(&v.span(), o, Some(&f), msg);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Rules an earlier rule matches entirely (an error), or partly with another outcome (a
    /// warning naming the criteria where they overlap, [`partly_shadowed`]).
    pub(super) fn shadowed(&mut self, rules: &[Option<Rule>]) {
        let doc = self.doc;
        for (j, later) in rules.iter().enumerate() {
            let Some(later) = later else { continue };
            let earlier = rules[..j].iter().map(Option::as_ref).enumerate();
            let full = (earlier.clone()).find(|(_, e)| e.is_some_and(|e| covers(e, later)));
            let partial = || {
                earlier.clone().find_map(|(i, e)| {
                    let e = e?;
                    let dims = partly_shadowed(e, later);
                    let differs = e.action != later.action || e.set_dscp != later.set_dscp;
                    (!dims.is_empty() && differs).then_some((i, dims))
                })
            };
            let (i, dims) = match full {
                Some((i, _)) => (i, None),
                None => match partial() {
                    Some((i, dims)) => (i, Some(dims)),
                    None => continue,
                },
            };
            let (ei, li) = (&doc.rules[i], &doc.rules[j]);
            let e_at = at(Kind::Rule, ei, ei.value.name.as_ref());
            let l_at = at(Kind::Rule, li, li.value.name.as_ref());
            let line = self.sink.line(ei.span.start);
            let e = &e_at.object;
            match dims {
                None => self.err(
                    &l_at.span,
                    &l_at.object,
                    None,
                    format!(
                        "can never match: {e} (line {line}) comes first and matches every packet \
                         this rule matches; remove this rule, move it above {e}, or narrow {e}"
                    ),
                ),
                Some(dims) => self.warn(
                    &l_at.span,
                    &l_at.object,
                    None,
                    format!(
                        "partly shadowed: {e} (line {line}) comes first and takes this rule's \
                         packets where their {} overlap, with another action; move this rule \
                         above {e} if those packets are meant for it, or narrow one of them",
                        dims.join(" and ")
                    ),
                ),
            }
        }
    }
}

/// `80`, `"80"`, `"1000-2000"` → a port range (ports 1 to 65535).
fn port_range(v: &IntOrStr) -> Result<PortRange, String> {
    let port = |n: i64| -> Result<u16, String> {
        match n {
            0 => Err("port 0 is not a real port; ports start at 1".to_owned()),
            1..=65535 => Ok(n as u16),
            _ => Err(format!("port {n} is out of range; ports are 1 to 65535")),
        }
    };
    match v {
        IntOrStr::Int(n) => port(*n).map(PortRange::single),
        IntOrStr::Str(s) => {
            let bad = || format!("'{s}' is not a port or range; write e.g. 443 or \"1000-2000\"");
            let num = |t: &str| t.trim().parse::<i64>().map_err(|_| bad());
            match s.split_once('-') {
                None => port(num(s)?).map(PortRange::single),
                Some((a, b)) => {
                    let (a, b) = (port(num(a)?)?, port(num(b)?)?);
                    if a > b {
                        return Err(format!("port range {a}-{b} is reversed; write \"{b}-{a}\""));
                    }
                    Ok(PortRange::new(a, b).expect("ordered"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(dst: &[&str], dst_ports: &[(u16, u16)], dscp: &[u8]) -> Rule {
        Rule {
            name: None,
            criteria: Criteria {
                dst: dst.iter().map(|n| n.parse().unwrap()).collect(),
                dst_ports: (dst_ports.iter())
                    .map(|&(a, b)| PortRange::new(a, b).unwrap())
                    .collect(),
                dscp: dscp.to_vec(),
                ..Criteria::default()
            },
            action: RuleAction::Pass,
            set_dscp: None,
        }
    }

    /// (earlier, later, the criteria in which earlier takes part of later's packets)
    #[test]
    fn partly_shadowed_rules() {
        let cases: [(Rule, Rule, &[&str]); 7] = [
            // A narrower network first: part of the later rule's traffic.
            (
                rule(&["10.1.0.0/16"], &[], &[]),
                rule(&["10.0.0.0/8"], &[], &[]),
                &["dst"],
            ),
            // The wider one first: all of it (an error elsewhere), not "partly".
            (
                rule(&["10.0.0.0/8"], &[], &[]),
                rule(&["10.1.0.0/16"], &[], &[]),
                &[],
            ),
            (
                rule(&["10.1.0.0/16"], &[], &[]),
                rule(&["10.2.0.0/16"], &[], &[]),
                &[],
            ),
            // Ports: one shared range, and ranges that cover only together.
            (
                rule(&[], &[(80, 80), (443, 443)], &[]),
                rule(&[], &[(443, 8443)], &[]),
                &["dst_port"],
            ),
            (
                rule(&[], &[(1, 100), (101, 200)], &[]),
                rule(&[], &[(50, 150)], &[]),
                &[],
            ),
            // Two criteria overlapping at once.
            (
                rule(&["10.1.0.0/16"], &[(443, 443)], &[]),
                rule(&["10.0.0.0/8"], &[(400, 500)], &[]),
                &["dst", "dst_port"],
            ),
            // The earlier rule constrains what the later one leaves open (DSCP before ports).
            (rule(&[], &[], &[46]), rule(&[], &[(443, 443)], &[]), &[]),
        ];
        for (earlier, later, want) in &cases {
            assert_eq!(
                partly_shadowed(earlier, later),
                *want,
                "{:?} then {:?}",
                earlier.criteria,
                later.criteria
            );
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(port_range(&IntOrStr::Int(80)), Ok(PortRange::single(80)));
        assert_eq!(
            port_range(&IntOrStr::Str(" 1000 - 2000 ".into())),
            Ok(PortRange::new(1000, 2000).unwrap())
        );
        assert!(port_range(&IntOrStr::Str("2000-1000".into())).is_err());
        assert!(port_range(&IntOrStr::Int(0)).is_err());
        assert!(port_range(&IntOrStr::Int(65536)).is_err());
        assert!(port_range(&IntOrStr::Str("http".into())).is_err());
    }

    #[test]
    fn port_union_coverage() {
        let r = |a, b| PortRange::new(a, b).unwrap();
        assert!(ranges_cover(&[r(1, 100), r(101, 200)], &r(50, 150)));
        assert!(!ranges_cover(&[r(1, 100), r(102, 200)], &r(50, 150)));
        assert!(ranges_cover(&[r(1, 65535)], &r(65535, 65535)));
    }
}
