//! The flow hash that picks a router slot. Kernel and model call this one function, so a
//! flow lands on the same gateway in both; it must stay cheap (a handful of multiplies) and
//! free of loops the verifier would have to unroll. Also the flow cache's entry indices, which
//! only the kernel uses (a collision costs a flow-table lookup, never a wrong answer).

/// Mixes one 32-bit word into the state (murmur3's block step).
#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// murmur3's finaliser: spreads every input bit over the low bits the slot index uses.
#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a source address alone (`load_balancing = "source"`). Addresses are the raw
/// network-order words of [`crate::FlowKey`] (IPv4 in word 0, the rest zero).
#[inline(always)]
pub fn source_hash(src: &[u32; 4]) -> u32 {
    let mut h = 0x7761_6e31; // "wan1": any fixed seed
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    finish(h)
}

/// Hash of the connection 5-tuple (`load_balancing = "connection"`).
#[inline(always)]
pub fn connection_hash(src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = 0x7761_6e32;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    h = mix(h, proto as u32);
    finish(h)
}

/// The two entries of the flow cache ([`crate::FLOW_CACHE_MAP`]) that may hold `key`: one
/// in each bank, at indices taken from different bits of one hash. A multiplicative hash of
/// the key folded to 32 bits, far cheaper than the flow table's jhash of 44 bytes.
///
/// Skewed rather than set-associative: two flows that share an entry in one bank rarely
/// share one in the other, so flows that collide settle into different entries instead of
/// evicting each other for ever. With 4,096 flows taking turns, a 2-way set-associative
/// cache of the same size left 9 % of them missing every time (three flows to a set); here
/// every flow of that load can keep an entry of its own (the test below).
#[inline(always)]
pub fn flow_cache_slots(key: &crate::FlowKey) -> [u32; crate::FLOW_CACHE_BANKS as usize] {
    const MASK: u32 = crate::FLOW_CACHE_BANK_ENTRIES - 1;
    const _: () = assert!(crate::FLOW_CACHE_BANKS == 2 && MASK < 1 << 16);
    let s = key.src[0] ^ key.src[1] ^ key.src[2] ^ key.src[3];
    let d = key.dst[0] ^ key.dst[1] ^ key.dst[2] ^ key.dst[3];
    let h = finish(
        s ^ d.rotate_left(16)
            ^ ((key.sport as u32) << 16 | key.dport as u32).wrapping_mul(0x85eb_ca6b)
            ^ (key.proto as u32 | key.ifindex << 8).wrapping_mul(0xc2b2_ae35),
    );
    [
        h & MASK,
        crate::FLOW_CACHE_BANK_ENTRIES + ((h >> 16) & MASK),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FLOW_CACHE_BANK_ENTRIES, FLOW_CACHE_BANKS, FlowKey};

    /// The load test's shape: flows varying addresses and ports.
    fn load_test_flow(i: u32) -> FlowKey {
        FlowKey {
            src: [
                u32::from_be_bytes([10, 1, (i >> 8) as u8, i as u8]),
                0,
                0,
                0,
            ],
            dst: [u32::from_be_bytes([198, 18, 0, (i % 7) as u8]), 0, 0, 0],
            sport: 1024 + (i % 4000) as u16,
            dport: [80, 443, 1433, 3306][i as usize % 4],
            proto: 6,
            family: 4,
            _pad: 0,
            ifindex: 7,
        }
    }

    /// Every flow of the load test (4,096 flows) can hold an entry of its own at once. Seen
    /// as a graph (entries are vertices, each flow an edge between its two entries), that is
    /// true exactly when no connected part has more flows than entries. A weak or a
    /// set-associative index fails it: three flows on the same pair of entries.
    #[test]
    fn flow_cache_slots_leave_every_flow_an_entry() {
        let total = (FLOW_CACHE_BANKS * FLOW_CACHE_BANK_ENTRIES) as usize;
        let mut parent: Vec<usize> = (0..total).collect();
        fn root(parent: &mut [usize], mut v: usize) -> usize {
            while parent[v] != v {
                parent[v] = parent[parent[v]];
                v = parent[v];
            }
            v
        }
        let mut edges = Vec::new();
        for i in 0..4096 {
            let [a, b] = flow_cache_slots(&load_test_flow(i));
            assert!(a < FLOW_CACHE_BANK_ENTRIES, "first entry in bank 0");
            assert!((FLOW_CACHE_BANK_ENTRIES..2 * FLOW_CACHE_BANK_ENTRIES).contains(&b));
            edges.push((a as usize, b as usize));
            let (ra, rb) = (root(&mut parent, a as usize), root(&mut parent, b as usize));
            parent[ra] = rb;
        }
        let (mut vertices, mut flows) = (vec![0u32; total], vec![0u32; total]);
        for v in 0..total {
            let r = root(&mut parent, v);
            vertices[r] += 1;
        }
        for (a, _) in edges {
            let r = root(&mut parent, a);
            flows[r] += 1;
        }
        let overfull: u32 = (0..total)
            .filter(|&r| flows[r] > vertices[r])
            .map(|r| flows[r])
            .sum();
        assert_eq!(
            overfull, 0,
            "{overfull} of 4096 flows cannot all keep an entry"
        );
    }
}
