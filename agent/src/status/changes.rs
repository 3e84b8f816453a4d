//! When each router's state, and each gateway's state in each router, last changed, as the
//! committed router tables give them. `xwan status`'s LAST CHANGE is the gateway's state in
//! that router (a backup turning Active), not its availability, which `available_since` and
//! the probes' reason tell.
//!
//! Keyed by names, so a reload that keeps a router and its gateways keeps their times.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    router::{GatewayState, GatewayStatus, Role},
};

/// What a router runs on, from its committed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterState {
    /// Its active gateways are all mains.
    OnMains,
    /// At least one backup takes new connections (mains may too).
    OnBackups,
    /// No gateway takes new connections: its `on_failure` applies.
    NoGateway,
}

impl fmt::Display for RouterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouterState::OnMains => "on mains",
            RouterState::OnBackups => "on backups",
            RouterState::NoGateway => "no gateway",
        })
    }
}

/// A router's state and how many of its mains and backups are active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouterView {
    pub state: RouterState,
    pub active_mains: usize,
    pub active_backups: usize,
}

impl RouterView {
    /// The view of a router whose monitor rows are `rows`.
    pub fn of(rows: &[GatewayStatus]) -> RouterView {
        let active = |role| {
            (rows.iter())
                .filter(|s| s.role == role && s.state == GatewayState::Active)
                .count()
        };
        let (active_mains, active_backups) = (active(Role::Main), active(Role::Backup));
        let state = match (active_mains, active_backups) {
            (0, 0) => RouterState::NoGateway,
            (_, 0) => RouterState::OnMains,
            _ => RouterState::OnBackups,
        };
        RouterView {
            state,
            active_mains,
            active_backups,
        }
    }
}

/// A router whose state or set of active gateways changed (an event for hooks and `xwan
/// events`).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterChange {
    /// Index in the configuration.
    pub router: usize,
    pub state: RouterState,
    pub previous: RouterState,
    /// Its active gateways (taking new connections), mains first.
    pub active: Vec<String>,
    pub previous_active: Vec<String>,
}

/// The last change of every router's view and of every gateway's state in each router.
#[derive(Debug, Default)]
pub struct Changes {
    routers: HashMap<String, RouterTimes>,
}

/// One router's view and its gateways' states, each with the time it last changed.
#[derive(Debug)]
struct RouterTimes {
    view: (RouterView, SystemTime),
    /// Its active gateways, mains first.
    active: Vec<String>,
    /// By gateway name.
    gateways: HashMap<String, (GatewayState, SystemTime)>,
}

impl Changes {
    /// Records the committed `rows` (index = router id) of `config`'s routers `ids` as of
    /// `now`: what differs from the last observation changed at `now`. A verdict's commit
    /// passes the routers it recomputed, so the cost follows them, not the configuration.
    /// Returns the routers whose state or active set changed (a router seen for the first
    /// time has no change: its first state is the baseline).
    pub fn observe(
        &mut self,
        config: &Config,
        rows: &[Vec<GatewayStatus>],
        ids: impl IntoIterator<Item = usize>,
        now: SystemTime,
    ) -> Vec<RouterChange> {
        let mut changes = Vec::new();
        for i in ids {
            let (Some(r), Some(rows)) = (config.routers.get(i), rows.get(i)) else {
                continue;
            };
            let name = |s: &GatewayStatus| config.gateways[s.gateway as usize].name.as_str();
            let view = RouterView::of(rows);
            let active: Vec<String> = (rows.iter())
                .filter(|s| s.state == GatewayState::Active)
                .map(|s| name(s).to_owned())
                .collect();
            let times = (self.routers.entry(r.name.clone())).or_insert_with(|| RouterTimes {
                view: (view, now),
                active: active.clone(),
                gateways: HashMap::new(),
            });
            let same_set =
                |a: &[String], b: &[String]| a.len() == b.len() && a.iter().all(|x| b.contains(x));
            if times.view.0.state != view.state || !same_set(&times.active, &active) {
                changes.push(RouterChange {
                    router: i,
                    state: view.state,
                    previous: times.view.0.state,
                    active: active.clone(),
                    previous_active: std::mem::replace(&mut times.active, active),
                });
            }
            if times.view.0 != view {
                times.view = (view, now);
            }
            for s in rows {
                match times.gateways.get_mut(name(s)) {
                    Some((state, _)) if *state == s.state => {}
                    Some(entry) => *entry = (s.state, now),
                    None => {
                        times.gateways.insert(name(s).to_owned(), (s.state, now));
                    }
                }
            }
            // A router has a handful of gateways: a gateway it no longer has is forgotten.
            (times.gateways).retain(|g, _| rows.iter().any(|s| name(s) == g));
        }
        changes
    }

    /// [`Changes::observe`] of every router of a whole plan, and routers gone from `config`
    /// forgotten.
    pub fn observe_all(
        &mut self,
        config: &Config,
        rows: &[Vec<GatewayStatus>],
        now: SystemTime,
    ) -> Vec<RouterChange> {
        let changes = self.observe(config, rows, 0..config.routers.len(), now);
        let names: HashSet<&str> = config.routers.iter().map(|r| r.name.as_str()).collect();
        self.routers.retain(|name, _| names.contains(name.as_str()));
        changes
    }

    /// When `router`'s view last changed (first seen: the agent's first plan).
    pub fn router(&self, router: &str) -> Option<SystemTime> {
        self.routers.get(router).map(|t| t.view.1)
    }

    /// When `gateway`'s state in `router` last changed.
    pub fn gateway(&self, router: &str, gateway: &str) -> Option<SystemTime> {
        let times = self.routers.get(router)?;
        times.gateways.get(gateway).map(|&(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{config, health::Availability};

    const SEED: &str = include_str!("../../../examples/seed-branch.toml");

    fn row(gateway: u16, role: Role, state: GatewayState) -> GatewayStatus {
        GatewayStatus {
            gateway,
            role,
            state,
            availability: match state {
                GatewayState::Unavailable => Availability::Unavailable,
                _ => Availability::Ready,
            },
            weight: 1,
            slots: 0,
            share: 0.0,
        }
    }

    /// (mains' states, backups' states, the router's view)
    #[test]
    fn a_routers_view_counts_its_active_mains_and_backups() {
        use GatewayState::*;
        let cases = [
            (vec![Active], vec![OnStandby], RouterState::OnMains, 1, 0),
            (
                vec![Unavailable],
                vec![Active],
                RouterState::OnBackups,
                0,
                1,
            ),
            // Below the threshold: mains and backups together.
            (
                vec![Active, Unavailable],
                vec![Active],
                RouterState::OnBackups,
                1,
                1,
            ),
            (
                vec![Unavailable],
                vec![Unavailable],
                RouterState::NoGateway,
                0,
                0,
            ),
            (vec![OnStandby, Active], vec![], RouterState::OnMains, 1, 0),
        ];
        for (mains, backups, state, active_mains, active_backups) in cases {
            let rows: Vec<GatewayStatus> = (mains.iter().map(|&s| row(0, Role::Main, s)))
                .chain(backups.iter().map(|&s| row(1, Role::Backup, s)))
                .collect();
            let want = RouterView {
                state,
                active_mains,
                active_backups,
            };
            assert_eq!(RouterView::of(&rows), want, "{mains:?} {backups:?}");
        }
    }

    /// A backup turning Active changes its time and the router's, not the main's, which
    /// changed on its own earlier; a re-observation of the same rows changes nothing.
    #[test]
    fn only_what_changed_gets_a_new_time() {
        let (config, _) = config::parse(SEED, "seed-branch.toml").unwrap();
        let (ri, r) = (config.routers.iter().enumerate())
            .find(|(_, r)| !r.mains.is_empty() && !r.backups.is_empty())
            .unwrap();
        let (main, backup) = (r.mains[0].gateway.0, r.backups[0].gateway.0);
        let names = |id: u16| config.gateways[id as usize].name.as_str();
        let mut rows: Vec<Vec<GatewayStatus>> = vec![Vec::new(); config.routers.len()];
        rows[ri] = vec![
            row(main, Role::Main, GatewayState::Active),
            row(backup, Role::Backup, GatewayState::OnStandby),
        ];
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let (t1, t2) = (
            t0 + Duration::from_secs(60),
            t0 + Duration::from_millis(60_400),
        );
        let mut c = Changes::default();
        assert_eq!(
            c.observe_all(&config, &rows, t0),
            [],
            "the first plan is the baseline"
        );
        assert_eq!(c.router(&r.name), Some(t0));
        assert_eq!(c.observe(&config, &rows, [ri], t1), []);
        assert_eq!(c.router(&r.name), Some(t0), "nothing changed");

        rows[ri][0].state = GatewayState::Unavailable;
        let lost = c.observe(&config, &rows, [ri], t1);
        rows[ri][1].state = GatewayState::Active;
        let backup_in = c.observe(&config, &rows, [ri], t2);
        let change = |state, previous, active: &[u16], previous_active: &[u16]| RouterChange {
            router: ri,
            state,
            previous,
            active: active.iter().map(|&g| names(g).to_owned()).collect(),
            previous_active: previous_active
                .iter()
                .map(|&g| names(g).to_owned())
                .collect(),
        };
        use RouterState::*;
        assert_eq!(lost, [change(NoGateway, OnMains, &[], &[main])]);
        assert_eq!(backup_in, [change(OnBackups, NoGateway, &[backup], &[])]);
        assert_eq!(c.gateway(&r.name, names(main)), Some(t1));
        assert_eq!(c.gateway(&r.name, names(backup)), Some(t2));
        assert_eq!(
            c.router(&r.name),
            Some(t2),
            "no gateway at t1, on backups at t2"
        );

        // A router gone from the configuration is forgotten.
        let mut fewer = config.clone();
        fewer.routers.retain(|x| x.name != r.name);
        let rows: Vec<_> = (rows.iter().enumerate())
            .filter(|&(i, _)| i != ri)
            .map(|(_, x)| x.clone())
            .collect();
        c.observe_all(&fewer, &rows, t2);
        assert_eq!(c.router(&r.name), None);
        assert_eq!(c.gateway(&r.name, names(main)), None);
    }
}
