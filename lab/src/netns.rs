//! The lab's namespace primitives: the shared ones of `xwan-testkit` (see there), plus
//! what only the lab needs: its own message for a namespace that already exists, and the
//! ethtool offload switches its veths want.
//!
//! What a reader may change: nothing here knows the lab's topology; keep it that way. A
//! helper that the load test or the agent's tests could use belongs in `xwan-testkit`.

use std::io;

use anyhow::{Result, bail};
pub use xwan_testkit::{Netns, delete, enter_by_name, list, run, set_nonblocking, tun};

/// Creates namespace `name` with `lo` up. Fails if it exists (a lab already running, or
/// one that was killed: `cargo xtask lab --down` removes it).
pub fn create(name: &str) -> Result<Netns> {
    if std::path::Path::new("/run/netns").join(name).exists() {
        bail!(
            "network namespace '{name}' already exists: another lab is running or one was \
             killed; remove it with `cargo xtask lab --down`"
        );
    }
    Netns::create(name)
}

/// An offload feature [`set_feature`] switches (legacy ethtool ioctl commands).
#[derive(Clone, Copy, Debug)]
pub enum Feature {
    /// Generic receive offload. On a veth it enables the NAPI receive path, which is what
    /// lets the device accept frames another interface `XDP_REDIRECT`s into its peer without
    /// an XDP program of its own.
    Gro = 0x2c,
    /// Transmit checksum offload. Off on the hosts' veths: their packets then carry complete
    /// checksums, as on a real wire. (With it on, a packet XDP-redirected by a router keeps
    /// the unfinished checksum of a `CHECKSUM_PARTIAL` buffer, and its receiver drops it.)
    TxChecksum = 0x17,
}

/// Switches an offload feature of `ifname` (calling thread's namespace).
pub fn set_feature(ifname: &str, feature: Feature, on: bool) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue {
        cmd: feature as u32,
        data: on as u32,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket call; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        bail!("socket: {}", io::Error::last_os_error());
    }
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_value.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket created above.
    unsafe { libc::close(fd) };
    if r != 0 {
        bail!(
            "setting {feature:?} {} on {ifname}: {err}",
            if on { "on" } else { "off" }
        );
    }
    Ok(())
}
