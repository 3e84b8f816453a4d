//! ctnetlink: resetting the conntrack entry of a flow that changed gateway (`netfilter`
//! forwarding mode, docs/firewall.md). A NAT binding is made for the link a connection
//! first left by: masquerade gave it that link's address. When xwan moves the flow to
//! another gateway, the entry must go, so that the flow's next packet opens a new one and
//! is translated for the new link (UDP: a new mapping; TCP: the server answers the unknown
//! segment with a reset, a clean end). An entry without NAT is left alone: conntrack does not
//! care which way a packet leaves, and a new entry would have to pass the firewall's `new`
//! policy again.
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
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;

/// What [`Conntrack::reset`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The entry was translated (NAT) and is deleted.
    Deleted,
    /// The entry has no NAT: left alone.
    NotTranslated,
    /// No entry (expired, or never made: the firewall dropped the flow's first packet).
    Absent,
    /// The protocol has no ports in its tuple (ICMP, GRE...): not looked up.
    Unsupported,
}

impl Reset {
    pub const ALL: [Reset; 4] = [
        Reset::Deleted,
        Reset::NotTranslated,
        Reset::Absent,
        Reset::Unsupported,
    ];

    /// As metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Reset::Deleted => "deleted",
            Reset::NotTranslated => "not_translated",
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

    /// Deletes the conntrack entry whose original direction is `key`'s 5-tuple if its
    /// connection is translated (source or destination NAT).
    pub fn reset(&mut self, key: &FlowKey) -> io::Result<Reset> {
        let Some(tuple) = tuple(key) else {
            return Ok(Reset::Unsupported);
        };
        let status = match self.request(IPCTNL_MSG_CT_GET, &tuple)? {
            Answer::Entry(status) => status,
            Answer::Absent => return Ok(Reset::Absent),
            Answer::Done => return Err(io::Error::other("ctnetlink answered without the entry")),
        };
        if status & (IPS_SRC_NAT | IPS_DST_NAT) == 0 {
            return Ok(Reset::NotTranslated);
        }
        match self.request(IPCTNL_MSG_CT_DELETE, &tuple)? {
            // Gone in between (expired, or deleted by someone else): as good.
            Answer::Absent => Ok(Reset::Absent),
            _ => Ok(Reset::Deleted),
        }
    }

    fn request(&mut self, kind: u16, tuple: &Tuple) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let family = if tuple.src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let msg = message(kind, self.seq, family as u8, tuple);
        self.socket.send(&msg, 0)?;
        let mut answer = Answer::Done;
        loop {
            let mut buf = Vec::with_capacity(16 * 1024);
            self.socket.recv(&mut buf, 0)?;
            match parse(&buf, self.seq)? {
                Parsed::Entry(status) => answer = Answer::Entry(status),
                Parsed::Ack => return Ok(answer),
                Parsed::Error(e) if e == libc::ENOENT => return Ok(Answer::Absent),
                Parsed::Error(e) => return Err(io::Error::from_raw_os_error(e)),
                Parsed::Other => {}
            }
        }
    }
}

enum Answer {
    /// The entry, with its status bits.
    Entry(u32),
    Absent,
    /// Acknowledged (a delete), or a get that returned nothing.
    Done,
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

/// A ctnetlink request `kind` for the entry with original tuple `t`.
fn message(kind: u16, seq: u32, family: u8, t: &Tuple) -> Vec<u8> {
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
    nested(&mut body, CTA_TUPLE_ORIG, &orig);

    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | kind).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A conntrack entry with its status bits.
    Entry(u32),
    Ack,
    /// An errno.
    Error(i32),
    /// Another sequence number, or a message of no interest.
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The first message of `buf` that answers `seq` (a datagram holds one answer here).
fn parse(buf: &[u8], seq: u32) -> io::Result<Parsed> {
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
                    Parsed::Ack
                } else {
                    Parsed::Error(-code)
                });
            }
            NLMSG_DONE => return Ok(Parsed::Ack),
            k if k >> 8 == NFNL_SUBSYS_CTNETLINK => {
                // nfgenmsg (4 bytes), then the attributes.
                let mut a = 20;
                while a + 4 <= msg.len() {
                    let alen = u16_at(msg, a).ok_or_else(bad)? as usize;
                    let akind = u16_at(msg, a + 2).ok_or_else(bad)? & !NLA_F_NESTED;
                    if alen < 4 || a + alen > msg.len() {
                        return Err(bad());
                    }
                    if akind == CTA_STATUS && alen == 8 {
                        let v = msg[a + 4..a + 8].try_into().map_err(|_| bad())?;
                        return Ok(Parsed::Entry(u32::from_be_bytes(v)));
                    }
                    a += alen.next_multiple_of(4);
                }
                return Ok(Parsed::Entry(0));
            }
            _ => return Ok(Parsed::Other),
        }
    }
    Ok(Parsed::Other)
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
        let m = message(IPCTNL_MSG_CT_DELETE, 7, libc::AF_INET as u8, &t);
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
    fn answers_give_the_status_the_ack_or_the_error() {
        let mut entry = Vec::new();
        entry.extend_from_slice(&28u32.to_ne_bytes());
        entry.extend_from_slice(&(1u16 << 8).to_ne_bytes());
        entry.extend_from_slice(&0u16.to_ne_bytes());
        entry.extend_from_slice(&9u32.to_ne_bytes());
        entry.extend_from_slice(&0u32.to_ne_bytes());
        entry.extend_from_slice(&[2, 0, 0, 0]);
        entry.extend_from_slice(&8u16.to_ne_bytes());
        entry.extend_from_slice(&CTA_STATUS.to_ne_bytes());
        entry.extend_from_slice(&(IPS_SRC_NAT | 0x8).to_be_bytes());
        assert_eq!(parse(&entry, 9).unwrap(), Parsed::Entry(IPS_SRC_NAT | 0x8));
        assert_eq!(
            parse(&entry, 10).unwrap(),
            Parsed::Other,
            "another request's"
        );

        let err = |code: i32| {
            let mut e = Vec::new();
            e.extend_from_slice(&36u32.to_ne_bytes());
            e.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            e.extend_from_slice(&0u16.to_ne_bytes());
            e.extend_from_slice(&9u32.to_ne_bytes());
            e.extend_from_slice(&0u32.to_ne_bytes());
            e.extend_from_slice(&code.to_ne_bytes());
            e.extend_from_slice(&[0; 16]);
            e
        };
        assert_eq!(parse(&err(0), 9).unwrap(), Parsed::Ack);
        assert_eq!(
            parse(&err(-libc::ENOENT), 9).unwrap(),
            Parsed::Error(libc::ENOENT)
        );
        assert!(parse(&entry[..20], 9).is_err(), "truncated");
    }
}
