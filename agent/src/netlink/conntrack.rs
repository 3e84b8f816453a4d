//! ctnetlink: resetting the conntrack entry of a flow that changed gateway (`netfilter`
//! forwarding mode, docs/firewall.md). A connection's NAT binding is made when its first
//! packet leaves: masquerade or `snat` gave it the first link's address, or no translation
//! at all (a tunnel) — which is as wrong on an uplink that masquerades, where the flow would
//! leave with its private source. xwan cannot see which links the ruleset translates, so when
//! it moves a flow to another gateway it deletes the flow's entry, as pfSense's "kill states
//! on gateway failure" and mwan3's conntrack flush do: the flow's next packet opens a new
//! entry, translated for the new link (UDP: a new mapping; TCP: a connection picked up again
//! where nothing is translated, else the server answers the unknown source with a reset, a
//! clean end).
//!
//! [`Conntrack::original`] answers the reverse question, what a connection was before NAT,
//! from what its reply direction is (the lab's observer undoes a masquerade with it).
//!
//! The fast path of confirmed flows (`crate::offload`) follows conntrack: [`Events`] are its
//! changes (ctnetlink's multicast groups), [`Conntrack::dump`] its whole table, and
//! [`Conntrack::be_liberal`] turns off TCP window tracking of a connection one of whose
//! directions the kernel no longer sees.
//!
//! Synchronous on purpose: one request and its answer on a local socket, within
//! [`TIMEOUT`]; the caller runs it off the daemon's loop.

use std::{io, net::IpAddr, os::fd::AsRawFd, time::Duration};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use xwan_common::FlowKey;

use super::{EVENTS_BUFFER, set_rcvbuf, setsockopt};

/// How long one request may wait for the kernel's answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

// linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h, netfilter/nf_conntrack_common.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
/// ctnetlink's multicast groups: entries created, updated, destroyed.
const NFNLGRP_CONNTRACK: [u32; 3] = [1, 2, 3];
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_HELP: u16 = 5;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
const IP_CT_TCP_FLAG_BE_LIBERAL: u8 = 0x08;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `IPS_*` status bits of an [`Entry`] (nf_conntrack_common.h).
pub const IPS_ASSURED: u32 = 1 << 2;
pub const IPS_SRC_NAT: u32 = 1 << 4;
pub const IPS_DST_NAT: u32 = 1 << 5;
pub const IPS_SEQ_ADJUST: u32 = 1 << 6;
/// TCP's conntrack state "established" (`TCP_CONNTRACK_ESTABLISHED`).
pub const TCP_ESTABLISHED: u8 = 3;

/// A conntrack entry, as ctnetlink describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The original direction (ifindex 0).
    pub original: FlowKey,
    /// The reply direction: the original's mirror unless the connection is translated.
    pub reply: FlowKey,
    /// `IPS_*` bits.
    pub status: u32,
    /// TCP's conntrack state, for TCP.
    pub tcp_state: Option<u8>,
    /// A helper (FTP, SIP...) reads the connection's payload.
    pub helper: bool,
}

/// What [`Conntrack::reset`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The entry is deleted.
    Deleted,
    /// No entry (expired, or never made: the firewall dropped the flow's first packet).
    Absent,
    /// The protocol has no ports in its tuple (ICMP, GRE...): not looked up.
    Unsupported,
}

impl Reset {
    pub const ALL: [Reset; 3] = [Reset::Deleted, Reset::Absent, Reset::Unsupported];

    /// As metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Reset::Deleted => "deleted",
            Reset::Absent => "absent",
            Reset::Unsupported => "unsupported",
        }
    }
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
}

impl Conntrack {
    pub fn new() -> io::Result<Conntrack> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: TIMEOUT.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(socket.as_raw_fd(), libc::SO_RCVTIMEO, &tv)?;
        // A dump's answer comes in many datagrams at once.
        set_rcvbuf(socket.as_raw_fd(), EVENTS_BUFFER)?;
        Ok(Conntrack { socket, seq: 0 })
    }

    /// Deletes the conntrack entry whose original direction is `key`'s 5-tuple.
    pub fn reset(&mut self, key: &FlowKey) -> io::Result<Reset> {
        let Some(t) = tuple(key) else {
            return Ok(Reset::Unsupported);
        };
        Ok(
            match self.call(IPCTNL_MSG_CT_DELETE, &entry_body(CTA_TUPLE_ORIG, &t))? {
                Some(_) => Reset::Deleted,
                None => Reset::Absent,
            },
        )
    }

    /// The original direction (before NAT) of the connection whose reply direction is
    /// `reply`'s 5-tuple; `None` when there is no such entry or no ports in the tuple.
    pub fn original(&mut self, reply: &FlowKey) -> io::Result<Option<FlowKey>> {
        Ok(self.lookup(CTA_TUPLE_REPLY, reply)?.map(|e| e.original))
    }

    /// The entry whose original direction is `original`, if any.
    pub fn get(&mut self, original: &FlowKey) -> io::Result<Option<Entry>> {
        self.lookup(CTA_TUPLE_ORIG, original)
    }

    /// Turns off TCP window tracking in both directions of the connection whose original
    /// direction is `original` (the kernel's flowtable does the same for the flows it
    /// offloads); `false` when there is no such entry.
    pub fn be_liberal(&mut self, original: &FlowKey) -> io::Result<bool> {
        let Some(t) = tuple(original) else {
            return Ok(false);
        };
        let flags = [IP_CT_TCP_FLAG_BE_LIBERAL, IP_CT_TCP_FLAG_BE_LIBERAL]; // flags, mask
        let mut tcp = Vec::new();
        attr(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &flags);
        attr(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_REPLY, &flags);
        let mut info = Vec::new();
        nested(&mut info, CTA_PROTOINFO_TCP, &tcp);
        let mut body = entry_body(CTA_TUPLE_ORIG, &t);
        nested(&mut body, CTA_PROTOINFO, &info);
        Ok(self.call(IPCTNL_MSG_CT_NEW, &body)?.is_some())
    }

    /// Deletes every conntrack entry of this namespace (the load test's clean slate between
    /// modes).
    pub fn flush(&mut self) -> io::Result<()> {
        self.call(IPCTNL_MSG_CT_DELETE, &[libc::AF_UNSPEC as u8, 0, 0, 0])?;
        Ok(())
    }

    /// Every conntrack entry (both families).
    pub fn dump(&mut self) -> io::Result<Vec<Entry>> {
        self.seq = self.seq.wrapping_add(1);
        let body = [libc::AF_UNSPEC as u8, 0, 0, 0];
        let msg = header(
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.seq,
            &body,
        );
        self.socket.send(&msg, 0)?;
        let mut entries = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(64 * 1024);
            self.socket.recv(&mut buf, 0)?;
            for m in messages(&buf) {
                let (kind, seq, msg) = m?;
                if seq != self.seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(entries),
                    NLMSG_ERROR => {
                        let code = u32_at(msg, 16).ok_or_else(malformed)? as i32;
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => entries.extend(entry_of(msg)),
                }
            }
        }
    }

    /// The entry whose direction `which` is `key`'s 5-tuple, if any.
    fn lookup(&mut self, which: u16, key: &FlowKey) -> io::Result<Option<Entry>> {
        let Some(t) = tuple(key) else {
            return Ok(None);
        };
        match self.call(IPCTNL_MSG_CT_GET, &entry_body(which, &t))? {
            Some(Answer::Entry(e)) => Ok(Some(e)),
            None => Ok(None),
            Some(_) => Err(io::Error::other(
                "ctnetlink answered a lookup without the entry",
            )),
        }
    }

    /// Sends request `kind` with `body` (nfgenmsg and attributes) and waits for its answer:
    /// the entry (a get's) or the acknowledgement; `None` when there is no such entry
    /// (ENOENT), another error as an error.
    fn call(&mut self, kind: u16, body: &[u8]) -> io::Result<Option<Answer>> {
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&header(kind, NLM_F_REQUEST | NLM_F_ACK, self.seq, body), 0)?;
        let mut entry = None;
        loop {
            let mut buf = Vec::with_capacity(16 * 1024);
            self.socket.recv(&mut buf, 0)?;
            match parse(&buf, self.seq)? {
                Answer::Entry(e) => entry = Some(e),
                Answer::Ack => return Ok(Some(entry.map_or(Answer::Ack, Answer::Entry))),
                Answer::Error(e) if e == libc::ENOENT => return Ok(None),
                Answer::Error(e) => return Err(io::Error::from_raw_os_error(e)),
                Answer::Other => {}
            }
        }
    }
}

/// A change conntrack reports ([`Events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// An entry created or updated (its status, its TCP state...).
    Updated(Entry),
    Destroyed(Entry),
}

/// How long [`Events::receive`] waits for a change.
pub const EVENTS_TICK: Duration = Duration::from_millis(200);

/// Conntrack's changes in the calling thread's network namespace (ctnetlink's multicast
/// groups: new, update, destroy).
pub struct Events {
    socket: Socket,
}

impl Events {
    pub fn subscribe() -> io::Result<Events> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        for group in NFNLGRP_CONNTRACK {
            socket.add_membership(group)?;
        }
        let fd = socket.as_raw_fd();
        set_rcvbuf(fd, EVENTS_BUFFER)?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: EVENTS_TICK.as_micros() as libc::suseconds_t,
        };
        setsockopt(fd, libc::SO_RCVTIMEO, &tv)?;
        Ok(Events { socket })
    }

    /// The changes of the next datagram, or none after [`EVENTS_TICK`]. An `ENOBUFS` error
    /// means changes were lost (the socket overflowed): what was learnt must be read again
    /// from a [`Conntrack::dump`].
    pub fn receive(&mut self) -> io::Result<Vec<Change>> {
        let mut buf = Vec::with_capacity(64 * 1024);
        match self.socket.recv(&mut buf, 0) {
            Ok(_) => changes(&buf),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// The changes an event datagram reports (messages of other kinds are skipped).
fn changes(buf: &[u8]) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    for m in messages(buf) {
        let (kind, _, msg) = m?;
        if kind >> 8 != NFNL_SUBSYS_CTNETLINK {
            continue;
        }
        let Some(entry) = entry_of(msg) else {
            continue;
        };
        match kind & 0xff {
            IPCTNL_MSG_CT_NEW => out.push(Change::Updated(entry)),
            IPCTNL_MSG_CT_DELETE => out.push(Change::Destroyed(entry)),
            _ => {}
        }
    }
    Ok(out)
}

/// The original direction's tuple: the LAN side's addresses and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

/// Protocols whose conntrack tuple is addresses and ports.
const PORT_PROTOCOLS: [u8; 5] = [6, 17, 33, 132, 136];

fn tuple(key: &FlowKey) -> Option<Tuple> {
    if !PORT_PROTOCOLS.contains(&key.proto) {
        return None;
    }
    let addr = |w: &[u32; 4]| -> Option<IpAddr> {
        let mut b = [0u8; 16];
        for (i, word) in w.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
        }
        match key.family {
            4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
            6 => Some(IpAddr::from(b)),
            _ => None,
        }
    };
    Some(Tuple {
        src: addr(&key.src)?,
        dst: addr(&key.dst)?,
        proto: key.proto,
        sport: key.sport,
        dport: key.dport,
    })
}

/// Appends one attribute (4-byte aligned).
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn nested(buf: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    attr(buf, kind | NLA_F_NESTED, inner);
}

fn family_of(t: &Tuple) -> u8 {
    if t.src.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// A request's body naming the entry whose direction `which` (`CTA_TUPLE_ORIG` or
/// `CTA_TUPLE_REPLY`) is `t`: nfgenmsg (family, version 0, res_id 0), then the tuple.
fn entry_body(which: u16, t: &Tuple) -> Vec<u8> {
    let mut body = vec![family_of(t), 0, 0, 0];
    nested(&mut body, which, &tuple_attrs(t));
    body
}

/// A ctnetlink message `kind` with `body` (nfgenmsg and attributes).
fn header(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | kind).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// A tuple's attributes (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`).
fn tuple_attrs(t: &Tuple) -> Vec<u8> {
    let mut ip = Vec::new();
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
            attr(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            attr(&mut ip, CTA_IP_V6_SRC, &v6(s));
            attr(&mut ip, CTA_IP_V6_DST, &v6(d));
        }
    }
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[t.proto]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut t = Vec::new();
    nested(&mut t, CTA_TUPLE_IP, &ip);
    nested(&mut t, CTA_TUPLE_PROTO, &proto);
    t
}

/// The kernel's answer to a request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A conntrack entry.
    Entry(Entry),
    Ack,
    /// An errno.
    Error(i32),
    /// Another request's, or a message of no interest.
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed ctnetlink answer")
}

/// The netlink messages in `buf`: (type, sequence number, the whole message).
fn messages(buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, u32, &[u8])>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let (Some(len), Some(kind), Some(seq)) =
            (u32_at(buf, at), u16_at(buf, at + 4), u32_at(buf, at + 8))
        else {
            return None;
        };
        let len = len as usize;
        if len < 16 || at + len > buf.len() {
            at = buf.len();
            return Some(Err(malformed()));
        }
        let msg = &buf[at..at + len];
        at += len.next_multiple_of(4);
        Some(Ok((kind, seq, msg)))
    })
}

/// The answer in `buf` to request `seq` (a datagram holds one answer here).
fn parse(buf: &[u8], seq: u32) -> io::Result<Answer> {
    for m in messages(buf) {
        let (kind, mseq, msg) = m?;
        if mseq != seq {
            continue;
        }
        return match kind {
            NLMSG_ERROR => {
                let code = u32_at(msg, 16).ok_or_else(malformed)? as i32;
                Ok(if code == 0 {
                    Answer::Ack
                } else {
                    Answer::Error(-code)
                })
            }
            NLMSG_DONE => Ok(Answer::Ack),
            k if k >> 8 == NFNL_SUBSYS_CTNETLINK => {
                Ok(Answer::Entry(entry_of(msg).ok_or_else(malformed)?))
            }
            _ => Ok(Answer::Other),
        };
    }
    Ok(Answer::Other)
}

/// The entry a ctnetlink message (header included) describes; `None` without both tuples.
fn entry_of(msg: &[u8]) -> Option<Entry> {
    // nlmsghdr (16 bytes), nfgenmsg (4 bytes: the family first), then the attributes.
    let family = *msg.get(16)?;
    let (mut original, mut reply) = (None, None);
    let (mut status, mut tcp_state, mut helper) = (0, None, false);
    for (kind, a) in attrs(msg.get(20..)?) {
        match kind {
            CTA_TUPLE_ORIG => original = key_of(family, a),
            CTA_TUPLE_REPLY => reply = key_of(family, a),
            CTA_STATUS => status = u32::from_be_bytes(a.get(..4)?.try_into().ok()?),
            CTA_HELP => helper = true,
            CTA_PROTOINFO => {
                tcp_state = attrs(a)
                    .filter(|&(k, _)| k == CTA_PROTOINFO_TCP)
                    .flat_map(|(_, tcp)| attrs(tcp))
                    .find(|&(k, _)| k == CTA_PROTOINFO_TCP_STATE)
                    .and_then(|(_, v)| v.first().copied());
            }
            _ => {}
        }
    }
    Some(Entry {
        original: original?,
        reply: reply?,
        status,
        tcp_state,
        helper,
    })
}

/// The attributes in `b`: (kind without the nested flag, payload); stops at a malformed one.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_at(b, at)? as usize;
        let kind = u16_at(b, at + 2)? & !NLA_F_NESTED;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let payload = &b[at + 4..at + len];
        at += len.next_multiple_of(4);
        Some((kind, payload))
    })
}

/// A tuple's attributes (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`) as a [`FlowKey`] (ifindex 0).
fn key_of(family: u8, tuple: &[u8]) -> Option<FlowKey> {
    let mut key = FlowKey {
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
        proto: 0,
        family: 0,
        _pad: 0,
        ifindex: 0,
    };
    let words = |b: &[u8], w: &mut [u32; 4]| {
        for (i, c) in b.chunks_exact(4).enumerate().take(4) {
            w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
    };
    key.family = match i32::from(family) {
        libc::AF_INET => 4,
        libc::AF_INET6 => 6,
        _ => return None,
    };
    for (kind, payload) in attrs(tuple) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, a) in attrs(payload) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => words(a, &mut key.src),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => words(a, &mut key.dst),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, a) in attrs(payload) {
                    match (k, a) {
                        (CTA_PROTO_NUM, [p, ..]) => key.proto = *p,
                        (CTA_PROTO_SRC_PORT, [h, l, ..]) => {
                            key.sport = u16::from_be_bytes([*h, *l])
                        }
                        (CTA_PROTO_DST_PORT, [h, l, ..]) => {
                            key.dport = u16::from_be_bytes([*h, *l])
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (key.proto != 0).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key4() -> FlowKey {
        FlowKey {
            src: [u32::from_ne_bytes([10, 1, 0, 7]), 0, 0, 0],
            dst: [u32::from_ne_bytes([203, 0, 113, 9]), 0, 0, 0],
            sport: 40000,
            dport: 53,
            proto: 17,
            family: 4,
            _pad: 0,
            ifindex: 3,
        }
    }

    #[test]
    fn the_tuple_is_the_lan_sides_and_only_for_port_protocols() {
        let t = tuple(&key4()).unwrap();
        assert_eq!(t.src, "10.1.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(t.dst, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!((t.proto, t.sport, t.dport), (17, 40000, 53));
        let icmp = FlowKey { proto: 1, ..key4() };
        assert_eq!(tuple(&icmp), None);
        let v6: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let o = v6.octets();
        let mut words = [0u32; 4];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u32::from_ne_bytes(o[4 * i..4 * i + 4].try_into().unwrap());
        }
        let k6 = FlowKey {
            src: words,
            family: 6,
            ..key4()
        };
        assert_eq!(tuple(&k6).unwrap().src, IpAddr::V6(v6));
    }

    #[test]
    fn a_request_names_the_original_tuple() {
        let t = tuple(&key4()).unwrap();
        let m = header(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            &entry_body(CTA_TUPLE_ORIG, &t),
        );
        assert_eq!(u32_at(&m, 0).unwrap() as usize, m.len());
        assert_eq!(u16_at(&m, 4).unwrap(), 1 << 8 | 2, "ctnetlink, delete");
        assert_eq!(u16_at(&m, 6).unwrap(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8).unwrap(), 7);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 0, 0, 0]);
        #[rustfmt::skip]
        let attrs: &[u8] = &[
            52, 0, 1, 0x80,           // CTA_TUPLE_ORIG, nested
              20, 0, 1, 0x80,         // CTA_TUPLE_IP
                8, 0, 1, 0, 10, 1, 0, 7,
                8, 0, 2, 0, 203, 0, 113, 9,
              28, 0, 2, 0x80,         // CTA_TUPLE_PROTO
                5, 0, 1, 0, 17, 0, 0, 0,
                6, 0, 2, 0, 0x9c, 0x40, 0, 0,
                6, 0, 3, 0, 0, 53, 0, 0,
        ];
        assert_eq!(&m[20..], attrs);
    }

    #[test]
    fn answers_give_the_ack_or_the_error() {
        let err = |seq: u32, code: i32| {
            let mut e = Vec::new();
            e.extend_from_slice(&36u32.to_ne_bytes());
            e.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            e.extend_from_slice(&0u16.to_ne_bytes());
            e.extend_from_slice(&seq.to_ne_bytes());
            e.extend_from_slice(&0u32.to_ne_bytes());
            e.extend_from_slice(&code.to_ne_bytes());
            e.extend_from_slice(&[0; 16]);
            e
        };
        assert_eq!(parse(&err(9, 0), 9).unwrap(), Answer::Ack);
        assert_eq!(
            parse(&err(9, -libc::ENOENT), 9).unwrap(),
            Answer::Error(libc::ENOENT)
        );
        assert_eq!(
            parse(&err(8, 0), 9).unwrap(),
            Answer::Other,
            "another request's"
        );
        assert!(parse(&err(9, 0)[..20], 9).is_err(), "truncated");
    }

    /// An entry message as the kernel sends it: both tuples, status, TCP state, a helper.
    fn entry_message(kind: u16, e: &Entry) -> Vec<u8> {
        let t = |k: &FlowKey| tuple_attrs(&tuple(k).unwrap());
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        nested(&mut body, CTA_TUPLE_ORIG, &t(&e.original));
        nested(&mut body, CTA_TUPLE_REPLY, &t(&e.reply));
        attr(&mut body, CTA_STATUS, &e.status.to_be_bytes());
        if let Some(state) = e.tcp_state {
            let mut tcp = Vec::new();
            attr(&mut tcp, CTA_PROTOINFO_TCP_STATE, &[state]);
            let mut info = Vec::new();
            nested(&mut info, CTA_PROTOINFO_TCP, &tcp);
            nested(&mut body, CTA_PROTOINFO, &info);
        }
        if e.helper {
            let mut help = Vec::new();
            attr(&mut help, 1, b"ftp\0");
            nested(&mut body, CTA_HELP, &help);
        }
        header(kind, 0, 0, &body)
    }

    #[test]
    fn events_report_entries_updated_and_destroyed() {
        let k = FlowKey {
            ifindex: 0,
            proto: 6,
            ..key4()
        };
        let e = Entry {
            original: k,
            reply: FlowKey {
                src: k.dst,
                dst: k.src,
                sport: k.dport,
                dport: k.sport,
                ..k
            },
            status: IPS_ASSURED | 0x8,
            tcp_state: Some(TCP_ESTABLISHED),
            helper: false,
        };
        let helped = Entry {
            helper: true,
            tcp_state: None,
            ..e
        };
        let mut datagram = entry_message(IPCTNL_MSG_CT_NEW, &e);
        datagram.extend(entry_message(IPCTNL_MSG_CT_DELETE, &helped));
        datagram.extend(entry_message(IPCTNL_MSG_CT_GET, &e)); // not an event: skipped
        assert_eq!(
            changes(&datagram).unwrap(),
            vec![Change::Updated(e), Change::Destroyed(helped)]
        );
        assert!(
            changes(&datagram[..datagram.len() - 3]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn be_liberal_sets_both_directions_flags() {
        let t = tuple(&FlowKey { proto: 6, ..key4() }).unwrap();
        let flags = [IP_CT_TCP_FLAG_BE_LIBERAL; 2];
        let mut tcp = Vec::new();
        attr(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &flags);
        attr(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_REPLY, &flags);
        // The attributes as the kernel's nlattr_to_tcp reads them: 2-byte {flags, mask}.
        assert_eq!(&tcp[..8], &[6, 0, 4, 0, 0x08, 0x08, 0, 0]);
        assert_eq!(&tcp[8..], &[6, 0, 5, 0, 0x08, 0x08, 0, 0]);
        assert_eq!(family_of(&t), libc::AF_INET as u8);
    }

    #[test]
    fn an_entry_answers_with_both_directions() {
        for family in [4, 6] {
            let mut original = FlowKey {
                ifindex: 0,
                ..key4()
            };
            if family == 6 {
                original.family = 6;
                original.src = [1, 2, 3, 4];
                original.dst = [5, 6, 7, 8];
            }
            // Masqueraded: the reply goes to another address than the original's source.
            let mut reply = FlowKey {
                src: original.dst,
                dst: original.src,
                sport: original.dport,
                dport: 61000,
                ..original
            };
            reply.dst[0] ^= 1;
            let e = Entry {
                original,
                reply,
                status: IPS_ASSURED | IPS_SRC_NAT,
                tcp_state: None,
                helper: false,
            };
            let mut m = entry_message(IPCTNL_MSG_CT_NEW, &e);
            m[16] = if family == 4 {
                libc::AF_INET
            } else {
                libc::AF_INET6
            } as u8;
            m[8..12].copy_from_slice(&4u32.to_ne_bytes());
            assert_eq!(parse(&m, 4).unwrap(), Answer::Entry(e));
        }
        // An entry without its original direction is no entry.
        let t = tuple(&key4()).unwrap();
        let mut reply_only = header(0, 0, 4, &entry_body(CTA_TUPLE_REPLY, &t));
        reply_only[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8).to_ne_bytes());
        assert!(parse(&reply_only, 4).is_err());
    }
}
