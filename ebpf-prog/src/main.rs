//! xwan's kernel programs. What they must do is specified in `xwan_common::model`; the
//! layouts they share with user space are in `xwan_common::maps`.
//!
//! * `xwan_xdp_lan` (XDP, LAN interfaces): parse, then tail-call `xwan_xdp_decide` to
//!   classify and steer ([`lan`]). Two programs so that each passes the verifier alone.
//! * `xwan_tc_steer` (TC ingress, LAN interfaces): redirect packets XDP tagged for an L3
//!   tunnel (`xwan_common::TUNNEL_TAG_PREFIX`); native `XDP_REDIRECT` into an L3 device
//!   delivers nothing, `bpf_redirect` from TC does. Mark the packets XDP tagged for the kernel
//!   path (`netfilter` mode): the kernel forwards them by that mark.
//! * `xwan_tc_return` (TC ingress, links): learn return routes.
//! * `xwan_xdp_baseline`: parse only, the benchmark's reference cost.
//! * `xwan_xdp_pass`: lets a veth peer accept redirected frames.
//! * `xwan_trace_xmit`, `xwan_trace_redirect_err` (tracepoints `xdp:xdp_devmap_xmit`,
//!   `xdp:xdp_redirect_err`): count the redirects the egress did not take as dropped, not
//!   steered ([`egress`]).
#![no_std]
#![no_main]

mod classify;
mod egress;
mod lan;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET,
    bindings::{
        TC_ACT_OK,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect, bpf_skb_load_bytes_relative},
    macros::{classifier, tracepoint, xdp},
    programs::{TcContext, TracePointContext, XdpContext},
};
use xwan_common::{
    FLOW_REFRESH_NS, FlowKey, GW_KIND_KERNEL, JUMP_DECIDE, LINK_L2, MarkLayout, ReturnValue,
    kernel_tag_gateway, reason, tunnel_tag_ifindex,
};

use crate::{
    maps::*,
    parse::{load, parse_eth, parse_ip},
};

#[xdp]
pub fn xwan_xdp_lan(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let why = match lan::parse_stage(&ctx) {
        Err(reason::DROP_FORGED_TAG) => {
            count(&XWAN_REASON_CNT, reason::DROP_FORGED_TAG, len);
            return XDP_DROP;
        }
        Ok(p) => {
            let (action, why) = lan::first_stage_hit(&ctx, &p, len);
            if action != lan::MISS {
                count(&XWAN_REASON_CNT, why, len);
                return action;
            }
            if lan::hand_over(&p) {
                // SAFETY: jumps to our own second stage; returns only if its slot is empty.
                unsafe { XWAN_JUMP.tail_call(&ctx, JUMP_DECIDE) };
            }
            reason::PASS_NOT_CONFIGURED
        }
        Err(why) => why,
    };
    count(&XWAN_REASON_CNT, why, len);
    XDP_PASS
}

#[xdp]
#[inline(always)] // into the program's entry: a BPF-to-BPF call costs 6.1's verifier pruning
pub fn xwan_xdp_decide(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, why) = lan::decide(&ctx, len);
    count(&XWAN_REASON_CNT, why, len);
    action
}

#[classifier]
pub fn xwan_tc_steer(ctx: TcContext) -> i32 {
    // TC ingress sees the frame from its Ethernet header: the MACs are at 0 and 6.
    let Some(macs) = load::<[u8; 12]>(ctx.data(), ctx.data_end(), 0) else {
        return TC_ACT_OK;
    };
    let (mut dst, mut src) = ([0u8; 6], [0u8; 6]);
    dst.copy_from_slice(&macs[..6]);
    src.copy_from_slice(&macs[6..]);
    if let Some(ifindex) = tunnel_tag_ifindex(src) {
        // SAFETY: plain helper call; returns TC_ACT_REDIRECT or TC_ACT_SHOT.
        return unsafe { bpf_redirect(ifindex, 0) as i32 };
    }
    if let Some(gw) = kernel_tag_gateway(dst) {
        to_kernel(&ctx, gw);
    }
    TC_ACT_OK
}

/// The kernel path's hand-off (spec: `xwan_tc_steer`): the interface's MAC back as the
/// destination, host-bound, and the gateway's mark.
#[inline(always)]
fn to_kernel(ctx: &TcContext, gw: u16) {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = lan::iface(ifindex) else {
        return;
    };
    if ctx.store(0, &iface.mac, 0).is_err() {
        return;
    }
    // The tag made the frame look multicast to the kernel's receive path; it is ours.
    if ctx.change_type(PACKET_HOST).is_err() {
        return;
    }
    let Some(layout) = XWAN_CONFIG
        .get(0)
        .and_then(|c| MarkLayout::unpacked(c.marks))
    else {
        return;
    };
    let mark = match XWAN_GATEWAYS.get(gw as u32) {
        Some(g) if g.kind == GW_KIND_KERNEL => layout.mark(gw),
        _ => 0,
    };
    // SAFETY: reading a field of the context.
    let old = unsafe { (*ctx.skb.skb).mark };
    ctx.set_mark((old & !layout.mask()) | mark);
}

/// `skb->pkt_type` of a frame addressed to this host.
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn xwan_tc_return(ctx: TcContext) -> i32 {
    learn_return(&ctx);
    TC_ACT_OK
}

/// Bytes `learn_return` needs linear: Ethernet with VLAN tags, an IPv6 header with extension
/// headers (or IPv4 with options) and the ports.
const RETURN_PULL_LEN: u32 = 192;

/// Where the IP header starts in what tc sees of a packet arriving on an L3 link: at 0, but
/// behind a link header after xfrm decapsulation (VTI, xfrm interface), where the kernel
/// rebuilt the underlay's header in front of the inner packet (14 bytes over Ethernet) and tc
/// ingress shows it. Found by comparing with the network header's first bytes.
#[inline(always)]
fn l3_offset(ctx: &TcContext, start: usize, end: usize) -> Option<usize> {
    let mut net = [0u8; 4];
    // SAFETY: reads 4 bytes into a stack buffer of 4 bytes.
    let r = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            0,
            net.as_mut_ptr() as *mut _,
            4,
            BPF_HDR_START_NET,
        )
    };
    if r != 0 {
        return None;
    }
    [0, ETH_HLEN]
        .into_iter()
        .find(|&off| load::<[u8; 4]>(start, end, off) == Some(net))
}

/// An Ethernet header's length: the underlay header xfrm decapsulation leaves in front.
const ETH_HLEN: usize = 14;

#[inline(always)]
fn learn_return(ctx: &TcContext) {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain data owned by the map.
    let Some(link) = (unsafe { XWAN_LINKS.get(ifindex) }) else {
        return;
    };
    // A packet decrypted from ESP (a VTI's ingress) is usually not linear: the headers the
    // parser reads may lie in fragments, beyond `data_end`. Pull them into the linear area.
    let want = ctx.len().min(RETURN_PULL_LEN);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let parsed = if link.flags & LINK_L2 != 0 {
        parse_eth(start, end)
    } else {
        let Some(l3) = l3_offset(ctx, start, end) else {
            return;
        };
        parse_ip(start, end, l3)
    };
    let Ok(p) = parsed else {
        return;
    };
    let key = FlowKey {
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        proto: p.proto,
        family: if p.v6 { 6 } else { 4 },
        _pad: 0,
        ifindex: 0,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: plain data owned by the map.
    if let Some(r) = unsafe { XWAN_RETURN.get(key) }
        && r.gateway == link.return_gateway
        && now.saturating_sub(r.last_seen_ns) < FLOW_REFRESH_NS
    {
        return;
    }
    let value = ReturnValue {
        last_seen_ns: now,
        gateway: link.return_gateway,
        _pad: 0,
    };
    let _ = XWAN_RETURN.insert(key, value, 0);
}

#[tracepoint]
pub fn xwan_trace_xmit(ctx: TracePointContext) -> u32 {
    egress::devmap_xmit(&ctx);
    0
}

#[tracepoint]
pub fn xwan_trace_redirect_err(ctx: TracePointContext) -> u32 {
    egress::redirect_err(&ctx);
    0
}

#[xdp]
pub fn xwan_xdp_baseline(ctx: XdpContext) -> u32 {
    // Parse exactly as xwan_xdp_lan does and make the verdict depend on every parsed field,
    // so the compiler cannot drop the work being measured.
    match parse_eth(ctx.data(), ctx.data_end()) {
        Ok(p) => {
            let x = p.src[0]
                ^ p.src[3]
                ^ p.dst[0]
                ^ p.dst[3]
                ^ ((p.sport as u32) << 16)
                ^ p.dport as u32
                ^ ((p.proto as u32) << 8)
                ^ p.dscp as u32;
            if x == 0x5a5a_5a5a { XDP_DROP } else { XDP_PASS }
        }
        Err(_) => XDP_PASS,
    }
}

#[xdp]
pub fn xwan_xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
