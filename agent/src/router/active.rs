//! The active set of a router: which of its gateways take new connections right now.
//!
//! Exactly DESIGN.md §2:
//!
//! * every Ready main gateway is active;
//! * when fewer than `backup_threshold` mains are Ready, backups are activated: the first
//!   Ready backup in list order, or every Ready backup with `activate_all_backups`;
//! * with `load_balancing = none` only the first Ready active gateway (mains first, in list
//!   order) takes traffic; the others stay on standby; with `best-quality` only the one the
//!   quality selection prefers (`spec.preferred`, when it is one of them) does;
//! * nothing Ready: the active set is empty and the data plane applies `on_failure`.
//!
//! A gateway listed more than once in a router (configuration validation rejects that) counts
//! once, in its first position. What a reader may change: nothing here without changing the
//! product contract (DESIGN.md §2) first; display-only fields can be added to [`MemberState`].

use super::{LoadBalancing, Member, RouterSpec};
use crate::health::Availability;

/// Whether a gateway is one of a router's main or backup gateways (`main` / `backup` in
/// `xwan status --json`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Main,
    Backup,
}

/// A gateway's state in one router, as the monitor shows it (`active`, `on_standby`,
/// `unavailable` in `xwan status --json`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayState {
    /// Ready and taking new connections.
    Active,
    /// Ready but not in use (a backup while enough mains are Ready, a second gateway with
    /// `load_balancing = none`, a backup after the first with `activate_all_backups` off).
    OnStandby,
    /// Not Ready.
    Unavailable,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Main => "Main",
            Role::Backup => "Backup",
        })
    }
}

impl std::fmt::Display for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GatewayState::Active => "Active",
            GatewayState::OnStandby => "On standby",
            GatewayState::Unavailable => "Unavailable",
        })
    }
}

/// One gateway of a router, resolved against the current readiness.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemberState {
    pub gateway: u16,
    pub role: Role,
    pub weight: u32,
    /// Ready, Degraded or Unavailable.
    pub availability: Availability,
    pub state: GatewayState,
}

/// A router's active set.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ActiveSet {
    /// Gateways taking new connections: mains first, in list order.
    pub active: Vec<Member>,
    /// Every gateway of the router once: mains then backups, in list order.
    pub members: Vec<MemberState>,
    /// Fewer than `backup_threshold` mains are Ready, so backups are in use (if any is Ready;
    /// with nothing healthy picked, the same of the Degraded ones).
    pub backups_activated: bool,
}

impl ActiveSet {
    pub fn is_active(&self, gateway: u16) -> bool {
        self.active.iter().any(|m| m.gateway == gateway)
    }

    /// Usable (Ready or Degraded) gateways of the router, active or not.
    pub fn usable(&self) -> impl Iterator<Item = u16> + '_ {
        (self.members.iter())
            .filter(|m| m.availability.is_usable())
            .map(|m| m.gateway)
    }

    /// Degraded gateways of the router, active or not.
    pub fn degraded(&self) -> impl Iterator<Item = u16> + '_ {
        (self.members.iter())
            .filter(|m| m.availability == Availability::Degraded)
            .map(|m| m.gateway)
    }
}

/// Computes the active set of `spec` given each gateway's availability.
pub fn active_set(spec: &RouterSpec, availability: &dyn Fn(u16) -> Availability) -> ActiveSet {
    let mut members: Vec<MemberState> = Vec::with_capacity(spec.mains.len() + spec.backups.len());
    // The spec's member behind each entry of `members`.
    let mut sources: Vec<&Member> = Vec::with_capacity(members.capacity());
    let roles = spec
        .mains
        .iter()
        .map(|m| (m, Role::Main))
        .chain(spec.backups.iter().map(|m| (m, Role::Backup)));
    for (m, role) in roles {
        if members.iter().any(|x| x.gateway == m.gateway) {
            continue;
        }
        sources.push(m);
        let availability = availability(m.gateway);
        members.push(MemberState {
            gateway: m.gateway,
            role,
            weight: m.weight.get(),
            availability,
            state: if availability.is_usable() {
                GatewayState::OnStandby
            } else {
                GatewayState::Unavailable
            },
        });
    }

    // The rules on the healthy (Ready) gateways; if they pick none, the same rules on the
    // Degraded ones (where a Degraded main keeps the Degraded backups out).
    let mut backups_activated = false;
    for level in [Availability::Ready, Availability::Degraded] {
        let mains = (members.iter())
            .filter(|m| m.role == Role::Main && m.availability == level)
            .count();
        backups_activated = mains < spec.options.backup_threshold;
        let mut first_backup = true;
        let mut wanted: Vec<usize> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            if m.availability != level {
                continue;
            }
            let take = match m.role {
                Role::Main => true,
                Role::Backup if backups_activated => {
                    let take = first_backup || spec.options.activate_all_backups;
                    first_backup = false;
                    take
                }
                Role::Backup => false,
            };
            if take {
                wanted.push(i);
            }
        }
        // One gateway only without balancing: the first, or the preferred one.
        let single = match spec.options.load_balancing {
            LoadBalancing::None => wanted.first().copied(),
            LoadBalancing::BestQuality => (wanted.iter().copied())
                .find(|&i| Some(members[i].gateway) == spec.preferred)
                .or(wanted.first().copied()),
            LoadBalancing::Connection | LoadBalancing::Source => None,
        };
        for &i in &wanted {
            if single.is_none_or(|s| s == i) {
                members[i].state = GatewayState::Active;
            }
        }
        if !wanted.is_empty() {
            break;
        }
    }
    let active = (members.iter().zip(sources))
        .filter(|(m, _)| m.state == GatewayState::Active)
        .map(|(_, &source)| source)
        .collect();
    ActiveSet {
        active,
        members,
        backups_activated,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Member, OnFailure, RouterOptions};
    use super::*;
    use std::num::NonZeroU32;

    fn m(gateway: u16) -> Member {
        Member::new(&format!("gw{gateway}"), gateway, 1).unwrap()
    }

    fn avail(ready: bool) -> Availability {
        if ready {
            Availability::Ready
        } else {
            Availability::Unavailable
        }
    }

    fn weights(a: &ActiveSet) -> Vec<(u16, u32)> {
        a.active
            .iter()
            .map(|m| (m.gateway, m.weight.get()))
            .collect()
    }

    fn spec(mains: &[u16], backups: &[u16]) -> RouterSpec {
        RouterSpec {
            name: "r".into(),
            mains: mains.iter().map(|&g| m(g)).collect(),
            backups: backups.iter().map(|&g| m(g)).collect(),
            options: RouterOptions {
                on_failure: OnFailure::Drop,
                ..RouterOptions::default()
            },
            preferred: None,
        }
    }

    fn active(s: &RouterSpec, up: &[u16]) -> Vec<u16> {
        active_set(s, &|g| avail(up.contains(&g)))
            .active
            .iter()
            .map(|m| m.gateway)
            .collect()
    }

    #[test]
    fn table_of_cases() {
        use LoadBalancing::{Connection, None as Lb0};
        // (mains, backups, threshold, all backups, load balancing, ready, expected active)
        #[allow(clippy::type_complexity)]
        let cases: &[(&[u16], &[u16], usize, bool, LoadBalancing, &[u16], &[u16])] = &[
            // Mains up: backups on standby.
            (
                &[1, 2],
                &[3, 4],
                1,
                false,
                Connection,
                &[1, 2, 3, 4],
                &[1, 2],
            ),
            (&[1, 2], &[3, 4], 1, false, Connection, &[2, 3, 4], &[2]),
            // All mains down: first Ready backup, or all of them.
            (&[1, 2], &[3, 4], 1, false, Connection, &[3, 4], &[3]),
            (&[1, 2], &[3, 4], 1, false, Connection, &[4], &[4]),
            (&[1, 2], &[3, 4], 1, true, Connection, &[3, 4], &[3, 4]),
            // Threshold 2: one main down brings backups in alongside the remaining main.
            (&[1, 2], &[3, 4], 2, false, Connection, &[1, 3, 4], &[1, 3]),
            (
                &[1, 2],
                &[3, 4],
                2,
                true,
                Connection,
                &[2, 3, 4],
                &[2, 3, 4],
            ),
            (
                &[1, 2],
                &[3, 4],
                2,
                false,
                Connection,
                &[1, 2, 3, 4],
                &[1, 2],
            ),
            // Threshold 0: backups never used.
            (&[1], &[3], 0, false, Connection, &[3], &[]),
            // Threshold above the number of mains: backups always in use.
            (&[1], &[3, 4], 3, false, Connection, &[1, 3, 4], &[1, 3]),
            // Load balancing none: the first Ready active gateway only, mains first.
            (&[1, 2], &[3, 4], 1, false, Lb0, &[1, 2, 3], &[1]),
            (&[1, 2], &[3, 4], 1, false, Lb0, &[2, 3], &[2]),
            (&[1, 2], &[3, 4], 2, true, Lb0, &[2, 3, 4], &[2]),
            (&[1, 2], &[3, 4], 1, true, Lb0, &[4, 3], &[3]),
            // Nothing Ready.
            (&[1, 2], &[3, 4], 1, true, Connection, &[], &[]),
            (&[1], &[], 1, false, Connection, &[2], &[]),
            // Only backups configured.
            (&[], &[3, 4], 1, false, Connection, &[3, 4], &[3]),
        ];
        for (i, &(mains, backups, th, all, lb, up, want)) in cases.iter().enumerate() {
            let mut s = spec(mains, backups);
            s.options.backup_threshold = th;
            s.options.activate_all_backups = all;
            s.options.load_balancing = lb;
            assert_eq!(active(&s, up), want, "case {i}");
        }
    }

    #[test]
    fn member_states() {
        let mut s = spec(&[1, 2], &[3, 4, 5]);
        s.options.activate_all_backups = false;
        let a = active_set(&s, &|g| avail(g != 1 && g != 2 && g != 4));
        let st: Vec<_> = a
            .members
            .iter()
            .map(|m| (m.gateway, m.role, m.state))
            .collect();
        use GatewayState::*;
        assert_eq!(
            st,
            [
                (1, Role::Main, Unavailable),
                (2, Role::Main, Unavailable),
                (3, Role::Backup, Active),
                (4, Role::Backup, Unavailable),
                (5, Role::Backup, OnStandby),
            ]
        );
        assert!(a.backups_activated);
        assert_eq!(a.usable().collect::<Vec<_>>(), [3, 5]);
        assert!(a.is_active(3) && !a.is_active(5));
    }

    #[test]
    fn duplicates_count_once_first_role_wins() {
        let s = spec(&[1, 1], &[1, 2]);
        let a = active_set(&s, &|_| Availability::Ready);
        assert_eq!(weights(&a), [(1, 1)]);
        assert_eq!(a.members.len(), 2);
        assert_eq!(a.members[0].role, Role::Main);
    }

    #[test]
    fn weights_carried() {
        let mut s = spec(&[1], &[2, 3]);
        s.backups[0].weight = NonZeroU32::new(50).unwrap();
        s.backups[1].weight = NonZeroU32::new(10).unwrap();
        s.options.activate_all_backups = true;
        assert_eq!(
            weights(&active_set(&s, &|g| avail(g != 1))),
            [(2, 50), (3, 10)]
        );
    }

    /// (mains, backups, Degraded gateways, Unavailable gateways, expected active): Degraded
    /// ones are used only when no healthy gateway would be.
    #[test]
    fn degraded_gateways_only_when_nothing_healthy_would_be_used() {
        use Availability::*;
        type Ids = &'static [u16];
        let cases: [(Ids, Ids, Ids, Ids, Ids); 6] = [
            // A Degraded main beside a healthy one: the healthy one alone.
            (&[1, 2], &[], &[1], &[], &[2]),
            // A Degraded main, a healthy backup: the backup comes in, alone.
            (&[1], &[2], &[1], &[], &[2]),
            // Nothing healthy: the Degraded main.
            (&[1], &[2], &[1], &[2], &[1]),
            // Degraded main and backup: the main (mains first).
            (&[1], &[2], &[1, 2], &[], &[1]),
            // Main down, backup Degraded: the backup.
            (&[1], &[2], &[2], &[1], &[2]),
            // Two Degraded mains: both.
            (&[1, 2], &[3], &[1, 2], &[3], &[1, 2]),
        ];
        for (i, &(mains, backups, degraded, down, want)) in cases.iter().enumerate() {
            let s = spec(mains, backups);
            let a = active_set(&s, &|g| {
                if degraded.contains(&g) {
                    Degraded
                } else if down.contains(&g) {
                    Unavailable
                } else {
                    Ready
                }
            });
            let got: Vec<u16> = a.active.iter().map(|m| m.gateway).collect();
            assert_eq!(got, want, "case {i}");
            let mut usable: Vec<u16> = a.usable().collect();
            usable.sort_unstable();
            let mut expected: Vec<u16> = (mains.iter().chain(backups))
                .copied()
                .filter(|g| !down.contains(g))
                .collect();
            expected.sort_unstable();
            assert_eq!(usable, expected, "case {i}");
        }
    }
}
