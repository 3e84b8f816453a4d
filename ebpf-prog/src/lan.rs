//! `xwan_xdp_lan` and `xwan_xdp_decide`: steps 1–12 of the specification in
//! `xwan_common::model`, split in two programs joined by a tail call ([`parse_stage`] then
//! [`decide`]); the callers count the reason.
//!
//! A flow's packets after its first are answered from a per-CPU flow cache ([`from_cache`])
//! while its entry provably agrees with the flow table; the flow-table path refills it. The
//! cache is invisible in behaviour (the model has none): it saves the LRU hash lookup and,
//! answered in the first stage ([`first_stage_hit`]), the hand-over and the tail call.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::{bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use xwan_common::{
    ACTION_BLOCK, ACTION_PASS, ACTION_ROUTE, AddrKey, CACHE_GATEWAY, CACHE_OFFLOADED, CACHE_SNAT,
    CONFIG_RETURN_ROUTES, DSCP_KEEP, FLOW_CACHE_BANKS, FLOW_OFFLOADED, FLOW_REFRESH_NS, FLOW_SNAT,
    FlowCacheEntry, FlowKey, FlowValue, GW_KIND_ETHERNET, GW_KIND_KERNEL, GW_KIND_NONE,
    GW_KIND_TUNNEL, GatewayInfo, IFACE_ARRAY_SIZE, IfaceInfo, Moved, NO_ROUTER, OFFLOAD_V4,
    OFFLOAD_V6, ParsedPacket, ROUTER_SLOTS, RuleAction, Snat, TABLE_HASH_SOURCE,
    TABLE_ON_FAILURE_PASS, TUNNEL_TAG_PREFIX, csum, hash, kernel_tag, may_offload, reason,
    rule_index, slots_index, tunnel_tag,
};

use crate::{
    classify::classify,
    egress,
    maps::*,
    parse::{ETH_P_IP, ETH_P_IPV6, Pkt, load, parse_eth},
};

/// Stage 1 (`xwan_xdp_lan`): steps 1–7. `Ok` with the parse when the packet goes on (to
/// [`first_stage_hit`], then [`hand_over`] and [`decide`]); otherwise the reason it is handed
/// to the kernel.
#[inline(always)]
pub fn parse_stage(ctx: &XdpContext) -> Result<Pkt, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let ifindex = ctx.ingress_ifindex() as u32;

    let Some(iface) = iface(ifindex) else {
        return Err(reason::PASS_NOT_CONFIGURED);
    };
    // One bounds check for the whole Ethernet header; the destination MAC is its start.
    let Some(eth) = load::<[u8; 14]>(start, end, 0) else {
        return Err(reason::PASS_MALFORMED);
    };
    if eth[6..8] == TUNNEL_TAG_PREFIX || eth[..2] == TUNNEL_TAG_PREFIX {
        return Err(reason::DROP_FORGED_TAG);
    }
    if eth[..6] != iface.mac {
        return Err(reason::PASS_NOT_FOR_US);
    }
    parse_eth(start, end)
}

/// The LAN interface `ifindex`, if xwan runs there: an array load for the usual small
/// ifindexes, a hash lookup for the others.
#[inline(always)]
pub(crate) fn iface(ifindex: u32) -> Option<&'static IfaceInfo> {
    if ifindex < IFACE_ARRAY_SIZE {
        XWAN_IFACE_ARR.get(ifindex).filter(|i| i.configured != 0)
    } else {
        // SAFETY: values are plain data owned by the map.
        unsafe { XWAN_IFACES.get(ifindex) }
    }
}

/// Stores `p` in `XWAN_SCRATCH` for [`decide`]; `false` when the map is missing.
#[inline(always)]
pub fn hand_over(p: &Pkt) -> bool {
    let Some(out) = XWAN_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; nothing else runs on this CPU until `decide` has read it.
    unsafe {
        *out = ParsedPacket {
            src: p.src,
            dst: p.dst,
            l3: p.l3 as u16,
            sport: p.sport,
            dport: p.dport,
            tags: p.tags,
            v6: p.v6 as u8,
            proto: p.proto,
            dscp: p.dscp,
            ttl: p.ttl,
            has_ports: p.has_ports as u8,
            tcp_flags: p.tcp_flags,
            fragment: p.fragment as u8,
            l4: p.l4,
            key: flow_key(p, 0),
        };
    }
    true
}

/// A flow's packet answered in the first stage from the flow cache, which saves the hand-over
/// and the tail call: `(xdp action, reason)`, or `(MISS, _)`. Never with return routes on:
/// their checks come before the flow table (in [`decide`], which then asks the cache).
#[inline(always)]
pub fn first_stage_hit(ctx: &XdpContext, p: &Pkt, len: u64) -> (u32, u32) {
    let (Some(c), Some(epoch)) = (XWAN_CONFIG.get(0), XWAN_RULESET.get(0)) else {
        return (MISS, 0);
    };
    if c.flags & CONFIG_RETURN_ROUTES != 0 {
        return (MISS, 0);
    }
    let key = flow_key(p, ctx.ingress_ifindex() as u32);
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let slots = hash::flow_cache_slots(&key);
    from_cache(ctx, p, &key, slots, *epoch, now, c.flow_idle_ns, len)
}

/// The flow table's key of `p` arriving on `ifindex` (0 for the return-route table).
#[inline(always)]
fn flow_key(p: &Pkt, ifindex: u32) -> FlowKey {
    FlowKey {
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        family: if p.v6 { 6 } else { 4 },
        _pad: 0,
        ifindex,
    }
}

/// Whether `dst` is one of the router's own addresses (`XWAN_LOCAL`).
#[inline(always)]
fn is_local(family: u32, dst: &[u32; 4]) -> bool {
    let local = AddrKey { family, addr: *dst };
    // SAFETY: plain data owned by the map.
    unsafe { XWAN_LOCAL.get(local) }.is_some()
}

/// Stage 2 (`xwan_xdp_decide`): steps 8–12 on the packet [`parse_stage`] stored. Returns
/// `(xdp action, reason)`.
///
/// Every field comes back from the map as an unknown value to the verifier, which is the
/// point: this program is verified once, not once per parse path.
#[inline(always)]
pub fn decide(ctx: &XdpContext, len: u64) -> (u32, u32) {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(scratch) = XWAN_SCRATCH.get_ptr_mut(0) else {
        return (XDP_PASS, reason::PASS_NOT_CONFIGURED);
    };
    // SAFETY: this CPU's slot, written by the first stage for this packet.
    let s = unsafe { &*scratch };
    let p = Pkt {
        // 14, 18 or 22. The mask bounds every copy LLVM keeps of it: older verifiers (6.1)
        // do not carry a later `l3 > 22` check over to a reload of the spilled value, and a
        // packet offset that may reach 64 KiB is never granted a range.
        l3: (s.l3 & 0x1f) as usize,
        tags: s.tags & 3,
        v6: s.v6 != 0,
        proto: s.proto,
        // Six bits on the wire; the mask keeps a lookup index in its generation.
        dscp: s.dscp & 0x3f,
        ttl: s.ttl,
        has_ports: s.has_ports != 0,
        sport: s.sport,
        dport: s.dport,
        tcp_flags: s.tcp_flags,
        fragment: s.fragment != 0,
        l4: s.l4,
        src: s.src,
        dst: s.dst,
    };
    let family: u32 = if p.v6 { 6 } else { 4 };
    // SAFETY: as `s`; nothing else reads or writes the key meanwhile.
    let key = unsafe { &mut (*scratch).key };

    let (flow_idle_ns, config_flags, marks) = match XWAN_CONFIG.get(0) {
        Some(c) => (c.flow_idle_ns, c.flags, c.marks),
        None => (0, 0, 0),
    };

    // The key is built at each use: a key alive through `decide` costs stack it lacks.
    let is_local = || is_local(family, &p.dst);
    // Return route: replies leave through the link their connection arrived on. Local
    // destinations first: a return entry learned from a spoofed source must not divert
    // traffic for the router itself.
    if config_flags & CONFIG_RETURN_ROUTES != 0 && is_local() {
        return (XDP_PASS, reason::PASS_LOCAL);
    }
    if config_flags & CONFIG_RETURN_ROUTES != 0
        && let Some(r) = unsafe { XWAN_RETURN.get(&*key) }
    {
        let gw = r.gateway;
        if let Some(g) = XWAN_GATEWAYS.get(gw)
            && g.kind != GW_KIND_NONE
            && g.ready == 1
        {
            return forward(
                ctx,
                &p,
                gw,
                Some(g),
                DSCP_KEEP,
                reason::STEER_RETURN,
                len,
                (false, None),
            );
        }
    }
    key.ifindex = ifindex;

    let epoch = match XWAN_RULESET.get(0) {
        Some(e) => *e,
        None => return (XDP_PASS, reason::PASS_NO_MATCH),
    };
    let generation = epoch & 1;
    let now = unsafe { bpf_ktime_get_coarse_ns() };

    let slots = hash::flow_cache_slots(key);
    // Without return routes the first stage has asked the cache already.
    if config_flags & CONFIG_RETURN_ROUTES != 0 {
        let cached = from_cache(ctx, &p, key, slots, epoch, now, flow_idle_ns, len);
        if cached.0 != MISS {
            return cached;
        }
    }

    let entry = XWAN_FLOWS.get_ptr_mut(&*key);
    // A copy: the entry may be rewritten by another CPU meanwhile. A zero value stands for
    // "no entry" rather than an `Option`: LLVM spills the undefined payload of a `None`, a
    // read of an uninitialised register that Linux 6.1's verifier rejects.
    let (found, old) = match entry {
        Some(e) => (true, unsafe { *e }),
        None => (false, flow_value(0, 0, 0, 0, 0, 0)),
    };
    let live =
        if found && (flow_idle_ns == 0 || now.saturating_sub(old.last_seen_ns) <= flow_idle_ns) {
            Some(old)
        } else {
            None
        };
    let (rule, from_flow) = match live {
        Some(f) if f.epoch == epoch => (f.rule as u32, true),
        _ => {
            // Local delivery is decided here, not per packet: no flow is ever created for
            // a local destination, and an address change commits a new epoch. (With return
            // routes on, it was decided above.)
            if config_flags & CONFIG_RETURN_ROUTES == 0 && is_local() {
                return (XDP_PASS, reason::PASS_LOCAL);
            }
            match classify(&p, generation, ifindex) {
                Some(r) => (r, false),
                None => return (XDP_PASS, reason::PASS_NO_MATCH),
            }
        }
    };
    let Some(action) = XWAN_RULES.get(rule_index(generation, rule)) else {
        return (XDP_PASS, reason::PASS_NO_MATCH);
    };
    count(&XWAN_RULE_CNT, action.counter as u32, len);

    let mut router = NO_ROUTER;
    let mut gateway: Option<u16> = None;
    let mut router_version = 0;
    let outcome = if action.kind == ACTION_ROUTE {
        router = action.router;
        // Read once: the table chosen from and the version the cache records must agree.
        let Some(version) = XWAN_RTR_VER.get(router as u32) else {
            return (XDP_PASS, reason::PASS_GATEWAY_ERROR);
        };
        router_version = *version;
        match choose_gateway(&p, key, router, router_version, live) {
            Choice::Gateway(gw) => gateway = Some(gw),
            Choice::Hashed(gw) => {
                count(&XWAN_GW_NEW, gw as u32, len);
                gateway = Some(gw);
            }
            Choice::NoneActive(pass) => {
                // No flow write: the next packet is decided anew when gateways return.
                return if pass {
                    (XDP_PASS, reason::PASS_NO_GATEWAY)
                } else {
                    (XDP_DROP, reason::DROP_NO_GATEWAY)
                };
            }
            Choice::Unknown => return (XDP_PASS, reason::PASS_GATEWAY_ERROR),
        }
        (XDP_PASS, reason::PASS_GATEWAY_ERROR) // replaced below once the flow is recorded
    } else {
        settle(ctx, &p, action)
    };

    // A kernel-path flow that changes gateway, whether its entry is live or idle: its
    // conntrack entry (and a NAT binding) was made for the old one; the agent resets it.
    // Best effort: a full ring loses the record, not the packet.
    if let Some(gw) = gateway
        && marks != 0
        && found
        && old.router != NO_ROUTER
        && old.gateway != gw
    {
        // Written in place from the packet the first stage parsed (a map value): a record
        // built on the stack would not fit beside `decide`'s locals (512 bytes).
        if let Some(s) = XWAN_SCRATCH.get_ptr(0)
            && let Some(mut entry) = XWAN_MOVED.reserve::<Moved>(0)
        {
            let m = entry.as_mut_ptr();
            // SAFETY: `m` points at the reserved record, `s` at this CPU's parsed packet.
            unsafe {
                // Word by word, volatile: LLVM turns an array copy into a call to `memcpy`,
                // a BPF-to-BPF call that costs 6.1's verifier its pruning (see `flow_value`).
                for i in 0..4 {
                    core::ptr::write_volatile(&mut (*m).key.src[i], (*s).src[i]);
                    core::ptr::write_volatile(&mut (*m).key.dst[i], (*s).dst[i]);
                }
                (*m).key.sport = (*s).sport;
                (*m).key.dport = (*s).dport;
                (*m).key.proto = (*s).proto;
                (*m).key.family = if (*s).v6 != 0 { 6 } else { 4 };
                (*m).key._pad = 0;
                (*m).key.ifindex = ifindex;
                (*m).from = old.gateway;
                (*m).to = gw;
            }
            entry.submit(0);
        }
    }
    // Offloaded while it keeps its router and gateway (only the agent sets the flags).
    // (In two steps: a guard on `gw` lets LLVM compute with the undefined payload of a
    // `None`, which may be a pointer, and the verifier refuses arithmetic on one.)
    let offloaded = match (live, gateway) {
        (Some(f), Some(gw)) => {
            f.flags & FLOW_OFFLOADED != 0 && f.router == router && f.gateway == gw
        }
        _ => false,
    };
    let kept = match live {
        Some(f) if offloaded => f.flags & (FLOW_OFFLOADED | FLOW_SNAT),
        _ => 0,
    };
    let value = flow_value(now, epoch, rule as u16, router, gateway.unwrap_or(0), kept);
    let write = !found
        || old.epoch != value.epoch
        || old.rule != value.rule
        || old.router != value.router
        || old.gateway != value.gateway
        || old.flags != value.flags
        || now.saturating_sub(old.last_seen_ns) >= FLOW_REFRESH_NS;
    let recorded = if write {
        match entry {
            // SAFETY: points into the LRU map's value; a torn read elsewhere is harmless.
            Some(e) => {
                unsafe { *e = value };
                true
            }
            None => XWAN_FLOWS.insert(&*key, &value, 0).is_ok(),
        }
    } else {
        true
    };
    if recorded {
        let seen = if write { now } else { old.last_seen_ns };
        fill_cache(
            key,
            slots,
            router_version,
            seen,
            epoch,
            rule as u16,
            value.gateway
                | if kept & FLOW_OFFLOADED != 0 {
                    CACHE_OFFLOADED
                } else {
                    0
                }
                | if kept & FLOW_SNAT != 0 { CACHE_SNAT } else { 0 },
        );
    }

    match gateway {
        Some(gw) => {
            let ok = if from_flow {
                reason::STEER_FLOW
            } else {
                reason::STEER_CLASSIFIED
            };
            let g = XWAN_GATEWAYS.get(gw as u32);
            let offload = offload_of(key, kept & FLOW_OFFLOADED != 0, kept & FLOW_SNAT != 0);
            forward(ctx, &p, gw as u32, g, action.dscp, ok, len, offload)
        }
        None => outcome,
    }
}

/// A `FlowValue` built from three words. A struct literal makes LLVM zero the 4-byte padding
/// with a call to `memset` (a BPF-to-BPF call), and Linux 6.1's verifier, unable to track
/// precision back through a call, then marks every scalar precise and stops pruning: the
/// program no longer verifies. Little-endian layout, as on `bpfel`.
#[inline(always)]
fn flow_value(now: u64, epoch: u32, rule: u16, router: u16, gateway: u16, flags: u16) -> FlowValue {
    const _: () = assert!(core::mem::size_of::<FlowValue>() == 24);
    let words: [u64; 3] = [
        now,
        epoch as u64 | (rule as u64) << 32 | (router as u64) << 48,
        gateway as u64 | (flags as u64) << 16,
    ];
    // SAFETY: FlowValue is #[repr(C)] plain integers: u64, u32, u16 × 4, then 4 pad bytes.
    unsafe { core::mem::transmute::<[u64; 3], FlowValue>(words) }
}

/// The XDP action [`from_cache`] returns when the flow cache cannot answer (no XDP action
/// is this large).
pub const MISS: u32 = u32::MAX;

/// Answers a packet from this CPU's flow cache (see [`FlowCacheEntry`] for when an entry
/// may be trusted): the same verdict, reason, counters and rewrite as the flow-table path
/// would give, without its hash lookup. `(MISS, _)` when the entry is absent or stale.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn from_cache(
    ctx: &XdpContext,
    p: &Pkt,
    key: &FlowKey,
    slots: Slots,
    epoch: u32,
    now: u64,
    idle_ns: u64,
    len: u64,
) -> (u32, u32) {
    let miss = (MISS, 0);
    let Some(e) = cached_entry(key, slots) else {
        return miss;
    };
    // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it meanwhile.
    let c = unsafe { &*e };
    let age = now.saturating_sub(c.last_seen_ns);
    if c.epoch != epoch || age >= FLOW_REFRESH_NS || (idle_ns != 0 && age > idle_ns) {
        return miss;
    }
    let Some(action) = XWAN_RULES.get(rule_index(epoch & 1, c.rule as u32)) else {
        return miss;
    };
    let offloaded = c.gateway & CACHE_OFFLOADED != 0;
    let gw = (c.gateway & CACHE_GATEWAY) as u32;
    let mut g = None;
    if action.kind == ACTION_ROUTE {
        match XWAN_RTR_VER.get(action.router as u32) {
            Some(v) if *v == c.router_version => {}
            _ => return miss,
        }
        g = XWAN_GATEWAYS.get(gw);
        // A kernel-path flow not offloaded asks the table, where the agent may have just
        // offloaded it (see `FlowCacheEntry`), unless its gateway has no fast path for the
        // packet's family (a tunnel), where the flag changes nothing.
        if !offloaded && g.is_some_and(|g| g.kind == GW_KIND_KERNEL && g.offload & family(p) != 0) {
            return miss;
        }
    }
    count(&XWAN_RULE_CNT, action.counter as u32, len);
    if action.kind == ACTION_ROUTE {
        let offload = offload_of(key, offloaded, c.gateway & CACHE_SNAT != 0);
        forward(ctx, p, gw, g, action.dscp, reason::STEER_FLOW, len, offload)
    } else {
        settle(ctx, p, action)
    }
}

/// The outcome of a rule that does not route (block, pass, or an unknown kind).
#[inline(always)]
fn settle(ctx: &XdpContext, p: &Pkt, action: &RuleAction) -> (u32, u32) {
    match action.kind {
        ACTION_BLOCK => (XDP_DROP, reason::DROP_RULE),
        ACTION_PASS => {
            if action.dscp != DSCP_KEEP {
                rewrite_l3(ctx, p.l3, p.v6, action.dscp, false);
            }
            (XDP_PASS, reason::PASS_RULE)
        }
        _ => (XDP_PASS, reason::PASS_NO_MATCH),
    }
}

/// The flow cache entries that may hold a key, one per bank ([`hash::flow_cache_slots`]).
type Slots = [u32; FLOW_CACHE_BANKS as usize];

/// The entry of `slots` holding `key`, if any.
#[inline(always)]
fn cached_entry(key: &FlowKey, slots: Slots) -> Option<*mut FlowCacheEntry> {
    for slot in slots {
        let e = flow_cache_entry(slot)?;
        // SAFETY: this CPU's slot, plain data.
        if same_key(unsafe { &(*e).key }, key) {
            return Some(e);
        }
    }
    None
}

const _: () = assert!(
    FLOW_CACHE_BANKS == 2,
    "fill_cache picks between two entries"
);

/// Records a flow's decision in this CPU's cache: in the entry already holding the key,
/// else in the one seen least recently (an empty entry has `last_seen_ns` 0).
#[inline(always)]
fn fill_cache(
    key: &FlowKey,
    slots: Slots,
    router_version: u32,
    last_seen_ns: u64,
    epoch: u32,
    rule: u16,
    gateway: u16,
) {
    let (Some(a), Some(b)) = (flow_cache_entry(slots[0]), flow_cache_entry(slots[1])) else {
        return;
    };
    // SAFETY: this CPU's slots of a per-CPU array; nothing else touches them meanwhile.
    unsafe {
        let e = if same_key(&(*a).key, key) {
            a
        } else if same_key(&(*b).key, key) || (*b).last_seen_ns < (*a).last_seen_ns {
            b
        } else {
            a
        };
        // Field by field: a struct store may become a `memcpy` call (see `flow_value`).
        (*e).key = *key;
        (*e).router_version = router_version;
        (*e).last_seen_ns = last_seen_ns;
        (*e).epoch = epoch;
        (*e).rule = rule;
        (*e).gateway = gateway;
    }
}

/// `a == b`, word by word without branches (a derived `==` compares field by field).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    const WORDS: usize = core::mem::size_of::<FlowKey>() / 4;
    const _: () = assert!(WORDS * 4 == core::mem::size_of::<FlowKey>());
    // SAFETY: FlowKey is #[repr(C)], 4-aligned, made of integers with explicit padding.
    let (a, b) = unsafe {
        (
            &*(a as *const FlowKey as *const [u32; WORDS]),
            &*(b as *const FlowKey as *const [u32; WORDS]),
        )
    };
    let mut diff = 0;
    for i in 0..WORDS {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

enum Choice {
    /// The flow's own, which its router still allows.
    Gateway(u16),
    /// From the router's slot table: a new flow for the gateway.
    Hashed(u16),
    /// No active gateway: `true` = hand to the kernel, `false` = drop.
    NoneActive(bool),
    /// The router's table is missing.
    Unknown,
}

#[inline(always)]
fn choose_gateway(
    p: &Pkt,
    key: &FlowKey,
    router: u16,
    version: u32,
    live: Option<FlowValue>,
) -> Choice {
    let Some(table) = XWAN_SLOTS.get(slots_index(router as u32, version)) else {
        return Choice::Unknown;
    };
    if let Some(f) = live
        && f.router == router
        && table.keeps(f.gateway)
    {
        return Choice::Gateway(f.gateway);
    }
    if table.active == 0 {
        return Choice::NoneActive(table.flags & TABLE_ON_FAILURE_PASS != 0);
    }
    let h = if table.flags & TABLE_HASH_SOURCE != 0 {
        hash::source_hash(&p.src)
    } else {
        hash::connection_hash(&key.src, &key.dst, key.sport, key.dport, key.proto)
    };
    Choice::Hashed(table.slots[h as usize & (ROUTER_SLOTS - 1)])
}

/// The packet's family's bit in [`GatewayInfo::offload`].
#[inline(always)]
fn family(p: &Pkt) -> u16 {
    if p.v6 { OFFLOAD_V6 } else { OFFLOAD_V4 }
}

/// A flow's offload flags as a packet of it sees them: whether it is offloaded
/// ([`FLOW_OFFLOADED`]) and with which source NAT ([`FLOW_SNAT`], its entry in `XWAN_SNAT`;
/// without the entry the flow takes the kernel path). A pair, not an enum: `decide` has no
/// stack to spare for a tag.
#[inline(always)]
fn offload_of(key: &FlowKey, offloaded: bool, snat: bool) -> (bool, Option<&'static Snat>) {
    if !offloaded || !snat {
        return (offloaded, None);
    }
    // SAFETY: plain data owned by the map (a read racing the agent's write is torn at worst
    // for one packet of a flow conntrack just confirmed).
    match unsafe { XWAN_SNAT.get(key) } {
        Some(s) => (true, Some(s)),
        None => (false, None),
    }
}

/// Where `p`'s TCP or UDP checksum is, relative to its L4 header, when source NAT can
/// translate it: not a fragment, ports read, and the checksum inside the frame of `len`
/// bytes.
#[inline(always)]
fn l4_checksum_at(p: &Pkt, len: u64) -> Option<usize> {
    let at = match p.proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if p.fragment || !p.has_ports || (p.l4 as usize + at + 2) as u64 > len {
        return None;
    }
    Some(at)
}

/// Step 11: sends the packet through gateway `gw`, whose entry the caller read (`g`, one
/// lookup per packet); `offload`: whether the flow's conntrack entry is confirmed
/// ([`FLOW_OFFLOADED`]), so on a kernel-path gateway it may take the fast path, and
/// translated ([`FLOW_SNAT`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward(
    ctx: &XdpContext,
    p: &Pkt,
    gw: u32,
    g: Option<&GatewayInfo>,
    dscp: u8,
    ok: u32,
    len: u64,
    offload: (bool, Option<&Snat>),
) -> (u32, u32) {
    let g = match g {
        Some(g) if g.kind != GW_KIND_NONE => *g,
        _ => return (XDP_PASS, reason::PASS_GATEWAY_ERROR),
    };
    // Source NAT on the fast path needs a TCP or UDP checksum to update.
    let (offloaded, snat) = match offload {
        (true, Some(s)) => match l4_checksum_at(p, len) {
            Some(at) => (true, Some((s, at))),
            None => (false, None),
        },
        o => (o.0, None),
    };
    // A kernel-path gateway's fast path: as an Ethernet gateway, to the family's next hop.
    let fast = g.kind == GW_KIND_KERNEL
        && offloaded
        && g.offload & family(p) != 0
        && may_offload(p.proto, p.tcp_flags, p.fragment);
    let (ok, dmac) = if fast {
        (reason::STEER_OFFLOAD, if p.v6 { g.dmac6 } else { g.dmac })
    } else {
        (ok, g.dmac)
    };
    if g.kind == GW_KIND_KERNEL && !fast {
        // The kernel forwards it (TTL, MTU, VLAN tags and MACs are its business): the DSCP,
        // then the hand-off to `xwan_tc_steer`, the gateway in the destination MAC.
        count(&XWAN_GW_CNT, gw, len);
        if dscp != DSCP_KEEP {
            rewrite_l3(ctx, p.l3, p.v6, dscp, false);
        }
        let start = ctx.data();
        if start + 6 > ctx.data_end() {
            return (XDP_PASS, reason::PASS_GATEWAY_ERROR);
        }
        // SAFETY: 6 bytes checked above.
        unsafe { (start as *mut [u8; 6]).write_unaligned(kernel_tag(gw as u16)) };
        return (XDP_PASS, ok);
    }
    if p.ttl <= 1 {
        return (XDP_PASS, reason::PASS_TTL);
    }
    if len - p.l3 as u64 > g.mtu as u64 {
        return (XDP_PASS, reason::PASS_TOO_BIG);
    }
    count(&XWAN_GW_CNT, gw, len);

    if p.tags > 0 && !strip_vlan(ctx, p) {
        return (XDP_PASS, reason::PASS_GATEWAY_ERROR);
    }
    // The IP header now follows a plain 14-byte Ethernet header.
    rewrite_l3(ctx, 14, p.v6, dscp, true);

    if g.kind == GW_KIND_ETHERNET || fast {
        let start = ctx.data();
        if start + 12 > ctx.data_end() {
            return (XDP_PASS, reason::PASS_GATEWAY_ERROR);
        }
        // SAFETY: 12 bytes checked above.
        unsafe {
            ((start) as *mut [u8; 6]).write_unaligned(dmac);
            ((start + 6) as *mut [u8; 6]).write_unaligned(g.smac);
        }
        if fast && let Some((s, at)) = snat {
            // The VLAN tags are gone: the IP header is at 14.
            translate_source(ctx, p.l4 as usize - p.l3 + 14, at, p.v6, p.proto, s);
        }
        return match XWAN_DEVMAP.redirect(gw, XDP_PASS as u64) {
            Ok(_) => {
                egress::remember(ctx.ingress_ifindex() as u32, g.ifindex, gw, ok, len);
                (XDP_REDIRECT, ok)
            }
            Err(_) => (XDP_PASS, reason::PASS_GATEWAY_ERROR),
        };
    }
    if g.kind == GW_KIND_TUNNEL {
        // The hand-off to `xwan_tc_steer`: the tunnel in the source MAC, which the L3 device
        // discards (see `TUNNEL_TAG_PREFIX`).
        let start = ctx.data();
        if start + 12 > ctx.data_end() {
            return (XDP_PASS, reason::PASS_GATEWAY_ERROR);
        }
        // SAFETY: 12 bytes checked above.
        unsafe { ((start + 6) as *mut [u8; 6]).write_unaligned(tunnel_tag(g.ifindex)) };
        return (XDP_PASS, ok);
    }
    (XDP_PASS, reason::PASS_GATEWAY_ERROR)
}

/// Source NAT as conntrack applies it (see `xwan_common::model` step 10) on a frame whose IP
/// header is at 14 and whose TCP / UDP header is at `l4`, with its checksum at `l4 + at`:
/// the source address and port become `s`'s, the IPv4 header checksum and the L4 checksum
/// updated word by word in the model's order. Leaves the frame as it is if a bound fails
/// (the caller checked them against the frame's length already).
#[inline(always)]
fn translate_source(ctx: &XdpContext, l4: usize, at: usize, v6: bool, proto: u8, s: &Snat) {
    let start = ctx.data();
    let end = ctx.data_end();
    // Bounded for the verifier: an IPv4 header is at most 60 bytes, IPv6's extension headers
    // end within the parser's reach; `at` is 6 or 16. The IP header is whole (34 or 54):
    // the L4 header follows it.
    if l4 > 1024 || start + 34 > end || (v6 && start + 54 > end) {
        return;
    }
    let l4p = start + l4;
    if l4p + 2 > end {
        return;
    }
    let checkp = l4p + (at & 0x1f);
    if checkp + 2 > end {
        return;
    }
    // SAFETY: the port at `l4p` and the checksum at `checkp` are checked above, the address
    // words by `swap_words`' caller.
    unsafe {
        let l4p = l4p as *mut u8;
        let checkp = checkp as *mut u8;
        let mut check = u16::from_be_bytes([*checkp, *checkp.add(1)]);
        let update = proto == 6 || check != 0;
        let new = &*(s.src.as_ptr() as *const [u8; 16]);
        if v6 {
            if start + 54 > end {
                return;
            }
            swap_words::<8>(start + 22, new, &mut check, None);
        } else {
            let ip = (start + 14) as *mut u8;
            let mut ip_check = u16::from_be_bytes([*ip.add(10), *ip.add(11)]);
            swap_words::<2>(start + 26, new, &mut check, Some(&mut ip_check));
            let c = ip_check.to_be_bytes();
            *ip.add(10) = c[0];
            *ip.add(11) = c[1];
        }
        let old = u16::from_be_bytes([*l4p, *l4p.add(1)]);
        check = csum::replace16(check, old, s.sport);
        let port = s.sport.to_be_bytes();
        *l4p = port[0];
        *l4p.add(1) = port[1];
        if update {
            if proto == 17 && check == 0 {
                check = 0xffff;
            }
            let c = check.to_be_bytes();
            *checkp = c[0];
            *checkp.add(1) = c[1];
        }
    }
}

/// Writes the first `N` 16-bit words of `new` at `addr`, updating the checksums that cover
/// them word by word.
///
/// # Safety
/// `2 * N` bytes at `addr` are inside the packet.
#[inline(always)]
unsafe fn swap_words<const N: usize>(
    addr: usize,
    new: &[u8; 16],
    check: &mut u16,
    mut ip_check: Option<&mut u16>,
) {
    for i in 0..N {
        let a = (addr + 2 * i) as *mut u8;
        // SAFETY: inside the packet (the caller's promise).
        unsafe {
            let old = u16::from_be_bytes([*a, *a.add(1)]);
            let word = u16::from_be_bytes([new[2 * i], new[2 * i + 1]]);
            if let Some(c) = ip_check.as_deref_mut() {
                *c = csum::replace16(*c, old, word);
            }
            *check = csum::replace16(*check, old, word);
            *a = new[2 * i];
            *a.add(1) = new[2 * i + 1];
        }
    }
}

/// Removes the VLAN tags: the MACs move up by 4 bytes per tag and the IP EtherType follows.
#[inline(always)]
fn strip_vlan(ctx: &XdpContext, p: &Pkt) -> bool {
    let Some(macs) = load::<[u8; 12]>(ctx.data(), ctx.data_end(), 0) else {
        return false;
    };
    let delta = if p.tags == 1 { 4 } else { 8 };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return false;
    }
    let start = ctx.data();
    if start + 14 > ctx.data_end() {
        return false;
    }
    let ethertype = if p.v6 { ETH_P_IPV6 } else { ETH_P_IP };
    // SAFETY: 14 bytes checked above.
    unsafe {
        (start as *mut [u8; 12]).write_unaligned(macs);
        ((start + 12) as *mut [u8; 2]).write_unaligned(ethertype.to_be_bytes());
    }
    true
}

/// Imposes `dscp` (unless [`DSCP_KEEP`]) and decrements TTL / hop limit (when `dec_ttl`) on
/// the IP header at `l3`, keeping the IPv4 checksum right.
#[inline(always)]
fn rewrite_l3(ctx: &XdpContext, l3: usize, v6: bool, dscp: u8, dec_ttl: bool) {
    let start = ctx.data();
    let end = ctx.data_end();
    if l3 > 22 || start + l3 + 12 > end {
        return;
    }
    let h = (start + l3) as *mut u8;
    // SAFETY: 12 header bytes at l3 checked above (IPv4: up to the checksum; IPv6: hop limit).
    unsafe {
        if v6 {
            if dscp != DSCP_KEEP {
                let b0 = *h;
                let b1 = *h.add(1);
                let tclass = ((b0 & 0x0f) << 4) | (b1 >> 4);
                let new = (dscp << 2) | (tclass & 3);
                *h = (b0 & 0xf0) | (new >> 4);
                *h.add(1) = (b1 & 0x0f) | (new << 4);
            }
            if dec_ttl {
                *h.add(7) -= 1;
            }
        } else {
            let mut check = u16::from_be_bytes([*h.add(10), *h.add(11)]);
            if dscp != DSCP_KEEP {
                let b0 = *h;
                let tos = *h.add(1);
                let new = (dscp << 2) | (tos & 3);
                check = csum::replace16(
                    check,
                    u16::from_be_bytes([b0, tos]),
                    u16::from_be_bytes([b0, new]),
                );
                *h.add(1) = new;
            }
            if dec_ttl {
                let ttl = *h.add(8);
                let proto = *h.add(9);
                check = csum::replace16(
                    check,
                    u16::from_be_bytes([ttl, proto]),
                    u16::from_be_bytes([ttl - 1, proto]),
                );
                *h.add(8) = ttl - 1;
            }
            let c = check.to_be_bytes();
            *h.add(10) = c[0];
            *h.add(11) = c[1];
        }
    }
}
