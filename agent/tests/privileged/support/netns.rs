//! Network namespaces for tests: the panicking face of `xwan-testkit`'s (created with
//! unique names `xwt<pid>-<n><tag>`, never connected to the root namespace, deleted on drop,
//! also when the test panics), plus the packet capture the data-plane tests read frames with.
//!
//! What a reader may change: keep the wrappers thin; behaviour belongs in `xwan-testkit`,
//! where the lab and the load test share it.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use xwan_testkit::set_nonblocking;

/// A test fails at the first helper that does; `{:#}` keeps the whole error chain.
fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

pub struct Netns {
    /// A copy of `inner`'s name, so that tests can borrow it as `&ns.name` in command lines.
    pub name: String,
    inner: xwan_testkit::Netns,
}

impl Netns {
    /// A new namespace named `xwt<pid>-<n><tag>`, with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let inner = ok(xwan_testkit::Netns::unique("xwt", tag));
        Netns {
            name: inner.name().to_owned(),
            inner,
        }
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) {
        ok(self.inner.ip(args))
    }

    /// `ip -n NAME ARGS...`: its output, or why it failed.
    pub fn try_ip(&self, args: &[&str]) -> anyhow::Result<String> {
        xwan_testkit::run(&[&["ip", "-n", &self.name], args].concat())
    }

    /// `ip netns exec NAME PROGRAM ARGS...` (for tools that act on their own namespace, such
    /// as `nft`): its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        ok(self.try_exec(program, args))
    }

    /// [`Netns::exec`], or why it failed.
    pub fn try_exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        self.inner.exec(program, args, "")
    }

    /// Runs `f` on a thread whose network namespace is this one.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        ok(self.inner.run(|| Ok(f())))
    }

    /// Runs `f` to completion on a tokio runtime of its own, on a thread whose network
    /// namespace is this one (netlink sockets `f` opens belong to it).
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f)
        })
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) {
        ok(self.inner.enter())
    }

    /// MAC address of an interface in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        ok(self.inner.mac(ifname))
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        ok(self.inner.ifindex(ifname))
    }
}

/// A TUN device (no packet-info header, non-blocking) created in the calling thread's
/// namespace.
pub fn tun(name: &str) -> File {
    ok(xwan_testkit::tun(name))
}

/// A raw AF_PACKET socket receiving every frame of `ifname` (calling thread's namespace).
pub fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
    // SAFETY: fd was just created and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: valid C string.
    sll.sll_ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
    // SAFETY: bind with a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        r,
        0,
        "bind AF_PACKET to {ifname}: {}",
        io::Error::last_os_error()
    );
    set_nonblocking(fd.as_raw_fd()).unwrap();
    fd
}

/// Reads packets from `fd` until `want` accepts one or `timeout` passes.
pub fn wait_for(
    fd: i32,
    timeout: Duration,
    mut want: impl FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        loop {
            // SAFETY: reading into a buffer we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let p = &buf[..n as usize];
            if want(p) {
                return Some(p.to_vec());
            }
        }
    }
}
