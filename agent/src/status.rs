//! What `xwan status` shows: per router, its state (on mains, on backups, no gateway) and the
//! monitor table operators know from the Stormshield real-time monitor (State and its last
//! change in that router, Availability, available since, Main/Backup, IP address,
//! Distribution). Serialisable for `--json` (times in RFC 3339 with milliseconds, states as
//! `snake_case` values); rendered as text here; built from the daemon's state in [`rows`] and
//! [`changes`].

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub use crate::{
    health::Availability,
    router::{GatewayState, Role},
};
pub use changes::RouterState;

pub mod changes;
pub mod measured;
pub mod rows;

/// A time as Unix seconds (SA lifetimes are counted in them).
pub fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Optional times in `--json`: RFC 3339, UTC, with milliseconds
/// (`"2026-12-08T01:30:00.123Z"`), or `null`.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => humantime::parse_rfc3339(&text)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("time {text:?}: {e}"))),
            None => Ok(None),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub config: String,
    /// Ruleset epoch in the data plane.
    pub epoch: u32,
    /// How each interface is attached (XDP native/generic, TC tcx/clsact).
    pub attachments: Vec<String>,
    /// Whether a redirect its egress drops counts as `drop_xmit` / `drop_redirect` ("counted")
    /// or, where the kernel does not allow it, as steered ("not counted: why").
    #[serde(default)]
    pub failed_redirects: Option<String>,
    /// How steered traffic leaves: XDP (bypassing netfilter) or the kernel path.
    #[serde(default)]
    pub forwarding: Option<String>,
    pub routers: Vec<RouterStatus>,
    /// IPsec tunnel links and their SAs (none without `vti` / `xfrm` links).
    #[serde(default)]
    pub ipsec: Vec<IpsecLinkRow>,
    /// The return routes and whether each one's gateway is usable: replies go back through
    /// a link only while it is (otherwise the kernel routes them).
    #[serde(default)]
    pub return_routes: Vec<ReturnRouteRow>,
}

/// One return route (`[[return_route]]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReturnRouteRow {
    pub link: String,
    pub gateway: String,
    /// `ready` / `unavailable`.
    pub availability: Availability,
    /// Why, as for router gateways ("answering", "timeout", "not yet probed"...).
    pub reason: String,
}

/// One IPsec link: its device and SAs. No key material: only SPIs and algorithm names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IpsecLinkRow {
    pub link: String,
    pub interface: String,
    /// "vti key 101" or "xfrm if_id 5".
    pub device: String,
    /// "manual" (xwan installs them) or "ike" (read from an IKE daemon's).
    pub sa_source: String,
    /// An SA in each direction.
    pub usable: bool,
    /// Newest first within each direction.
    pub sas: Vec<SaRow>,
    /// When a new SA last replaced one of this link (seen by this agent).
    #[serde(default, with = "rfc3339")]
    pub last_rekey: Option<SystemTime>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SaRow {
    /// "in" or "out".
    pub direction: String,
    /// Hexadecimal, e.g. "0xa0000001".
    pub spi: String,
    pub algorithms: String,
    pub bytes: u64,
    pub packets: u64,
    pub age_s: Option<u64>,
    /// Before the hard lifetime ends; `None` without one.
    pub lifetime_left_s: Option<u64>,
}

impl Status {
    /// This status `secs` seconds later: SA ages grow, lifetimes and damping shrink (the daemon
    /// publishes a status when something changes; the control server answers from it).
    pub fn aged(mut self, secs: u64) -> Status {
        for sa in self.ipsec.iter_mut().flat_map(|l| &mut l.sas) {
            sa.age_s = sa.age_s.map(|a| a.saturating_add(secs));
            sa.lifetime_left_s = sa.lifetime_left_s.map(|l| l.saturating_sub(secs));
        }
        for g in self.routers.iter_mut().flat_map(|r| &mut r.gateways) {
            g.reused_in_s = g.reused_in_s.map(|s| (s - secs as f64).max(0.0));
        }
        self
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouterStatus {
    pub name: String,
    /// `on_mains`, `on_backups` or `no_gateway` (then `on_failure` applies).
    pub state: RouterState,
    /// Main and backup gateways taking new connections.
    pub active_mains: usize,
    pub active_backups: usize,
    /// What a packet of the router meets when no gateway is active: `default-route`, `drop`.
    pub on_failure: String,
    /// When the state or the counts above last changed (first seen: the agent's first plan).
    #[serde(default, with = "rfc3339")]
    pub last_change: Option<SystemTime>,
    /// The span of the measured distribution (up to 5 minutes; absent until the agent has
    /// two samples of the counters) and the flows its gateways were given in it.
    #[serde(default)]
    pub window_s: Option<f64>,
    #[serde(default)]
    pub new_flows: Option<u64>,
    /// With `load_balancing = "best-quality"`: the margin another gateway's score must beat
    /// (the configured one, or 10 % of the best score if more).
    #[serde(default)]
    pub quality_margin_ms: Option<f64>,
    pub gateways: Vec<GatewayRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GatewayRow {
    pub name: String,
    /// In this router: `active`, `on_standby` or `unavailable`.
    pub state: GatewayState,
    /// When its state in this router last changed (first seen: the agent's first plan).
    #[serde(default, with = "rfc3339")]
    pub last_change: Option<SystemTime>,
    /// As this router judges it: `ready`, `degraded` or `unavailable`.
    pub availability: Availability,
    /// Why (answering, timeout, link down, sla...).
    pub reason: String,
    /// Since when it is usable, if it is.
    #[serde(default, with = "rfc3339")]
    pub available_since: Option<SystemTime>,
    /// `main` / `backup`.
    pub role: Role,
    pub address: String,
    pub weight: u32,
    /// Share of new connections, percent: configured (the slot share).
    pub distribution: f64,
    /// Flows the gateway was given over the router's window, and their share of the
    /// router's, percent (absent without a window or a flow in it). A gateway in several
    /// routers counts its flows from all of them.
    #[serde(default)]
    pub new_flows: Option<u64>,
    #[serde(default)]
    pub measured_distribution: Option<f64>,
    /// With `load_balancing = "best-quality"`: the score of its probe window (RTT + 2 ×
    /// jitter + 10 ms per percent of loss; lower is better; absent with nothing answered).
    #[serde(default)]
    pub score_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub loss_pct: f64,
    /// Check targets that answered the last attempt (absent before it or without targets).
    #[serde(default)]
    pub targets_answering: Option<usize>,
    /// Check targets of the gateway.
    #[serde(default)]
    pub targets: usize,
    /// The router's damping figure for the gateway (with `damping` set).
    #[serde(default)]
    pub penalty: Option<f64>,
    /// Seconds until a damped gateway is reused (absent when not damped).
    #[serde(default)]
    pub reused_in_s: Option<f64>,
}

/// `text` as a terminal screen that replaces the previous one in place (`xwan status
/// --watch`, the lab's live view): cursor home, each line with the rest of its row cleared,
/// then the rest of the screen cleared. No flicker, nothing left of a longer previous screen,
/// nothing pushed to the scrollback.
pub fn redraw(text: &str) -> String {
    let mut screen = String::with_capacity(text.len() + 256);
    screen += "\x1b[H";
    for line in text.lines() {
        screen += line;
        screen += "\x1b[K\n";
    }
    screen += "\x1b[J";
    screen
}

/// `now`: the current time, for the "ago" columns.
pub fn render(s: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {}  ruleset epoch {}", s.config, s.epoch);
    for a in &s.attachments {
        let _ = writeln!(out, "attached {a}");
    }
    if let Some(f) = &s.failed_redirects {
        let _ = writeln!(out, "failed redirects {f}");
    }
    if let Some(f) = &s.forwarding {
        let _ = writeln!(out, "forwarding {f}");
    }
    // Whole seconds: the table's width; `--json` has the milliseconds.
    let ago = |t: Option<SystemTime>| match t {
        Some(t) => {
            let d = now.duration_since(t).unwrap_or_default();
            let d = Duration::from_secs(d.as_secs());
            format!("{} ago", humantime::format_duration(d))
        }
        None => "-".to_string(),
    };
    let plural = |n: usize, what: &str| match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    };
    for r in &s.routers {
        let state = match r.state {
            RouterState::OnMains => format!("on mains ({} active)", plural(r.active_mains, "main")),
            RouterState::OnBackups => format!(
                "on backups ({} and {} active)",
                plural(r.active_backups, "backup"),
                plural(r.active_mains, "main")
            ),
            RouterState::NoGateway => format!("no gateway: {}", r.on_failure),
        };
        let _ = writeln!(
            out,
            "\nrouter {}  {state}, since {}",
            r.name,
            ago(r.last_change)
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<12} {:<16} {:<12} {:<16} {:<7} {:<16} {:>6} {:>8} {:>8} {:>6} {:>7}",
            "GATEWAY",
            "STATE",
            "LAST CHANGE",
            "AVAILABILITY",
            "AVAILABLE SINCE",
            "ROLE",
            "ADDRESS",
            "WEIGHT",
            "DISTRIB",
            "RTT",
            "LOSS",
            "TARGETS"
        );
        for g in &r.gateways {
            let _ = writeln!(
                out,
                "  {:<16} {:<12} {:<16} {:<12} {:<16} {:<7} {:<16} {:>6} {:>7.1}% {:>8} {:>5.0}% {:>7}",
                g.name,
                g.state.to_string(),
                ago(g.last_change),
                g.availability.to_string(),
                ago(g.available_since),
                g.role.to_string(),
                g.address,
                g.weight,
                g.distribution,
                g.rtt_ms
                    .map(|r| format!("{r:.2}ms"))
                    .unwrap_or_else(|| "-".into()),
                g.loss_pct,
                match g.targets_answering {
                    Some(n) => format!("{n}/{}", g.targets),
                    None => "-".into(),
                },
            );
        }
        for g in &r.gateways {
            match (g.penalty, g.reused_in_s) {
                (Some(p), Some(s)) => {
                    let _ = writeln!(
                        out,
                        "  {}: damped, penalty {p:.0}, reused in {}",
                        g.name,
                        humantime::format_duration(std::time::Duration::from_secs(s.ceil() as u64))
                    );
                }
                (Some(p), None) if p >= 1.0 => {
                    let _ = writeln!(out, "  {}: damping penalty {p:.0}", g.name);
                }
                _ => {}
            }
        }
        if let Some(margin) = r.quality_margin_ms {
            let scores: Vec<String> = (r.gateways.iter())
                .map(|g| match g.score_ms {
                    Some(s) => format!("{} {s:.1}ms", g.name),
                    None => format!("{} -", g.name),
                })
                .collect();
            let _ = writeln!(
                out,
                "  best quality (score = RTT + 2 × jitter + 10 ms per % loss, margin \
                 {margin:.1}ms): {}",
                scores.join(", ")
            );
        }
        // Measured beside configured: what the gateways were actually given.
        if let (Some(span), Some(n)) = (r.window_s, r.new_flows)
            && n > 0
        {
            let shares: Vec<String> = (r.gateways.iter())
                .filter_map(|g| {
                    let m = g.measured_distribution?;
                    Some(format!("{} {m:.1}% ({:.1}%)", g.name, g.distribution))
                })
                .collect();
            let span = humantime::format_duration(Duration::from_secs(span.round() as u64));
            let _ = writeln!(
                out,
                "  measured over the last {span}, {n} new flows: {} (configured in brackets)",
                shares.join(", ")
            );
        }
    }
    if !s.return_routes.is_empty() {
        let _ = writeln!(out, "\nreturn routes");
        let _ = writeln!(
            out,
            "  {:<16} {:<16} {:<12} REASON",
            "LINK", "GATEWAY", "AVAILABILITY"
        );
        for r in &s.return_routes {
            let _ = writeln!(
                out,
                "  {:<16} {:<16} {:<12} {}",
                r.link,
                r.gateway,
                r.availability.to_string(),
                r.reason
            );
        }
    }
    if !s.ipsec.is_empty() {
        let _ = writeln!(out, "\nipsec");
    }
    let secs = |v: Option<u64>| {
        v.map_or("-".to_owned(), |v| {
            humantime::format_duration(std::time::Duration::from_secs(v)).to_string()
        })
    };
    for l in &s.ipsec {
        let _ = writeln!(
            out,
            "  {} on {} ({}, {} SAs): {}, last rekey {}",
            l.link,
            l.interface,
            l.device,
            l.sa_source,
            if l.usable {
                "SA pair up"
            } else {
                "no usable SA pair"
            },
            ago(l.last_rekey)
        );
        for sa in &l.sas {
            let _ = writeln!(
                out,
                "    {:<3} spi {} {:<16} {:>12} bytes {:>10} packets  age {}  lifetime left {}",
                sa.direction,
                sa.spi,
                sa.algorithms,
                sa.bytes,
                sa.packets,
                secs(sa.age_s),
                secs(sa.lifetime_left_s)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `secs` after the Unix epoch, plus `millis`.
    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    /// A status of `x.toml` at epoch 1 with `routers` and nothing else.
    fn status_of(routers: Vec<RouterStatus>) -> Status {
        Status {
            config: "x.toml".into(),
            epoch: 1,
            attachments: vec![],
            failed_redirects: None,
            forwarding: None,
            routers,
            ipsec: vec![],
            return_routes: vec![],
        }
    }

    /// Router R with one gateway G in `state` and `role`.
    fn router_r(
        state: RouterState,
        g: GatewayState,
        role: Role,
        last_change: SystemTime,
    ) -> RouterStatus {
        let main = role == Role::Main && g == GatewayState::Active;
        let backup = role == Role::Backup && g == GatewayState::Active;
        RouterStatus {
            name: "R".into(),
            state,
            active_mains: main as usize,
            active_backups: backup as usize,
            on_failure: "default-route".into(),
            last_change: Some(last_change),
            window_s: None,
            new_flows: None,
            quality_margin_ms: None,
            gateways: vec![row(
                "G",
                g,
                true,
                role,
                100.0 * (main || backup) as u8 as f64,
            )],
        }
    }

    fn row(name: &str, state: GatewayState, ready: bool, role: Role, share: f64) -> GatewayRow {
        GatewayRow {
            name: name.into(),
            state,
            last_change: Some(at(1_086, 600)),
            availability: match ready {
                true => Availability::Ready,
                false => Availability::Unavailable,
            },
            reason: if ready { "answering" } else { "timeout" }.into(),
            available_since: ready.then_some(at(1_000, 0)),
            role,
            address: "172.16.1.2".into(),
            weight: 50,
            distribution: share,
            new_flows: None,
            measured_distribution: None,
            score_ms: None,
            rtt_ms: ready.then_some(0.42),
            jitter_ms: None,
            loss_pct: if ready { 0.0 } else { 100.0 },
            targets_answering: Some(if ready { 2 } else { 0 }),
            targets: 3,
            penalty: (!ready).then_some(2950.4),
            reused_in_s: (!ready).then_some(251.2),
        }
    }

    #[test]
    fn a_redraw_replaces_the_screen_in_place() {
        assert_eq!(
            redraw("router R\n  GW1 Active\n"),
            "\x1b[Hrouter R\x1b[K\n  GW1 Active\x1b[K\n\x1b[J"
        );
    }

    #[test]
    fn renders_the_monitor_table() {
        let s = Status {
            config: "/etc/xwan/xwan.toml".into(),
            epoch: 7,
            attachments: vec!["lan0 (ifindex 2): XDP xwan_xdp_lan native".into()],
            failed_redirects: Some("counted".into()),
            forwarding: Some(
                "netfilter: the kernel forwards steered traffic by mark (firewall, conntrack \
                 and NAT apply)"
                    .into(),
            ),
            routers: vec![
                RouterStatus {
                    name: "ProductionRouter".into(),
                    state: RouterState::OnBackups,
                    active_mains: 0,
                    active_backups: 1,
                    on_failure: "default-route".into(),
                    last_change: Some(at(1_086, 600)),
                    window_s: Some(300.0),
                    new_flows: Some(1_200),
                    quality_margin_ms: None,
                    gateways: vec![
                        GatewayRow {
                            new_flows: Some(204),
                            measured_distribution: Some(17.0),
                            ..row(
                                "RemoteTunWAN2",
                                GatewayState::Unavailable,
                                false,
                                Role::Main,
                                0.0,
                            )
                        },
                        GatewayRow {
                            new_flows: Some(996),
                            measured_distribution: Some(83.0),
                            ..row(
                                "RemoteTunWAN1",
                                GatewayState::Active,
                                true,
                                Role::Backup,
                                83.3,
                            )
                        },
                    ],
                },
                RouterStatus {
                    name: "Idle".into(),
                    state: RouterState::NoGateway,
                    active_mains: 0,
                    active_backups: 0,
                    on_failure: "drop".into(),
                    last_change: None,
                    window_s: Some(300.0),
                    new_flows: Some(0),
                    quality_margin_ms: None,
                    gateways: vec![],
                },
                RouterStatus {
                    name: "Voice".into(),
                    state: RouterState::OnMains,
                    active_mains: 1,
                    active_backups: 0,
                    on_failure: "drop".into(),
                    last_change: None,
                    window_s: None,
                    new_flows: None,
                    quality_margin_ms: Some(12.5),
                    gateways: vec![
                        GatewayRow {
                            score_ms: Some(125.0),
                            ..row("WAN1", GatewayState::OnStandby, true, Role::Main, 0.0)
                        },
                        GatewayRow {
                            score_ms: Some(0.84),
                            ..row("WAN2", GatewayState::Active, true, Role::Main, 100.0)
                        },
                    ],
                },
            ],
            ipsec: vec![],
            return_routes: vec![],
        };
        let text = render(&s, at(1_090, 0));
        let expected = "config /etc/xwan/xwan.toml  ruleset epoch 7
attached lan0 (ifindex 2): XDP xwan_xdp_lan native
failed redirects counted
forwarding netfilter: the kernel forwards steered traffic by mark (firewall, conntrack and NAT apply)

router ProductionRouter  on backups (1 backup and 0 mains active), since 3s ago
  GATEWAY          STATE        LAST CHANGE      AVAILABILITY AVAILABLE SINCE  ROLE    ADDRESS          WEIGHT  DISTRIB      RTT   LOSS TARGETS
  RemoteTunWAN2    Unavailable  3s ago           Unavailable  -                Main    172.16.1.2           50     0.0%        -   100%     0/3
  RemoteTunWAN1    Active       3s ago           Ready        1m 30s ago       Backup  172.16.1.2           50    83.3%   0.42ms     0%     2/3
  RemoteTunWAN2: damped, penalty 2950, reused in 4m 12s
  measured over the last 5m, 1200 new flows: RemoteTunWAN2 17.0% (0.0%), RemoteTunWAN1 83.0% (83.3%) (configured in brackets)

router Idle  no gateway: drop, since -
  GATEWAY          STATE        LAST CHANGE      AVAILABILITY AVAILABLE SINCE  ROLE    ADDRESS          WEIGHT  DISTRIB      RTT   LOSS TARGETS

router Voice  on mains (1 main active), since -
  GATEWAY          STATE        LAST CHANGE      AVAILABILITY AVAILABLE SINCE  ROLE    ADDRESS          WEIGHT  DISTRIB      RTT   LOSS TARGETS
  WAN1             On standby   3s ago           Ready        1m 30s ago       Main    172.16.1.2           50     0.0%   0.42ms     0%     2/3
  WAN2             Active       3s ago           Ready        1m 30s ago       Main    172.16.1.2           50   100.0%   0.42ms     0%     2/3
  best quality (score = RTT + 2 × jitter + 10 ms per % loss, margin 12.5ms): WAN1 125.0ms, WAN2 0.8ms
";
        assert_eq!(text, expected);
    }

    #[test]
    fn renders_ipsec_links_and_their_sas() {
        let sa = |dir: &str, spi: &str| SaRow {
            direction: dir.into(),
            spi: spi.into(),
            algorithms: "aes256gcm16".into(),
            bytes: 123_456,
            packets: 789,
            age_s: Some(600),
            lifetime_left_s: Some(3000),
        };
        let s = Status {
            ipsec: vec![
                IpsecLinkRow {
                    link: "TunWAN1".into(),
                    interface: "vti-wan1".into(),
                    device: "vti key 101".into(),
                    sa_source: "ike".into(),
                    usable: true,
                    sas: vec![sa("in", "0xc1a2b3c4"), sa("out", "0x0d1e2f30")],
                    last_rekey: Some(at(1_000, 0)),
                },
                IpsecLinkRow {
                    link: "TunWAN2".into(),
                    interface: "vti-wan2".into(),
                    device: "vti key 102".into(),
                    sa_source: "manual".into(),
                    usable: false,
                    sas: vec![],
                    last_rekey: None,
                },
            ],
            return_routes: vec![ReturnRouteRow {
                link: "TunWAN1".into(),
                gateway: "LocalTunWAN1".into(),
                availability: Availability::Ready,
                reason: "answering".into(),
            }],
            ..status_of(vec![])
        };
        let expected = "config x.toml  ruleset epoch 1

return routes
  LINK             GATEWAY          AVAILABILITY REASON
  TunWAN1          LocalTunWAN1     Ready        answering

ipsec
  TunWAN1 on vti-wan1 (vti key 101, ike SAs): SA pair up, last rekey 1m 30s ago
    in  spi 0xc1a2b3c4 aes256gcm16            123456 bytes        789 packets  age 10m  lifetime left 50m
    out spi 0x0d1e2f30 aes256gcm16            123456 bytes        789 packets  age 10m  lifetime left 50m
  TunWAN2 on vti-wan2 (vti key 102, manual SAs): no usable SA pair, last rekey -
";
        assert_eq!(render(&s, at(1_090, 0)), expected);
    }

    #[test]
    fn an_aged_status_moves_sa_ages_and_lifetimes_only() {
        let sa = |age, left| SaRow {
            direction: "in".into(),
            spi: "0x1".into(),
            algorithms: "aes256gcm16".into(),
            bytes: 1,
            packets: 1,
            age_s: age,
            lifetime_left_s: left,
        };
        let r = router_r(
            RouterState::OnMains,
            GatewayState::Active,
            Role::Main,
            at(1_000, 0),
        );
        let s = Status {
            ipsec: vec![IpsecLinkRow {
                link: "T".into(),
                interface: "vti0".into(),
                device: "vti key 1".into(),
                sa_source: "manual".into(),
                usable: true,
                sas: vec![sa(Some(10), Some(5)), sa(None, None)],
                last_rekey: None,
            }],
            ..status_of(vec![r])
        };
        let aged = s.clone().aged(7);
        assert_eq!(aged.ipsec[0].sas[0].age_s, Some(17));
        assert_eq!(aged.ipsec[0].sas[0].lifetime_left_s, Some(0));
        assert_eq!(aged.ipsec[0].sas[1], s.ipsec[0].sas[1]);
        assert_eq!(aged.routers, s.routers);
        assert_eq!(s.clone().aged(0), s);
    }

    /// `--json`: times in RFC 3339 with milliseconds, states as `snake_case` values; and it
    /// reads back as it was written.
    #[test]
    fn json_has_rfc3339_times_and_machine_values() {
        let (t, standby) = (at(1_765_157_400, 123), GatewayState::OnStandby);
        let s = status_of(vec![router_r(
            RouterState::OnMains,
            standby,
            Role::Backup,
            t,
        )]);
        let json = serde_json::to_value(&s).unwrap();
        let r = &json["routers"][0];
        assert_eq!(r["state"], "on_mains");
        assert_eq!(r["last_change"], "2025-12-08T01:30:00.123Z");
        let g = &r["gateways"][0];
        assert_eq!(
            (&g["state"], &g["availability"], &g["role"]),
            (
                &serde_json::json!("on_standby"),
                &serde_json::json!("ready"),
                &serde_json::json!("backup")
            )
        );
        assert_eq!(g["last_change"], "1970-01-01T00:18:06.600Z");
        assert_eq!(g["available_since"], "1970-01-01T00:16:40.000Z");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
