//! The lab's network: the two sites of the seed scenario (DESIGN.md §1), each in its own
//! network namespace, joined by three WAN links with the seed's VTI addressing.
//!
//! ```text
//!  lan                 branch                               headoffice            servers
//!  eth0 10.1.0.11-14 ─ lan0 10.1.0.1                        lan0 10.2.0.1 ─ eth0 10.2.0.10 HTTP/FTP
//!                      wan1 172.16.1.1 ══ wire (TUN) ══ wan1 172.16.1.2          10.2.0.20 SQL
//!                      wan2 172.16.1.5 ══ wire (TUN) ══ wan2 172.16.1.6          10.2.0.30 VoIP
//!                      wan3 172.16.1.9 ─── veth ─────── wan3 172.16.1.10
//! ```
//!
//! With [`Tunnels::StandIn`] (any kernel) WAN1 and WAN2 are L3 tunnel stand-ins (TUN devices
//! joined by a user-space [`Wire`]), WAN3 an Ethernet next hop (veth), so both data-plane
//! paths run. With [`Tunnels::Ipsec`] (a kernel with ip_vti and ESP: the Linux 6.1 VM) every
//! link is a real VTI, which the agents create, over an underlay veth of its own ([`UNDERLAYS`],
//! the addresses of `examples/ipsec/`); [`crate::ipsec`] keys it as its [`Keying`] says.
//!
//! Kernel routes send each site's traffic for the other over WAN1; xwan's rules (branch) and
//! return routes (head office) override them. Dropping a [`Topology`] stops the wires and
//! deletes every namespace.
//!
//! What a reader may change: addresses and names here are what the generated agent
//! configurations ([`crate::config`]) and the traffic ([`crate::traffic`]) use; change them
//! together.

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{
    netns::{self, Feature, Netns},
    wire::{Wire, WireControl},
};

/// How a WAN link is built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Medium {
    /// TUN devices joined by a user-space wire: an L3 tunnel (VTI stand-in).
    Tun,
    /// A veth pair: an Ethernet next hop.
    Veth,
    /// A VTI (created by the agent) with ESP over an underlay veth.
    Vti,
}

/// What the three WAN links are made of.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Tunnels {
    /// TUN stand-ins and a veth, as [`LINKS`] says: runs on any kernel.
    #[default]
    StandIn,
    /// VTIs with ESP over underlay veths: needs ip_vti and esp4 (the Linux 6.1 VM).
    Ipsec(Keying),
}

impl Tunnels {
    pub fn is_ipsec(self) -> bool {
        matches!(self, Tunnels::Ipsec(_))
    }
}

/// Who keys the real tunnels ([`Tunnels::Ipsec`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Keying {
    /// The agents install manual keys for WAN1 and WAN3 (`examples/ipsec/*-manual-keys.toml`);
    /// strongSwan keys WAN2 ([`crate::ipsec::IKE_LINK`]) with a configuration the lab writes.
    Mixed,
    /// strongSwan keys all three links with the shipped pair
    /// (`examples/ipsec/strongswan/*.swanctl.conf`, `examples/ipsec/*-strongswan.toml`).
    Strongswan,
}

impl Keying {
    /// Whether strongSwan keys link `link` (else the agents do, with manual keys).
    pub fn by_ike(self, link: usize) -> bool {
        match self {
            Keying::Mixed => link == crate::ipsec::IKE_LINK,
            Keying::Strongswan => true,
        }
    }
}

/// Underlay of each link with [`Tunnels::Ipsec`]: interface name on both sites, branch and
/// head-office address (a /30), as in `examples/ipsec/*.toml`.
pub const UNDERLAYS: [(&str, Ipv4Addr, Ipv4Addr); 3] = [
    (
        "ul1",
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
    ),
    (
        "ul2",
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 2),
    ),
    (
        "ul3",
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(203, 0, 113, 2),
    ),
];

/// One of the three WAN links.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LinkSpec {
    /// Seed name: WAN1..WAN3.
    pub name: &'static str,
    /// Interface name on both sites.
    pub ifname: &'static str,
    pub medium: Medium,
    pub branch: Ipv4Addr,
    pub headoffice: Ipv4Addr,
}

pub const LINKS: [LinkSpec; 3] = [
    LinkSpec {
        name: "WAN1",
        ifname: "wan1",
        medium: Medium::Tun,
        branch: Ipv4Addr::new(172, 16, 1, 1),
        headoffice: Ipv4Addr::new(172, 16, 1, 2),
    },
    LinkSpec {
        name: "WAN2",
        ifname: "wan2",
        medium: Medium::Tun,
        branch: Ipv4Addr::new(172, 16, 1, 5),
        headoffice: Ipv4Addr::new(172, 16, 1, 6),
    },
    LinkSpec {
        name: "WAN3",
        ifname: "wan3",
        medium: Medium::Veth,
        branch: Ipv4Addr::new(172, 16, 1, 9),
        headoffice: Ipv4Addr::new(172, 16, 1, 10),
    },
];

/// Index of a link in [`LINKS`] by its name (case-insensitive: `wan2` works).
pub fn link_index(name: &str) -> Result<usize> {
    LINKS
        .iter()
        .position(|l| l.name.eq_ignore_ascii_case(name))
        .with_context(|| format!("unknown link '{name}': the lab has WAN1, WAN2 and WAN3"))
}

/// The LAN-facing interface of both sites.
pub const LAN_IF: &str = "lan0";
/// Client workstations.
pub const CLIENTS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 1, 0, 11),
    Ipv4Addr::new(10, 1, 0, 12),
    Ipv4Addr::new(10, 1, 0, 13),
    Ipv4Addr::new(10, 1, 0, 14),
];
pub const BRANCH_LAN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const HEADOFFICE_LAN: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// The HTTP and FTP host.
pub const WEB_HOST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 10);
pub const SQL_HOST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 20);
pub const VOIP_HOST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 30);

/// The four namespaces and the wires. Field order is drop order: wires first.
pub struct Topology {
    /// One per TUN link (`None` for veth links), indexed like [`LINKS`].
    wires: [Option<Wire>; 3],
    pub tunnels: Tunnels,
    pub lan: Netns,
    pub branch: Netns,
    pub headoffice: Netns,
    pub servers: Netns,
}

impl Topology {
    /// Builds the lab with namespaces named `PREFIX{lan,branch,ho,srv}`. With
    /// [`Tunnels::Ipsec`] the VTIs are the agents' to create: call [`Self::route_sites`] once
    /// they exist.
    pub fn build(prefix: &str, tunnels: Tunnels) -> Result<Topology> {
        let lan = netns::create(&format!("{prefix}lan"))?;
        let branch = netns::create(&format!("{prefix}branch"))?;
        let headoffice = netns::create(&format!("{prefix}ho"))?;
        let servers = netns::create(&format!("{prefix}srv"))?;

        // Sites: a veth to each LAN.
        for (site, host, gw, hosts) in [
            (&branch, &lan, BRANCH_LAN, &CLIENTS[..]),
            (
                &headoffice,
                &servers,
                HEADOFFICE_LAN,
                &[WEB_HOST, SQL_HOST, VOIP_HOST][..],
            ),
        ] {
            site.ip(&[
                "link",
                "add",
                LAN_IF,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.name(),
            ])?;
            site.ip(&["addr", "add", &format!("{gw}/24"), "dev", LAN_IF])?;
            site.ip(&["link", "set", LAN_IF, "up"])?;
            for h in hosts {
                host.ip(&["addr", "add", &format!("{h}/24"), "dev", "eth0"])?;
            }
            host.ip(&["link", "set", "eth0", "up"])?;
            host.run(|| netns::set_feature("eth0", Feature::TxChecksum, false))?;
            host.ip(&["route", "add", "default", "via", &gw.to_string()])?;
        }

        let mut wires = [None, None, None];
        for (i, l) in LINKS.iter().enumerate() {
            let medium = match tunnels {
                Tunnels::StandIn => l.medium,
                Tunnels::Ipsec(_) => Medium::Vti,
            };
            match medium {
                Medium::Vti => {
                    // The underlay only: the agents create the VTI on top.
                    let (ul, b, h) = UNDERLAYS[i];
                    branch.ip(&[
                        "link",
                        "add",
                        ul,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        ul,
                        "netns",
                        headoffice.name(),
                    ])?;
                    for (site, addr) in [(&branch, b), (&headoffice, h)] {
                        site.ip(&["addr", "add", &format!("{addr}/30"), "dev", ul])?;
                        site.ip(&["link", "set", ul, "up"])?;
                    }
                    continue;
                }
                Medium::Tun => {
                    let a = branch.run(|| netns::tun(l.ifname))?;
                    let b = headoffice.run(|| netns::tun(l.ifname))?;
                    wires[i] = Some(Wire::start(l.name, a, b)?);
                }
                Medium::Veth => {
                    // Distinct interface indexes on the two ends: the kernel reports a veth's
                    // carrier change at once only when its index differs from its peer's
                    // (otherwise the event may wait up to a second in the link watcher).
                    let (a, b) = (format!("{}", 100 + i), format!("{}", 200 + i));
                    branch.ip(&[
                        "link",
                        "add",
                        l.ifname,
                        "index",
                        &a,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        l.ifname,
                        "index",
                        &b,
                        "netns",
                        headoffice.name(),
                    ])?;
                }
            }
            for (site, addr) in [(&branch, l.branch), (&headoffice, l.headoffice)] {
                site.ip(&["addr", "add", &format!("{addr}/30"), "dev", l.ifname])?;
                site.ip(&["link", "set", l.ifname, "up"])?;
                if l.medium == Medium::Veth {
                    site.run(|| netns::set_feature(l.ifname, Feature::Gro, true))?;
                }
            }
        }

        for site in [&branch, &headoffice] {
            site.sysctl("net.ipv4.ip_forward", "1")?;
            // Replies and moved flows arrive on links the kernel's own route does not use
            // (`default`: the VTIs the agents create later inherit it).
            for iface in ["all", "default", LAN_IF] {
                site.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
            }
        }
        let topo = Topology {
            wires,
            tunnels,
            lan,
            branch,
            headoffice,
            servers,
        };
        if tunnels == Tunnels::StandIn {
            topo.route_sites()?;
        }
        Ok(topo)
    }

    /// How link `link` is built.
    pub fn medium(&self, link: usize) -> Medium {
        match self.tunnels {
            Tunnels::StandIn => LINKS[link].medium,
            Tunnels::Ipsec(_) => Medium::Vti,
        }
    }

    /// The kernel's own routes between the sites, over WAN1 (once its interfaces exist).
    pub fn route_sites(&self) -> Result<()> {
        for iface in LINKS.map(|l| l.ifname) {
            for site in [&self.branch, &self.headoffice] {
                site.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
            }
        }
        self.branch
            .ip(&["route", "add", "10.2.0.0/24", "via", "172.16.1.2"])?;
        self.headoffice
            .ip(&["route", "add", "10.1.0.0/24", "via", "172.16.1.1"])
    }

    /// The wire of a TUN link.
    pub fn wire(&self, link: usize) -> Result<&WireControl> {
        match &self.wires[link] {
            Some(w) => Ok(&w.control),
            None => bail!(
                "{} is a veth link: it has no wire (cut it by carrier, or silently with \
                 nftables: `cut {} --silent`)",
                LINKS[link].name,
                LINKS[link].name
            ),
        }
    }

    /// Cuts a link silently: packets vanish, carrier stays up (only probes can tell). TUN
    /// links: the wire drops everything; veth links: nftables drop everything arriving on
    /// either end; VTI links: nftables drop the ESP arriving on either end of the underlay
    /// (IKE still passes, so only the tunnel's traffic dies). Returns when the first cut was
    /// in place (nftables: the branch's rules; the branch's probes already fail from then on).
    pub fn cut_silently(&self, link: usize) -> Result<Instant> {
        let (device, what) = match self.medium(link) {
            Medium::Tun => {
                self.wire(link)?.set_cut(true);
                return Ok(Instant::now());
            }
            Medium::Veth => (LINKS[link].ifname, ""),
            Medium::Vti => (UNDERLAYS[link].0, "ip protocol esp drop"),
        };
        let policy = if what.is_empty() { "drop" } else { "accept" };
        let rules = format!(
            "table netdev {CUT_TABLE} {{\n  chain in {{\n    type filter hook ingress device \
             {device} priority 0; policy {policy};\n    {what}\n  }}\n}}\n"
        );
        self.branch.exec("nft", &["-f", "-"], &rules)?;
        let first = Instant::now();
        self.headoffice.exec("nft", &["-f", "-"], &rules)?;
        Ok(first)
    }

    /// Drops every IKEv2 CREATE_CHILD_SA message (requests and responses, either way) on a
    /// VTI link's underlay until [`Self::restore`]: a CHILD_SA closed meanwhile stays closed
    /// (its peers' retransmissions re-create it once restored), while the IKE_SA, its DELETEs
    /// (INFORMATIONAL exchanges) and ESP still pass. The exchange type is in the clear: byte 18
    /// of the IKE header, which follows the UDP header on port 500 and a 4-byte zero non-ESP
    /// marker on port 4500 (where MOBIKE peers move after IKE_AUTH).
    pub fn hold_child_sa_creation(&self, link: usize) -> Result<()> {
        if self.medium(link) != Medium::Vti {
            bail!("{} is not an IPsec link: it has no IKE", LINKS[link].name);
        }
        let device = UNDERLAYS[link].0;
        let rules = format!(
            "table netdev {CUT_TABLE} {{\n  chain in {{\n    type filter hook ingress device \
             {device} priority 0; policy accept;\n    udp dport 500 @th,208,8 {CREATE_CHILD_SA} \
             drop\n    udp dport 4500 @th,64,32 0 @th,240,8 {CREATE_CHILD_SA} drop\n  }}\n}}\n"
        );
        self.branch.exec("nft", &["-f", "-"], &rules)?;
        self.headoffice.exec("nft", &["-f", "-"], &rules)?;
        Ok(())
    }

    /// Takes a veth link's carrier away (the head office's end goes down, so the branch's
    /// end loses carrier).
    pub fn cut_carrier(&self, link: usize) -> Result<()> {
        let l = &LINKS[link];
        if self.medium(link) != Medium::Veth {
            bail!(
                "{} is a tunnel link: it has no carrier to lose; cut it silently instead",
                l.name
            );
        }
        self.headoffice.ip(&["link", "set", l.ifname, "down"])
    }

    /// Undoes [`Self::cut_silently`], [`Self::cut_carrier`] and
    /// [`Self::hold_child_sa_creation`].
    pub fn restore(&self, link: usize) -> Result<()> {
        let l = &LINKS[link];
        if self.medium(link) == Medium::Tun {
            self.wire(link)?.set_cut(false);
            return Ok(());
        }
        for site in [&self.branch, &self.headoffice] {
            if site
                .exec("nft", &["list", "tables"], "")?
                .contains(CUT_TABLE)
            {
                site.exec("nft", &["delete", "table", "netdev", CUT_TABLE], "")?;
            }
        }
        if self.medium(link) == Medium::Veth {
            self.headoffice.ip(&["link", "set", l.ifname, "up"])?;
            // GRO (and with it the veth's NAPI) must be on again after the device came up.
            self.headoffice
                .run(|| netns::set_feature(l.ifname, Feature::Gro, true))?;
        }
        Ok(())
    }

    /// Whether a link is cut, and how ("silently", "carrier"), for the live view.
    pub fn cut_state(&self, link: usize) -> Option<&'static str> {
        let l = &LINKS[link];
        if self.medium(link) == Medium::Tun {
            return self.wire(link).ok()?.is_cut().then_some("cut silently");
        }
        if self.medium(link) == Medium::Veth {
            let up = netns::run(&["ip", "-n", self.headoffice.name(), "link", "show", l.ifname])
                .is_ok_and(|s| s.contains(",UP"));
            if !up {
                return Some("carrier lost");
            }
        }
        self.branch
            .exec("nft", &["list", "tables"], "")
            .ok()?
            .contains(CUT_TABLE)
            .then_some("cut silently")
    }
}

/// The nftables table of a silent cut or held IKE exchanges (one link at a time).
const CUT_TABLE: &str = "xwanlab_cut";
/// IKEv2's exchange type of CHILD_SA creation and rekeying (RFC 7296 §3.1).
const CREATE_CHILD_SA: u8 = 36;
