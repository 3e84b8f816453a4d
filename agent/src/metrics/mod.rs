//! Prometheus metrics: what an operator needs to see failover, load balancing and the data
//! plane's health, served over HTTP in the OpenMetrics text format (DESIGN.md §4).
//!
//! The daemon owns one [`Metrics`] (in an `Arc`) and pushes plain snapshots into it:
//!
//! * per router and gateway, after every table recompute: [`Metrics::set_gateway`] with a
//!   [`GatewaySnapshot`] (built from [`crate::router::GatewayStatus`] by
//!   [`GatewaySnapshot::from_status`]);
//! * per gateway state change, once per router using the gateway:
//!   [`Metrics::record_transition`];
//! * per probe attempt: [`Metrics::observe_probe_report`] (or [`Metrics::observe_probe`] plus
//!   [`Metrics::set_probe_window`]);
//! * per reload: [`Metrics::record_reload`] (the initial load counts as a successful reload, as
//!   in Prometheus itself), then [`Metrics::retain_config`] to forget removed objects;
//! * per committed table: [`Metrics::observe_commit`] with the time since the probe verdict.
//!
//! Data-plane counters are read at scrape time: [`serve`] calls the daemon's
//! [`DatapathSource`] (on a blocking thread, without holding any lock of this module) and hands
//! the [`DatapathSnapshot`] to [`Metrics::set_datapath`] before encoding. The kernel's totals are
//! exposed as counters as they are (they are monotonic; a reload that moves a rule to another
//! counter slot shows as a counter reset, which `rate()` handles).
//!
//! Cardinality is bounded by the configuration: label values are router, gateway, rule and
//! interface names from the config, reason codes from fixed sets ([`xwan_common::reason::NAMES`],
//! [`crate::health::Reason::code`]) and enum values — never anything taken from traffic.
//!
//! Locking: the state lives behind `Mutex<Arc<_>>`. An update locks, mutates in place (copying
//! the state only if a scrape is encoding the previous version at that moment) and unlocks; a
//! scrape locks only to clone the `Arc`, then encodes without any lock. A scrape therefore never
//! delays a probe or a table commit by more than a pointer copy.
//!
//! Output order is deterministic (sorted by router, gateway, ...), so the exposition can be
//! pinned by the unit tests and renames are deliberate.

mod bench;
mod collector;
mod histogram;
mod http;
#[cfg(test)]
mod tests;
mod xfrm;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use prometheus_client::{encoding::text, metrics::info::Info, registry::Registry};
use xwan_common::Counter;

use crate::{
    config::Config,
    datapath::{AttachReport, TcAttachMode, XdpAttachMode},
    events::hooks::Outcome as HookOutcome,
    health::{Availability, Reason, Stats, Transition},
    netlink::conntrack::Reset,
    offload::Event as OffloadEvent,
    probe::ProbeReport,
    router::{GatewayState, GatewayStatus, Role},
};

pub use bench::{bench_fixture, bench_gateway_name, bench_rule_name, bench_scrape};
pub use http::{CONTENT_TYPE, DEFAULT_LISTEN, DatapathSource, serve, serve_on};
pub use xfrm::{XfrmSnapshot, XfrmSource};

use collector::{DatapathCollector, StateCollector};
use histogram::Histogram;

/// Upper bounds (seconds) of `xwan_probe_rtt_seconds`: 0.1 ms to 2 s (the default `wait`).
pub const RTT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// Upper bounds (seconds) of `xwan_commit_duration_seconds`: probe verdict to committed table.
pub const COMMIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One gateway of one router, as the monitor shows it (DESIGN.md §2).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct GatewaySnapshot {
    /// Ready, Degraded or Unavailable.
    pub availability: Availability,
    /// Active / On standby / Unavailable.
    pub state: GatewayState,
    /// Main or backup gateway of this router.
    pub role: Role,
    /// Configured weight.
    pub weight: u32,
    /// Share of new connections (slot share), 0.0–1.0.
    pub distribution: f64,
    /// Last availability change, if any since the agent started.
    pub last_change: Option<SystemTime>,
}

impl GatewaySnapshot {
    /// From a router's monitor row (whose `share` is a percentage) and the gateway's last
    /// availability change.
    pub fn from_status(s: &GatewayStatus, last_change: Option<SystemTime>) -> GatewaySnapshot {
        GatewaySnapshot {
            availability: s.availability,
            state: s.state,
            role: s.role,
            weight: s.weight,
            distribution: s.share / 100.0,
            last_change,
        }
    }
}

/// Direction of an availability change: `up` = Unavailable → Ready.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    /// The `direction` label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The data plane's counters, read at scrape time (per-CPU values already summed).
///
/// Names must be the configured ones (distinct within a list); for an unnamed rule use
/// [`rule_label`].
#[derive(Clone, PartialEq, Debug, Default)]
pub struct DatapathSnapshot {
    /// Per rule: name and the kernel's packet/byte totals.
    pub rules: Vec<(String, Counter)>,
    /// Per gateway: name and the packets/bytes forwarded through it.
    pub gateways: Vec<(String, Counter)>,
    /// Per gateway: name and the packets/bytes steered to it that its egress did not take.
    pub gateway_failures: Vec<(String, Counter)>,
    /// Per gateway: name and the flows its routers' tables gave it (`packets`).
    pub gateway_new_flows: Vec<(String, u64)>,
    /// Per verdict reason, indexed by reason code (`xwan_common::reason`), as
    /// `Datapath::reason_counters` returns them; entries beyond `reason::COUNT` are ignored.
    pub reasons: Vec<Counter>,
    /// Entries in the flow table (`None`: not read, the series is left out).
    pub flow_entries: Option<u64>,
    /// The flow table's size (`None`: not read).
    pub flow_capacity: Option<u32>,
    /// Kernel memory (bytes) of each map sized by `flow_table_size`.
    pub flow_memory: Vec<(&'static str, u64)>,
    /// Entries in the return-route table (`None`: not read).
    pub return_entries: Option<u64>,
    /// XDP attach mode per interface.
    pub xdp_attach: Vec<(String, XdpAttachMode)>,
    /// TC ingress attach mode per interface.
    pub tc_attach: Vec<(String, TcAttachMode)>,
}

impl DatapathSnapshot {
    /// Fills `xdp_attach` and `tc_attach` from the datapath's attach reports.
    pub fn set_attachments(&mut self, reports: &[AttachReport]) {
        self.xdp_attach = reports
            .iter()
            .filter_map(|r| r.xdp.map(|(_, m)| (r.ifname.clone(), m)))
            .collect();
        self.tc_attach = reports
            .iter()
            .filter_map(|r| r.tc.map(|(_, m)| (r.ifname.clone(), m)))
            .collect();
    }
}

/// The `rule` label of a rule: its name, or `#N` (1-based position, as configuration
/// diagnostics name it) when it has none.
pub fn rule_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => n.to_string(),
        None => format!("#{}", index + 1),
    }
}

/// Metrics of one gateway in one router.
#[derive(Clone, Debug, Default)]
struct GatewayEntry {
    snapshot: Option<GatewaySnapshot>,
    /// (direction, reason code) → count.
    transitions: BTreeMap<(Direction, &'static str), u64>,
}

impl GatewayEntry {
    /// A new entry has its usual transition series at zero, so that the first transition is
    /// seen by `increase()` (a series appearing at 1 has no visible increase).
    fn new() -> GatewayEntry {
        let mut transitions = BTreeMap::new();
        for (d, r) in INITIAL_TRANSITIONS {
            transitions.insert((*d, r.code()), 0);
        }
        GatewayEntry {
            snapshot: None,
            transitions,
        }
    }
}

/// Transition series created at zero with each router/gateway entry.
const INITIAL_TRANSITIONS: &[(Direction, Reason)] = &[
    (Direction::Up, Reason::Answering),
    (Direction::Up, Reason::NotMonitored),
    (
        Direction::Down,
        Reason::Failed(crate::health::FailureCause::Timeout),
    ),
    (
        Direction::Down,
        Reason::Failed(crate::health::FailureCause::Refused),
    ),
    (
        Direction::Down,
        Reason::Failed(crate::health::FailureCause::Unreachable),
    ),
    (
        Direction::Down,
        Reason::Failed(crate::health::FailureCause::Error),
    ),
    (
        Direction::Down,
        Reason::Sla(crate::health::SlaBreach::Loss {
            loss_pct: 0.0,
            max_pct: 0.0,
        }),
    ),
    (Direction::Down, Reason::LinkDown),
];

/// Probe metrics of one gateway.
#[derive(Clone, Debug)]
struct ProbeEntry {
    sent: u64,
    lost: u64,
    rtt: Histogram,
    jitter: Option<f64>,
    loss: Option<f64>,
    /// Check targets that answered the last attempt, and how many there are.
    targets: Option<(usize, usize)>,
}

impl ProbeEntry {
    fn observe(&mut self, rtt: Option<Duration>) {
        self.sent += 1;
        match rtt {
            Some(rtt) => self.rtt.observe(rtt.as_secs_f64()),
            None => self.lost += 1,
        }
    }

    fn set_window(&mut self, stats: &Stats) {
        self.jitter = stats.jitter.map(|d| d.as_secs_f64());
        self.loss = Some(stats.loss);
    }
}

impl Default for ProbeEntry {
    fn default() -> Self {
        ProbeEntry {
            sent: 0,
            lost: 0,
            rtt: Histogram::new(&RTT_BUCKETS),
            jitter: None,
            loss: None,
            targets: None,
        }
    }
}

/// Everything pushed by the daemon (the data plane aside).
#[derive(Clone, Debug)]
struct State {
    /// router → gateway → entry.
    gateways: BTreeMap<Arc<str>, BTreeMap<Arc<str>, GatewayEntry>>,
    /// gateway → probes.
    probes: BTreeMap<Arc<str>, ProbeEntry>,
    reloads_ok: u64,
    reloads_failed: u64,
    /// Moved flows' conntrack resets by outcome ([`Reset::ALL`] order), then failures.
    conntrack_resets: [u64; Reset::ALL.len() + 1],
    /// The fast path's changes ([`OffloadEvent::ALL`] order).
    offloads: [u64; OffloadEvent::ALL.len()],
    /// Times kernel notifications were lost and the kernel read again.
    kernel_resyncs: u64,
    /// hook → events by outcome ([`HookOutcome::ALL`] order).
    hooks: BTreeMap<Arc<str>, [u64; HookOutcome::ALL.len()]>,
    last_reload_ok: Option<bool>,
    last_reload_success: Option<f64>,
    commit: Histogram,
}

impl Default for State {
    fn default() -> Self {
        State {
            gateways: BTreeMap::new(),
            probes: BTreeMap::new(),
            reloads_ok: 0,
            reloads_failed: 0,
            conntrack_resets: [0; Reset::ALL.len() + 1],
            offloads: [0; OffloadEvent::ALL.len()],
            kernel_resyncs: 0,
            hooks: BTreeMap::new(),
            last_reload_ok: None,
            last_reload_success: None,
            commit: Histogram::new(&COMMIT_BUCKETS),
        }
    }
}

impl State {
    fn gateway(&mut self, router: &str, gateway: &str) -> &mut GatewayEntry {
        if !self.gateways.contains_key(router) {
            self.gateways.insert(router.into(), BTreeMap::new());
        }
        let gws = self.gateways.get_mut(router).expect("inserted above");
        if !gws.contains_key(gateway) {
            gws.insert(gateway.into(), GatewayEntry::new());
        }
        gws.get_mut(gateway).expect("inserted above")
    }

    fn probe(&mut self, gateway: &str) -> &mut ProbeEntry {
        if !self.probes.contains_key(gateway) {
            self.probes.insert(gateway.into(), ProbeEntry::default());
        }
        self.probes.get_mut(gateway).expect("inserted above")
    }
}

/// What the collectors and the [`Metrics`] handle share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Arc<State>>,
    datapath: Mutex<Arc<DatapathSnapshot>>,
}

impl Shared {
    /// The current state, for encoding: the lock is held for a pointer copy.
    fn state(&self) -> Arc<State> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn datapath(&self) -> Arc<DatapathSnapshot> {
        self.datapath
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `f` to the state under the lock (copy-on-write if a scrape holds it).
    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(Arc::make_mut(&mut guard))
    }
}

/// The agent's metrics registry. Cheap to update from any thread; see the module docs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    shared: Arc<Shared>,
    xfrm: Arc<xfrm::XfrmSlot>,
    /// Size of the last exposition, to allocate the next one at once.
    last_len: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with `xwan_build_info{version}` set to this crate's version.
    pub fn new() -> Metrics {
        Metrics::with_version(env!("CARGO_PKG_VERSION"))
    }

    /// A registry whose `xwan_build_info` says `version`.
    pub fn with_version(version: &str) -> Metrics {
        let shared = Arc::new(Shared::default());
        let mut registry = Registry::default();
        registry.register(
            "xwan_build",
            "Build of the running agent",
            Info::new(vec![("version".to_string(), version.to_string())]),
        );
        registry.register_collector(Box::new(StateCollector(shared.clone())));
        registry.register_collector(Box::new(DatapathCollector(shared.clone())));
        let xfrm = Arc::new(xfrm::XfrmSlot::default());
        registry.register_collector(Box::new(xfrm::XfrmCollector(xfrm.clone())));
        Metrics {
            registry,
            shared,
            xfrm,
            last_len: AtomicUsize::new(0),
        }
    }

    /// Records one gateway's row in one router (after every table recompute).
    pub fn set_gateway(&self, router: &str, gateway: &str, snapshot: GatewaySnapshot) {
        self.shared
            .update(|s| s.gateway(router, gateway).snapshot = Some(snapshot));
    }

    /// Counts an availability change of `gateway` in `router` (call it for every router using
    /// the gateway). Reason-only changes (same availability) are not counted.
    pub fn record_transition(&self, router: &str, gateway: &str, transition: &Transition) {
        if !transition.is_state_change() {
            return;
        }
        // Up towards Ready, down towards Unavailable (Degraded lies between).
        let rank = |a: Availability| match a {
            Availability::Unavailable => 0,
            Availability::Degraded => 1,
            Availability::Ready => 2,
        };
        let direction = match rank(transition.to) > rank(transition.from) {
            true => Direction::Up,
            false => Direction::Down,
        };
        let reason = transition.reason.code();
        self.shared.update(|s| {
            *s.gateway(router, gateway)
                .transitions
                .entry((direction, reason))
                .or_insert(0) += 1;
        });
    }

    /// Counts one probe attempt of `gateway`: `Some(rtt)` answered, `None` lost.
    pub fn observe_probe(&self, gateway: &str, rtt: Option<Duration>) {
        self.shared.update(|s| s.probe(gateway).observe(rtt));
    }

    /// Sets `gateway`'s jitter and loss ratio over the probe window.
    pub fn set_probe_window(&self, gateway: &str, stats: &Stats) {
        self.shared.update(|s| s.probe(gateway).set_window(stats));
    }

    /// [`Self::observe_probe`] and [`Self::set_probe_window`] for one probe report, in one
    /// update (a scrape never sees the attempt without its window). Every probe counts; the
    /// window figures and target counts are those of the gateway's own judgement (`primary`:
    /// a router judging it with other settings probes it on its own schedule).
    pub fn observe_probe_report(&self, gateway: &str, report: &ProbeReport, primary: bool) {
        self.shared.update(|s| {
            let p = s.probe(gateway);
            p.observe(report.outcome.as_ref().ok().copied());
            if primary {
                p.set_window(&report.stats);
                p.targets = Some((report.answered, report.targets));
            }
        });
    }

    /// One moved flow's conntrack reset: its outcome, `None` when the request failed.
    pub fn record_conntrack_reset(&self, outcome: Option<Reset>) {
        let i = (outcome.and_then(|o| Reset::ALL.iter().position(|&r| r == o)))
            .unwrap_or(Reset::ALL.len());
        self.shared.update(|s| s.conntrack_resets[i] += 1);
    }

    /// Kernel notifications were lost and everything read again (`daemon`).
    pub fn record_kernel_resync(&self) {
        self.shared.update(|s| s.kernel_resyncs += 1);
    }

    /// One change the offload follower made (`crate::offload`).
    pub fn record_offload(&self, event: OffloadEvent) {
        let i = OffloadEvent::ALL
            .iter()
            .position(|&e| e == event)
            .expect("every event is in ALL");
        self.shared.update(|s| s.offloads[i] += 1);
    }

    /// What became of one event handed to hook `hook` (`crate::events::hooks`).
    pub fn record_hook(&self, hook: &str, outcome: HookOutcome) {
        let i = (HookOutcome::ALL.iter())
            .position(|&o| o == outcome)
            .expect("every outcome is in ALL");
        self.shared.update(|s| match s.hooks.get_mut(hook) {
            Some(counts) => counts[i] += 1,
            None => {
                let mut counts = [0; HookOutcome::ALL.len()];
                counts[i] = 1;
                s.hooks.insert(hook.into(), counts);
            }
        });
    }

    /// Counts a configuration (re)load; a success also sets the last-success time to now.
    pub fn record_reload(&self, ok: bool) {
        self.record_reload_at(ok, SystemTime::now());
    }

    pub(crate) fn record_reload_at(&self, ok: bool, at: SystemTime) {
        self.shared.update(|s| {
            s.last_reload_ok = Some(ok);
            if ok {
                s.reloads_ok += 1;
                s.last_reload_success = Some(unix_seconds(at));
            } else {
                s.reloads_failed += 1;
            }
        });
    }

    /// Records the time from a probe verdict to the committed router table.
    pub fn observe_commit(&self, duration: Duration) {
        self.shared
            .update(|s| s.commit.observe(duration.as_secs_f64()));
    }

    /// Replaces the data-plane snapshot encoded by the next scrapes ([`serve`] calls it with
    /// a fresh snapshot on every scrape).
    pub fn set_datapath(&self, snapshot: DatapathSnapshot) {
        *self
            .shared
            .datapath
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    /// Forgets routers, router/gateway pairs and probed gateways `config` no longer has (after
    /// a reload), so that their series disappear.
    pub fn retain_config(&self, config: &Config) {
        let members = |router: &str, gateway: &str| {
            config.routers.iter().any(|r| {
                r.name == router
                    && r.members()
                        .filter_map(|m| config.gateways.get(m.gateway.0 as usize))
                        .any(|g| g.name == gateway)
            })
        };
        self.retain(members, |g| config.gateways.iter().any(|c| c.name == g));
        (self.shared).update(|s| {
            s.hooks
                .retain(|h, _| config.hooks.iter().any(|c| *c.name == **h))
        });
    }

    /// Keeps the router/gateway entries for which `keep_member(router, gateway)` holds and the
    /// probe series of gateways for which `keep_probed(gateway)` holds.
    pub fn retain(
        &self,
        keep_member: impl Fn(&str, &str) -> bool,
        keep_probed: impl Fn(&str) -> bool,
    ) {
        self.shared.update(|s| {
            for (router, gws) in s.gateways.iter_mut() {
                gws.retain(|g, _| keep_member(router, g));
            }
            s.gateways.retain(|_, gws| !gws.is_empty());
            s.probes.retain(|g, _| keep_probed(g));
        });
    }

    /// The OpenMetrics exposition (ends with `# EOF`), with the last data-plane snapshot.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 1024);
        text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
