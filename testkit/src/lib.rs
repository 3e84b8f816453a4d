//! Network namespaces and TUN devices for the lab, the load test and the agent's tests.
//!
//! A [`Netns`] is a named namespace (`/run/netns/NAME`, as `ip netns` makes them), deleted
//! when dropped, also when its owner panics. Code runs inside one on a thread of its own:
//! `setns` changes only the calling thread, and processes spawned from that thread inherit
//! its namespace. Nothing here adds an address, a route or an interface to the root
//! namespace, and nothing here may: the callers run on machines shared with other work.
//!
//! What a reader may change: nothing here knows any topology or any caller's naming scheme
//! (callers pass prefixes and names); keep it that way, and keep every error an
//! `anyhow::Error` that names the namespace or device concerned.

use std::{
    fs::File,
    io::{self, Write},
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, anyhow, bail};

/// A network namespace `/run/netns/NAME` with `lo` up, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name`; fails if it exists, since it is then someone else's.
    pub fn create(name: &str) -> Result<Netns> {
        if exists(name) {
            bail!("network namespace '{name}' already exists");
        }
        Netns::add(name.to_owned())
    }

    /// Creates namespace `name`, first deleting one of that name: for callers whose names
    /// are theirs alone (say, carry their pid), so that one left behind by a killed earlier
    /// run is stale.
    pub fn replace(name: &str) -> Result<Netns> {
        if exists(name) {
            delete(name)?;
        }
        Netns::add(name.to_owned())
    }

    /// Creates a namespace named `<prefix><pid>-<n><tag>`, `n` counting up within this
    /// process, so that tests running in parallel (threads or processes) never collide.
    pub fn unique(prefix: &str, tag: &str) -> Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Netns::add(format!("{prefix}{}-{n}{tag}", std::process::id()))
    }

    fn add(name: String) -> Result<Netns> {
        run(&["ip", "netns", "add", &name])?;
        // Owned from here on: a failure below deletes it again.
        let ns = Netns { name };
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

    /// `ip -n NAME ARGS...`, ignoring failure: for teardown of what may not exist.
    pub fn ip_quiet(&self, args: &[&str]) {
        let _ = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output();
    }

    /// `ip netns exec NAME PROGRAM ARGS...` with `stdin` fed to the program, returning its
    /// stdout. For tools that act only on their own namespace (`nft`, `sysctl`), and for
    /// writes under `/sys/class/net/DEV/`: `ip netns exec` also mounts a sysfs of the
    /// namespace, which a thread that merely `setns`-ed does not see.
    pub fn exec(&self, program: &str, args: &[&str], stdin: &str) -> Result<String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program} in namespace {}", self.name))?;
        // A program that exits without reading its stdin closes the pipe; its exit status
        // below is what tells.
        let _ = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes());
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

    /// The namespace's file, for `setns` by a thread or a child process of the caller's.
    pub fn file(&self) -> Result<File> {
        open(&self.name)
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> Result<()> {
        enter_by_name(&self.name)
    }

    /// Runs `f` on a scoped thread whose network namespace is this one; a panic in `f` is
    /// resumed on the calling thread.
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

    /// Interface index of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let c = std::ffi::CString::new(dev)?;
        let i = self.run(|| {
            // SAFETY: valid C string.
            Ok(unsafe { libc::if_nametoindex(c.as_ptr()) })
        })?;
        if i == 0 {
            bail!("no interface {dev} in namespace {}", self.name);
        }
        Ok(i)
    }

    /// MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let text = run(&["ip", "-n", &self.name, "-br", "link", "show", dev])?;
        let mac = text
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("no MAC for {dev} in `ip -br link`: {text}"))?;
        let v = mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<Vec<u8>, _>>()
            .with_context(|| format!("bad MAC {mac} for {dev}"))?;
        v.try_into().map_err(|_| anyhow!("bad MAC {mac} for {dev}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = delete(&self.name);
    }
}

fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn open(name: &str) -> Result<File> {
    File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening network namespace {name}"))
}

/// Moves the calling thread into namespace `name`: for threads that outlive a borrow of
/// the [`Netns`].
pub fn enter_by_name(name: &str) -> Result<()> {
    let f = open(name)?;
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

/// Names of the namespaces starting with `prefix`, sorted.
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

/// Runs command `args[0]` with arguments `args[1..]`, returning its stdout or failing with
/// its stderr.
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

/// A TUN device `name` (no packet-info header, non-blocking) created in the calling
/// thread's namespace; it lives as long as the returned file.
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
    // The kernel wants a NUL-terminated name in 16 bytes.
    if name.len() >= req.name.len() {
        bail!("TUN device name {name} is longer than 15 bytes");
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: ioctl with a properly sized ifreq.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
        bail!("TUNSETIFF {name}: {}", io::Error::last_os_error());
    }
    set_nonblocking(f.as_raw_fd())?;
    Ok(f)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: i32) -> Result<()> {
    // SAFETY: fcntl on an fd the caller owns; a bad fd only makes it fail.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        bail!("O_NONBLOCK on fd {fd}: {}", io::Error::last_os_error());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    //! These create namespaces, so they need root; without it they pass without testing.

    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn create_refuses_an_existing_namespace_and_drop_deletes() {
        if !is_root() {
            return;
        }
        let ns = Netns::unique("xtk", "c").unwrap();
        let name = ns.name().to_owned();
        let e = Netns::create(&name).err().expect("second create must fail");
        assert!(e.to_string().contains("already exists"), "{e:#}");
        // Still ours: the failed create must not have deleted it.
        assert_eq!(list(&name), [name.as_str()]);
        drop(ns);
        assert!(list(&name).is_empty());
    }

    #[test]
    fn replace_takes_over_a_stale_namespace() {
        if !is_root() {
            return;
        }
        let stale = Netns::unique("xtk", "r").unwrap();
        let name = stale.name().to_owned();
        std::mem::forget(stale);
        let ns = Netns::replace(&name).unwrap();
        assert_eq!(ns.ifindex("lo").unwrap(), 1);
    }

    #[test]
    fn run_enters_the_namespace_and_resumes_panics() {
        if !is_root() {
            return;
        }
        let name = std::panic::catch_unwind(|| {
            let ns = Netns::unique("xtk", "p").unwrap();
            ns.ip(&["link", "add", "d0", "type", "dummy"]).unwrap();
            assert!(ns.ifindex("d0").unwrap() > 1);
            let name = ns.name().to_owned();
            ns.run(|| -> Result<()> { std::panic::panic_any(name) })
                .unwrap();
        })
        .unwrap_err()
        .downcast::<String>()
        .unwrap();
        assert!(list(&name).is_empty(), "{name} left behind");
    }
}
