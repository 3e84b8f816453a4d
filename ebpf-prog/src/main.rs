//! xwan's kernel programs. What they must do is specified in `xwan_common::model`; the
//! layouts they share with user space are in `xwan_common::maps`.
//!
//! * `xwan_xdp_lan` (XDP, LAN interfaces): parse, then tail-call `xwan_xdp_decide` to
//!   classify and steer ([`lan`]). Two programs so that each passes the verifier alone.
//! * `xwan_tc_steer` (TC ingress, LAN interfaces): redirect packets XDP tagged for an L3
//!   tunnel; native `XDP_REDIRECT` into an L3 device delivers nothing, `bpf_redirect` from TC
//!   does.
//! * `xwan_tc_return` (TC ingress, links): learn return routes.
//! * `xwan_xdp_baseline`: parse only, the benchmark's reference cost.
//! * `xwan_xdp_pass`: lets a veth peer accept redirected frames.
#![no_std]
#![no_main]

mod classify;
mod lan;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{
        TC_ACT_OK,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use xwan_common::{
    FLOW_REFRESH_NS, FlowKey, JUMP_DECIDE, LINK_L2, ReturnValue, XDP_META_MAGIC, XdpMeta, reason,
};

use crate::{
    maps::*,
    parse::{parse_eth, parse_ip},
};

#[xdp]
pub fn xwan_xdp_lan(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let why = match lan::parse_stage(&ctx) {
        Ok(()) => {
            // SAFETY: jumps to our own second stage; returns only if its slot is empty.
            unsafe { XWAN_JUMP.tail_call(&ctx, JUMP_DECIDE) };
            reason::PASS_NOT_CONFIGURED
        }
        Err(why) => why,
    };
    count(&XWAN_REASON_CNT, why, len);
    XDP_PASS
}

#[xdp]
pub fn xwan_xdp_decide(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, why) = lan::decide(&ctx, len);
    count(&XWAN_REASON_CNT, why, len);
    action
}

#[classifier]
pub fn xwan_tc_steer(ctx: TcContext) -> i32 {
    // SAFETY: reading fields of the context the kernel hands us.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + core::mem::size_of::<XdpMeta>() > data {
        return TC_ACT_OK;
    }
    // SAFETY: the metadata area is bounds-checked above.
    let m = unsafe { (meta as *const XdpMeta).read_unaligned() };
    if m.magic != XDP_META_MAGIC {
        return TC_ACT_OK;
    }
    // SAFETY: plain helper call; returns TC_ACT_REDIRECT or TC_ACT_SHOT.
    unsafe { bpf_redirect(m.ifindex, 0) as i32 }
}

#[classifier]
pub fn xwan_tc_return(ctx: TcContext) -> i32 {
    learn_return(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn learn_return(ctx: &TcContext) {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain data owned by the map.
    let Some(link) = (unsafe { XWAN_LINKS.get(ifindex) }) else {
        return;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    let parsed = if link.flags & LINK_L2 != 0 {
        parse_eth(start, end)
    } else {
        parse_ip(start, end, 0)
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
