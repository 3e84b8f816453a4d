//! Header parsing of the reference model: steps 4–6 of the specification in [`super`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::reason::{PASS_MALFORMED, PASS_NOT_FOR_US, PASS_NOT_IP};
use crate::{FlowKey, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, TCP_FLAGS_UNKNOWN};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// EtherTypes of IPv4 and IPv6.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;

/// What the parser learned about a packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Parsed {
    /// Offset of the IP header in the buffer given to the parser.
    pub l3: usize,
    /// VLAN tags read (0..=2).
    pub vlan_tags: usize,
    /// 4 or 6.
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol (the last Next Header for IPv6).
    pub proto: u8,
    pub dscp: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// (source, destination) when the packet has ports.
    pub ports: Option<(u16, u16)>,
    /// A TCP segment's flags (`TCP_FLAGS_UNKNOWN` when they lie beyond the frame or the
    /// packet is a non-first fragment); 0 for other protocols.
    pub tcp_flags: u8,
    /// A fragment: IPv4 with more fragments or an offset, IPv6 with a fragment header.
    pub fragment: bool,
    /// Offset of the upper-layer header (after the IPv6 extension headers).
    pub l4: usize,
}

/// An address as the raw network-order words of a [`FlowKey`] (IPv4 in word 0).
fn words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

impl Parsed {
    /// The packet's flow key as it arrived on `ifindex` (ports 0 when it has none).
    pub fn flow_key(&self, ifindex: u32) -> FlowKey {
        let (sport, dport) = self.ports.unwrap_or((0, 0));
        FlowKey {
            src: words(self.src),
            dst: words(self.dst),
            sport,
            dport,
            proto: self.proto,
            family: self.family,
            _pad: 0,
            ifindex,
        }
    }

    /// The key of the reply: addresses and ports swapped, same protocol and family, ifindex 0.
    pub fn reply_key(&self) -> FlowKey {
        let (sport, dport) = self.ports.unwrap_or((0, 0));
        FlowKey {
            src: words(self.dst),
            dst: words(self.src),
            sport: dport,
            dport: sport,
            proto: self.proto,
            family: self.family,
            _pad: 0,
            ifindex: 0,
        }
    }
}

fn be16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

/// True when `n` bytes are present at `off`.
fn present(buf: &[u8], off: usize, n: usize) -> bool {
    off.checked_add(n).is_some_and(|end| end <= buf.len())
}

fn has_ports_proto(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

/// Ports at `l4` when the packet has them (`PASS_MALFORMED` when truncated).
fn ports(
    buf: &[u8],
    l4: usize,
    proto: u8,
    non_first_fragment: bool,
) -> Result<Option<(u16, u16)>, u32> {
    if non_first_fragment || !has_ports_proto(proto) {
        return Ok(None);
    }
    if !present(buf, l4, 4) {
        return Err(PASS_MALFORMED);
    }
    Ok(Some((be16(buf, l4), be16(buf, l4 + 2))))
}

/// The flags of a TCP segment whose header starts at `l4` (see [`Parsed::tcp_flags`]).
fn tcp_flags(buf: &[u8], l4: usize, proto: u8, non_first_fragment: bool) -> u8 {
    match proto {
        IPPROTO_TCP if !non_first_fragment && present(buf, l4, 14) => buf[l4 + 13],
        IPPROTO_TCP => TCP_FLAGS_UNKNOWN,
        _ => 0,
    }
}

/// Step 5: IPv4 header at `l3`.
fn parse_ipv4(buf: &[u8], l3: usize, vlan_tags: usize) -> Result<Parsed, u32> {
    if !present(buf, l3, 20) || buf[l3] >> 4 != 4 {
        return Err(PASS_MALFORMED);
    }
    let ihl = (buf[l3] & 0x0f) as usize;
    if ihl < 5 || !present(buf, l3, ihl * 4) {
        return Err(PASS_MALFORMED);
    }
    let h = &buf[l3..];
    let dscp = h[1] >> 2;
    let frag_off = be16(h, 6) & 0x1fff;
    let more_fragments = be16(h, 6) & 0x2000 != 0;
    let ttl = h[8];
    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    if dst.octets()[0] >> 4 == 0xe || dst == Ipv4Addr::BROADCAST {
        return Err(PASS_NOT_FOR_US);
    }
    let ports = ports(buf, l3 + ihl * 4, proto, frag_off != 0)?;
    Ok(Parsed {
        l3,
        vlan_tags,
        family: 4,
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        proto,
        dscp,
        ttl,
        ports,
        tcp_flags: tcp_flags(buf, l3 + ihl * 4, proto, frag_off != 0),
        fragment: more_fragments || frag_off != 0,
        l4: l3 + ihl * 4,
    })
}

/// Step 6: IPv6 header at `l3`, extension headers walked.
fn parse_ipv6(buf: &[u8], l3: usize, vlan_tags: usize) -> Result<Parsed, u32> {
    if !present(buf, l3, 40) || buf[l3] >> 4 != 6 {
        return Err(PASS_MALFORMED);
    }
    let h = &buf[l3..];
    let tc = (h[0] & 0x0f) << 4 | h[1] >> 4;
    let dscp = tc >> 2;
    let ttl = h[7];
    let mut o = [0u8; 16];
    o.copy_from_slice(&h[8..24]);
    let src = Ipv6Addr::from(o);
    o.copy_from_slice(&h[24..40]);
    let dst = Ipv6Addr::from(o);
    if dst.octets()[0] == 0xff || (dst.octets()[0] == 0xfe && dst.octets()[1] & 0xc0 == 0x80) {
        return Err(PASS_NOT_FOR_US);
    }

    let mut next = h[6];
    let mut off = l3 + 40;
    let mut non_first_fragment = false;
    let mut fragment = false;
    let mut done = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                if !present(buf, off, 2) {
                    return Err(PASS_MALFORMED);
                }
                next = buf[off];
                off += (buf[off + 1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                if !present(buf, off, 2) {
                    return Err(PASS_MALFORMED);
                }
                next = buf[off];
                off += (buf[off + 1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                if !present(buf, off, 8) {
                    return Err(PASS_MALFORMED);
                }
                next = buf[off];
                let frag_off = be16(buf, off + 2) >> 3;
                off += 8;
                fragment = true;
                if frag_off != 0 {
                    non_first_fragment = true;
                    done = true;
                    break;
                }
            }
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done
        && matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
        )
    {
        return Err(PASS_MALFORMED);
    }
    let ports = ports(buf, off, next, non_first_fragment)?;
    Ok(Parsed {
        l3,
        vlan_tags,
        family: 6,
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        proto: next,
        dscp,
        ttl,
        ports,
        tcp_flags: tcp_flags(buf, off, next, non_first_fragment),
        fragment,
        l4: off,
    })
}

/// Steps 4–6 of the specification on an Ethernet frame (the MAC check of step 3 is not done
/// here). `Err` holds the reason code (`crate::reason::*`).
pub fn parse_ethernet(frame: &[u8]) -> Result<Parsed, u32> {
    if frame.len() < ETH_HLEN {
        return Err(PASS_MALFORMED);
    }
    let mut ethertype = be16(frame, 12);
    let mut tags = 0;
    while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && tags < MAX_VLAN_TAGS {
        let tag = ETH_HLEN + tags * VLAN_HLEN;
        if !present(frame, tag, VLAN_HLEN) {
            return Err(PASS_MALFORMED);
        }
        ethertype = be16(frame, tag + 2);
        tags += 1;
    }
    let l3 = ETH_HLEN + tags * VLAN_HLEN;
    match ethertype {
        ETH_P_IP => parse_ipv4(frame, l3, tags),
        ETH_P_IPV6 => parse_ipv6(frame, l3, tags),
        _ => Err(PASS_NOT_IP),
    }
}

/// Steps 5–6 on a buffer whose IP header starts at `l3`: the version nibble chooses IPv4 or
/// IPv6 (anything else, or `l3` beyond the buffer → `PASS_MALFORMED`). `vlan_tags` is 0.
pub fn parse_ip(buf: &[u8], l3: usize) -> Result<Parsed, u32> {
    match buf.get(l3).map(|b| b >> 4) {
        Some(4) => parse_ipv4(buf, l3, 0),
        Some(6) => parse_ipv6(buf, l3, 0),
        _ => Err(PASS_MALFORMED),
    }
}

/// Frame builders: the model's unit tests', and `xwan explain`'s, which runs the model on the
/// packet it explains.
pub mod build {
    pub use super::{ETH_P_IP, ETH_P_IPV6};

    /// An IPv4 header (+ payload) with a correct checksum.
    #[derive(Clone, Debug)]
    pub struct Ip4 {
        pub src: [u8; 4],
        pub dst: [u8; 4],
        pub proto: u8,
        pub tos: u8,
        pub ttl: u8,
        /// Flags + fragment offset word.
        pub frag: u16,
        pub options: Vec<u8>,
        pub payload: Vec<u8>,
    }

    impl Ip4 {
        pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8, payload: Vec<u8>) -> Ip4 {
            Ip4 {
                src,
                dst,
                proto,
                tos: 0,
                ttl: 64,
                frag: 0,
                options: vec![],
                payload,
            }
        }

        pub fn bytes(&self) -> Vec<u8> {
            assert_eq!(self.options.len() % 4, 0);
            let hlen = 20 + self.options.len();
            let total = (hlen + self.payload.len()) as u16;
            let mut h = vec![0x40 | (hlen / 4) as u8, self.tos];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34]);
            h.extend_from_slice(&self.frag.to_be_bytes());
            h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
            h.extend_from_slice(&self.src);
            h.extend_from_slice(&self.dst);
            h.extend_from_slice(&self.options);
            let check = crate::csum::ipv4_header_sum(&h);
            h[10..12].copy_from_slice(&check.to_be_bytes());
            h.extend_from_slice(&self.payload);
            h
        }
    }

    /// An IPv6 header; `payload` holds any extension headers and the upper layer.
    #[derive(Clone, Debug)]
    pub struct Ip6 {
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub next: u8,
        pub tc: u8,
        pub hop: u8,
        pub payload: Vec<u8>,
    }

    impl Ip6 {
        pub fn new(src: [u8; 16], dst: [u8; 16], next: u8, payload: Vec<u8>) -> Ip6 {
            Ip6 {
                src,
                dst,
                next,
                tc: 0,
                hop: 64,
                payload,
            }
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut h = vec![
                0x60 | self.tc >> 4,
                (self.tc & 0x0f) << 4 | 0x0a,
                0xbc,
                0xde,
            ];
            h.extend_from_slice(&(self.payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[self.next, self.hop]);
            h.extend_from_slice(&self.src);
            h.extend_from_slice(&self.dst);
            h.extend_from_slice(&self.payload);
            h
        }
    }

    /// A 20-byte L4 header starting with the two ports (TCP-like; UDP/SCTP read the same).
    pub fn l4(sport: u16, dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend((4..20u8).map(|i| i.wrapping_mul(7)));
        v
    }

    /// An IPv6 extension header of `(len + 1) * 8` bytes (hop-by-hop, routing, dst options).
    pub fn ext(next: u8, len: u8) -> Vec<u8> {
        let mut v = vec![next, len];
        v.resize((len as usize + 1) * 8, 0x01);
        v
    }

    /// An AH header of `(len + 2) * 4` bytes.
    pub fn ah(next: u8, len: u8) -> Vec<u8> {
        let mut v = vec![next, len];
        v.resize((len as usize + 2) * 4, 0xaa);
        v
    }

    /// An IPv6 fragment header: `offset` in 8-byte units, M flag `more`.
    pub fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let w = offset << 3 | more as u16;
        let mut v = vec![next, 0];
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        v
    }

    /// An Ethernet frame with VLAN tags given as (TPID, TCI), outermost first.
    pub fn eth(
        dst: [u8; 6],
        src: [u8; 6],
        tags: &[(u16, u16)],
        ethertype: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst);
        v.extend_from_slice(&src);
        for &(tpid, tci) in tags {
            v.extend_from_slice(&tpid.to_be_bytes());
            v.extend_from_slice(&tci.to_be_bytes());
        }
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    pub fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const SCTP: u8 = 132;

    fn v4_frame(tags: &[(u16, u16)], ip: &Ip4) -> Vec<u8> {
        eth(MAC_A, MAC_B, tags, ETH_P_IP, &ip.bytes())
    }

    fn v6_frame(tags: &[(u16, u16)], ip: &Ip6) -> Vec<u8> {
        eth(MAC_A, MAC_B, tags, ETH_P_IPV6, &ip.bytes())
    }

    fn tcp4() -> Ip4 {
        Ip4::new([10, 0, 0, 1], [192, 0, 2, 7], TCP, l4(40000, 443))
    }

    fn udp6(payload: Vec<u8>, next: u8) -> Ip6 {
        Ip6::new(v6("2001:db8::1"), v6("2001:db8:1::2"), next, payload)
    }

    #[test]
    fn ipv4_tcp_untagged() {
        let mut ip = tcp4();
        ip.tos = 0xb9; // DSCP 46, ECN 1
        ip.ttl = 17;
        let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
        assert_eq!(
            p,
            Parsed {
                l3: 14,
                vlan_tags: 0,
                family: 4,
                src: "10.0.0.1".parse().unwrap(),
                dst: "192.0.2.7".parse().unwrap(),
                proto: TCP,
                dscp: 46,
                ttl: 17,
                ports: Some((40000, 443)),
                tcp_flags: 13 * 7, // `l4`'s filler byte
                fragment: false,
                l4: 34,
            }
        );
    }

    #[test]
    fn vlan_tags() {
        let ip = tcp4();
        let one = parse_ethernet(&v4_frame(&[(0x8100, 5)], &ip)).unwrap();
        assert_eq!(
            (one.l3, one.vlan_tags, one.ports),
            (18, 1, Some((40000, 443)))
        );
        let ad = parse_ethernet(&v4_frame(&[(0x88a8, 5)], &ip)).unwrap();
        assert_eq!((ad.l3, ad.vlan_tags), (18, 1));
        let two = parse_ethernet(&v4_frame(&[(0x88a8, 100), (0x8100, 5)], &ip)).unwrap();
        assert_eq!((two.l3, two.vlan_tags, two.proto), (22, 2, TCP));
        let two6 =
            parse_ethernet(&v6_frame(&[(0x8100, 1), (0x8100, 2)], &udp6(l4(1, 2), UDP))).unwrap();
        assert_eq!(
            (two6.l3, two6.vlan_tags, two6.family, two6.ports),
            (22, 2, 6, Some((1, 2)))
        );
        // A third tag is left to the kernel.
        let three = v4_frame(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], &ip);
        assert_eq!(parse_ethernet(&three), Err(PASS_NOT_IP));
    }

    #[test]
    fn truncated_vlan_tags() {
        let mut f = eth(MAC_A, MAC_B, &[], 0x8100, &[]);
        assert_eq!(f.len(), 14);
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
        f.extend_from_slice(&[0, 5, 0x08]); // 3 of the tag's 4 bytes
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
        // Complete first tag, inner EtherType 802.1Q, second tag missing.
        let f = eth(MAC_A, MAC_B, &[(0x88a8, 5)], 0x8100, &[0, 1]);
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
        // Two complete tags and nothing after: the IPv4 header is missing.
        let f = eth(MAC_A, MAC_B, &[(0x88a8, 5), (0x8100, 6)], ETH_P_IP, &[]);
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
    }

    #[test]
    fn not_ip_and_short() {
        assert_eq!(
            parse_ethernet(&eth(MAC_A, MAC_B, &[], 0x0806, &[0; 28])),
            Err(PASS_NOT_IP)
        );
        assert_eq!(
            parse_ethernet(&eth(MAC_A, MAC_B, &[(0x8100, 1)], 0x88cc, &[0; 28])),
            Err(PASS_NOT_IP)
        );
        assert_eq!(parse_ethernet(&[0u8; 13]), Err(PASS_MALFORMED));
        assert_eq!(parse_ethernet(&[]), Err(PASS_MALFORMED));
        // 14 bytes of IPv4 EtherType: header missing.
        assert_eq!(
            parse_ethernet(&eth(MAC_A, MAC_B, &[], ETH_P_IP, &[])),
            Err(PASS_MALFORMED)
        );
    }

    #[test]
    fn ipv4_header_checks() {
        let good = v4_frame(&[], &tcp4());
        // IHL < 5.
        for ihl in 0..5u8 {
            let mut f = good.clone();
            f[14] = 0x40 | ihl;
            assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED), "ihl {ihl}");
        }
        // Version not 4 behind the IPv4 EtherType.
        let mut f = good.clone();
        f[14] = 0x65;
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
        // 19 bytes of header.
        assert_eq!(parse_ethernet(&good[..14 + 19]), Err(PASS_MALFORMED));
        // IHL = 15 (60 bytes) but only 20 + 20 bytes present.
        let mut f = good.clone();
        f[14] = 0x4f;
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
    }

    #[test]
    fn ipv4_options_move_l4() {
        let mut ip = tcp4();
        ip.options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs + EOL
        let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
        assert_eq!(p.ports, Some((40000, 443)));
        assert_eq!(p.l3, 14);
        // IHL = 6 with only 24 bytes present (options, no L4) on an ICMP packet is fine.
        let mut ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], ICMP, vec![]);
        ip.options = vec![1, 1, 1, 0];
        let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
        assert_eq!((p.proto, p.ports), (ICMP, None));
    }

    #[test]
    fn ipv4_truncated_ports() {
        for proto in [TCP, UDP, SCTP] {
            let mut ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], proto, vec![0, 80, 1]);
            assert_eq!(
                parse_ethernet(&v4_frame(&[], &ip)),
                Err(PASS_MALFORMED),
                "proto {proto}"
            );
            ip.payload = vec![0, 80, 1, 187];
            assert_eq!(
                parse_ethernet(&v4_frame(&[], &ip)).unwrap().ports,
                Some((80, 443))
            );
        }
        // Other protocols have no ports, whatever follows.
        let ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], ICMP, vec![8, 0]);
        let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
        assert_eq!((p.proto, p.ports), (ICMP, None));
        let ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], 47, l4(1, 2));
        assert_eq!(parse_ethernet(&v4_frame(&[], &ip)).unwrap().ports, None);
    }

    #[test]
    fn ipv4_fragments() {
        // Non-first fragment: no ports, L4 need not be present.
        let mut ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], UDP, vec![]);
        ip.frag = 0x0001;
        let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
        assert_eq!((p.proto, p.ports, p.fragment), (UDP, None, true));
        ip.frag = 0x1fff;
        assert_eq!(parse_ethernet(&v4_frame(&[], &ip)).unwrap().ports, None);
        // First fragment (MF set, offset 0) and DF: ports; only the first is a fragment.
        for (flags, fragment) in [(0x2000, true), (0x4000, false)] {
            let mut ip = tcp4();
            ip.frag = flags;
            let p = parse_ethernet(&v4_frame(&[], &ip)).unwrap();
            assert_eq!((p.ports, p.fragment), (Some((40000, 443)), fragment));
        }
        // First fragment truncated before the ports: malformed.
        let mut ip = Ip4::new([10, 0, 0, 1], [10, 0, 0, 2], UDP, vec![]);
        ip.frag = 0x2000;
        assert_eq!(parse_ethernet(&v4_frame(&[], &ip)), Err(PASS_MALFORMED));
    }

    #[test]
    fn ipv4_not_for_us() {
        for dst in [
            [224, 0, 0, 1],
            [239, 255, 255, 250],
            [233, 1, 2, 3],
            [255, 255, 255, 255],
        ] {
            let ip = Ip4::new([10, 0, 0, 1], dst, UDP, l4(1, 2));
            assert_eq!(
                parse_ethernet(&v4_frame(&[], &ip)),
                Err(PASS_NOT_FOR_US),
                "{dst:?}"
            );
            // Checked before the ports.
            let ip = Ip4::new([10, 0, 0, 1], dst, UDP, vec![]);
            assert_eq!(
                parse_ethernet(&v4_frame(&[], &ip)),
                Err(PASS_NOT_FOR_US),
                "{dst:?}"
            );
        }
        for dst in [
            [223, 255, 255, 255],
            [240, 0, 0, 1],
            [255, 255, 255, 254],
            [10, 255, 255, 255],
        ] {
            let ip = Ip4::new([10, 0, 0, 1], dst, UDP, l4(1, 2));
            assert!(parse_ethernet(&v4_frame(&[], &ip)).is_ok(), "{dst:?}");
        }
    }

    #[test]
    fn ipv6_basic() {
        let mut ip = udp6(l4(5353, 53), UDP);
        ip.tc = 0xb9; // DSCP 46, ECN 1
        ip.hop = 3;
        let p = parse_ethernet(&v6_frame(&[], &ip)).unwrap();
        assert_eq!(
            p,
            Parsed {
                l3: 14,
                vlan_tags: 0,
                family: 6,
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8:1::2".parse().unwrap(),
                proto: UDP,
                dscp: 46,
                ttl: 3,
                ports: Some((5353, 53)),
                tcp_flags: 0,
                fragment: false,
                l4: 54,
            }
        );
    }

    #[test]
    fn ipv6_header_checks() {
        let good = v6_frame(&[], &udp6(l4(1, 2), UDP));
        assert_eq!(parse_ethernet(&good[..14 + 39]), Err(PASS_MALFORMED));
        let mut f = good.clone();
        f[14] = 0x40;
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
        // Truncated ports.
        assert_eq!(parse_ethernet(&good[..14 + 40 + 3]), Err(PASS_MALFORMED));
        assert_eq!(
            parse_ethernet(&good[..14 + 40 + 4]).unwrap().ports,
            Some((1, 2))
        );
    }

    #[test]
    fn ipv6_not_for_us() {
        for dst in ["ff02::1", "ff05::2", "fe80::1", "febf:ffff::1"] {
            let ip = Ip6::new(v6("2001:db8::1"), v6(dst), UDP, vec![]);
            assert_eq!(
                parse_ethernet(&v6_frame(&[], &ip)),
                Err(PASS_NOT_FOR_US),
                "{dst}"
            );
        }
        for dst in ["fec0::1", "fe7f::1", "fd00::1", "2001:db8::ff"] {
            let ip = Ip6::new(v6("2001:db8::1"), v6(dst), UDP, l4(1, 2));
            assert!(parse_ethernet(&v6_frame(&[], &ip)).is_ok(), "{dst}");
        }
    }

    #[test]
    fn ipv6_extension_chain() {
        let mut payload = ext(43, 0); // hop-by-hop, 8 bytes -> routing
        payload.extend(ext(60, 2)); // routing, 24 bytes -> dst options
        payload.extend(ext(TCP, 1)); // dst options, 16 bytes -> TCP
        payload.extend(l4(22, 2222));
        let p = parse_ethernet(&v6_frame(&[(0x8100, 9)], &udp6(payload, 0))).unwrap();
        assert_eq!((p.proto, p.ports, p.l3), (TCP, Some((22, 2222)), 18));
    }

    #[test]
    fn ipv6_ah() {
        let mut payload = ah(UDP, 4); // (4 + 2) * 4 = 24 bytes
        payload.extend(l4(500, 4500));
        let p = parse_ethernet(&v6_frame(&[], &udp6(payload, 51))).unwrap();
        assert_eq!((p.proto, p.ports), (UDP, Some((500, 4500))));
        // AH with only one byte present.
        assert_eq!(
            parse_ethernet(&v6_frame(&[], &udp6(vec![UDP], 51))),
            Err(PASS_MALFORMED)
        );
        // AH upper-layer protocol ESP: no ports.
        let p = parse_ethernet(&v6_frame(&[], &udp6(ah(50, 1), 51))).unwrap();
        assert_eq!((p.proto, p.ports), (50, None));
    }

    #[test]
    fn ipv6_fragments() {
        // First fragment: walk continues, ports read.
        let mut payload = frag6(UDP, 0, true);
        payload.extend(l4(1000, 2000));
        let p = parse_ethernet(&v6_frame(&[], &udp6(payload, 44))).unwrap();
        assert_eq!(
            (p.proto, p.ports, p.fragment, p.l4),
            (UDP, Some((1000, 2000)), true, 14 + 48)
        );
        // Non-first fragment: no ports, nothing needed after the fragment header.
        let p = parse_ethernet(&v6_frame(&[], &udp6(frag6(UDP, 185, false), 44))).unwrap();
        assert_eq!((p.proto, p.ports, p.fragment), (UDP, None, true));
        // The walk ends at a non-first fragment even when its next header is an extension.
        let p = parse_ethernet(&v6_frame(&[], &udp6(frag6(60, 1, true), 44))).unwrap();
        assert_eq!((p.proto, p.ports), (60, None));
        // Fragment header truncated.
        let f = v6_frame(&[], &udp6(frag6(UDP, 0, false)[..7].to_vec(), 44));
        assert_eq!(parse_ethernet(&f), Err(PASS_MALFORMED));
    }

    #[test]
    fn ipv6_ext_limit() {
        // Six extension headers then TCP: parsed.
        let mut payload = Vec::new();
        for _ in 0..5 {
            payload.extend(ext(60, 0));
        }
        payload.extend(ext(TCP, 0));
        payload.extend(l4(7, 8));
        let p = parse_ethernet(&v6_frame(&[], &udp6(payload, 60))).unwrap();
        assert_eq!((p.proto, p.ports), (TCP, Some((7, 8))));
        // Seven: malformed.
        let mut payload = Vec::new();
        for _ in 0..6 {
            payload.extend(ext(60, 0));
        }
        payload.extend(ext(TCP, 0));
        payload.extend(l4(7, 8));
        assert_eq!(
            parse_ethernet(&v6_frame(&[], &udp6(payload, 60))),
            Err(PASS_MALFORMED)
        );
        // Six, the sixth a first fragment pointing at a seventh header: malformed.
        let mut payload = Vec::new();
        for _ in 0..5 {
            payload.extend(ext(60, 0));
        }
        payload.extend(frag6(43, 0, true));
        payload.extend(ext(TCP, 0));
        payload.extend(l4(7, 8));
        let mut ip = udp6(payload, 60);
        ip.payload[32] = 44; // fifth dst-options header -> fragment
        assert_eq!(parse_ethernet(&v6_frame(&[], &ip)), Err(PASS_MALFORMED));
        // Six, the sixth a non-first fragment: the walk ended, fine.
        let mut payload = Vec::new();
        for _ in 0..4 {
            payload.extend(ext(60, 0));
        }
        payload.extend(ext(44, 0));
        payload.extend(frag6(43, 3, false));
        let p = parse_ethernet(&v6_frame(&[], &udp6(payload, 60))).unwrap();
        assert_eq!((p.proto, p.ports), (43, None));
        // Six then "no next header" (59).
        let mut payload = Vec::new();
        for _ in 0..5 {
            payload.extend(ext(0, 0));
        }
        payload.extend(ext(59, 0));
        let p = parse_ethernet(&v6_frame(&[], &udp6(payload, 0))).unwrap();
        assert_eq!((p.proto, p.ports), (59, None));
    }

    #[test]
    fn ipv6_truncated_extensions() {
        // One byte of a hop-by-hop header.
        assert_eq!(
            parse_ethernet(&v6_frame(&[], &udp6(vec![TCP], 0))),
            Err(PASS_MALFORMED)
        );
        // Routing header claims 16 bytes, only 8 present: the TCP ports are then missing.
        let mut h = ext(TCP, 0);
        h[1] = 1;
        assert_eq!(
            parse_ethernet(&v6_frame(&[], &udp6(h, 43))),
            Err(PASS_MALFORMED)
        );
        // Same with a protocol without ports: fine (only 2 bytes of each header are needed).
        let mut h = ext(58, 0);
        h[1] = 1;
        let p = parse_ethernet(&v6_frame(&[], &udp6(h, 43))).unwrap();
        assert_eq!((p.proto, p.ports), (58, None));
    }

    #[test]
    fn parse_ip_entry() {
        let v4 = tcp4().bytes();
        let p = parse_ip(&v4, 0).unwrap();
        assert_eq!(
            (p.l3, p.vlan_tags, p.family, p.ports),
            (0, 0, 4, Some((40000, 443)))
        );
        let v6 = udp6(l4(1, 2), UDP).bytes();
        let p = parse_ip(&v6, 0).unwrap();
        assert_eq!((p.l3, p.family, p.ports), (0, 6, Some((1, 2))));
        // At an offset.
        let mut buf = vec![0xee; 3];
        buf.extend_from_slice(&v4);
        assert_eq!(parse_ip(&buf, 3).unwrap().l3, 3);
        // Bad version, beyond the buffer, empty.
        let mut bad = v4.clone();
        bad[0] = 0x55;
        assert_eq!(parse_ip(&bad, 0), Err(PASS_MALFORMED));
        assert_eq!(parse_ip(&v4, v4.len()), Err(PASS_MALFORMED));
        assert_eq!(parse_ip(&v4, usize::MAX), Err(PASS_MALFORMED));
        assert_eq!(parse_ip(&[], 0), Err(PASS_MALFORMED));
        assert_eq!(parse_ip(&v4[..10], 0), Err(PASS_MALFORMED));
        // Multicast.
        let m = Ip4::new([10, 0, 0, 1], [224, 0, 0, 5], 89, vec![]).bytes();
        assert_eq!(parse_ip(&m, 0), Err(PASS_NOT_FOR_US));
    }

    #[test]
    fn flow_and_reply_keys() {
        let p = parse_ethernet(&v4_frame(&[], &tcp4())).unwrap();
        let k = p.flow_key(7);
        let a = u32::from_ne_bytes([10, 0, 0, 1]);
        let b = u32::from_ne_bytes([192, 0, 2, 7]);
        assert_eq!(
            k,
            FlowKey {
                src: [a, 0, 0, 0],
                dst: [b, 0, 0, 0],
                sport: 40000,
                dport: 443,
                proto: TCP,
                family: 4,
                _pad: 0,
                ifindex: 7
            }
        );
        assert_eq!(
            p.reply_key(),
            FlowKey {
                src: [b, 0, 0, 0],
                dst: [a, 0, 0, 0],
                sport: 443,
                dport: 40000,
                proto: TCP,
                family: 4,
                _pad: 0,
                ifindex: 0
            }
        );
        // The words are the bytes as the packet carries them.
        assert_eq!(k.src[0].to_ne_bytes(), [10, 0, 0, 1]);

        let ip = Ip6::new(v6("2001:db8::1"), v6("2001:db8:1::2"), ICMP, vec![]);
        let p = parse_ethernet(&v6_frame(&[], &ip)).unwrap();
        let k = p.flow_key(3);
        assert_eq!(
            k.src,
            [
                u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                0,
                0,
                u32::from_ne_bytes([0, 0, 0, 1])
            ]
        );
        assert_eq!(
            k.dst,
            [
                u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                u32::from_ne_bytes([0, 1, 0, 0]),
                0,
                u32::from_ne_bytes([0, 0, 0, 2])
            ]
        );
        assert_eq!(
            (k.sport, k.dport, k.proto, k.family, k.ifindex),
            (0, 0, ICMP, 6, 3)
        );
        let r = p.reply_key();
        assert_eq!((r.src, r.dst, r.ifindex), (k.dst, k.src, 0));
    }
}
