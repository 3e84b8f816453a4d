//! `[[gateway]]` checks: each gateway (next hop, weight, probe targets, monitor), then
//! across gateways: one gateway per address on a link.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};

use super::super::diag::{Kind, Object};
use super::super::model::*;
use super::super::raw::{self, Item, Str};
use super::{Names, Validator, at, family, v4_reserved, valid_name};

impl Validator<'_, '_, '_> {
    // ---- [[gateway]] -----------------------------------------------------------------------

    pub(super) fn gateway(
        &mut self,
        item: &Item<raw::RawGateway>,
        link_names: &Names,
        links: &[Option<Link>],
    ) -> Option<Gateway> {
        let g = &item.value;
        let at = at(Kind::Gateway, item, g.name.as_ref());
        let o = &at.object;
        let mut ok = g.name.as_ref().is_some_and(|n| valid_name(n.get_ref()));

        let link_id = self
            .required(&g.link, &at, &item.span, "link", "\"LINK\"")
            .and_then(|l| self.resolve(Kind::Link, link_names, l, o, "link"));
        let link = link_id.and_then(|i| links[i].as_ref());
        let link_addr = link.and_then(|l| l.address);

        let address = self
            .required(&g.address, &at, &item.span, "address", "\"172.16.1.2\"")
            .and_then(|a| self.host(a, o, "address"));
        if let (Some(a), Some(la), Some(l), Some(raw)) = (address, link_addr, link, &g.address) {
            let span = raw.span();
            let net = la.network();
            if a.is_ipv4() != la.addr.is_ipv4() {
                self.err(
                    &span,
                    o,
                    Some("address"),
                    format!(
                        "{a} is {} but link '{}' has the {} address {la}; use an {} address \
                         or a link of the same family",
                        family(&a),
                        l.name,
                        family(&la.addr),
                        family(&la.addr)
                    ),
                );
                ok = false;
            } else if !net.contains(a) {
                self.err(
                    &span,
                    o,
                    Some("address"),
                    format!(
                        "{a} is outside the subnet {net} of link '{}' ({la}); use an address \
                         in {net} or attach the gateway to the link it is on",
                        l.name
                    ),
                );
                ok = false;
            } else if a == la.addr {
                self.err(
                    &span,
                    o,
                    Some("address"),
                    format!(
                        "{a} is the local address of link '{}' itself; use the address of \
                         the next hop (the far end)",
                        l.name
                    ),
                );
                ok = false;
            } else if let Some(which) = v4_reserved(&net, a) {
                self.err(
                    &span,
                    o,
                    Some("address"),
                    format!("{a} is the {which} address of {net}; use the next hop's host address"),
                );
                ok = false;
            }
        }

        let address6 = g.address6.as_ref().and_then(|raw| {
            let Some(a) = self.host(raw, o, "address6") else {
                ok = false;
                return None;
            };
            let problem = match (a, address, link) {
                (IpAddr::V4(_), _, _) => Some(format!(
                    "{a} is IPv4; write the next hop's IPv6 address, e.g. its link-local \
                     \"fe80::1\""
                )),
                (_, Some(IpAddr::V6(main)), _) => Some(format!(
                    "address {main} is already IPv6 and carries this gateway's IPv6 traffic; \
                     remove address6"
                )),
                (_, _, Some(l)) if l.kind != LinkKind::Ethernet => Some(format!(
                    "link '{}' is a tunnel, which carries both families without a next hop; \
                     remove address6",
                    l.name
                )),
                _ => None,
            };
            match (a, problem) {
                (IpAddr::V6(a), None) => Some(a),
                (_, problem) => {
                    if let Some(msg) = problem {
                        self.err(&raw.span(), o, Some("address6"), msg);
                    }
                    ok = false;
                    None
                }
            }
        });

        let weight = match &g.weight {
            None => NonZeroU32::new(DEFAULT_WEIGHT),
            Some(w) => self.weight(w, o, "weight"),
        };

        let check = match (&g.check, address) {
            (None, a) => a.map(|a| vec![a]),
            (Some(list), _) => {
                let mut targets: Vec<(IpAddr, usize)> = Vec::new();
                let mut good = true;
                for (j, t) in list.get_ref().iter().enumerate() {
                    let field = format!("check[{j}]");
                    let Some(a) = self.host(t, o, &field) else {
                        good = false;
                        continue;
                    };
                    if let (Some(la), Some(l)) = (link_addr, link)
                        && a.is_ipv4() != la.addr.is_ipv4()
                    {
                        self.err(
                            &t.span(),
                            o,
                            Some(&field),
                            format!(
                                "{a} is {} but probes leave from {}, the {} address of link \
                                 '{}'; use an {} target",
                                family(&a),
                                la.addr,
                                family(&la.addr),
                                l.name,
                                family(&la.addr)
                            ),
                        );
                        good = false;
                    }
                    if self.once(&targets, &a, &t.span(), o, &field, &format!("target {a}")) {
                        targets.push((a, j));
                    } else {
                        good = false;
                    }
                }
                good.then(|| targets.into_iter().map(|(a, _)| a).collect())
            }
        };

        let quorum = match (&g.quorum, &check) {
            (Some(q), Some(targets)) if targets.is_empty() => {
                let msg = "quorum needs check targets, and check = [] probes nothing (the \
                           gateway is always Ready); remove quorum, or list the targets";
                self.err(&q.span(), o, Some("quorum"), msg.to_owned());
                None
            }
            (Some(q), Some(targets)) => {
                let n = targets.len();
                let hint = match n {
                    1 => " (one check target, which must answer: remove quorum or add targets)"
                        .to_owned(),
                    n => format!(" (how many of the {n} check targets must answer)"),
                };
                // Equal to the number of targets: the default, all of them.
                self.int(q, o, "quorum", (1, n as i64), &hint)
                    .map(|v| NonZeroUsize::new(v as usize).filter(|v| v.get() < n))
            }
            // The targets are wrong: their errors are reported, not quorum's.
            (Some(_), None) => None,
            (None, _) => Some(None),
        };

        let monitor = match &g.monitor {
            None => Some(Monitor::Icmp),
            Some(m) => self.monitor(m, o),
        };
        if !ok {
            return None;
        }
        Some(Gateway {
            name: g.name.as_ref()?.get_ref().clone(),
            link: LinkId(link_id? as u16),
            address: address?,
            address6,
            weight: weight?,
            check: check?,
            quorum: quorum?,
            monitor: monitor?,
        })
    }

    fn host(&mut self, a: &Str, o: &Object, field: &str) -> Option<IpAddr> {
        let s = a.get_ref().trim();
        let msg = match s.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() => {
                format!("{ip} is not a unicast host address; use the address of a reachable host")
            }
            Ok(ip) => return Some(ip),
            Err(_) => match s.split_once('/') {
                Some((h, _)) if h.parse::<IpAddr>().is_ok() => {
                    format!("'{s}' is a network; write the host address alone: \"{h}\"")
                }
                _ => format!(
                    "'{s}' is not an IPv4 or IPv6 address; write e.g. \"172.16.1.2\" or \
                     \"2001:db8::2\""
                ),
            },
        };
        self.err(&a.span(), o, Some(field), msg);
        None
    }

    pub(super) fn weight(
        &mut self,
        w: &toml::Spanned<raw::Int>,
        o: &Object,
        field: &str,
    ) -> Option<NonZeroU32> {
        let hint = if w.get_ref().0 == 0 {
            " (to stop using a gateway, remove it from the router)"
        } else {
            " (weights are relative shares)"
        };
        let v = self.int(w, o, field, (1, MAX_WEIGHT as i64), hint)?;
        NonZeroU32::new(v as u32)
    }

    fn monitor(&mut self, m: &Str, o: &Object) -> Option<Monitor> {
        let s = m.get_ref().trim();
        if s == "icmp" {
            return Some(Monitor::Icmp);
        }
        let msg = match s.strip_prefix("tcp:") {
            Some(p) => match p.parse::<u16>().ok().and_then(NonZeroU16::new) {
                Some(port) => return Some(Monitor::Tcp(port)),
                None => format!(
                    "'{p}' is not a TCP port; write \"tcp:PORT\" with PORT from 1 to 65535, \
                     e.g. \"tcp:443\""
                ),
            },
            None if s == "tcp" => {
                "tcp needs a port; write \"tcp:PORT\", e.g. \"tcp:443\"".to_owned()
            }
            None => format!("unknown monitor '{s}'; use \"icmp\" or \"tcp:PORT\""),
        };
        self.err(&m.span(), o, Some("monitor"), msg);
        None
    }

    /// Two gateways with the same address on the same link.
    pub(super) fn gateway_addresses(&mut self, gateways: &[Option<Gateway>]) {
        let mut seen: HashMap<(LinkId, IpAddr), &str> = HashMap::new();
        for (item, g) in self.doc.gateways.iter().zip(gateways) {
            let Some(g) = g else { continue };
            if let Some(first) = seen.get(&(g.link, g.address)) {
                let o = at(Kind::Gateway, item, item.value.name.as_ref()).object;
                let span = item
                    .value
                    .address
                    .as_ref()
                    .map_or(item.span.clone(), |a| a.span());
                let msg = format!(
                    "{} is already the address of gateway '{first}' on the same link; one \
                     gateway per next hop: use gateway '{first}' wherever this one is used",
                    g.address
                );
                self.err(&span, &o, Some("address"), msg);
            } else {
                seen.insert((g.link, g.address), &g.name);
            }
        }
    }
}
