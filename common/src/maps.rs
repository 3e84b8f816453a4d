//! Map names, sizes and `#[repr(C)]` layouts of the data plane.
//!
//! Everything the classifier reads is *double-buffered* by ruleset generation: the agent
//! writes generation `g ^ 1`, then bumps [`RULESET_MAP`]'s epoch (one aligned `u32` store, so
//! a packet sees either the old ruleset or the new one, never a mix), then clears the old
//! generation. `gen = epoch & 1`. Router slot tables are double-buffered the same way, per
//! router, by [`ROUTER_VERSION_MAP`].
//!
//! Addresses are kept as the packet carries them (network byte order); `u32` address words
//! are the raw words read from the packet, IPv4 in word 0 and the other words zero. Ports
//! are host byte order.

// ---- sizes -------------------------------------------------------------------------------

/// Rules per ruleset. The rule bitmap has one bit per rule, bit 0 = first rule.
pub const MAX_RULES: usize = 4096;
/// `u64` words in a [`RuleBitmap`].
pub const BITMAP_WORDS: usize = MAX_RULES / 64;
/// Routers (router ids are `0..MAX_ROUTERS`): a hub's branches. Each takes two slot tables
/// (8.7 KiB each) in [`SLOTS_MAP`]: 17 MiB of kernel memory in all.
pub const MAX_ROUTERS: u32 = 1024;
/// Gateways (gateway ids are `0..MAX_GATEWAYS`; also the DEVMAP index of an Ethernet gateway):
/// a hub with two tunnels to each of 2,000 branches.
pub const MAX_GATEWAYS: u32 = 4096;
/// Slots in a router's weighted table. A power of two: the slot is `hash & (SLOTS - 1)`.
pub const ROUTER_SLOTS: usize = 4096;
/// Interfaces the LAN program may be attached to, and links the return program watches.
pub const MAX_IFACES: u32 = 1024;
/// Interfaces whose ifindex is below this are looked up in [`IFACE_ARRAY_MAP`]; the others
/// (rare: ifindexes grow as interfaces come and go) in [`IFACES_MAP`]. 64 K × 8 bytes.
pub const IFACE_ARRAY_SIZE: u32 = 65_536;
/// Local (router-owned) addresses.
pub const MAX_LOCAL_ADDRS: u32 = 4096;
/// Prefix entries per LPM trie (both generations together).
pub const MAX_PREFIXES: u32 = 65536;
/// Port classes per direction and generation. Class 0 means "the packet has no ports".
/// Port ranges of N rules cut 0..=65535 into at most 2N+1 intervals.
pub const MAX_PORT_CLASSES: u32 = 4096;
/// Entries of the flow table, the return-flow table and the translation map unless the
/// configuration sets `[agent] flow_table_size` (the maps in [`FLOW_SIZED_MAPS`]): a branch's
/// connections with room to spare. The object is compiled with it; the loader resizes.
pub const FLOW_TABLE_SIZE: u32 = 262_144;
/// Bounds of `flow_table_size`: below the minimum an LRU evicts live flows of even a small
/// site. A flow costs about 280 bytes of kernel memory (136 in the flow table, 128 in the
/// return-route table, 16 in the translation map's buckets; measured on 6.18): the maximum
/// (16 Mi flows) takes about 4.4 GiB.
pub const MIN_FLOW_TABLE_SIZE: u32 = 4_096;
pub const MAX_FLOW_TABLE_SIZE: u32 = 16_777_216;
/// A flow entry's `last_seen_ns` is rewritten at most this often (no per-packet writes).
pub const FLOW_REFRESH_NS: u64 = 1_000_000_000;
/// Entries per bank of the per-CPU flow cache ([`FLOW_CACHE_MAP`]), a power of two.
/// 2 × 8,192 × 64 bytes = 1 MiB per CPU.
pub const FLOW_CACHE_BANK_ENTRIES: u32 = 8192;
/// Banks of the flow cache: a key may sit in one entry of each, at independent hash
/// indices (a skewed-associative cache, see [`crate::hash::flow_cache_slots`]).
pub const FLOW_CACHE_BANKS: u32 = 2;
/// Flow-cache entries per map element ([`FlowCacheBlock`]): 512 × 64 bytes = 32 KiB, the
/// largest per-CPU value the kernel allows.
pub const FLOW_CACHE_BLOCK_ENTRIES: u32 = 512;
/// Elements of [`FLOW_CACHE_MAP`].
pub const FLOW_CACHE_BLOCKS: u32 =
    FLOW_CACHE_BANKS * FLOW_CACHE_BANK_ENTRIES / FLOW_CACHE_BLOCK_ENTRIES;
/// Per-CPU counter slots for rules (the agent assigns stable slots across reloads).
pub const MAX_RULE_COUNTERS: u32 = MAX_RULES as u32;
/// IPv6 extension headers walked before giving up (the packet then goes to the kernel).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// VLAN tags parsed (802.1Q / 802.1ad); more go to the kernel.
pub const MAX_VLAN_TAGS: usize = 2;
/// Redirects to Ethernet gateways one CPU remembers ([`EgressLog`]), a power of two. A
/// device's bulk queue holds the frames redirected to it since its last flush, all within
/// one NAPI poll (64 frames by default, to every egress together): 256 covers a poll of
/// four times that.
pub const EGRESS_LOG_SIZE: u32 = 256;

// ---- indexes of the array maps: the one definition the programs, compiler and loader use --

/// Ruleset generations each classifier map holds (generation = epoch & 1).
pub const GENERATIONS: u32 = 2;
/// Entries of [`PROTO_MAP`] per generation: one per IP protocol number.
pub const PROTO_ENTRIES: u32 = 256;
/// Entries of [`DSCP_MAP`] per generation: one per DSCP value.
pub const DSCP_ENTRIES: u32 = 64;
/// Port directions: 0 = source port, 1 = destination port.
pub const PORT_DIRS: u32 = 2;

pub const PROTO_MAP_SIZE: u32 = GENERATIONS * PROTO_ENTRIES;
pub const DSCP_MAP_SIZE: u32 = GENERATIONS * DSCP_ENTRIES;
pub const PORTMAP_MAP_SIZE: u32 = GENERATIONS * PORT_DIRS;
pub const PORTBM_MAP_SIZE: u32 = PORTMAP_MAP_SIZE * MAX_PORT_CLASSES;
pub const RULES_MAP_SIZE: u32 = GENERATIONS * MAX_RULES as u32;
/// Two copies of each router's table (double-buffered by its version).
pub const SLOTS_MAP_SIZE: u32 = 2 * MAX_ROUTERS;

/// [`PROTO_MAP`] index of protocol `proto` in generation `generation`.
#[inline(always)]
pub const fn proto_index(generation: u32, proto: u8) -> u32 {
    generation * PROTO_ENTRIES + proto as u32
}

/// [`DSCP_MAP`] index of `dscp` in generation `generation`.
#[inline(always)]
pub const fn dscp_index(generation: u32, dscp: u8) -> u32 {
    generation * DSCP_ENTRIES + dscp as u32
}

/// [`PORTMAP_MAP`] index of direction `dir` (0 source, 1 destination) in `generation`.
#[inline(always)]
pub const fn portmap_index(generation: u32, dir: u32) -> u32 {
    generation * PORT_DIRS + dir
}

/// [`PORTBM_MAP`] index of port class `class` of direction `dir` in `generation`.
#[inline(always)]
pub const fn portbm_index(generation: u32, dir: u32, class: u32) -> u32 {
    portmap_index(generation, dir) * MAX_PORT_CLASSES + class
}

/// [`RULES_MAP`] index of rule `rule` in `generation`.
#[inline(always)]
pub const fn rule_index(generation: u32, rule: u32) -> u32 {
    generation * MAX_RULES as u32 + rule
}

/// [`SLOTS_MAP`] index of router `router`'s table at version `version`.
#[inline(always)]
pub const fn slots_index(router: u32, version: u32) -> u32 {
    router * 2 + (version & 1)
}

// ---- map names (also the pin names under bpffs) --------------------------------------------

/// Hash of every configured LAN interface (the truth; first stages of older agents read it).
pub const IFACES_MAP: &str = "XWAN_IFACES";
/// Array indexed by ifindex with a copy of [`IFACES_MAP`]'s entries below
/// [`IFACE_ARRAY_SIZE`]: the per-packet interface lookup is then one load instead of a hash.
pub const IFACE_ARRAY_MAP: &str = "XWAN_IFACE_ARR";
pub const LOCAL_MAP: &str = "XWAN_LOCAL";
pub const CONFIG_MAP: &str = "XWAN_CONFIG";
pub const RULESET_MAP: &str = "XWAN_RULESET";
pub const SRC4_MAP: &str = "XWAN_SRC4";
pub const DST4_MAP: &str = "XWAN_DST4";
pub const SRC6_MAP: &str = "XWAN_SRC6";
pub const DST6_MAP: &str = "XWAN_DST6";
pub const PROTO_MAP: &str = "XWAN_PROTO";
pub const DSCP_MAP: &str = "XWAN_DSCP";
pub const PORTMAP_MAP: &str = "XWAN_PORTMAP";
pub const PORTBM_MAP: &str = "XWAN_PORTBM";
pub const IFBM_MAP: &str = "XWAN_IFBM";
pub const RULES_MAP: &str = "XWAN_RULES";
pub const ROUTER_VERSION_MAP: &str = "XWAN_RTR_VER";
pub const SLOTS_MAP: &str = "XWAN_SLOTS";
pub const GATEWAYS_MAP: &str = "XWAN_GATEWAYS";
pub const DEVMAP_MAP: &str = "XWAN_DEVMAP";
pub const FLOWS_MAP: &str = "XWAN_FLOWS";
/// Hash of [`FlowKey`] → [`Snat`], one entry per flow at most, allocated as used: how
/// conntrack translates the offloaded flows that have [`FLOW_SNAT`]. Written only by the
/// agent.
pub const SNAT_MAP: &str = "XWAN_SNAT";
/// Per-CPU array of [`FlowCacheBlock`] holding `FLOW_CACHE_BANKS × FLOW_CACHE_BANK_ENTRIES`
/// entries: the flow table's hits without its hash. Not pinned: a new program starts with an
/// empty cache.
pub const FLOW_CACHE_MAP: &str = "XWAN_FLOW_CACHE";
pub const RETURN_MAP: &str = "XWAN_RETURN";
/// The maps with one entry per flow, sized by `flow_table_size` ([`FLOW_TABLE_SIZE`]).
pub const FLOW_SIZED_MAPS: [&str; 3] = [FLOWS_MAP, RETURN_MAP, SNAT_MAP];
pub const LINKS_MAP: &str = "XWAN_LINKS";
pub const RULE_COUNTERS_MAP: &str = "XWAN_RULE_CNT";
pub const GATEWAY_COUNTERS_MAP: &str = "XWAN_GW_CNT";
/// Per-CPU [`Counter`] per gateway id: the flows the data plane gave the gateway from its
/// router's slot table (`packets`: a new connection, or a flow moved off a gateway its
/// router no longer allows; `bytes`: their first packets'). A flow kept on its gateway, a
/// return route or a cache hit does not count: the measured counterpart of the slot share.
pub const NEW_FLOWS_MAP: &str = "XWAN_GW_NEW";
pub const REASON_COUNTERS_MAP: &str = "XWAN_REASON_CNT";
/// Per-CPU [`Counter`] per gateway id: frames steered to the gateway that its egress did not
/// take (see [`EgressLog`]); [`GATEWAY_COUNTERS_MAP`] no longer counts them.
pub const GATEWAY_FAILURES_MAP: &str = "XWAN_GW_FAIL";
/// Per-CPU, one [`EgressLog`]: the redirects whose fate the egress programs learn later.
/// Pinned, so that the LAN program of a previous agent and the egress programs of this one
/// share it during a restart.
pub const EGRESS_LOG_MAP: &str = "XWAN_EGRESS_LOG";
/// `RINGBUF` of [`Moved`] records, [`MOVED_RING_BYTES`] long: the kernel-path flows that
/// changed gateway, for the agent to reset their conntrack entries (a NAT binding made for
/// one link is wrong on another). Pinned, so that a restarting agent reads what the
/// previous agent's programs wrote.
pub const MOVED_MAP: &str = "XWAN_MOVED";
/// Bytes of [`MOVED_MAP`] (a power of two, a multiple of the page size): 4,681 records of
/// 48 bytes plus their 8-byte headers. A failover of one gateway moves its flows one by one
/// as their packets arrive, and the agent drains the ring as it fills; when the ring is full,
/// a move is not recorded (`XWAN_REASON_CNT` is not involved: the record is best effort and
/// the flow still moves).
pub const MOVED_RING_BYTES: u32 = 256 * 1024;
/// Per-CPU, one [`ParsedPacket`]: what [`PROG_XDP_LAN`] parsed, for [`PROG_XDP_DECIDE`].
pub const SCRATCH_MAP: &str = "XWAN_SCRATCH";
/// `PROG_ARRAY`: [`PROG_XDP_LAN`] tail-calls [`JUMP_DECIDE`] in it.
pub const JUMP_MAP: &str = "XWAN_JUMP";
/// Index of [`PROG_XDP_DECIDE`] in [`JUMP_MAP`].
pub const JUMP_DECIDE: u32 = 0;
/// Entries of [`JUMP_MAP`].
pub const JUMP_SLOTS: u32 = 1;

// ---- program names -------------------------------------------------------------------------

/// XDP on LAN interfaces, first stage: parse, hand the kernel what is not for xwan, then
/// tail-call [`PROG_XDP_DECIDE`] with the parsed packet in [`SCRATCH_MAP`].
///
/// Two programs, not one: each is verified on its own, so the parse's paths (VLAN depth ×
/// address family × IPv6 extension headers) do not multiply the decision's. As one program
/// Linux 6.1's verifier gave up on it (over a million instructions processed).
pub const PROG_XDP_LAN: &str = "xwan_xdp_lan";
/// XDP, second stage of [`PROG_XDP_LAN`] (reached only by tail call): flow cache, flow table,
/// classification, gateway choice, rewrite, steering.
pub const PROG_XDP_DECIDE: &str = "xwan_xdp_decide";
/// TC ingress on LAN interfaces: redirect packets XDP tagged for an L3 tunnel.
pub const PROG_TC_STEER: &str = "xwan_tc_steer";
/// TC ingress on link interfaces: learn return flows.
pub const PROG_TC_RETURN: &str = "xwan_tc_return";
/// XDP that only parses Ethernet + IP: the benchmark's baseline.
pub const PROG_XDP_BASELINE: &str = "xwan_xdp_baseline";
/// XDP that passes everything: attached to a veth peer so it accepts redirected frames.
pub const PROG_XDP_PASS: &str = "xwan_xdp_pass";
/// Tracepoint [`tracepoint::DEVMAP_XMIT`]: the egress driver dropped redirected frames.
pub const PROG_TRACE_XMIT: &str = "xwan_trace_xmit";
/// Tracepoint [`tracepoint::REDIRECT_ERR`]: the kernel refused a redirect.
pub const PROG_TRACE_REDIRECT_ERR: &str = "xwan_trace_redirect_err";

// ---- kernel tracepoints the egress programs read ----------------------------------------

/// The kernel's XDP tracepoints that say what became of a redirect, and the fields xwan
/// reads at fixed offsets of their records. The agent checks each record's format in tracefs
/// before attaching (the layout is the kernel's, not an ABI) and says so when it differs.
pub mod tracepoint {
    /// One field of a tracepoint record: name, byte offset and size, as tracefs' `format`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Field {
        pub name: &'static str,
        pub offset: usize,
        pub size: usize,
    }

    /// A tracepoint and the fields xwan's program reads.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Tracepoint {
        pub category: &'static str,
        pub name: &'static str,
        pub fields: &'static [Field],
    }

    const fn int(name: &'static str, offset: usize) -> Field {
        Field {
            name,
            offset,
            size: 4,
        }
    }

    /// `xdp:xdp_devmap_xmit`: a device's bulk queue of redirected frames was handed to its
    /// driver; the last `drops` of its `sent + drops` frames were not taken.
    pub const DEVMAP_XMIT: Tracepoint = Tracepoint {
        category: "xdp",
        name: "xdp_devmap_xmit",
        fields: &[
            int("from_ifindex", XMIT_FROM),
            int("to_ifindex", XMIT_TO),
            int("drops", XMIT_DROPS),
            int("sent", XMIT_SENT),
        ],
    };
    pub const XMIT_FROM: usize = 8;
    pub const XMIT_TO: usize = 16;
    pub const XMIT_DROPS: usize = 20;
    pub const XMIT_SENT: usize = 24;

    /// `xdp:xdp_redirect_err`: `XDP_REDIRECT` failed right after the program returned (the
    /// egress is down, the frame exceeds its MTU, or its driver has no XDP transmit).
    pub const REDIRECT_ERR: Tracepoint = Tracepoint {
        category: "xdp",
        name: "xdp_redirect_err",
        fields: &[
            int("ifindex", ERR_FROM),
            int("to_ifindex", ERR_TO),
            int("map_index", ERR_INDEX),
        ],
    };
    pub const ERR_FROM: usize = 16;
    pub const ERR_TO: usize = 24;
    pub const ERR_INDEX: usize = 32;

    /// Every tracepoint xwan attaches to, with its program.
    pub const ALL: [(Tracepoint, &str); 2] = [
        (DEVMAP_XMIT, super::PROG_TRACE_XMIT),
        (REDIRECT_ERR, super::PROG_TRACE_REDIRECT_ERR),
    ];
}

// ---- per-CPU counter reasons ----------------------------------------------------------------

/// Why a packet was handed to the kernel, dropped, or steered. Index into
/// [`REASON_COUNTERS_MAP`].
pub mod reason {
    /// Ingress interface has no [`super::IfaceInfo`]: xwan is not configured there (or the
    /// second stage of the LAN program is missing from [`super::JUMP_MAP`]).
    pub const PASS_NOT_CONFIGURED: u32 = 0;
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or more VLAN tags than parsed.
    pub const PASS_NOT_IP: u32 = 1;
    /// Not unicast to this router: destination MAC is not the interface's, or the IP
    /// destination is multicast/broadcast/link-local.
    pub const PASS_NOT_FOR_US: u32 = 2;
    /// Truncated or invalid header (bad IHL, short L4 header, too many IPv6 ext headers).
    pub const PASS_MALFORMED: u32 = 3;
    /// Destination is one of the router's own addresses (local delivery).
    pub const PASS_LOCAL: u32 = 4;
    /// No rule matched.
    pub const PASS_NO_MATCH: u32 = 5;
    /// A rule with action `pass` (kernel routing) matched.
    pub const PASS_RULE: u32 = 6;
    /// TTL / hop limit <= 1: the kernel answers with ICMP time exceeded.
    pub const PASS_TTL: u32 = 7;
    /// Larger than the egress MTU: the kernel fragments or answers "packet too big".
    pub const PASS_TOO_BIG: u32 = 8;
    /// Router with no active gateway and `on_failure = default-route`.
    pub const PASS_NO_GATEWAY: u32 = 9;
    /// The chosen gateway's entry is unusable (not programmed), or its rewrite failed.
    pub const PASS_GATEWAY_ERROR: u32 = 10;
    /// A rule with action `block` matched.
    pub const DROP_RULE: u32 = 11;
    /// Router with no active gateway and `on_failure = drop`.
    pub const DROP_NO_GATEWAY: u32 = 12;
    /// Steered through a gateway, decision taken from the flow table.
    pub const STEER_FLOW: u32 = 13;
    /// Steered through a gateway after classification.
    pub const STEER_CLASSIFIED: u32 = 14;
    /// Steered back through the link its connection arrived on (return route).
    pub const STEER_RETURN: u32 = 15;
    /// The frame arrived with a source or destination MAC carrying
    /// [`super::TUNNEL_TAG_PREFIX`] (a tunnel or kernel-path hand-off): only xwan may write
    /// it, so it is forged (or looped back) and would bypass classification.
    pub const DROP_FORGED_TAG: u32 = 16;
    /// Steered to an Ethernet gateway, but the kernel refused the redirect (egress down,
    /// frame above its MTU, driver without XDP transmit). Counted by
    /// [`super::PROG_TRACE_REDIRECT_ERR`], which takes the packet out of its `steer_*` count.
    pub const DROP_REDIRECT: u32 = 17;
    /// Steered to an Ethernet gateway, but its driver dropped the frame at transmit (a veth
    /// whose peer has neither an XDP program nor GRO, a full TX ring). Counted by
    /// [`super::PROG_TRACE_XMIT`], which takes the packet out of its `steer_*` count.
    pub const DROP_XMIT: u32 = 18;
    /// Steered on a kernel-path gateway's fast path: a flow conntrack confirmed
    /// ([`super::FLOW_OFFLOADED`]), MACs rewritten and redirected as an Ethernet gateway's.
    pub const STEER_OFFLOAD: u32 = 19;
    /// Number of reasons.
    pub const COUNT: u32 = 20;

    /// Metric label for each reason, indexed by code.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_configured",
        "pass_not_ip",
        "pass_not_for_us",
        "pass_malformed",
        "pass_local",
        "pass_no_match",
        "pass_rule",
        "pass_ttl",
        "pass_too_big",
        "pass_no_gateway",
        "pass_gateway_error",
        "drop_rule",
        "drop_no_gateway",
        "steer_flow",
        "steer_classified",
        "steer_return",
        "drop_forged_tag",
        "drop_redirect",
        "drop_xmit",
        "steer_offload",
    ];
}

// ---- layouts -------------------------------------------------------------------------------

/// One bit per rule; bit `i` of word `i / 64` is rule `i` (LSB first).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RuleBitmap {
    pub w: [u64; BITMAP_WORDS],
}

impl RuleBitmap {
    pub const EMPTY: RuleBitmap = RuleBitmap {
        w: [0; BITMAP_WORDS],
    };

    #[inline(always)]
    pub fn set(&mut self, rule: usize) {
        self.w[rule / 64] |= 1 << (rule % 64);
    }

    #[inline(always)]
    pub fn contains(&self, rule: usize) -> bool {
        self.w[rule / 64] & (1 << (rule % 64)) != 0
    }
}

/// LPM key data for IPv4 tries: `[gen, 0, 0, 0, a, b, c, d]`; prefix length `32 + plen`.
pub type Lpm4Data = [u8; 8];
/// LPM key data for IPv6 tries: `[gen, 0, 0, 0, addr[16]]`; prefix length `32 + plen`.
pub type Lpm6Data = [u8; 20];
/// Bits of LPM key data taken by the generation prefix.
pub const LPM_GEN_BITS: u32 = 32;

/// Key of [`IFBM_MAP`]: rules that accept ingress interface `ifindex` (0 = any interface
/// not listed: the rules without an interface criterion).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IfaceRuleKey {
    pub generation: u32,
    pub ifindex: u32,
}

/// Port → port class, for one direction (source/destination) and generation.
/// Index of [`PORTMAP_MAP`] is `gen * 2 + dir` (dir 0 = source, 1 = destination); the class
/// indexes [`PORTBM_MAP`] at `(gen * 2 + dir) * MAX_PORT_CLASSES + class`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortTable {
    pub class: [u16; 65536],
}

/// What a matched rule does. [`RULES_MAP`] index: `gen * MAX_RULES + rule`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RuleAction {
    /// One of `ACTION_*`.
    pub kind: u8,
    /// DSCP to impose (0..=63), or [`DSCP_KEEP`].
    pub dscp: u8,
    /// Router id, for [`ACTION_ROUTE`].
    pub router: u16,
    /// Counter slot in [`RULE_COUNTERS_MAP`], stable across reloads.
    pub counter: u16,
    pub _pad: u16,
}

pub const ACTION_ROUTE: u8 = 1;
pub const ACTION_PASS: u8 = 2;
pub const ACTION_BLOCK: u8 = 3;
pub const DSCP_KEEP: u8 = 0xff;

/// A router's weighted table, at [`SLOTS_MAP`] index [`slots_index`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SlotTable {
    /// Number of distinct active gateways in `slots`; 0 = none, apply `on_failure`.
    pub active: u32,
    /// `TABLE_*` flags.
    pub flags: u32,
    /// Gateways an existing flow may stay on (bit per gateway id): with failback
    /// `new-connections` every Ready gateway of the router, with `all` only the active ones.
    pub keep: [u64; (MAX_GATEWAYS / 64) as usize],
    /// Gateway id per slot; all `ROUTER_SLOTS` are filled when `active > 0`.
    pub slots: [u16; ROUTER_SLOTS],
}

/// `on_failure = default-route`: hand the packet to the kernel (otherwise drop).
pub const TABLE_ON_FAILURE_PASS: u32 = 1;
/// `load_balancing = source`: hash the source address only (otherwise the 5-tuple).
pub const TABLE_HASH_SOURCE: u32 = 2;

impl SlotTable {
    #[inline(always)]
    pub fn keeps(&self, gateway: u16) -> bool {
        let g = gateway as usize;
        g < MAX_GATEWAYS as usize && self.keep[g / 64] & (1 << (g % 64)) != 0
    }
}

/// A gateway as the data plane needs it. [`GATEWAYS_MAP`] index: gateway id.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GatewayInfo {
    /// `GW_KIND_*`; [`GW_KIND_NONE`] = slot unused.
    pub kind: u32,
    /// Egress interface (the tunnel device, or the Ethernet interface toward the next hop).
    pub ifindex: u32,
    /// Egress L3 MTU; larger packets go to the kernel.
    pub mtu: u32,
    /// 1 when the gateway is Ready (used by return routes; routers use [`SlotTable::keep`]).
    pub ready: u32,
    /// Next hop's MAC (Ethernet gateways; a kernel-path gateway's IPv4 next hop, for its
    /// offloaded flows).
    pub dmac: [u8; 6],
    /// Egress interface's MAC (Ethernet gateways, and kernel-path ones that offload).
    pub smac: [u8; 6],
    /// A kernel-path gateway's IPv6 next hop's MAC (its `address6`), for offloaded flows.
    pub dmac6: [u8; 6],
    /// [`GW_KIND_KERNEL`]: the families whose offloaded flows skip the kernel
    /// (`OFFLOAD_V4 | OFFLOAD_V6`), each with its next hop's MAC; 0 = none.
    pub offload: u16,
}

/// [`GatewayInfo::offload`]: IPv4 flows, forwarded to [`GatewayInfo::dmac`].
pub const OFFLOAD_V4: u16 = 1;
/// [`GatewayInfo::offload`]: IPv6 flows, forwarded to [`GatewayInfo::dmac6`].
pub const OFFLOAD_V6: u16 = 2;

pub const GW_KIND_NONE: u32 = 0;
/// L3 device (VTI, xfrm, TUN, ...): XDP tags the packet, TC ingress `bpf_redirect`s it.
pub const GW_KIND_TUNNEL: u32 = 1;
/// Ethernet next hop: MAC rewrite and `XDP_REDIRECT` through [`DEVMAP_MAP`].
pub const GW_KIND_ETHERNET: u32 = 2;
/// `netfilter` forwarding mode: XDP tags the destination MAC with the gateway
/// ([`kernel_tag`]), TC ingress restores it and marks the packet ([`MarkLayout`]), and the
/// kernel forwards it (filtering, conntrack and NAT included) by that mark.
pub const GW_KIND_KERNEL: u32 = 3;

/// An interface the LAN program runs on. [`IFACES_MAP`] key: ifindex; also
/// [`IFACE_ARRAY_MAP`] index: ifindex, when below [`IFACE_ARRAY_SIZE`].
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IfaceInfo {
    pub mac: [u8; 6],
    /// 1 in a configured interface's entry: the array has an entry for every index.
    pub configured: u8,
    pub _pad: u8,
}

/// A link the return program watches. [`LINKS_MAP`] key: ifindex.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LinkInfo {
    /// Gateway replies to connections arriving on this link leave through.
    pub return_gateway: u32,
    /// `LINK_*` flags.
    pub flags: u32,
}

/// Packets on this link start with an Ethernet header (otherwise with the IP header).
pub const LINK_L2: u32 = 1;

/// Key of [`LOCAL_MAP`]: a router-owned address.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AddrKey {
    /// 4 or 6.
    pub family: u32,
    pub addr: [u32; 4],
}

/// Flow identity. For [`FLOWS_MAP`] `ifindex` is the ingress interface; for [`RETURN_MAP`]
/// it is 0 and the tuple is the reply's (source = the LAN host that answers).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u16,
    pub ifindex: u32,
}

/// [`FlowValue::router`] of a flow whose rule does not route.
pub const NO_ROUTER: u16 = 0xffff;

/// A flow's decision, valid while `epoch` is the current ruleset epoch.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowValue {
    pub last_seen_ns: u64,
    pub epoch: u32,
    pub rule: u16,
    pub router: u16,
    pub gateway: u16,
    /// `FLOW_*` bits.
    pub flags: u16,
    pub _pad: [u16; 2],
}

/// [`FlowValue::flags`]: conntrack confirmed the flow (`netfilter` mode), so its packets may
/// skip the kernel on its kernel-path gateway's fast path ([`GatewayInfo::offload`]). Set by
/// the agent; the data plane keeps it while the flow keeps its router and gateway, and drops
/// it when the flow moves (its conntrack entry is reset then).
pub const FLOW_OFFLOADED: u16 = 1;
/// [`FlowValue::flags`], with [`FLOW_OFFLOADED`]: conntrack translates the flow's source
/// (`masquerade`, `snat`), as its entry in [`SNAT_MAP`] says; the fast path does the same.
/// Only for TCP and UDP. Set, kept and dropped with [`FLOW_OFFLOADED`].
pub const FLOW_SNAT: u16 = 2;

/// How conntrack translates an offloaded flow's packets from the LAN ([`SNAT_MAP`]): the
/// source address and port they leave with (the reply tuple's destination).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Snat {
    /// Raw network-order address words, IPv4 in word 0 (the flow's family).
    pub src: [u32; 4],
    /// Host order, as [`FlowKey::sport`].
    pub sport: u16,
    pub _pad: u16,
}

/// The path the agent puts a flow on (`FlowOffload::set` in the agent, `Model::set_path` in
/// the model).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlowPath {
    /// The kernel path: the flow's [`FLOW_OFFLOADED`] and [`FLOW_SNAT`] cleared, its
    /// [`SNAT_MAP`] entry removed.
    Kernel,
    /// Offloaded ([`FLOW_OFFLOADED`]), with the source NAT conntrack applies to it, if any
    /// ([`FLOW_SNAT`] and its [`SNAT_MAP`] entry).
    Fast(Option<Snat>),
}

/// Whether a packet of an offloaded flow may skip the kernel: always, except a TCP segment
/// that opens, closes or resets its connection (SYN, FIN, RST), which conntrack must see
/// (`tcp_flags` is [`TCP_FLAGS_UNKNOWN`] when the segment is too short to show them), and a
/// fragment: conntrack reassembles a datagram before it tracks it, so its fragments go
/// together.
pub const fn may_offload(proto: u8, tcp_flags: u8, fragment: bool) -> bool {
    !fragment && (proto != 6 || tcp_flags & (TCP_FIN | TCP_SYN | TCP_RST) == 0)
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
/// [`ParsedPacket::tcp_flags`] of a TCP segment whose flags lie beyond the frame.
pub const TCP_FLAGS_UNKNOWN: u8 = 0xff;

/// A flow on the kernel path that changed gateway ([`MOVED_MAP`]): its flow-table key (the
/// LAN side's 5-tuple, the original direction of its conntrack entry, before any NAT) and
/// the gateways it left and took.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Moved {
    pub key: FlowKey,
    pub from: u16,
    pub to: u16,
}

/// A copy of one [`FLOWS_MAP`] entry in this CPU's flow cache ([`FLOW_CACHE_MAP`]), so that
/// a flow's next packets skip the LRU hash table (hashing a 44-byte key and walking a bucket
/// cost more than the rest of a flow hit). The flow table stays the truth: an entry is used
/// only while it provably says what the table would, that is while
/// * `epoch` is the current ruleset epoch (a commit invalidates every entry),
/// * for a routing rule, the router's table version is still `router_version` (a gateway
///   verdict or weight change invalidates the router's entries),
/// * `last_seen_ns` is younger than [`FLOW_REFRESH_NS`] (the table's own copy is then not
///   due a rewrite) and than the idle timeout,
/// * for a kernel-path gateway ([`GW_KIND_KERNEL`]) with a fast path for the packet's
///   family ([`GatewayInfo::offload`]), the flow is offloaded: only the agent sets
///   [`FLOW_OFFLOADED`], in the table, and a flow still on the kernel path must see it at its
///   next packet (the agent clears it in the table and in every CPU's entry). Without a fast
///   path (a tunnel) the flag changes nothing, so the entry answers.
///
/// Otherwise the packet takes the flow-table path, which refills the entry. An all-zero
/// entry is empty: no key has family 0. 64 bytes, one cache line.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlowCacheEntry {
    pub key: FlowKey,
    /// `ROUTER_VERSION_MAP[router]` when the gateway was chosen (0 for other actions).
    pub router_version: u32,
    /// The flow table entry's `last_seen_ns` as this CPU last read or wrote it.
    pub last_seen_ns: u64,
    pub epoch: u32,
    pub rule: u16,
    /// The gateway, with [`CACHE_OFFLOADED`] when the flow is offloaded.
    pub gateway: u16,
}

/// [`FlowCacheEntry::gateway`]'s bit for [`FLOW_OFFLOADED`]: gateway ids stay below it, and
/// the entry stays one cache line.
pub const CACHE_OFFLOADED: u16 = 0x8000;
/// [`FlowCacheEntry::gateway`]'s bit for [`FLOW_SNAT`].
pub const CACHE_SNAT: u16 = 0x4000;
/// [`FlowCacheEntry::gateway`]'s bits that hold the gateway id.
pub const CACHE_GATEWAY: u16 = !(CACHE_OFFLOADED | CACHE_SNAT);
const _: () = assert!(MAX_GATEWAYS <= CACHE_SNAT as u32);

const _: () = assert!(core::mem::size_of::<FlowCacheEntry>() == 64);
const _: () = assert!(FLOW_CACHE_BANK_ENTRIES.is_power_of_two());

/// One element of [`FLOW_CACHE_MAP`]: entry `slot` is `entries[slot % 512]` of block
/// `slot / 512`. Few large elements rather than one per entry: a per-CPU array finds an
/// element's memory through a table of pointers, one per element, and with an element per
/// entry that table (128 KiB) cost a second cache miss per lookup; 32 pointers stay hot.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowCacheBlock {
    pub entries: [FlowCacheEntry; FLOW_CACHE_BLOCK_ENTRIES as usize],
}

const _: () = assert!(core::mem::size_of::<FlowCacheBlock>() <= 32 * 1024);
const _: () = assert!(FLOW_CACHE_BLOCK_ENTRIES.is_power_of_two());
const _: () = assert!(FLOW_CACHE_BANK_ENTRIES.is_multiple_of(FLOW_CACHE_BLOCK_ENTRIES));

/// A learned return route.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReturnValue {
    pub last_seen_ns: u64,
    pub gateway: u32,
    pub _pad: u32,
}

/// Global knobs. [`CONFIG_MAP`] index 0.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Config {
    /// A flow unseen for longer is decided anew (0 = never idle; the LRU still evicts).
    pub flow_idle_ns: u64,
    /// `CONFIG_*` flags.
    pub flags: u32,
    /// The kernel path's marks, [`MarkLayout::packed`] (0: no gateway takes that path).
    pub marks: u32,
    /// Per ruleset generation: the [`RuleBitmap`] words its rules use (`ceil(rules / 64)`);
    /// the classifier reads no further, so a miss costs what the rules need, not
    /// [`MAX_RULES`]. The agent writes the new generation's before the flip and keeps the
    /// live one's.
    pub rule_words: [u16; 2],
    pub _pad: u32,
}

/// [`Config::rule_words`] of a ruleset of `rules` rules.
pub const fn rule_words(rules: usize) -> u16 {
    rules.div_ceil(64) as u16
}

/// Where the `netfilter` mode's gateway marks lie in `skb->mark`: `bits` bits from bit
/// `shift`; gateway g's mark is `(g + 1) << shift` (0 is "no gateway"), the other bits of
/// the mark are kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MarkLayout {
    pub shift: u8,
    pub bits: u8,
}

impl MarkLayout {
    /// The layout of the mask `mask` (contiguous bits), if it is one with room for
    /// `gateways` gateways.
    pub const fn of_mask(mask: u32, gateways: u32) -> Option<MarkLayout> {
        if mask == 0 {
            return None;
        }
        let shift = mask.trailing_zeros();
        let bits = (mask >> shift).trailing_ones();
        if mask >> shift != u32::MAX >> (32 - bits) || (bits < 32 && gateways >= 1 << bits) {
            return None;
        }
        Some(MarkLayout {
            shift: shift as u8,
            bits: bits as u8,
        })
    }

    pub const fn mask(self) -> u32 {
        (u32::MAX >> (32 - self.bits as u32)) << self.shift
    }

    /// Gateway `gateway`'s mark.
    #[inline(always)]
    pub const fn mark(self, gateway: u16) -> u32 {
        (gateway as u32 + 1) << self.shift
    }

    /// As [`Config::marks`] holds it (never 0: `bits` ≥ 1).
    pub const fn packed(self) -> u32 {
        self.shift as u32 | (self.bits as u32) << 8
    }

    #[inline(always)]
    pub const fn unpacked(packed: u32) -> Option<MarkLayout> {
        let bits = (packed >> 8) as u8;
        if bits == 0 || bits > 32 {
            return None;
        }
        Some(MarkLayout {
            shift: packed as u8 & 31,
            bits,
        })
    }
}

/// Return routes are configured: look replies up in [`RETURN_MAP`] (otherwise the lookup,
/// an LRU hash probe per packet, is skipped).
pub const CONFIG_RETURN_ROUTES: u32 = 1;

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// One redirect to an Ethernet gateway, remembered until the kernel says what became of it.
/// `ifindex == 0`: the entry is free (its fate is known).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EgressRecord {
    /// The LAN interface the frame arrived on.
    pub from: u32,
    /// The egress interface (the gateway's).
    pub ifindex: u32,
    /// The frame's length as counted.
    pub bytes: u32,
    pub gateway: u16,
    /// The `steer_*` reason it was counted under.
    pub reason: u8,
    pub _pad: u8,
}

/// The last [`EGRESS_LOG_SIZE`] redirects to Ethernet gateways of one CPU ([`EGRESS_LOG_MAP`]).
///
/// A redirect only queues the frame: the device takes it (or not) when its bulk queue is
/// flushed, at the latest at the end of the NAPI poll, on the same CPU, and the kernel's
/// tracepoints then say how many of the queued frames were dropped (the last ones) or that the
/// redirect failed outright. `xwan_xdp_decide` writes a record per redirect; the egress
/// programs find the records of the frames that failed, move them from their `steer_*`
/// reason and gateway counter to a `drop_*` reason and [`GATEWAY_FAILURES_MAP`], and free
/// them. So the counters say what left, at the price of a transient: for the moment between
/// the redirect and the flush a frame counts as steered (user space reads counters as
/// monotonic, see the agent's counter reader).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EgressLog {
    /// Records written so far; the next goes to `next % EGRESS_LOG_SIZE`.
    pub next: u32,
    /// The egress programs' count of records found, kept here rather than in a register so
    /// that the verifier does not walk the search once per possible count.
    pub found: u32,
    pub records: [EgressRecord; EGRESS_LOG_SIZE as usize],
}

/// A parsed packet, handed from [`PROG_XDP_LAN`] to [`PROG_XDP_DECIDE`] through the per-CPU
/// [`SCRATCH_MAP`] (both run on one CPU without preemption, one packet at a time).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ParsedPacket {
    /// Raw network-order address words, IPv4 in word 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Offset of the IP header (14, 18 or 22).
    pub l3: u16,
    pub sport: u16,
    pub dport: u16,
    /// VLAN tags between the MACs and the IP EtherType (0 to 2).
    pub tags: u8,
    /// 1: IPv6, 0: IPv4.
    pub v6: u8,
    pub proto: u8,
    pub dscp: u8,
    pub ttl: u8,
    /// 1: `sport`/`dport` were read (TCP, UDP, SCTP, not a non-first fragment).
    pub has_ports: u8,
    /// A TCP segment's flags ([`TCP_FLAGS_UNKNOWN`] when beyond the frame); 0 otherwise.
    pub tcp_flags: u8,
    /// 1: a fragment (IPv4: more fragments or an offset; IPv6: a fragment header).
    pub fragment: u8,
    /// Offset of the upper-layer header (where the ports are, when `has_ports`). The
    /// fields fill the struct without padding: LLVM zeroes a padding array with a call to
    /// `memset`, a BPF-to-BPF call 6.1's verifier cannot afford.
    pub l4: u16,
    /// The packet's flow key (ifindex 0: the return-route table's), which `decide` uses in
    /// place: its 512-byte stack has no room for a copy.
    pub key: FlowKey,
}

/// How `xwan_xdp_decide` tells `xwan_tc_steer` which L3 tunnel a packet goes to: the
/// tunnel's ifindex in the frame's source MAC, behind this prefix. An L3 device discards the
/// Ethernet header, so nothing downstream reads it; and unlike XDP metadata
/// (`bpf_xdp_adjust_meta`) it needs no helper, driver support or kernel version: it works
/// wherever XDP_PASS does.
///
/// `0x03` has the group bit set: no station sends from a group address (IEEE 802 source
/// addresses are individual), so a real frame never carries the prefix, and the LAN program
/// drops any frame that arrives with it ([`reason::DROP_FORGED_TAG`]): only xwan's own
/// decision reaches `xwan_tc_steer` with a tag.
pub const TUNNEL_TAG_PREFIX: [u8; 2] = [0x03, 0x78]; // group + local, 'x'

/// The tunnel hand-off's name in status, logs and metrics (`handoff` label): the only one,
/// on every kernel and driver.
pub const TUNNEL_HANDOFF: &str = "source_mac";

/// The source MAC that hands a packet to the tunnel with `ifindex` (big endian after the
/// prefix).
#[inline(always)]
pub const fn tunnel_tag(ifindex: u32) -> [u8; 6] {
    let i = ifindex.to_be_bytes();
    [
        TUNNEL_TAG_PREFIX[0],
        TUNNEL_TAG_PREFIX[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

/// The destination MAC that hands a packet to the kernel path through `gateway`
/// ([`GW_KIND_KERNEL`]): the prefix of [`TUNNEL_TAG_PREFIX`], then the gateway id (big
/// endian). A group address no frame to this router carries: the LAN program drops any frame
/// that arrives with it ([`reason::DROP_FORGED_TAG`]), and `xwan_tc_steer` puts the
/// interface's own MAC back.
#[inline(always)]
pub const fn kernel_tag(gateway: u16) -> [u8; 6] {
    let g = gateway.to_be_bytes();
    [TUNNEL_TAG_PREFIX[0], TUNNEL_TAG_PREFIX[1], 0, 0, g[0], g[1]]
}

/// The gateway a destination MAC hands its packet to, if it is a [`kernel_tag`].
#[inline(always)]
pub const fn kernel_tag_gateway(dst_mac: [u8; 6]) -> Option<u16> {
    if dst_mac[0] == TUNNEL_TAG_PREFIX[0] && dst_mac[1] == TUNNEL_TAG_PREFIX[1] {
        Some(u16::from_be_bytes([dst_mac[4], dst_mac[5]]))
    } else {
        None
    }
}

/// The tunnel ifindex a source MAC hands its packet to, if it is a [`tunnel_tag`].
#[inline(always)]
pub const fn tunnel_tag_ifindex(src_mac: [u8; 6]) -> Option<u32> {
    if src_mac[0] == TUNNEL_TAG_PREFIX[0] && src_mac[1] == TUNNEL_TAG_PREFIX[1] {
        Some(u32::from_be_bytes([
            src_mac[2], src_mac[3], src_mac[4], src_mac[5],
        ]))
    } else {
        None
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)], Copy, made of integers, with explicit padding fields.
    unsafe impl aya::Pod for RuleBitmap {}
    unsafe impl aya::Pod for Moved {}
    unsafe impl aya::Pod for Snat {}
    unsafe impl aya::Pod for IfaceRuleKey {}
    unsafe impl aya::Pod for PortTable {}
    unsafe impl aya::Pod for RuleAction {}
    unsafe impl aya::Pod for SlotTable {}
    unsafe impl aya::Pod for GatewayInfo {}
    unsafe impl aya::Pod for IfaceInfo {}
    unsafe impl aya::Pod for LinkInfo {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for FlowCacheEntry {}
    unsafe impl aya::Pod for FlowCacheBlock {}
    unsafe impl aya::Pod for ReturnValue {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for ParsedPacket {}
    unsafe impl aya::Pod for EgressRecord {}
    unsafe impl aya::Pod for EgressLog {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each index formula covers its map exactly: generation 0 starts at 0, the last value of
    /// the last generation is the map's last entry, and generations do not overlap.
    #[test]
    fn index_formulas_fill_their_maps() {
        let last = GENERATIONS - 1;
        assert_eq!(proto_index(last, u8::MAX), PROTO_MAP_SIZE - 1);
        assert_eq!(proto_index(1, 0), proto_index(0, u8::MAX) + 1);
        assert_eq!(dscp_index(last, 63), DSCP_MAP_SIZE - 1);
        assert_eq!(dscp_index(1, 0), dscp_index(0, 63) + 1);
        assert_eq!(portmap_index(last, PORT_DIRS - 1), PORTMAP_MAP_SIZE - 1);
        assert_eq!(
            portbm_index(last, PORT_DIRS - 1, MAX_PORT_CLASSES - 1),
            PORTBM_MAP_SIZE - 1
        );
        assert_eq!(
            portbm_index(0, 1, 0),
            portbm_index(0, 0, MAX_PORT_CLASSES - 1) + 1
        );
        assert_eq!(rule_index(last, MAX_RULES as u32 - 1), RULES_MAP_SIZE - 1);
        assert_eq!(slots_index(MAX_ROUTERS - 1, 1), SLOTS_MAP_SIZE - 1);
        assert_ne!(slots_index(7, 0), slots_index(7, 1));
    }
}
