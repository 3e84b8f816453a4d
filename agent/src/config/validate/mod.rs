//! Raw document → [`Config`]: every check, every error collected, then warnings. Rules
//! (and shadowing) are in `rules`, warnings in `warnings`; the rest is here.

mod rules;
mod warnings;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU32};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use xwan_common::maps::{MAX_GATEWAYS, MAX_IFACES, MAX_ROUTERS, MAX_RULES};
use xwan_common::plan::IpNet;

use super::diag::{ConfigErrors, Kind, Object, Sink, Warning, suggest};
use super::model::*;
use super::raw::{self, Item, List, RawDocument, RawMember, Str};

/// Parses and validates `text`; `file` names it in messages.
pub(crate) fn parse(text: &str, file: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let mut sink = Sink::new(file, text);
    let config = match raw::parse(text, &mut sink) {
        Some(doc) => Validator {
            sink: &mut sink,
            doc: &doc,
        }
        .run(),
        None => None,
    };
    let (errors, warnings) = sink.finish();
    match config {
        Some(c) if errors.is_empty() => Ok((c, warnings)),
        _ => Err(ConfigErrors { errors }),
    }
}

struct Validator<'s, 'a, 'd> {
    sink: &'s mut Sink<'a>,
    doc: &'d RawDocument,
}

/// Names of one kind of object: name → (index, span of its definition).
type Names = HashMap<String, (usize, Range<usize>)>;

/// Where an object is, for messages about it: its label and the span to point at when no
/// field is more precise (its name, or its header).
struct At {
    object: Object,
    span: Range<usize>,
}

fn at<T>(kind: Kind, item: &Item<T>, name: Option<&Str>) -> At {
    At {
        object: Object::new(kind, name.map(|n| n.get_ref().as_str()), item.index),
        span: name.map_or(item.span.clone(), |n| n.span()),
    }
}

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace, not "." or "..".
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Object names: a letter or digit, then letters, digits, '_', '-', '.'; at most 64.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// First and last address of an IPv4 subnet shorter than /31 (network and broadcast).
fn v4_reserved(net: &IpNet, addr: IpAddr) -> Option<&'static str> {
    let (IpAddr::V4(n), IpAddr::V4(a)) = (net.addr(), addr) else {
        return None;
    };
    if net.prefix_len() > 30 {
        return None;
    }
    let host_bits = 32 - net.prefix_len() as u32;
    let broadcast = u32::from(n) | ((1u64 << host_bits) - 1) as u32;
    if a == n {
        Some("network")
    } else if u32::from(a) == broadcast {
        Some("broadcast")
    } else {
        None
    }
}

impl Validator<'_, '_, '_> {
    fn err(&mut self, span: &Range<usize>, object: &Object, field: Option<&str>, msg: String) {
        self.sink.error(span, Some(object), field, msg);
    }

    fn warn(&mut self, span: &Range<usize>, object: &Object, field: Option<&str>, msg: String) {
        self.sink.warning(span, Some(object), field, msg);
    }

    fn run(&mut self) -> Option<Config> {
        let doc = self.doc;
        let agent = self.agent();
        let link_names = self.names(Kind::Link, doc.links.iter(), |l| &l.name);
        let gateway_names = self.names(Kind::Gateway, doc.gateways.iter(), |g| &g.name);
        let router_names = self.names(Kind::Router, doc.routers.iter(), |r| &r.name);
        self.names(Kind::Rule, doc.rules.iter(), |r| &r.name);

        let links: Vec<Option<Link>> = doc.links.iter().map(|i| self.link(i)).collect();
        self.link_interfaces();
        self.tunnel_ids(&links);
        let gateways: Vec<Option<Gateway>> = doc
            .gateways
            .iter()
            .map(|i| self.gateway(i, &link_names, &links))
            .collect();
        self.gateway_addresses(&gateways);
        let routers: Vec<Option<Router>> = doc
            .routers
            .iter()
            .map(|i| self.router(i, &gateway_names, &gateways))
            .collect();
        // LAN interfaces as written (even if [agent] has errors), so that rules are not
        // reported for it; `None` when [agent] itself could not be read.
        let lan: Option<Vec<String>> = match &doc.agent {
            None if doc.unparsed.iter().any(|(k, _)| *k == Kind::Agent) => None,
            None => Some(Vec::new()),
            Some(a) => Some(a.value.lan_interfaces.as_ref().map_or(Vec::new(), |l| {
                l.get_ref().iter().map(|n| n.get_ref().clone()).collect()
            })),
        };
        let rules: Vec<Option<Rule>> = doc
            .rules
            .iter()
            .map(|i| self.rule(i, &router_names, lan.as_deref()))
            .collect();
        self.shadowed(&rules);
        let return_routes: Vec<Option<ReturnRoute>> = doc
            .return_routes
            .iter()
            .map(|i| self.return_route(i, &link_names, &gateway_names, &gateways))
            .collect();
        self.limits();

        if self.sink.has_errors() {
            return None;
        }
        let config = Config {
            agent: agent?,
            links: links.into_iter().collect::<Option<_>>()?,
            gateways: gateways.into_iter().collect::<Option<_>>()?,
            routers: routers.into_iter().collect::<Option<_>>()?,
            rules: rules.into_iter().collect::<Option<_>>()?,
            return_routes: return_routes.into_iter().collect::<Option<_>>()?,
        };
        self.warnings(&config);
        Some(config)
    }

    // ---- helpers ---------------------------------------------------------------------------

    /// Checks names of one kind (syntax, duplicates; required unless rules) and maps them.
    fn names<'x, T: 'x>(
        &mut self,
        kind: Kind,
        items: impl Iterator<Item = &'x Item<T>>,
        name: impl Fn(&'x T) -> &'x Option<Str>,
    ) -> Names {
        let mut map = Names::new();
        for (pos, item) in items.enumerate() {
            let (index, span) = (item.index, item.span.clone());
            let Some(name) = name(&item.value) else {
                if kind != Kind::Rule {
                    self.err(
                        &span,
                        &Object::new(kind, None, index),
                        Some("name"),
                        format!(
                            "required field is missing; add name = \"...\" to this {}",
                            kind.header()
                        ),
                    );
                }
                continue;
            };
            let object = Object::new(kind, Some(name.get_ref()), index);
            let n = name.get_ref();
            if !valid_name(n) {
                self.err(
                    &name.span(),
                    &object,
                    Some("name"),
                    format!(
                        "'{n}' is not a valid name; use letters, digits, '_', '-' and '.', \
                         starting with a letter or digit, at most 64 characters"
                    ),
                );
            }
            if let Some((_, first)) = map.get(n) {
                let line = self.sink.line(first.start);
                self.err(
                    &name.span(),
                    &object,
                    Some("name"),
                    format!(
                        "duplicate name: {} '{n}' is already defined at line {line}; give each \
                         {} a unique name",
                        kind.as_str(),
                        kind.as_str()
                    ),
                );
            } else {
                map.insert(n.clone(), (pos, span));
            }
        }
        map
    }

    /// Resolves a reference to a named object; reports unknown names.
    fn resolve(
        &mut self,
        kind: Kind,
        names: &Names,
        r: &Str,
        object: &Object,
        field: &str,
    ) -> Option<usize> {
        let name = r.get_ref();
        if let Some((i, _)) = names.get(name) {
            return Some(*i);
        }
        if self
            .doc
            .unparsed
            .iter()
            .any(|(k, n)| *k == kind && n == name)
        {
            return None; // already reported where it is defined
        }
        let msg = match suggest(name, names.keys().map(String::as_str)) {
            Some(s) => format!(
                "unknown {} '{name}'; did you mean '{s}'? (or define it in a {} section)",
                kind.as_str(),
                kind.header()
            ),
            None => format!(
                "unknown {} '{name}'; define it in a {} section or fix the name",
                kind.as_str(),
                kind.header()
            ),
        };
        self.err(&r.span(), object, Some(field), msg);
        None
    }

    fn required<'x, T>(
        &mut self,
        value: &'x Option<T>,
        at: &At,
        item_span: &Range<usize>,
        field: &str,
        example: &str,
    ) -> Option<&'x T> {
        if value.is_none() {
            self.err(
                item_span,
                &at.object,
                Some(field),
                format!("required field is missing; add {field} = {example}"),
            );
        }
        value.as_ref()
    }

    fn duration(
        &mut self,
        s: &Str,
        object: &Object,
        field: &str,
        example: &str,
    ) -> Option<Duration> {
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.err(
                    &s.span(),
                    object,
                    Some(field),
                    format!(
                        "'{}' is not a duration; write a number with a unit, e.g. \"{example}\"",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A non-zero duration.
    fn positive_duration(
        &mut self,
        s: &Str,
        object: &Object,
        field: &str,
        example: &str,
    ) -> Option<Duration> {
        let d = self.duration(s, object, field, example)?;
        if d.is_zero() {
            self.err(
                &s.span(),
                object,
                Some(field),
                format!("{field} must be greater than 0; write e.g. \"{example}\""),
            );
            return None;
        }
        Some(d)
    }

    fn int(
        &mut self,
        v: &toml::Spanned<raw::Int>,
        object: &Object,
        field: &str,
        range: (i64, i64),
        hint: &str,
    ) -> Option<i64> {
        let n = v.get_ref().0;
        if n < range.0 || n > range.1 {
            self.err(
                &v.span(),
                object,
                Some(field),
                format!(
                    "{n} is out of range; {} must be between {} and {}{hint}",
                    field
                        .rsplit('.')
                        .next()
                        .and_then(|f| f.split('[').next())
                        .unwrap_or(field),
                    range.0,
                    range.1
                ),
            );
            return None;
        }
        Some(n)
    }

    fn choice<T: Copy>(
        &mut self,
        s: &Str,
        object: &Object,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let v = s.get_ref();
        if let Some((_, t)) = options.iter().find(|(n, _)| n == v) {
            return Some(*t);
        }
        let list = options
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        let msg = match suggest(v, options.iter().map(|(n, _)| *n)) {
            Some(s) => format!("unknown value '{v}'; did you mean \"{s}\"? (use {list})"),
            None => format!("unknown value '{v}'; use {list}"),
        };
        self.err(&s.span(), object, Some(field), msg);
        None
    }

    /// An optional keyword field (`load_balancing = "source"`): its default when absent.
    fn keyword<T: Keyword + Default>(
        &mut self,
        s: &Option<Str>,
        object: &Object,
        field: &str,
    ) -> Option<T> {
        match s {
            None => Some(T::default()),
            Some(s) => self.choice(s, object, field, T::ALL),
        }
    }

    /// A list that must not be empty (an empty criterion would silently mean "any").
    fn nonempty_list<'x, T>(
        &mut self,
        l: &'x List<T>,
        object: &Object,
        field: &str,
        what: &str,
    ) -> Option<&'x [toml::Spanned<T>]> {
        if l.get_ref().is_empty() {
            self.err(
                &l.span(),
                object,
                Some(field),
                format!("empty list; remove {field} to match any {what}, or list values"),
            );
            return None;
        }
        Some(l.get_ref())
    }

    /// Reports the second occurrence of a value already in a list.
    fn once<T: PartialEq>(
        &mut self,
        seen: &[(T, usize)],
        v: &T,
        span: &Range<usize>,
        object: &Object,
        field: &str,
        shown: &str,
    ) -> bool {
        if let Some((_, j)) = seen.iter().find(|(s, _)| s == v) {
            self.err(
                span,
                object,
                Some(field),
                format!(
                    "{shown} is already listed in {}[{j}]; remove the duplicate",
                    field.split('[').next().unwrap_or(field)
                ),
            );
            return false;
        }
        true
    }

    // ---- [agent] ---------------------------------------------------------------------------

    fn agent(&mut self) -> Option<Agent> {
        let object = Object::new(Kind::Agent, None, 0);
        let default = raw::RawAgent::default();
        let a = self.doc.agent.as_ref().map_or(&default, |i| &i.value);
        let mut ok = true;

        let mut lan: Vec<(String, usize)> = Vec::new();
        if let Some(list) = &a.lan_interfaces {
            for (j, n) in list.get_ref().iter().enumerate() {
                let field = format!("lan_interfaces[{j}]");
                let name = n.get_ref();
                if !valid_ifname(name) {
                    self.err(&n.span(), &object, Some(&field), bad_ifname(name));
                    ok = false;
                } else if self.once(
                    &lan,
                    name,
                    &n.span(),
                    &object,
                    &field,
                    &format!("interface '{name}'"),
                ) {
                    lan.push((name.clone(), j));
                } else {
                    ok = false;
                }
            }
            if lan.len() > MAX_IFACES as usize {
                self.err(
                    &list.span(),
                    &object,
                    Some("lan_interfaces"),
                    format!(
                        "{} interfaces; the data plane attaches to at most {MAX_IFACES}; \
                         list fewer interfaces",
                        lan.len()
                    ),
                );
                ok = false;
            }
        }

        let metrics_listen = match &a.metrics_listen {
            None => Some(DEFAULT_METRICS_LISTEN.parse().expect("valid default")),
            Some(s) => match s.get_ref().parse::<SocketAddr>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.err(
                        &s.span(),
                        &object,
                        Some("metrics_listen"),
                        format!(
                            "'{}' is not an address and port; write e.g. \"127.0.0.1:9464\" \
                             or \"[::1]:9464\"",
                            s.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let mut path = |s: &Option<Str>, field: &str, default: &str| -> Option<PathBuf> {
            match s {
                None => Some(PathBuf::from(default)),
                Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.get_ref())),
                Some(s) => {
                    self.err(
                        &s.span(),
                        &object,
                        Some(field),
                        format!(
                            "'{}' is not an absolute path; write a path starting with '/', \
                             e.g. \"{default}\"",
                            s.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        let control_socket = path(&a.control_socket, "control_socket", DEFAULT_CONTROL_SOCKET);
        let bpffs = path(&a.bpffs, "bpffs", DEFAULT_BPFFS);
        let flow_idle = match &a.flow_idle {
            None => Some(DEFAULT_FLOW_IDLE),
            Some(s) => self.duration(s, &object, "flow_idle", "300s"),
        };
        if !ok {
            return None;
        }
        Some(Agent {
            lan_interfaces: lan.into_iter().map(|(n, _)| n).collect(),
            metrics_listen: metrics_listen?,
            control_socket: control_socket?,
            bpffs: bpffs?,
            flow_idle: flow_idle?,
        })
    }

    // ---- [[link]] --------------------------------------------------------------------------

    fn link(&mut self, item: &Item<raw::RawLink>) -> Option<Link> {
        let l = &item.value;
        let at = at(Kind::Link, item, l.name.as_ref());
        let o = &at.object;
        let mut ok = l.name.as_ref().is_some_and(|n| valid_name(n.get_ref()));

        let interface = self.required(&l.interface, &at, &item.span, "interface", "\"tun0\"");
        if let Some(i) = interface
            && !valid_ifname(i.get_ref())
        {
            self.err(&i.span(), o, Some("interface"), bad_ifname(i.get_ref()));
            ok = false;
        }
        #[derive(Clone, Copy, PartialEq)]
        enum K {
            Tunnel,
            Ethernet,
            Vti,
            Xfrm,
        }
        let kind = self
            .required(
                &l.kind,
                &at,
                &item.span,
                "kind",
                "\"tunnel\", \"ethernet\", \"vti\" or \"xfrm\"",
            )
            .and_then(|k| {
                let kinds = [
                    ("tunnel", K::Tunnel),
                    ("ethernet", K::Ethernet),
                    ("vti", K::Vti),
                    ("xfrm", K::Xfrm),
                ];
                self.choice(k, o, "kind", &kinds)
            });
        let address = match &l.address {
            None => Some(None),
            Some(a) => self.interface_addr(a, o).map(Some),
        };
        let mtu = match &l.mtu {
            None => Some(None),
            Some(m) => {
                let v6 = matches!(address, Some(Some(a)) if a.addr.is_ipv6());
                let lo = if v6 { 1280 } else { 68 };
                let hint = if v6 {
                    " (IPv6 needs at least 1280); remove mtu to use the interface's own"
                } else {
                    "; remove mtu to use the interface's own"
                };
                self.int(m, o, "mtu", (lo, 65535), hint)
                    .map(|v| Some(v as u32))
            }
        };
        let ipsec = match kind {
            Some(K::Vti) => self.ipsec(item, &at, false, address.flatten()).map(Some),
            Some(K::Xfrm) => self.ipsec(item, &at, true, address.flatten()).map(Some),
            Some(K::Tunnel | K::Ethernet) => {
                self.no_ipsec_fields(l, o);
                Some(None)
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(Link {
            name: l.name.as_ref()?.get_ref().clone(),
            interface: interface?.get_ref().clone(),
            kind: match kind? {
                K::Ethernet => LinkKind::Ethernet,
                K::Tunnel | K::Vti | K::Xfrm => LinkKind::Tunnel,
            },
            address: address?,
            mtu: mtu?,
            ipsec: ipsec?,
        })
    }

    /// `local`, `remote`, `key` / `if_id`, `owner`, `manual_sa` of a `vti` / `xfrm` link.
    fn ipsec(
        &mut self,
        item: &Item<raw::RawLink>,
        at: &At,
        xfrm: bool,
        address: Option<InterfaceAddr>,
    ) -> Option<IpsecTunnel> {
        let l = &item.value;
        let o = &at.object;
        let kind = if xfrm { "xfrm" } else { "vti" };
        let mut ok = true;
        let underlay = |v: &mut Self, f: &Option<Str>, field: &str, example: &str| {
            let s = v.required(f, at, &item.span, field, example)?;
            match s.get_ref().trim().parse::<IpAddr>() {
                Ok(a) if a.is_unspecified() || a.is_multicast() => {
                    v.err(
                        &s.span(),
                        o,
                        Some(field),
                        format!("{a} cannot be a tunnel endpoint; use the unicast address of the underlay"),
                    );
                    None
                }
                Ok(a) => Some((a, s.span())),
                Err(_) => {
                    v.err(
                        &s.span(),
                        o,
                        Some(field),
                        format!(
                            "'{}' is not an IP address; write the underlay address, e.g. {example}",
                            s.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        let local = underlay(self, &l.local, "local", "\"192.0.2.1\"");
        let remote = underlay(self, &l.remote, "remote", "\"192.0.2.2\"");
        if let (Some((la, _)), Some((ra, rs))) = (&local, &remote) {
            if la.is_ipv4() != ra.is_ipv4() {
                self.err(
                    rs,
                    o,
                    Some("remote"),
                    format!(
                        "{ra} is {} but local {la} is {}; both ends of the underlay must be of one family",
                        family(ra),
                        family(la)
                    ),
                );
                ok = false;
            } else if la == ra {
                self.err(
                    rs,
                    o,
                    Some("remote"),
                    format!(
                        "{ra} is also the local address; remote is the peer's underlay address"
                    ),
                );
                ok = false;
            }
        }
        if let Some((la, ls)) = &local
            && !xfrm
            && la.is_ipv6()
        {
            self.err(
                ls,
                o,
                Some("local"),
                format!(
                    "{la} is IPv6 but a vti link is IPv4 underlay only; use kind = \"xfrm\" for an IPv6 underlay"
                ),
            );
            ok = false;
        }
        // The id field of this kind is required; the other kind's is refused.
        let (id_field, other, other_field) = if xfrm {
            (&l.if_id, &l.key, "key")
        } else {
            (&l.key, &l.if_id, "if_id")
        };
        let id_name = if xfrm { "if_id" } else { "key" };
        if let Some(v) = other {
            self.err(
                &v.span(),
                o,
                Some(other_field),
                format!(
                    "{} {kind} link has no {other_field}; write {id_name} = {} instead",
                    if xfrm { "an" } else { "a" },
                    v.get_ref().0
                ),
            );
            ok = false;
        }
        let id = self
            .required(id_field, at, &item.span, id_name, "101")
            .and_then(|v| {
                self.int(
                    v,
                    o,
                    id_name,
                    (1, u32::MAX as i64),
                    "; it is the xfrm mark or if_id of the link's SAs and policies",
                )
            })
            .map(|v| NonZeroU32::new(v as u32).expect("range starts at 1"));
        let owner = match &l.owner {
            None => Some(Owner::Xwan),
            Some(s) => self.choice(
                s,
                o,
                "owner",
                &[("xwan", Owner::Xwan), ("external", Owner::External)],
            ),
        };
        if owner == Some(Owner::Xwan) && address.is_none() && l.address.is_none() {
            self.err(
                &item.span,
                o,
                Some("address"),
                format!(
                    "required field is missing; xwan creates this {kind} interface and assigns \
                     it the tunnel address: add address = \"172.16.1.1/30\" (or owner = \"external\")"
                ),
            );
            ok = false;
        }
        let manual_sa = match &l.manual_sa {
            None => Some(None),
            Some(m) => self.manual_sa(m, o).map(Some),
        };
        if !ok {
            return None;
        }
        let id = id?;
        Some(IpsecTunnel {
            device: if xfrm {
                TunnelDevice::Xfrm { if_id: id }
            } else {
                TunnelDevice::Vti { key: id }
            },
            local: local?.0,
            remote: remote?.0,
            owner: owner?,
            manual_sa: manual_sa?,
        })
    }

    fn manual_sa(&mut self, m: &toml::Spanned<raw::RawManualSa>, o: &Object) -> Option<ManualSa> {
        let span = m.span();
        let m = m.get_ref();
        let missing = |v: &mut Self, field: &str, example: &str| {
            v.err(
                &span,
                o,
                Some(&format!("manual_sa.{field}")),
                format!("required field is missing; add {field} = {example} to manual_sa"),
            );
        };
        let spi = |v: &mut Self, f: &Option<toml::Spanned<raw::Int>>, field: &str| {
            let Some(s) = f else {
                missing(v, field, "0x1001");
                return None;
            };
            v.int(
                s,
                o,
                &format!("manual_sa.{field}"),
                (256, u32::MAX as i64),
                " (SPIs 1 to 255 are reserved by RFC 4303)",
            )
            .map(|n| (n as u32, s.span()))
        };
        let spi_in = spi(self, &m.spi_in, "spi_in");
        let spi_out = spi(self, &m.spi_out, "spi_out");
        let mut ok = true;
        if let (Some((a, _)), Some((b, bs))) = (&spi_in, &spi_out)
            && a == b
        {
            self.err(
                bs,
                o,
                Some("manual_sa.spi_out"),
                format!("{b:#x} is also spi_in; each direction needs its own SPI"),
            );
            ok = false;
        }
        let algorithms = match (&m.aead, &m.cipher, &m.auth) {
            (Some(a), None, None) => self
                .choice(a, o, "manual_sa.aead", &Aead::ALL)
                .map(SaAlgorithms::Aead),
            (None, Some(c), Some(h)) => {
                let cipher = self.choice(c, o, "manual_sa.cipher", &Cipher::ALL);
                let auth = self.choice(h, o, "manual_sa.auth", &Auth::ALL);
                Some(SaAlgorithms::CipherAuth {
                    cipher: cipher?,
                    auth: auth?,
                })
            }
            (Some(_), Some(c), _) | (Some(_), None, Some(c)) => {
                self.err(
                    &c.span(),
                    o,
                    Some("manual_sa.aead"),
                    "aead and cipher/auth exclude each other; keep aead = \"aes128gcm16\" alone, \
                     or cipher and auth without aead"
                        .to_owned(),
                );
                None
            }
            (None, Some(_), None) => {
                missing(self, "auth", "\"sha256\"");
                None
            }
            (None, None, Some(_)) => {
                missing(self, "cipher", "\"aes128\"");
                None
            }
            (None, None, None) => {
                missing(self, "aead", "\"aes128gcm16\" (or cipher and auth)");
                None
            }
        };
        let key_file = match &m.key_file {
            None => {
                missing(self, "key_file", "\"/etc/xwan/keys/LINK.keys\"");
                None
            }
            Some(k) => {
                let p = PathBuf::from(k.get_ref());
                if p.is_absolute() {
                    Some(p)
                } else {
                    self.err(
                        &k.span(),
                        o,
                        Some("manual_sa.key_file"),
                        format!(
                            "'{}' is a relative path; write the absolute path of the key file",
                            k.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        if !ok {
            return None;
        }
        Some(ManualSa {
            spi_in: spi_in?.0,
            spi_out: spi_out?.0,
            algorithms: algorithms?,
            key_file: key_file?,
        })
    }

    /// `local`, `remote`, … on a link that is not `vti` / `xfrm`.
    fn no_ipsec_fields(&mut self, l: &raw::RawLink, o: &Object) {
        let spans = [
            ("local", l.local.as_ref().map(|v| v.span())),
            ("remote", l.remote.as_ref().map(|v| v.span())),
            ("key", l.key.as_ref().map(|v| v.span())),
            ("if_id", l.if_id.as_ref().map(|v| v.span())),
            ("owner", l.owner.as_ref().map(|v| v.span())),
            ("manual_sa", l.manual_sa.as_ref().map(|v| v.span())),
        ];
        for (field, span) in spans {
            if let Some(span) = span {
                self.err(
                    &span,
                    o,
                    Some(field),
                    format!(
                        "only IPsec tunnel links have {field}; set kind = \"vti\" or \"xfrm\", \
                         or remove it"
                    ),
                );
            }
        }
    }

    /// Two IPsec links with the same key / if_id: their SAs and policies would be shared.
    fn tunnel_ids(&mut self, links: &[Option<Link>]) {
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (item, link) in self.doc.links.iter().zip(links) {
            let Some(Link {
                name,
                ipsec: Some(t),
                ..
            }) = link
            else {
                continue;
            };
            let id = t.device.id();
            let field = if matches!(t.device, TunnelDevice::Vti { .. }) {
                ("key", item.value.key.as_ref())
            } else {
                ("if_id", item.value.if_id.as_ref())
            };
            if let Some(first) = seen.get(&id) {
                let o = at(Kind::Link, item, item.value.name.as_ref()).object;
                let span = field.1.map_or(item.span.clone(), |v| v.span());
                self.err(
                    &span,
                    &o,
                    Some(field.0),
                    format!(
                        "{id} is already the key or if_id of link '{first}'; each IPsec link \
                         needs its own (it selects the link's SAs and policies)"
                    ),
                );
            } else {
                seen.insert(id, name);
            }
        }
    }

    fn interface_addr(&mut self, a: &Str, o: &Object) -> Option<InterfaceAddr> {
        let s = a.get_ref().trim();
        let err = |v: &mut Self, msg: String| {
            v.err(&a.span(), o, Some("address"), msg);
            None
        };
        let Some((addr, len)) = s.split_once('/') else {
            return match s.parse::<IpAddr>() {
                Ok(_) => err(
                    self,
                    format!(
                        "'{s}' has no prefix length; write the address with its prefix, \
                         e.g. \"{s}/30\""
                    ),
                ),
                Err(_) => err(
                    self,
                    format!("'{s}' is not an address with a prefix; write e.g. \"172.16.1.1/30\""),
                ),
            };
        };
        let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) else {
            return err(
                self,
                format!("'{s}' is not an address with a prefix; write e.g. \"172.16.1.1/30\""),
            );
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return err(
                self,
                format!("prefix length /{len} is longer than /{max}; use /0 to /{max}"),
            );
        }
        let ia = InterfaceAddr {
            addr,
            prefix_len: len,
        };
        if let Some(which) = v4_reserved(&ia.network(), addr) {
            return err(
                self,
                format!(
                    "{addr} is the {which} address of {}; use a host address of the subnet",
                    ia.network()
                ),
            );
        }
        Some(ia)
    }

    /// Two links on one interface.
    fn link_interfaces(&mut self) {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for item in &self.doc.links {
            let l = &item.value;
            let (Some(i), Some(n)) = (&l.interface, &l.name) else {
                continue;
            };
            if let Some(first) = seen.get(i.get_ref().as_str()) {
                let msg = format!(
                    "interface '{}' is already used by link '{first}'; a link is one interface: \
                     put the gateways of both on link '{first}'",
                    i.get_ref()
                );
                let o = at(Kind::Link, item, l.name.as_ref()).object;
                self.err(&i.span(), &o, Some("interface"), msg);
            } else {
                seen.insert(i.get_ref(), n.get_ref());
            }
        }
    }

    // ---- [[gateway]] -----------------------------------------------------------------------

    fn gateway(
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
            weight: weight?,
            check: check?,
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

    fn weight(
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
    fn gateway_addresses(&mut self, gateways: &[Option<Gateway>]) {
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

    // ---- [[router]] ------------------------------------------------------------------------

    fn router(
        &mut self,
        item: &Item<raw::RawRouter>,
        gateway_names: &Names,
        gateways: &[Option<Gateway>],
    ) -> Option<Router> {
        let r = &item.value;
        let at = at(Kind::Router, item, r.name.as_ref());
        let o = &at.object;
        let mut ok = r.name.as_ref().is_some_and(|n| valid_name(n.get_ref()));

        let mut listed: Vec<(usize, String)> = Vec::new();
        let mut members = |v: &mut Self, list: &Option<List<RawMember>>, field: &str| {
            let mut out = Vec::new();
            let mut good = true;
            for (j, m) in list.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
                let (name, gfield, weight): (Str, String, _) = match m.get_ref() {
                    RawMember::Name(n) => (
                        toml::Spanned::new(m.span(), n.clone()),
                        format!("{field}[{j}]"),
                        None,
                    ),
                    RawMember::Table(t) => {
                        let Some(g) = &t.gateway else {
                            v.err(
                                &m.span(),
                                o,
                                Some(&format!("{field}[{j}]")),
                                "no gateway given; write { gateway = \"NAME\", weight = N } \
                                 or just \"NAME\""
                                    .to_owned(),
                            );
                            good = false;
                            continue;
                        };
                        (
                            g.clone(),
                            format!("{field}[{j}].gateway"),
                            t.weight.as_ref(),
                        )
                    }
                };
                let id = v.resolve(Kind::Gateway, gateway_names, &name, o, &gfield);
                let weight = match weight {
                    Some(w) => v.weight(w, o, &format!("{field}[{j}].weight")),
                    None => Some(
                        id.and_then(|i| gateways[i].as_ref())
                            .map_or(NonZeroU32::MIN, |g| g.weight),
                    ),
                };
                if let Some(i) = id {
                    if let Some((_, first)) = listed.iter().find(|(g, _)| *g == i) {
                        v.err(
                            &name.span(),
                            o,
                            Some(&gfield),
                            format!(
                                "gateway '{}' is already listed in {first}; list each gateway \
                                 once per router",
                                name.get_ref()
                            ),
                        );
                        good = false;
                    } else {
                        listed.push((i, format!("{field}[{j}]")));
                    }
                }
                match (id, weight) {
                    (Some(i), Some(w)) => out.push(Member {
                        gateway: GatewayId(i as u16),
                        weight: w,
                    }),
                    _ => good = false,
                }
            }
            good.then_some(out)
        };
        let mains = members(self, &r.gateways, "gateways");
        let backups = members(self, &r.backups, "backups");
        let mains_count = r.gateways.as_ref().map_or(0, |l| l.get_ref().len());
        if mains_count == 0 {
            let span = r.gateways.as_ref().map_or(item.span.clone(), |l| l.span());
            self.err(
                &span,
                o,
                Some("gateways"),
                "a router needs at least one main gateway; add gateways = [\"NAME\"]".to_owned(),
            );
            ok = false;
        }

        let frequency = match &r.frequency {
            None => Some(DEFAULT_FREQUENCY),
            Some(s) => self.positive_duration(s, o, "frequency", "15s"),
        };
        let wait = match &r.wait {
            None => Some(DEFAULT_WAIT),
            Some(s) => self.positive_duration(s, o, "wait", "2s"),
        };
        if let (Some(f), Some(w)) = (frequency, wait)
            && w >= f
        {
            let (span, field) = match (&r.wait, &r.frequency) {
                (Some(s), _) => (s.span(), "wait"),
                (None, Some(s)) => (s.span(), "frequency"),
                (None, None) => (at.span.clone(), "wait"),
            };
            self.err(
                &span,
                o,
                Some(field),
                format!(
                    "wait ({}) must be shorter than frequency ({}): an unanswered probe is \
                     retried after wait, before the next one is due; lower wait or raise \
                     frequency",
                    humantime::format_duration(w),
                    humantime::format_duration(f)
                ),
            );
            ok = false;
        }
        let count =
            |v: &mut Self, x: &Option<toml::Spanned<raw::Int>>, field: &str, d: u32, hint: &str| {
                match x {
                    None => NonZeroU32::new(d),
                    Some(x) => v
                        .int(x, o, field, (1, MAX_TRIES as i64), hint)
                        .and_then(|n| NonZeroU32::new(n as u32)),
                }
            };
        let tries = count(
            self,
            &r.tries,
            "tries",
            DEFAULT_TRIES,
            " (consecutive failed probes that make a gateway Unavailable)",
        );
        let recover = count(
            self,
            &r.recover,
            "recover",
            DEFAULT_RECOVER,
            " (consecutive successful probes that make a gateway Ready again)",
        );
        let backup_threshold = match &r.backup_threshold {
            None => Some(1),
            Some(t) if mains_count > 0 => {
                let n = t.get_ref().0;
                let m = mains_count as i64;
                let range = if m == 1 {
                    "with one main gateway use 1 (the default: backups when the main is down)"
                        .to_owned()
                } else {
                    format!(
                        "use 1 (the default: backups when no main is Ready) to {m} (backups as \
                         soon as one main is down)"
                    )
                };
                let what = if n < 1 {
                    format!("{n} never activates the backups")
                } else {
                    format!("{n} is more than the number of main gateways ({m})")
                };
                if (1..=m).contains(&n) {
                    Some(n as usize)
                } else {
                    self.err(
                        &t.span(),
                        o,
                        Some("backup_threshold"),
                        format!("{what}; {range}"),
                    );
                    None
                }
            }
            Some(_) => None,
        };
        let activate_all_backups = r
            .activate_all_backups
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        let load_balancing = self.keyword(&r.load_balancing, o, "load_balancing");
        let on_failure = self.keyword(&r.on_failure, o, "on_failure");
        let failback = self.keyword(&r.failback, o, "failback");
        let sla = match &r.sla {
            None => Some(None),
            Some(s) => self.sla(s, o).map(Some),
        };
        if !ok {
            return None;
        }
        Some(Router {
            name: r.name.as_ref()?.get_ref().clone(),
            mains: mains?,
            backups: backups?,
            frequency: frequency?,
            wait: wait?,
            tries: tries?,
            recover: recover?,
            options: RouterOptions {
                backup_threshold: backup_threshold?,
                activate_all_backups,
                load_balancing: load_balancing?,
                on_failure: on_failure?,
                failback: failback?,
            },
            sla: sla?,
        })
    }

    fn sla(&mut self, s: &toml::Spanned<raw::RawSla>, o: &Object) -> Option<Sla> {
        let raw = s.get_ref();
        let mut ok = true;
        let rtt = raw
            .rtt
            .as_ref()
            .map(|d| self.positive_duration(d, o, "sla.rtt", "150ms"));
        let jitter = raw
            .jitter
            .as_ref()
            .map(|d| self.positive_duration(d, o, "sla.jitter", "30ms"));
        let loss = raw.loss.as_ref().map(|l| {
            let v = l.get_ref().0;
            if (0.0..100.0).contains(&v) {
                Some(v)
            } else {
                self.err(
                    &l.span(),
                    o,
                    Some("sla.loss"),
                    format!(
                        "{v} is out of range; loss is a percentage from 0 up to (not \
                         including) 100, e.g. 5.0"
                    ),
                );
                None
            }
        });
        let window = match &raw.window {
            None => NonZeroU32::new(DEFAULT_SLA_WINDOW),
            Some(w) => self
                .int(
                    w,
                    o,
                    "sla.window",
                    (1, MAX_SLA_WINDOW as i64),
                    " (probes the figures are computed over)",
                )
                .and_then(|n| NonZeroU32::new(n as u32)),
        };
        if raw.rtt.is_none() && raw.jitter.is_none() && raw.loss.is_none() {
            self.err(
                &s.span(),
                o,
                Some("sla"),
                "sets no threshold; give rtt, jitter or loss, or remove sla".to_owned(),
            );
            ok = false;
        }
        let (rtt, jitter, loss) = (optional(rtt), optional(jitter), optional(loss));
        if !ok {
            return None;
        }
        Some(Sla {
            rtt: rtt?,
            jitter: jitter?,
            loss: loss?,
            window: window?,
        })
    }

    // ---- [[return_route]] ------------------------------------------------------------------

    fn return_route(
        &mut self,
        item: &Item<raw::RawReturnRoute>,
        link_names: &Names,
        gateway_names: &Names,
        gateways: &[Option<Gateway>],
    ) -> Option<ReturnRoute> {
        let r = &item.value;
        let at = at(Kind::ReturnRoute, item, None);
        let o = &at.object;
        let link = self
            .required(&r.link, &at, &item.span, "link", "\"LINK\"")
            .and_then(|l| self.resolve(Kind::Link, link_names, l, o, "link"));
        let gateway = self
            .required(&r.gateway, &at, &item.span, "gateway", "\"GATEWAY\"")
            .and_then(|g| self.resolve(Kind::Gateway, gateway_names, g, o, "gateway"));
        if let (Some(l), Some(gw)) = (link, gateway.and_then(|g| gateways[g].as_ref()))
            && gw.link.index() != l
        {
            let link_name = r.link.as_ref().map_or("", |n| n.get_ref().as_str());
            let on = &self.doc.links[gw.link.index()]
                .value
                .name
                .as_ref()
                .map_or(String::new(), |n| n.get_ref().clone());
            let span = r.gateway.as_ref().map_or(item.span.clone(), |g| g.span());
            self.err(
                &span,
                o,
                Some("gateway"),
                format!(
                    "gateway '{}' is on link '{on}', not on link '{link_name}'; replies must \
                     leave over the link they arrived on: use a gateway of link '{link_name}'",
                    gw.name
                ),
            );
            return None;
        }
        if let Some(l) = link {
            let earlier = self.doc.return_routes[..item.index].iter().find(|e| {
                e.value
                    .link
                    .as_ref()
                    .and_then(|n| link_names.get(n.get_ref()))
                    .map(|(i, _)| *i)
                    == Some(l)
            });
            if let (Some(e), Some(n)) = (earlier, &r.link) {
                let line = self.sink.line(e.span.start);
                self.err(
                    &n.span(),
                    o,
                    Some("link"),
                    format!(
                        "link '{}' already has a return route at line {line}; keep one per link",
                        n.get_ref()
                    ),
                );
                return None;
            }
        }
        Some(ReturnRoute {
            link: LinkId(link? as u16),
            gateway: GatewayId(gateway? as u16),
        })
    }

    // ---- data-plane limits -----------------------------------------------------------------

    fn limits(&mut self) {
        let doc = self.doc;
        let links = MAX_IFACES as usize;
        if let Some(i) = doc.links.get(links) {
            let a = at(Kind::Link, i, i.value.name.as_ref());
            let msg = format!(
                "too many links: {}; the data plane watches at most {links}; remove links",
                doc.links.len()
            );
            self.err(&a.span, &a.object, None, msg);
        }
        let gateways = MAX_GATEWAYS as usize;
        if let Some(i) = doc.gateways.get(gateways) {
            let a = at(Kind::Gateway, i, i.value.name.as_ref());
            let msg = format!(
                "too many gateways: {}; the data plane holds at most {gateways}; remove gateways",
                doc.gateways.len()
            );
            self.err(&a.span, &a.object, None, msg);
        }
        let routers = MAX_ROUTERS as usize;
        if let Some(i) = doc.routers.get(routers) {
            let a = at(Kind::Router, i, i.value.name.as_ref());
            let msg = format!(
                "too many routers: {}; the data plane holds at most {routers}; merge routers",
                doc.routers.len()
            );
            self.err(&a.span, &a.object, None, msg);
        }
        if let Some(i) = doc.rules.get(MAX_RULES) {
            let a = at(Kind::Rule, i, i.value.name.as_ref());
            let msg = format!(
                "too many rules: {}; the data plane holds at most {MAX_RULES}; merge rules \
                 (a rule takes lists of networks and ports)",
                doc.rules.len()
            );
            self.err(&a.span, &a.object, None, msg);
        }
    }
}

/// An optional field's check: absent → `Some(None)`, invalid → `None`.
fn optional<T>(x: Option<Option<T>>) -> Option<Option<T>> {
    x.map_or(Some(None), |v| v.map(Some))
}

fn bad_ifname(name: &str) -> String {
    format!(
        "'{name}' is not a valid interface name; Linux names have 1 to 15 characters, without \
         '/', ':' or spaces"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_v4_addresses() {
        let net: IpNet = "172.16.1.0/30".parse().unwrap();
        assert_eq!(
            v4_reserved(&net, "172.16.1.0".parse().unwrap()),
            Some("network")
        );
        assert_eq!(
            v4_reserved(&net, "172.16.1.3".parse().unwrap()),
            Some("broadcast")
        );
        assert_eq!(v4_reserved(&net, "172.16.1.2".parse().unwrap()), None);
        let p2p: IpNet = "172.16.1.0/31".parse().unwrap();
        assert_eq!(v4_reserved(&p2p, "172.16.1.0".parse().unwrap()), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("RemoteTunWAN1"));
        assert!(valid_name("a.b-c_d"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("my router"));
        assert!(valid_ifname("tun-wan1"));
        assert!(!valid_ifname("a-very-long-name0"));
        assert!(!valid_ifname("eth0:1"));
    }
}
