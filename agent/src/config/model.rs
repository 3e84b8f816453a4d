//! The validated configuration: names resolved to ids, values in their final types. A
//! [`Config`] only exists when every check passed, so users of it need not re-check.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::router::{Failback, Keyword, LoadBalancing, OnFailure, RouterOptions};
pub use xwan_common::MarkLayout;
pub use xwan_common::plan::Criteria;
use xwan_common::plan::{Action, IpNet};

/// Probe period when a router does not set `frequency`.
pub const DEFAULT_FREQUENCY: Duration = Duration::from_secs(15);
/// Retry delay (and probe timeout) when a router does not set `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// Consecutive failures that make a gateway Unavailable.
pub const DEFAULT_TRIES: u32 = 3;
/// Consecutive successes that make it Ready again.
pub const DEFAULT_RECOVER: u32 = 1;
/// A gateway's weight when neither the gateway nor the router entry sets one.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight: the router table has 4096 slots, so finer weights mean nothing.
pub const MAX_WEIGHT: u32 = 1000;
/// Largest `tries` and `recover`.
pub const MAX_TRIES: u32 = 100;
/// SLA window (probes) when `sla.window` is not set, and its largest value.
pub const DEFAULT_SLA_WINDOW: u32 = 10;
pub const MAX_SLA_WINDOW: u32 = 1000;
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xwan/control.sock";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/xwan";
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(300);

/// Index of a link in [`Config::links`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LinkId(pub u16);
/// Index of a gateway in [`Config::gateways`]; also its data-plane gateway id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct GatewayId(pub u16);
/// Index of a router in [`Config::routers`]; also its data-plane router id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RouterId(pub u16);

impl LinkId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
impl GatewayId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
impl Router {
    /// Its mains, then its backups.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.mains.iter().chain(&self.backups)
    }

    /// Whether `gateway` is one of its mains or backups.
    pub fn uses(&self, gateway: GatewayId) -> bool {
        self.members().any(|m| m.gateway == gateway)
    }
}

impl RouterId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A validated configuration.
#[derive(Clone, PartialEq, Debug)]
pub struct Config {
    pub agent: Agent,
    pub links: Vec<Link>,
    pub gateways: Vec<Gateway>,
    pub routers: Vec<Router>,
    /// In priority order: the first matching rule wins.
    pub rules: Vec<Rule>,
    pub return_routes: Vec<ReturnRoute>,
    pub hooks: Vec<Hook>,
}

/// `[agent]`
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Agent {
    /// Interfaces the XDP program attaches to (distinct).
    pub lan_interfaces: Vec<String>,
    pub metrics_listen: SocketAddr,
    pub control_socket: PathBuf,
    pub bpffs: PathBuf,
    /// A flow unseen this long is decided anew; zero = never.
    pub flow_idle: Duration,
    /// Entries of the flow table (and of the return-route and translation tables):
    /// `MIN_FLOW_TABLE_SIZE..=MAX_FLOW_TABLE_SIZE`.
    pub flow_table_size: u32,
    /// How steered packets are forwarded.
    pub forwarding: Forwarding,
}

impl Agent {
    /// Puts back the `running` values of the settings read only at start (the sockets are
    /// bound, the maps made): the names of those that differed.
    pub fn keep_start_only(&mut self, running: &Agent) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut keep = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        keep(
            "metrics_listen",
            self.metrics_listen != running.metrics_listen,
        );
        keep(
            "control_socket",
            self.control_socket != running.control_socket,
        );
        keep("bpffs", self.bpffs != running.bpffs);
        keep(
            "flow_table_size",
            self.flow_table_size != running.flow_table_size,
        );
        self.metrics_listen = running.metrics_listen;
        self.control_socket = running.control_socket.clone();
        self.bpffs = running.bpffs.clone();
        self.flow_table_size = running.flow_table_size;
        changed
    }
}

/// How steered packets are forwarded (`[agent] forwarding`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Forwarding {
    /// XDP/TC redirects: the fastest path; steered traffic bypasses netfilter (no stateful
    /// firewall or NAT can apply to it).
    #[default]
    Xdp,
    /// The kernel forwards what xwan steers, by mark through per-gateway routing tables:
    /// filtering, conntrack and NAT see every packet (docs/firewall.md).
    Netfilter(Netfilter),
}

impl Forwarding {
    /// The mode and what it means for netfilter, as `xwan status` says it.
    pub fn summary(&self) -> &'static str {
        match self {
            Forwarding::Xdp => "xdp: steered traffic bypasses netfilter (no firewall or NAT)",
            Forwarding::Netfilter(_) => {
                "netfilter: the kernel forwards steered traffic by mark (firewall, conntrack \
                 and NAT apply); the connections conntrack confirmed (untranslated, Ethernet \
                 gateways) then skip it from the LAN"
            }
        }
    }
}

/// The keyword of `[agent] forwarding`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ForwardingMode {
    #[default]
    Xdp,
    Netfilter,
}

impl Keyword for ForwardingMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("xdp", ForwardingMode::Xdp),
        ("netfilter", ForwardingMode::Netfilter),
    ];
}

/// `[agent.netfilter]`: where the gateways' marks, tables and rules go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Netfilter {
    /// The mark bits xwan uses (`mark_mask`); gateway g's mark is `(g + 1)` in them.
    pub marks: MarkLayout,
    /// Gateway g's routing table is `first_table + g`.
    pub first_table: u32,
    /// Priority of xwan's `fwmark` rules (before the main table's 32766).
    pub rule_priority: u32,
}

pub const DEFAULT_MARK_MASK: u32 = 0x0fff_0000;
pub const DEFAULT_FIRST_TABLE: u32 = 30_000;
pub const DEFAULT_RULE_PRIORITY: u32 = 10_000;

impl Netfilter {
    /// Gateway `id`'s routing table.
    pub fn table(&self, id: GatewayId) -> u32 {
        self.first_table + id.0 as u32
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkKind {
    /// Any L3 device: VTI, xfrm, GRE, WireGuard, TUN.
    Tunnel,
    /// An Ethernet interface; gateways are next hops on it.
    Ethernet,
}

/// An address of an interface with its prefix, e.g. `172.16.1.1/30` (host bits kept).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InterfaceAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl InterfaceAddr {
    /// The subnet, e.g. `172.16.1.0/30`.
    pub fn network(&self) -> IpNet {
        IpNet::new(self.addr, self.prefix_len).expect("prefix length checked at validation")
    }
}

impl std::fmt::Display for InterfaceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `[[link]]`: an egress path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Link {
    pub name: String,
    pub interface: String,
    pub kind: LinkKind,
    /// Local address: probe source, and the subnet gateways must be in.
    pub address: Option<InterfaceAddr>,
    /// `None`: the interface's own MTU.
    pub mtu: Option<u32>,
    /// `kind = "vti"` or `"xfrm"`: a route-based IPsec tunnel whose SAs the agent watches
    /// (and, when it owns them, creates).
    pub ipsec: Option<IpsecTunnel>,
}

/// A route-based IPsec tunnel link (`kind = "vti"` or `"xfrm"`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IpsecTunnel {
    pub device: TunnelDevice,
    /// Underlay addresses: outer source and destination of the ESP packets (same family).
    pub local: IpAddr,
    pub remote: IpAddr,
    pub owner: Owner,
    /// `None`: an IKE daemon (strongSwan) owns the SAs; the agent only reads them.
    pub manual_sa: Option<ManualSa>,
}

/// The kernel device of an IPsec tunnel link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TunnelDevice {
    /// `ip link add … type vti key K`: ikey = okey = K, which is also the xfrm mark of the
    /// link's SAs and policies.
    Vti { key: NonZeroU32 },
    /// `ip link add … type xfrm if_id N`: SAs and policies carry the same if_id.
    Xfrm { if_id: NonZeroU32 },
}

impl TunnelDevice {
    /// The xfrm mark (VTI) or if_id (xfrm interface) that ties SAs and policies to the link.
    pub fn id(&self) -> u32 {
        match self {
            TunnelDevice::Vti { key } => key.get(),
            TunnelDevice::Xfrm { if_id } => if_id.get(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TunnelDevice::Vti { .. } => "vti",
            TunnelDevice::Xfrm { .. } => "xfrm",
        }
    }
}

/// Who owns a tunnel interface.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Owner {
    /// The agent creates it (or adopts an identical one) and removes it on `xwan stop`.
    #[default]
    Xwan,
    /// Something else creates it; the agent only reads it.
    External,
}

impl Keyword for Owner {
    const ALL: &'static [(&'static str, Self)] =
        &[("xwan", Owner::Xwan), ("external", Owner::External)];
}

/// Statically keyed SAs (one per direction) and their policies, installed by the agent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ManualSa {
    /// SPI of the SA remote → local (what the peer calls its outbound SPI).
    pub spi_in: u32,
    /// SPI of the SA local → remote.
    pub spi_out: u32,
    pub algorithms: SaAlgorithms,
    /// Root-only file with the key material (see `xfrm::keys`).
    pub key_file: PathBuf,
}

/// ESP transforms of a manual SA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SaAlgorithms {
    Aead(Aead),
    CipherAuth { cipher: Cipher, auth: Auth },
}

/// AEAD transforms, by their strongSwan proposal names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Aead {
    Aes128Gcm16,
    Aes192Gcm16,
    Aes256Gcm16,
    ChaCha20Poly1305,
}

/// Ciphers (used with an [`Auth`]), by their strongSwan proposal names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cipher {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
}

/// Integrity algorithms (HMAC, truncated as RFC 4868 / 2404 say).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Aead {
    pub const ALL: [(&str, Aead); 4] = [
        ("aes128gcm16", Aead::Aes128Gcm16),
        ("aes192gcm16", Aead::Aes192Gcm16),
        ("aes256gcm16", Aead::Aes256Gcm16),
        ("chacha20poly1305", Aead::ChaCha20Poly1305),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .expect("listed")
            .0
    }
    /// The kernel's algorithm name.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Aead::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
            _ => "rfc4106(gcm(aes))",
        }
    }
    /// Key length in bytes, salt included (4 bytes for GCM and ChaCha20-Poly1305).
    pub fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm16 => 20,
            Aead::Aes192Gcm16 => 28,
            Aead::Aes256Gcm16 | Aead::ChaCha20Poly1305 => 36,
        }
    }
    /// ICV length in bits.
    pub fn icv_bits(self) -> u32 {
        128
    }
}

impl Cipher {
    pub const ALL: [(&str, Cipher); 3] = [
        ("aes128", Cipher::Aes128Cbc),
        ("aes192", Cipher::Aes192Cbc),
        ("aes256", Cipher::Aes256Cbc),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .expect("listed")
            .0
    }
    pub fn kernel_name(self) -> &'static str {
        "cbc(aes)"
    }
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Cbc => 16,
            Cipher::Aes192Cbc => 24,
            Cipher::Aes256Cbc => 32,
        }
    }
}

impl Auth {
    pub const ALL: [(&str, Auth); 4] = [
        ("sha1", Auth::Sha1),
        ("sha256", Auth::Sha256),
        ("sha384", Auth::Sha384),
        ("sha512", Auth::Sha512),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .expect("listed")
            .0
    }
    pub fn kernel_name(self) -> &'static str {
        match self {
            Auth::Sha1 => "hmac(sha1)",
            Auth::Sha256 => "hmac(sha256)",
            Auth::Sha384 => "hmac(sha384)",
            Auth::Sha512 => "hmac(sha512)",
        }
    }
    pub fn key_len(self) -> usize {
        match self {
            Auth::Sha1 => 20,
            Auth::Sha256 => 32,
            Auth::Sha384 => 48,
            Auth::Sha512 => 64,
        }
    }
    /// Truncated ICV length in bits.
    pub fn trunc_bits(self) -> u32 {
        match self {
            Auth::Sha1 => 96,
            Auth::Sha256 => 128,
            Auth::Sha384 => 192,
            Auth::Sha512 => 256,
        }
    }
}

impl SaAlgorithms {
    /// As shown in status and `xwan check`: "aes128gcm16" or "aes256-sha256".
    pub fn name(&self) -> String {
        match self {
            SaAlgorithms::Aead(a) => a.name().to_owned(),
            SaAlgorithms::CipherAuth { cipher, auth } => {
                format!("{}-{}", cipher.name(), auth.name())
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Monitor {
    /// ICMP or ICMPv6 echo (by the target's family).
    Icmp,
    /// TCP connect to this port.
    Tcp(NonZeroU16),
}

/// `[[gateway]]`: a next hop over one link.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gateway {
    pub name: String,
    pub link: LinkId,
    pub address: IpAddr,
    /// The same next hop's IPv6 address when `address` is IPv4 (Ethernet links only): the
    /// kernel path (`forwarding = "netfilter"`) routes IPv6 only via an IPv6 next hop. XDP
    /// forwarding sends both families to `address`'s MAC and does not use it.
    pub address6: Option<Ipv6Addr>,
    /// Weight used by router entries that do not give their own.
    pub weight: NonZeroU32,
    /// Probe targets; empty = never probed, always Ready.
    pub check: Vec<IpAddr>,
    /// How many of the targets must answer an attempt (`quorum`, 1 to `check.len()`);
    /// `None`: all of them.
    pub quorum: Option<NonZeroUsize>,
    pub monitor: Monitor,
}

impl Gateway {
    /// The next hop's addresses: `address`, then `address6` if set.
    pub fn next_hops(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.address).chain(self.address6.map(IpAddr::V6))
    }

    /// The next hop's address in the IPv4 (`v6` false) or IPv6 family, if it has one.
    pub fn next_hop(&self, v6: bool) -> Option<IpAddr> {
        self.next_hops().find(|a| a.is_ipv6() == v6)
    }
}

/// A gateway in a router's main or backup list, with its effective weight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Member {
    pub gateway: GatewayId,
    pub weight: NonZeroU32,
}

/// SLA thresholds over the last `window` probes; at least one threshold is set.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Sla {
    pub rtt: Option<Duration>,
    pub jitter: Option<Duration>,
    /// Percent, `0.0 <= loss < 100.0`.
    pub loss: Option<f64>,
    pub window: NonZeroU32,
}

/// `[[router]]`
#[derive(Clone, PartialEq, Debug)]
pub struct Router {
    pub name: String,
    /// At least one; gateways are distinct across `mains` and `backups`.
    pub mains: Vec<Member>,
    pub backups: Vec<Member>,
    pub frequency: Duration,
    /// Shorter than `frequency`, not zero.
    pub wait: Duration,
    pub tries: NonZeroU32,
    pub recover: NonZeroU32,
    /// The router module's options, as they are (`backup_threshold` in `1..=mains.len()`).
    pub options: RouterOptions,
    pub sla: Option<Sla>,
    /// Alarm level: beyond it (within `sla`), a gateway is Degraded.
    pub sla_alarm: Option<Sla>,
    /// Route-flap damping of its gateways (off without a `damping` table).
    pub damping: Option<crate::health::Damping>,
    /// With `load_balancing = "best-quality"`: how much better another gateway's score must
    /// be (`crate::router::quality`).
    pub quality_margin: Duration,
}

/// What a rule does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RuleAction {
    Route(RouterId),
    /// Kernel routing.
    Pass,
    Block,
}

impl RuleAction {
    /// The data plane's action.
    pub fn to_plan(self) -> Action {
        match self {
            RuleAction::Route(r) => Action::Route(r.0),
            RuleAction::Pass => Action::Pass,
            RuleAction::Block => Action::Block,
        }
    }
}

/// `[[rule]]`. Empty criteria match anything.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rule {
    pub name: Option<String>,
    /// Interfaces by name, from [`Agent::lan_interfaces`].
    pub criteria: Criteria<String>,
    pub action: RuleAction,
    /// Not with `Block`.
    pub set_dscp: Option<u8>,
}

/// `[[return_route]]`: replies to connections that arrived over `link` leave via `gateway`
/// (a gateway of that link).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReturnRoute {
    pub link: LinkId,
    pub gateway: GatewayId,
}

/// `[[hook]]`: a command run on each event of the kinds in `on` (`crate::events`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Hook {
    pub name: String,
    /// An absolute path.
    pub command: PathBuf,
    pub args: Vec<String>,
    /// The kinds of event it runs for, distinct (every kind when `on` is absent).
    pub on: Vec<crate::events::Kind>,
    /// A run still going after this long is killed.
    pub timeout: Duration,
}

/// A hook's `timeout` when absent, and the longest allowed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);

impl Config {
    pub fn link(&self, id: LinkId) -> &Link {
        &self.links[id.index()]
    }

    pub fn gateway(&self, id: GatewayId) -> &Gateway {
        &self.gateways[id.index()]
    }

    pub fn router(&self, id: RouterId) -> &Router {
        &self.routers[id.index()]
    }

    pub fn link_by_name(&self, name: &str) -> Option<LinkId> {
        let i = self.links.iter().position(|l| l.name == name)?;
        Some(LinkId(i as u16))
    }

    pub fn gateway_by_name(&self, name: &str) -> Option<GatewayId> {
        let i = self.gateways.iter().position(|g| g.name == name)?;
        Some(GatewayId(i as u16))
    }

    pub fn router_by_name(&self, name: &str) -> Option<RouterId> {
        let i = self.routers.iter().position(|r| r.name == name)?;
        Some(RouterId(i as u16))
    }
}

/// Protocol names accepted in rules, with their numbers.
pub const PROTOCOLS: [(&str, u8); 8] = [
    ("icmp", 1),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("sctp", 132),
];

/// Protocols whose packets carry ports (what the data plane reads ports from).
pub fn protocol_has_ports(p: u8) -> bool {
    matches!(p, 6 | 17 | 132)
}

/// The name of a protocol number, if it has one here.
pub fn protocol_name(p: u8) -> Option<&'static str> {
    PROTOCOLS.iter().find(|(_, n)| *n == p).map(|(s, _)| *s)
}
