//! Bit-vector classification: one lookup per field returns the bitmap of rules that accept
//! the packet's value of that field; the first bit set in the AND of all bitmaps is the
//! first matching rule. The cost is the same for 10 rules and for `MAX_RULES`.

use aya_ebpf::maps::lpm_trie::Key;
use xwan_common::{
    BITMAP_WORDS, IfaceRuleKey, RuleBitmap, dscp_index, portbm_index, portmap_index, proto_index,
};

use crate::{maps::*, parse::Pkt};

/// Index of the first rule matching `p` on `ifindex` in ruleset generation `gen`.
///
/// The array and hash lookups come first and are ANDed; only when some rule survives them
/// are the two LPM tries walked (their cost grows with the number of prefixes, the arrays'
/// does not), so most misses never reach them.
#[inline(always)]
pub fn classify(p: &Pkt, generation: u32, ifindex: u32) -> Option<u32> {
    let proto = XWAN_PROTO.get(proto_index(generation, p.proto))?;
    let dscp = XWAN_DSCP.get(dscp_index(generation, p.dscp))?;
    // Class 0 = "no ports": a port-less packet (ICMP, non-first fragment) can only match
    // rules without a port criterion.
    let (sclass, dclass) = if p.has_ports {
        let s = XWAN_PORTMAP.get(portmap_index(generation, 0))?;
        let d = XWAN_PORTMAP.get(portmap_index(generation, 1))?;
        (
            s.class[p.sport as usize] as u32,
            d.class[p.dport as usize] as u32,
        )
    } else {
        (0, 0)
    };
    let sport = XWAN_PORTBM.get(portbm_index(generation, 0, sclass))?;
    let dport = XWAN_PORTBM.get(portbm_index(generation, 1, dclass))?;
    // SAFETY: values are plain data; the agent does not touch a generation while it is live.
    let iface = unsafe {
        match XWAN_IFBM.get(IfaceRuleKey {
            generation,
            ifindex,
        }) {
            Some(b) => b,
            None => XWAN_IFBM.get(IfaceRuleKey {
                generation,
                ifindex: 0,
            })?,
        }
    };
    // The five non-prefix criteria, ANDed twice rather than kept: a 128-byte bitmap on the
    // stack would leave `xwan_xdp_decide` no room (512 bytes), and the words are L1 hits.
    let criteria = |w: usize| proto.w[w] & dscp.w[w] & sport.w[w] & dport.w[w] & iface.w[w];
    let mut any = 0;
    for w in 0..BITMAP_WORDS {
        any |= criteria(w);
    }
    if any == 0 {
        return None;
    }

    let g = generation as u8;
    let (src, dst) = if p.v6 {
        (lpm6(&XWAN_SRC6, g, &p.src)?, lpm6(&XWAN_DST6, g, &p.dst)?)
    } else {
        (
            lpm4(&XWAN_SRC4, g, p.src[0])?,
            lpm4(&XWAN_DST4, g, p.dst[0])?,
        )
    };
    for w in 0..BITMAP_WORDS {
        let x = criteria(w) & src.w[w] & dst.w[w];
        if x != 0 {
            return Some(w as u32 * 64 + trailing_zeros(x));
        }
    }
    None
}

#[inline(always)]
fn lpm4(
    map: &aya_ebpf::maps::LpmTrie<xwan_common::Lpm4Data, RuleBitmap>,
    g: u8,
    addr: u32,
) -> Option<&'static RuleBitmap> {
    let a = addr.to_ne_bytes();
    let key = Key::new(64, [g, 0, 0, 0, a[0], a[1], a[2], a[3]]);
    // SAFETY: map values live as long as the map (static).
    map.get(&key).map(|v| unsafe { &*(v as *const RuleBitmap) })
}

#[inline(always)]
fn lpm6(
    map: &aya_ebpf::maps::LpmTrie<xwan_common::Lpm6Data, RuleBitmap>,
    g: u8,
    addr: &[u32; 4],
) -> Option<&'static RuleBitmap> {
    // Built from words: byte stores with three zero bytes after `g` become a `memset` call,
    // which Linux 6.1's verifier cannot follow with its precision tracking (see lan.rs).
    let words: [u32; 5] = [g as u32, addr[0], addr[1], addr[2], addr[3]];
    // SAFETY: [u32; 5] and [u8; 20] have the same size; little-endian puts `g` first (bpfel).
    let data = unsafe { core::mem::transmute::<[u32; 5], [u8; 20]>(words) };
    let key = Key::new(160, data);
    // SAFETY: as in lpm4.
    map.get(&key).map(|v| unsafe { &*(v as *const RuleBitmap) })
}

/// `x.trailing_zeros()` for `x != 0` without a lookup table (BPF has no ctz instruction).
#[inline(always)]
fn trailing_zeros(mut x: u64) -> u32 {
    let mut n = 0;
    if x & 0xffff_ffff == 0 {
        n += 32;
        x >>= 32;
    }
    if x & 0xffff == 0 {
        n += 16;
        x >>= 16;
    }
    if x & 0xff == 0 {
        n += 8;
        x >>= 8;
    }
    if x & 0xf == 0 {
        n += 4;
        x >>= 4;
    }
    if x & 0x3 == 0 {
        n += 2;
        x >>= 2;
    }
    if x & 0x1 == 0 {
        n += 1;
    }
    n
}
