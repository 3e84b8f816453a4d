//! `xwan doctor`: what this kernel and each configured interface offer, and which fallback
//! xwan will use for each — before deploying, on the box itself. It also names the traps that
//! lose packets silently (an Ethernet egress that drops redirected frames).
//!
//! Every answer is asked of the kernel (throw-away programs, a private network namespace, the
//! `netdev` netlink family), never guessed from its version; nothing is attached and nothing
//! is left behind. The exit status is non-zero only when xwan cannot run at all.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, Forwarding, LinkKind, TunnelDevice};
use crate::datapath::{self, Datapath, EgressWatch, TestBpffs, features};
use crate::netlink::{netdev, tunnel};

/// How a check came out.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and used.
    Ok,
    /// Missing; xwan uses a fallback that works (said in the detail).
    Fallback,
    /// Missing and not needed by xwan (or only by its tooling).
    Absent,
    /// Something that will lose packets or stop a configured link: fix it before deploying.
    Warning,
    /// xwan cannot run.
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fallback => "fallback",
            Status::Absent => "absent",
            Status::Warning => "WARNING",
            Status::Fail => "FAIL",
        }
    }
}

/// One kernel-wide check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub item: &'static str,
    pub status: Status,
    pub detail: String,
}

/// What one configured interface offers and how xwan will use it.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceCheck {
    pub interface: String,
    /// `lan`, or the link's name and kind (`link Uplink (ethernet)`).
    pub role: String,
    /// The driver (`ethtool -i`), when the device has one.
    pub driver: Option<String>,
    /// The driver's XDP features; `None` where the kernel does not say (before Linux 6.3).
    pub xdp_features: Option<netdev::XdpFeatures>,
    pub status: Status,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub checks: Vec<Check>,
    pub interfaces: Vec<InterfaceCheck>,
}

impl Report {
    /// xwan cannot run at all on this box.
    pub fn fatal(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
            || self.interfaces.iter().any(|c| c.status == Status::Fail)
    }

    /// The report as two aligned tables.
    pub fn render(&self) -> String {
        let mut out = format!("xwan doctor: Linux {}\n\n", self.kernel);
        let w = self.checks.iter().map(|c| c.item.len()).fold(6, usize::max);
        out += &format!("{:<w$}  {:<8}  DETAIL\n", "KERNEL", "STATUS");
        for c in &self.checks {
            out += &format!("{:<w$}  {:<8}  {}\n", c.item, c.status.as_str(), c.detail);
        }
        if !self.interfaces.is_empty() {
            let wi = self
                .interfaces
                .iter()
                .map(|c| c.interface.len())
                .fold(9, usize::max);
            let wr = self
                .interfaces
                .iter()
                .map(|c| c.role.len())
                .fold(4, usize::max);
            out += &format!(
                "\n{:<wi$}  {:<wr$}  {:<10}  {:<8}  DETAIL\n",
                "INTERFACE", "ROLE", "DRIVER", "STATUS"
            );
            for c in &self.interfaces {
                out += &format!(
                    "{:<wi$}  {:<wr$}  {:<10}  {:<8}  {}\n",
                    c.interface,
                    c.role,
                    c.driver.as_deref().unwrap_or("-"),
                    c.status.as_str(),
                    c.detail
                );
            }
        }
        let (warnings, fatal) = (
            self.all_statuses()
                .filter(|s| *s == Status::Warning)
                .count(),
            self.fatal(),
        );
        out += &if fatal {
            "\nxwan cannot run here: see FAIL above.\n".to_string()
        } else if warnings > 0 {
            format!("\nxwan can run; {warnings} warning(s) above lose packets or links.\n")
        } else {
            "\nxwan can run here.\n".to_string()
        };
        out
    }

    fn all_statuses(&self) -> impl Iterator<Item = Status> + '_ {
        self.checks
            .iter()
            .map(|c| c.status)
            .chain(self.interfaces.iter().map(|c| c.status))
    }
}

/// Runs every check (the interface checks when a configuration is given).
pub fn run(config: Option<&Config>) -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into());
    let mut checks = Vec::new();
    // SAFETY: plain libc call.
    let root = unsafe { libc::geteuid() } == 0;
    checks.push(if root {
        check("root", Status::Ok, "running as root".into())
    } else {
        check(
            "root",
            Status::Fail,
            "xwan loads eBPF programs and attaches them: run it (and this check) as root".into(),
        )
    });
    if root {
        kernel_checks(config, &mut checks);
    }
    let interfaces = match config {
        Some(c) => interface_checks(c),
        None => Vec::new(),
    };
    Report {
        kernel,
        checks,
        interfaces,
    }
}

/// How steered traffic will leave, and whether this box's netfilter and forwarding fit it:
/// with conntrack tracking connections in this namespace (a ruleset uses it: a stateful
/// firewall or NAT), XDP forwarding bypasses them; the kernel path needs IPv4 forwarding on,
/// and its fast path conntrack's events.
fn forwarding(f: &Forwarding) -> Check {
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string());
    let tracked = read("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    match f {
        Forwarding::Xdp if tracked > 0 => check(
            "forwarding",
            Status::Warning,
            format!(
                "xdp: steered traffic bypasses netfilter, but conntrack tracks {tracked} \
                 connections here: a stateful firewall drops the replies of steered \
                 connections and NAT misses them; set [agent] forwarding = \"netfilter\""
            ),
        ),
        Forwarding::Xdp => check(
            "forwarding",
            Status::Ok,
            "xdp: steered traffic bypasses netfilter (conntrack tracks nothing here)".into(),
        ),
        Forwarding::Netfilter(_)
            if read("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v != "1") =>
        {
            check(
                "forwarding",
                Status::Warning,
                "netfilter: IPv4 forwarding is off, so the kernel forwards nothing xwan steers; \
                 sysctl -w net.ipv4.ip_forward=1"
                    .into(),
            )
        }
        // The fast path of confirmed flows learns of them from conntrack's events.
        Forwarding::Netfilter(_)
            if read("/proc/sys/net/netfilter/nf_conntrack_events").is_ok_and(|v| v == "0") =>
        {
            check(
                "forwarding",
                Status::Warning,
                "netfilter: conntrack's events are off (net.netfilter.nf_conntrack_events = 0), \
                 so no confirmed connection skips the kernel; \
                 sysctl -w net.netfilter.nf_conntrack_events=2"
                    .into(),
            )
        }
        Forwarding::Netfilter(n) => check(
            "forwarding",
            Status::Ok,
            format!(
                "netfilter: the kernel forwards steered traffic by mark ({:#x}), through the \
                 firewall, conntrack and NAT; the connections conntrack confirmed \
                 (untranslated, Ethernet gateways) then skip it from the LAN",
                n.marks.mask()
            ),
        ),
    }
}

/// Whether the kernel's neighbour tables can hold every Ethernet gateway's next hop: their
/// limits (`gc_thresh2`, `gc_thresh3`) are host-wide, 512 and 1,024 by default. Above
/// `gc_thresh3` some gateways never resolve (they stay Unavailable); above `gc_thresh2` the
/// kernel's forced garbage collection may drop gateways' entries, which then resolve again.
/// `None` without Ethernet gateways. `xwan run` logs a warning too.
pub fn neighbour_limits(c: &Config) -> Option<Check> {
    let read = |family: &str, name: &str| -> Option<u64> {
        let path = format!("/proc/sys/net/{family}/neigh/default/{name}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    let hops = |v6: bool| -> usize {
        let ethernet = c
            .gateways
            .iter()
            .filter(|g| c.links[g.link.index()].kind == LinkKind::Ethernet);
        let set: std::collections::HashSet<IpAddr> =
            ethernet.filter_map(|g| g.next_hop(v6)).collect();
        set.len()
    };
    let families = [("ipv4", false), ("ipv6", true)].map(|(family, v6)| NeighbourUse {
        family,
        next_hops: hops(v6),
        gc_thresh2: read(family, "gc_thresh2"),
        gc_thresh3: read(family, "gc_thresh3"),
    });
    neighbour_check(&families)
}

/// One family's Ethernet next hops and the kernel's neighbour table limits.
struct NeighbourUse {
    family: &'static str,
    next_hops: usize,
    gc_thresh2: Option<u64>,
    gc_thresh3: Option<u64>,
}

fn neighbour_check(families: &[NeighbourUse]) -> Option<Check> {
    let used: Vec<&NeighbourUse> = families.iter().filter(|f| f.next_hops > 0).collect();
    if used.is_empty() {
        return None;
    }
    let raise = |f: &NeighbourUse| {
        let want = (f.next_hops as u64 * 2).next_power_of_two();
        format!(
            "sysctl -w net.{0}.neigh.default.gc_thresh2={1} net.{0}.neigh.default.gc_thresh3={2}",
            f.family,
            want,
            want * 2
        )
    };
    for f in &used {
        let n = f.next_hops as u64;
        if let Some(t3) = f.gc_thresh3.filter(|t| n >= *t) {
            return Some(check(
                "neighbours",
                Status::Warning,
                format!(
                    "{n} Ethernet gateways ({}) need a neighbour entry each, and the kernel \
                     holds at most {t3} (gc_thresh3, host-wide, with the LAN's hosts): some can \
                     never resolve and stay Unavailable; {}",
                    f.family,
                    raise(f)
                ),
            ));
        }
        if let Some(t2) = f.gc_thresh2.filter(|t| n >= *t) {
            return Some(check(
                "neighbours",
                Status::Warning,
                format!(
                    "{n} Ethernet gateways ({}) are above gc_thresh2 ({t2}): the kernel's \
                     forced garbage collection may drop their entries (each gateway then \
                     resolves again before it forwards); {}",
                    f.family,
                    raise(f)
                ),
            ));
        }
    }
    let detail = used
        .iter()
        .map(|f| {
            let limit = f.gc_thresh3.map_or("unknown".into(), |t| t.to_string());
            format!(
                "{} Ethernet gateways ({}), the kernel holds {limit} neighbours",
                f.next_hops, f.family
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(check("neighbours", Status::Ok, detail))
}

fn check(item: &'static str, status: Status, detail: String) -> Check {
    Check {
        item,
        status,
        detail,
    }
}

fn kernel_checks(config: Option<&Config>, checks: &mut Vec<Check>) {
    let pin_dir = config.map_or(Path::new(datapath::DEFAULT_PIN_DIR), |c| &c.agent.bpffs);
    checks.push(bpffs(pin_dir));

    // The real programs, verified by this kernel's verifier in a private bpffs; their
    // tracepoint programs attached there for a moment, as `xwan run` would.
    let loaded = TestBpffs::new()
        .map_err(|e| format!("cannot mount a private bpf filesystem to load them: {e}"))
        .and_then(|fs| {
            let mut dp = Datapath::load(fs.path()).map_err(|e| e.to_string())?;
            let watch = dp.watch_egress();
            let _ = dp.detach_all();
            Ok(watch)
        });
    match loaded {
        Ok(watch) => {
            checks.push(check(
                "programs",
                Status::Ok,
                format!(
                    "all {} programs pass this kernel's verifier",
                    datapath::PROGRAMS.len()
                ),
            ));
            checks.push(match watch {
                EgressWatch::Counting => check(
                    "failed redirects",
                    Status::Ok,
                    "a frame an Ethernet egress refuses or drops counts as drop_redirect / \
                     drop_xmit, not steered (tracepoints xdp:xdp_redirect_err, \
                     xdp:xdp_devmap_xmit)"
                        .into(),
                ),
                EgressWatch::Unavailable(why) => check(
                    "failed redirects",
                    Status::Fallback,
                    format!("{why}: a frame an Ethernet egress refuses or drops counts as steered"),
                ),
            });
        }
        Err(e) => checks.push(check("programs", Status::Fail, e)),
    }

    checks.push(check(
        "tunnel hand-off",
        Status::Ok,
        "XDP → TC in the source MAC (works with any kernel and driver)".into(),
    ));
    checks.push(match features::xdp_metadata() {
        Ok(()) => check(
            "XDP metadata",
            Status::Ok,
            "available (not needed: the hand-off is in the source MAC)".into(),
        ),
        Err(e) => check(
            "XDP metadata",
            Status::Absent,
            format!("bpf_xdp_adjust_meta refused ({e}); not needed"),
        ),
    });
    checks.push(match features::tcx() {
        Ok(true) => check("tcx", Status::Ok, "TC programs attach through tcx".into()),
        Ok(false) => check(
            "tcx",
            Status::Fallback,
            "not in this kernel (Linux 6.6 added it): TC programs use a clsact qdisc".into(),
        ),
        Err(e) => check(
            "tcx",
            Status::Fail,
            format!("a trivial TC program does not load: {e}"),
        ),
    });
    checks.push(match features::xdp_live_frames() {
        Ok(()) => check(
            "XDP live frames",
            Status::Ok,
            "BPF_PROG_TEST_RUN live frames work (load test: live source)".into(),
        ),
        Err(e) => check(
            "XDP live frames",
            Status::Absent,
            format!("refused ({e}); only the load test uses them (relay source instead)"),
        ),
    });

    if let Some(c) = config {
        checks.push(forwarding(&c.agent.forwarding));
        checks.extend(neighbour_limits(c));
    }

    // IPsec: the kernel pieces each configured link kind needs.
    let wants = |kind: fn(&TunnelDevice) -> bool| {
        config.is_some_and(|c| {
            c.links
                .iter()
                .any(|l| l.ipsec.as_ref().is_some_and(|t| kind(&t.device)))
        })
    };
    let any_ipsec = wants(|_| true);
    let missing = |needed: bool| {
        if needed {
            Status::Warning
        } else {
            Status::Absent
        }
    };
    checks.push(if Path::new("/proc/net/xfrm_stat").exists() {
        check(
            "XFRM",
            Status::Ok,
            "IPsec SAs and policies (XFRM netlink)".into(),
        )
    } else {
        check(
            "XFRM",
            missing(any_ipsec),
            "no XFRM in this kernel: IPsec links cannot work".into(),
        )
    });
    checks.push(match module("esp4") {
        Some(how) => check("ESP", Status::Ok, format!("esp4 {how}")),
        None => check(
            "ESP",
            missing(any_ipsec),
            "esp4 is neither loaded, built in nor installed: IPsec SAs cannot encrypt".into(),
        ),
    });
    let one = std::num::NonZeroU32::MIN;
    for (item, device, needed) in [
        (
            "VTI",
            TunnelDevice::Vti { key: one },
            wants(|d| matches!(d, TunnelDevice::Vti { .. })),
        ),
        (
            "xfrm interface",
            TunnelDevice::Xfrm { if_id: one },
            wants(|d| matches!(d, TunnelDevice::Xfrm { .. })),
        ),
    ] {
        checks.push(match tunnel::kernel_supports(device) {
            Ok(()) => check(
                item,
                Status::Ok,
                "interfaces of this kind can be created".into(),
            ),
            Err(e) => check(
                item,
                missing(needed),
                format!("cannot be created here ({e}): links of this kind cannot work"),
            ),
        });
    }
}

/// The pin directory's filesystem.
fn bpffs(pin_dir: &Path) -> Check {
    if datapath::is_bpffs(pin_dir) {
        return check(
            "bpffs",
            Status::Ok,
            format!("{} is on a bpf filesystem", pin_dir.display()),
        );
    }
    check(
        "bpffs",
        Status::Fallback,
        format!(
            "{} is not on a bpf filesystem yet: xwan run mounts one",
            pin_dir.display()
        ),
    )
}

/// How kernel module `name` is available: loaded, built in, or installed (loadable); `None`
/// when it is none of them.
fn module(name: &str) -> Option<&'static str> {
    if Path::new("/sys/module").join(name).exists() {
        return Some("loaded");
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let dir = Path::new("/lib/modules").join(release.trim());
    let lists = |file: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|s| {
            s.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                base.split('.').next() == Some(name)
            })
        })
    };
    if lists("modules.builtin") {
        Some("built in")
    } else if lists("modules.dep") {
        Some("installed (loaded on demand)")
    } else {
        None
    }
}

fn interface_checks(c: &Config) -> Vec<InterfaceCheck> {
    let mut out: Vec<InterfaceCheck> = c
        .agent
        .lan_interfaces
        .iter()
        .map(|name| lan(name))
        .collect();
    for l in &c.links {
        let kind = match (l.kind, &l.ipsec) {
            (_, Some(t)) => match t.device {
                TunnelDevice::Vti { .. } => "vti",
                TunnelDevice::Xfrm { .. } => "xfrm",
            },
            (LinkKind::Tunnel, None) => "tunnel",
            (LinkKind::Ethernet, None) => "ethernet",
        };
        out.push(link(
            &l.interface,
            format!("link {} ({kind})", l.name),
            l.kind,
        ));
    }
    out
}

/// What the kernel says of an interface.
struct Facts {
    driver: Option<String>,
    /// `None`: the kernel does not say (before Linux 6.3), or see `unreadable`.
    features: Option<netdev::XdpFeatures>,
    /// Why the features could not be read, when asking failed.
    unreadable: Option<String>,
}

/// [`Facts`] of interface `name`; `None` when there is no such interface.
fn facts(name: &str) -> Option<Facts> {
    let ifindex = if_index(name)?;
    let driver = netdev::driver(name).ok().filter(|d| !d.is_empty());
    Some(match netdev::xdp_features(ifindex) {
        Ok(features) => Facts {
            driver,
            features,
            unreadable: None,
        },
        Err(e) => Facts {
            driver,
            features: None,
            unreadable: Some(e.to_string()),
        },
    })
}

fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn not_found(interface: &str, role: String, why: &str) -> InterfaceCheck {
    InterfaceCheck {
        interface: interface.to_string(),
        role,
        driver: None,
        xdp_features: None,
        status: Status::Warning,
        detail: format!("no such interface in this network namespace: {why}"),
    }
}

/// A LAN interface: where XDP runs (native or generic) and TC steers to tunnels.
fn lan(name: &str) -> InterfaceCheck {
    let role = "lan".to_string();
    let Some(Facts {
        driver,
        features: f,
        unreadable,
    }) = facts(name)
    else {
        return not_found(name, role, "xwan run cannot attach to it");
    };
    let (status, detail) = match (f, unreadable) {
        (Some(f), _) if f.native() => (Status::Ok, "native XDP".to_string()),
        (Some(_), _) => (
            Status::Fallback,
            "generic XDP: the driver has no native XDP (works, slower)".to_string(),
        ),
        (None, None) => (
            Status::Ok,
            "native XDP if the driver has it, else generic (this kernel does not report XDP \
             features; the attach report says which)"
                .to_string(),
        ),
        (None, Some(e)) => (
            Status::Ok,
            format!("XDP features unreadable ({e}): native XDP tried first, else generic"),
        ),
    };
    InterfaceCheck {
        interface: name.to_string(),
        role,
        driver,
        xdp_features: f,
        status,
        detail,
    }
}

/// A link: an Ethernet egress must accept `XDP_REDIRECT`ed frames; an L3 tunnel takes
/// TC's `bpf_redirect`, which every device does.
fn link(name: &str, role: String, kind: LinkKind) -> InterfaceCheck {
    let Some(Facts {
        driver,
        features: f,
        ..
    }) = facts(name)
    else {
        return not_found(name, role, "its gateways stay Unavailable until it exists");
    };
    let veth = driver.as_deref() == Some("veth");
    let (status, detail) = match (kind, f) {
        (LinkKind::Tunnel, _) => (
            Status::Ok,
            "L3: steered from TC with bpf_redirect (any device)".to_string(),
        ),
        (LinkKind::Ethernet, Some(f)) if f.accepts_redirects() => (
            Status::Ok,
            "accepts XDP-redirected frames (ndo-xmit)".to_string(),
        ),
        (LinkKind::Ethernet, Some(_)) => (
            Status::Warning,
            if veth {
                format!(
                    "XDP_REDIRECT into {name} is dropped: a veth accepts redirected frames \
                     only while its peer runs an XDP program or has GRO on (`ethtool -K \
                     <peer> gro on`); xwan counts them as drop_redirect / drop_xmit (see \
                     `failed redirects`), the kernel only in `ip -s link`"
                )
            } else {
                format!(
                    "XDP_REDIRECT into {name} is dropped: its driver cannot transmit \
                     redirected frames (no ndo-xmit; counted as drop_redirect); use another \
                     egress or driver"
                )
            },
        ),
        (LinkKind::Ethernet, None) => (
            if veth { Status::Warning } else { Status::Ok },
            if veth {
                "this kernel does not report XDP features: a veth drops redirected frames \
                 unless its peer runs an XDP program or has GRO on (`ethtool -K <peer> gro on`)"
                    .to_string()
            } else {
                "this kernel does not report XDP features: the driver must support \
                 XDP_REDIRECT as a target (ndo_xdp_xmit), or frames are dropped"
                    .to_string()
            },
        ),
    };
    InterfaceCheck {
        interface: name.to_string(),
        role,
        driver,
        xdp_features: f,
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status) -> Report {
        Report {
            kernel: "6.1.0".into(),
            checks: vec![check("tcx", status, "detail".into())],
            interfaces: vec![InterfaceCheck {
                interface: "eth1".into(),
                role: "lan".into(),
                driver: Some("virtio_net".into()),
                xdp_features: Some(netdev::XdpFeatures(1 | 2 | 4)),
                status: Status::Ok,
                detail: "native XDP".into(),
            }],
        }
    }

    #[test]
    fn neighbour_limits_warn_before_gateways_go_unresolved() {
        let v4 = |next_hops| NeighbourUse {
            family: "ipv4",
            next_hops,
            gc_thresh2: Some(512),
            gc_thresh3: Some(1024),
        };
        assert!(neighbour_check(&[v4(0)]).is_none(), "no Ethernet gateway");
        let ok = neighbour_check(&[v4(250)]).unwrap();
        assert_eq!(ok.status, Status::Ok, "{}", ok.detail);
        let gc = neighbour_check(&[v4(600)]).unwrap();
        assert_eq!(gc.status, Status::Warning);
        assert!(gc.detail.contains("gc_thresh2 (512)"), "{}", gc.detail);
        let full = neighbour_check(&[v4(4000)]).unwrap();
        assert_eq!(full.status, Status::Warning);
        assert!(full.detail.contains("never resolve"), "{}", full.detail);
        assert!(
            full.detail.contains(
                "net.ipv4.neigh.default.gc_thresh2=8192 net.ipv4.neigh.default.gc_thresh3=16384"
            ),
            "{}",
            full.detail
        );
    }

    #[test]
    fn only_a_failure_is_fatal() {
        for (s, fatal) in [
            (Status::Ok, false),
            (Status::Fallback, false),
            (Status::Absent, false),
            (Status::Warning, false),
            (Status::Fail, true),
        ] {
            assert_eq!(report(s).fatal(), fatal, "{s:?}");
        }
    }

    #[test]
    fn table_and_json() {
        let r = report(Status::Fallback);
        let text = r.render();
        assert!(text.starts_with("xwan doctor: Linux 6.1.0\n"), "{text}");
        assert!(text.contains("tcx     fallback  detail\n"), "{text}");
        assert!(
            text.contains("eth1       lan   virtio_net  ok        native XDP\n"),
            "{text}"
        );
        assert!(text.ends_with("xwan can run here.\n"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"][0]["status"], "fallback");
        assert_eq!(
            j["interfaces"][0]["xdp_features"],
            serde_json::json!(["basic", "redirect", "ndo-xmit"])
        );
        assert!(
            report(Status::Warning)
                .render()
                .ends_with("1 warning(s) above lose packets or links.\n")
        );
        assert!(report(Status::Fail).render().ends_with("see FAIL above.\n"));
    }
}
