//! ICMP echo (IPv4) and ICMPv6 echo probes over one shared raw socket per link and family.
//!
//! # Raw sockets, not "ping" datagram sockets
//!
//! Datagram ICMP sockets (`SOCK_DGRAM` + `IPPROTO_ICMP`) need the caller's group inside
//! `net.ipv4.ping_group_range`, whose kernel default is the empty range `1 0`, also in every
//! new network namespace and also for root: `socket()` fails with `EACCES` (checked on the
//! development machine). The agent needs `CAP_NET_RAW`/`CAP_NET_ADMIN` anyway (XDP, netlink),
//! so raw sockets work wherever it runs without touching a sysctl. The price is that a raw
//! socket sees every ICMP message of its interface, so this file does the filtering the
//! kernel does for datagram sockets:
//!
//! * `ICMP_FILTER` / `ICMP6_FILTER` let only echo replies through;
//! * the socket is bound to the link's device and source address, so only replies that
//!   arrive on that interface, addressed to that address, are seen;
//! * each socket has a random 16-bit identifier and a random 64-bit cookie carried in the
//!   payload; sequence numbers are allocated per socket and never reused while in flight;
//! * a reply completes a probe only if identifier, cookie and sequence number match *and* it
//!   comes from the probed address.
//!
//! One receive task per socket demultiplexes replies to the waiting probes, so any number of
//! concurrent probes (several gateways and check targets of one link) share one socket. The
//! RTT is measured in user space, from just before `sendto` to the receive task's wake-up.
//!
//! If the interface disappears (`ENODEV`, `ENXIO`, `EADDRNOTAVAIL` on send) the socket is
//! dropped and the next probe opens a new one; [`IcmpProber::reset`] does the same on
//! request (an interface re-created with a new index).
//!
//! # What a reader may change
//!
//! Payload size and content (keep the cookie), the RTT measurement (kernel timestamps with
//! `SO_TIMESTAMPNS` would be more precise). Keep the matching rules: they are what makes
//! concurrent probes safe.

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::{BuildHasher, Hasher, RandomState},
    io,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr, SocketAddrV6},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{io::unix::AsyncFd, sync::oneshot, task::JoinHandle};

use super::{LinkBinding, ProbeError, Prober};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// `ICMP_FILTER` (level `SOL_RAW`) and `ICMP6_FILTER` (level `IPPROTO_ICMPV6`).
const ICMP_FILTER: libc::c_int = 1;
const ICMP6_FILTER: libc::c_int = 1;
/// Marks our payloads, after the cookie.
const TAG: &[u8; 8] = b"xwanprob";
/// ICMP header (8) + cookie (8) + tag (8).
const PACKET_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// ICMP / ICMPv6 echo prober for one link. Cheap to clone (clones share the sockets); use one
/// per link so all its gateways share one socket per family.
#[derive(Clone)]
pub struct IcmpProber {
    inner: Arc<Inner>,
}

struct Inner {
    binding: LinkBinding,
    v4: Mutex<Option<Arc<EchoSocket>>>,
    v6: Mutex<Option<Arc<EchoSocket>>>,
}

impl std::fmt::Debug for IcmpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpProber")
            .field("binding", &self.inner.binding)
            .finish_non_exhaustive()
    }
}

impl IcmpProber {
    /// A prober for the link `binding` describes. Sockets are opened on the first probe of
    /// each family (inside the tokio runtime), so the interface need not exist yet.
    pub fn new(binding: LinkBinding) -> IcmpProber {
        IcmpProber {
            inner: Arc::new(Inner {
                binding,
                v4: Mutex::new(None),
                v6: Mutex::new(None),
            }),
        }
    }

    pub fn binding(&self) -> &LinkBinding {
        &self.inner.binding
    }

    /// Closes the sockets; the next probe opens new ones. Probes in flight fail.
    pub fn reset(&self) {
        self.slot(Family::V4).lock().unwrap().take();
        self.slot(Family::V6).lock().unwrap().take();
    }

    fn slot(&self, family: Family) -> &Mutex<Option<Arc<EchoSocket>>> {
        match family {
            Family::V4 => &self.inner.v4,
            Family::V6 => &self.inner.v6,
        }
    }

    fn socket(&self, family: Family) -> Result<Arc<EchoSocket>, ProbeError> {
        let mut slot = self.slot(family).lock().unwrap();
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let s = Arc::new(EchoSocket::open(&self.inner.binding, family)?);
        *slot = Some(s.clone());
        Ok(s)
    }

    fn forget(&self, family: Family, sock: &Arc<EchoSocket>) {
        let mut slot = self.slot(family).lock().unwrap();
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, sock)) {
            slot.take();
        }
    }
}

impl Prober for IcmpProber {
    async fn probe(&self, target: IpAddr, timeout: Duration) -> Result<Duration, ProbeError> {
        let family = match target {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        };
        let sock = self.socket(family)?;
        let (reservation, rx) = reserve(&sock.table, target)?;
        let packet = echo_request(family, sock.ident, reservation.seq, sock.cookie);
        let dest = match target {
            IpAddr::V6(a) if a.is_unicast_link_local() => {
                SockAddr::from(SocketAddrV6::new(a, 0, 0, self.inner.binding.ifindex()))
            }
            a => SockAddr::from(SocketAddr::new(a, 0)),
        };
        let sent = Instant::now();
        if let Err(e) = sock.send_to(&packet, &dest).await {
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV | libc::ENXIO | libc::EADDRNOTAVAIL)
            ) {
                self.forget(family, &sock);
            }
            return Err(ProbeError::from_io("send", &e));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(received)) => Ok(received
                .saturating_duration_since(sent)
                .max(Duration::from_nanos(1))),
            Ok(Err(_)) => Err(ProbeError::Io("icmp socket closed".into())),
            Err(_) => Err(ProbeError::Timeout),
        }
        // `reservation` drops here: the sequence number is free again.
    }
}

/// One raw socket and its receive task.
struct EchoSocket {
    fd: Arc<AsyncFd<Socket>>,
    table: Arc<Mutex<Table>>,
    ident: u16,
    cookie: u64,
    reader: JoinHandle<()>,
}

/// Probes in flight on one socket, by sequence number.
#[derive(Default)]
struct Table {
    next_seq: u16,
    pending: HashMap<u16, Pending>,
}

/// Stays in the table until its [`Reservation`] drops, so the sequence number cannot be
/// reused by another probe while the first one still owns it.
struct Pending {
    target: IpAddr,
    /// Taken by the first matching reply (duplicates are ignored).
    done: Option<oneshot::Sender<Instant>>,
}

/// Frees its sequence number when dropped (answered, timed out or cancelled).
struct Reservation {
    table: Arc<Mutex<Table>>,
    seq: u16,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.table.lock().unwrap().pending.remove(&self.seq);
    }
}

impl Drop for EchoSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl EchoSocket {
    fn open(binding: &LinkBinding, family: Family) -> Result<EchoSocket, ProbeError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| ProbeError::from_io(&what, &e)
        };
        let (domain, proto) = match family {
            Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
            Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
        };
        let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(io("raw icmp socket"))?;
        sock.set_nonblocking(true).map_err(io("nonblocking"))?;
        set_echo_reply_filter(&sock, family).map_err(io("icmp filter"))?;
        if let Some(dev) = &binding.device {
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(io(&format!("bind to device {dev}")))?;
        }
        if let Some(mark) = binding.mark {
            sock.set_mark(mark).map_err(io("SO_MARK"))?;
        }
        let source = match family {
            Family::V4 => binding.source_v4.map(IpAddr::V4),
            Family::V6 => binding.source_v6.map(IpAddr::V6),
        };
        if let Some(src) = source {
            sock.bind(&SocketAddr::new(src, 0).into())
                .map_err(io(&format!("bind to {src}")))?;
        }
        // SAFETY: a `Socket` owns its descriptor: it stays open and the same for as long as
        // the `AsyncFd` owns the socket.
        let fd = unsafe { AsyncFd::register(sock) }
            .map_err(|e| ProbeError::from_io("register socket", &io::Error::from(e)))?;
        let fd = Arc::new(fd);
        let table = Arc::new(Mutex::new(Table::default()));
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let random = h.finish();
        let ident = (random >> 48) as u16;
        let cookie = random.rotate_left(17) ^ 0x7877_616e_7072_6f62;
        let reader = tokio::spawn(read_replies(
            fd.clone(),
            table.clone(),
            family,
            ident,
            cookie,
        ));
        Ok(EchoSocket {
            fd,
            table,
            ident,
            cookie,
            reader,
        })
    }

    async fn send_to(&self, packet: &[u8], dest: &SockAddr) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().send_to(packet, dest)) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A free sequence number for a probe of `target` (never one in flight), and where its reply
/// time will come.
fn reserve(
    table: &Arc<Mutex<Table>>,
    target: IpAddr,
) -> Result<(Reservation, oneshot::Receiver<Instant>), ProbeError> {
    let (tx, rx) = oneshot::channel();
    let mut t = table.lock().unwrap();
    for _ in 0..=u16::MAX {
        let seq = t.next_seq;
        t.next_seq = seq.wrapping_add(1);
        if let Entry::Vacant(v) = t.pending.entry(seq) {
            v.insert(Pending {
                target,
                done: Some(tx),
            });
            let reservation = Reservation {
                table: table.clone(),
                seq,
            };
            return Ok((reservation, rx));
        }
    }
    Err(ProbeError::Io("65536 icmp probes in flight".into()))
}

/// Only echo replies reach the socket. Both filters are "bit set = blocked".
fn set_echo_reply_filter(sock: &Socket, family: Family) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let r = match family {
        Family::V4 => {
            let mask: u32 = !(1u32 << ECHO_REPLY_V4);
            // SAFETY: valid fd; the option value is a u32 (`struct icmp_filter`) that outlives
            // the call.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_RAW,
                    ICMP_FILTER,
                    (&mask as *const u32).cast(),
                    size_of::<u32>() as libc::socklen_t,
                )
            }
        }
        Family::V6 => {
            let mut filter = [u32::MAX; 8];
            filter[usize::from(ECHO_REPLY_V6 >> 5)] &= !(1u32 << (ECHO_REPLY_V6 & 31));
            // SAFETY: valid fd; the option value is `struct icmp6_filter` (8 × u32) that
            // outlives the call.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_ICMPV6,
                    ICMP6_FILTER,
                    filter.as_ptr().cast(),
                    size_of_val(&filter) as libc::socklen_t,
                )
            }
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The receive task: hands each matching reply's arrival time to its probe.
async fn read_replies(
    fd: Arc<AsyncFd<Socket>>,
    table: Arc<Mutex<Table>>,
    family: Family,
    ident: u16,
    cookie: u64,
) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("icmp probe socket: {e}");
                return;
            }
        };
        loop {
            match guard.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                Ok(Ok((n, from))) => {
                    let received = Instant::now();
                    // SAFETY: recv_from initialised the first `n` bytes.
                    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    let Some(reply) = parse_echo_reply(family, data) else {
                        continue;
                    };
                    if reply.ident != ident || reply.cookie != cookie {
                        continue;
                    }
                    let Some(from) = from.as_socket().map(|a| a.ip()) else {
                        continue;
                    };
                    let mut t = table.lock().unwrap();
                    if let Some(p) = t.pending.get_mut(&reply.seq)
                        && p.target == from
                        && let Some(done) = p.done.take()
                    {
                        // the probe may have just given up: nothing to do then
                        let _ = done.send(received);
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    // e.g. a queued ICMP error; wait for the next readiness
                    tracing::debug!("icmp probe socket: {e}");
                    guard.clear_ready();
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

/// The echo request: type, code, checksum (IPv4 only: the kernel fills ICMPv6's), identifier,
/// sequence number, cookie, tag.
fn echo_request(family: Family, ident: u16, seq: u16, cookie: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = match family {
        Family::V4 => ECHO_REQUEST_V4,
        Family::V6 => ECHO_REQUEST_V6,
    };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&cookie.to_be_bytes());
    p[16..24].copy_from_slice(TAG);
    if family == Family::V4 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EchoReply {
    ident: u16,
    seq: u16,
    cookie: u64,
}

/// Parses one of our echo replies as a raw socket returns it: with the IPv4 header for IPv4,
/// the bare ICMPv6 message for IPv6. `None` for anything else.
fn parse_echo_reply(family: Family, packet: &[u8]) -> Option<EchoReply> {
    let icmp = match family {
        Family::V4 => {
            let first = *packet.first()?;
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < 20 {
                return None;
            }
            packet.get(ihl..)?
        }
        Family::V6 => packet,
    };
    if icmp.len() < PACKET_LEN || icmp[1] != 0 || &icmp[16..24] != TAG {
        return None;
    }
    let ok = match family {
        // a correct checksum sums to zero; the kernel does not check it for raw sockets
        Family::V4 => icmp[0] == ECHO_REPLY_V4 && checksum(icmp) == 0,
        // the kernel checks ICMPv6 checksums before raw delivery
        Family::V6 => icmp[0] == ECHO_REPLY_V6,
    };
    ok.then(|| EchoReply {
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        cookie: u64::from_be_bytes(icmp[8..16].try_into().unwrap()),
    })
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a peer sends back: same message with the reply type (and a fresh checksum).
    fn reply_from(request: &[u8; PACKET_LEN], family: Family) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = match family {
            Family::V4 => ECHO_REPLY_V4,
            Family::V6 => ECHO_REPLY_V6,
        };
        r[2..4].fill(0);
        if family == Family::V4 {
            let c = checksum(&r);
            r[2..4].copy_from_slice(&c.to_be_bytes());
        }
        r
    }

    fn with_ipv4_header(icmp: &[u8], ihl_words: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl_words) * 4];
        p[0] = 0x40 | ihl_words;
        p[9] = 1;
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2 → checksum 220d
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn echo_request_v4_layout_and_checksum() {
        let p = echo_request(Family::V4, 0x1234, 0xabcd, 0x0102_0304_0506_0708);
        assert_eq!(p[0], 8);
        assert_eq!(p[1], 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0xab, 0xcd]);
        assert_eq!(&p[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&p[16..], b"xwanprob");
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn echo_request_v6_leaves_the_checksum_to_the_kernel() {
        let p = echo_request(Family::V6, 1, 2, 3);
        assert_eq!(p[0], 128);
        assert_eq!(&p[2..4], &[0, 0]);
    }

    #[test]
    fn replies_parse_with_any_ipv4_header_length() {
        let req = echo_request(Family::V4, 7, 9, 42);
        let reply = reply_from(&req, Family::V4);
        for ihl in [5, 6, 15] {
            assert_eq!(
                parse_echo_reply(Family::V4, &with_ipv4_header(&reply, ihl)),
                Some(EchoReply {
                    ident: 7,
                    seq: 9,
                    cookie: 42
                })
            );
        }
        let req6 = echo_request(Family::V6, 7, 9, 42);
        assert_eq!(
            parse_echo_reply(Family::V6, &reply_from(&req6, Family::V6)),
            Some(EchoReply {
                ident: 7,
                seq: 9,
                cookie: 42
            })
        );
    }

    #[test]
    fn other_icmp_messages_are_ignored() {
        let req = echo_request(Family::V4, 7, 9, 42);
        // our own request (type 8), e.g. looped back
        assert_eq!(
            parse_echo_reply(Family::V4, &with_ipv4_header(&req, 5)),
            None
        );
        // a corrupted reply
        let mut bad = reply_from(&req, Family::V4);
        bad[10] ^= 1;
        assert_eq!(
            parse_echo_reply(Family::V4, &with_ipv4_header(&bad, 5)),
            None
        );
        // someone else's ping (no tag)
        let mut foreign = reply_from(&req, Family::V4);
        foreign[16..24].copy_from_slice(b"abcdefgh");
        assert_eq!(
            parse_echo_reply(Family::V4, &with_ipv4_header(&foreign, 5)),
            None
        );
        // truncated, not IPv4, empty
        let reply = with_ipv4_header(&reply_from(&req, Family::V4), 5);
        assert_eq!(parse_echo_reply(Family::V4, &reply[..30]), None);
        let mut v6hdr = reply.clone();
        v6hdr[0] = 0x65;
        assert_eq!(parse_echo_reply(Family::V4, &v6hdr), None);
        assert_eq!(parse_echo_reply(Family::V4, &[]), None);
        // an ICMPv6 request is not a reply
        let req6 = echo_request(Family::V6, 7, 9, 42);
        assert_eq!(parse_echo_reply(Family::V6, &req6), None);
    }

    #[test]
    fn sequence_numbers_wrap_and_skip_those_in_flight() {
        let table = Arc::new(Mutex::new(Table::default()));
        let target: IpAddr = "10.0.0.1".parse().unwrap();
        let (in_flight, _rx) = reserve(&table, target).unwrap();
        assert_eq!(in_flight.seq, 0);
        table.lock().unwrap().next_seq = u16::MAX;
        let (a, _ra) = reserve(&table, target).unwrap();
        let (b, _rb) = reserve(&table, target).unwrap();
        assert_eq!((a.seq, b.seq), (u16::MAX, 1), "0 is in flight: skipped");
        assert_eq!(table.lock().unwrap().pending.len(), 3);
        drop((a, b, in_flight));
        assert!(table.lock().unwrap().pending.is_empty(), "freed on drop");
    }
}
