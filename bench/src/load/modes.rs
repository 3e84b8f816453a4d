//! The routers under test, set up and torn down in the router namespace only:
//!
//! 1. `xwan`: the real agent (`xwan run`) with a generated configuration of N rules.
//!    `xwan-netfilter`: the same with `forwarding = "netfilter"`: xwan classifies and marks,
//!    the kernel forwards by mark (what a box with a stateful firewall runs): the first
//!    packets of every flow. `xwan-offload`: the same behind the standard stateful forward
//!    policy, every flow confirmed by conntrack with a reply before the windows
//!    ([`super::confirm`]): the established flows, which the agent offloads (veth only).
//!    `xwan-offload-nat`: the same with masquerade on every link, so the fast path also
//!    translates each flow's source as conntrack chose.
//! 2. `kernel-maps`: nftables marks from maps keyed by port and DSCP, `ip rule fwmark`, one
//!    routing table per link (what a careful administrator writes).
//! 3. `kernel-linear`: the same policy as a linear nftables chain of N rules.
//! 4. `kernel-plain`: plain forwarding with one route, no policy (the kernel's best case).
//! 5. `bare-xdp`: an XDP program that rewrites the MACs and redirects everything to link 1
//!    (the upper bound of any XDP router on this machine).
//! 6. `bare-xdp-3`: the same, each frame to its class's link (read from the generator's
//!    marker, no parsing): the bound for the same work as the policy modes, whose frames
//!    fan out over three links (each link's receiver must be woken, per batch). veth only.
//! 7. `bare-xdp-flows` (not in the default set; `xwan-bench flows` runs it): `bare-xdp-3`
//!    with a flow table, an LRU hash sized as xwan's (twice the flows): the floor of any
//!    router keeping per-flow state. veth only.
//!
//! Policy modes put N − 3 filler rules first (distinct destinations and ports no traffic
//! uses), then the three real rules (HTTP → link 1, SQL → link 2, VoIP by DSCP EF → link 3),
//! so a linear walk visits every filler.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, DevMap},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use serde::Serialize;
use xwan::{
    control::{Answer, Request},
    status::{Availability, GatewayState, Role},
};

use super::{
    confirm,
    layout::{RDR_LINKS, RedirectConfig},
    topology::{LINKS, Links, Topology, link_addrs, tun_addrs},
    traffic::CLASSES,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Xwan,
    XwanNetfilter,
    XwanOffload,
    XwanOffloadNat,
    KernelMaps,
    KernelLinear,
    KernelPlain,
    BareXdp,
    BareXdp3,
    BareXdpFlows,
    /// Calibration, not a router: the sink program on the router's LAN veth, so the source
    /// alone (and one sink's cost per packet) is measured.
    SourceSink,
}

/// Modes `--modes` also accepts, outside the default set.
pub const EXTRA: [Mode; 1] = [Mode::BareXdpFlows];

pub const ALL: [Mode; 9] = [
    Mode::KernelMaps,
    Mode::Xwan,
    Mode::XwanNetfilter,
    Mode::XwanOffload,
    Mode::XwanOffloadNat,
    Mode::KernelLinear,
    Mode::KernelPlain,
    Mode::BareXdp,
    Mode::BareXdp3,
];

const _: () = assert!(
    LINKS as u32 == RDR_LINKS,
    "the bare redirect maps hold every link"
);

/// The real rules (HTTP, SQL, VoIP) that come after the fillers.
pub const REAL_RULES: usize = 3;

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Xwan => "xwan",
            Mode::XwanNetfilter => "xwan-netfilter",
            Mode::XwanOffload => "xwan-offload",
            Mode::XwanOffloadNat => "xwan-offload-nat",
            Mode::KernelMaps => "kernel-maps",
            Mode::KernelLinear => "kernel-linear",
            Mode::KernelPlain => "kernel-plain",
            Mode::BareXdp => "bare-xdp",
            Mode::BareXdp3 => "bare-xdp-3",
            Mode::BareXdpFlows => "bare-xdp-flows",
            Mode::SourceSink => "source-sink",
        }
    }

    /// Whether the mode steers classes to different links (the others use link 1 only).
    pub fn steers(self) -> bool {
        matches!(
            self,
            Mode::Xwan
                | Mode::XwanNetfilter
                | Mode::XwanOffload
                | Mode::XwanOffloadNat
                | Mode::KernelMaps
                | Mode::KernelLinear
                | Mode::BareXdp3
                | Mode::BareXdpFlows
        )
    }

    /// Whether the mode exists for these links (`bare-xdp-3` has no TUN variant; tunnels
    /// have no fast path of confirmed flows).
    pub fn runs_on(self, links: Links) -> bool {
        !(matches!(
            self,
            Mode::BareXdp3 | Mode::BareXdpFlows | Mode::XwanOffload | Mode::XwanOffloadNat
        ) && links == Links::Tun)
    }
}

/// What a set-up mode holds until it is torn down.
pub enum Active {
    /// One of our programs on the router's LAN veth.
    Xdp {
        prog: &'static str,
        lan: XdpLinkId,
    },
    /// Bare redirect for TUN links: XDP pass (veth needs a program) + TC redirect.
    BareTc {
        lan: XdpLinkId,
        tc: SchedClassifierLinkId,
    },
    Xwan(Agent),
}

#[allow(clippy::too_many_arguments)]
pub fn setup(
    mode: Mode,
    rules: usize,
    links: Links,
    topo: &Topology,
    tools: &mut Ebpf,
    xwan_bin: &Path,
    work: &Path,
    realtime: bool,
    flows: usize,
) -> Result<Active> {
    let rtr = &topo.rtr;
    let active = match mode {
        Mode::KernelMaps | Mode::KernelLinear => {
            let script = if mode == Mode::KernelMaps {
                nft_maps(rules)
            } else {
                nft_linear(rules)
            };
            rtr.exec("nft", &["-f", "-"], &script)?;
            for i in 0..LINKS {
                let (mark, table) = ((i + 1).to_string(), links.table(i).to_string());
                rtr.ip(&[
                    "rule", "add", "fwmark", &mark, "table", &table, "pref", "100",
                ])?;
                rtr.ip(&[
                    "-6", "rule", "add", "fwmark", &mark, "table", &table, "pref", "100",
                ])?;
            }
            xdp(tools, "load_pass", topo)?
        }
        Mode::KernelPlain => {
            let (v4, v6): (Vec<String>, Vec<String>) = match links {
                Links::Veth => {
                    let (_, s4, _, s6) = link_addrs(0);
                    let dev = topo.link_devs[0].clone();
                    (
                        vec!["via".into(), s4, "dev".into(), dev.clone()],
                        vec!["via".into(), s6, "dev".into(), dev],
                    )
                }
                Links::Tun => (
                    vec!["dev".into(), topo.tun_devs[0].clone()],
                    vec!["dev".into(), topo.tun_devs[0].clone()],
                ),
            };
            let mut a = vec!["route", "add", "198.18.0.0/15"];
            a.extend(v4.iter().map(String::as_str));
            rtr.ip(&a)?;
            let mut a = vec!["-6", "route", "add", "2001:db8::/32"];
            a.extend(v6.iter().map(String::as_str));
            rtr.ip(&a)?;
            xdp(tools, "load_pass", topo)?
        }
        Mode::SourceSink => xdp(tools, "load_sink", topo)?,
        Mode::BareXdp if links == Links::Tun => {
            let mut cfg: Array<_, u32> =
                Array::try_from(tools.map_mut("LOAD_TC_RDR").context("LOAD_TC_RDR")?)?;
            cfg.set(0, topo.tun_ifindex[0], 0)?;
            let lan = attach(tools, "load_pass", topo)?;
            let p: &mut SchedClassifier = tools
                .program_mut("load_tc_redirect")
                .context("load_tc_redirect missing")?
                .try_into()?;
            let dev = topo.lan_dev.clone();
            let tc = topo.rtr.run(|| {
                p.attach(&dev, TcAttachType::Ingress)
                    .with_context(|| format!("attach load_tc_redirect to {dev}"))
            })?;
            Active::BareTc { lan, tc }
        }
        Mode::BareXdp | Mode::BareXdp3 | Mode::BareXdpFlows => {
            {
                let mut cfg: Array<_, RedirectConfig> =
                    Array::try_from(tools.map_mut("LOAD_RDR_CFG").context("LOAD_RDR_CFG")?)?;
                for l in 0..LINKS {
                    let hop = RedirectConfig {
                        dmac: topo.sink_macs[l],
                        smac: topo.link_macs[l],
                    };
                    cfg.set(l as u32, hop, 0)?;
                }
            }
            {
                let mut classes: Array<_, u32> = Array::try_from(
                    tools
                        .map_mut("LOAD_CLASS_LINK")
                        .context("LOAD_CLASS_LINK")?,
                )?;
                for c in &CLASSES {
                    classes.set(c.id as u32, c.link as u32, 0)?;
                }
            }
            let mut dev = DevMap::try_from(tools.map_mut("LOAD_RDR_DEV").context("LOAD_RDR_DEV")?)?;
            for l in 0..LINKS {
                // The kernel resolves the ifindex in the caller's namespace.
                let ifindex = topo.link_ifindex[l];
                topo.rtr
                    .run(|| Ok(dev.set(l as u32, ifindex, None, 0)?))
                    .with_context(|| format!("DEVMAP entry for link {}", l + 1))?;
            }
            let prog = match mode {
                Mode::BareXdp => "load_redirect",
                Mode::BareXdp3 => "load_redirect_class",
                _ => "load_flow_class",
            };
            xdp(tools, prog, topo)?
        }
        Mode::Xwan | Mode::XwanNetfilter | Mode::XwanOffload | Mode::XwanOffloadNat => {
            let dir = work.join("agent");
            let _ = std::fs::create_dir_all(&dir);
            let cfg = dir.join("xwan.toml");
            let config = xwan_config(rules, links, topo, &dir, mode != Mode::Xwan, flows);
            std::fs::write(&cfg, config)?;
            let nat = mode == Mode::XwanOffloadNat;
            if mode == Mode::XwanOffload || nat {
                offload_setup(topo, nat)?;
            }
            let agent = Agent::start(xwan_bin, &topo.rtr, &cfg, &dir, realtime)?;
            agent.wait_ready(Duration::from_secs(20))?;
            topo.thread_lan()?;
            if mode == Mode::XwanOffload || nat {
                confirm::prime(topo, flows, &dir.join("bpffs"), nat)
                    .with_context(|| format!("agent log:\n{}", agent.log()))?;
            }
            Active::Xwan(agent)
        }
    };
    Ok(active)
}

pub fn teardown(mode: Mode, active: Active, topo: &Topology, tools: &mut Ebpf) -> Result<()> {
    let rtr = &topo.rtr;
    match active {
        Active::Xdp { prog, lan } => detach(tools, prog, lan)?,
        Active::BareTc { lan, tc } => {
            let p: &mut SchedClassifier = tools
                .program_mut("load_tc_redirect")
                .context("load_tc_redirect missing")?
                .try_into()?;
            p.detach(tc)?;
            detach(tools, "load_pass", lan)?;
        }
        Active::Xwan(agent) => agent.stop()?,
    }
    match mode {
        Mode::KernelMaps | Mode::KernelLinear => {
            rtr.exec("nft", &["delete", "table", "inet", "xload"], "")?;
            for i in 0..LINKS {
                let mark = (i + 1).to_string();
                rtr.ip_quiet(&["rule", "del", "fwmark", &mark]);
                rtr.ip_quiet(&["-6", "rule", "del", "fwmark", &mark]);
            }
        }
        Mode::KernelPlain => {
            rtr.ip_quiet(&["route", "del", "198.18.0.0/15"]);
            rtr.ip_quiet(&["-6", "route", "del", "2001:db8::/32"]);
        }
        Mode::XwanOffload => offload_teardown(topo, false)?,
        Mode::XwanOffloadNat => offload_teardown(topo, true)?,
        _ => {}
    }
    Ok(())
}

/// The LAN's sources (`traffic::frame`) and the source's addresses on the router's LAN.
const LAN_SOURCES: [(&str, &str); 2] = [
    ("10.91.0.0/16", "10.90.0.2"),
    ("fd00:92::/32", "fd00:90::2"),
];

/// `xwan-offload`'s router: the stateful firewall (with `nat`, masquerade on every link),
/// conntrack's checksum check off (see `confirm`), and the way back to the LAN's sources for
/// the replies.
fn offload_setup(topo: &Topology, nat: bool) -> Result<()> {
    let rtr = &topo.rtr;
    rtr.exec("nft", &["-f", "-"], &confirm::firewall(&topo.lan_dev))?;
    if nat {
        rtr.exec("nft", &["-f", "-"], &confirm::masquerade(&topo.link_devs))?;
    }
    // Every flow confirmed by this mode's own packets, none left from another mode's.
    flush_conntrack(topo)?;
    rtr.exec(
        "sysctl",
        &["-qw", "net.netfilter.nf_conntrack_checksum=0"],
        "",
    )?;
    let mac = super::topology::fmt_mac(&topo.src_mac);
    for (net, via) in LAN_SOURCES {
        rtr.ip(&[
            "neigh",
            "replace",
            via,
            "lladdr",
            &mac,
            "dev",
            &topo.lan_dev,
            "nud",
            "permanent",
        ])?;
        rtr.ip(&["route", "add", net, "via", via, "dev", &topo.lan_dev])?;
    }
    Ok(())
}

fn flush_conntrack(topo: &Topology) -> Result<()> {
    topo.rtr
        .run(|| Ok(xwan::netlink::conntrack::Conntrack::new()?.flush()?))
        .context("flushing conntrack in the router namespace")
}

/// Also forgets every connection: the next mode's agent would find them confirmed in
/// conntrack and offload their flows.
fn offload_teardown(topo: &Topology, nat: bool) -> Result<()> {
    let rtr = &topo.rtr;
    rtr.exec("nft", &["delete", "table", "inet", "xoffload"], "")?;
    if nat {
        rtr.exec("nft", &["delete", "table", "inet", "xnat"], "")?;
    }
    flush_conntrack(topo)?;
    rtr.exec(
        "sysctl",
        &["-qw", "net.netfilter.nf_conntrack_checksum=1"],
        "",
    )?;
    for (net, via) in LAN_SOURCES {
        rtr.ip_quiet(&["route", "del", net]);
        rtr.ip_quiet(&["neigh", "del", via, "dev", &topo.lan_dev]);
    }
    Ok(())
}

fn xdp(tools: &mut Ebpf, prog: &'static str, topo: &Topology) -> Result<Active> {
    Ok(Active::Xdp {
        prog,
        lan: attach(tools, prog, topo)?,
    })
}

fn attach(tools: &mut Ebpf, prog: &str, topo: &Topology) -> Result<XdpLinkId> {
    let p: &mut Xdp = tools
        .program_mut(prog)
        .with_context(|| format!("{prog} missing"))?
        .try_into()?;
    let dev = topo.lan_dev.clone();
    let link = topo.rtr.run(|| {
        p.attach(&dev, XdpMode::Driver)
            .with_context(|| format!("attach {prog} to {dev}"))
    })?;
    topo.thread_lan()?;
    Ok(link)
}

fn detach(tools: &mut Ebpf, prog: &str, link: XdpLinkId) -> Result<()> {
    let p: &mut Xdp = tools
        .program_mut(prog)
        .with_context(|| format!("{prog} missing"))?
        .try_into()?;
    p.detach(link)?;
    Ok(())
}

/// Filler `i`: a destination and a port no traffic uses.
fn filler(i: usize) -> (String, String, u16) {
    (
        format!("100.64.{}.{}", i / 250, i % 250 + 1),
        format!("2001:db8:ff:{i:x}::/64"),
        2000 + i as u16,
    )
}

fn fillers(rules: usize) -> usize {
    rules.saturating_sub(REAL_RULES)
}

/// Mode 2: marks from maps keyed by port and DSCP (fillers are map entries). IPv6 DSCP is
/// a plain match: nftables 1.0.6 (Debian 12) builds a wrong lookup key for `ip6 dscp map`
/// (the shifted 2-byte value, of which the 1-byte key takes the zero byte), so no IPv6 packet
/// would ever match.
pub fn nft_maps(rules: usize) -> String {
    let mut ports: Vec<String> = (0..fillers(rules))
        .map(|i| format!("{} : 0x{:x}", filler(i).2, 0x100 + i))
        .collect();
    ports.extend(["80 : 0x1", "443 : 0x1", "1433 : 0x2", "3306 : 0x2"].map(String::from));
    format!(
        "table inet xload {{
  map ports {{ type inet_service : mark; elements = {{ {} }} }}
  map dscp {{ type dscp : mark; elements = {{ ef : 0x3 }} }}
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto {{ tcp, udp }} meta mark set th dport map @ports
    ip dscp ef meta mark set ip dscp map @dscp
    ip6 dscp ef meta mark set 0x3
  }}
}}
",
        ports.join(", ")
    )
}

/// Mode 3: one rule after the other, first match wins (`accept` ends the walk).
pub fn nft_linear(rules: usize) -> String {
    let mut s = String::from(
        "table inet xload {\n  chain pre {\n    type filter hook prerouting priority mangle; policy accept;\n",
    );
    for i in 0..fillers(rules) {
        let (d4, d6, port) = filler(i);
        // Alternate families, as a mixed real configuration would.
        if i % 2 == 0 {
            s.push_str(&format!(
                "    ip daddr {d4} th dport {port} meta mark set 0x{:x} accept\n",
                0x100 + i
            ));
        } else {
            s.push_str(&format!(
                "    ip6 daddr {d6} th dport {port} meta mark set 0x{:x} accept\n",
                0x100 + i
            ));
        }
    }
    s.push_str("    tcp dport { 80, 443 } meta mark set 0x1 accept\n");
    s.push_str("    udp dport { 1433, 3306 } meta mark set 0x2 accept\n");
    s.push_str("    ip dscp ef meta mark set 0x3 accept\n");
    s.push_str("    ip6 dscp ef meta mark set 0x3 accept\n");
    s.push_str("  }\n}\n");
    s
}

/// Mode 1: the agent's configuration (fillers first, real rules last). Router `Rn` uses
/// gateway `Gn` on link n with the next link's gateway as backup (probes every 500 ms, 200 ms
/// retry wait, 3 tries), which the failover test exercises. With `netfilter`, the kernel
/// forwards (`forwarding = "netfilter"`) and an Ethernet gateway's IPv6 next hop is its
/// `address6` (XDP sends both families to the IPv4 next hop's MAC). The flow table holds
/// `flows` twice over.
pub fn xwan_config(
    rules: usize,
    links: Links,
    topo: &Topology,
    dir: &Path,
    netfilter: bool,
    flows: usize,
) -> String {
    let mut s = format!(
        "[agent]\nlan_interfaces = [\"{}\"]\nbpffs = \"{}/bpffs\"\ncontrol_socket = \"{}/ctl.sock\"\n",
        topo.lan_dev,
        dir.display(),
        dir.display()
    );
    // Room for every flow twice over: an LRU starts evicting before it is full.
    let table = (2 * flows).max(xwan_common::FLOW_TABLE_SIZE as usize);
    s.push_str(&format!("flow_table_size = {table}\n"));
    if netfilter {
        s.push_str("forwarding = \"netfilter\"\n");
    }
    for i in 0..LINKS {
        let (r4, s4, dev, kind, extra) = match links {
            Links::Veth => {
                let (r4, s4, _, s6) = link_addrs(i);
                let address6 = if netfilter {
                    format!("address6 = \"{s6}\"\n")
                } else {
                    String::new()
                };
                (r4, s4, &topo.link_devs[i], "ethernet", address6)
            }
            // Nobody answers probes on the TUN stand-ins: their gateways are not probed.
            Links::Tun => {
                let (r4, p4, _) = tun_addrs(i);
                (
                    r4,
                    p4,
                    &topo.tun_devs[i],
                    "tunnel",
                    "check = []\n".to_owned(),
                )
            }
        };
        s.push_str(&format!(
            "\n[[link]]\nname = \"L{n}\"\ninterface = \"{dev}\"\nkind = \"{kind}\"\naddress = \"{r4}/30\"\n\n\
             [[gateway]]\nname = \"G{n}\"\nlink = \"L{n}\"\naddress = \"{s4}\"\n{extra}\n\
             [[router]]\nname = \"R{n}\"\ngateways = [\"G{n}\"]\nbackups = [\"G{b}\"]\nfrequency = \"500ms\"\nwait = \"200ms\"\ntries = 3\non_failure = \"drop\"\n",
            n = i + 1,
            b = (i + 1) % LINKS + 1,
        ));
    }
    for i in 0..fillers(rules) {
        let (d4, d6, port) = filler(i);
        s.push_str(&format!(
            "\n[[rule]]\nname = \"filler{i}\"\ndst = [\"{d4}/32\", \"{d6}\"]\nprotocol = [\"udp\"]\ndst_port = [{port}]\naction = \"route\"\nrouter = \"R{}\"\n",
            i % LINKS + 1
        ));
    }
    s.push_str(
        "\n[[rule]]\nname = \"http\"\nprotocol = [\"tcp\"]\ndst_port = [80, 443]\naction = \"route\"\nrouter = \"R1\"\n\
         \n[[rule]]\nname = \"sql\"\nprotocol = [\"udp\"]\ndst_port = [1433, 3306]\naction = \"route\"\nrouter = \"R2\"\n\
         \n[[rule]]\nname = \"voip\"\ndscp = [46]\naction = \"route\"\nrouter = \"R3\"\n",
    );
    s
}

/// An `xwan run` process in the router namespace (joined with `setns` in `pre_exec`, not
/// `ip netns exec`, so its bpffs mount stays visible for cleanup). Killed on drop.
pub struct Agent {
    child: Option<Child>,
    dir: PathBuf,
}

impl Agent {
    /// With `realtime`, the agent (all its threads) runs under `SCHED_FIFO` 3, above the
    /// data-path threads, as the harness's busy RT threads would otherwise starve it and
    /// delay its reaction to link events.
    pub(crate) fn start(
        bin: &Path,
        rtr: &xwan_testkit::Netns,
        cfg: &Path,
        dir: &Path,
        realtime: bool,
    ) -> Result<Agent> {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let netns = rtr.file()?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"]).arg(cfg);
        let fd = netns.as_raw_fd();
        // SAFETY: setns and sched_setscheduler are async-signal-safe; the fd stays open
        // until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let p = libc::sched_param { sched_priority: 3 };
                if realtime && libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Agent {
            child: Some(child),
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn request(&self, r: Request) -> std::io::Result<Answer> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(xwan::control::call(&self.dir.join("ctl.sock"), &r))
    }

    /// Waits until every gateway is Ready and every main gateway Active.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Ok(Answer::Status(s)) = self.request(Request::Status) {
                // Each router: its main gateway Active, its backup On standby, both Ready.
                let rows: Vec<_> = s.routers.iter().flat_map(|r| &r.gateways).collect();
                if rows.len() == 2 * LINKS
                    && rows.iter().all(|g| {
                        g.availability == Availability::Ready
                            && (g.role != Role::Main || g.state == GatewayState::Active)
                    })
                {
                    return Ok(());
                }
            }
            if t.elapsed() > timeout {
                bail!(
                    "xwan's gateways were not all Ready after {timeout:?}; agent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// `xwan stop`: detaches everything and exits.
    pub(crate) fn stop(mut self) -> Result<()> {
        let answer = self.request(Request::Stop);
        let mut child = self.child.take().expect("running agent");
        let t = Instant::now();
        while child.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("xwan did not stop ({answer:?}); log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.unmount();
        Ok(())
    }

    fn unmount(&self) {
        if let Ok(c) = std::ffi::CString::new(self.dir.join("bpffs").to_string_lossy().as_bytes()) {
            // SAFETY: plain syscall on a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.unmount();
        }
    }
}
