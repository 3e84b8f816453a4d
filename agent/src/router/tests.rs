//! Router semantics, table-driven from the seed scenario of DESIGN.md §1.
//!
//! Gateway ids: 1 = RemoteTunWAN1, 2 = RemoteTunWAN2, 3 = RemoteTunWAN3.

use super::*;

const WAN1: u16 = 1;
const WAN2: u16 = 2;
const WAN3: u16 = 3;

fn member(gateway: u16, weight: u32) -> Member {
    Member::new(&format!("RemoteTunWAN{gateway}"), gateway, weight).unwrap()
}

fn router(name: &str, mains: &[(u16, u32)], backups: &[(u16, u32)]) -> RouterSpec {
    RouterSpec {
        name: name.into(),
        mains: mains.iter().map(|&(g, w)| member(g, w)).collect(),
        backups: backups.iter().map(|&(g, w)| member(g, w)).collect(),
        options: RouterOptions {
            on_failure: OnFailure::Drop,
            ..RouterOptions::default()
        },
        preferred: None,
    }
}

/// HTTPRouter: WAN1 only, do not route when it is down.
fn http() -> RouterSpec {
    router("HTTPRouter", &[(WAN1, 1)], &[])
}

/// ProductionRouter: WAN2, backups WAN1 (50) and WAN3 (10) enabled together.
fn production() -> RouterSpec {
    let mut r = router("ProductionRouter", &[(WAN2, 1)], &[(WAN1, 50), (WAN3, 10)]);
    r.options.activate_all_backups = true;
    r.options.on_failure = OnFailure::DefaultRoute;
    r
}

/// VoIPRouter: WAN3, backup WAN2.
fn voip() -> RouterSpec {
    let mut r = router("VoIPRouter", &[(WAN3, 1)], &[(WAN2, 1)]);
    r.options.on_failure = OnFailure::DefaultRoute;
    r
}

fn up(gws: &[u16]) -> impl Fn(u16) -> Availability + '_ {
    move |g| {
        if gws.contains(&g) {
            Availability::Ready
        } else {
            Availability::Unavailable
        }
    }
}

/// Percentage of slots per gateway, sorted by gateway id.
fn shares(t: &RouterTable) -> Vec<(u16, f64)> {
    t.active_gateways()
        .into_iter()
        .map(|g| {
            let n = t.slots.iter().filter(|&&s| s == g).count();
            (g, n as f64 * 100.0 / ROUTER_SLOTS as f64)
        })
        .collect()
}

fn assert_shares(t: &RouterTable, want: &[(u16, f64)]) {
    let got = shares(t);
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (&(g, s), &(wg, ws)) in got.iter().zip(want) {
        assert_eq!(g, wg, "{got:?} vs {want:?}");
        assert!(
            (s - ws).abs() <= 1.0,
            "gateway {g}: {s:.2} % instead of {ws:.2} %"
        );
    }
}

/// Expected percentage of slots per gateway.
type Shares = &'static [(u16, f64)];

const ALL: f64 = 100.0;
const P83: f64 = 50.0 * 100.0 / 60.0;
const P17: f64 = 10.0 * 100.0 / 60.0;

#[test]
fn seed_scenario_table() {
    use GatewayState::{Active as A, OnStandby as S, Unavailable as U};
    struct Case {
        name: &'static str,
        ready: &'static [u16],
        spec: fn() -> RouterSpec,
        shares: &'static [(u16, f64)],
        keep: &'static [u16],
        states: &'static [(u16, GatewayState)],
    }
    let cases = [
        // All links up: each router on its main.
        Case {
            name: "all up / HTTP",
            ready: &[WAN1, WAN2, WAN3],
            spec: http,
            shares: &[(WAN1, ALL)],
            keep: &[WAN1],
            states: &[(WAN1, A)],
        },
        Case {
            name: "all up / production",
            ready: &[WAN1, WAN2, WAN3],
            spec: production,
            shares: &[(WAN2, ALL)],
            keep: &[WAN1, WAN2, WAN3],
            states: &[(WAN2, A), (WAN1, S), (WAN3, S)],
        },
        Case {
            name: "all up / VoIP",
            ready: &[WAN1, WAN2, WAN3],
            spec: voip,
            shares: &[(WAN3, ALL)],
            keep: &[WAN2, WAN3],
            states: &[(WAN3, A), (WAN2, S)],
        },
        // WAN2 dead: production 83/17 over WAN1/WAN3; the others unchanged.
        Case {
            name: "WAN2 dead / HTTP",
            ready: &[WAN1, WAN3],
            spec: http,
            shares: &[(WAN1, ALL)],
            keep: &[WAN1],
            states: &[(WAN1, A)],
        },
        Case {
            name: "WAN2 dead / production",
            ready: &[WAN1, WAN3],
            spec: production,
            shares: &[(WAN1, P83), (WAN3, P17)],
            keep: &[WAN1, WAN3],
            states: &[(WAN2, U), (WAN1, A), (WAN3, A)],
        },
        Case {
            name: "WAN2 dead / VoIP",
            ready: &[WAN1, WAN3],
            spec: voip,
            shares: &[(WAN3, ALL)],
            keep: &[WAN3],
            states: &[(WAN3, A), (WAN2, U)],
        },
        // WAN1 and WAN2 dead: HTTP has nothing (drop), production all on WAN3.
        Case {
            name: "WAN1+WAN2 dead / HTTP",
            ready: &[WAN3],
            spec: http,
            shares: &[],
            keep: &[],
            states: &[(WAN1, U)],
        },
        Case {
            name: "WAN1+WAN2 dead / production",
            ready: &[WAN3],
            spec: production,
            shares: &[(WAN3, ALL)],
            keep: &[WAN3],
            states: &[(WAN2, U), (WAN1, U), (WAN3, A)],
        },
        Case {
            name: "WAN1+WAN2 dead / VoIP",
            ready: &[WAN3],
            spec: voip,
            shares: &[(WAN3, ALL)],
            keep: &[WAN3],
            states: &[(WAN3, A), (WAN2, U)],
        },
        // Everything dead.
        Case {
            name: "all dead / production",
            ready: &[],
            spec: production,
            shares: &[],
            keep: &[],
            states: &[(WAN2, U), (WAN1, U), (WAN3, U)],
        },
    ];
    for c in &cases {
        let spec = (c.spec)();
        let (t, st) = table(&spec, &up(c.ready));
        assert_shares(&t, c.shares);
        assert!(
            t.slots.is_empty() || t.slots.len() == ROUTER_SLOTS,
            "{}",
            c.name
        );
        assert_eq!(t.keep, c.keep, "{}: keep", c.name);
        assert_eq!(t.hash, HashMode::Connection, "{}", c.name);
        assert_eq!(
            t.on_failure_pass,
            spec.options.on_failure == OnFailure::DefaultRoute,
            "{}",
            c.name
        );
        let states: Vec<_> = st.iter().map(|s| (s.gateway, s.state)).collect();
        assert_eq!(states, c.states, "{}: states", c.name);
        // The monitor's distribution column matches the table.
        for s in &st {
            let want = shares(&t)
                .iter()
                .find(|(g, _)| *g == s.gateway)
                .map_or(0.0, |x| x.1);
            assert!((s.share - want).abs() < 1e-9, "{}: {s:?}", c.name);
            assert_eq!(
                s.availability.is_usable(),
                c.ready.contains(&s.gateway),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn production_83_17_exact_slots_and_monitor_rows() {
    let (t, st) = table(&production(), &up(&[WAN1, WAN3]));
    let n = |g| t.slots.iter().filter(|&&s| s == g).count();
    assert_eq!((n(WAN1), n(WAN3)), (3413, 683));
    assert_eq!(
        st,
        [
            GatewayStatus {
                gateway: WAN2,
                role: Role::Main,
                state: GatewayState::Unavailable,
                availability: Availability::Unavailable,
                weight: 1,
                slots: 0,
                share: 0.0,
            },
            GatewayStatus {
                gateway: WAN1,
                role: Role::Backup,
                state: GatewayState::Active,
                availability: Availability::Ready,
                weight: 50,
                slots: 3413,
                share: 3413.0 * 100.0 / 4096.0,
            },
            GatewayStatus {
                gateway: WAN3,
                role: Role::Backup,
                state: GatewayState::Active,
                availability: Availability::Ready,
                weight: 10,
                slots: 683,
                share: 683.0 * 100.0 / 4096.0,
            },
        ]
    );
}

#[test]
fn http_dropped_when_wan1_dead_and_default_route_variant() {
    let (t, _) = table(&http(), &up(&[WAN2, WAN3]));
    assert!(t.slots.is_empty() && t.keep.is_empty() && !t.on_failure_pass);
    let mut spec = http();
    spec.options.on_failure = OnFailure::DefaultRoute;
    let (t, _) = table(&spec, &up(&[]));
    assert!(t.slots.is_empty() && t.on_failure_pass);
}

/// Outage then recovery of WAN2, with both failback policies.
#[test]
fn recovery_with_each_failback_policy() {
    // (policy, keep while WAN2 is down, keep after it returns)
    let cases: [(Failback, &[u16], &[u16]); 2] = [
        // Flows opened on WAN1/WAN3 during the outage stay there while those are Ready.
        (Failback::NewConnections, &[WAN1, WAN3], &[WAN1, WAN2, WAN3]),
        // Flows on the backups move back to WAN2 at once.
        (Failback::All, &[WAN1, WAN3], &[WAN2]),
    ];
    for (policy, keep_down, keep_back) in cases {
        let mut spec = production();
        spec.options.failback = policy;
        let (t0, _) = table(&spec, &up(&[WAN1, WAN2, WAN3]));
        assert_shares(&t0, &[(WAN2, ALL)]);
        let (t1, _) = table(&spec, &up(&[WAN1, WAN3]));
        assert_shares(&t1, &[(WAN1, P83), (WAN3, P17)]);
        assert_eq!(t1.keep, keep_down, "{policy:?} during the outage");
        let (t2, st) = table(&spec, &up(&[WAN1, WAN2, WAN3]));
        assert_shares(&t2, &[(WAN2, ALL)]);
        assert_eq!(t2.keep, keep_back, "{policy:?} after recovery");
        assert_eq!(t2, t0, "{policy:?}: back to the original table");
        let states: Vec<_> = st.iter().map(|s| (s.gateway, s.state)).collect();
        use GatewayState::*;
        assert_eq!(
            states,
            [(WAN2, Active), (WAN1, OnStandby), (WAN3, OnStandby)]
        );
    }
}

/// Failback as the data plane applies it: a flow stays on its gateway iff `keep` has it
/// (the reference model's rule); otherwise it takes its slot in the new table.
#[test]
fn failback_seen_by_a_flow() {
    let stays = |t: &RouterTable, g: u16| t.keep.contains(&g);
    for (policy, flow_on_wan1_stays) in [(Failback::NewConnections, true), (Failback::All, false)] {
        let mut spec = production();
        spec.options.failback = policy;
        let (back, _) = table(&spec, &up(&[WAN1, WAN2, WAN3]));
        assert_eq!(stays(&back, WAN1), flow_on_wan1_stays, "{policy:?}");
        // Whatever the policy, a flow on a dead gateway never stays.
        let (w1dead, _) = table(&spec, &up(&[WAN2, WAN3]));
        assert!(!stays(&w1dead, WAN1), "{policy:?}");
    }
}

#[test]
fn first_backup_versus_all_backups() {
    // (activate_all_backups, ready, expected shares)
    let cases: [(bool, &[u16], Shares); 5] = [
        (false, &[WAN1, WAN3], &[(WAN1, ALL)]),
        (false, &[WAN3], &[(WAN3, ALL)]),
        (true, &[WAN1, WAN3], &[(WAN1, P83), (WAN3, P17)]),
        (true, &[WAN3], &[(WAN3, ALL)]),
        (false, &[WAN1, WAN2, WAN3], &[(WAN2, ALL)]),
    ];
    for (all, ready, want) in cases {
        let mut spec = production();
        spec.options.activate_all_backups = all;
        let (t, st) = table(&spec, &up(ready));
        assert_shares(&t, want);
        if !all && ready == [WAN1, WAN3] {
            let wan3 = st.iter().find(|s| s.gateway == WAN3).unwrap();
            assert_eq!(wan3.state, GatewayState::OnStandby);
            // Standby but Ready: with new-connections failback its flows may stay.
            assert_eq!(t.keep, [WAN1, WAN3]);
        }
    }
}

#[test]
fn backup_threshold_variants() {
    // Two mains WAN1 (weight 1) and WAN2 (weight 1), backup WAN3 (weight 2).
    let spec = |threshold: usize| {
        let mut r = router("r", &[(WAN1, 1), (WAN2, 1)], &[(WAN3, 2)]);
        r.options.backup_threshold = threshold;
        r
    };
    // (threshold, ready, expected shares)
    let cases: [(usize, &[u16], Shares); 8] = [
        // Default 1: backups only when no main is Ready.
        (1, &[WAN1, WAN2, WAN3], &[(WAN1, 50.0), (WAN2, 50.0)]),
        (1, &[WAN1, WAN3], &[(WAN1, ALL)]),
        (1, &[WAN3], &[(WAN3, ALL)]),
        // 2: one main down brings the backup in alongside the remaining main.
        (2, &[WAN1, WAN2, WAN3], &[(WAN1, 50.0), (WAN2, 50.0)]),
        (
            2,
            &[WAN1, WAN3],
            &[(WAN1, 100.0 / 3.0), (WAN3, 200.0 / 3.0)],
        ),
        (
            2,
            &[WAN2, WAN3],
            &[(WAN2, 100.0 / 3.0), (WAN3, 200.0 / 3.0)],
        ),
        (2, &[WAN3], &[(WAN3, ALL)]),
        // 0: never use backups.
        (0, &[WAN3], &[]),
    ];
    for (th, ready, want) in cases {
        let (t, _) = table(&spec(th), &up(ready));
        assert_shares(&t, want);
    }
}

#[test]
fn load_balancing_none_uses_first_ready_gateway() {
    let mut spec = production();
    spec.options.load_balancing = LoadBalancing::None;
    let (t, st) = table(&spec, &up(&[WAN1, WAN3]));
    assert_shares(&t, &[(WAN1, ALL)]);
    assert_eq!(t.hash, HashMode::Connection);
    let states: Vec<_> = st.iter().map(|s| (s.gateway, s.state)).collect();
    use GatewayState::*;
    assert_eq!(
        states,
        [(WAN2, Unavailable), (WAN1, Active), (WAN3, OnStandby)]
    );
    // Failback all: only the one in use keeps its flows.
    spec.options.failback = Failback::All;
    assert_eq!(table(&spec, &up(&[WAN1, WAN3])).0.keep, [WAN1]);
    // Two mains: the first Ready one, in list order.
    let mut two = router("r", &[(WAN2, 1), (WAN1, 1)], &[]);
    two.options.load_balancing = LoadBalancing::None;
    assert_shares(&table(&two, &up(&[WAN1, WAN2])).0, &[(WAN2, ALL)]);
    assert_shares(&table(&two, &up(&[WAN1])).0, &[(WAN1, ALL)]);
}

/// Best quality: of the gateways balancing would use (the candidates), only the one the
/// quality selection prefers takes new connections; existing flows stay on the others.
#[test]
fn load_balancing_best_quality_uses_the_preferred_candidate() {
    use GatewayState::*;
    let mut spec = production();
    spec.options.load_balancing = LoadBalancing::BestQuality;
    let states = |spec: &RouterSpec, ready: &[u16]| -> Vec<(u16, GatewayState)> {
        let (_, st) = table(spec, &up(ready));
        st.iter().map(|s| (s.gateway, s.state)).collect()
    };
    // WAN2 down: both backups are candidates; the preferred one takes everything new.
    spec.preferred = Some(WAN3);
    let (t, _) = table(&spec, &up(&[WAN1, WAN3]));
    assert_shares(&t, &[(WAN3, ALL)]);
    assert_eq!(t.keep, [WAN1, WAN3], "flows on WAN1 stay");
    assert_eq!(t.hash, HashMode::Connection);
    assert_eq!(
        states(&spec, &[WAN1, WAN3]),
        [(WAN2, Unavailable), (WAN1, OnStandby), (WAN3, Active)]
    );
    // The preferred gateway not a candidate (a backup while the main is up, or down): the
    // first candidate.
    assert_eq!(
        states(&spec, &[WAN1, WAN2, WAN3]),
        [(WAN2, Active), (WAN1, OnStandby), (WAN3, OnStandby)]
    );
    assert_eq!(
        states(&spec, &[WAN1]),
        [(WAN2, Unavailable), (WAN1, Active), (WAN3, Unavailable)]
    );
    spec.preferred = None;
    assert_shares(&table(&spec, &up(&[WAN1, WAN3])).0, &[(WAN1, ALL)]);
    // Two mains: either, as preferred.
    let mut two = router("r", &[(WAN2, 1), (WAN1, 1)], &[]);
    two.options.load_balancing = LoadBalancing::BestQuality;
    two.preferred = Some(WAN1);
    assert_shares(&table(&two, &up(&[WAN1, WAN2])).0, &[(WAN1, ALL)]);
    two.preferred = Some(WAN2);
    assert_shares(&table(&two, &up(&[WAN1, WAN2])).0, &[(WAN2, ALL)]);
}

#[test]
fn load_balancing_source_sets_hash_mode() {
    let mut spec = production();
    spec.options.load_balancing = LoadBalancing::Source;
    let (t, _) = table(&spec, &up(&[WAN1, WAN3]));
    assert_eq!(t.hash, HashMode::Source);
    assert_shares(&t, &[(WAN1, P83), (WAN3, P17)]);
}

/// WAN2 leaves: its slots move, and no more than `EXTRA_MOVES_BOUND` others; it returns:
/// the table is the one before, slot for slot.
#[test]
fn one_gateway_leaving_and_returning() {
    let spec = router("r", &[(WAN1, 5), (WAN2, 3), (WAN3, 2)], &[]);
    let (a, _) = table(&spec, &up(&[WAN1, WAN2, WAN3]));
    let (b, _) = table(&spec, &up(&[WAN1, WAN3]));
    let others = (a.slots.iter().zip(&b.slots))
        .filter(|&(x, y)| x != y && *x != WAN2)
        .count();
    assert!(
        others <= EXTRA_MOVES_BOUND,
        "{others} slots of WAN1/WAN3 moved"
    );
    let (c, _) = table(&spec, &up(&[WAN1, WAN2, WAN3]));
    assert_eq!(c, a);
    assert_shares(&c, &[(WAN1, 50.0), (WAN2, 30.0), (WAN3, 20.0)]);
}

#[test]
fn tables_fit_the_plan() {
    use xwan_common::plan::{Gateway, GatewayKind, Plan};
    let ready = up(&[WAN1, WAN3]);
    let specs = [http(), production(), voip()];
    let plan = Plan {
        routers: tables(&specs, &ready).into_iter().map(|x| x.0).collect(),
        gateways: [WAN1, WAN2, WAN3]
            .into_iter()
            .map(|id| Gateway {
                id,
                kind: GatewayKind::Tunnel,
                ifindex: 10 + u32::from(id),
                mtu: 1400,
                ready: ready(id).is_usable(),
            })
            .collect(),
        ..Plan::default()
    };
    plan.validate().unwrap();
}
