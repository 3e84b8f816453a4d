//! The PF_PACKET TX-ring traffic source (`TPACKET_V2`, qdisc bypassed), one of the
//! candidates `--compare-sources` measures beside the live-frames and relay sources on the
//! same topology. Not used for the modes: it writes straight into the source veth, so the
//! router would receive skbs built on the source's CPU; see the README's "Load test"
//! section for the figures.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use xwan_testkit::Netns;

use super::sys::{SchedStat, gettid, nice, pin, realtime};

const PACKET_VERSION: i32 = 10;
const PACKET_TX_RING: i32 = 13;
const PACKET_QDISC_BYPASS: i32 = 20;
const TPACKET_V2: i32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const FRAME_SIZE: usize = 2048;
const FRAMES: usize = 1024;
/// Frame data follows the aligned `tpacket2_hdr` (32 bytes) on transmit.
const DATA_OFFSET: usize = 32;

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// What the source did in its run.
pub struct TxRun {
    pub sent: u64,
    pub secs: f64,
    /// The sending thread's CPU time and wait.
    pub stat: SchedStat,
}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc != 0 {
        bail!("{what}: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `frames` round-robin out of `ifindex` (in `src`) for `duration` from a thread pinned
/// to `cpu`, batching 64 frames per `send()`.
pub fn run(
    src: &Netns,
    ifindex: u32,
    frames: &[Vec<u8>],
    cpu: usize,
    rt: bool,
    duration: Duration,
) -> Result<TxRun> {
    src.run(|| {
        let tid = gettid();
        pin(tid, cpu)?;
        nice(tid, 19);
        if rt {
            realtime(tid, 1)?;
        }
        // SAFETY: plain socket call; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", io::Error::last_os_error());
        }
        // SAFETY: fd was just created.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let setopt = |opt: i32, v: *const libc::c_void, len: usize, what: &str| {
            // SAFETY: v points to `len` readable bytes.
            check(
                unsafe { libc::setsockopt(raw, libc::SOL_PACKET, opt, v, len as u32) },
                what,
            )
        };
        let one = 1i32;
        setopt(
            PACKET_VERSION,
            &TPACKET_V2 as *const i32 as *const _,
            4,
            "PACKET_VERSION",
        )?;
        setopt(
            PACKET_QDISC_BYPASS,
            &one as *const i32 as *const _,
            4,
            "PACKET_QDISC_BYPASS",
        )?;
        let req = TpacketReq {
            block_size: 1 << 16,
            block_nr: (FRAMES * FRAME_SIZE / (1 << 16)) as u32,
            frame_size: FRAME_SIZE as u32,
            frame_nr: FRAMES as u32,
        };
        setopt(
            PACKET_TX_RING,
            &req as *const TpacketReq as *const _,
            size_of::<TpacketReq>(),
            "PACKET_TX_RING",
        )?;
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a sockaddr_ll of the right size.
        check(
            unsafe {
                libc::bind(
                    raw,
                    &sll as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            },
            "bind AF_PACKET",
        )?;
        let size = FRAMES * FRAME_SIZE;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            bail!("mmap of the TX ring: {}", io::Error::last_os_error());
        }
        let base = ring as *mut u8;
        let start_stat = SchedStat::read(tid);
        let t = Instant::now();
        let (mut slot, mut sent, mut queued) = (0usize, 0u64, 0usize);
        let flush = || {
            // SAFETY: send of the ring's pending frames (no buffer).
            if unsafe { libc::send(raw, std::ptr::null(), 0, 0) } >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            // The veth's ring is full (it stops its queue, which the qdisc bypass reports):
            // that frame is dropped, the rest stay queued.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(());
            }
            Err(e)
        };
        let mut err = None;
        while t.elapsed() < duration {
            // SAFETY: slot < FRAMES, so the header and data are inside the mapping.
            let hdr = unsafe { base.add(slot * FRAME_SIZE) } as *mut u32;
            let status = unsafe { std::ptr::read_volatile(hdr) };
            if status != TP_STATUS_AVAILABLE {
                if let Err(e) = flush() {
                    err = Some(e);
                    break;
                }
                queued = 0;
                continue;
            }
            let f = &frames[sent as usize % frames.len()];
            // SAFETY: FRAME_SIZE - DATA_OFFSET ≥ any template; tp_len is the second u32.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    f.as_ptr(),
                    base.add(slot * FRAME_SIZE + DATA_OFFSET),
                    f.len(),
                );
                std::ptr::write_volatile(hdr.add(1), f.len() as u32);
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                std::ptr::write_volatile(hdr, TP_STATUS_SEND_REQUEST);
            }
            sent += 1;
            queued += 1;
            slot = (slot + 1) % FRAMES;
            if queued == 64 {
                if let Err(e) = flush() {
                    err = Some(e);
                    break;
                }
                queued = 0;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let stat = SchedStat::read(tid).since(start_stat);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(ring, size) };
        if let Some(e) = err {
            bail!("PF_PACKET send after {sent} frames: {e}");
        }
        Ok(TxRun { sent, secs, stat })
    })
}
