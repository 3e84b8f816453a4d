//! The few raw `bpf(2)` and rtnetlink calls aya 0.14 does not offer: deleting a DEVMAP entry,
//! an RCU grace-period barrier, counting a hash map's entries in batches,
//! `BPF_PROG_TEST_RUN`, and removing a clsact qdisc.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub(super) const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `enum bpf_attach_type`: a program on a perf event (tracepoint).
pub(super) const BPF_PERF_EVENT: u32 = 41;
/// `enum bpf_attach_type`: tcx on ingress.
pub(super) const BPF_TCX_INGRESS: u32 = 46;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Size of the `union bpf_attr` buffers passed to the kernel. Larger than any member we
/// use; the kernel accepts a larger size as long as the tail is zero.
pub(super) const ATTR_SIZE: usize = 128;

/// Calls `bpf(cmd, attr, size_of::<T>())`.
///
/// # Safety
/// `attr` must be a valid `union bpf_attr` member for `cmd`, zero-padded, and every pointer
/// it holds must be valid for the kernel to read or write as `cmd` specifies.
pub(super) unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: upheld by the caller.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[repr(C, align(8))]
struct LinkCreateAttr {
    prog_fd: u32,
    /// `target_fd` or `target_ifindex`, as the attach type says.
    target: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u8; ATTR_SIZE - 16],
}

/// Links program `prog` to `target` (a file descriptor or an ifindex, as `attach_type` says)
/// with `BPF_LINK_CREATE`; the link's descriptor.
pub(super) fn link_create(
    prog: BorrowedFd<'_>,
    target: u32,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target,
        attach_type,
        flags: 0,
        _rest: [0; ATTR_SIZE - 16],
    };
    // SAFETY: a zero-padded BPF_LINK_CREATE attribute without pointers.
    let fd = unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr)? };
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C, align(8))]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    _rest: [u8; ATTR_SIZE - 16],
}

/// Pins the bpf object `fd` at `path` (`BPF_OBJ_PIN`), which must be on a bpffs.
pub(super) fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        _rest: [0; ATTR_SIZE - 16],
    };
    // SAFETY: `c` outlives the call; the kernel only reads the path.
    unsafe { sys_bpf(BPF_OBJ_PIN, &mut attr)? };
    Ok(())
}

#[repr(C, align(8))]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    _rest: [u8; ATTR_SIZE - 24],
}

#[repr(C, align(8))]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    _rest: [u8; ATTR_SIZE - 32],
}

fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    inner_map_fd: u32,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd,
        _rest: [0; ATTR_SIZE - 24],
    };
    // SAFETY: a MAP_CREATE attr without pointers.
    let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr)? };
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Deletes `key` from the map `fd` (`BPF_MAP_DELETE_ELEM`).
pub(super) fn map_delete<K>(fd: BorrowedFd<'_>, key: &K) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: 0,
        flags: 0,
        _rest: [0; ATTR_SIZE - 32],
    };
    // SAFETY: `key` outlives the call; the kernel reads key_size bytes of it, which the
    // caller guarantees by passing the map's key type.
    unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

fn map_update<K, V>(fd: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: 0,
        _rest: [0; ATTR_SIZE - 32],
    };
    // SAFETY: key and value outlive the call and have the map's sizes.
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

#[repr(C, align(8))]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    _rest: [u8; ATTR_SIZE - 56],
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: large enough that a scrape of a full 256k-entry
/// flow table is a few hundred syscalls, and far above any hash bucket's length (a batch
/// never splits a bucket; a bucket longer than the batch is `ENOSPC`, retried larger).
const BATCH: usize = 1024;

/// Counts the entries of the hash map `fd` (key `key_size`, value `value_size` bytes) with
/// `BPF_MAP_LOOKUP_BATCH`: one syscall per [`BATCH`] entries instead of one per entry.
///
/// A snapshot of a table the data plane keeps changing: entries added or evicted during the
/// walk may or may not be counted. The walk stops after `limit` entries.
pub(super) fn map_count(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    limit: usize,
) -> io::Result<usize> {
    let mut batch = BATCH;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // The hash map's batch token is the next bucket's index (a u32); 8 bytes leaves room.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    let mut total = 0usize;
    while total < limit {
        keys.resize(batch * key_size, 0u8);
        values.resize(batch * value_size, 0u8);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
            _rest: [0; ATTR_SIZE - 56],
        };
        // SAFETY: the buffers hold `count` keys and values of the map's sizes and the tokens
        // are 8 bytes; all outlive the call. The kernel writes `count` back into `attr`.
        let rc = unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        total += attr.count as usize;
        match rc {
            Ok(_) => {}
            // The last batch: the kernel has reported how many it copied.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && batch < 1 << 16 => {
                batch *= 4;
                continue;
            }
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
    Ok(total.min(limit))
}

/// The kernel memory of the map `fd`, in bytes: its `memlock` in `/proc/self/fdinfo` (the
/// kernel's own accounting since 6.4; an estimate from the map's sizes before).
pub(super) fn map_memory(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:")?.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock line in the map's fdinfo"))
}

/// Writes `values[i]` at `keys[i]` in the map `fd` with one `BPF_MAP_UPDATE_BATCH` call, in
/// order. `K` and `V` must be the map's key and value types (their sizes are the map's).
/// On failure the entries before the failing one are written.
pub(super) fn map_update_batch<K, V>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
        _rest: [0; ATTR_SIZE - 56],
    };
    // SAFETY: `count` keys and values of the map's sizes, contiguous, outlive the call; the
    // kernel only reads them.
    unsafe { sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }.map(drop)
}

/// Waits until every BPF program that was running when [`RcuBarrier::wait`] was called has
/// finished (an RCU grace period).
///
/// XDP and TC programs run inside RCU read-side sections, and the kernel calls
/// `synchronize_rcu()` after every successful update of a map-of-maps
/// (`maybe_wait_bpf_programs`), precisely so that user space can know when programs can no
/// longer see an old value. The barrier owns a private one-slot `ARRAY_OF_MAPS` and updates it.
#[derive(Debug)]
pub(super) struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    pub(super) fn new() -> io::Result<RcuBarrier> {
        let inner = map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 0)?;
        let outer = map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, inner.as_raw_fd() as u32)?;
        Ok(RcuBarrier { outer, inner })
    }

    /// Returns once an RCU grace period has elapsed.
    pub(super) fn wait(&self) -> io::Result<()> {
        let fd = self.inner.as_raw_fd() as u32;
        map_update(std::os::fd::AsFd::as_fd(&self.outer), &0u32, &fd)
    }
}

// ---- rtnetlink: delete a clsact qdisc --------------------------------------------------------

const RTM_DELQDISC: u16 = 37;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const TCA_KIND: u16 = 1;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_CLSACT_HANDLE: u32 = 0xffff_0000;

#[repr(C)]
struct DelQdiscRequest {
    // nlmsghdr
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    // tcmsg
    family: u8,
    _pad1: u8,
    _pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
    // rtattr TCA_KIND "clsact\0" (4 + 7 bytes, padded to 12)
    rta_len: u16,
    rta_type: u16,
    kind_name: [u8; 8],
}

/// Deletes the clsact qdisc of interface `ifindex` (and with it every TC filter on it).
pub(super) fn delete_clsact(ifindex: u32) -> io::Result<()> {
    // SAFETY: plain socket call.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let req = DelQdiscRequest {
        len: std::mem::size_of::<DelQdiscRequest>() as u32,
        kind: RTM_DELQDISC,
        flags: NLM_F_REQUEST | NLM_F_ACK,
        seq: 1,
        pid: 0,
        family: libc::AF_UNSPEC as u8,
        _pad1: 0,
        _pad2: 0,
        ifindex: ifindex as i32,
        handle: TC_H_CLSACT_HANDLE,
        parent: TC_H_CLSACT,
        info: 0,
        rta_len: 4 + 7,
        rta_type: TCA_KIND,
        kind_name: *b"clsact\0\0",
    };
    // SAFETY: sending a fully initialised request to the kernel (sockaddr_nl of pid 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: pointers to live locals with their sizes.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            &req as *const DelQdiscRequest as *const libc::c_void,
            std::mem::size_of::<DelQdiscRequest>(),
            0,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    // SAFETY: receiving into a local buffer of the given size.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "unexpected rtnetlink answer to RTM_DELQDISC",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts() {
        assert_eq!(std::mem::size_of::<MapCreateAttr>(), ATTR_SIZE);
        assert_eq!(std::mem::size_of::<MapElemAttr>(), ATTR_SIZE);
        assert_eq!(std::mem::size_of::<BatchAttr>(), ATTR_SIZE);
        assert_eq!(std::mem::size_of::<DelQdiscRequest>(), 16 + 20 + 12);
    }

    #[test]
    fn rcu_barrier_waits() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let b = RcuBarrier::new().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..3 {
            b.wait().unwrap();
        }
        eprintln!("3 grace periods took {:?}", t.elapsed());
    }
}
