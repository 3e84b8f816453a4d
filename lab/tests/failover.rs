//! Tests 2 to 4 of the lab, under steady traffic of every class, with fast probes (every
//! 200 ms, retried after 100 ms, 3 tries):
//!
//! 2. WAN2 silently blackholed: production flows move within frequency + tries × wait (+ one
//!    table commit); 1,200 new SQL connections split 83/17 over WAN1/WAN3 (±4 points), as
//!    the sinks see them, as `xwan_gateway_new_flows_total` counts them and as `xwan status
//!    --json` measures them; HTTP and VoIP lose nothing.
//! 3. WAN1 also dead: HTTP is dropped (and counted as such), production is all on WAN3.
//! 4. Recovery: with `failback = new-connections` existing flows stay where they are and new
//!    ones go to the main gateway again; with `all` existing flows move back at once.
//!
//! Through 2–4 a `[[hook]]` records every event the branch's agent emits and `xwan events`
//! prints them: the same events, in order, each router's and gateway's changes a chain that
//! ends where the lab does.
//!
//! And the alarm level: WAN2 delayed beyond ProductionRouter's `sla_alarm` is Degraded, new
//! production connections take the healthy backups, existing ones stay on WAN2. And
//! `load_balancing = "best-quality"` over WAN2 and WAN1: noise moves nothing, a delayed WAN2
//! loses new connections within a probe window and gets them back once it is good again.
//!
//! The scenario is a sequence (3 builds on 2), so 2–4 share one lab; `failback = all` needs
//! its own, and so does test 2 behind stateful firewalls (`--firewall`). Each step prints the
//! measured detection and convergence times.

mod support;

use std::{
    collections::{BTreeMap, HashSet},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use support::{Recorder, logs, wait_until};
use xwan::{
    events::{Event, ReloadResult, What},
    health::Availability,
    status::{RouterState, Status},
};
use xwan_lab::{
    agent::metric,
    config::{Failback, Timing, render, tables},
    lab::{Lab, gateway_state},
    observe::FlowKey,
    topology::CLIENTS,
    traffic::{Client, FlowStats, Traffic, sql_burst},
};

const WAN1: usize = 0;
const WAN2: usize = 1;
const WAN3: usize = 2;
/// What may come on top of frequency + tries × wait: one commit of the router tables (a few
/// ms) and a busy scheduler on a loaded 2-core machine (the probe schedule itself is pinned
/// exactly on virtual time in the agent's unit tests). Measured times are printed.
const COMMIT: Duration = Duration::from_millis(500);
/// How long a TCP session may take to follow a move: its lost segments are retransmitted
/// after exponentially growing timeouts (200 ms, 400 ms, 800 ms…).
const TCP_FOLLOW: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn unavailable(lab: &Lab, router: &str, gw: &str) -> bool {
    lab.branch
        .status()
        .and_then(|s| gateway_state(&s, router, gw))
        .is_some_and(|(_, a)| a == "Unavailable")
}

fn active(lab: &Lab, router: &str, gw: &str) -> bool {
    lab.branch
        .status()
        .and_then(|s| gateway_state(&s, router, gw))
        .is_some_and(|(s, a)| s == "Active" && a == "Ready")
}

/// Links that carried the current connection of `st` since `t`.
fn links_since(lab: &Lab, st: &FlowStats, t: Instant) -> Vec<usize> {
    st.key()
        .and_then(|k| lab.observer.flow(&k))
        .map(|f| f.links_since(t))
        .unwrap_or_default()
}

/// A burst of `per_client` new SQL connections from each workstation, and per link how many
/// of them crossed it first. A connection whose 5-tuple an earlier one already used (the
/// kernel reuses a port freed without TIME_WAIT, e.g. a connection that never got an answer)
/// is the same flow to the data plane, which keeps it on its gateway: those are left out
/// and counted apart. Returns (per link, reused, failed).
fn burst(lab: &Lab, per_client: usize) -> ([usize; 3], usize, usize) {
    let known: HashSet<FlowKey> = lab.observer.flows().into_keys().collect();
    let (keys, failed) = sql_burst(lab.topo.lan.name(), &CLIENTS, per_client);
    let flows = lab.observer.flows();
    let mut n = [0; 3];
    let mut reused = 0;
    for k in &keys {
        if known.contains(k) {
            reused += 1;
        } else if let Some(f) = flows.get(k).filter(|f| f.forward.iter().sum::<u64>() > 0) {
            n[f.first_link] += 1;
        }
    }
    (n, reused, failed)
}

/// How long after `cut` the branch still sent new production connections (SQL flows it
/// had not sent before) into TUN link `link`: zero if none.
fn still_sent_into(lab: &Lab, link: usize, cut: Instant) -> Duration {
    lab.observer
        .flows()
        .values()
        .filter(|f| f.class == xwan_lab::observe::Class::Sql)
        .filter_map(|f| f.steered_first[link])
        .filter(|&t| t >= cut)
        .max()
        .map_or(Duration::ZERO, |t| t - cut)
}

/// When the first production connection (SQL) opened after `t` arrived through one of
/// `links`.
fn new_sql_on(lab: &Lab, links: &[usize], t: Instant) -> Option<Instant> {
    lab.observer
        .flows()
        .values()
        .filter(|f| f.class == xwan_lab::observe::Class::Sql && links.contains(&f.first_link))
        .filter_map(|f| f.first_on[f.first_link])
        .filter(|&x| x >= t)
        .min()
}

/// When the session's current connection first crossed a link other than `old`.
fn left(lab: &Lab, st: &FlowStats, old: usize, t: Instant) -> Option<Instant> {
    let f = lab.observer.flow(&st.key()?)?;
    (0..3)
        .filter(|&l| l != old)
        .filter_map(|l| f.first_on[l])
        .filter(|&x| x >= t)
        .min()
}

#[test]
fn blackholes_fail_over_then_recover_for_new_connections() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let lan = lab.topo.lan.name().to_owned();
    let bound = Timing::FAST.detection_bound() + COMMIT;

    // Production: long SQL sessions, and a client opening a connection per query.
    let mut production = Traffic::new(&lan);
    let sessions: Vec<_> = (0..4)
        .map(|i| production.start(Client::SqlSession, CLIENTS[i], ms(50)))
        .collect();
    production.start(Client::SqlConnections, CLIENTS[1], ms(20));
    // Convergence is measured on new connections opened every 5 ms, whatever happens to
    // earlier ones.
    production.start(Client::SqlOpener, CLIENTS[2], ms(5));
    // HTTP and VoIP, which must not notice WAN2's failure.
    let mut bystanders = Traffic::new(&lan);
    bystanders.start(Client::Http, CLIENTS[0], ms(20));
    bystanders.start(Client::Ftp, CLIENTS[0], ms(50));
    for call in 0..3 {
        bystanders.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    std::thread::sleep(ms(500));
    let t = Instant::now();
    for st in &sessions {
        wait_until("SQL sessions on WAN2", ms(2000), || {
            links_since(&lab, st, t - ms(300)) == vec![WAN2]
        });
    }
    let recorder = Recorder::start(&lab);

    // ---- 2. WAN2 silently blackholed.
    let cut = Instant::now();
    lab.topo.cut_silently(WAN2).unwrap();
    let detected = wait_until("RemoteTunWAN2 Unavailable", bound, || {
        unavailable(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    wait_until("a new SQL connection over WAN1 or WAN3", bound, || {
        new_sql_on(&lab, &[WAN1, WAN3], cut).is_some()
    });
    // New connections are opened every 5 ms: once none went into WAN2 for 200 ms, the last
    // one that did marks the move.
    std::thread::sleep(ms(200));
    let moved = still_sent_into(&lab, WAN2, cut);
    assert!(
        moved <= bound,
        "production moved {moved:?} after the cut, bound {bound:?}"
    );
    println!(
        "WAN2 blackholed: detected (Unavailable in status) after {detected:?}; the last new \
         production connection sent into WAN2 {moved:?} after the cut, then WAN1/WAN3 \
         (bound {bound:?} = 200 ms + 3 × 100 ms + {COMMIT:?})"
    );
    let mut followed = Vec::new();
    for st in &sessions {
        wait_until("an SQL session to follow", bound + TCP_FOLLOW, || {
            left(&lab, st, WAN2, cut).is_some()
        });
        followed.push(left(&lab, st, WAN2, cut).unwrap() - cut);
    }
    println!(
        "existing SQL sessions carried over WAN1/WAN3 {followed:?} after the cut (their lost \
         segments wait for TCP's retransmission timer)"
    );

    // The data plane's own count of the flows it gave each gateway, before and after.
    let given = |lab: &Lab| {
        ["RemoteTunWAN1", "RemoteTunWAN3"].map(|g| {
            let name = format!("xwan_gateway_new_flows_total{{gateway=\"{g}\"}}");
            metric(&lab.topo.branch, &name).unwrap().unwrap_or(0.0)
        })
    };
    let given_before = given(&lab);
    // And `xwan status --json`'s measured distribution: its counts at a sample taken after
    // the move, then at the first sample after the burst.
    let sampled_before = next_sample(&lab, None);
    let mark = Instant::now();
    let (n, reused, failed) = burst(&lab, 300);
    let took = mark.elapsed();
    let total = n[WAN1] + n[WAN3];
    let share = 100.0 * n[WAN1] as f64 / total as f64;
    let given_after = given(&lab);
    let sampled_after = next_sample(&lab, Some(sampled_before.0));
    let (s1, s3) = (
        sampled_after.1[0] - sampled_before.1[0],
        sampled_after.1[1] - sampled_before.1[1],
    );
    assert_split(
        &format!(
            "xwan status --json, ProductionRouter between samples {:.0} s and {:.0} s of its \
             window",
            sampled_before.0, sampled_after.0
        ),
        (s1 as f64, s3 as f64),
        total,
    );
    let (g1, g3) = (
        given_after[0] - given_before[0],
        given_after[1] - given_before[1],
    );
    assert_split(
        "xwan_gateway_new_flows_total over the burst",
        (g1, g3),
        total,
    );
    println!(
        "1200 new SQL connections in {:?} ({failed} failed, {reused} reusing an earlier \
         5-tuple): WAN1 {} ({share:.1} %), WAN2 {}, WAN3 {} ({:.1} %); expected 83.3/16.7",
        took,
        n[WAN1],
        n[WAN2],
        n[WAN3],
        100.0 - share
    );
    assert_eq!(failed, 0, "SQL connections failed\n{}", logs(&lab));
    assert!(total >= 1000, "only {total} connections seen on the links");
    assert_eq!(n[WAN2], 0, "new connections still sent into the dead WAN2");
    assert!(
        (share - 100.0 * 50.0 / 60.0).abs() <= 4.0,
        "WAN1 share {share:.1} % is not 83.3 ± 4"
    );
    bystanders.stop();
    support::assert_no_loss("during WAN2's failure", &bystanders.flows, &lab);

    // ---- 3. WAN1 also dead: HTTP dropped (counted), production all on WAN3.
    let dropped = |lab: &Lab| {
        metric(
            &lab.topo.branch,
            r#"xwan_datapath_packets_total{reason="drop_no_gateway"}"#,
        )
        .unwrap()
        .unwrap_or(0.0)
    };
    let drops_before = dropped(&lab);
    let cut1 = Instant::now();
    lab.topo.cut_silently(WAN1).unwrap();
    let detected = wait_until("RemoteTunWAN1 Unavailable", bound, || {
        unavailable(&lab, "HTTPRouter", "RemoteTunWAN1")
    });
    std::thread::sleep(ms(200));
    let moved = still_sent_into(&lab, WAN1, cut1);
    assert!(
        moved <= bound,
        "production moved {moved:?} after the cut, bound {bound:?}"
    );
    println!(
        "WAN1 blackholed too: detected after {detected:?}; the last new production \
         connection sent into WAN1 {moved:?} after the cut, then all on WAN3"
    );
    std::thread::sleep(COMMIT);
    let mut http = Traffic::new(&lan);
    let h = http.start(Client::Http, CLIENTS[0], ms(100));
    let counted = wait_until("HTTP counted as dropped", ms(3000), || {
        dropped(&lab) > drops_before
    });
    http.stop();
    let http_links = h
        .key()
        .and_then(|k| lab.observer.flow(&k))
        .map(|f| f.forward_links());
    println!(
        "HTTP with WAN1 dead: {} answers, drop_no_gateway {} → {} (counted after {counted:?}), \
         links used {http_links:?}",
        h.answered.load(Ordering::Relaxed),
        drops_before,
        dropped(&lab)
    );
    assert_eq!(h.answered.load(Ordering::Relaxed), 0, "HTTP got through");
    assert!(
        http_links.is_none_or(|l| l.is_empty()),
        "HTTP left the branch"
    );
    let (n, reused, failed) = burst(&lab, 50);
    println!("200 new SQL connections ({failed} failed, {reused} reused 5-tuples): per link {n:?}");
    assert_eq!(failed, 0, "SQL connections failed\n{}", logs(&lab));
    assert_eq!(n, [0, 0, 200 - reused], "production not all on WAN3");
    let t = Instant::now();
    for st in &sessions {
        wait_until("SQL sessions on WAN3 only", TCP_FOLLOW, || {
            links_since(&lab, st, t) == vec![WAN3]
        });
    }

    // ---- 4. Recovery, failback = new-connections.
    let restored = Instant::now();
    lab.topo.restore(WAN1).unwrap();
    lab.topo.restore(WAN2).unwrap();
    let back = wait_until("RemoteTunWAN2 Active again", bound, || {
        active(&lab, "ProductionRouter", "RemoteTunWAN2")
            && active(&lab, "HTTPRouter", "RemoteTunWAN1")
    });
    println!("WAN1 and WAN2 restored: Active again after {back:?}");
    std::thread::sleep(ms(500));
    let since = restored + back;
    let stay: BTreeMap<_, _> = sessions
        .iter()
        .map(|st| (st.label.clone(), links_since(&lab, st, since)))
        .collect();
    println!("existing SQL sessions since recovery: {stay:?}");
    for (label, links) in &stay {
        assert_eq!(links, &vec![WAN3], "{label}: an existing flow moved back");
    }
    let (n, reused, failed) = burst(&lab, 25);
    println!("100 new SQL connections after recovery ({reused} reused 5-tuples): per link {n:?}");
    assert_eq!(failed, 0);
    assert_eq!(
        n,
        [0, 100 - reused, 0],
        "new connections not on the main gateway"
    );
    production.stop();

    // ---- The events of it all, as the hook and `xwan events` saw them.
    let recovered = |e: &[Event]| {
        last_router(e, "HTTPRouter") == Some((RouterState::OnMains, vec!["RemoteTunWAN1"]))
            && last_router(e, "ProductionRouter")
                == Some((RouterState::OnMains, vec!["RemoteTunWAN2"]))
    };
    let mut streamed = Vec::new();
    wait_until(
        "the hook and xwan events to agree on every event",
        ms(5000),
        || {
            streamed = recorder.streamed();
            recovered(&streamed) && recorder.hooked() == streamed
        },
    );
    let got: Vec<String> = streamed.iter().map(summary).collect();
    println!("events, as the hook and xwan events saw them:");
    got.iter().for_each(|e| println!("  {e}"));
    let cut_and_second_cut = [
        "reload applied",
        "gateway RemoteTunWAN2 ready -> unavailable (timeout)",
        "router ProductionRouter on_mains -> on_backups [RemoteTunWAN1, RemoteTunWAN3]",
        "gateway RemoteTunWAN1 ready -> unavailable (timeout)",
        "router HTTPRouter on_mains -> no_gateway [] (on_failure drop)",
        "router ProductionRouter on_backups -> on_backups [RemoteTunWAN3]",
    ];
    assert_eq!(
        got[..cut_and_second_cut.len().min(got.len())],
        cut_and_second_cut
    );
    // The recovery's order of WAN1 and WAN2 is the probes': every change follows from the
    // one before it for that router or gateway, and the last ones are where the lab is.
    assert_chained(&streamed);
    let seqs: Vec<u64> = streamed.iter().map(|e| e.seq).collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
}

/// New flows the agent counted on RemoteTunWAN1 and RemoteTunWAN3 (`what` says where):
/// at least the `seen` connections the sinks saw, split 50:10 (83.3 %) within 4 points.
fn assert_split(what: &str, (wan1, wan3): (f64, f64), seen: usize) {
    let share = 100.0 * wan1 / (wan1 + wan3);
    println!(
        "{what}: RemoteTunWAN1 +{wan1}, RemoteTunWAN3 +{wan3} new flows ({share:.1} / {:.1} %)",
        100.0 - share
    );
    assert!(
        wan1 + wan3 >= seen as f64,
        "{what}: fewer flows than the sinks saw"
    );
    assert!(
        (share - 100.0 * 50.0 / 60.0).abs() <= 4.0,
        "{what}: WAN1's share {share:.1} % is not 83.3 ± 4"
    );
}

/// A router's state and active gateways after the last of `events` about it.
fn last_router<'e>(events: &'e [Event], router: &str) -> Option<(RouterState, Vec<&'e str>)> {
    events.iter().rev().find_map(|e| match &e.what {
        What::Router {
            router: r,
            state,
            active,
            ..
        } if r == router => Some((*state, active.iter().map(String::as_str).collect())),
        _ => None,
    })
}

/// One line per event: `router R on_mains -> on_backups [A, B]`.
fn summary(e: &Event) -> String {
    match &e.what {
        What::Gateway {
            gateway,
            state,
            previous,
            reason,
            ..
        } => format!(
            "gateway {gateway} {} -> {} ({reason})",
            snake(previous),
            snake(state)
        ),
        What::Router {
            router,
            state,
            previous,
            active,
            on_failure,
            ..
        } => {
            let on_failure = on_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (on_failure {f})"));
            format!(
                "router {router} {} -> {} [{}]{on_failure}",
                snake(previous),
                snake(state),
                active.join(", ")
            )
        }
        What::Reload { result, .. } => format!(
            "reload {}",
            if *result == ReloadResult::Applied {
                "applied"
            } else {
                "rejected"
            }
        ),
        other => format!("{other:?}"),
    }
}

/// A value as its JSON spells it (`on_backups`).
fn snake(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Each router's and gateway's event starts where its previous one ended.
fn assert_chained(events: &[Event]) {
    let mut routers: BTreeMap<&str, (RouterState, &[String])> = BTreeMap::new();
    let mut gateways: BTreeMap<&str, Availability> = BTreeMap::new();
    for e in events {
        match &e.what {
            What::Router {
                router,
                state,
                previous,
                active,
                previous_active,
                ..
            } => {
                if let Some((s, a)) = routers.get(router.as_str()) {
                    assert_eq!(
                        (s, *a),
                        (previous, &previous_active[..]),
                        "event {} of {router} does not follow its previous one",
                        e.seq
                    );
                }
                routers.insert(router, (*state, active));
            }
            What::Gateway {
                gateway,
                state,
                previous,
                ..
            } => {
                if let Some(s) = gateways.get(gateway.as_str()) {
                    assert_eq!(s, previous, "event {} of {gateway}", e.seq);
                }
                gateways.insert(gateway, *state);
            }
            _ => {}
        }
    }
}

/// ProductionRouter's measured distribution in `xwan status --json` at its next sample (the
/// first whose window differs from `after`, or from the current one): the window's span and
/// the new flows RemoteTunWAN1 and RemoteTunWAN3 were given in it.
fn next_sample(lab: &Lab, after: Option<f64>) -> (f64, [u64; 2]) {
    let read = || {
        let out = std::process::Command::new(xwan_lab::agent::locate_xwan().unwrap())
            .args(["status", "--json", "--socket"])
            .arg(lab.branch_dir.socket())
            .output()
            .unwrap();
        let s: Status = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("xwan status --json: {e}"));
        let r = s
            .routers
            .into_iter()
            .find(|r| r.name == "ProductionRouter")
            .unwrap();
        let flows = |g: &str| (r.gateways.iter().find(|x| x.name == g)).and_then(|x| x.new_flows);
        match (r.window_s, flows("RemoteTunWAN1"), flows("RemoteTunWAN3")) {
            (Some(w), Some(a), Some(b)) => Some((w, [a, b])),
            _ => None,
        }
    };
    let from = after.or_else(|| read().map(|r| r.0));
    let mut got = None;
    // A sample every 10 s.
    wait_until(
        "the next sample of the measured distribution",
        ms(12_000),
        || {
            got = read().filter(|r| Some(r.0) != from);
            got.is_some()
        },
    );
    got.unwrap()
}

#[test]
fn failback_all_moves_existing_flows_back_at_once() {
    let (_one, lab) = support::lab(Failback::All);
    let lan = lab.topo.lan.name().to_owned();
    let bound = Timing::FAST.detection_bound() + COMMIT;
    let mut production = Traffic::new(&lan);
    let sessions: Vec<_> = (0..4)
        .map(|i| production.start(Client::SqlSession, CLIENTS[i], ms(50)))
        .collect();
    std::thread::sleep(ms(500));

    let cut = Instant::now();
    lab.topo.cut_silently(WAN2).unwrap();
    let detected = wait_until("RemoteTunWAN2 Unavailable", bound, || {
        unavailable(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    for st in &sessions {
        wait_until("SQL sessions to leave WAN2", bound + TCP_FOLLOW, || {
            links_since(&lab, st, cut + detected)
                .iter()
                .any(|&l| l != WAN2)
        });
    }
    println!("WAN2 blackholed: detected after {detected:?}; every session moved");

    let restored = Instant::now();
    lab.topo.restore(WAN2).unwrap();
    let back = wait_until("RemoteTunWAN2 Active again", bound, || {
        active(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    let mut moved = Vec::new();
    for st in &sessions {
        wait_until("SQL sessions back on WAN2", ms(2000), || {
            links_since(&lab, st, restored).contains(&WAN2)
        });
        moved.push(restored.elapsed());
    }
    println!(
        "WAN2 restored: Active after {back:?}; existing sessions back on WAN2 {moved:?} after \
         the restore"
    );
    // Then only WAN2.
    std::thread::sleep(ms(200));
    let t = Instant::now();
    std::thread::sleep(ms(500));
    for st in &sessions {
        assert_eq!(
            links_since(&lab, st, t),
            vec![WAN2],
            "{}: not only on WAN2\n{}",
            st.label,
            logs(&lab)
        );
    }
    production.stop();
    for st in &sessions {
        assert!(st.answered.load(Ordering::Relaxed) > 0);
    }
}

/// Test 2 behind the stateful firewalls (`cargo xtask lab --firewall`, both agents in
/// `netfilter` mode): a silent cut of WAN2 is detected within the same bound, and 1,200 new
/// SQL connections still split 83/17 over WAN1/WAN3 (±4 points), none failing, none into
/// WAN2; the firewalls drop nothing as invalid.
#[test]
fn behind_the_firewall_a_silent_cut_of_wan2_still_splits_new_production_83_17() {
    let (_one, lab) = support::lab_with(&xwan_lab::config::Options {
        timing: Timing::FAST,
        failback: Failback::NewConnections,
        tunnels: xwan_lab::topology::Tunnels::StandIn,
        firewall: true,
    });
    let bound = Timing::FAST.detection_bound() + COMMIT;
    lab.topo.cut_silently(WAN2).unwrap();
    let detected = wait_until("RemoteTunWAN2 Unavailable", bound, || {
        unavailable(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    let (n, reused, failed) = burst(&lab, 300);
    let total = n[WAN1] + n[WAN3];
    let share = 100.0 * n[WAN1] as f64 / total as f64;
    println!(
        "behind the firewalls, WAN2 cut (detected after {detected:?}): 1200 new SQL \
         connections ({failed} failed, {reused} reusing a 5-tuple): WAN1 {} ({share:.1} %), \
         WAN2 {}, WAN3 {}",
        n[WAN1], n[WAN2], n[WAN3]
    );
    assert_eq!(failed, 0, "SQL connections failed\n{}", logs(&lab));
    assert!(total >= 1000, "only {total} connections seen on the links");
    assert_eq!(n[WAN2], 0, "new connections still sent into the dead WAN2");
    assert!(
        (share - 100.0 * 50.0 / 60.0).abs() <= 4.0,
        "WAN1 share {share:.1} % is not 83.3 ± 4"
    );
    for ns in [&lab.topo.branch, &lab.topo.headoffice] {
        let invalid = xwan_lab::firewall::counted(ns, xwan_lab::firewall::INVALID).unwrap();
        assert_eq!(invalid, 0, "{}: packets dropped as invalid", ns.name());
    }
}

/// ProductionRouter with `sla_alarm = { rtt = "20ms", window = 3 }`: 40 ms each way on WAN2's
/// wire make RemoteTunWAN2 Degraded (still usable); new SQL connections go to the healthy
/// backups (83/17 over WAN1/WAN3, none into WAN2) while the existing sessions stay on WAN2;
/// without the delay it is Ready again and new connections return to it.
#[test]
fn a_delayed_gateway_is_degraded_and_new_connections_prefer_the_healthy_backups() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let lan = lab.topo.lan.name().to_owned();
    let mut cfg = lab.branch_config().unwrap();
    let production = tables(&mut cfg, "router")
        .unwrap()
        .find(|r| r.get("name").and_then(|n| n.as_str()) == Some("ProductionRouter"))
        .unwrap();
    let alarm: toml::Table = "rtt = \"20ms\"\nwindow = 3\n".parse().unwrap();
    production.insert("sla_alarm".into(), toml::Value::Table(alarm));
    let answer = lab.reload_branch(&render(&cfg)).unwrap();
    assert!(
        matches!(answer, xwan::control::Answer::Reloaded { .. }),
        "{answer:?}"
    );
    let mut traffic = Traffic::new(&lan);
    let sessions: Vec<_> = (0..4)
        .map(|i| traffic.start(Client::SqlSession, CLIENTS[i], ms(50)))
        .collect();
    std::thread::sleep(ms(500));
    let t = Instant::now();
    for st in &sessions {
        wait_until("SQL sessions on WAN2", ms(2000), || {
            links_since(&lab, st, t - ms(300)) == vec![WAN2]
        });
    }

    let delayed = Instant::now();
    lab.topo.wire(WAN2).unwrap().set_delay(ms(40));
    let availability = |gw: &str| {
        lab.branch
            .status()
            .and_then(|s| gateway_state(&s, "ProductionRouter", gw))
            .map(|(_, a)| a)
    };
    let took = wait_until("RemoteTunWAN2 Degraded", ms(5000), || {
        availability("RemoteTunWAN2").as_deref() == Some("Degraded")
    });
    println!("WAN2 delayed by 40 ms each way: Degraded after {took:?}");
    let mark = Instant::now();
    let (n, reused, failed) = burst(&lab, 150);
    let total = n[WAN1] + n[WAN3];
    let share = 100.0 * n[WAN1] as f64 / total.max(1) as f64;
    println!(
        "600 new SQL connections with WAN2 Degraded ({failed} failed, {reused} reused): WAN1 {} \
         ({share:.1} %), WAN2 {}, WAN3 {}",
        n[WAN1], n[WAN2], n[WAN3]
    );
    assert_eq!(
        n[WAN2],
        0,
        "new connections into the Degraded WAN2\n{}",
        logs(&lab)
    );
    assert_eq!(failed, 0);
    assert!((share - 83.3).abs() <= 6.0, "WAN1 share {share:.1} %");
    // The sessions opened before stayed on WAN2 (Degraded moves only new connections).
    for st in &sessions {
        assert_eq!(
            links_since(&lab, st, mark),
            vec![WAN2],
            "{}: moved off the Degraded WAN2\n{}",
            st.label,
            logs(&lab)
        );
    }
    assert_eq!(
        availability("RemoteTunWAN2").as_deref(),
        Some("Degraded"),
        "still Degraded {:?} after the delay began",
        delayed.elapsed()
    );

    lab.topo.wire(WAN2).unwrap().set_delay(Duration::ZERO);
    let back = wait_until("RemoteTunWAN2 Ready again", ms(5000), || {
        active(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    let (n, _, failed) = burst(&lab, 25);
    println!("delay removed: Ready after {back:?}; 100 new SQL connections: {n:?}");
    assert_eq!((n[WAN1], n[WAN3], failed), (0, 0, 0));
    traffic.stop();
    for st in &sessions {
        assert!(st.answered.load(Ordering::Relaxed) > 0);
    }
}

/// `load_balancing = "best-quality"` on ProductionRouter, with WAN2 and WAN1 as mains (WAN2
/// listed first): noise below half the margin (a few ms of delay toggled on either link)
/// moves nothing; 40 ms of delay each way on WAN2 moves new connections to WAN1 within one
/// probe window, existing ones stay; once the delay is gone and WAN2 is within half the
/// margin of WAN1 again, new connections return to it.
#[test]
fn best_quality_moves_new_connections_off_a_delayed_link_and_back() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let lan = lab.topo.lan.name().to_owned();
    let mut cfg = lab.branch_config().unwrap();
    let production = tables(&mut cfg, "router")
        .unwrap()
        .find(|r| r.get("name").and_then(|n| n.as_str()) == Some("ProductionRouter"))
        .unwrap();
    let mains = toml::Value::Array(vec!["RemoteTunWAN2".into(), "RemoteTunWAN1".into()]);
    production.insert("gateways".into(), mains);
    production.insert(
        "backups".into(),
        toml::Value::Array(vec!["RemoteTunWAN3".into()]),
    );
    production.insert("load_balancing".into(), "best-quality".into());
    let answer = lab.reload_branch(&render(&cfg)).unwrap();
    assert!(
        matches!(answer, xwan::control::Answer::Reloaded { .. }),
        "{answer:?}"
    );
    let mut traffic = Traffic::new(&lan);
    let sessions: Vec<_> = (0..2)
        .map(|i| traffic.start(Client::SqlSession, CLIENTS[i], ms(50)))
        .collect();
    traffic.start(Client::SqlOpener, CLIENTS[2], ms(10));
    std::thread::sleep(ms(500));
    let t = Instant::now();
    for st in &sessions {
        wait_until("SQL sessions on WAN2", ms(2000), || {
            links_since(&lab, st, t - ms(300)) == vec![WAN2]
        });
    }
    let scores = || {
        let s = lab.branch.status().unwrap();
        let r = s
            .routers
            .into_iter()
            .find(|r| r.name == "ProductionRouter")
            .unwrap();
        let score = |g: &str| {
            r.gateways
                .iter()
                .find(|x| x.name == g)
                .and_then(|x| x.score_ms)
        };
        (
            score("RemoteTunWAN2"),
            score("RemoteTunWAN1"),
            r.quality_margin_ms,
        )
    };

    // Noise: up to 2 ms each way on one link or the other, for 4 s (two probe windows).
    let noise = Instant::now();
    let mut worst = 0.0f64;
    for step in 0..20u64 {
        let (a, b) = (lab.topo.wire(WAN2).unwrap(), lab.topo.wire(WAN1).unwrap());
        a.set_delay(ms(step * 7 % 3));
        b.set_delay(ms(step * 5 % 3));
        std::thread::sleep(ms(200));
        assert!(
            active(&lab, "ProductionRouter", "RemoteTunWAN2"),
            "moved on noise after {:?}: scores {:?}\n{}",
            noise.elapsed(),
            scores(),
            logs(&lab)
        );
        if let (Some(a), Some(b), _) = scores() {
            worst = worst.max((a - b).abs());
        }
    }
    lab.topo.wire(WAN2).unwrap().set_delay(Duration::ZERO);
    lab.topo.wire(WAN1).unwrap().set_delay(Duration::ZERO);
    assert_eq!(
        new_sql_on(&lab, &[WAN1, WAN3], noise),
        None,
        "a new connection moved"
    );
    println!(
        "4 s of 0-2 ms noise on WAN1 and WAN2: scores up to {worst:.1} ms apart, nothing moved"
    );

    // WAN2 delayed: new connections to WAN1 within one probe window (10 probes, 2 s).
    let delayed = Instant::now();
    lab.topo.wire(WAN2).unwrap().set_delay(ms(40));
    let bound = Timing::FAST.frequency * 10 + COMMIT;
    let moved = wait_until("RemoteTunWAN1 active", bound, || {
        active(&lab, "ProductionRouter", "RemoteTunWAN1")
    });
    let (w2, w1, margin) = scores();
    println!(
        "WAN2 delayed by 40 ms each way: new connections on WAN1 after {moved:?} (bound \
         {bound:?}); scores WAN2 {w2:?} ms, WAN1 {w1:?} ms, margin {margin:?} ms"
    );
    assert!(w2.unwrap() > w1.unwrap() + margin.unwrap());
    let q = xwan::explain::Query {
        src: CLIENTS[3].into(),
        dst: xwan_lab::topology::SQL_HOST.into(),
        proto: 6,
        sport: Some(40_000),
        dport: Some(1433),
        dscp: 0,
        iface: None,
    };
    let why = match lab
        .branch
        .request(xwan::control::Request::Explain(q))
        .unwrap()
    {
        xwan::control::Answer::Explained { text } => text,
        other => panic!("{other:?}"),
    };
    assert!(
        why.contains("a new connection takes gateway RemoteTunWAN1")
            && why.contains("new connections go to one gateway by probe score")
            && why.contains("  RemoteTunWAN2: Main, On standby, Ready (answering, score "),
        "{why}"
    );
    let mark = Instant::now();
    let (n, reused, failed) = burst(&lab, 25);
    println!("100 new SQL connections with WAN2 delayed ({reused} reused): {n:?}");
    assert_eq!((n[WAN2], n[WAN3], failed), (0, 0, 0), "{}", logs(&lab));
    // A session's query waits 80 ms for its answer now: let each send one more.
    std::thread::sleep(ms(300));
    for st in &sessions {
        assert_eq!(
            links_since(&lab, st, mark),
            vec![WAN2],
            "{}: an existing connection moved",
            st.label
        );
    }

    // The delay gone: back once WAN2 is within half the margin again.
    let restored = Instant::now();
    lab.topo.wire(WAN2).unwrap().set_delay(Duration::ZERO);
    // Its score is good again once the window holds no delayed probe, nor the jitter their
    // end makes: one window after the delay ends, and a second as the machine's slack.
    let back = wait_until("RemoteTunWAN2 active again", bound * 2, || {
        active(&lab, "ProductionRouter", "RemoteTunWAN2")
    });
    println!(
        "delay removed {:?} after it began: new connections back on WAN2 after {back:?}",
        restored - delayed
    );
    let (n, _, failed) = burst(&lab, 25);
    assert_eq!((n[WAN1], n[WAN3], failed), (0, 0, 0));
    traffic.stop();
}
