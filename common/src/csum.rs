//! Incremental IPv4 header checksum update (RFC 1624, eqn. 3), used when the data plane
//! rewrites TTL or DSCP. Tests verify results by recomputing the whole checksum, so a bug
//! here cannot hide behind kernel and model sharing it.

/// New checksum after one 16-bit header word changes from `old` to `new`.
/// All values are in network byte order as read from the packet (`u16::from_be_bytes`).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m'), in one's complement arithmetic.
    let mut sum = (!check as u32) + (!old as u32 & 0xffff) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Full IPv4 header checksum of `hdr` (checksum field included as-is; a correct header
/// sums to zero). For tests and user space.
#[cfg(feature = "std")]
pub fn ipv4_header_sum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in hdr.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
