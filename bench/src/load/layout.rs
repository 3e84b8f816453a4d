//! Map layouts shared by the load-test eBPF programs (`bench/ebpf-load`, which includes this
//! file with `#[path]`) and `cargo xtask load`. `no_std`-clean and `#[repr(C)]`: change both
//! sides together by changing this file only.

/// Largest frame a template holds (IMIX's 1,500 bytes fit). A power of two: the generator
/// bounds the copy length with a mask, which the verifier follows.
pub const TEMPLATE_BYTES: usize = 2048;
/// Templates the generator cycles through. More flows than templates are the templates'
/// frames with their source port moved on (see [`GenConfig::flows`]).
pub const MAX_TEMPLATES: u32 = 4096;
/// Flows the generator can send: every template with 256 source ports.
pub const MAX_FLOWS: u32 = MAX_TEMPLATES * 256;
/// Traffic classes the sink tells apart (the low 4 bits of the IPv4 ID / IPv6 flow label).
pub const MAX_CLASSES: u32 = 16;
/// Sink counter slots: `(ingress ifindex & 63) * MAX_CLASSES + class`.
#[allow(dead_code)] // used by the eBPF side only
pub const SINK_SLOTS: u32 = 64 * MAX_CLASSES;
/// Latency histogram buckets of [`LAT_BUCKET_NS`] each; the last one collects the rest.
pub const LAT_BUCKETS: u32 = 4096;
pub const LAT_BUCKET_NS: u64 = 1024;

/// One flow's frame, copied into every packet the generator sends for it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Template {
    /// Frame length in bytes (60..=TEMPLATE_BYTES; user space checks the lower bound).
    pub len: u32,
    /// Offset where the generator writes its send time (u64, native order); 0 = none.
    pub ts_off: u32,
    /// Offset of the TCP/UDP source port (even); 0 = none.
    pub sport_off: u32,
    /// Offset of the TCP/UDP checksum (even), which a new source port updates; 0 = none
    /// (IPv4 UDP sent without one).
    pub csum_off: u32,
    pub data: [u8; TEMPLATE_BYTES],
}

/// Generator settings (array index 0).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GenConfig {
    /// How many templates are in use (1..=MAX_TEMPLATES).
    pub templates: u32,
    /// Frames each flow sends in a row (1 = every frame is the next flow's).
    pub train: u32,
    /// Rate limit: at least this many ns between two frames sent (0 = as fast as possible).
    pub gap_ns: u64,
    /// Flows sent in turn (templates..=MAX_FLOWS): flow f is template `f % templates` with
    /// its source port plus `f / templates`.
    pub flows: u32,
    pub _pad: u32,
}

/// Generator state (per-CPU array index 0).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GenState {
    /// Program runs (including those the rate limit turned into drops).
    pub runs: u64,
    /// Frames handed to the interface.
    pub sent: u64,
    /// Earliest time of the next frame under a rate limit.
    pub next_ns: u64,
}

/// Packets and bytes (per-CPU).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SinkCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Sink settings (array index 0).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SinkConfig {
    /// Non-zero: record one-way latency of IPv4 frames carrying a send time.
    pub latency: u32,
}

/// Links the bare redirect programs know (array and DEVMAP size).
pub const RDR_LINKS: u32 = 3;

/// A bare redirect program's next hop on one link (array index = link index).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RedirectConfig {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// The TCP/UDP checksum `csum` once the source port `old` is `new` (RFC 1624: the sum's
/// difference only). A result of 0 is written 0xffff, which UDP needs (0 = no checksum) and
/// TCP accepts (both are zero in one's complement).
#[inline(always)]
pub fn moved_port_checksum(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!csum) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}
