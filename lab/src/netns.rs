//! Named network namespaces (`/run/netns/NAME`, as `ip netns` makes them): created by the
//! lab, deleted on drop. Code runs inside a namespace on a thread of its own: `setns`
//! changes only the calling thread, and processes spawned from that thread inherit it.
//!
//! What a reader may change: nothing here knows the lab's topology; keep it that way.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up. Fails if it exists (a lab already running, or
    /// one that was killed: `cargo xtask lab --down` removes it).
    pub fn create(name: &str) -> Result<Netns> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            bail!(
                "network namespace '{name}' already exists: another lab is running or one was \
                 killed; remove it with `cargo xtask lab --down`"
            );
        }
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v).map(drop)
    }

    /// `ip netns exec NAME PROGRAM ARGS...` (for tools that only act on their own namespace,
    /// such as `nft`), returning stdout. Feeds `stdin` to the program.
    pub fn exec(&self, program: &str, args: &[&str], stdin: &str) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program} in namespace {}", self.name))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{program} {}` in namespace {} failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The namespace's file, for `setns`.
    pub fn file(&self) -> Result<File> {
        File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening network namespace {}", self.name))
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> Result<()> {
        enter_by_name(&self.name)
    }

    /// Runs `f` on a scoped thread whose network namespace is this one.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Writes a sysctl of this namespace (`/proc/sys/net/...` is per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| {
            std::fs::write(&path, value)
                .with_context(|| format!("sysctl {key}={value} in {}", self.name))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = delete(&self.name);
    }
}

/// Moves the calling thread into namespace `name` (for threads that outlive a borrow of
/// the [`Netns`]).
pub fn enter_by_name(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening network namespace {name}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes namespace `name` (its interfaces go with it).
pub fn delete(name: &str) -> Result<()> {
    run(&["ip", "netns", "del", name]).map(drop)
}

/// Names of the namespaces starting with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Runs a command, failing with its stderr.
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running `{}`", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TUN device (no packet-info header, non-blocking) created in the calling thread's
/// namespace.
pub fn tun(name: &str) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as i16,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: ioctl with a properly sized ifreq.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
        bail!("TUNSETIFF {name}: {}", io::Error::last_os_error());
    }
    set_nonblocking(f.as_raw_fd());
    Ok(f)
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

pub fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a valid fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}
