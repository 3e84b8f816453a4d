//! Load-test tooling for `cargo xtask load` (benchmark equipment, not product):
//!
//! * `load_gen`: the traffic source. Run through `BPF_PROG_TEST_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`, it turns the one frame the kernel hands it into the next
//!   flow's template and returns `XDP_TX`, so the kernel sends it out of the source veth.
//! * `load_relay`: the same source where live frames are refused. It runs on the far end of
//!   a spare veth pair a user-space sender writes into, does to each frame what `load_gen`
//!   does, and redirects it into the source veth (`bench/src/load/relay.rs`).
//! * `load_sink`: on the sinks' veths, counts TCP/UDP packets per (interface, class) and drops
//!   them; everything else (ARP, ICMP: the agent's probes must be answered) goes to the kernel.
//! * `load_pass`: lets a veth accept XDP-redirected frames (router LAN in kernel modes).
//! * `load_redirect`: the upper bound, a redirect to one next hop with no parsing at all.
//! * `load_redirect_class`: the same bound with the policy's fan-out: each frame goes to its
//!   class's link, read from the marker the generator wrote into it (one byte, no parsing).
//! * `load_flow_class`: `load_redirect_class` with per-flow state: each frame's 5-tuple looked
//!   up in an LRU hash of the data plane's flow keys and values (inserted when new, its time
//!   refreshed as the data plane does) before the same redirect. The floor of any router that keeps a flow table of that size: what the flow
//!   count costs a hash lookup, with nothing of xwan's around it.
//! * `load_tc_redirect`: the same bound for L3 (TUN) links, from TC ingress, as native
//!   `XDP_REDIRECT` into an L3 device delivers nothing.
//!
//! Layouts: `bench/src/load/layout.rs`.
#![no_std]
#![no_main]

#[path = "../../src/load/layout.rs"]
#[allow(dead_code)]
mod layout;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_tail,
        bpf_xdp_store_bytes,
    },
    macros::{classifier, map, xdp},
    maps::{Array, DevMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use layout::*;
use xwan_common::{FLOW_REFRESH_NS, FlowKey, FlowValue};

#[map(name = "LOAD_TEMPLATES")]
static LOAD_TEMPLATES: Array<Template> = Array::with_max_entries(MAX_TEMPLATES, 0);
#[map(name = "LOAD_GEN_CFG")]
static LOAD_GEN_CFG: Array<GenConfig> = Array::with_max_entries(1, 0);
#[map(name = "LOAD_GEN_STATE")]
static LOAD_GEN_STATE: PerCpuArray<GenState> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "LOAD_SINK_CNT")]
static LOAD_SINK_CNT: PerCpuArray<SinkCount> = PerCpuArray::with_max_entries(SINK_SLOTS, 0);
#[map(name = "LOAD_SINK_CFG")]
static LOAD_SINK_CFG: Array<SinkConfig> = Array::with_max_entries(1, 0);
#[map(name = "LOAD_LATENCY")]
static LOAD_LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(LAT_BUCKETS, 0);
/// Index `ifindex & 63`: non-zero = this sink is a dead link (drops everything, counts
/// nothing, answers no probe): the silent cut of the failover test.
#[map(name = "LOAD_SINK_DEAD")]
static LOAD_SINK_DEAD: Array<u32> = Array::with_max_entries(64, 0);
#[map(name = "LOAD_RDR_CFG")]
static LOAD_RDR_CFG: Array<RedirectConfig> = Array::with_max_entries(RDR_LINKS, 0);
/// Index: class id (the frame's marker) → link index for `load_redirect_class`.
#[map(name = "LOAD_CLASS_LINK")]
static LOAD_CLASS_LINK: Array<u32> = Array::with_max_entries(16, 0);
/// Index 0: the TUN device `load_tc_redirect` sends everything to.
#[map(name = "LOAD_TC_RDR")]
static LOAD_TC_RDR: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "LOAD_RDR_DEV")]
static LOAD_RDR_DEV: DevMap = DevMap::with_max_entries(RDR_LINKS, 0);
/// `load_flow_class`'s flow table: one entry here, sized at load time to the run's flows.
#[map(name = "LOAD_FLOWS")]
static LOAD_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(1, 0);
/// Index 0: the source veth (`xs…`) `load_relay` sends its frames into.
#[map(name = "LOAD_RELAY_DEV")]
static LOAD_RELAY_DEV: DevMap = DevMap::with_max_entries(1, 0);

#[xdp]
pub fn load_gen(ctx: XdpContext) -> u32 {
    match next_frame(&ctx) {
        Ok(()) => XDP_TX,
        Err(action) => action,
    }
}

#[xdp]
pub fn load_relay(ctx: XdpContext) -> u32 {
    match next_frame(&ctx) {
        Ok(()) => LOAD_RELAY_DEV.redirect(0, 0).unwrap_or(XDP_ABORTED),
        Err(action) => action,
    }
}

/// The source's work on one frame, for `load_gen` and `load_relay` alike: keeps the pace
/// (`Err(XDP_DROP)` while early), counts the frame as sent, copies the next flow's template
/// into it (`train` frames of a flow in a row) and stamps the send time at `ts_off`. `Ok`:
/// the frame is ready to go out.
#[inline(always)]
fn next_frame(ctx: &XdpContext) -> Result<(), u32> {
    let cfg = LOAD_GEN_CFG.get(0).ok_or(XDP_ABORTED)?;
    let st = LOAD_GEN_STATE.get_ptr_mut(0).ok_or(XDP_ABORTED)?;
    // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
    let st = unsafe { &mut *st };
    st.runs += 1;
    let now = if cfg.gap_ns != 0 {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        if now < st.next_ns {
            return Err(XDP_DROP);
        }
        // Never burst to catch up after a pause (the thread was preempted): restart the pace.
        st.next_ns = if st.next_ns + 1_000_000 < now {
            now + cfg.gap_ns
        } else {
            st.next_ns + cfg.gap_ns
        };
        now
    } else {
        0
    };
    let templates = cfg.templates as u64;
    if templates == 0 {
        return Err(XDP_ABORTED);
    }
    let flow = (st.sent / cfg.train.max(1) as u64) % (cfg.flows as u64).max(templates);
    let (i, shift) = ((flow % templates) as u32, (flow / templates) as u16);
    st.sent += 1;
    let t = LOAD_TEMPLATES.get(i).ok_or(XDP_ABORTED)?;
    // 1..=TEMPLATE_BYTES by construction (mask, then + 1), in a form the verifier follows.
    let len = ((t.len.wrapping_sub(1)) as usize & (TEMPLATE_BYTES - 1)) + 1;
    let cur = ctx.data_end() - ctx.data();
    // SAFETY (helpers below): plain helper calls on our own context and map value.
    if len != cur && unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - cur as i32) } != 0 {
        return Err(XDP_ABORTED);
    }
    let src = t.data.as_ptr() as *mut c_void;
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, src, len as u32) } != 0 {
        return Err(XDP_ABORTED);
    }
    if shift != 0 && t.sport_off != 0 {
        move_source_port(ctx, t, shift)?;
    }
    if t.ts_off != 0 {
        let mut ts = if now != 0 {
            now
        } else {
            unsafe { bpf_ktime_get_ns() }
        };
        let p = &mut ts as *mut u64 as *mut c_void;
        if unsafe { bpf_xdp_store_bytes(ctx.ctx, t.ts_off, p, 8) } != 0 {
            return Err(XDP_ABORTED);
        }
    }
    Ok(())
}

/// Makes the frame copied from `t` another flow: its source port plus `shift`, and its L4
/// checksum (if it has one) updated for it. `traffic::flow_frame` is the same in user space.
#[inline(always)]
fn move_source_port(ctx: &XdpContext, t: &Template, shift: u16) -> Result<(), u32> {
    // Even offsets below TEMPLATE_BYTES - 1, in a form the verifier follows.
    let at = |off: u32| off as usize & (TEMPLATE_BYTES - 2);
    let read = |off: u32| u16::from_be_bytes([t.data[at(off)], t.data[at(off) + 1]]);
    let old = read(t.sport_off);
    let new = old.wrapping_add(shift);
    let store = |off: u32, v: u16| {
        let b = v.to_be_bytes();
        // SAFETY: plain helper call; the 2 bytes live on the stack across it.
        match unsafe { bpf_xdp_store_bytes(ctx.ctx, off, b.as_ptr() as *mut c_void, 2) } {
            0 => Ok(()),
            _ => Err(XDP_ABORTED),
        }
    };
    store(t.sport_off, new)?;
    if t.csum_off != 0 {
        store(t.csum_off, moved_port_checksum(read(t.csum_off), old, new))?;
    }
    Ok(())
}

#[xdp]
pub fn load_sink(ctx: XdpContext) -> u32 {
    if LOAD_SINK_DEAD
        .get(ctx.ingress_ifindex() as u32 & 63)
        .is_some_and(|d| *d != 0)
    {
        return XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    // Up to the IPv6 flow label / IPv4 protocol; IPv6's next header is at 20.
    if start + 24 > end {
        return XDP_PASS;
    }
    let b = start as *const u8;
    // SAFETY: 24 bytes checked above.
    let (class, ts_off) = unsafe {
        // Only TCP and UDP are the generator's: the rest (ARP, ICMP, the router's own MLD
        // reports...) goes to the kernel uncounted.
        match (*b.add(12), *b.add(13)) {
            (0x08, 0x00) => match *b.add(23) {
                6 => (*b.add(19), 54),
                17 => (*b.add(19), 42),
                _ => return XDP_PASS,
            },
            (0x86, 0xdd) => match *b.add(20) {
                6 | 17 => (*b.add(17), 0),
                _ => return XDP_PASS,
            },
            _ => return XDP_PASS,
        }
    };
    let len = (end - start) as u64;
    let slot = (ctx.ingress_ifindex() as u32 & 63) * MAX_CLASSES + (class as u32 & 15);
    if let Some(c) = LOAD_SINK_CNT.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    if ts_off != 0
        && let Some(cfg) = LOAD_SINK_CFG.get(0)
        && cfg.latency != 0
        && start + ts_off + 8 <= end
    {
        // SAFETY: 8 bytes at ts_off checked above.
        let sent = unsafe { ((start + ts_off) as *const u64).read_unaligned() };
        let now = unsafe { bpf_ktime_get_ns() };
        if sent != 0 && sent <= now {
            let bucket = ((now - sent) / LAT_BUCKET_NS).min(LAT_BUCKETS as u64 - 1) as u32;
            if let Some(h) = LOAD_LATENCY.get_ptr_mut(bucket) {
                // SAFETY: per-CPU slot.
                unsafe { *h += 1 };
            }
        }
    }
    XDP_DROP
}

#[xdp]
pub fn load_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[xdp]
pub fn load_redirect(ctx: XdpContext) -> u32 {
    redirect_to(&ctx, 0)
}

#[xdp]
pub fn load_redirect_class(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 18 > ctx.data_end() {
        return XDP_PASS;
    }
    // SAFETY: 18 bytes checked above. The class is the low nibble of the IPv4 ID's second
    // byte (frame offset 19) or of the IPv6 flow label's last byte (offset 17).
    let class = unsafe {
        match *((start + 12) as *const u8) {
            0x08 if start + 20 <= ctx.data_end() => *((start + 19) as *const u8) & 15,
            0x86 => *((start + 17) as *const u8) & 15,
            _ => return XDP_PASS,
        }
    };
    match LOAD_CLASS_LINK.get(class as u32) {
        Some(link) => redirect_to(&ctx, *link),
        None => XDP_PASS,
    }
}

#[xdp]
pub fn load_flow_class(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return XDP_PASS;
    }
    let mut key = FlowKey {
        ifindex: ctx.ingress_ifindex() as u32,
        ..FlowKey::default()
    };
    // SAFETY: every read below is within the 54 bytes checked above, or checked itself.
    let (class, l4) = unsafe {
        match *((start + 12) as *const u8) {
            0x08 => {
                let ihl = ((*((start + 14) as *const u8) & 15) as usize) * 4;
                key.proto = *((start + 23) as *const u8);
                key.family = 4;
                key.src[0] = ((start + 26) as *const u32).read_unaligned();
                key.dst[0] = ((start + 30) as *const u32).read_unaligned();
                (*((start + 19) as *const u8) & 15, 14 + (ihl & 0x3c))
            }
            0x86 => {
                key.proto = *((start + 20) as *const u8);
                key.family = 6;
                for i in 0..4 {
                    key.src[i] = ((start + 22 + 4 * i) as *const u32).read_unaligned();
                    key.dst[i] = ((start + 38 + 4 * i) as *const u32).read_unaligned();
                }
                (*((start + 17) as *const u8) & 15, 54)
            }
            _ => return XDP_PASS,
        }
    };
    if start + l4 + 4 > end {
        return XDP_PASS;
    }
    // SAFETY: 4 bytes checked above.
    unsafe {
        key.sport = ((start + l4) as *const u16).read_unaligned();
        key.dport = ((start + l4 + 2) as *const u16).read_unaligned();
    }
    let Some(link) = LOAD_CLASS_LINK.get(class as u32) else {
        return XDP_PASS;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match LOAD_FLOWS.get_ptr_mut(&key) {
        // SAFETY: points into the map's value; a torn write elsewhere is harmless here.
        Some(v) => unsafe {
            if now.saturating_sub((*v).last_seen_ns) >= FLOW_REFRESH_NS {
                (*v).last_seen_ns = now;
            }
        },
        None => {
            let v = FlowValue {
                last_seen_ns: now,
                epoch: 0,
                rule: 0,
                router: 0,
                gateway: *link as u16,
                flags: 0,
                _pad: [0; 2],
            };
            let _ = LOAD_FLOWS.insert(&key, &v, 0);
        }
    }
    redirect_to(&ctx, *link)
}

/// Rewrites the MACs for link `link` and redirects the frame there.
#[inline(always)]
fn redirect_to(ctx: &XdpContext, link: u32) -> u32 {
    let Some(cfg) = LOAD_RDR_CFG.get(link) else {
        return XDP_ABORTED;
    };
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return XDP_PASS;
    }
    // SAFETY: 12 bytes checked above.
    unsafe {
        (start as *mut [u8; 6]).write_unaligned(cfg.dmac);
        ((start + 6) as *mut [u8; 6]).write_unaligned(cfg.smac);
    }
    match LOAD_RDR_DEV.redirect(link, 0) {
        Ok(a) => a,
        Err(_) => XDP_ABORTED,
    }
}

#[classifier]
pub fn load_tc_redirect(_ctx: TcContext) -> i32 {
    match LOAD_TC_RDR.get(0) {
        // SAFETY: plain helper call; returns TC_ACT_REDIRECT or TC_ACT_SHOT.
        Some(ifindex) if *ifindex != 0 => unsafe { bpf_redirect(*ifindex, 0) as i32 },
        _ => 2, // TC_ACT_SHOT
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
