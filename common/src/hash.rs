//! The flow hash that picks a router slot. Kernel and model call this one function, so a
//! flow lands on the same gateway in both; it must stay cheap (a handful of multiplies) and
//! free of loops the verifier would have to unroll.

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
