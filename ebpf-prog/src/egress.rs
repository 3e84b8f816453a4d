//! What became of a redirect to an Ethernet gateway: `xwan_xdp_decide` remembers each one
//! ([`remember`]); the kernel's XDP tracepoints later say which failed, and
//! `xwan_trace_xmit` / `xwan_trace_redirect_err` move those from their `steer_*` reason and
//! gateway counter to `drop_xmit` / `drop_redirect` and the gateway's failures
//! (`xwan_common::EgressLog` explains the bookkeeping).
//!
//! Both tracepoints fire for every XDP program on the host, so an event counts only when it
//! comes from one of xwan's LAN interfaces and matches a record this CPU wrote.

use aya_ebpf::{EbpfContext, programs::TracePointContext};
use xwan_common::{EGRESS_LOG_SIZE, EgressLog, EgressRecord, reason, tracepoint};

use crate::{lan::iface, maps::*};

/// Records a redirect of `len` bytes from LAN interface `from` to gateway `gw` on interface
/// `to`, counted under reason `why`.
#[inline(always)]
pub fn remember(from: u32, to: u32, gw: u32, why: u32, len: u64) {
    let Some(log) = XWAN_EGRESS_LOG.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's log; only programs on this CPU, one at a time, touch it. Field by
    // field: the decision program has no stack to spare for a whole record.
    unsafe {
        let n = (*log).next;
        (*log).next = n.wrapping_add(1);
        let r = (&raw mut (*log).records)
            .cast::<EgressRecord>()
            .add((n % EGRESS_LOG_SIZE) as usize);
        (*r).from = from;
        (*r).ifindex = to;
        (*r).bytes = len as u32;
        (*r).gateway = gw as u16;
        (*r).reason = why as u8;
    }
}

/// A 4-byte field of the tracepoint record at `offset` (checked against tracefs by the agent).
#[inline(always)]
fn field(ctx: &TracePointContext, offset: usize) -> i32 {
    // SAFETY: a constant offset inside the record; the kernel checks it at attach.
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<i32>() }
}

/// Moves the packet of `r` from its `steer_*` reason and gateway counter to reason `why` and
/// the gateway's failures, and frees the record.
#[inline(always)]
fn fail(r: &mut EgressRecord, why: u32) {
    let len = r.bytes as u64;
    uncount(&XWAN_REASON_CNT, r.reason as u32, len);
    uncount(&XWAN_GW_CNT, r.gateway as u32, len);
    count(&XWAN_REASON_CNT, why, len);
    count(&XWAN_GW_FAIL, r.gateway as u32, len);
    r.ifindex = 0;
}

/// `xdp:xdp_devmap_xmit`: the bulk queue of `to` (filled from `from`) went to its driver,
/// which took `sent` frames and dropped the last `drops`. Its frames are the newest records
/// for that pair: the newest `drops` failed; all of them are freed.
#[inline(always)]
pub fn devmap_xmit(ctx: &TracePointContext) {
    let from = field(ctx, tracepoint::XMIT_FROM) as u32;
    let to = field(ctx, tracepoint::XMIT_TO) as u32;
    let drops = field(ctx, tracepoint::XMIT_DROPS).max(0) as u32;
    let queued = drops + field(ctx, tracepoint::XMIT_SENT).max(0) as u32;
    if queued == 0 || iface(from).is_none() {
        return;
    }
    let Some(log) = XWAN_EGRESS_LOG.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's log (see `remember`).
    let log: &mut EgressLog = unsafe { &mut *log };
    let next = log.next;
    let found = &raw mut log.found;
    // SAFETY: a field of this CPU's log. Volatile: see `EgressLog::found`.
    unsafe { found.write_volatile(0) };
    for back in 1..=EGRESS_LOG_SIZE {
        // SAFETY: as above.
        let n = unsafe { found.read_volatile() };
        if n >= queued {
            break;
        }
        let i = (next.wrapping_sub(back) % EGRESS_LOG_SIZE) as usize;
        let Some(r) = log.records.get_mut(i) else {
            break;
        };
        if r.ifindex != to || r.from != from {
            continue;
        }
        if n < drops {
            fail(r, reason::DROP_XMIT);
        } else {
            r.ifindex = 0;
        }
        // SAFETY: as above.
        unsafe { found.write_volatile(n + 1) };
    }
}

/// `xdp:xdp_redirect_err`: the redirect the program just returned failed. It is this CPU's
/// newest record, if that one is for the same interfaces and gateway.
#[inline(always)]
pub fn redirect_err(ctx: &TracePointContext) {
    let from = field(ctx, tracepoint::ERR_FROM) as u32;
    let to = field(ctx, tracepoint::ERR_TO) as u32;
    let gw = field(ctx, tracepoint::ERR_INDEX) as u32;
    if iface(from).is_none() {
        return;
    }
    let Some(log) = XWAN_EGRESS_LOG.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's log (see `remember`).
    let log: &mut EgressLog = unsafe { &mut *log };
    let i = (log.next.wrapping_sub(1) % EGRESS_LOG_SIZE) as usize;
    if let Some(r) = log.records.get_mut(i)
        && r.ifindex == to
        && r.from == from
        && r.gateway as u32 == gw
    {
        fail(r, reason::DROP_REDIRECT);
    }
}
