//! The load test's network: three namespaces the test creates and deletes.
//!
//! ```text
//!  src ──veth── rtr ──veth w1── sink (k1: 192.0.2.2,  fd00:91:1::2)
//!  (xs)        (xl) ──veth w2──      (k2: 192.0.2.6,  fd00:91:2::2)
//!                   ──veth w3──      (k3: 192.0.2.10, fd00:91:3::2)
//! ```
//! The source sends with `load_gen` (live frames, `XDP_TX` out of `xs`) or, where the kernel
//! refuses live frames, through the relay's feeder veth pair (`xf…a` → `xf…b`, in `src`),
//! whose `load_relay` redirects into `xs` (see `relay`). The router is the system under test;
//! the sinks count and drop with `load_sink` (ARP/ICMP go to their kernel, so the agent's
//! probes are answered). Every veth that receives runs threaded NAPI, so its
//! receive work is a kernel thread the harness can pin and account: the router's LAN
//! receive (where all forwarding work happens) on the router CPU, the sinks on the source CPU
//! (they are cheap; the source runs at the lowest priority there, so sinks never back up).
//!
//! The TUN variant (`--links tun`) adds three TUN devices in the router namespace as
//! stand-ins for routed tunnels (xwan's TC redirect path). Nobody reads them during a
//! window: the kernel counts what the router handed them (queued, then dropped), and the
//! harness reads the queued frames afterwards to check each class's link.
//!
//! Device names carry a per-process tag so that their NAPI threads (`napi/DEV-ID`) can be
//! told apart from other tests' interfaces.

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use serde::Serialize;

use xwan_testkit::{Netns, tun};

use super::{relay::Feeder, sys::kthreads};

/// Link `i` (0-based): router address, sink address, router IPv6, sink IPv6.
pub fn link_addrs(i: usize) -> (String, String, String, String) {
    (
        format!("192.0.2.{}", 4 * i + 1),
        format!("192.0.2.{}", 4 * i + 2),
        format!("fd00:91:{}::1", i + 1),
        format!("fd00:91:{}::2", i + 1),
    )
}

pub const LINKS: usize = 3;

/// What the router's three links are.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Links {
    /// Ethernet next hops (veth), `XDP_REDIRECT` in xwan.
    Veth,
    /// L3 tunnel stand-ins (TUN), XDP tags + TC `bpf_redirect` in xwan.
    Tun,
}

impl Links {
    pub fn name(self) -> &'static str {
        match self {
            Links::Veth => "veth",
            Links::Tun => "tun",
        }
    }

    /// The routing table of link `i` for the kernel policy modes.
    pub fn table(self, i: usize) -> usize {
        match self {
            Links::Veth => 101 + i,
            Links::Tun => 111 + i,
        }
    }
}

/// TUN link `i`: router address/30, peer (the gateway), router IPv6.
pub fn tun_addrs(i: usize) -> (String, String, String) {
    (
        format!("172.16.0.{}", 4 * i + 1),
        format!("172.16.0.{}", 4 * i + 2),
        format!("fd00:93:{}::1", i + 1),
    )
}

pub struct Topology {
    pub src: Netns,
    pub rtr: Netns,
    pub sink: Netns,
    /// Router LAN (in `rtr`), router links, sink veths.
    pub lan_dev: String,
    pub link_devs: [String; LINKS],
    pub sink_devs: [String; LINKS],
    pub src_ifindex: u32,
    /// The source's veth (`xs…`, in `src`): the next hop of what the router sends to the LAN.
    pub src_mac: [u8; 6],
    pub lan_mac: [u8; 6],
    pub link_macs: [[u8; 6]; LINKS],
    pub sink_macs: [[u8; 6]; LINKS],
    pub link_ifindex: [u32; LINKS],
    /// Sink interface indexes (namespace `sink`): the sink's counter slots.
    pub sink_ifindex: [u32; LINKS],
    /// TUN links (router namespace) and the harness's ends of them.
    pub tun_devs: [String; LINKS],
    pub tun_ifindex: [u32; LINKS],
    pub tun_files: Vec<File>,
    /// The relay source's feeder (`add_feeder`), when the run uses or compares the relay.
    pub feeder: Option<Feeder>,
    sink_links: Vec<XdpLinkId>,
    /// The per-process tag in device names.
    tag: String,
}

impl Topology {
    pub fn new(tools: &mut Ebpf) -> Result<Topology> {
        let pid = std::process::id();
        let tag = base36(pid % 36u32.pow(4));
        let src = Netns::replace(&format!("xload{pid}src"))?;
        let rtr = Netns::replace(&format!("xload{pid}rtr"))?;
        let sink = Netns::replace(&format!("xload{pid}snk"))?;
        let src_dev = format!("xs{tag}");
        let lan_dev = format!("xl{tag}");
        let link_devs = [1, 2, 3].map(|i| format!("xw{tag}{i}"));
        let sink_devs = [1, 2, 3].map(|i| format!("xk{tag}{i}"));
        let rtr_name = rtr.name();
        src.ip(&[
            "link", "add", &src_dev, "type", "veth", "peer", "name", &lan_dev, "netns", rtr_name,
        ])?;
        for i in 0..LINKS {
            rtr.ip(&[
                "link",
                "add",
                &link_devs[i],
                "type",
                "veth",
                "peer",
                "name",
                &sink_devs[i],
                "netns",
                sink.name(),
            ])?;
        }
        src.ip(&["addr", "add", "10.90.0.2/24", "dev", &src_dev])?;
        rtr.ip(&["addr", "add", "10.90.0.1/24", "dev", &lan_dev])?;
        rtr.ip(&["addr", "add", "fd00:90::1/64", "dev", &lan_dev, "nodad"])?;
        for i in 0..LINKS {
            let (r4, s4, r6, s6) = link_addrs(i);
            rtr.ip(&["addr", "add", &format!("{r4}/30"), "dev", &link_devs[i]])?;
            rtr.ip(&[
                "addr",
                "add",
                &format!("{r6}/64"),
                "dev",
                &link_devs[i],
                "nodad",
            ])?;
            sink.ip(&["addr", "add", &format!("{s4}/30"), "dev", &sink_devs[i]])?;
            sink.ip(&[
                "addr",
                "add",
                &format!("{s6}/64"),
                "dev",
                &sink_devs[i],
                "nodad",
            ])?;
        }
        src.ip(&["link", "set", &src_dev, "up"])?;
        rtr.ip(&["link", "set", &lan_dev, "up"])?;
        for i in 0..LINKS {
            rtr.ip(&["link", "set", &link_devs[i], "up"])?;
            sink.ip(&["link", "set", &sink_devs[i], "up"])?;
        }
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            rtr.exec("sysctl", &["-q", "-w", &format!("{k}={v}")], "")?;
        }
        let lan_mac = rtr.mac(&lan_dev)?;
        let src_mac = src.mac(&src_dev)?;
        let mut link_macs = [[0; 6]; LINKS];
        let mut sink_macs = [[0; 6]; LINKS];
        let mut link_ifindex = [0; LINKS];
        let mut sink_ifindex = [0; LINKS];
        for i in 0..LINKS {
            link_macs[i] = rtr.mac(&link_devs[i])?;
            sink_macs[i] = sink.mac(&sink_devs[i])?;
            link_ifindex[i] = rtr.ifindex(&link_devs[i])?;
            sink_ifindex[i] = sink.ifindex(&sink_devs[i])?;
            // Next hops resolved for every mode alike (no ARP/ND during a measurement).
            let (_, s4, _, s6) = link_addrs(i);
            let mac = fmt_mac(&sink_macs[i]);
            for addr in [&s4, &s6] {
                rtr.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac,
                    "dev",
                    &link_devs[i],
                    "nud",
                    "permanent",
                ])?;
            }
            // One routing table per link for the kernel policy modes (inert without rules).
            let table = Links::Veth.table(i).to_string();
            let (_, s4, _, s6) = link_addrs(i);
            rtr.ip(&[
                "route",
                "add",
                "default",
                "via",
                &s4,
                "dev",
                &link_devs[i],
                "table",
                &table,
            ])?;
            rtr.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &s6,
                "dev",
                &link_devs[i],
                "table",
                &table,
            ])?;
        }
        let src_ifindex = src.ifindex(&src_dev)?;
        let tun_devs = [1, 2, 3].map(|i| format!("xt{tag}{i}"));
        let tun_files = rtr.run(|| tun_devs.iter().map(|d| tun(d)).collect::<Result<Vec<_>>>())?;
        let mut tun_ifindex = [0; LINKS];
        for i in 0..LINKS {
            let (r4, _, r6) = tun_addrs(i);
            rtr.ip(&["addr", "add", &format!("{r4}/30"), "dev", &tun_devs[i]])?;
            rtr.ip(&[
                "addr",
                "add",
                &format!("{r6}/64"),
                "dev",
                &tun_devs[i],
                "nodad",
            ])?;
            rtr.ip(&["link", "set", &tun_devs[i], "up"])?;
            let table = Links::Tun.table(i).to_string();
            rtr.ip(&[
                "route",
                "add",
                "default",
                "dev",
                &tun_devs[i],
                "table",
                &table,
            ])?;
            rtr.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "dev",
                &tun_devs[i],
                "table",
                &table,
            ])?;
            tun_ifindex[i] = rtr.ifindex(&tun_devs[i])?;
        }
        let mut topo = Topology {
            src,
            rtr,
            sink,
            lan_dev,
            link_devs,
            sink_devs,
            src_ifindex,
            src_mac,
            lan_mac,
            link_macs,
            sink_macs,
            link_ifindex,
            sink_ifindex,
            tun_devs,
            tun_ifindex,
            tun_files,
            feeder: None,
            sink_links: Vec::new(),
            tag,
        };
        topo.attach_sinks(tools)?;
        Ok(topo)
    }

    fn attach_sinks(&mut self, tools: &mut Ebpf) -> Result<()> {
        let prog: &mut Xdp = tools
            .program_mut("load_sink")
            .context("load_sink missing")?
            .try_into()?;
        let devs = self.sink_devs.clone();
        let links = self.sink.run(|| {
            devs.iter()
                .map(|d| {
                    prog.attach(d, XdpMode::Driver)
                        .with_context(|| format!("attach load_sink to {d}"))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        self.sink_links = links;
        for d in &self.sink_devs {
            self.sink.exec(
                "sh",
                &["-c", &format!("echo 1 > /sys/class/net/{d}/threaded")],
                "",
            )?;
        }
        Ok(())
    }

    /// Turns on threaded NAPI for the router's LAN veth (again after each XDP attach: veth
    /// re-creates its NAPI when its program changes).
    pub fn thread_lan(&self) -> Result<()> {
        let write = format!("echo 1 > /sys/class/net/{}/threaded", self.lan_dev);
        self.rtr.exec("sh", &["-c", &write], "").map(drop)
    }

    /// The router's receive thread(s) for its LAN veth.
    pub fn router_threads(&self) -> Vec<i32> {
        kthreads(&format!("napi/{}-", self.lan_dev))
    }

    /// The sinks' receive threads.
    pub fn sink_threads(&self) -> Vec<i32> {
        self.sink_devs
            .iter()
            .flat_map(|d| kthreads(&format!("napi/{d}-")))
            .collect()
    }

    /// Adds the relay source's feeder veth pair to the source namespace.
    pub fn add_feeder(&mut self, tools: &mut Ebpf) -> Result<()> {
        if self.feeder.is_none() {
            let name = format!("xf{}", self.tag);
            self.feeder = Some(Feeder::new(tools, &self.src, &name, self.src_ifindex)?);
        }
        Ok(())
    }

    /// Detaches the sinks and the relay (the namespaces go with `Drop`).
    pub fn detach(&mut self, tools: &mut Ebpf) {
        if let Some(f) = self.feeder.as_mut() {
            f.detach(tools);
        }
        let links = std::mem::take(&mut self.sink_links);
        if let Some(p) = tools.program_mut("load_sink") {
            let p: Result<&mut Xdp, _> = p.try_into();
            if let Ok(p) = p {
                for l in links {
                    let _ = p.detach(l);
                }
            }
        }
    }
}

/// Reads every frame queued on a TUN device (IP packets, no header).
pub fn drain(f: &File) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.push(buf[..n as usize].to_vec());
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn base36(mut v: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    for _ in 0..4 {
        s.push(digits[(v % 36) as usize]);
        v /= 36;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}
