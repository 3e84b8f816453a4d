//! Bit-vector classification: one lookup per field returns the bitmap of rules that accept
//! the packet's value of that field; the first bit set in the AND of all bitmaps is the
//! first matching rule. The cost grows with the bitmap words the rules use (64 rules a
//! word), not with their criteria.

use aya_ebpf::maps::lpm_trie::Key;
use xwan_common::{
    BITMAP_WORDS, IfaceRuleKey, RuleBitmap, dscp_index, portbm_index, portmap_index, proto_index,
};

use crate::{maps::*, parse::Pkt};

/// Runs `$step` on each bitmap word index in turn, written out, until it returns false.
macro_rules! each_word {
    ($step:expr) => {{
        let mut step = $step;
        #[allow(clippy::never_loop)] // the block `break`s leave early
        loop {
            each_word!(@ step; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24
                25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51
                52 53 54 55 56 57 58 59 60 61 62 63);
            break;
        }
    }};
    (@ $step:ident; $($w:literal)*) => {
        $( if !$step($w) { break; } )*
    };
}
const _: () = assert!(BITMAP_WORDS == 64, "each_word! writes out 64 steps");

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
    // Only the words this generation's rules use (the rest are zero), in steps written out
    // (`each_word!`): with a data-dependent end LLVM would keep a loop that walks pointers,
    // which 6.1's verifier cannot bound. The count is read afresh for each pass (volatile):
    // one the first pass's exits narrowed would make the verifier walk the rest once per
    // exit.
    let words = || {
        XWAN_CONFIG.get_ptr(0).map_or(BITMAP_WORDS, |c| {
            // SAFETY: a map value, valid for the program's run.
            let w = unsafe { core::ptr::read_volatile(&(*c).rule_words) };
            w[(generation & 1) as usize] as usize
        })
    };
    // The five non-prefix criteria, ANDed twice rather than kept: a bitmap on the stack
    // would leave `xwan_xdp_decide` no room (512 bytes), and the words are L1 hits.
    let criteria = |w: usize| proto.w[w] & dscp.w[w] & sport.w[w] & dport.w[w] & iface.w[w];
    let mut any = 0;
    let n = words();
    each_word!(|w: usize| {
        if w >= n {
            return false;
        }
        any |= criteria(w);
        true
    });
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
    let n = words();
    let mut found = None;
    each_word!(|w: usize| {
        if w >= n {
            return false;
        }
        let x = criteria(w) & src.w[w] & dst.w[w];
        if x != 0 {
            found = Some(w as u32 * 64 + trailing_zeros(x));
            return false;
        }
        true
    });
    found
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
