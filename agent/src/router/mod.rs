//! Router objects: from gateway readiness to the weighted table the data plane uses.
//!
//! Pure logic, no I/O: the health module says which gateways are Ready, this module says
//! which of a router's gateways take new connections, how new connections are spread over
//! them, and on which gateways existing connections may stay. The datapath module commits
//! the resulting [`RouterTable`]s (double-buffered flip).
//!
//! * [`RouterSpec`] / [`Member`] / [`RouterOptions`]: a router object as DESIGN.md §2 defines
//!   it, independent of the configuration file's syntax (the config module builds these and
//!   keeps the options as they are; [`Keyword`] gives each option value its keyword).
//! * `active.rs`: [`active_set`], the active set (mains, backups, `backup_threshold`,
//!   `activate_all_backups`, `load_balancing = none`) and per-gateway states for display.
//! * `quality.rs`: `load_balancing = best-quality`, the score of a gateway's probe window
//!   and which candidate takes new connections, with hysteresis.
//! * `slots.rs`: [`fill`], the `ROUTER_SLOTS` weighted slot table with exact quotas, a pure
//!   function of the active gateways (Maglev), with near-minimal disruption.
//! * this file: [`table`], the committed table (slots, `keep` set from `failback`, hash mode,
//!   `on_failure`) and the monitor rows ([`GatewayStatus`]).
//! * `bench.rs`: [`bench_recompute`], verdict-to-tables latency for N routers, and
//!   [`bench_disruption`], the slots a history-independent table moves.
//! * `tests.rs`: the seed scenario of DESIGN.md §1, table-driven (each file also has its own
//!   unit and property tests).
//!
//! What a reader may change: the display struct [`GatewayStatus`] (add fields freely); the
//! semantics of [`table`] are the product contract (DESIGN.md §2) and `tests.rs` pins them
//! to the seed scenario.

mod active;
pub mod bench;
pub mod quality;
pub(crate) mod slots;

#[cfg(test)]
mod tests;

use std::num::NonZeroU32;

use xwan_common::maps::ROUTER_SLOTS;
use xwan_common::plan::{HashMode, RouterTable};

pub use crate::health::Availability;

pub use active::{ActiveSet, GatewayState, MemberState, Role, active_set};
pub use bench::{BenchResult, Disruption, bench_disruption, bench_recompute};
pub use slots::{EXTRA_MOVES_BOUND, fill, placement};

/// An option whose configuration values are keywords (`load_balancing = "source"`): the
/// keywords are defined here once, for the config's parser and everything that prints them.
pub trait Keyword: Copy + PartialEq + 'static {
    /// Every value with its keyword.
    const ALL: &'static [(&'static str, Self)];

    /// The keyword of `self`.
    fn keyword(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(k, _)| k)
    }
}

/// How new connections are spread over the active gateways.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum LoadBalancing {
    /// By connection (5-tuple hash), weighted.
    #[default]
    Connection,
    /// By source address: all connections of a host take one gateway, weighted over hosts.
    Source,
    /// No balancing: the first Ready active gateway takes everything.
    None,
    /// No balancing: the active gateway with the best measured quality takes new connections
    /// ([`quality`]).
    BestQuality,
}

impl Keyword for LoadBalancing {
    const ALL: &'static [(&'static str, Self)] = &[
        ("connection", LoadBalancing::Connection),
        ("source", LoadBalancing::Source),
        ("none", LoadBalancing::None),
        ("best-quality", LoadBalancing::BestQuality),
    ];
}

/// What happens to existing connections when a better gateway becomes active again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Failback {
    /// Existing flows stay on their gateway while it is Ready (until idle); only new
    /// connections use the new active set.
    #[default]
    NewConnections,
    /// Flows on a gateway that is no longer active move at once.
    All,
}

impl Keyword for Failback {
    const ALL: &'static [(&'static str, Self)] = &[
        ("new-connections", Failback::NewConnections),
        ("all", Failback::All),
    ];
}

/// What happens to a packet of the router when none of its gateways is Ready.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum OnFailure {
    /// Hand it to the kernel's routing.
    #[default]
    DefaultRoute,
    /// Drop it ("do not route").
    Drop,
}

impl Keyword for OnFailure {
    const ALL: &'static [(&'static str, Self)] = &[
        ("default-route", OnFailure::DefaultRoute),
        ("drop", OnFailure::Drop),
    ];
}

/// A router's options (DESIGN.md §2), as the configuration's validated router holds them.
/// A new option is added here, with its default, and in the config's parser.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RouterOptions {
    /// Backups are activated when fewer than this many mains are Ready. 1, the default,
    /// means "when no main is Ready" (all mains down), whatever the number of mains; 2 with
    /// two mains brings backups in as soon as one main is down; 0 never uses backups.
    pub backup_threshold: usize,
    /// Activate every Ready backup (otherwise only the first Ready one).
    pub activate_all_backups: bool,
    pub load_balancing: LoadBalancing,
    pub on_failure: OnFailure,
    pub failback: Failback,
}

impl Default for RouterOptions {
    fn default() -> RouterOptions {
        RouterOptions {
            backup_threshold: 1,
            activate_all_backups: false,
            load_balancing: LoadBalancing::default(),
            on_failure: OnFailure::default(),
            failback: Failback::default(),
        }
    }
}

/// One gateway of a router, with its weight.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Member {
    /// Gateway id (index of the gateway map).
    pub gateway: u16,
    pub weight: NonZeroU32,
    /// Where the gateway's slots fall in a table: [`placement`] of its name, so tables do
    /// not depend on ids (the configuration's order) and two boxes agree.
    pub placement: u64,
}

impl Member {
    /// The gateway `name` with id `gateway`; `None` for weight 0.
    pub fn new(name: &str, gateway: u16, weight: u32) -> Option<Member> {
        Some(Member {
            gateway,
            weight: NonZeroU32::new(weight)?,
            placement: placement(name),
        })
    }
}

/// A router object (DESIGN.md §2), already validated.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RouterSpec {
    pub name: String,
    /// Main gateways, in list order.
    pub mains: Vec<Member>,
    /// Backup gateways, in list order (the order decides which backup is "first").
    pub backups: Vec<Member>,
    pub options: RouterOptions,
    /// With `load_balancing = best-quality`: the candidate [`quality::pick`] chose (the
    /// first candidate when `None` or not one).
    pub preferred: Option<u16>,
}

/// One row of the monitor table for a router (DESIGN.md §2): the router-dependent columns.
/// Times (last change, available since) and addresses belong to the health and config
/// modules.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct GatewayStatus {
    pub gateway: u16,
    /// Main / Backup.
    pub role: Role,
    /// Active / On standby / Unavailable.
    pub state: GatewayState,
    /// Ready / Degraded / Unavailable.
    pub availability: Availability,
    pub weight: u32,
    /// Slots of the table: the gateway's part of new connections is `slots / ROUTER_SLOTS`.
    pub slots: usize,
    /// Distribution: percentage of new connections (slot share).
    pub share: f64,
}

/// Computes a router's table and its monitor rows: a pure function of `spec` and
/// `availability` (each gateway's), so a router's table after a failure and recovery is the
/// one it had before. The table has:
/// * `slots`: the weighted table of the active set ([`fill`]), empty when nothing is active;
/// * `keep`: with failback `new-connections`, every usable (Ready or Degraded) gateway of the
///   router (existing flows stay where they are while their gateway is usable); with `all`,
///   the active ones and the Degraded ones (flows on a healthy gateway that went on standby
///   move at once; a gateway becoming Degraded moves only new connections). Sorted by
///   gateway id;
/// * `hash`: [`HashMode::Source`] for `load_balancing = source`, otherwise by connection;
/// * `on_failure_pass` from the options' `on_failure`.
pub fn table(
    spec: &RouterSpec,
    availability: &dyn Fn(u16) -> Availability,
) -> (RouterTable, Vec<GatewayStatus>) {
    let set = active_set(spec, availability);
    let (slots, counts) = slots::fill_with_quotas(&set.active);
    let mut keep: Vec<u16> = match spec.options.failback {
        Failback::NewConnections => set.usable().collect(),
        Failback::All => (set.active.iter().map(|m| m.gateway))
            .chain(set.degraded())
            .collect(),
    };
    keep.sort_unstable();
    keep.dedup();
    let hash = match spec.options.load_balancing {
        LoadBalancing::Source => HashMode::Source,
        LoadBalancing::Connection | LoadBalancing::None | LoadBalancing::BestQuality => {
            HashMode::Connection
        }
    };
    let status = set
        .members
        .iter()
        .map(|m| {
            let n = counts
                .binary_search_by_key(&m.gateway, |&(g, _)| g)
                .map_or(0, |i| counts[i].1);
            GatewayStatus {
                gateway: m.gateway,
                role: m.role,
                state: m.state,
                availability: m.availability,
                weight: m.weight,
                slots: n,
                share: n as f64 * 100.0 / ROUTER_SLOTS as f64,
            }
        })
        .collect();
    let table = RouterTable {
        slots,
        keep,
        hash,
        on_failure_pass: spec.options.on_failure == OnFailure::DefaultRoute,
    };
    (table, status)
}

/// [`table`] for every router.
pub fn tables(
    specs: &[RouterSpec],
    availability: &dyn Fn(u16) -> Availability,
) -> Vec<(RouterTable, Vec<GatewayStatus>)> {
    specs.iter().map(|s| table(s, availability)).collect()
}
