//! Which link each packet took: a packet-socket tap on the receiving end of every WAN link.
//! The head office's end of a link sees the branch's traffic (forward), the branch's end sees
//! the replies; each end counts only what arrives (not what its own kernel sends), so every
//! packet is counted once, on the link it really crossed, with the DSCP it arrived with.
//! On the branch's end of the TUN and VTI links a tap also sees what the branch sends into the
//! link (`xwan_tc_steer`'s redirect goes through the device's transmit path; `XDP_REDIRECT`
//! into a veth does not, so this is for tunnel links only): when the data plane stopped
//! choosing a dead link is measured there, not from what a cut link no longer delivers. On a
//! VTI the taps see the inner packets (the tunnel's side of ESP).
//! Two more taps count what the clients and the servers send (their interface's outgoing
//! packets), so a flow's loss across the WAN is exact: sent minus arrived, per direction,
//! whatever TCP's retransmissions hide.
//!
//! Where the branch masquerades a link (`--firewall`: WAN3), the link's taps and the servers'
//! see the branch's address in place of the client's: the observer asks the branch's conntrack what
//! the connection was before NAT (by its reply direction), so a flow keeps one record
//! whichever link it crosses.
//!
//! The [`Observer`] keeps per link and traffic class packet/byte counters (the live view's
//! rates) and a record per flow (which links its packets crossed, when): what the end-to-end
//! tests assert on.
//!
//! What a reader may change: [`Class::of`] follows the seed's rules (ports); keep them in step.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use xwan::netlink::conntrack::Conntrack;

use crate::{
    netns,
    topology::{CLIENTS, LINKS, Medium, Topology},
};

/// Traffic classes of the seed scenario, by port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    Http,
    Ftp,
    Sql,
    Voip,
    /// Probes and anything else.
    Other,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Http,
        Class::Ftp,
        Class::Sql,
        Class::Voip,
        Class::Other,
    ];

    /// The class of a packet to (or a reply from) server port `port`.
    pub fn of(proto: u8, port: u16) -> Class {
        match (proto, port) {
            (6, 80 | 443) => Class::Http,
            (6, 20 | 21) => Class::Ftp,
            (6, 1433 | 3306 | 5432) => Class::Sql,
            (17, 5060 | 10000..=20000) => Class::Voip,
            _ => Class::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Http => "HTTP",
            Class::Ftp => "FTP",
            Class::Sql => "SQL",
            Class::Voip => "VoIP",
            Class::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A flow, seen from the client: protocol, client and server socket addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    pub proto: u8,
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
}

/// What the taps saw of one flow.
#[derive(Clone, Debug)]
pub struct FlowSeen {
    pub class: Class,
    /// Packets the client sent, and the server sent back.
    pub sent_forward: u64,
    pub sent_replies: u64,
    /// Forward packets (branch → head office) per link.
    pub forward: [u64; 3],
    /// Reply packets (head office → branch) per link.
    pub replies: [u64; 3],
    /// Link of the first forward packet.
    pub first_link: usize,
    /// When the branch first sent the flow into each TUN link (see the module docs).
    pub steered_first: [Option<Instant>; 3],
    /// Arrival of the first and last forward packet, per link.
    pub first_on: [Option<Instant>; 3],
    pub last_on: [Option<Instant>; 3],
    /// Bit `d` set: a forward packet arrived with DSCP `d`.
    pub dscp: u64,
}

impl FlowSeen {
    /// Links that carried forward packets arriving at or after `t`.
    pub fn links_since(&self, t: Instant) -> Vec<usize> {
        (0..3)
            .filter(|&l| self.last_on[l].is_some_and(|x| x >= t))
            .collect()
    }

    pub fn reply_links(&self) -> Vec<usize> {
        (0..3).filter(|&l| self.replies[l] > 0).collect()
    }

    pub fn forward_links(&self) -> Vec<usize> {
        (0..3).filter(|&l| self.forward[l] > 0).collect()
    }

    /// Packets sent and not arrived over any link: (forward, replies). Exact once the flow is
    /// quiet (packets in flight count as lost).
    pub fn lost(&self) -> (u64, u64) {
        (
            self.sent_forward
                .saturating_sub(self.forward.iter().sum::<u64>()),
            self.sent_replies
                .saturating_sub(self.replies.iter().sum::<u64>()),
        )
    }
}

#[derive(Default)]
struct Counter {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// What a tap counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tap {
    /// Branch → head office packets arriving over link N.
    Forward(usize),
    /// Replies arriving at the branch over link N.
    Reply(usize),
    /// Packets the branch sends into link N.
    Steered(usize),
    /// Packets the clients send.
    ClientsSend,
    /// Packets the servers send.
    ServersSend,
}

const FORWARD: usize = 0;
const REPLY: usize = 1;

#[derive(Default)]
struct Shared {
    flows: Mutex<HashMap<FlowKey, FlowSeen>>,
    /// [link][class][direction]
    counters: [[[Counter; 2]; 5]; 3],
    /// The branch's conntrack, where it masquerades, and what it answered.
    nat: Option<Mutex<Unnat>>,
}

/// Undoes the branch's masquerade: translated flow → the client's own address.
struct Unnat {
    conntrack: Conntrack,
    known: HashMap<FlowKey, SocketAddrV4>,
}

impl Unnat {
    /// The client behind `key` (a flow seen with a translated client address), if the
    /// branch's conntrack knows it.
    fn client(&mut self, key: &FlowKey) -> Option<SocketAddrV4> {
        if let Some(c) = self.known.get(key) {
            return Some(*c);
        }
        let ip = |a: &SocketAddrV4| [u32::from_ne_bytes(a.ip().octets()), 0, 0, 0];
        let reply = xwan_common::FlowKey {
            src: ip(&key.server),
            dst: ip(&key.client),
            sport: key.server.port(),
            dport: key.client.port(),
            proto: key.proto,
            family: 4,
            _pad: 0,
            ifindex: 0,
        };
        let original = self.conntrack.original(&reply).ok()??;
        let o = original.src[0].to_ne_bytes();
        let client = SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], o[3]), original.sport);
        self.known.insert(*key, client);
        Some(client)
    }
}

/// Per link and class: (forward packets, forward bytes, reply packets, reply bytes).
pub type LinkCounters = [[(u64, u64, u64, u64); 5]; 3];

/// The six taps and what they saw; stops the taps on drop.
pub struct Observer {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    taps: Vec<JoinHandle<()>>,
}

impl Observer {
    /// Taps every link at both ends, and the clients' and servers' interfaces (`eth0`).
    /// With `masquerade`, the branch translates some links' traffic: see the module docs.
    pub fn start(topo: &Topology, masquerade: bool) -> Result<Observer> {
        let (lan, branch) = (topo.lan.name(), topo.branch.name());
        let (headoffice, servers) = (topo.headoffice.name(), topo.servers.name());
        let nat = if masquerade {
            let conntrack = topo.branch.run(|| Ok(Conntrack::new()?))?;
            Some(Mutex::new(Unnat {
                conntrack,
                known: HashMap::new(),
            }))
        } else {
            None
        };
        let shared = Arc::new(Shared {
            nat,
            ..Shared::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut taps = Vec::new();
        let mut places = vec![
            (lan, "eth0", Tap::ClientsSend),
            (servers, "eth0", Tap::ServersSend),
        ];
        for (link, l) in LINKS.iter().enumerate() {
            places.push((headoffice, l.ifname, Tap::Forward(link)));
            places.push((branch, l.ifname, Tap::Reply(link)));
            // A VTI, like a TUN device, passes what is redirected into it through its transmit
            // path (a veth does not).
            if topo.medium(link) != Medium::Veth {
                places.push((branch, l.ifname, Tap::Steered(link)));
            }
        }
        for (ns, ifname, what) in places {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (shared, stop, ns) = (shared.clone(), stop.clone(), ns.to_owned());
            taps.push(
                std::thread::Builder::new()
                    .name(format!("tap-{ifname}"))
                    .spawn(move || {
                        let fd = netns::enter_by_name(&ns).and_then(|()| tap(ifname));
                        match fd {
                            Ok(fd) => {
                                let _ = ready_tx.send(Ok(()));
                                read_loop(&fd, what, &shared, &stop);
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    })?,
            );
            ready_rx.recv()??;
        }
        Ok(Observer { shared, stop, taps })
    }

    /// A copy of every flow record.
    pub fn flows(&self) -> HashMap<FlowKey, FlowSeen> {
        self.shared.flows.lock().expect("observer lock").clone()
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowSeen> {
        self.shared
            .flows
            .lock()
            .expect("observer lock")
            .get(key)
            .cloned()
    }

    /// Forgets flows whose last packet is older than `age` (keeps a long-running lab small).
    pub fn forget_older_than(&self, age: Duration) {
        let now = Instant::now();
        self.shared
            .flows
            .lock()
            .expect("observer lock")
            .retain(|_, f| {
                f.last_on
                    .iter()
                    .flatten()
                    .any(|t| now.duration_since(*t) < age)
            });
        // What the branch's conntrack said of translated flows, looked up again as needed.
        if let Some(nat) = &self.shared.nat {
            nat.lock().expect("observer lock").known.clear();
        }
    }

    pub fn counters(&self) -> LinkCounters {
        let c = &self.shared.counters;
        std::array::from_fn(|l| {
            std::array::from_fn(|k| {
                let get = |d: usize| {
                    (
                        c[l][k][d].packets.load(Ordering::Relaxed),
                        c[l][k][d].bytes.load(Ordering::Relaxed),
                    )
                };
                let (fp, fb) = get(FORWARD);
                let (rp, rb) = get(REPLY);
                (fp, fb, rp, rb)
            })
        })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.taps.drain(..) {
            let _ = t.join();
        }
    }
}

/// An AF_PACKET datagram socket (packets without link header, from TUN and veth alike, in
/// both directions) bound to `ifname` in the calling thread's namespace.
fn tap(ifname: &str) -> Result<OwnedFd> {
    // ETH_P_ALL: a socket for one protocol would not see what the interface sends.
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto as i32) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let big: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a c_int of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    // SAFETY: valid C string.
    sll.sll_ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
    if sll.sll_ifindex == 0 {
        bail!("tap: no interface {ifname}");
    }
    // SAFETY: bind with a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        bail!("binding a tap to {ifname}: {}", io::Error::last_os_error());
    }
    netns::set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

fn read_loop(fd: &OwnedFd, what: Tap, shared: &Shared, stop: &AtomicBool) {
    let sender = matches!(what, Tap::ClientsSend | Tap::ServersSend | Tap::Steered(_));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        loop {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: reading into buffers we own, with their sizes.
            let n = unsafe {
                libc::recvfrom(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                break;
            }
            // Senders' taps count what leaves; link taps what arrives (what this end's own
            // kernel sends is counted where it arrives).
            if (from.sll_pkttype == libc::PACKET_OUTGOING) != sender
                || from.sll_protocol != (libc::ETH_P_IP as u16).to_be()
            {
                continue;
            }
            if let Some(p) = parse(&buf[..n as usize]) {
                record(shared, what, &p, n as u64);
            }
        }
    }
}

struct Packet {
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    dscp: u8,
}

/// IPv4 header and ports (ports 0 for other protocols and non-first fragments).
fn parse(p: &[u8]) -> Option<Packet> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let proto = p[9];
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let (sport, dport) = match proto {
        6 | 17 if frag_offset == 0 && p.len() >= ihl + 4 => (
            u16::from_be_bytes([p[ihl], p[ihl + 1]]),
            u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]),
        ),
        _ => (0, 0),
    };
    Some(Packet {
        proto,
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
        dscp: p[1] >> 2,
    })
}

fn record(shared: &Shared, what: Tap, p: &Packet, bytes: u64) {
    let (client, server) = match what {
        Tap::Forward(_) | Tap::Steered(_) | Tap::ClientsSend => (p.src, p.dst),
        Tap::Reply(_) | Tap::ServersSend => (p.dst, p.src),
    };
    let class = Class::of(p.proto, server.port());
    let at_link = match what {
        Tap::Forward(l) => Some((l, FORWARD)),
        Tap::Reply(l) => Some((l, REPLY)),
        _ => None,
    };
    if let Some((link, direction)) = at_link {
        let c = &shared.counters[link][class.index()][direction];
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    if class == Class::Other {
        return;
    }
    let now = Instant::now();
    let mut key = FlowKey {
        proto: p.proto,
        client,
        server,
    };
    if let Some(nat) = &shared.nat
        && what != Tap::ClientsSend
        && !CLIENTS.contains(client.ip())
        && let Some(c) = nat.lock().expect("observer lock").client(&key)
    {
        key.client = c;
    }
    let mut flows = shared.flows.lock().expect("observer lock");
    let f = flows.entry(key).or_insert_with(|| FlowSeen {
        class,
        sent_forward: 0,
        sent_replies: 0,
        forward: [0; 3],
        replies: [0; 3],
        first_link: 0,
        steered_first: [None; 3],
        first_on: [None; 3],
        last_on: [None; 3],
        dscp: 0,
    });
    match what {
        Tap::Forward(link) => {
            if f.forward.iter().all(|&n| n == 0) {
                f.first_link = link;
            }
            f.forward[link] += 1;
            f.first_on[link].get_or_insert(now);
            f.last_on[link] = Some(now);
            f.dscp |= 1 << p.dscp;
        }
        Tap::Reply(link) => f.replies[link] += 1,
        Tap::Steered(link) => {
            f.steered_first[link].get_or_insert(now);
        }
        Tap::ClientsSend => f.sent_forward += 1,
        Tap::ServersSend => f.sent_replies += 1,
    }
}
