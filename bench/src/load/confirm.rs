//! The `xwan-offload` mode's established flows: before its windows, every flow is confirmed
//! by conntrack the way real traffic confirms it, with a reply.
//!
//! The router runs the standard stateful forward policy (`FIREWALL`). Each flow's frame is
//! sent once from the source side (conntrack: new, accepted from the LAN), then one reply per
//! flow from its link's sink (addresses and ports swapped; TCP: an acknowledgement of the
//! segment), which the router forwards back to the LAN (conntrack: seen both ways; TCP
//! assured), then each flow's frame again after [`UDP_STREAM`] (conntrack assures a UDP
//! stream still alive after two seconds). The agent, following conntrack, then offloads the
//! flows; [`prime`] waits until it has and says how many it did.
//!
//! The generator's TCP checksums go stale when it stamps send times, so conntrack's checksum
//! check is off in the router namespace for this mode (`nf_conntrack_checksum = 0`): a
//! router's LAN traffic arrives with valid checksums.
//!
//! `xwan-offload-nat` masquerades every link ([`masquerade`]): a flow's reply then goes to
//! the address and port conntrack chose, read from its entry.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use xwan_common::{FLOW_OFFLOADED, FLOWS_MAP, FlowKey, FlowValue};
use xwan_testkit::Netns;

use super::{
    topology::Topology,
    traffic::{self, Mix},
};

/// The router's firewall in this mode (nftables): established and related accepted, invalid
/// dropped and counted, new connections from the LAN accepted, the rest dropped.
pub fn firewall(lan_dev: &str) -> String {
    format!(
        "table inet xoffload {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state invalid counter drop
    iifname \"{lan_dev}\" accept
  }}
}}
"
    )
}

/// `xwan-offload-nat`'s source NAT (nftables): masquerade out of every link, to ports
/// 20000-59999 so that conntrack translates the port as well as the address.
pub fn masquerade(link_devs: &[String]) -> String {
    format!(
        "table inet xnat {{
  chain post {{
    type nat hook postrouting priority 100; policy accept;
    oifname {{ {} }} meta l4proto {{ tcp, udp }} masquerade to :20000-59999
  }}
}}
",
        link_devs
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// How long after a UDP flow's first packet conntrack assures it (2 s), with a margin.
const UDP_STREAM: Duration = Duration::from_millis(2200);

/// How long the agent may take to offload every flow.
const OFFLOAD_WAIT: Duration = Duration::from_secs(5);

/// Confirms `flows` flows (see the module docs; `nat`: the links masquerade) and waits until
/// the agent, whose pins are in `pin_dir`, offloaded them all (an error says which it did
/// not).
pub fn prime(topo: &Topology, flows: usize, pin_dir: &Path, nat: bool) -> Result<()> {
    let forward: Vec<Vec<u8>> = (0..flows)
        .map(|i| traffic::flow_frame(i, flows, Mix::Small, topo.lan_mac))
        .collect();
    send(&topo.src, topo.src_ifindex, &forward).context("sending each flow's first frame")?;
    std::thread::sleep(Duration::from_millis(100));
    for (l, dev) in topo.sink_ifindex.iter().enumerate() {
        let replies: Vec<Vec<u8>> = forward
            .iter()
            .enumerate()
            .filter(|(i, _)| traffic::class_of(*i).link == l)
            .map(|(_, f)| {
                let r = reply(f, topo.link_macs[l], topo.sink_macs[l]);
                if nat { translated(topo, f, r) } else { Ok(r) }
            })
            .collect::<Result<_>>()?;
        send(&topo.sink, *dev, &replies).with_context(|| format!("replies on link {}", l + 1))?;
    }
    std::thread::sleep(UDP_STREAM);
    send(&topo.src, topo.src_ifindex, &forward).context("sending each flow's frame again")?;

    let flows_map = HashMap::<MapData, FlowKey, FlowValue>::try_from(Map::LruHashMap(
        MapData::from_pin(pin_dir.join(FLOWS_MAP)).context("the agent's flow table")?,
    ))?;
    let offloaded = || {
        flows_map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & FLOW_OFFLOADED != 0)
            .count()
    };
    let t = Instant::now();
    let mut n = offloaded();
    while n < flows && t.elapsed() < OFFLOAD_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        n = offloaded();
    }
    if n < flows {
        // What conntrack says of a few flows left on the kernel path.
        let samples: Vec<String> = flows_map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & FLOW_OFFLOADED == 0)
            .take(3)
            .map(|(k, _)| {
                let original = FlowKey { ifindex: 0, ..k };
                let entry = topo
                    .rtr
                    .run(|| Ok(xwan::netlink::conntrack::Conntrack::new()?.get(&original)?));
                format!("{k:?}: conntrack {entry:?}")
            })
            .collect();
        bail!(
            "the agent offloaded {n} of the {flows} confirmed flows within {OFFLOAD_WAIT:?}; \
             some of the others:\n{}",
            samples.join("\n")
        );
    }
    Ok(())
}

/// The reply to `frame` from the sink of its link: MACs for the router's link, addresses and
/// ports swapped (which keeps the IPv4 header's and UDP's checksums); a TCP segment becomes
/// an acknowledgement of `frame`'s, with its checksum computed anew.
fn reply(frame: &[u8], router_mac: [u8; 6], sink_mac: [u8; 6]) -> Vec<u8> {
    let mut r = frame.to_vec();
    r[0..6].copy_from_slice(&router_mac);
    r[6..12].copy_from_slice(&sink_mac);
    let v6 = r[12..14] == [0x86, 0xdd];
    let (src, len, l4, proto) = if v6 {
        (14 + 8, 16, 14 + 40, r[14 + 6])
    } else {
        (14 + 12, 4, 14 + 20, r[14 + 9])
    };
    let (a, b) = r[src..src + 2 * len].split_at_mut(len);
    a.swap_with_slice(b);
    let (sport, dport) = r[l4..l4 + 4].split_at_mut(2);
    sport.swap_with_slice(dport);
    if proto == 6 {
        let seq = u32::from_be_bytes(r[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
        let payload = (r.len() - l4 - 20) as u32;
        r[l4 + 4..l4 + 8].copy_from_slice(&0u32.to_be_bytes());
        r[l4 + 8..l4 + 12].copy_from_slice(&seq.wrapping_add(payload).to_be_bytes());
        r[l4 + 13] = 0x10; // ACK
        r[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let sum = l4_checksum(&r);
        r[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    }
    r
}

/// `reply` (to `frame`) sent to where conntrack translated `frame`'s source: the
/// destination address and port of the reply direction of its entry, checksums made anew.
fn translated(topo: &Topology, frame: &[u8], reply: Vec<u8>) -> Result<Vec<u8>> {
    let original = xwan_common::model::parse_ethernet(frame)
        .map_err(|r| anyhow::anyhow!("a flow's frame does not parse (reason {r})"))?
        .flow_key(0);
    let entry = topo
        .rtr
        .run(|| Ok(xwan::netlink::conntrack::Conntrack::new()?.get(&original)?))?
        .with_context(|| format!("no conntrack entry for {original:?}"))?;
    Ok(readdressed(reply, &entry.reply.dst, entry.reply.dport))
}

/// `r` (an untagged IPv4 or IPv6 TCP / UDP frame) to destination `dst` (raw words) and port
/// `dport`, with its IPv4 header and TCP / UDP checksums computed anew.
fn readdressed(mut r: Vec<u8>, dst: &[u32; 4], dport: u16) -> Vec<u8> {
    let v6 = r[12..14] == [0x86, 0xdd];
    let (src, len, l4, proto) = if v6 {
        (14 + 8, 16, 14 + 40, r[14 + 6])
    } else {
        (14 + 12, 4, 14 + 20, r[14 + 9])
    };
    let bytes: Vec<u8> = dst.iter().flat_map(|w| w.to_ne_bytes()).collect();
    r[src + len..src + 2 * len].copy_from_slice(&bytes[..len]);
    r[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
    if !v6 {
        r[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = traffic::checksum(&r[14..34]);
        r[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let at = l4 + if proto == 6 { 16 } else { 6 };
    r[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = match l4_checksum(&r) {
        0 if proto == 17 => 0xffff,
        s => s,
    };
    r[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    r
}

/// The Internet checksum of an untagged IPv4 or IPv6 frame's TCP / UDP segment with its
/// pseudo-header, the segment's checksum field as it is: the value to write into a zeroed
/// field, 0 when the field is right.
pub(super) fn l4_checksum(r: &[u8]) -> u16 {
    let v6 = r[12..14] == [0x86, 0xdd];
    let (src, len, l4, proto) = if v6 {
        (14 + 8, 16, 14 + 40, r[14 + 6])
    } else {
        (14 + 12, 4, 14 + 20, r[14 + 9])
    };
    let mut pseudo = r[src..src + 2 * len].to_vec();
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&((r.len() - l4) as u16).to_be_bytes());
    pseudo.extend_from_slice(&r[l4..]);
    traffic::checksum(&pseudo)
}

/// Sends `frames` out of interface `ifindex` of `ns` (a packet socket), a few at a time so
/// that the receiving veth's backlog never overflows.
fn send(ns: &Netns, ifindex: u32, frames: &[Vec<u8>]) -> Result<()> {
    ns.run(|| {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields used are set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        for (i, f) in frames.iter().enumerate() {
            // A full send buffer (ENOBUFS) empties in a moment: wait, within a bound.
            let mut tries = 0;
            loop {
                // SAFETY: `f` and `to` are live for the call, with their sizes.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                let e = std::io::Error::last_os_error();
                if n >= 0 {
                    break;
                }
                tries += 1;
                if e.raw_os_error() != Some(libc::ENOBUFS) || tries > 1000 {
                    bail!("sending frame {i}: {e}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if i % 128 == 127 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_mirrors_its_frame_and_acknowledges_tcp() {
        let lan = [2, 0, 0, 0, 0, 1];
        let (router, sink) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        for i in 0..20 {
            let f = traffic::frame(i, Mix::Small, lan).bytes;
            let r = reply(&f, router, sink);
            assert_eq!((&r[0..6], &r[6..12]), (&router[..], &sink[..]));
            assert_eq!(r.len(), f.len());
            let v6 = f[12..14] == [0x86, 0xdd];
            let (src, len, l4) = if v6 { (22, 16, 54) } else { (26, 4, 34) };
            assert_eq!(r[src..src + len], f[src + len..src + 2 * len], "flow {i}");
            assert_eq!(r[l4..l4 + 2], f[l4 + 2..l4 + 4], "flow {i}");
            let proto = if v6 { f[20] } else { f[23] };
            if proto == 6 {
                assert_eq!(r[l4 + 13], 0x10, "an ACK");
                assert_eq!(l4_checksum(&r), 0, "TCP checksum of flow {i}");
            }
        }
    }

    #[test]
    fn a_readdressed_reply_goes_to_the_translation_with_right_checksums() {
        let lan = [2, 0, 0, 0, 0, 1];
        let (router, sink) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        for i in 0..20 {
            let f = traffic::frame(i, Mix::Small, lan).bytes;
            let v6 = f[12..14] == [0x86, 0xdd];
            let dst = if v6 {
                [0x2001_0db8u32.to_be(), 0, 0, 1u32.to_be()]
            } else {
                [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0]
            };
            let r = readdressed(reply(&f, router, sink), &dst, 20001);
            let p = xwan_common::model::parse_ethernet(&r).unwrap();
            let k = p.flow_key(0);
            assert_eq!((k.dst, k.dport), (dst, 20001), "flow {i}");
            if !v6 {
                assert_eq!(traffic::checksum(&r[14..34]), 0, "IPv4 header of flow {i}");
            }
            assert_eq!(l4_checksum(&r), 0, "L4 checksum of flow {i}");
        }
    }
}
