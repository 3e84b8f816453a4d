//! What this kernel's BPF offers, asked of the kernel with throw-away programs of a few
//! instructions rather than guessed from its version (a kernel build can drop a helper, as the
//! development kernel did with `bpf_xdp_adjust_meta` in December 2026). Nothing is attached
//! and nothing outlives a call: each probe's program is closed before it returns.
//!
//! xwan itself needs none of the optional features: the tunnel hand-off is in the source MAC
//! (`xwan_common::TUNNEL_TAG_PREFIX`), TC falls back from tcx to clsact, and only the load
//! test uses live frames. `xwan doctor` reports them so that an operator sees what the kernel
//! offers and which fallback is in use.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use super::{attach::kernel_has_tcx, sys, testrun};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `bpf_xdp_adjust_meta`'s helper number.
const HELPER_XDP_ADJUST_META: i32 = 54;
const XDP_PASS: i32 = 2;
const LICENSE: &[u8] = b"GPL\0";

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r{dst} = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
const fn mov(dst: u8, imm: i32) -> Insn {
    Insn {
        code: 0xb7,
        regs: dst,
        off: 0,
        imm,
    }
}

/// `call helper` (BPF_JMP | BPF_CALL).
const fn call(helper: i32) -> Insn {
    Insn {
        code: 0x85,
        regs: 0,
        off: 0,
        imm: helper,
    }
}

/// `exit` (BPF_JMP | BPF_EXIT).
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};

#[repr(C, align(8))]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u8; sys::ATTR_SIZE - 72],
}

/// Loads (verifies) `insns` as a program of `prog_type` named `name`.
fn load(prog_type: u32, name: &str, insns: &[Insn]) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
        _rest: [0; sys::ATTR_SIZE - 72],
    };
    // SAFETY: a zero-padded BPF_PROG_LOAD attribute whose pointers refer to live buffers of
    // the stated sizes for the duration of the call.
    let fd = unsafe { sys::sys_bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the verifier lets an XDP program call `bpf_xdp_adjust_meta` (XDP metadata). The
/// error the kernel gave when it does not.
pub fn xdp_metadata() -> Result<(), io::Error> {
    // r1 is the context already; r2 = -8 (reserve 8 bytes); call; return XDP_PASS.
    let insns = [
        mov(2, -8),
        call(HELPER_XDP_ADJUST_META),
        mov(0, XDP_PASS),
        EXIT,
    ];
    load(BPF_PROG_TYPE_XDP, "xwan_probe_meta", &insns).map(drop)
}

/// Whether `BPF_PROG_TEST_RUN` runs XDP programs with live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`,
/// Linux 5.18+; refused with `EPERM` by some builds), which the load test's fastest traffic
/// source needs. Runs an `XDP_DROP` program once on loopback: nothing is sent.
pub fn xdp_live_frames() -> Result<(), io::Error> {
    const XDP_DROP: i32 = 1;
    let prog = load(
        BPF_PROG_TYPE_XDP,
        "xwan_probe_live",
        &[mov(0, XDP_DROP), EXIT],
    )?;
    testrun::xdp_live(prog.as_fd(), &[0u8; 64], 1, 1, 0)
}

/// Whether the kernel has tcx (Linux 6.6+); xwan falls back to a clsact qdisc otherwise.
pub fn tcx() -> Result<bool, io::Error> {
    let prog = load(BPF_PROG_TYPE_SCHED_CLS, "xwan_probe_tc", &[mov(0, 0), EXIT])?;
    Ok(kernel_has_tcx(prog.as_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!(size_of::<ProgLoadAttr>(), sys::ATTR_SIZE);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
    }

    /// The probes answer on any kernel xwan supports (root only): a trivial program always
    /// loads, so an error here means the probe itself is broken.
    #[test]
    fn probes_answer() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        load(
            BPF_PROG_TYPE_XDP,
            "xwan_probe_ok",
            &[mov(0, XDP_PASS), EXIT],
        )
        .expect("a two-instruction XDP program loads everywhere");
        tcx().expect("a two-instruction TC program loads everywhere");
        // Either answer is right; a refusal must be the verifier's (EINVAL), not a bad attr.
        if let Err(e) = xdp_metadata() {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        }
        if let Err(e) = xdp_live_frames() {
            assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP)
                ),
                "{e}"
            );
        }
    }
}
