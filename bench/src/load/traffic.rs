//! What the source sends: traffic classes, one frame template per flow, the generator's
//! settings, and the counters the generator and the sinks keep. How it is sent: `source`.
//!
//! Each frame carries its class in the low 4 bits of the IPv4 identification / IPv6 flow
//! label, so a sink can tell which class arrived on which link without any lookup. L4
//! checksums are computed over a zero payload; the send time the generator writes into IPv4
//! payloads makes them stale, which no forwarding path checks (IPv4 UDP carries none).

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
};
use serde::Serialize;

use super::layout::*;

/// A traffic class: what the rules tell apart, and the link policy routing must pick.
pub struct Class {
    pub id: u8,
    /// Shown in the JSON's `classes`.
    pub name: &'static str,
    pub v6: bool,
    pub proto: u8,
    /// Destination ports the class's flows use (VoIP: a range start, see `dport`).
    pub dports: &'static [u16],
    pub dscp: u8,
    /// Link index (0-based) the policy sends this class to.
    pub link: usize,
    /// Share of the flows, in twentieths.
    pub weight: usize,
}

pub const EF: u8 = 46;

pub const CLASSES: [Class; 6] = [
    Class {
        id: 0,
        name: "http-v4",
        v6: false,
        proto: 6,
        dports: &[80, 443],
        dscp: 0,
        link: 0,
        weight: 6,
    },
    Class {
        id: 1,
        name: "sql-v4",
        v6: false,
        proto: 17,
        dports: &[1433, 3306],
        dscp: 0,
        link: 1,
        weight: 4,
    },
    Class {
        id: 2,
        name: "voip-v4",
        v6: false,
        proto: 17,
        dports: &[16384],
        dscp: EF,
        link: 2,
        weight: 3,
    },
    Class {
        id: 3,
        name: "http-v6",
        v6: true,
        proto: 6,
        dports: &[443],
        dscp: 0,
        link: 0,
        weight: 3,
    },
    Class {
        id: 4,
        name: "sql-v6",
        v6: true,
        proto: 17,
        dports: &[3306],
        dscp: 0,
        link: 1,
        weight: 2,
    },
    Class {
        id: 5,
        name: "voip-v6",
        v6: true,
        proto: 17,
        dports: &[16384],
        dscp: EF,
        link: 2,
        weight: 2,
    },
];

/// Frame sizes: all 64 bytes, or the simple IMIX 64/576/1500 in the proportions 7:4:1.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    #[serde(rename = "64")]
    Small,
    Imix,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Small => "64",
            Mix::Imix => "imix",
        }
    }

    /// The longest frame of the mix (IPv6/TCP headers alone take 74 bytes).
    pub fn longest(self) -> usize {
        match self {
            Mix::Small => 14 + 40 + 20,
            Mix::Imix => 1500,
        }
    }

    fn len(self, flow: usize) -> usize {
        match self {
            Mix::Small => 64,
            Mix::Imix => match flow % 12 {
                0..7 => 64,
                7..11 => 576,
                _ => 1500,
            },
        }
    }
}

/// The class of flow `i`: classes interleaved in proportion to their weights.
pub fn class_of(i: usize) -> &'static Class {
    let mut k = i % 20;
    for c in &CLASSES {
        if k < c.weight {
            return c;
        }
        k -= c.weight;
    }
    unreachable!("weights sum to 20")
}

/// Flow `i`'s frame to the router's LAN MAC, and where its send time goes (0 = nowhere).
pub fn frame(i: usize, mix: Mix, lan_mac: [u8; 6]) -> Frame {
    let c = class_of(i);
    let l3 = if c.v6 { 40 } else { 20 };
    let l4len = if c.proto == 6 { 20 } else { 8 };
    // IPv6 + TCP headers alone take 74 bytes: those "64-byte" frames are 74.
    let len = mix.len(i).max(14 + l3 + l4len);
    let sport = 1024 + (i * 7919 % 60000) as u16;
    let dport = if c.dports == [16384] {
        16384 + (i % 1000) as u16
    } else {
        c.dports[i / 20 % c.dports.len()]
    };
    let mut f = lan_mac.to_vec();
    f.extend_from_slice(&[0x02, 0x10, 0xad, 0, 0, 1]);
    let payload = len - 14 - l3 - l4len;
    let mut l4 = vec![0u8; l4len + payload];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if c.proto == 6 {
        l4[4..8].copy_from_slice(&(i as u32).to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = 0x10; // ACK
        l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    } else {
        l4[4..6].copy_from_slice(&((l4len + payload) as u16).to_be_bytes());
    }
    let (src, dst): (Vec<u8>, Vec<u8>) = if c.v6 {
        let mut s = vec![0xfd, 0, 0, 0x92, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        s[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut d = vec![
            0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        d[12..16].copy_from_slice(&((i * 7) as u32).to_be_bytes());
        (s, d)
    } else {
        let d = (i * 7) as u32;
        (
            vec![10, 91, (i >> 8) as u8, i as u8],
            vec![198, 18, (d >> 8) as u8, d as u8],
        )
    };
    // The pseudo-header sum for the L4 checksum.
    let mut pseudo = src.clone();
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, c.proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    if c.v6 || c.proto == 6 {
        let mut all = pseudo;
        all.extend_from_slice(&l4);
        let sum = checksum(&all);
        let at = if c.proto == 6 { 16 } else { 6 };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    if c.v6 {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let first = (6u32 << 28) | ((c.dscp as u32) << 22) | c.id as u32;
        f.extend_from_slice(&first.to_be_bytes());
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.extend_from_slice(&[c.proto, 64]);
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut h = vec![0x45, c.dscp << 2];
        h.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        h.extend_from_slice(&(c.id as u16).to_be_bytes());
        h.extend_from_slice(&[0x40, 0, 64, c.proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend(h);
    }
    if c.v6 {
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
    }
    f.extend(l4);
    debug_assert_eq!(f.len(), len);
    let ts_off = if !c.v6 && payload >= 8 {
        (14 + 20 + l4len) as u32
    } else {
        0
    };
    let sport_off = 14 + l3 as u32;
    Frame {
        bytes: f,
        ts_off,
        sport_off,
        // IPv4 UDP goes without a checksum.
        csum_off: match (c.v6, c.proto) {
            (false, 17) => 0,
            (_, 6) => sport_off + 16,
            _ => sport_off + 6,
        },
    }
}

/// A template's frame and where the generator writes into it (see [`Template`]).
pub struct Frame {
    pub bytes: Vec<u8>,
    pub ts_off: u32,
    pub sport_off: u32,
    pub csum_off: u32,
}

/// What the generator sends for flow `flow` when it sends `flows` (user space's copy of
/// `load_gen`'s work): template `flow % templates`, its source port plus `flow / templates`.
pub fn flow_frame(flow: usize, flows: usize, mix: Mix, lan_mac: [u8; 6]) -> Vec<u8> {
    let templates = flows.min(MAX_TEMPLATES as usize);
    let Frame {
        mut bytes,
        sport_off,
        csum_off,
        ..
    } = frame(flow % templates, mix, lan_mac);
    let shift = (flow / templates) as u16;
    if shift != 0 {
        let at = |off: u32| off as usize..off as usize + 2;
        let read = |b: &[u8], off| u16::from_be_bytes(b[at(off)].try_into().unwrap());
        let old = read(&bytes, sport_off);
        let new = old.wrapping_add(shift);
        bytes[at(sport_off)].copy_from_slice(&new.to_be_bytes());
        if csum_off != 0 {
            let csum = moved_port_checksum(read(&bytes, csum_off), old, new);
            bytes[at(csum_off)].copy_from_slice(&csum.to_be_bytes());
        }
    }
    bytes
}

/// The Internet checksum of `b`.
pub(super) fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for ch in b.chunks(2) {
        let w = if ch.len() == 2 {
            u16::from_be_bytes([ch[0], ch[1]])
        } else {
            u16::from_be_bytes([ch[0], 0])
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes `flows` templates and the generator's settings into the maps; each flow sends
/// `train` frames in a row before the next one's.
pub fn program(
    tools: &mut Ebpf,
    flows: usize,
    train: u32,
    mix: Mix,
    lan_mac: [u8; 6],
    gap_ns: u64,
) -> Result<()> {
    if flows == 0 || flows > MAX_FLOWS as usize {
        bail!("--flows must be 1..={MAX_FLOWS}");
    }
    let mut t: Array<_, Template> =
        Array::try_from(tools.map_mut("LOAD_TEMPLATES").context("LOAD_TEMPLATES")?)?;
    for i in 0..flows.min(MAX_TEMPLATES as usize) {
        let f = frame(i, mix, lan_mac);
        let mut v = Template {
            len: f.bytes.len() as u32,
            ts_off: f.ts_off,
            sport_off: f.sport_off,
            csum_off: f.csum_off,
            data: [0; TEMPLATE_BYTES],
        };
        v.data[..f.bytes.len()].copy_from_slice(&f.bytes);
        t.set(i as u32, v, 0)?;
    }
    set_rate(tools, flows, train, gap_ns)
}

/// Changes the generator's pace (takes effect at once, also while it runs).
pub fn set_rate(tools: &mut Ebpf, flows: usize, train: u32, gap_ns: u64) -> Result<()> {
    let mut c: Array<_, GenConfig> =
        Array::try_from(tools.map_mut("LOAD_GEN_CFG").context("LOAD_GEN_CFG")?)?;
    c.set(
        0,
        GenConfig {
            templates: flows.min(MAX_TEMPLATES as usize) as u32,
            train: train.max(1),
            gap_ns,
            flows: flows as u32,
            _pad: 0,
        },
        0,
    )?;
    Ok(())
}

/// Turns the sinks' latency histogram on or off and clears it.
pub fn set_latency(tools: &mut Ebpf, on: bool) -> Result<()> {
    let mut c: Array<_, SinkConfig> =
        Array::try_from(tools.map_mut("LOAD_SINK_CFG").context("LOAD_SINK_CFG")?)?;
    c.set(0, SinkConfig { latency: on as u32 }, 0)?;
    let mut h: PerCpuArray<_, u64> =
        PerCpuArray::try_from(tools.map_mut("LOAD_LATENCY").context("LOAD_LATENCY")?)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    for b in 0..LAT_BUCKETS {
        h.set(b, aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
    }
    Ok(())
}

/// The sinks' latency histogram (summed over CPUs), one count per [`LAT_BUCKET_NS`].
pub fn latency_histogram(tools: &Ebpf) -> Result<Vec<u64>> {
    let h: PerCpuArray<_, u64> =
        PerCpuArray::try_from(tools.map("LOAD_LATENCY").context("LOAD_LATENCY")?)?;
    (0..LAT_BUCKETS)
        .map(|b| Ok(h.get(&b, 0)?.iter().sum()))
        .collect()
}

/// Frames sent so far (all CPUs).
pub fn sent(tools: &Ebpf) -> Result<u64> {
    let s: PerCpuArray<_, GenState> =
        PerCpuArray::try_from(tools.map("LOAD_GEN_STATE").context("LOAD_GEN_STATE")?)?;
    Ok(s.get(&0, 0)?.iter().map(|v| v.sent).sum())
}

/// Packets per class counted by the sink program on interface `ifindex` (its namespace).
pub fn received(tools: &Ebpf, ifindex: u32) -> Result<[u64; MAX_CLASSES as usize]> {
    let m: PerCpuArray<_, SinkCount> =
        PerCpuArray::try_from(tools.map("LOAD_SINK_CNT").context("LOAD_SINK_CNT")?)?;
    let mut out = [0; MAX_CLASSES as usize];
    for (c, o) in out.iter_mut().enumerate() {
        let slot = (ifindex & 63) * MAX_CLASSES + c as u32;
        *o = m.get(&slot, 0)?.iter().map(|v| v.packets).sum();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's sender sends frames `Mix::longest` long: no template may be longer.
    #[test]
    fn longest_is_the_longest_template() {
        for mix in [Mix::Small, Mix::Imix] {
            let longest = (0..MAX_TEMPLATES as usize)
                .map(|i| frame(i, mix, [2, 0, 0, 0, 0, 1]).bytes.len())
                .max();
            assert_eq!(longest, Some(mix.longest()), "{mix:?}");
        }
    }

    /// More flows than templates: each is a distinct 5-tuple, sent with right checksums.
    #[test]
    fn flows_beyond_the_templates_are_distinct_with_right_checksums() {
        let flows = 3 * MAX_TEMPLATES as usize + 17;
        let lan = [2, 0, 0, 0, 0, 1];
        let mut seen = std::collections::HashSet::new();
        for flow in (0..flows).step_by(7).chain([flows - 1]) {
            let f = flow_frame(flow, flows, Mix::Small, lan);
            let v6 = f[12..14] == [0x86, 0xdd];
            let (src, l4) = if v6 { (22..38, 54) } else { (26..30, 34) };
            assert!(
                seen.insert((f[src].to_vec(), f[l4..l4 + 2].to_vec())),
                "flow {flow} repeats another's source"
            );
            let proto = if v6 { f[20] } else { f[23] };
            if v6 || proto == 6 {
                assert_eq!(
                    super::super::confirm::l4_checksum(&f),
                    0,
                    "flow {flow}: checksum"
                );
            }
        }
        // The first templates' flows are the templates themselves.
        assert_eq!(
            flow_frame(5, flows, Mix::Small, lan),
            frame(5, Mix::Small, lan).bytes
        );
    }
}
