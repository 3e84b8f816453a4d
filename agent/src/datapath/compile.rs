//! Pure translation of a [`Plan`]'s rules into the contents of the classifier maps for one
//! ruleset generation (bit-vector classification), and of a [`RouterTable`] into a
//! [`SlotTable`]. Nothing here touches the kernel: [`super::commit`] writes the result.
//!
//! The kernel looks each packet field up once (`ebpf-prog/src/classify.rs`), ANDs the seven
//! bitmaps it gets and takes the first set bit. For that to equal "the first rule whose every
//! non-empty criterion holds" (`xwan_common::model`), every lookup must return exactly the
//! rules whose criterion on that field holds for the packet's value:
//!
//! * **Prefixes** (LPM tries, one per direction and family): one entry per prefix listed by any
//!   rule, plus `/0`. An entry's bitmap = rules without a criterion on that direction ∪ rules
//!   with a network (same family) covering the entry's prefix. The longest entry containing an
//!   address `A` is then covered by exactly the listed networks that contain `A`.
//! * **Protocol, DSCP**: a bitmap per value.
//! * **Ports**: 0..=65535 cut into elementary intervals at every range boundary, each interval
//!   mapped to a *class* (identical bitmaps share one); class 0 is the bitmap of a packet
//!   without ports (rules without a port criterion in that direction only).
//! * **Ingress interface**: a bitmap per listed ifindex, plus ifindex 0 for "any other".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xwan_common::model::Parsed;
use xwan_common::plan::{Action, HashMode, IpNet, Plan, PortRange, RouterTable, Rule};
use xwan_common::{
    ACTION_BLOCK, ACTION_PASS, ACTION_ROUTE, DSCP_ENTRIES, DSCP_KEEP, IfaceRuleKey, LPM_GEN_BITS,
    Lpm4Data, Lpm6Data, MAX_GATEWAYS, MAX_IFACES, MAX_PORT_CLASSES, MAX_PREFIXES, MAX_RULES,
    PROTO_ENTRIES, PortTable, ROUTER_SLOTS, RuleAction, RuleBitmap, SlotTable, TABLE_HASH_SOURCE,
    TABLE_ON_FAILURE_PASS,
};

/// Prefix entries one generation may use in one LPM trie: the trie holds both generations
/// while a commit is under way.
pub const MAX_PREFIXES_PER_GENERATION: usize = MAX_PREFIXES as usize / 2;
/// Interface bitmaps one generation may use (listed interfaces + the "any other" entry).
pub const MAX_IFBM_PER_GENERATION: usize = MAX_IFACES as usize + 1;

/// Port direction index: source port (index 0 of [`Image::ports`]).
pub const DIR_SRC: usize = 0;
/// Port direction index: destination port (index 1 of [`Image::ports`]).
pub const DIR_DST: usize = 1;

/// A ruleset that does not fit the classifier maps.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CompileError {
    /// More rules than [`MAX_RULES`].
    TooManyRules { rules: usize },
    /// The port ranges of one direction need more than [`MAX_PORT_CLASSES`] classes.
    TooManyPortClasses {
        direction: &'static str,
        classes: usize,
    },
    /// More distinct prefixes in one trie than one generation may use.
    TooManyPrefixes { trie: &'static str, prefixes: usize },
    /// More distinct ingress interfaces listed by rules than the interface map holds.
    TooManyInterfaces { interfaces: usize },
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::TooManyRules { rules } => {
                write!(f, "{rules} rules; the data plane holds {MAX_RULES}")
            }
            CompileError::TooManyPortClasses { direction, classes } => write!(
                f,
                "the {direction} port ranges of the rules cut the port space into {classes} \
                 distinct classes; the data plane holds {MAX_PORT_CLASSES} (merge or drop \
                 port ranges)"
            ),
            CompileError::TooManyPrefixes { trie, prefixes } => write!(
                f,
                "the rules list {prefixes} distinct {trie} prefixes; the data plane holds \
                 {MAX_PREFIXES_PER_GENERATION} per ruleset (aggregate networks)"
            ),
            CompileError::TooManyInterfaces { interfaces } => write!(
                f,
                "the rules list {interfaces} distinct ingress interfaces; the data plane \
                 holds {MAX_IFACES}"
            ),
        }
    }
}

impl std::error::Error for CompileError {}

/// One LPM trie entry: `prefix_len` counts the generation prefix ([`LPM_GEN_BITS`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LpmEntry<D> {
    pub prefix_len: u32,
    pub data: D,
    pub bitmap: RuleBitmap,
}

/// The port classification of one direction.
#[derive(Clone)]
pub struct PortImage {
    /// Port → class (never 0: class 0 is "no ports").
    pub table: Box<PortTable>,
    /// Bitmap per class; `classes[0]` = rules without a port criterion in this direction.
    pub classes: Vec<RuleBitmap>,
}

impl fmt::Debug for PortImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortImage")
            .field("classes", &self.classes.len())
            .finish_non_exhaustive()
    }
}

/// Everything the classifier maps must hold for one ruleset generation.
///
/// Map indexes: `xwan_common::{proto,dscp,portmap,portbm,rule}_index`; LPM and IFBM keys
/// carry the generation themselves.
#[derive(Clone, Debug)]
pub struct Image {
    pub generation: u32,
    /// Number of rules; bitmaps only use bits `0..rule_count`.
    pub rule_count: usize,
    pub src4: Vec<LpmEntry<Lpm4Data>>,
    pub dst4: Vec<LpmEntry<Lpm4Data>>,
    pub src6: Vec<LpmEntry<Lpm6Data>>,
    pub dst6: Vec<LpmEntry<Lpm6Data>>,
    /// Indexed by protocol number (256 entries).
    pub proto: Vec<RuleBitmap>,
    /// Indexed by DSCP (64 entries).
    pub dscp: Vec<RuleBitmap>,
    /// [`DIR_SRC`], [`DIR_DST`].
    pub ports: [PortImage; 2],
    /// Listed ingress interfaces, and `ifindex: 0` for every other interface.
    pub ifbm: Vec<(IfaceRuleKey, RuleBitmap)>,
    /// What each rule does, by rule index.
    pub actions: Vec<RuleAction>,
}

impl Image {
    /// The rule the kernel's classifier returns for a packet arriving on `ifindex`, computed
    /// from this image exactly as `ebpf-prog/src/classify.rs` does (longest-prefix match on the
    /// generation-prefixed keys, seven lookups, AND, first bit). `None` when a lookup misses or
    /// no bit is left.
    pub fn classify(&self, p: &Parsed, ifindex: u32) -> Option<usize> {
        let g = self.generation as u8;
        let (src, dst) = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let key = |a: [u8; 4]| [g, 0, 0, 0, a[0], a[1], a[2], a[3]];
                (
                    lpm_lookup(&self.src4, &key(s.octets()))?,
                    lpm_lookup(&self.dst4, &key(d.octets()))?,
                )
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => (
                lpm_lookup(&self.src6, &lpm6_data(g, &s.octets()))?,
                lpm_lookup(&self.dst6, &lpm6_data(g, &d.octets()))?,
            ),
            _ => return None,
        };
        let proto = self.proto.get(p.proto as usize)?;
        let dscp = self.dscp.get(p.dscp as usize)?;
        let (sc, dc) = match p.ports {
            Some((s, d)) => (
                self.ports[DIR_SRC].table.class[s as usize],
                self.ports[DIR_DST].table.class[d as usize],
            ),
            None => (0, 0),
        };
        let sport = self.ports[DIR_SRC].classes.get(sc as usize)?;
        let dport = self.ports[DIR_DST].classes.get(dc as usize)?;
        let find = |ifindex: u32| {
            self.ifbm
                .iter()
                .find(|(k, _)| k.ifindex == ifindex && k.generation == self.generation)
                .map(|(_, b)| b)
        };
        let iface = find(ifindex).or_else(|| find(0))?;
        first_match(&[src, dst, proto, dscp, sport, dport, iface])
    }
}

/// Longest-prefix match over `entries` for the full-length key `data`, as the kernel's LPM trie
/// does (bitwise comparison of the first `prefix_len` bits).
fn lpm_lookup<'a, const N: usize>(
    entries: &'a [LpmEntry<[u8; N]>],
    data: &[u8; N],
) -> Option<&'a RuleBitmap> {
    entries
        .iter()
        .filter(|e| {
            e.prefix_len as usize <= N * 8 && prefix_eq(&e.data, data, e.prefix_len as usize)
        })
        .max_by_key(|e| e.prefix_len)
        .map(|e| &e.bitmap)
}

fn prefix_eq(a: &[u8], b: &[u8], bits: usize) -> bool {
    let full = bits / 8;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let m = 0xffu8 << (8 - rest);
        a[full] & m == b[full] & m
    }
}

fn first_match(b: &[&RuleBitmap; 7]) -> Option<usize> {
    (0..b[0].w.len()).find_map(|w| {
        let x = b.iter().fold(u64::MAX, |acc, m| acc & m.w[w]);
        (x != 0).then(|| w * 64 + x.trailing_zeros() as usize)
    })
}

fn lpm6_data(g: u8, a: &[u8; 16]) -> Lpm6Data {
    let mut d = [0u8; 20];
    d[0] = g;
    d[4..].copy_from_slice(a);
    d
}

fn or(a: &mut RuleBitmap, b: &RuleBitmap) {
    for (x, y) in a.w.iter_mut().zip(b.w.iter()) {
        *x |= *y;
    }
}

/// Bitmap of the rules satisfying `pred`.
fn rules_where(rules: &[Rule], pred: impl Fn(&Rule) -> bool) -> RuleBitmap {
    let mut b = RuleBitmap::EMPTY;
    for (i, r) in rules.iter().enumerate() {
        if pred(r) {
            b.set(i);
        }
    }
    b
}

/// Compiles `plan`'s rules into the classifier maps' contents for ruleset `generation`
/// (0 or 1). The plan should have passed [`Plan::validate`]; this only checks the limits of
/// the classifier maps themselves.
pub fn compile(plan: &Plan, generation: u32) -> Result<Image, CompileError> {
    let rules = &plan.rules;
    if rules.len() > MAX_RULES {
        return Err(CompileError::TooManyRules { rules: rules.len() });
    }
    let generation = generation & 1;
    let g = generation as u8;

    // Keys carry the generation in their first 32 bits (LPM_GEN_BITS).
    let entries = |field: fn(&Rule) -> &Vec<IpNet>, v6: bool, what: &'static str| {
        lpm_entries(rules, field, v6, what).map(|v| {
            v.into_iter().map(move |(net, bitmap)| {
                (LPM_GEN_BITS + net.prefix_len() as u32, net.addr(), bitmap)
            })
        })
    };
    let v4 = |(prefix_len, addr, bitmap)| LpmEntry {
        prefix_len,
        data: lpm4(g, addr),
        bitmap,
    };
    let v6 = |(prefix_len, addr, bitmap)| LpmEntry {
        prefix_len,
        data: lpm6(g, addr),
        bitmap,
    };
    let src4 = entries(|r| &r.criteria.src, false, "IPv4 source")?
        .map(v4)
        .collect();
    let dst4 = entries(|r| &r.criteria.dst, false, "IPv4 destination")?
        .map(v4)
        .collect();
    let src6 = entries(|r| &r.criteria.src, true, "IPv6 source")?
        .map(v6)
        .collect();
    let dst6 = entries(|r| &r.criteria.dst, true, "IPv6 destination")?
        .map(v6)
        .collect();

    // One bitmap per value of a byte field: the rules listing the value, and those without
    // a criterion on the field.
    let per_value = |entries: u32, field: fn(&Rule) -> &Vec<u8>| -> Vec<RuleBitmap> {
        let any = rules_where(rules, |r| field(r).is_empty());
        (0..entries)
            .map(|v| {
                let mut b = any;
                or(
                    &mut b,
                    &rules_where(rules, |r| field(r).contains(&(v as u8))),
                );
                b
            })
            .collect()
    };
    let proto = per_value(PROTO_ENTRIES, |r| &r.criteria.protocols);
    let dscp = per_value(DSCP_ENTRIES, |r| &r.criteria.dscp);

    let ports = [
        port_image(rules, |r| &r.criteria.src_ports, "source")?,
        port_image(rules, |r| &r.criteria.dst_ports, "destination")?,
    ];

    let ifindexes: BTreeSet<u32> = rules
        .iter()
        .flat_map(|r| r.criteria.ifaces.iter().copied())
        .filter(|&i| i != 0)
        .collect();
    if ifindexes.len() + 1 > MAX_IFBM_PER_GENERATION {
        return Err(CompileError::TooManyInterfaces {
            interfaces: ifindexes.len(),
        });
    }
    let any_iface = rules_where(rules, |r| r.criteria.ifaces.is_empty());
    let mut ifbm = vec![(
        IfaceRuleKey {
            generation,
            ifindex: 0,
        },
        any_iface,
    )];
    for &ifindex in &ifindexes {
        let mut b = any_iface;
        or(
            &mut b,
            &rules_where(rules, |r| r.criteria.ifaces.contains(&ifindex)),
        );
        ifbm.push((
            IfaceRuleKey {
                generation,
                ifindex,
            },
            b,
        ));
    }

    let actions = rules.iter().map(rule_action).collect();

    Ok(Image {
        generation,
        rule_count: rules.len(),
        src4,
        dst4,
        src6,
        dst6,
        proto,
        dscp,
        ports,
        ifbm,
        actions,
    })
}

/// The [`RuleAction`] the kernel reads for `rule`.
pub fn rule_action(rule: &Rule) -> RuleAction {
    let (kind, router) = match rule.action {
        Action::Route(r) => (ACTION_ROUTE, r),
        Action::Pass => (ACTION_PASS, 0),
        Action::Block => (ACTION_BLOCK, 0),
    };
    RuleAction {
        kind,
        dscp: rule.set_dscp.unwrap_or(DSCP_KEEP),
        router,
        counter: rule.counter,
        _pad: 0,
    }
}

fn lpm4(g: u8, a: IpAddr) -> Lpm4Data {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            [g, 0, 0, 0, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(_) => unreachable!("IPv6 network in an IPv4 trie"),
    }
}

fn lpm6(g: u8, a: IpAddr) -> Lpm6Data {
    match a {
        IpAddr::V6(a) => lpm6_data(g, &a.octets()),
        IpAddr::V4(_) => unreachable!("IPv4 network in an IPv6 trie"),
    }
}

/// The prefixes of one trie (direction `field`, family `v6`) and their bitmaps, sorted by
/// (length, address).
fn lpm_entries(
    rules: &[Rule],
    field: impl Fn(&Rule) -> &Vec<IpNet>,
    v6: bool,
    trie: &'static str,
) -> Result<Vec<(IpNet, RuleBitmap)>, CompileError> {
    let any = rules_where(rules, |r| field(r).is_empty());
    // Rules listing exactly this network.
    let mut exact: HashMap<IpNet, RuleBitmap> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        for n in field(r).iter().filter(|n| n.is_ipv4() != v6) {
            exact.entry(*n).or_insert(RuleBitmap::EMPTY).set(i);
        }
    }
    let zero: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let default = IpNet::new(zero, 0).expect("/0 is valid");
    let mut prefixes: BTreeMap<(u8, IpAddr), IpNet> = exact
        .keys()
        .map(|n| ((n.prefix_len(), n.addr()), *n))
        .collect();
    prefixes.insert((0, default.addr()), default);
    if prefixes.len() > MAX_PREFIXES_PER_GENERATION {
        return Err(CompileError::TooManyPrefixes {
            trie,
            prefixes: prefixes.len(),
        });
    }
    let lengths: BTreeSet<u8> = exact.keys().map(|n| n.prefix_len()).collect();
    Ok(prefixes
        .into_values()
        .map(|p| {
            let mut b = any;
            for &l in lengths.iter().take_while(|&&l| l <= p.prefix_len()) {
                let ancestor = IpNet::new(p.addr(), l).expect("shorter prefix of a valid one");
                if let Some(e) = exact.get(&ancestor) {
                    or(&mut b, e);
                }
            }
            (p, b)
        })
        .collect())
}

/// A zeroed [`PortTable`] on the heap (it is 128 KiB: never build one on the stack).
pub fn zeroed_port_table() -> Box<PortTable> {
    // SAFETY: PortTable is an array of u16; all-zero bytes are a valid value.
    unsafe { Box::<PortTable>::new_zeroed().assume_init() }
}

/// A zeroed [`SlotTable`] on the heap.
fn zeroed_slot_table() -> Box<SlotTable> {
    // SAFETY: SlotTable is made of integers only; all-zero bytes are a valid value.
    unsafe { Box::<SlotTable>::new_zeroed().assume_init() }
}

fn port_image(
    rules: &[Rule],
    field: impl Fn(&Rule) -> &Vec<PortRange>,
    direction: &'static str,
) -> Result<PortImage, CompileError> {
    let any = rules_where(rules, |r| field(r).is_empty());
    // Sweep over range boundaries: +1 at `first`, -1 at `last + 1`.
    let mut events: BTreeMap<u32, Vec<(usize, i32)>> = BTreeMap::new();
    events.entry(0).or_default();
    for (i, r) in rules.iter().enumerate() {
        for pr in field(r) {
            events.entry(pr.first() as u32).or_default().push((i, 1));
            events
                .entry(pr.last() as u32 + 1)
                .or_default()
                .push((i, -1));
        }
    }
    let starts: Vec<u32> = events
        .keys()
        .copied()
        .filter(|&s| s <= u16::MAX as u32)
        .collect();
    let mut covering = vec![0i32; rules.len()];
    let mut current = RuleBitmap::EMPTY;
    let mut classes = vec![any];
    let mut class_of: HashMap<[u64; xwan_common::BITMAP_WORDS], usize> = HashMap::new();
    let mut table = zeroed_port_table();
    for (k, &start) in starts.iter().enumerate() {
        for &(rule, delta) in &events[&start] {
            covering[rule] += delta;
            if covering[rule] > 0 {
                current.set(rule);
            } else {
                current.w[rule / 64] &= !(1u64 << (rule % 64));
            }
        }
        let mut b = any;
        or(&mut b, &current);
        let class = *class_of.entry(b.w).or_insert_with(|| {
            classes.push(b);
            classes.len() - 1
        });
        let end = starts.get(k + 1).map_or(u16::MAX as u32 + 1, |&e| e);
        // Truncation is harmless: too many classes is an error below.
        table.class[start as usize..end as usize].fill(class as u16);
    }
    if classes.len() > MAX_PORT_CLASSES as usize {
        return Err(CompileError::TooManyPortClasses {
            direction,
            classes: classes.len(),
        });
    }
    Ok(PortImage { table, classes })
}

/// The [`SlotTable`] the kernel reads for a router table: `active` = distinct gateways in the
/// slots (0 when there are none), flags, keep bits, slots (zero when empty).
pub fn slot_table(t: &RouterTable) -> Box<SlotTable> {
    let mut s = zeroed_slot_table();
    fill_slot_table(t, &mut s);
    s
}

/// An all-zero table (no gateway: `on_failure` drops).
pub(crate) const EMPTY_SLOT_TABLE: SlotTable = SlotTable {
    active: 0,
    flags: 0,
    keep: [0; (MAX_GATEWAYS / 64) as usize],
    slots: [0; ROUTER_SLOTS],
};

/// Writes `t` into `s` (every field), in place: a verdict converts dozens of tables into one
/// buffer for a batched map update.
pub(crate) fn fill_slot_table(t: &RouterTable, s: &mut SlotTable) {
    let full = t.slots.len() == ROUTER_SLOTS;
    s.active = crate::router::slots::distinct(&t.slots) as u32;
    if full {
        s.slots.copy_from_slice(&t.slots);
    } else {
        s.slots.fill(0);
    }
    s.flags = 0;
    if t.on_failure_pass {
        s.flags |= TABLE_ON_FAILURE_PASS;
    }
    if t.hash == HashMode::Source {
        s.flags |= TABLE_HASH_SOURCE;
    }
    s.keep.fill(0);
    for &g in t.keep.iter().filter(|&&g| (g as u32) < MAX_GATEWAYS) {
        s.keep[g as usize / 64] |= 1 << (g % 64);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use xwan_common::model::Model;
    use xwan_common::plan::Criteria;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pkt(src: &str, dst: &str, proto: u8, dscp: u8, ports: Option<(u16, u16)>) -> Parsed {
        let src: IpAddr = src.parse().unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        Parsed {
            l3: 14,
            vlan_tags: 0,
            family: if src.is_ipv4() { 4 } else { 6 },
            src,
            dst,
            proto,
            dscp,
            ttl: 64,
            ports,
            tcp_flags: 0,
            fragment: false,
            l4: if src.is_ipv4() { 34 } else { 54 },
        }
    }

    /// The specification, as a linear scan (independent of the model crate).
    fn linear(rules: &[Rule], p: &Parsed, ifindex: u32) -> Option<usize> {
        let port = |ranges: &[PortRange], port: Option<u16>| {
            ranges.is_empty() || port.is_some_and(|x| ranges.iter().any(|r| r.contains(x)))
        };
        rules.iter().position(|r| {
            (r.criteria.src.is_empty() || r.criteria.src.iter().any(|n| n.contains(p.src)))
                && (r.criteria.dst.is_empty() || r.criteria.dst.iter().any(|n| n.contains(p.dst)))
                && (r.criteria.protocols.is_empty() || r.criteria.protocols.contains(&p.proto))
                && (r.criteria.dscp.is_empty() || r.criteria.dscp.contains(&p.dscp))
                && (r.criteria.ifaces.is_empty() || r.criteria.ifaces.contains(&ifindex))
                && port(&r.criteria.src_ports, p.ports.map(|x| x.0))
                && port(&r.criteria.dst_ports, p.ports.map(|x| x.1))
        })
    }

    fn plan(rules: Vec<Rule>) -> Plan {
        Plan {
            rules,
            ..Plan::default()
        }
    }

    fn bits(b: &RuleBitmap) -> Vec<usize> {
        (0..MAX_RULES).filter(|&i| b.contains(i)).collect()
    }

    #[test]
    fn empty_plan_has_default_entries_only() {
        let img = compile(&Plan::default(), 1).unwrap();
        assert_eq!(img.generation, 1);
        assert_eq!(img.src4.len(), 1);
        assert_eq!(img.src4[0].prefix_len, 32);
        assert_eq!(img.src4[0].data, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(img.src6[0].prefix_len, 32);
        assert_eq!(img.src6[0].data[0], 1);
        assert_eq!(img.proto.len(), 256);
        assert_eq!(img.dscp.len(), 64);
        assert!(img.proto.iter().all(|b| *b == RuleBitmap::EMPTY));
        assert_eq!(img.ports[0].classes.len(), 2, "class 0 + one interval");
        assert!(img.ports[0].table.class.iter().all(|&c| c == 1));
        assert_eq!(
            img.ifbm,
            vec![(
                IfaceRuleKey {
                    generation: 1,
                    ifindex: 0
                },
                RuleBitmap::EMPTY
            )]
        );
        assert!(img.actions.is_empty());
        assert_eq!(
            img.classify(&pkt("1.2.3.4", "5.6.7.8", 6, 0, Some((1, 2))), 1),
            None
        );
    }

    #[test]
    fn lpm_entries_cover_nested_prefixes_and_keys_carry_generation() {
        let mut r0 = Rule::any(Action::Block);
        r0.criteria.src = vec![net("10.1.2.0/24")];
        let mut r1 = Rule::any(Action::Pass);
        r1.criteria.src = vec![net("10.0.0.0/8"), net("2001:db8::/32")];
        let r2 = Rule::any(Action::Pass);
        let img = compile(&plan(vec![r0, r1, r2]), 0).unwrap();
        let by_len: Vec<(u32, [u8; 8], Vec<usize>)> = img
            .src4
            .iter()
            .map(|e| (e.prefix_len, e.data, bits(&e.bitmap)))
            .collect();
        assert_eq!(
            by_len,
            vec![
                (32, [0, 0, 0, 0, 0, 0, 0, 0], vec![2]),
                (40, [0, 0, 0, 0, 10, 0, 0, 0], vec![1, 2]),
                (56, [0, 0, 0, 0, 10, 1, 2, 0], vec![0, 1, 2]),
            ]
        );
        let v6: Vec<(u32, Vec<usize>)> = img
            .src6
            .iter()
            .map(|e| (e.prefix_len, bits(&e.bitmap)))
            .collect();
        assert_eq!(v6, vec![(32, vec![2]), (64, vec![1, 2])]);
        assert_eq!(
            &img.src6[1].data[..8],
            &[0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8]
        );
        // Destination trie: no criterion anywhere, so /0 holds every rule.
        assert_eq!(bits(&img.dst4[0].bitmap), vec![0, 1, 2]);
        assert_eq!(
            img.classify(&pkt("10.1.2.3", "1.1.1.1", 6, 0, None), 1),
            Some(0)
        );
        assert_eq!(
            img.classify(&pkt("10.9.2.3", "1.1.1.1", 6, 0, None), 1),
            Some(1)
        );
        assert_eq!(
            img.classify(&pkt("11.1.2.3", "1.1.1.1", 6, 0, None), 1),
            Some(2)
        );
        assert_eq!(
            img.classify(&pkt("2001:db8::1", "::1", 6, 0, None), 1),
            Some(1)
        );
        assert_eq!(
            img.classify(&pkt("2001:db9::1", "::1", 6, 0, None), 1),
            Some(2)
        );
    }

    #[test]
    fn family_specific_criteria_do_not_match_the_other_family() {
        let mut r0 = Rule::any(Action::Block);
        r0.criteria.dst = vec![net("::/0")];
        let img = compile(&plan(vec![r0]), 1).unwrap();
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, None), 3),
            None
        );
        assert_eq!(img.classify(&pkt("::1", "::2", 17, 0, None), 3), Some(0));
        assert_eq!(bits(&img.dst4[0].bitmap), Vec::<usize>::new());
    }

    #[test]
    fn ports_classes_and_portless_packets() {
        let mut r0 = Rule::any(Action::Block);
        r0.criteria.dst_ports = vec![PortRange::single(53)];
        let mut r1 = Rule::any(Action::Pass);
        r1.criteria.dst_ports = vec![PortRange::new(50, 60).unwrap(), PortRange::single(65535)];
        r1.criteria.src_ports = vec![PortRange::single(0)];
        let r2 = Rule::any(Action::Pass);
        let img = compile(&plan(vec![r0, r1, r2]), 0).unwrap();
        let d = &img.ports[DIR_DST];
        assert_eq!(bits(&d.classes[0]), vec![2]);
        let cls = |p: usize| bits(&d.classes[d.table.class[p] as usize]);
        assert_eq!(cls(0), vec![2]);
        assert_eq!(cls(49), vec![2]);
        assert_eq!(cls(50), vec![1, 2]);
        assert_eq!(cls(53), vec![0, 1, 2]);
        assert_eq!(cls(54), vec![1, 2]);
        assert_eq!(cls(60), vec![1, 2]);
        assert_eq!(cls(61), vec![2]);
        assert_eq!(cls(65534), vec![2]);
        assert_eq!(cls(65535), vec![1, 2]);
        assert!(d.table.class.iter().all(|&c| c != 0));
        // Identical bitmaps share a class: {2}, {1,2}, {0,1,2}.
        assert_eq!(d.classes.len(), 4);
        let s = &img.ports[DIR_SRC];
        assert_eq!(bits(&s.classes[s.table.class[0] as usize]), vec![0, 1, 2]);
        assert_eq!(bits(&s.classes[s.table.class[1] as usize]), vec![0, 2]);
        // A packet without ports matches only rules without port criteria.
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, None), 1),
            Some(2)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, Some((0, 53))), 1),
            Some(0)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, Some((1, 53))), 1),
            Some(0)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, Some((0, 54))), 1),
            Some(1)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 17, 0, Some((1, 54))), 1),
            Some(2)
        );
    }

    #[test]
    fn too_many_port_classes_is_an_error() {
        // Three regions where each rule's range overlaps its neighbours' (in a different
        // order per region): about two distinct bitmaps per rule and region.
        let rules = (0..MAX_RULES as u16)
            .map(|i| {
                let mut r = Rule::any(Action::Pass);
                r.criteria.dst_ports = [1u16, 7, 13]
                    .iter()
                    .enumerate()
                    .map(|(region, &k)| {
                        let start = region as u16 * 20000 + (i.wrapping_mul(k) % 1024) * 16;
                        PortRange::new(start, start + 40).unwrap()
                    })
                    .collect();
                r
            })
            .collect();
        let e = compile(&plan(rules), 0).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                e,
                CompileError::TooManyPortClasses {
                    direction: "destination",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("destination port ranges"), "{e}");
    }

    #[test]
    fn proto_dscp_iface_and_actions() {
        let mut r0 = Rule::any(Action::Route(3));
        r0.criteria.protocols = vec![6, 17];
        r0.criteria.dscp = vec![46];
        r0.criteria.ifaces = vec![4, 7];
        r0.set_dscp = Some(18);
        r0.counter = 9;
        let mut r1 = Rule::any(Action::Block);
        r1.criteria.ifaces = vec![7];
        let r2 = Rule::any(Action::Pass);
        let img = compile(&plan(vec![r0, r1, r2]), 1).unwrap();
        assert_eq!(bits(&img.proto[6]), vec![0, 1, 2]);
        assert_eq!(bits(&img.proto[1]), vec![1, 2]);
        assert_eq!(bits(&img.dscp[46]), vec![0, 1, 2]);
        assert_eq!(bits(&img.dscp[0]), vec![1, 2]);
        let ifbm: Vec<(u32, u32, Vec<usize>)> = img
            .ifbm
            .iter()
            .map(|(k, b)| (k.generation, k.ifindex, bits(b)))
            .collect();
        assert_eq!(
            ifbm,
            vec![(1, 0, vec![2]), (1, 4, vec![0, 2]), (1, 7, vec![0, 1, 2])]
        );
        assert_eq!(
            img.actions[0],
            RuleAction {
                kind: ACTION_ROUTE,
                dscp: 18,
                router: 3,
                counter: 9,
                _pad: 0
            }
        );
        assert_eq!(
            img.actions[1],
            RuleAction {
                kind: ACTION_BLOCK,
                dscp: DSCP_KEEP,
                router: 0,
                counter: 0,
                _pad: 0
            }
        );
        assert_eq!(img.actions[2].kind, ACTION_PASS);
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 6, 46, None), 4),
            Some(0)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 6, 0, None), 7),
            Some(1)
        );
        assert_eq!(
            img.classify(&pkt("1.1.1.1", "2.2.2.2", 6, 46, None), 9),
            Some(2)
        );
    }

    #[test]
    fn generation_is_masked_to_one_bit() {
        let img = compile(&Plan::default(), 3).unwrap();
        assert_eq!(img.generation, 1);
        assert_eq!(img.src4[0].data[0], 1);
    }

    #[test]
    fn slot_tables() {
        let mut t = RouterTable::single(5);
        t.slots[7] = 1000;
        t.keep = vec![5, 1000, 63, 64];
        t.hash = HashMode::Source;
        t.on_failure_pass = true;
        let s = slot_table(&t);
        assert_eq!(s.active, 2);
        assert_eq!(s.flags, TABLE_ON_FAILURE_PASS | TABLE_HASH_SOURCE);
        assert_eq!(s.slots[0], 5);
        assert_eq!(s.slots[7], 1000);
        assert!(s.keeps(5) && s.keeps(1000) && s.keeps(63) && s.keeps(64));
        assert!(!s.keeps(6) && !s.keeps(0));
        let empty = RouterTable {
            slots: vec![],
            keep: vec![],
            hash: HashMode::Connection,
            on_failure_pass: false,
        };
        let s = slot_table(&empty);
        assert_eq!((s.active, s.flags), (0, 0));
        assert!(s.slots.iter().all(|&g| g == 0));
        assert!(s.keep.iter().all(|&w| w == 0));
    }

    // ---- property tests: image evaluator == specification ----------------------------------

    const NETS4: &[&str] = &[
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.1.2.128/25",
        "192.168.0.0/16",
        "192.168.1.1/32",
        "128.0.0.0/1",
    ];
    const NETS6: &[&str] = &[
        "::/0",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "2001:db8:1::1/128",
        "fd00::/8",
    ];
    const ADDRS4: &[&str] = &[
        "10.1.2.3",
        "10.1.2.4",
        "10.1.2.200",
        "10.1.3.1",
        "10.2.0.1",
        "11.0.0.1",
        "192.168.1.1",
        "192.168.2.2",
        "200.1.1.1",
        "0.0.0.0",
        "255.255.255.255",
    ];
    const ADDRS6: &[&str] = &[
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db8:2::1",
        "fd00::5",
        "fe80::1",
        "::",
    ];
    const PORTS: &[u16] = &[0, 1, 52, 53, 54, 80, 443, 1023, 1024, 65534, 65535];

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            3 => prop::sample::select(NETS4).prop_map(net),
            1 => prop::sample::select(NETS6).prop_map(net),
            1 => (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(Ipv4Addr::from(a).into(), l).unwrap()),
        ]
    }

    fn arb_range() -> impl Strategy<Value = PortRange> {
        (prop::sample::select(PORTS), prop::sample::select(PORTS))
            .prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b)).unwrap())
    }

    /// Empty half of the time, else one or two values.
    fn list<T: std::fmt::Debug + Clone + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Vec<T>> {
        prop_oneof![1 => Just(vec![]), 1 => prop::collection::vec(s, 1..3)].boxed()
    }

    pub(crate) fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            list(arb_net().boxed()),
            list(arb_net().boxed()),
            list(prop::sample::select(vec![1u8, 6, 17, 58, 132]).boxed()),
            list(arb_range().boxed()),
            list(arb_range().boxed()),
            list(prop::sample::select(vec![0u8, 10, 18, 46, 63]).boxed()),
            list((1u32..4).boxed()),
            prop::sample::select(vec![Action::Pass, Action::Block, Action::Route(0)]),
        )
            .prop_map(
                |(src, dst, protocols, src_ports, dst_ports, dscp, ifaces, action)| Rule {
                    criteria: Criteria {
                        src,
                        dst,
                        protocols,
                        src_ports,
                        dst_ports,
                        dscp,
                        ifaces,
                    },
                    action,
                    set_dscp: None,
                    counter: 0,
                },
            )
    }

    fn arb_addr(v6: bool) -> BoxedStrategy<IpAddr> {
        if v6 {
            prop_oneof![
                prop::sample::select(ADDRS6).prop_map(|s| s.parse().unwrap()),
                any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            ]
            .boxed()
        } else {
            prop_oneof![
                3 => prop::sample::select(ADDRS4).prop_map(|s| s.parse().unwrap()),
                1 => any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            ]
            .boxed()
        }
    }

    pub(crate) fn arb_packet() -> impl Strategy<Value = (Parsed, u32)> {
        let port = prop_oneof![3 => prop::sample::select(PORTS), 1 => any::<u16>()];
        any::<bool>()
            .prop_flat_map(move |v6| {
                (
                    arb_addr(v6),
                    arb_addr(v6),
                    prop::sample::select(vec![1u8, 6, 17, 58, 132, 47]),
                    prop_oneof![prop::sample::select(vec![0u8, 10, 18, 46, 63]), 0u8..64],
                    prop::option::weighted(0.8, (port.clone(), port.clone())),
                    0u32..5,
                )
            })
            .prop_map(|(src, dst, proto, dscp, ports, ifindex)| {
                let family = if src.is_ipv4() { 4 } else { 6 };
                (
                    Parsed {
                        l3: 14,
                        vlan_tags: 0,
                        family,
                        src,
                        dst,
                        proto,
                        dscp,
                        ttl: 64,
                        ports,
                        tcp_flags: 0,
                        fragment: false,
                        l4: if family == 4 { 34 } else { 54 },
                    },
                    ifindex,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn image_classifies_like_the_specification(
            rules in prop::collection::vec(arb_rule(), 0..12),
            packets in prop::collection::vec(arb_packet(), 1..24),
            generation in 0u32..2,
        ) {
            let plan = Plan {
                rules,
                routers: vec![RouterTable::single(0)],
                ..Plan::default()
            };
            let img = compile(&plan, generation).unwrap();
            let model = Model::new(plan.clone(), generation);
            for (p, ifindex) in &packets {
                let want = linear(&plan.rules, p, *ifindex);
                prop_assert_eq!(img.classify(p, *ifindex), want, "packet {:?} on {}", p, ifindex);
                prop_assert_eq!(model.classify(p, *ifindex), want, "model, packet {:?} on {}", p, ifindex);
            }
            // Bitmaps never hold bits past the last rule.
            let n = plan.rules.len();
            let all = img.src4.iter().map(|e| &e.bitmap)
                .chain(img.dst6.iter().map(|e| &e.bitmap))
                .chain(img.proto.iter())
                .chain(img.ports[1].classes.iter())
                .chain(img.ifbm.iter().map(|(_, b)| b));
            for b in all {
                prop_assert!(bits(b).iter().all(|&i| i < n));
            }
        }

        #[test]
        fn every_port_maps_to_a_class_with_exactly_the_covering_rules(
            ranges in prop::collection::vec(prop::collection::vec(
                (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b)).unwrap()), 0..3), 0..8),
            probes in prop::collection::vec(any::<u16>(), 16),
        ) {
            let rules: Vec<Rule> = ranges.iter().map(|r| {
                let mut rule = Rule::any(Action::Pass);
                rule.criteria.src_ports = r.clone();
                rule
            }).collect();
            let img = compile(&plan(rules.clone()), 0).unwrap();
            let s = &img.ports[DIR_SRC];
            let mut probes = probes;
            probes.extend([0, 65535]);
            probes.extend(rules.iter().flat_map(|r| r.criteria.src_ports.iter().flat_map(|p| [p.first(), p.last()])));
            for port in probes {
                let c = s.table.class[port as usize] as usize;
                prop_assert!(c >= 1 && c < s.classes.len());
                let want: Vec<usize> = (0..rules.len())
                    .filter(|&i| rules[i].criteria.src_ports.is_empty() || rules[i].criteria.src_ports.iter().any(|p| p.contains(port)))
                    .collect();
                prop_assert_eq!(bits(&s.classes[c]), want);
            }
            let empty: Vec<usize> = (0..rules.len()).filter(|&i| rules[i].criteria.src_ports.is_empty()).collect();
            prop_assert_eq!(bits(&s.classes[0]), empty);
            // Classes are distinct (deduplicated).
            let distinct: std::collections::HashSet<_> = s.classes[1..].iter().map(|b| b.w).collect();
            prop_assert_eq!(distinct.len(), s.classes.len() - 1);
        }
    }
}
