//! What an interface's driver offers for XDP: its XDP feature flags from the kernel's `netdev`
//! generic netlink family (Linux 6.3+; older kernels do not say), and its driver's name
//! (ethtool). Read-only; works in the calling thread's network namespace.
//!
//! The flag that matters most is `ndo-xmit`: without it an `XDP_REDIRECT` into the device is
//! dropped at transmit time, after the program has returned, with no error anywhere but the
//! device's drop counter. A veth has it only while its peer can receive XDP frames (the peer
//! runs an XDP program or has GRO on).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::Serialize;

const NETLINK_GENERIC: i32 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// `enum netdev_xdp_act` (include/uapi/linux/netdev.h), with the names `ip link` and the
/// kernel's YAML spec use.
const XDP_ACT_NAMES: [(u64, &str); 7] = [
    (1, "basic"),
    (2, "redirect"),
    (4, "ndo-xmit"),
    (8, "xsk-zerocopy"),
    (16, "hw-offload"),
    (32, "rx-sg"),
    (64, "ndo-xmit-sg"),
];

/// A device's XDP feature flags (`NETDEV_A_DEV_XDP_FEATURES`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(into = "Vec<&'static str>")]
pub struct XdpFeatures(pub u64);

impl XdpFeatures {
    /// Native XDP: the driver runs XDP programs (`basic`).
    pub fn native(self) -> bool {
        self.0 & 1 != 0
    }

    /// Frames redirected into the device are transmitted (`ndo-xmit`).
    pub fn accepts_redirects(self) -> bool {
        self.0 & 4 != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        XDP_ACT_NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl From<XdpFeatures> for Vec<&'static str> {
    fn from(f: XdpFeatures) -> Self {
        f.names()
    }
}

/// A generic netlink socket (blocking, one request at a time).
struct Genl {
    fd: OwnedFd,
    seq: u32,
}

impl Genl {
    fn open() -> io::Result<Genl> {
        // SAFETY: plain socket call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Answers must not hang the caller on a kernel that never replies.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Genl { fd, seq: 0 })
    }

    /// Sends one request (`family`, `cmd`, attributes) and returns the attributes of its
    /// answer. An `NLMSG_ERROR` answer becomes the errno it carries.
    fn request(&mut self, family: u16, cmd: u8, attrs: &[(u16, &[u8])]) -> io::Result<Vec<u8>> {
        self.seq += 1;
        let mut msg = vec![0u8; 20];
        for (kind, value) in attrs {
            let len = 4 + value.len();
            msg.extend_from_slice(&(len as u16).to_ne_bytes());
            msg.extend_from_slice(&kind.to_ne_bytes());
            msg.extend_from_slice(value);
            msg.resize(msg.len().next_multiple_of(4), 0);
        }
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&family.to_ne_bytes());
        msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        msg[16] = cmd;
        msg[17] = 1; // version
        // SAFETY: a zeroed sockaddr_nl is the kernel's address.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and to are valid for the stated sizes.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let answer = &buf[..n as usize];
            if answer.len() < 20 {
                return Err(io::Error::other("short generic netlink answer"));
            }
            let seq = u32::from_ne_bytes(answer[8..12].try_into().unwrap());
            if seq != self.seq {
                continue;
            }
            let kind = u16::from_ne_bytes(answer[4..6].try_into().unwrap());
            if kind == NLMSG_ERROR {
                let errno = i32::from_ne_bytes(answer[16..20].try_into().unwrap());
                return Err(io::Error::from_raw_os_error(-errno));
            }
            let len =
                (u32::from_ne_bytes(answer[0..4].try_into().unwrap()) as usize).min(answer.len());
            return Ok(answer[20.min(len)..len].to_vec());
        }
    }
}

/// The value of attribute `kind` in `attrs` (a netlink attribute list).
fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let k = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if k == kind {
            return Some(&rest[4..len]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

/// The XDP features of interface `ifindex`; `Ok(None)` when this kernel has no `netdev`
/// family to ask (before Linux 6.3).
pub fn xdp_features(ifindex: u32) -> io::Result<Option<XdpFeatures>> {
    let mut genl = Genl::open()?;
    let family = match genl.request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")],
    ) {
        Ok(a) => attr(&a, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_ne_bytes([v[0], v[1]]))
            .ok_or_else(|| io::Error::other("the netdev family's answer has no id"))?,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let a = genl.request(
        family,
        NETDEV_CMD_DEV_GET,
        &[(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes())],
    )?;
    let v = attr(&a, NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|v| v.get(..8))
        .ok_or_else(|| io::Error::other("the netdev answer has no xdp-features"))?;
    Ok(Some(XdpFeatures(u64::from_ne_bytes(v.try_into().unwrap()))))
}

/// The name of the driver behind interface `name` (`ethtool -i`), e.g. `veth`, `virtio_net`.
pub fn driver(name: &str) -> io::Result<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        _rest: [u8; 164],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        _rest: [0; 164],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req and the DrvInfo it points to are valid for the kernel to read and write.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_walked_with_padding() {
        let mut a = vec![6, 0, 2, 0, b'a', b'b', 0, 0];
        a.extend_from_slice(&[12, 0, 3, 0]);
        a.extend_from_slice(&7u64.to_ne_bytes());
        assert_eq!(attr(&a, 2), Some(&b"ab"[..]));
        assert_eq!(attr(&a, 3), Some(&7u64.to_ne_bytes()[..]));
        assert_eq!(attr(&a, 4), None);
        // A length beyond the buffer ends the walk instead of panicking.
        assert_eq!(attr(&[200, 0, 1, 0], 1), None);
    }

    #[test]
    fn feature_names() {
        let f = XdpFeatures(1 | 2 | 32);
        assert_eq!(f.names(), ["basic", "redirect", "rx-sg"]);
        assert!(f.native() && !f.accepts_redirects());
        assert!(XdpFeatures(4).accepts_redirects());
    }

    /// Loopback: driver-less, no native XDP (root not needed).
    #[test]
    fn loopback_is_readable() {
        if let Some(f) = xdp_features(1).expect("ask the netdev family about lo") {
            assert!(!f.native(), "lo has no native XDP: {:?}", f.names());
        }
    }
}
