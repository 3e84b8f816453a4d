//! The flow hash that picks a router slot. Kernel and model call this one function, so a
//! flow lands on the same gateway in both; it must stay cheap (a handful of multiplies) and
//! free of loops the verifier would have to unroll. Also the flow cache's set index, which
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

/// First entry of `key`'s set in the flow cache ([`crate::FLOW_CACHE_MAP`]): a multiplicative
/// hash of the key folded to 32 bits, far cheaper than the flow table's jhash of 44 bytes.
#[inline(always)]
pub fn flow_cache_index(key: &crate::FlowKey) -> u32 {
    let s = key.src[0] ^ key.src[1] ^ key.src[2] ^ key.src[3];
    let d = key.dst[0] ^ key.dst[1] ^ key.dst[2] ^ key.dst[3];
    let h = s
        ^ d.rotate_left(16)
        ^ ((key.sport as u32) << 16 | key.dport as u32).wrapping_mul(0x85eb_ca6b)
        ^ (key.proto as u32 | key.ifindex << 8).wrapping_mul(0xc2b2_ae35);
    (finish(h) & (crate::FLOW_CACHE_SETS - 1)) * crate::FLOW_CACHE_WAYS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FLOW_CACHE_SETS, FLOW_CACHE_WAYS, FlowKey};

    /// The load test's shape: 4,096 flows varying addresses and ports. Every index is the
    /// first way of a set, and few sets get more flows than they have ways (those flows
    /// would keep evicting each other and take the flow-table path).
    #[test]
    fn flow_cache_index_spreads_flows_over_sets() {
        let mut per_set = vec![0u32; FLOW_CACHE_SETS as usize];
        for i in 0..4096u32 {
            let key = FlowKey {
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
            };
            let idx = flow_cache_index(&key);
            assert_eq!(idx % FLOW_CACHE_WAYS, 0);
            assert!(idx < FLOW_CACHE_SETS * FLOW_CACHE_WAYS);
            per_set[(idx / FLOW_CACHE_WAYS) as usize] += 1;
        }
        let evicting: u32 = per_set
            .iter()
            .copied()
            .filter(|&n| n > FLOW_CACHE_WAYS)
            .sum();
        // A uniform hash puts a flow in a set with two others or more with probability
        // 1 - e^-0.5 (1 + 0.5) = 9 % here (4,096 flows, 8,192 sets); a weak one, much more.
        assert!(
            evicting < 4096 * 12 / 100,
            "{evicting} of 4096 flows in over-full sets"
        );
    }
}
