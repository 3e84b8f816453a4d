//! Running a loaded program on a frame without any interface (`BPF_PROG_TEST_RUN`): how the
//! tests compare the kernel programs with the reference model packet by packet.
//!
//! The ingress ifindex given must name a real interface of the caller's network namespace
//! (1 = `lo` always works); it is what the program sees as `ingress_ifindex` / `skb->ifindex`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::sys::{ATTR_SIZE, BPF_PROG_TEST_RUN, sys_bpf};
use super::{Datapath, DatapathError};

/// The `test` member of `union bpf_attr`, zero-padded to [`ATTR_SIZE`].
#[repr(C, align(8))]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: [u8; ATTR_SIZE - 76],
}

/// `struct xdp_md`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The beginning of `struct __sk_buff`, up to and including `ifindex` (the kernel zero-fills
/// the rest; only `mark`, `priority` and `ifindex` of this part may be non-zero).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct SkBuffHead {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

/// Where `mark` lies in `struct __sk_buff`.
const MARK_OFFSET: usize = std::mem::offset_of!(SkBuffHead, mark);

/// Headroom for what a program may add in front of a frame (metadata, encapsulation).
const OUT_SLACK: usize = 256;

/// What an XDP program did to one frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct XdpRun {
    /// `XDP_ABORTED` 0, `XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT` 4.
    pub action: u32,
    /// XDP metadata the program left in front of the frame (empty when none).
    pub meta: Vec<u8>,
    /// The frame after the program.
    pub frame: Vec<u8>,
    /// Average run time per repetition.
    pub duration_ns: u32,
}

/// What a TC program did to one frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SkbRun {
    /// `TC_ACT_OK` 0, `TC_ACT_SHOT` 2, `TC_ACT_REDIRECT` 7, ...
    pub retval: i32,
    /// The frame after the program.
    pub frame: Vec<u8>,
    /// `skb->mark` after the program (0 before it).
    pub mark: u32,
    /// Average run time per repetition.
    pub duration_ns: u32,
}

/// Whether a test run is in live-frames mode (XDP only), and its batch size (0: the kernel's).
#[derive(Clone, Copy)]
enum Live {
    No,
    Batch(u32),
}

fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    out: &mut [u8],
    ctx_in: &[u8],
    ctx_out: &mut [u8],
    repeat: u32,
    live: Live,
) -> io::Result<TestRunAttr> {
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    let (flags, batch_size) = match live {
        Live::No => (0, 0),
        Live::Batch(n) => (BPF_F_TEST_XDP_LIVE_FRAMES, n),
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: if out.is_empty() {
            0
        } else {
            out.as_mut_ptr() as u64
        },
        repeat: repeat.max(1),
        duration: 0,
        ctx_size_in: ctx_in.len() as u32,
        ctx_size_out: ctx_out.len() as u32,
        // NULL, not a dangling pointer, when there is no context.
        ctx_in: if ctx_in.is_empty() {
            0
        } else {
            ctx_in.as_ptr() as u64
        },
        ctx_out: if ctx_out.is_empty() {
            0
        } else {
            ctx_out.as_mut_ptr() as u64
        },
        flags,
        cpu: 0,
        batch_size,
        _pad: [0; ATTR_SIZE - 76],
    };
    // SAFETY: every pointer refers to a live buffer of the stated size for the duration of
    // the call; the kernel writes at most `data_size_out` / `ctx_size_out` bytes.
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr)
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a #[repr(C)] struct of u32 without padding.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

fn as_bytes_mut<T: Copy>(v: &mut T) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid value.
    unsafe { std::slice::from_raw_parts_mut(v as *mut T as *mut u8, size_of::<T>()) }
}

/// Runs the XDP program `prog` `repeat` times (at least once) on `frame` as if it arrived on
/// interface `ingress_ifindex` (which must exist in the caller's network namespace).
pub fn xdp_test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> io::Result<XdpRun> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..XdpMd::default()
    };
    let mut ctx_out = XdpMd::default();
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let attr = test_run(
        prog,
        frame,
        &mut out,
        as_bytes(&ctx),
        as_bytes_mut(&mut ctx_out),
        repeat,
        Live::No,
    )?;
    let size = (attr.data_size_out as usize).min(out.len());
    let meta = (ctx_out.data as usize).min(size);
    Ok(XdpRun {
        action: attr.retval,
        meta: out[..meta].to_vec(),
        frame: out[meta..size].to_vec(),
        duration_ns: attr.duration,
    })
}

/// Runs XDP program `prog` `repeat` times in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`,
/// Linux 5.18+): each run gets a fresh copy of `frame` (from a page pool) arriving on
/// `ingress_ifindex` (calling thread's namespace), and what it returns is carried out for real
/// (`XDP_TX` sends the frame out of that interface), flushed every `batch_size` runs (0: the
/// kernel's default). A signal interrupts a long call (`Interrupted`). The probe of
/// [`super::features`] and the load test's fastest traffic source.
pub fn xdp_live(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..XdpMd::default()
    };
    // Live frames return no data and no context.
    test_run(
        prog,
        frame,
        &mut [],
        as_bytes(&ctx),
        &mut [],
        repeat,
        Live::Batch(batch_size),
    )
    .map(drop)
}

/// Whether [`skb_test_run`] accepts `frame`: the kernel refuses (EINVAL) a frame with nothing
/// after its Ethernet header, and an IPv4 / IPv6 EtherType without the 20 / 40 bytes of an IP
/// header behind it.
pub fn skb_test_runnable(frame: &[u8]) -> bool {
    let need = match frame.get(12..14) {
        Some([0x08, 0x00]) => 14 + 20,
        Some([0x86, 0xdd]) => 14 + 40,
        _ => 15,
    };
    frame.len() >= need
}

/// Runs the TC (`sched_cls`) program `prog` on `frame` (starting with its Ethernet header) as
/// if it arrived on interface `ifindex` (which must exist in the caller's network namespace;
/// 1 = the namespace's loopback).
pub fn skb_test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> io::Result<SkbRun> {
    let ctx = SkBuffHead {
        ifindex,
        ..SkBuffHead::default()
    };
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    // The kernel writes back the whole `struct __sk_buff` (ENOSPC into less): 192 bytes
    // today, room for it to grow.
    let mut after = [0u8; 512];
    let attr = test_run(
        prog,
        frame,
        &mut out,
        as_bytes(&ctx),
        &mut after,
        repeat,
        Live::No,
    )?;
    let size = (attr.data_size_out as usize).min(out.len());
    out.truncate(size);
    Ok(SkbRun {
        retval: attr.retval as i32,
        frame: out,
        mark: u32::from_ne_bytes(
            after[MARK_OFFSET..MARK_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        ),
        duration_ns: attr.duration,
    })
}

impl Datapath {
    /// [`xdp_test_run`] on the loaded XDP program `program`.
    pub fn xdp_test_run(
        &self,
        program: &str,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<XdpRun, DatapathError> {
        xdp_test_run(self.program_fd(program)?, frame, ingress_ifindex, repeat).map_err(|error| {
            DatapathError::Sys {
                what: format!(
                    "BPF_PROG_TEST_RUN of {program} (ingress ifindex {ingress_ifindex}, {} bytes)",
                    frame.len()
                ),
                error,
            }
        })
    }

    /// [`skb_test_run`] on the loaded TC program `program`.
    pub fn skb_test_run(
        &self,
        program: &str,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<SkbRun, DatapathError> {
        skb_test_run(self.program_fd(program)?, frame, ifindex, repeat).map_err(|error| {
            DatapathError::Sys {
                what: format!(
                    "BPF_PROG_TEST_RUN of {program} (ifindex {ifindex}, {} bytes)",
                    frame.len()
                ),
                error,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<TestRunAttr>(), ATTR_SIZE);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<XdpMd>(), 24);
        assert_eq!(std::mem::offset_of!(SkBuffHead, ifindex), 40);
    }
}

/// Privileged checks against the real kernel (root only; skipped otherwise). Each runs in a
/// thread of its own inside a fresh network namespace, with a private bpffs.
#[cfg(test)]
mod privileged {
    use std::process::Command;

    use std::net::IpAddr;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use xwan_common::model::{Model, Parsed, XdpAction};
    use xwan_common::plan::{
        Action, Gateway, GatewayKind, Iface, Plan, PortRange, RouterTable, Rule,
    };
    use xwan_common::{DST4_MAP, IFBM_MAP, PROG_TC_STEER, PROG_XDP_LAN, SRC4_MAP, reason};

    use super::super::attach::kernel_has_tcx;
    use super::super::{
        AttachPolicy, Datapath, TcAttachMode, TcPolicy, TestBpffs, XdpAttachMode, XdpPolicy,
    };
    use super::skb_test_runnable;

    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    const TC_ACT_REDIRECT: i32 = 7;

    fn root() -> bool {
        // SAFETY: plain libc call.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs `f` in a new thread placed in a new, empty network namespace (only `lo`, down).
    fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: affects only this thread.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap()
    }

    fn load(fs: &TestBpffs) -> Datapath {
        match Datapath::load(fs.path()) {
            Ok(dp) => dp,
            Err(e) => {
                let msg = e.to_string();
                let lines: Vec<&str> = msg.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                panic!(
                    "Datapath::load failed ({} lines); last lines:\n{tail}",
                    lines.len()
                );
            }
        }
    }

    /// Ethernet (to `dmac`) + IPv4 10.0.0.1 → 10.0.0.2 + UDP `sport` → `dport` + 8 bytes.
    fn udp4(dmac: [u8; 6], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dmac);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let payload = [0u8; 8];
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let sum = xwan_common::csum::ipv4_header_sum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&payload);
        f
    }

    fn block_udp(port: u16) -> Plan {
        let mut rule = Rule::any(Action::Block);
        rule.criteria.protocols = vec![17];
        rule.criteria.dst_ports = vec![PortRange::single(port)];
        rule.criteria.ifaces = vec![1];
        rule.counter = 7;
        Plan {
            ifaces: vec![Iface {
                ifindex: 1,
                mac: [0; 6],
            }],
            rules: vec![rule],
            ..Plan::default()
        }
    }

    fn model_action(a: XdpAction) -> u32 {
        match a {
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Redirect => 4,
        }
    }

    #[test]
    fn load_apply_and_run_xdp_lan() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        in_netns(|| {
            let fs = TestBpffs::new().unwrap();
            let mut dp = load(&fs);
            assert!(dp.adopted_maps().is_empty());
            assert_eq!(dp.epoch().unwrap(), 0);
            let plan = block_udp(53);
            let t = std::time::Instant::now();
            assert_eq!(dp.apply(&plan).unwrap(), 1);
            eprintln!("first apply took {:?}", t.elapsed());
            let model = Model::new(plan.clone(), 1);

            for (port, want, why) in [
                (53, XDP_DROP, reason::DROP_RULE),
                (54, XDP_PASS, reason::PASS_NO_MATCH),
            ] {
                let frame = udp4([0; 6], 1234, port);
                let run = dp.xdp_test_run(PROG_XDP_LAN, &frame, 1, 1).unwrap();
                assert_eq!(run.action, want, "UDP/{port}");
                assert!(run.meta.is_empty());
                assert_eq!(run.frame, frame);
                let m = model.clone().xdp_lan(1, &frame, 0);
                assert_eq!(
                    (model_action(m.action), m.reason),
                    (want, why),
                    "model, UDP/{port}"
                );
            }
            // Not for us: another destination MAC.
            let run = dp
                .xdp_test_run(PROG_XDP_LAN, &udp4([2, 0, 0, 0, 0, 9], 1, 53), 1, 1)
                .unwrap();
            assert_eq!(run.action, XDP_PASS);

            let reasons = dp.reason_counters().unwrap();
            assert_eq!(reasons.len(), reason::COUNT as usize);
            assert_eq!(reasons[reason::DROP_RULE as usize].packets, 1);
            assert_eq!(
                reasons[reason::DROP_RULE as usize].bytes,
                udp4([0; 6], 1, 53).len() as u64
            );
            assert_eq!(reasons[reason::PASS_NO_MATCH as usize].packets, 1);
            assert_eq!(reasons[reason::PASS_NOT_FOR_US as usize].packets, 1);
            assert_eq!(dp.rule_counters().unwrap()[7].packets, 1);
            let named = dp.named_reason_counters().unwrap();
            assert_eq!(named[reason::DROP_RULE as usize].name, "drop_rule");
            // A blocked packet writes a flow entry (spec step 10), an unmatched one does not.
            assert_eq!(dp.flow_count().unwrap(), 1);

            // Second commit: the other generation, old entries gone.
            assert_eq!(dp.apply(&block_udp(54)).unwrap(), 2);
            for (port, want) in [(53, XDP_PASS), (54, XDP_DROP)] {
                let run = dp
                    .xdp_test_run(PROG_XDP_LAN, &udp4([0; 6], 1234, port), 1, 1)
                    .unwrap();
                assert_eq!(run.action, want, "after the second commit, UDP/{port}");
            }
            for map in [SRC4_MAP, DST4_MAP, IFBM_MAP] {
                assert_eq!(
                    dp.generation_entries(map, 1).unwrap(),
                    0,
                    "{map} generation 1"
                );
                assert!(
                    dp.generation_entries(map, 0).unwrap() > 0,
                    "{map} generation 0"
                );
            }

            // A restarted agent adopts the pinned maps and their state.
            drop(dp);
            let dp = load(&fs);
            // Every map (the moved-flow ring and the translations too) but the flow cache,
            // which is not pinned.
            assert_eq!(dp.adopted_maps().len(), 32);
            assert_eq!(dp.epoch().unwrap(), 2);
            let run = dp
                .xdp_test_run(PROG_XDP_LAN, &udp4([0; 6], 1234, 54), 1, 1)
                .unwrap();
            assert_eq!(run.action, XDP_DROP);
            assert_eq!(
                dp.rule_counters().unwrap()[7].packets,
                3,
                "counters survive the restart"
            );

            // Invalid plans change nothing.
            let mut bad = block_udp(54);
            bad.rules[0].action = Action::Route(5);
            let mut dp = dp;
            let e = dp.apply(&bad).unwrap_err();
            assert!(e.to_string().contains("router 5"), "{e}");
            assert_eq!(dp.epoch().unwrap(), 2);
        });
    }

    #[test]
    fn skb_test_run_learns_return_routes() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        in_netns(|| {
            let fs = TestBpffs::new().unwrap();
            let mut dp = load(&fs);
            let plan = Plan {
                gateways: vec![Gateway {
                    id: 3,
                    kind: GatewayKind::Tunnel,
                    ifindex: 1,
                    mtu: 1500,
                    ready: true,
                }],
                links: vec![xwan_common::plan::Link {
                    ifindex: 1,
                    l2: true,
                    return_gateway: 3,
                }],
                ..Plan::default()
            };
            let epoch = dp.apply(&plan).unwrap();
            let frame = udp4([0; 6], 1234, 53);
            let run = dp
                .skb_test_run(xwan_common::PROG_TC_RETURN, &frame, 1, 1)
                .unwrap();
            assert_eq!(run.retval, 0, "TC_ACT_OK");
            assert_eq!(run.frame, frame);
            let mut model = Model::new(plan, epoch);
            let key = model
                .tc_return(1, &frame, 0)
                .expect("the model learns it too");
            let learned = dp.returns().unwrap();
            assert_eq!(learned.len(), 1);
            assert_eq!(learned[0].0, key);
            assert_eq!(learned[0].1.gateway, 3);
            // Not a link: nothing learned.
            ip("link add xa type veth peer name xb");
            let xa = super::super::attach::ifindex("xa").unwrap();
            dp.skb_test_run(xwan_common::PROG_TC_RETURN, &udp4([0; 6], 1, 2), xa, 1)
                .unwrap();
            assert_eq!(dp.return_count().unwrap(), 1);
        });
    }

    fn ip(args: &str) {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn output(cmd: &str, args: &str) -> String {
        let out = Command::new(cmd)
            .args(args.split_whitespace())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn attach_with_fallbacks_and_detach() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        in_netns(|| {
            let fs = TestBpffs::new().unwrap();
            let mut dp = load(&fs);
            ip("link add xa type veth peer name xb");
            ip("link set xa up");
            ip("link set xb up");

            let e = dp.attach_lan("nonexistent0").unwrap_err();
            assert_eq!(
                e.to_string().split(" (").next().unwrap(),
                "interface 'nonexistent0' not found"
            );

            // tcx where the kernel has it (Linux 6.6+, asked of the kernel), else clsact,
            // with the reason in the report (and so in the log and in `xwan status`).
            let tcx = kernel_has_tcx(dp.program_fd(xwan_common::PROG_TC_STEER).unwrap());
            let tc_mode = if tcx {
                TcAttachMode::Tcx
            } else {
                TcAttachMode::Clsact
            };
            let r = dp.attach_lan("xa").unwrap();
            eprintln!("{r}");
            assert_eq!(r.xdp, Some((PROG_XDP_LAN, XdpAttachMode::Native)));
            assert_eq!(r.tc, Some((xwan_common::PROG_TC_STEER, tc_mode)));
            assert_eq!(
                r.to_string().contains("tcx: not in this kernel"),
                !tcx,
                "{r}"
            );
            assert_eq!(dp.attach_lan("xa").unwrap().xdp, r.xdp, "idempotent");
            let p = dp.attach_pass("xb").unwrap();
            assert_eq!(p.xdp.unwrap().1, XdpAttachMode::Native);
            let l = dp.attach_link("xb").unwrap();
            assert_eq!(l.tc.unwrap().1, tc_mode);
            let status = dp.attachments();
            assert_eq!(
                status
                    .iter()
                    .all(|a| a.to_string().contains("tcx: not in this kernel")),
                !tcx,
                "{status:?}"
            );
            assert!(
                output("ip", "link show xa").contains("xdp"),
                "{}",
                output("ip", "link show xa")
            );
            assert_eq!(dp.attachments().len(), 2);

            dp.detach_all().unwrap();
            assert!(!output("ip", "link show xa").contains("xdp"));
            assert!(!output("ip", "link show xb").contains("xdp"));

            // The probe agrees with a real tcx attachment.
            dp.set_attach_policy(AttachPolicy {
                xdp: XdpPolicy::Auto,
                tc: TcPolicy::Tcx,
            });
            let forced = dp.attach_link("xb");
            assert_eq!(forced.is_ok(), tcx, "{forced:?}");
            dp.detach_all().unwrap();

            // Forced fallbacks: lo has no native XDP; clsact via netlink.
            dp.set_attach_policy(AttachPolicy {
                xdp: XdpPolicy::Auto,
                tc: TcPolicy::Clsact,
            });
            ip("link set lo up");
            let r = dp.attach_lan("lo").unwrap();
            eprintln!("{r} (fallbacks: {:?})", r.fallbacks);
            assert_eq!(r.xdp.unwrap().1, XdpAttachMode::Generic);
            assert_eq!(r.tc.unwrap().1, TcAttachMode::Clsact);
            assert!(!r.fallbacks.is_empty());
            assert!(output("tc", "qdisc show dev lo").contains("clsact"));
            assert!(output("tc", "filter show dev lo ingress").contains("xwan_tc_steer"));
            dp.detach_interface("lo").unwrap();
            assert!(
                !output("tc", "qdisc show dev lo").contains("clsact"),
                "our clsact qdisc is removed"
            );
            assert!(!output("ip", "link show lo").contains("xdp"));

            dp.set_attach_policy(AttachPolicy {
                xdp: XdpPolicy::Native,
                tc: TcPolicy::Auto,
            });
            let e = dp.attach_lan("lo").unwrap_err();
            eprintln!("{e}");
            assert!(e.to_string().contains("xwan_xdp_lan"), "{e}");
            assert!(
                dp.attachments().is_empty(),
                "TC rolled back when XDP failed"
            );
        });
    }

    /// A frame carrying `p`'s fields: Ethernet to MAC 0, IPv4 or IPv6, 8 bytes of L4 header
    /// (ports first). A packet without ports but with a port-bearing protocol becomes an IPv4
    /// non-first fragment.
    fn frame_of(p: &Parsed) -> Vec<u8> {
        let (sport, dport) = p.ports.unwrap_or((1000, 2000));
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0, 8, 0, 0]);
        let port_proto = matches!(p.proto, 6 | 17 | 132);
        let mut f = vec![0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1];
        match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut ip = vec![0x45, p.dscp << 2, 0, 0, 0, 1, 0, 0, 64, p.proto, 0, 0];
                ip[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
                if p.ports.is_none() && port_proto {
                    ip[6..8].copy_from_slice(&100u16.to_be_bytes());
                }
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let sum = xwan_common::csum::ipv4_header_sum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let tc = p.dscp << 2;
                let mut ip = vec![0x60 | tc >> 4, (tc & 0x0f) << 4, 0, 0];
                let mut ext = Vec::new();
                let mut next = p.proto;
                if p.ports.is_none() && port_proto {
                    // Fragment header, offset 100 (a non-first fragment).
                    ext = vec![p.proto, 0, 0, 0, 0, 0, 0, 1];
                    ext[2..4].copy_from_slice(&(100u16 << 3).to_be_bytes());
                    next = 44;
                }
                ip.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[next, 64]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&ext);
                f.extend_from_slice(&ip);
            }
            _ => unreachable!("mixed families"),
        }
        f.extend_from_slice(&l4);
        f
    }

    /// The kernel's `xwan_xdp_lan` and the reference model agree on random plans and packets,
    /// across successive commits (both generations, flow entries kept between packets).
    #[test]
    fn kernel_matches_the_model_on_random_plans() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        in_netns(|| {
            ip("link add xa type veth peer name xb");
            let fs = TestBpffs::new().unwrap();
            let dp = std::cell::RefCell::new(load(&fs));
            let cases = std::env::var("XWAN_KERNEL_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(48);
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let strategy = (
                prop::collection::vec(super::super::compile::tests::arb_rule(), 0..8),
                prop::collection::vec(super::super::compile::tests::arb_packet(), 1..16),
            );
            let model: std::cell::RefCell<Option<Model>> = std::cell::RefCell::new(None);
            let checked = std::cell::Cell::new(0usize);
            runner
                .run(&strategy, |(rules, packets)| {
                    let plan = Plan {
                        ifaces: (1..=3)
                            .map(|ifindex| Iface {
                                ifindex,
                                mac: [0; 6],
                            })
                            .collect(),
                        rules,
                        routers: vec![RouterTable::single(0)],
                        gateways: vec![Gateway {
                            id: 0,
                            kind: GatewayKind::Tunnel,
                            ifindex: 1,
                            mtu: 1500,
                            ready: true,
                        }],
                        ..Plan::default()
                    };
                    let mut dp = dp.borrow_mut();
                    let epoch = dp
                        .apply(&plan)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut model = model.borrow_mut();
                    let m = model.get_or_insert_with(|| Model::new(plan.clone(), epoch));
                    m.set_plan(plan.clone(), epoch);
                    for (p, ifindex) in &packets {
                        let ifindex = 1 + ifindex % 3;
                        let frame = frame_of(p);
                        let before = dp.reason_counters().unwrap();
                        let run = dp.xdp_test_run(PROG_XDP_LAN, &frame, ifindex, 1).unwrap();
                        let after = dp.reason_counters().unwrap();
                        let reasons: Vec<u32> = (0..reason::COUNT)
                            .filter(|&r| after[r as usize].packets != before[r as usize].packets)
                            .collect();
                        let want = m.xdp_lan(ifindex, &frame, 0);
                        let ctx = format!("packet {p:?} on {ifindex}, rules {:#?}", plan.rules);
                        prop_assert_eq!(run.action, model_action(want.action), "action; {}", ctx);
                        prop_assert_eq!(reasons, vec![want.reason], "reason; {}", ctx);
                        prop_assert_eq!(&run.frame, &want.frame, "frame; {}", ctx);
                        prop_assert!(run.meta.is_empty(), "metadata left; {}", ctx);
                        // XDP hands off only whole IP headers, which a TC test run accepts.
                        if run.action == XDP_PASS && skb_test_runnable(&run.frame) {
                            let tc = dp
                                .skb_test_run(PROG_TC_STEER, &run.frame, ifindex, 1)
                                .unwrap();
                            prop_assert_eq!(
                                tc.retval == TC_ACT_REDIRECT,
                                want.handoff.is_some(),
                                "tunnel hand-off (xwan_tc_steer returned {}); {}",
                                tc.retval,
                                ctx
                            );
                        }
                        checked.set(checked.get() + 1);
                    }
                    Ok(())
                })
                .unwrap();
            eprintln!(
                "{} packets agreed over {} commits",
                checked.get(),
                dp.borrow().epoch().unwrap()
            );
        });
    }
}
