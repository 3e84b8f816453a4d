//! The eBPF object (`ebpf-prog`, built by `agent/build.rs`) embedded in the agent binary, so
//! the agent and its kernel programs always come from the same build.

/// The eBPF ELF object holding every xwan program and map, 8-byte aligned as aya requires.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XWAN_EBPF_OBJECT"));

/// Path the object was built at (for messages only; the bytes above are what is loaded).
pub const EBPF_OBJECT_PATH: &str = env!("XWAN_EBPF_OBJECT");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_an_aligned_bpf_elf() {
        assert_eq!(
            &EBPF_OBJECT[..4],
            b"\x7fELF",
            "{EBPF_OBJECT_PATH} is not an ELF file"
        );
        assert_eq!(EBPF_OBJECT[4], 2, "ELF64");
        assert_eq!(EBPF_OBJECT[5], 1, "little endian (bpfel)");
        assert_eq!(
            u16::from_le_bytes([EBPF_OBJECT[18], EBPF_OBJECT[19]]),
            247,
            "EM_BPF"
        );
        assert_eq!(EBPF_OBJECT.as_ptr() as usize % 8, 0);
    }
}
