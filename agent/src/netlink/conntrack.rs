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
//! Synchronous on purpose: one request and its answer on a local socket, within
//! [`TIMEOUT`]; the caller runs it off the daemon's loop.

use std::{io, net::IpAddr, os::fd::AsRawFd, time::Duration};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use xwan_common::FlowKey;

/// How long one request may wait for the kernel's answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

// linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h, netfilter/nf_conntrack_common.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

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
        // SAFETY: a valid timeval for SO_RCVTIMEO on our own socket.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Conntrack { socket, seq: 0 })
    }

    /// Deletes the conntrack entry whose original direction is `key`'s 5-tuple.
    pub fn reset(&mut self, key: &FlowKey) -> io::Result<Reset> {
        let Some(tuple) = tuple(key) else {
            return Ok(Reset::Unsupported);
        };
        match self.request(IPCTNL_MSG_CT_DELETE, CTA_TUPLE_ORIG, &tuple)? {
            Answer::Error(e) if e == libc::ENOENT => Ok(Reset::Absent),
            Answer::Error(e) => Err(io::Error::from_raw_os_error(e)),
            _ => Ok(Reset::Deleted),
        }
    }

    /// The original direction (before NAT) of the connection whose reply direction is
    /// `reply`'s 5-tuple; `None` when there is no such entry or no ports in the tuple.
    pub fn original(&mut self, reply: &FlowKey) -> io::Result<Option<FlowKey>> {
        let Some(tuple) = tuple(reply) else {
            return Ok(None);
        };
        match self.request(IPCTNL_MSG_CT_GET, CTA_TUPLE_REPLY, &tuple)? {
            Answer::Entry(original) => Ok(Some(original)),
            Answer::Error(e) if e == libc::ENOENT => Ok(None),
            Answer::Error(e) => Err(io::Error::from_raw_os_error(e)),
            Answer::Ack | Answer::Other => Err(io::Error::other(
                "ctnetlink answered a lookup without the entry",
            )),
        }
    }

    /// Sends request `kind` for the entry whose direction `which` is `tuple`; the entry
    /// (a get's) or else the acknowledgement or error.
    fn request(&mut self, kind: u16, which: u16, tuple: &Tuple) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let family = if tuple.src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let msg = message(kind, self.seq, family as u8, which, tuple);
        self.socket.send(&msg, 0)?;
        let mut entry = None;
        loop {
            let mut buf = Vec::with_capacity(16 * 1024);
            self.socket.recv(&mut buf, 0)?;
            match parse(&buf, self.seq)? {
                Answer::Entry(e) => entry = Some(e),
                Answer::Ack => return Ok(entry.map_or(Answer::Ack, Answer::Entry)),
                Answer::Error(e) => return Ok(Answer::Error(e)),
                Answer::Other => {}
            }
        }
    }
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

/// A ctnetlink request `kind` for the entry whose direction `which` (`CTA_TUPLE_ORIG` or
/// `CTA_TUPLE_REPLY`) is `t`.
fn message(kind: u16, seq: u32, family: u8, which: u16, t: &Tuple) -> Vec<u8> {
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
    let mut orig = Vec::new();
    nested(&mut orig, CTA_TUPLE_IP, &ip);
    nested(&mut orig, CTA_TUPLE_PROTO, &proto);
    let mut body = vec![family, 0, 0, 0]; // nfgenmsg: family, version 0, res_id 0
    nested(&mut body, which, &orig);

    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | kind).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

/// The kernel's answer to a request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A conntrack entry: its original direction.
    Entry(FlowKey),
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

/// The answer in `buf` to request `seq` (a datagram holds one answer here).
fn parse(buf: &[u8], seq: u32) -> io::Result<Answer> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed ctnetlink answer");
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32_at(buf, at).ok_or_else(bad)? as usize;
        let kind = u16_at(buf, at + 4).ok_or_else(bad)?;
        let mseq = u32_at(buf, at + 8).ok_or_else(bad)?;
        if len < 16 || at + len > buf.len() {
            return Err(bad());
        }
        let msg = &buf[at..at + len];
        at += len.next_multiple_of(4);
        if mseq != seq {
            continue;
        }
        match kind {
            NLMSG_ERROR => {
                let code = u32_at(msg, 16).ok_or_else(bad)? as i32;
                return Ok(if code == 0 {
                    Answer::Ack
                } else {
                    Answer::Error(-code)
                });
            }
            NLMSG_DONE => return Ok(Answer::Ack),
            k if k >> 8 == NFNL_SUBSYS_CTNETLINK => {
                // nfgenmsg (4 bytes), then the attributes.
                let family = msg.get(16).copied().ok_or_else(bad)?;
                let orig = attrs(&msg[20..])
                    .find(|&(k, _)| k == CTA_TUPLE_ORIG)
                    .ok_or_else(bad)?;
                return Ok(Answer::Entry(key_of(family, orig.1).ok_or_else(bad)?));
            }
            _ => return Ok(Answer::Other),
        }
    }
    Ok(Answer::Other)
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
        let m = message(
            IPCTNL_MSG_CT_DELETE,
            7,
            libc::AF_INET as u8,
            CTA_TUPLE_ORIG,
            &t,
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

    #[test]
    fn an_entry_answers_with_its_original_direction() {
        // An entry message carries its tuples as a request names one: build it that way.
        for key in [key4(), {
            let mut k = key4();
            k.family = 6;
            k.src = [1, 2, 3, 4];
            k.dst = [5, 6, 7, 8];
            k
        }] {
            let family = if key.family == 4 {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let mut m = message(
                IPCTNL_MSG_CT_GET,
                4,
                family as u8,
                CTA_TUPLE_ORIG,
                &tuple(&key).unwrap(),
            );
            m[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8).to_ne_bytes());
            let want = FlowKey { ifindex: 0, ..key };
            assert_eq!(parse(&m, 4).unwrap(), Answer::Entry(want));
        }
        let mut reply_only = message(
            IPCTNL_MSG_CT_GET,
            4,
            libc::AF_INET as u8,
            CTA_TUPLE_REPLY,
            &tuple(&key4()).unwrap(),
        );
        reply_only[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8).to_ne_bytes());
        assert!(
            parse(&reply_only, 4).is_err(),
            "an entry without its original direction"
        );
    }
}
