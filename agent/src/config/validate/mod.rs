//! Raw document → [`Config`]: every check, every error collected, then warnings.
//!
//! * here: the `Validator`, `run` (the order of the checks), the shared
//!   field helpers (`names`, `resolve`, `required`, `duration`, `int`, `choice`, `keyword`,
//!   `once`, …), `[agent]` and the data plane's limits;
//! * `links`: `[[link]]`, with its IPsec fields and manual SAs;
//! * `gateways`: `[[gateway]]`;
//! * `routers`: `[[router]]`, with its SLA;
//! * `return_routes`: `[[return_route]]`;
//! * `hooks`: `[[hook]]`;
//! * `rules`: `[[rule]]`, and rules shadowed by earlier ones;
//! * `warnings`: what is valid but probably not meant, on the finished [`Config`].

mod gateways;
mod hooks;
mod links;
mod return_routes;
mod routers;
mod rules;
mod warnings;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use xwan_common::maps::{
    FLOW_TABLE_SIZE, MAX_FLOW_TABLE_SIZE, MAX_GATEWAYS, MAX_IFACES, MAX_ROUTERS, MAX_RULES,
    MIN_FLOW_TABLE_SIZE,
};
use xwan_common::plan::IpNet;

use super::diag::{ConfigErrors, Kind, Object, Sink, Warning, suggest};
use super::model::*;
use super::raw::{self, Item, List, RawDocument, Str};

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
        self.names(Kind::Hook, doc.hooks.iter(), |h| &h.name);
        let hooks: Vec<Option<Hook>> = doc.hooks.iter().map(|i| self.hook(i)).collect();
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
            hooks: hooks.into_iter().collect::<Option<_>>()?,
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
        let flow_table_size = match &a.flow_table_size {
            None => Some(FLOW_TABLE_SIZE),
            Some(v) => self
                .int(
                    v,
                    &object,
                    "flow_table_size",
                    (MIN_FLOW_TABLE_SIZE as i64, MAX_FLOW_TABLE_SIZE as i64),
                    " (flows; each takes about 280 bytes of kernel memory, 270 MiB per million)",
                )
                .map(|n| n as u32),
        };
        let forwarding = self.forwarding(a, &object);
        if !ok {
            return None;
        }
        Some(Agent {
            lan_interfaces: lan.into_iter().map(|(n, _)| n).collect(),
            metrics_listen: metrics_listen?,
            control_socket: control_socket?,
            bpffs: bpffs?,
            flow_idle: flow_idle?,
            flow_table_size: flow_table_size?,
            forwarding: forwarding?,
        })
    }

    /// `forwarding` and `[agent.netfilter]`: the marks must hold every gateway's (g + 1), the
    /// tables must not meet the kernel's own (253–255) or wrap, the rules must come before
    /// the main table's (32766).
    fn forwarding(&mut self, a: &raw::RawAgent, object: &Object) -> Option<Forwarding> {
        let mode: ForwardingMode = self.keyword(&a.forwarding, object, "forwarding")?;
        let default = raw::RawNetfilter::default();
        let n = a.netfilter.as_ref().map_or(&default, |n| n.get_ref());
        if mode == ForwardingMode::Xdp {
            if let Some(n) = &a.netfilter {
                self.warn(
                    &n.span(),
                    object,
                    Some("netfilter"),
                    "has no effect with forwarding = \"xdp\"; remove it or set \
                     forwarding = \"netfilter\""
                        .into(),
                );
            }
            return Some(Forwarding::Xdp);
        }
        let gateways = self.doc.gateways.len() as u32;
        let marks = match &n.mark_mask {
            None => MarkLayout::of_mask(DEFAULT_MARK_MASK, gateways),
            Some(v) => {
                let mask = self.int(v, object, "netfilter.mark_mask", (1, u32::MAX as i64), "")?;
                let layout = MarkLayout::of_mask(mask as u32, gateways);
                if layout.is_none() {
                    self.err(
                        &v.span(),
                        object,
                        Some("netfilter.mark_mask"),
                        format!(
                            "{mask:#x} must be one run of bits with room for a mark per \
                             gateway ({gateways}) besides 0, e.g. 0x0fff0000"
                        ),
                    );
                }
                layout
            }
        };
        let first_table = match &n.first_table {
            None => Some(DEFAULT_FIRST_TABLE),
            Some(v) => {
                let count = gateways.max(1);
                let last = u32::MAX as i64 - count as i64 + 1;
                let t = self.int(
                    v,
                    object,
                    "netfilter.first_table",
                    (1, last),
                    " (gateway g's table is first_table + g)",
                );
                let t = t.map(|t| t as u32);
                match t {
                    Some(t) if (t..t + count).any(|t| (253..=255).contains(&t)) => {
                        let tables = if count == 1 {
                            format!("table {t}")
                        } else {
                            format!("tables {t}–{}", t + count - 1)
                        };
                        self.err(
                            &v.span(),
                            object,
                            Some("netfilter.first_table"),
                            format!(
                                "{tables} would meet the kernel's own tables (253 default, \
                                 254 main, 255 local); choose tables above 255, e.g. 30000"
                            ),
                        );
                        None
                    }
                    t => t,
                }
            }
        };
        let rule_priority = match &n.rule_priority {
            None => Some(DEFAULT_RULE_PRIORITY),
            Some(v) => self
                .int(
                    v,
                    object,
                    "netfilter.rule_priority",
                    (1, 32765),
                    " (before the main table's rule, 32766)",
                )
                .map(|p| p as u32),
        };
        Some(Forwarding::Netfilter(Netfilter {
            marks: marks?,
            first_table: first_table?,
            rule_priority: rule_priority?,
        }))
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
