//! Frame builders for tests: Ethernet with VLAN tags, IPv4 (options, fragments), IPv6
//! (extension headers), TCP/UDP/SCTP/ICMP. Checksums of IPv4 headers are correct unless a
//! test breaks them on purpose.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Ethernet header + VLAN tags (TPIDs in `vlans`, outermost first, VID 100 + i) + payload.
pub fn eth(dst: [u8; 6], src: [u8; 6], vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (i, tpid) in vlans.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// L4 header with ports (TCP 20 bytes, UDP 8, SCTP 12) or ICMP echo (8), then `payload`.
pub fn l4(proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = match proto {
        6 => {
            let mut h = vec![0u8; 20];
            h[12] = 5 << 4;
            h[13] = 0x02; // SYN
            h
        }
        17 => {
            let mut h = vec![0u8; 8];
            h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            h
        }
        132 => vec![0u8; 12],
        1 | 58 => {
            let t = if proto == 1 { 8 } else { 128 };
            let mut h = vec![t, 0, 0, 0, 0x12, 0x34, 0, 1];
            h.truncate(8);
            h
        }
        _ => vec![0u8; 8],
    };
    if matches!(proto, 6 | 17 | 132) {
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
    }
    h.extend_from_slice(payload);
    h
}

pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Options, padded to a multiple of 4 by the builder.
    pub options: Vec<u8>,
    /// Fragment offset in 8-byte units and the MF flag.
    pub frag_offset: u16,
    pub more_fragments: bool,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> V4 {
        V4 {
            src,
            dst,
            proto,
            ttl: 64,
            tos: 0,
            options: vec![],
            frag_offset: 0,
            more_fragments: false,
        }
    }

    /// IPv4 header (checksum correct) followed by `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hl = 20 + opts.len();
        let mut h = vec![0u8; hl];
        h[0] = 0x40 | (hl / 4) as u8;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let frag = (self.frag_offset & 0x1fff) | if self.more_fragments { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h[20..].copy_from_slice(&opts);
        let c = xwan_common::csum::ipv4_header_sum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// One IPv6 extension header: (kind, length in 8-byte units beyond the first for 0/43/60,
/// or the AH payload length field for 51, or the fragment offset for 44).
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop(u8),
    Routing(u8),
    DestOpts(u8),
    Ah(u8),
    Fragment { offset: u16, more: bool },
}

impl Ext {
    fn code(&self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::Routing(_) => 43,
            Ext::DestOpts(_) => 60,
            Ext::Ah(_) => 51,
            Ext::Fragment { .. } => 44,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match *self {
            Ext::HopByHop(l) | Ext::Routing(l) | Ext::DestOpts(l) => {
                let mut b = vec![0u8; (l as usize + 1) * 8];
                b[0] = next;
                b[1] = l;
                if b.len() > 2 {
                    b[2] = 1; // PadN
                    b[3] = (b.len() - 4) as u8;
                }
                b
            }
            Ext::Ah(l) => {
                let mut b = vec![0u8; (l as usize + 2) * 4];
                b[0] = next;
                b[1] = l;
                b
            }
            Ext::Fragment { offset, more } => {
                let mut b = vec![0u8; 8];
                b[0] = next;
                let f = (offset << 3) | more as u16;
                b[2..4].copy_from_slice(&f.to_be_bytes());
                b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
                b
            }
        }
    }
}

pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Upper-layer protocol (after the extension headers).
    pub proto: u8,
    pub hop_limit: u8,
    pub tclass: u8,
    pub exts: Vec<Ext>,
}

impl V6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, proto: u8) -> V6 {
        V6 {
            src,
            dst,
            proto,
            hop_limit: 64,
            tclass: 0,
            exts: vec![],
        }
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map(|n| n.code()).unwrap_or(self.proto);
            body.extend(e.bytes(next));
        }
        body.extend_from_slice(payload);
        let first = self.exts.first().map(|e| e.code()).unwrap_or(self.proto);
        let mut h = vec![0u8; 40];
        h[0] = 0x60 | (self.tclass >> 4);
        h[1] = self.tclass << 4;
        h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        h[6] = first;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        h.extend(body);
        h
    }
}
