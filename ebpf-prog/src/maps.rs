//! The data plane's maps. Names, sizes and layouts come from `xwan_common`; every map is
//! pinned by name so a restarted agent adopts the running state (the loader chooses the
//! directory).

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use xwan_common::{
    AddrKey, BITMAP_WORDS, Config, Counter, DSCP_MAP_SIZE, EgressLog, FLOW_CACHE_BLOCK_ENTRIES,
    FLOW_CACHE_BLOCKS, FLOW_TABLE_SIZE, FlowCacheBlock, FlowCacheEntry, FlowKey, FlowValue,
    GENERATIONS, GatewayInfo, IFACE_ARRAY_SIZE, IfaceInfo, IfaceRuleKey, JUMP_SLOTS, LinkInfo,
    Lpm4Data, Lpm6Data, MAX_GATEWAYS, MAX_IFACES, MAX_LOCAL_ADDRS, MAX_PREFIXES, MAX_ROUTERS,
    MAX_RULE_COUNTERS, MAX_RULES, MOVED_RING_BYTES, PORTBM_MAP_SIZE, PORTMAP_MAP_SIZE,
    PROTO_MAP_SIZE, ParsedPacket, PortTable, RULES_MAP_SIZE, ReturnValue, RuleAction, RuleBitmap,
    SLOTS_MAP_SIZE, SlotTable, Snat, reason,
};

const _: () = assert!(BITMAP_WORDS * 64 == MAX_RULES);

#[map(name = "XWAN_IFACES")]
pub static XWAN_IFACES: HashMap<u32, IfaceInfo> = HashMap::pinned(MAX_IFACES, 0);

/// Index: ifindex, below `IFACE_ARRAY_SIZE` (copies of `XWAN_IFACES`' entries).
#[map(name = "XWAN_IFACE_ARR")]
pub static XWAN_IFACE_ARR: Array<IfaceInfo> = Array::pinned(IFACE_ARRAY_SIZE, 0);

#[map(name = "XWAN_LOCAL")]
pub static XWAN_LOCAL: HashMap<AddrKey, u8> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

#[map(name = "XWAN_CONFIG")]
pub static XWAN_CONFIG: Array<Config> = Array::pinned(1, 0);

/// Index 0: the ruleset epoch; generation = epoch & 1.
#[map(name = "XWAN_RULESET")]
pub static XWAN_RULESET: Array<u32> = Array::pinned(1, 0);

#[map(name = "XWAN_SRC4")]
pub static XWAN_SRC4: LpmTrie<Lpm4Data, RuleBitmap> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "XWAN_DST4")]
pub static XWAN_DST4: LpmTrie<Lpm4Data, RuleBitmap> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "XWAN_SRC6")]
pub static XWAN_SRC6: LpmTrie<Lpm6Data, RuleBitmap> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "XWAN_DST6")]
pub static XWAN_DST6: LpmTrie<Lpm6Data, RuleBitmap> = LpmTrie::pinned(MAX_PREFIXES, 0);

/// Index [`xwan_common::proto_index`].
#[map(name = "XWAN_PROTO")]
pub static XWAN_PROTO: Array<RuleBitmap> = Array::pinned(PROTO_MAP_SIZE, 0);

/// Index [`xwan_common::dscp_index`].
#[map(name = "XWAN_DSCP")]
pub static XWAN_DSCP: Array<RuleBitmap> = Array::pinned(DSCP_MAP_SIZE, 0);

/// Index [`xwan_common::portmap_index`].
#[map(name = "XWAN_PORTMAP")]
pub static XWAN_PORTMAP: Array<PortTable> = Array::pinned(PORTMAP_MAP_SIZE, 0);

/// Index [`xwan_common::portbm_index`].
#[map(name = "XWAN_PORTBM")]
pub static XWAN_PORTBM: Array<RuleBitmap> = Array::pinned(PORTBM_MAP_SIZE, 0);

#[map(name = "XWAN_IFBM")]
pub static XWAN_IFBM: HashMap<IfaceRuleKey, RuleBitmap> =
    HashMap::pinned(GENERATIONS * (MAX_IFACES + 1), 0);

/// Index [`xwan_common::rule_index`].
#[map(name = "XWAN_RULES")]
pub static XWAN_RULES: Array<RuleAction> = Array::pinned(RULES_MAP_SIZE, 0);

/// Per router: table version; the live table is at [`xwan_common::slots_index`].
#[map(name = "XWAN_RTR_VER")]
pub static XWAN_RTR_VER: Array<u32> = Array::pinned(MAX_ROUTERS, 0);

#[map(name = "XWAN_SLOTS")]
pub static XWAN_SLOTS: Array<SlotTable> = Array::pinned(SLOTS_MAP_SIZE, 0);

#[map(name = "XWAN_GATEWAYS")]
pub static XWAN_GATEWAYS: Array<GatewayInfo> = Array::pinned(MAX_GATEWAYS, 0);

/// Index: gateway id → egress interface of an Ethernet gateway.
#[map(name = "XWAN_DEVMAP")]
pub static XWAN_DEVMAP: DevMap = DevMap::pinned(MAX_GATEWAYS, 0);

/// Allocated as used (`BPF_F_NO_PREALLOC`): only the agent inserts, for offloaded flows
/// that conntrack translates.
#[map(name = "XWAN_SNAT")]
pub static XWAN_SNAT: HashMap<FlowKey, Snat> = HashMap::pinned(FLOW_TABLE_SIZE, 1);

#[map(name = "XWAN_FLOWS")]
pub static XWAN_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(FLOW_TABLE_SIZE, 0);

/// Not pinned: entries are only valid against the epoch and router versions they were
/// filled under, and a new program starting empty is always right.
#[map(name = "XWAN_FLOW_CACHE")]
pub static XWAN_FLOW_CACHE: PerCpuArray<FlowCacheBlock> =
    PerCpuArray::with_max_entries(FLOW_CACHE_BLOCKS, 0);

/// This CPU's flow-cache entry `slot` (see [`FlowCacheBlock`]).
#[inline(always)]
pub fn flow_cache_entry(slot: u32) -> Option<*mut FlowCacheEntry> {
    let block = XWAN_FLOW_CACHE.get_ptr_mut(slot / FLOW_CACHE_BLOCK_ENTRIES)?;
    let i = (slot % FLOW_CACHE_BLOCK_ENTRIES) as usize;
    // SAFETY: `i` is below the block's length; the pointer stays inside the map value.
    Some(unsafe { (&raw mut (*block).entries).cast::<FlowCacheEntry>().add(i) })
}

#[map(name = "XWAN_RETURN")]
pub static XWAN_RETURN: LruHashMap<FlowKey, ReturnValue> = LruHashMap::pinned(FLOW_TABLE_SIZE, 0);

#[map(name = "XWAN_LINKS")]
pub static XWAN_LINKS: HashMap<u32, LinkInfo> = HashMap::pinned(MAX_IFACES, 0);

#[map(name = "XWAN_RULE_CNT")]
pub static XWAN_RULE_CNT: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULE_COUNTERS, 0);

#[map(name = "XWAN_GW_CNT")]
pub static XWAN_GW_CNT: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_GATEWAYS, 0);

#[map(name = "XWAN_GW_NEW")]
pub static XWAN_GW_NEW: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_GATEWAYS, 0);

#[map(name = "XWAN_REASON_CNT")]
pub static XWAN_REASON_CNT: PerCpuArray<Counter> = PerCpuArray::pinned(reason::COUNT, 0);

#[map(name = "XWAN_GW_FAIL")]
pub static XWAN_GW_FAIL: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_GATEWAYS, 0);

#[map(name = "XWAN_MOVED")]
pub static XWAN_MOVED: RingBuf = RingBuf::pinned(MOVED_RING_BYTES, 0);

#[map(name = "XWAN_EGRESS_LOG")]
pub static XWAN_EGRESS_LOG: PerCpuArray<EgressLog> = PerCpuArray::pinned(1, 0);

/// `xwan_xdp_lan` → `xwan_xdp_decide`. Pinned like the other maps: a restarted agent's
/// programs replace the entry, and the running first stage keeps reaching a second stage
/// while no agent runs.
#[map(name = "XWAN_JUMP")]
pub static XWAN_JUMP: ProgramArray = ProgramArray::pinned(JUMP_SLOTS, 0);

/// The packet `xwan_xdp_lan` parsed, for `xwan_xdp_decide`. Pinned so that a first stage
/// from the previous agent and a second stage from this one share it during a restart.
#[map(name = "XWAN_SCRATCH")]
pub static XWAN_SCRATCH: PerCpuArray<ParsedPacket> = PerCpuArray::pinned(1, 0);

/// Adds one packet of `len` bytes to a per-CPU counter.
#[inline(always)]
pub fn count(map: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Takes back one packet of `len` bytes that [`count`] added on this CPU.
#[inline(always)]
pub fn uncount(map: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: as in `count`; the packet was counted on this CPU, so this never wraps.
        unsafe {
            (*c).packets = (*c).packets.saturating_sub(1);
            (*c).bytes = (*c).bytes.saturating_sub(len);
        }
    }
}
