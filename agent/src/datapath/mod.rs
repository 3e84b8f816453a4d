//! The data plane as seen from user space: load the eBPF object, pin and adopt its maps,
//! attach its programs to interfaces, program the maps from a [`Plan`], read counters, and run
//! programs on test frames.
//!
//! # What the data plane does
//!
//! `xwan_xdp_lan` (XDP on each LAN interface) classifies transit packets against the ordered
//! rules with bit-vector lookups ([`compile`] explains the encoding), picks a gateway from the
//! rule's router table (flow table for stickiness) and either hands the packet to the kernel,
//! drops it, redirects it to an Ethernet next hop through a DEVMAP, or tags it for
//! `xwan_tc_steer` (TC ingress on the same interface; the tunnel in the source MAC, see
//! `xwan_common::TUNNEL_TAG_PREFIX`), which `bpf_redirect`s it into an L3 tunnel. `xwan_tc_return` (TC ingress on links) learns return routes. The exact semantics
//! live in `xwan_common::model`; layouts in `xwan_common::maps`.
//!
//! # Lifecycle
//!
//! 1. [`Datapath::load`] makes sure the pin directory is on a bpffs ([`ensure_bpffs`]),
//!    creates or **adopts** the pinned maps (a restarted agent keeps flows, return routes,
//!    counters and the committed ruleset), checks adopted maps still have this build's layout,
//!    loads (verifies) all eight programs, and points `xwan_xdp_lan`'s tail call at its second
//!    stage `xwan_xdp_decide` (`XWAN_JUMP`).
//! 2. [`Datapath::attach_lan`], [`Datapath::attach_link`], [`Datapath::attach_pass`] attach
//!    them, falling back from native to generic XDP and from tcx to clsact; the
//!    [`AttachReport`] says which mode is in use. bpf_links (XDP, tcx) are pinned under
//!    `<pin dir>/`[`LINKS_DIR`], clsact filters recorded there. What a previous agent left
//!    attached is **adopted**: the newly loaded program replaces the running one in place
//!    (`BPF_LINK_UPDATE`, or a cls_bpf filter replace), so forwarding never stops.
//!    [`Datapath::watch_egress`] attaches the tracepoint programs that count a redirect the
//!    egress did not take as dropped, not steered, where the kernel allows ([`EgressWatch`]).
//! 3. [`Datapath::apply`] commits a whole plan; [`Datapath::set_router`] and
//!    [`Datapath::set_gateway_ready`] change one router table or one gateway's readiness;
//!    [`Datapath::router_table`] reads one back.
//! 4. [`Datapath::rule_counters`] & co. read the per-CPU counters.
//! 5. Dropping the datapath (the agent exits) detaches nothing: the data plane keeps
//!    forwarding with its maps until the next agent adopts both.
//!    [`Datapath::detach_unclaimed`] detaches what a previous agent attached and this one did
//!    not adopt; [`Datapath::detach_interface`] and [`Datapath::detach_all`] (`xwan stop`)
//!    detach, unpin and remove the qdiscs xwan added (`detach_all` the tracepoint links too). Only XDP attached through netlink
//!    (kernels before 5.9, which have no XDP bpf_link) is still detached on drop.
//!
//! # Commit protocol (double buffering)
//!
//! A packet must see either the old ruleset or the new one, never a mix, and never a
//! half-written router table:
//!
//! * **Ruleset.** Every classifier map is split by generation (`epoch & 1`, epoch in
//!   `XWAN_RULESET[0]`). `apply` compiles the plan, writes generation `(epoch + 1) & 1` (the one
//!   no packet reads), then stores `epoch + 1` (one aligned `u32` store: the atomic flip), waits
//!   for an RCU grace period (every program that may have read the old epoch has finished) and
//!   only then deletes the old generation's LPM and interface-bitmap entries (arrays are simply
//!   overwritten next time). Flow entries carry the epoch, so flows are re-classified.
//! * **Router tables.** Each router has two slot tables and a version in `XWAN_RTR_VER`; the
//!   inactive table is written, then the version bumped. Before an inactive table is written
//!   again, a grace period since that router's last flip is awaited; a background thread
//!   (`grace`) starts one at every flip, so a verdict normally finds it over and never waits.
//! * **Order** (make before break): interfaces, local addresses, links, config and gateways
//!   being added or changed → router tables → ruleset flip → grace period → old generation and
//!   removed gateways deleted.
//!
//! Everything is validated and compiled before the first write, so a plan that does not fit
//! changes nothing.
//!
//! # What a reader may change
//!
//! Map names, layouts and sizes belong to `xwan_common::maps` (change them there, never here).
//! The classifier encoding in [`compile`] must stay in lock-step with
//! `ebpf-prog/src/classify.rs`; its property tests compare it with the reference model. The
//! order of writes in [`Datapath::apply`] is what makes commits hitless: keep it.

mod attach;
mod bench;
mod bpffs;
mod commit;
pub mod compile;
mod counters;
mod egress;
pub mod features;
mod grace;
mod loader;
mod moved;
mod object;
mod offload;
mod sys;
mod testrun;

use std::fmt::Write as _;
use std::path::PathBuf;

pub use attach::{
    AttachPolicy, AttachReport, CLSACT_HANDLE, CLSACT_PRIORITY, LINKS_DIR, TcAttachMode, TcPolicy,
    XdpAttachMode, XdpPolicy,
};
pub use bench::bench_counter_reads;
pub use bpffs::{BPF_FS_MAGIC, TestBpffs, ensure_bpffs, is_bpffs};
pub use commit::Updated;
pub use compile::{CompileError, Image, compile, slot_table};
pub use counters::{CounterReader, ReasonCounter};
pub use egress::{EgressWatch, TRACE_DIR};
pub use loader::{Datapath, PROGRAMS};
pub use moved::MovedRing;
pub use object::{EBPF_OBJECT, EBPF_OBJECT_PATH};
pub use offload::{Flag, FlowOffload};
pub use testrun::{SkbRun, XdpRun, skb_test_run, skb_test_runnable, xdp_live, xdp_test_run};

/// The programs' clock now: `bpf_ktime_get_coarse_ns` reads `CLOCK_MONOTONIC` at tick
/// resolution, which `CLOCK_MONOTONIC_COARSE` gives user space (flow entries' ages).
pub fn monotonic_coarse_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Default pin directory of the production agent.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xwan";

/// What went wrong in the data plane, with the object concerned and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "cannot prepare the bpf filesystem at {}: {error} (xwan needs root / CAP_SYS_ADMIN to mount bpffs)",
        path.display()
    )]
    Bpffs {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("loading the eBPF object (maps pinned under {}) failed: {}", pin_dir.display(), chain(error))]
    Object {
        pin_dir: PathBuf,
        error: Box<aya::EbpfError>,
    },

    #[error(
        "pinned map {map} at {} does not match this build ({detail}); it was left by another \
         xwan version: remove it (rm {}) and restart xwan (this drops the flows it holds)",
        path.display(), path.display()
    )]
    StaleMap {
        map: &'static str,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "the eBPF object has no {what} named {name}: the agent and ebpf-prog are out of sync, rebuild both"
    )]
    Missing { what: &'static str, name: String },

    #[error("loading program {program} failed: {}", chain(error))]
    ProgramLoad {
        program: &'static str,
        error: Box<aya::programs::ProgramError>,
    },

    #[error("{op} in map {map} failed: {}", chain(error))]
    Map {
        map: &'static str,
        op: String,
        error: Box<aya::maps::MapError>,
    },

    #[error(
        "interface '{ifname}' not found (check the name; xwan sees the interfaces of its own network namespace)"
    )]
    InterfaceNotFound { ifname: String },

    #[error("attaching {program} to interface '{ifname}' failed: {detail}")]
    Attach {
        program: &'static str,
        ifname: String,
        detail: String,
    },

    #[error("detaching from interface '{ifname}' failed: {detail}")]
    Detach { ifname: String, detail: String },

    #[error("the plan does not fit the data plane: {0}")]
    Plan(xwan_common::plan::PlanError),

    #[error("compiling the ruleset failed: {0}")]
    Compile(CompileError),

    #[error("{what} failed: {error}")]
    Sys { what: String, error: std::io::Error },
}

impl From<xwan_common::plan::PlanError> for DatapathError {
    fn from(e: xwan_common::plan::PlanError) -> Self {
        DatapathError::Plan(e)
    }
}

impl From<CompileError> for DatapathError {
    fn from(e: CompileError) -> Self {
        DatapathError::Compile(e)
    }
}

/// `e` and its sources, joined by ": " (a source whose text is already included is skipped).
/// Our errors carry no `source()` so that the whole story is in one message, once.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            let _ = write!(s, ": {m}");
        }
        cur = c.source();
    }
    s
}
