//! Header parsing shared by the XDP and TC programs, over the packet's `[start, end)`.
//! Implements steps 4–6 of the specification in `xwan_common::model`.
//!
//! Every read goes through [`load`], which bounds the offset (so the verifier sees a bounded
//! packet pointer) and checks it against the end of the packet.

use core::mem;

use xwan_common::{MAX_IPV6_EXT_HEADERS, TCP_FLAGS_UNKNOWN, reason};

/// Offsets beyond this are never read: no frame XDP or TC sees here is that long, so the
/// bound changes no verdict (the read would be out of the packet anyway).
const MAX_OFFSET: usize = 8192;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// What classification and steering need to know about a packet.
pub struct Pkt {
    /// Offset of the IP header.
    pub l3: usize,
    /// VLAN tags between the MACs and the IP EtherType.
    pub tags: u8,
    pub v6: bool,
    pub proto: u8,
    pub dscp: u8,
    pub ttl: u8,
    pub has_ports: bool,
    pub sport: u16,
    pub dport: u16,
    /// A TCP segment's flags (`TCP_FLAGS_UNKNOWN` when not in the frame); 0 otherwise.
    pub tcp_flags: u8,
    /// IPv4 with more fragments or an offset, IPv6 with a fragment header.
    pub fragment: bool,
    /// Offset of the upper-layer header (below `MAX_OFFSET`; 16 bits keep `decide`'s
    /// stack within its 512 bytes).
    pub l4: u16,
    /// Raw network-order address words, IPv4 in word 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// Reads a `T` (a byte array) at `off`, or `None` when it is not inside the packet.
#[inline(always)]
pub fn load<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    if off > MAX_OFFSET {
        return None;
    }
    let p = start + off;
    if p + mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked just above; byte arrays have alignment 1.
    Some(unsafe { (p as *const T).read_unaligned() })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn words4(b: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(b), 0, 0, 0]
}

#[inline(always)]
fn words16(b: &[u8; 40], at: usize) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([b[at + i], b[at + i + 1], b[at + i + 2], b[at + i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses an Ethernet frame (up to two VLAN tags) and its IP header.
#[inline(always)]
pub fn parse_eth(start: usize, end: usize) -> Result<Pkt, u32> {
    let mut ethertype = be16(load(start, end, 12).ok_or(reason::PASS_MALFORMED)?);
    let mut l3 = 14;
    let mut tags = 0;
    // Unrolled: MAX_VLAN_TAGS = 2.
    if is_vlan(ethertype) {
        let tag: [u8; 4] = load(start, end, 14).ok_or(reason::PASS_MALFORMED)?;
        ethertype = be16([tag[2], tag[3]]);
        l3 = 18;
        tags = 1;
        if is_vlan(ethertype) {
            let tag: [u8; 4] = load(start, end, 18).ok_or(reason::PASS_MALFORMED)?;
            ethertype = be16([tag[2], tag[3]]);
            l3 = 22;
            tags = 2;
        }
    }
    let mut pkt = match ethertype {
        ETH_P_IP => parse_ipv4(start, end, l3)?,
        ETH_P_IPV6 => parse_ipv6(start, end, l3)?,
        _ => return Err(reason::PASS_NOT_IP),
    };
    pkt.tags = tags;
    Ok(pkt)
}

/// Parses an IP packet starting at `l3` (an L3 device: no Ethernet header).
#[inline(always)]
pub fn parse_ip(start: usize, end: usize, l3: usize) -> Result<Pkt, u32> {
    // Two bytes, not one: LLVM turns a 1-byte bound `p + 1 > end` into `p >= end`, which
    // the verifier cannot use. Any IP header is longer anyway.
    let b: [u8; 2] = load(start, end, l3).ok_or(reason::PASS_MALFORMED)?;
    match b[0] >> 4 {
        4 => parse_ipv4(start, end, l3),
        6 => parse_ipv6(start, end, l3),
        _ => Err(reason::PASS_MALFORMED),
    }
}

#[inline(always)]
fn has_port_fields(proto: u8) -> bool {
    proto == 6 || proto == 17 || proto == 132
}

#[inline(always)]
fn parse_ipv4(start: usize, end: usize, l3: usize) -> Result<Pkt, u32> {
    let h: [u8; 20] = load(start, end, l3).ok_or(reason::PASS_MALFORMED)?;
    if h[0] >> 4 != 4 {
        return Err(reason::PASS_MALFORMED);
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return Err(reason::PASS_MALFORMED);
    }
    let l4 = l3 + ihl * 4;
    // The whole header, options included, must be present (2-byte read: see parse_ip).
    load::<[u8; 2]>(start, end, l4 - 2).ok_or(reason::PASS_MALFORMED)?;
    if h[16] & 0xf0 == 0xe0 || (h[16] & h[17] & h[18] & h[19]) == 0xff {
        return Err(reason::PASS_NOT_FOR_US);
    }
    let frag_off = be16([h[6], h[7]]) & 0x1fff;
    let more_fragments = h[6] & 0x20 != 0;
    let proto = h[9];
    let mut pkt = Pkt {
        l3,
        tags: 0,
        v6: false,
        proto,
        dscp: h[1] >> 2,
        ttl: h[8],
        has_ports: false,
        sport: 0,
        dport: 0,
        tcp_flags: tcp_flags(start, end, l4, proto, frag_off != 0),
        fragment: more_fragments || frag_off != 0,
        l4: l4 as u16,
        src: words4([h[12], h[13], h[14], h[15]]),
        dst: words4([h[16], h[17], h[18], h[19]]),
    };
    if frag_off == 0 && has_port_fields(proto) {
        read_ports(start, end, l4, &mut pkt)?;
    }
    Ok(pkt)
}

/// The flags of a TCP segment whose header starts at `l4` (see [`Pkt::tcp_flags`]).
#[inline(always)]
fn tcp_flags(start: usize, end: usize, l4: usize, proto: u8, non_first_fragment: bool) -> u8 {
    if proto != 6 {
        return 0;
    }
    if non_first_fragment {
        return TCP_FLAGS_UNKNOWN;
    }
    match load::<[u8; 1]>(start, end, l4 + 13) {
        Some([f]) => f,
        None => TCP_FLAGS_UNKNOWN,
    }
}

#[inline(always)]
fn read_ports(start: usize, end: usize, l4: usize, pkt: &mut Pkt) -> Result<(), u32> {
    let p: [u8; 4] = load(start, end, l4).ok_or(reason::PASS_MALFORMED)?;
    pkt.has_ports = true;
    pkt.sport = be16([p[0], p[1]]);
    pkt.dport = be16([p[2], p[3]]);
    Ok(())
}

#[inline(always)]
fn is_ext_header(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 44 | 51 | 60)
}

#[inline(always)]
fn parse_ipv6(start: usize, end: usize, l3: usize) -> Result<Pkt, u32> {
    let h: [u8; 40] = load(start, end, l3).ok_or(reason::PASS_MALFORMED)?;
    if h[0] >> 4 != 6 {
        return Err(reason::PASS_MALFORMED);
    }
    // ff00::/8 multicast, fe80::/10 link-local: never forwarded by xwan.
    if h[24] == 0xff || (h[24] == 0xfe && h[25] & 0xc0 == 0x80) {
        return Err(reason::PASS_NOT_FOR_US);
    }
    let tclass = ((h[0] & 0x0f) << 4) | (h[1] >> 4);
    let mut nh = h[6];
    let mut off = l3 + 40;
    let mut non_first_fragment = false;
    let mut fragment = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match nh {
            0 | 43 | 60 => {
                let e: [u8; 2] = load(start, end, off).ok_or(reason::PASS_MALFORMED)?;
                nh = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            51 => {
                let e: [u8; 2] = load(start, end, off).ok_or(reason::PASS_MALFORMED)?;
                nh = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            44 => {
                let e: [u8; 8] = load(start, end, off).ok_or(reason::PASS_MALFORMED)?;
                nh = e[0];
                off += 8;
                fragment = true;
                if be16([e[2], e[3]]) >> 3 != 0 {
                    non_first_fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    if !non_first_fragment && is_ext_header(nh) {
        return Err(reason::PASS_MALFORMED);
    }
    let mut pkt = Pkt {
        l3,
        tags: 0,
        v6: true,
        proto: nh,
        dscp: tclass >> 2,
        ttl: h[7],
        has_ports: false,
        sport: 0,
        dport: 0,
        tcp_flags: tcp_flags(start, end, off, nh, non_first_fragment),
        fragment,
        l4: off as u16,
        src: words16(&h, 8),
        dst: words16(&h, 24),
    };
    if !non_first_fragment && has_port_fields(nh) {
        read_ports(start, end, off, &mut pkt)?;
    }
    Ok(pkt)
}
