//! The configuration file as written: one serde struct per section, every field spanned so
//! errors can point at it, unknown keys rejected. Values stay loose here (strings, integers);
//! their meaning is checked in `validate`, which can then report every error at once.
//!
//! Each `[[section]]` entry is deserialized on its own, so one broken entry does not hide the
//! errors of the others.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Kind, Object, Sink, suggest};

/// A spanned string.
pub type Str = Spanned<String>;
/// A spanned list of spanned values.
pub type List<T> = Spanned<Vec<Spanned<T>>>;

/// `[agent]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub lan_interfaces: Option<List<String>>,
    pub metrics_listen: Option<Str>,
    pub control_socket: Option<Str>,
    pub bpffs: Option<Str>,
    pub flow_idle: Option<Str>,
    pub flow_table_size: Option<Spanned<Int>>,
    /// `"xdp"` (default) or `"netfilter"`.
    pub forwarding: Option<Str>,
    pub netfilter: Option<Spanned<RawNetfilter>>,
}

/// `[agent.netfilter]`: the `netfilter` forwarding mode's marks, tables and rules.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNetfilter {
    pub mark_mask: Option<Spanned<Int>>,
    pub first_table: Option<Spanned<Int>>,
    pub rule_priority: Option<Spanned<Int>>,
}

/// `[[link]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub name: Option<Str>,
    pub interface: Option<Str>,
    pub kind: Option<Str>,
    pub address: Option<Str>,
    pub mtu: Option<Spanned<Int>>,
    /// Tunnel links (`kind = "vti"` / `"xfrm"`): underlay addresses.
    pub local: Option<Str>,
    pub remote: Option<Str>,
    /// VTI ikey/okey (= xfrm mark).
    pub key: Option<Spanned<Int>>,
    /// xfrm interface id.
    pub if_id: Option<Spanned<Int>>,
    /// `"xwan"` (default) or `"external"`.
    pub owner: Option<Str>,
    pub manual_sa: Option<Spanned<RawManualSa>>,
}

/// A link's `manual_sa = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManualSa {
    pub spi_in: Option<Spanned<Int>>,
    pub spi_out: Option<Spanned<Int>>,
    pub aead: Option<Str>,
    pub cipher: Option<Str>,
    pub auth: Option<Str>,
    pub key_file: Option<Str>,
}

/// `[[gateway]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub name: Option<Str>,
    pub link: Option<Str>,
    pub address: Option<Str>,
    pub address6: Option<Str>,
    pub weight: Option<Spanned<Int>>,
    pub check: Option<List<String>>,
    pub quorum: Option<Spanned<Int>>,
    pub monitor: Option<Str>,
}

/// `[[router]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub name: Option<Str>,
    pub gateways: Option<List<RawMember>>,
    pub backups: Option<List<RawMember>>,
    pub frequency: Option<Str>,
    pub wait: Option<Str>,
    pub tries: Option<Spanned<Int>>,
    pub recover: Option<Spanned<Int>>,
    pub backup_threshold: Option<Spanned<Int>>,
    pub activate_all_backups: Option<Spanned<bool>>,
    pub load_balancing: Option<Str>,
    pub on_failure: Option<Str>,
    pub failback: Option<Str>,
    pub sla: Option<Spanned<RawSla>>,
    pub sla_alarm: Option<Spanned<RawSla>>,
    pub damping: Option<Spanned<RawDamping>>,
    pub quality_margin: Option<Str>,
}

/// A router's `damping = { half_life, penalty, suppress, reuse }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDamping {
    pub half_life: Option<Str>,
    pub penalty: Option<Spanned<Int>>,
    pub suppress: Option<Spanned<Int>>,
    pub reuse: Option<Spanned<Int>>,
}

/// An entry of a router's `gateways` or `backups`: `"NAME"` or `{ gateway = "NAME", weight = N }`.
pub enum RawMember {
    Name(String),
    Table(RawMemberTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemberTable {
    pub gateway: Option<Str>,
    pub weight: Option<Spanned<Int>>,
}

/// A router's `sla = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSla {
    pub rtt: Option<Str>,
    pub jitter: Option<Str>,
    pub loss: Option<Spanned<Number>>,
    pub window: Option<Spanned<Int>>,
}

/// `[[rule]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<Str>,
    pub src: Option<List<String>>,
    pub dst: Option<List<String>>,
    pub protocol: Option<List<IntOrStr>>,
    pub src_port: Option<List<IntOrStr>>,
    pub dst_port: Option<List<IntOrStr>>,
    pub dscp: Option<List<Int>>,
    #[serde(rename = "in")]
    pub in_: Option<List<String>>,
    pub action: Option<Str>,
    pub router: Option<Str>,
    pub set_dscp: Option<Spanned<Int>>,
}

/// `[[return_route]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReturnRoute {
    pub link: Option<Str>,
    pub gateway: Option<Str>,
}

/// `[[hook]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub name: Option<Str>,
    pub command: Option<Str>,
    pub args: Option<List<String>>,
    pub on: Option<List<String>>,
    pub timeout: Option<Str>,
}

/// An integer as written (range checks come later).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Int(pub i64);

/// A number, integer or float.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Number(pub f64);

/// An integer or a string: ports (`80`, `"1000-2000"`) and protocols (`6`, `"tcp"`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IntOrStr {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for IntOrStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawMember {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMember;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gateway name or a table { gateway = \"NAME\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMember, E> {
                Ok(RawMember::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawMember, A::Error> {
                RawMemberTable::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(RawMember::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[section]]` entry (or the `[agent]` table).
pub struct Item<T> {
    /// Span of the entry's header (`[[link]]`), or of its inline table.
    pub span: Range<usize>,
    /// 0-based position among the entries of its kind.
    pub index: usize,
    pub value: T,
}

/// The whole file, section by section, in file order.
#[derive(Default)]
pub struct RawDocument {
    pub agent: Option<Item<RawAgent>>,
    pub links: Vec<Item<RawLink>>,
    pub gateways: Vec<Item<RawGateway>>,
    pub routers: Vec<Item<RawRouter>>,
    pub rules: Vec<Item<RawRule>>,
    pub return_routes: Vec<Item<RawReturnRoute>>,
    pub hooks: Vec<Item<RawHook>>,
    /// Names of entries that failed to deserialize (already reported): references to them
    /// are not reported again as unknown. `[agent]` is recorded with an empty name.
    pub unparsed: Vec<(Kind, String)>,
}

const SECTIONS: [(&str, Kind); 7] = [
    ("agent", Kind::Agent),
    ("link", Kind::Link),
    ("gateway", Kind::Gateway),
    ("router", Kind::Router),
    ("rule", Kind::Rule),
    ("return_route", Kind::ReturnRoute),
    ("hook", Kind::Hook),
];

/// Parses `text` into sections. Syntax errors stop here (returns `None`); an entry that does
/// not deserialize is reported and left out.
pub(crate) fn parse(text: &str, sink: &mut Sink<'_>) -> Option<RawDocument> {
    let (table, mut syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // One error per line; inside a broken list everything after is noise: stop there.
        syntax.sort_by_key(|e| e.span().map_or(0, |s| s.start));
        let mut last_line = 0;
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            let line = sink.line(span.start);
            if line == last_line {
                continue;
            }
            last_line = line;
            let msg = e.message().trim().replace('`', "'").replace('\n', "; ");
            let in_list = msg.contains("array") && !msg.contains("array table");
            let msg = if msg == "duplicate key" {
                let key = text.get(span.clone()).unwrap_or("").trim();
                format!("syntax error: duplicate key '{key}'; a key may appear only once per table")
            } else if msg.starts_with("invalid basic string") {
                "syntax error: a string is not closed; end it with '\"' on the same line".to_owned()
            } else if msg.starts_with("missing comma between array elements") {
                "syntax error: a list is not closed, or a comma is missing between its \
                 elements; close the list with ']' or add the comma"
                    .to_owned()
            } else {
                format!("syntax error: {msg}; fix the TOML syntax here")
            };
            sink.error(&span, None, None, msg);
            if in_list {
                break;
            }
        }
        return None;
    }
    let mut doc = RawDocument::default();
    // Sections in file order, so "#N" labels count entries as written.
    let mut sections: Vec<_> = table.get_ref().iter().collect();
    sections.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in sections {
        let name = key.get_ref().as_ref();
        let Some(&(_, kind)) = SECTIONS.iter().find(|(n, _)| *n == name) else {
            let hint = match suggest(name, SECTIONS.iter().map(|(n, _)| *n)) {
                Some(s) => format!(
                    "did you mean {}?",
                    SECTIONS.iter().find(|(n, _)| *n == s).unwrap().1.header()
                ),
                None => "valid sections are [agent], [[link]], [[gateway]], [[router]], \
                         [[rule]], [[return_route]] and [[hook]]"
                    .to_owned(),
            };
            sink.error(
                &key.span(),
                None,
                None,
                format!("unknown section '{name}'; {hint}"),
            );
            continue;
        };
        if kind == Kind::Agent {
            if !value.get_ref().is_table() {
                let object = Object::new(Kind::Agent, None, 0);
                sink.error(
                    &key.span(),
                    Some(&object),
                    None,
                    "must be a single table; write it as [agent] (single brackets)".to_owned(),
                );
                continue;
            }
            doc.agent = entry(value, 0, kind, &mut doc, sink).map(|value| Item {
                span: key.span(),
                index: 0,
                value,
            });
            continue;
        }
        let DeValue::Array(entries) = value.get_ref() else {
            sink.error(
                &key.span(),
                None,
                None,
                format!(
                    "'{name}' must be an array of tables; write each {name} under its own {} \
                     header",
                    kind.header()
                ),
            );
            continue;
        };
        for (index, e) in entries.iter().enumerate() {
            if !e.get_ref().is_table() {
                let object = Object::new(kind, None, index);
                sink.error(
                    &e.span(),
                    Some(&object),
                    None,
                    format!("must be a table; write it under a {} header", kind.header()),
                );
                continue;
            }
            let span = e.span();
            macro_rules! push {
                ($v:expr) => {
                    if let Some(value) = entry(e, index, kind, &mut doc, sink) {
                        $v.push(Item { span, index, value });
                    }
                };
            }
            match kind {
                Kind::Link => push!(doc.links),
                Kind::Gateway => push!(doc.gateways),
                Kind::Router => push!(doc.routers),
                Kind::Rule => push!(doc.rules),
                Kind::ReturnRoute => push!(doc.return_routes),
                Kind::Hook => push!(doc.hooks),
                Kind::Agent => unreachable!("handled above"),
            }
        }
    }
    Some(doc)
}

/// Deserializes one entry; on failure reports it (with its object and field) and records
/// its name as unparsed.
fn entry<'de, T: Deserialize<'de>>(
    value: &Spanned<DeValue<'de>>,
    index: usize,
    kind: Kind,
    doc: &mut RawDocument,
    sink: &mut Sink<'_>,
) -> Option<T> {
    match T::deserialize(value.clone().into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            let name = value
                .get_ref()
                .get("name")
                .and_then(|n| n.get_ref().as_str())
                .map(str::to_owned);
            let object = Object::new(kind, name.as_deref(), index);
            match name {
                Some(n) => doc.unparsed.push((kind, n)),
                None if kind == Kind::Agent => doc.unparsed.push((kind, String::new())),
                None => {}
            }
            let span = e.span().unwrap_or_else(|| value.span());
            let path = field_path(value, &span);
            let (field, message) = translate(e.message(), path);
            sink.error(&span, Some(&object), field.as_deref(), message);
            None
        }
    }
}

fn within(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    if outer.start == outer.end {
        inner.start == outer.start
    } else {
        outer.start <= inner.start && inner.start < outer.end
    }
}

/// The path (`backups[1].weight`) of the key or value at `span` inside `value`.
fn field_path(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let key = k.get_ref();
                if let Some(sub) = field_path(v, span) {
                    return Some(join(key, &sub));
                }
                if within(&k.span(), span) || within(&v.span(), span) {
                    return Some(key.to_string());
                }
            }
            None
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if let Some(sub) = field_path(v, span) {
                    return Some(join(&format!("[{i}]"), &sub));
                }
                if within(&v.span(), span) {
                    return Some(format!("[{i}]"));
                }
            }
            None
        }
        _ => None,
    }
}

fn join(head: &str, tail: &str) -> String {
    if tail.starts_with('[') {
        format!("{head}{tail}")
    } else {
        format!("{head}.{tail}")
    }
}

/// Turns a serde message into (field, "what is wrong; what to do").
fn translate(message: &str, path: Option<String>) -> (Option<String>, String) {
    let ticked =
        |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = ticked(rest);
        let (unknown, valid) = names.split_first().map_or(("", &[][..]), |(u, v)| (u, v));
        let field = match &path {
            Some(p) if p.ends_with(unknown) => p.clone(),
            Some(p) => join(p, unknown),
            None => unknown.to_owned(),
        };
        let hint = match suggest(unknown, valid.iter().map(String::as_str)) {
            Some(s) => format!("did you mean '{s}'?"),
            None if valid.is_empty() => "remove it".to_owned(),
            None => format!("valid fields here are {}", valid.join(", ")),
        };
        return (Some(field), format!("unknown field; {hint}"));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let missing = ticked(rest).into_iter().next().unwrap_or_default();
        let field = match &path {
            Some(p) => join(p, &missing),
            None => missing.clone(),
        };
        return (
            Some(field),
            format!("required field is missing; add {missing} = ..."),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let found = describe_found(found);
        let (expected, member) = match expected.strip_prefix("a gateway name") {
            Some(_) => ("a gateway name or a table", true),
            None => (expected, false),
        };
        let expected = match expected {
            "a sequence" => "a list",
            "a boolean" => "true or false",
            e if e.starts_with("struct ") || e == "a map" => "a table",
            e if e.starts_with('i') || e.starts_with('u') => "an integer",
            e => e,
        };
        let hint = match expected {
            _ if member => "write \"NAME\" or { gateway = \"NAME\", weight = N }",
            "a list" => "write a list in square brackets, e.g. [\"a\", \"b\"]",
            "a table" => "write a table, e.g. { key = value }",
            "a string" => "put the value in double quotes",
            "an integer" | "a number" if found.starts_with("the string") => {
                "write the number without quotes"
            }
            "true or false" => "write true or false without quotes",
            _ => "change the value to the expected type",
        };
        return (path, format!("expected {expected}, found {found}; {hint}"));
    }
    (
        path,
        format!("{}; fix this value", message.replace('`', "'")),
    )
}

fn describe_found(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        format!("the string {s}")
    } else if let Some(s) = found.strip_prefix("integer ") {
        format!("the integer {}", s.trim_matches('`'))
    } else if let Some(s) = found.strip_prefix("floating point ") {
        format!("the number {}", s.trim_matches('`'))
    } else if let Some(s) = found.strip_prefix("boolean ") {
        s.trim_matches('`').to_owned()
    } else if found == "sequence" {
        "a list".to_owned()
    } else if found == "map" {
        "a table".to_owned()
    } else {
        found.replace('`', "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_messages() {
        assert_eq!(
            translate(
                "unknown field `interfce`, expected one of `name`, `interface`",
                Some("interfce".into())
            ),
            (
                Some("interfce".into()),
                "unknown field; did you mean 'interface'?".into()
            )
        );
        assert_eq!(
            translate(
                "invalid type: string \"3\", expected an integer",
                Some("gateways[0].weight".into())
            ),
            (
                Some("gateways[0].weight".into()),
                "expected an integer, found the string \"3\"; write the number without quotes"
                    .into()
            )
        );
        assert_eq!(
            translate("missing field `a`", Some("sla".into())).0,
            Some("sla.a".into())
        );
    }
}
