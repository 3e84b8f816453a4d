//! The relay traffic source, for kernels that refuse `BPF_F_TEST_XDP_LIVE_FRAMES`.
//!
//! ```text
//!  (source namespace) sender ─PF_PACKET─▶ xf…a ══ xf…b ─load_relay─▶ xs… ══ router
//! ```
//! A sender thread writes frames (their content does not matter) with `sendmmsg` into the
//! feeder, a spare veth pair; `load_relay` on its far end does to each frame what `load_gen`
//! does (next flow's template, train, pace, send time, `sent` counted) and redirects it into
//! the source veth. So the router still receives XDP frames from a page pool, as from live
//! frames. A sender writing straight into the source veth would hand the router skbs built on
//! the source's CPU, and the kernel modes would not pay for building them.
//!
//! The source's work is the sender thread and the feeder's receive thread (threaded NAPI of
//! `xf…b`, where `load_relay` runs), both pinned to the source CPU at the same priority. The
//! sender must leave the CPU to the receive thread whenever the feeder's ring is full, and
//! yielding does not do it (the scheduler may pick the sender again: the receive thread then
//! waited up to 6 ms, the sender's frames were dropped, and a paced relay fell to half its
//! rate beside xwan's sinks). So the feeder's sending end has a qdisc, which this kernel's
//! veth stops while its ring is full; frames then queue there, and the sender sleeps in
//! `sendmmsg` once its socket's send buffer is used up, until the receive thread frees some.
//! `PACKET_QDISC_BYPASS` would skip that queue (`ENOBUFS` instead, and a busy loop). The
//! sender still yields after each batch: under `SCHED_FIFO`, on a kernel whose veth drops
//! instead of stopping, the receive thread would not run otherwise.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::DevMap,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use xwan_testkit::Netns;

use super::sys::kthreads;

/// Frames per `sendmmsg` call: NAPI's budget, a quarter of the feeder's 256-slot ring.
const BATCH: usize = 64;
/// The feeder's qdisc queue (frames), as long as its ring.
const QUEUE: &str = "256";
/// The sender's frames' EtherType (IEEE local experimental): never delivered anywhere.
const ETHERTYPE: u16 = 0x88b5;

/// The feeder veth pair in the source namespace, with `load_relay` on its far end.
pub struct Feeder {
    /// The sender's end's index (source namespace).
    pub ifindex: u32,
    /// The far end, whose receive thread runs `load_relay`.
    relay_dev: String,
    link: Option<XdpLinkId>,
}

impl Feeder {
    /// Creates `{name}a` ⇄ `{name}b` in `src`, attaches `load_relay` (native) to `{name}b`
    /// with the source veth `src_ifindex` as its target, and threads its receive NAPI. What it
    /// creates lives in `src` and goes with it, also when this fails halfway.
    pub fn new(tools: &mut Ebpf, src: &Netns, name: &str, src_ifindex: u32) -> Result<Feeder> {
        let (dev, relay_dev) = (format!("{name}a"), format!("{name}b"));
        src.ip(&[
            "link", "add", &dev, "type", "veth", "peer", "name", &relay_dev,
        ])
        .context("creating the relay's feeder veth pair")?;
        // No IPv6 link-local addresses, so no MLD or router solicitation enters the relay.
        for d in [&dev, &relay_dev] {
            src.sysctl(&format!("net.ipv6.conf.{d}.disable_ipv6"), "1")?;
        }
        // veth has no qdisc by default; it stops a queue only where there is one.
        src.exec(
            "tc",
            &[
                "qdisc", "replace", "dev", &dev, "root", "pfifo", "limit", QUEUE,
            ],
            "",
        )
        .context("the relay feeder's qdisc")?;
        for d in [&dev, &relay_dev] {
            src.ip(&["link", "set", d, "up"])?;
        }
        let ifindex = src.ifindex(&dev)?;
        {
            let mut m =
                DevMap::try_from(tools.map_mut("LOAD_RELAY_DEV").context("LOAD_RELAY_DEV")?)?;
            // The kernel resolves the ifindex in the caller's namespace.
            src.run(|| Ok(m.set(0, src_ifindex, None, 0)?))
                .context("DEVMAP entry for the source veth")?;
        }
        let prog: &mut Xdp = tools
            .program_mut("load_relay")
            .context("load_relay missing")?
            .try_into()?;
        let link = src.run(|| {
            prog.attach(&relay_dev, XdpMode::Driver)
                .with_context(|| format!("attach load_relay to {relay_dev}"))
        })?;
        let feeder = Feeder {
            ifindex,
            relay_dev,
            link: Some(link),
        };
        // After the attach: veth re-creates its NAPI when its program changes.
        let write = format!("echo 1 > /sys/class/net/{}/threaded", feeder.relay_dev);
        src.exec("sh", &["-c", &write], "")?;
        Ok(feeder)
    }

    /// The feeder's receive thread(s), where `load_relay` runs.
    pub fn threads(&self) -> Vec<i32> {
        kthreads(&format!("napi/{}-", self.relay_dev))
    }

    /// Detaches `load_relay` (the veths go with the namespace).
    pub fn detach(&mut self, tools: &mut Ebpf) {
        let Some(link) = self.link.take() else {
            return;
        };
        if let Some(p) = tools.program_mut("load_relay") {
            let p: Result<&mut Xdp, _> = p.try_into();
            if let Ok(p) = p {
                let _ = p.detach(link);
            }
        }
    }
}

/// Sends `len`-byte frames into `ifindex` (the feeder's sender end, in the calling thread's
/// namespace), [`BATCH`] per `sendmmsg`, until `stop` is set; blocks while the feeder is
/// backed up. A signal interrupts a blocked call.
pub fn send(ifindex: u32, len: usize, stop: &AtomicBool) -> Result<()> {
    // SAFETY: plain socket call; the fd is owned below. Protocol 0: the socket receives
    // nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", io::Error::last_os_error());
    }
    // SAFETY: fd was just created.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    // SAFETY: a zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: bind with a sockaddr_ll of the right size.
    if unsafe {
        libc::bind(
            raw,
            &sll as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        )
    } != 0
    {
        bail!(
            "bind AF_PACKET to the feeder: {}",
            io::Error::last_os_error()
        );
    }
    // Broadcast, from a locally administered address, of an EtherType nobody handles.
    let mut frame = vec![0u8; len.max(60)];
    frame[..6].fill(0xff);
    frame[6..12].copy_from_slice(&[0x02, 0x10, 0xad, 0, 0, 2]);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr().cast(),
        iov_len: frame.len(),
    };
    let iov: *mut libc::iovec = &mut iov;
    // SAFETY: a zeroed mmsghdr is valid; every message is the one frame.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` point to `iov`, which points to `frame`: all outlive the call.
        let n = unsafe { libc::sendmmsg(raw, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // EINTR: `finish`'s signal; ENOBUFS: the queue overflowed after all.
            if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOBUFS)) {
                return Err(e).context("sendmmsg into the relay's feeder");
            }
        }
        // SAFETY: plain syscall.
        unsafe { libc::sched_yield() };
    }
    Ok(())
}
