//! Tests 5 to 7 of the lab, each on a lab of its own under steady traffic:
//!
//! 5. Carrier loss on the veth link (WAN3): VoIP has moved to its backup (WAN2) within
//!    100 ms — no probe has to time out. Restored, then cut silently (carrier up): the
//!    probes catch it within frequency + tries × wait.
//! 6. The branch agent restarted (SIGTERM, new `xwan run`) under traffic: not one packet or
//!    request lost, every flow stays on its link.
//! 7. Reload with a changed rule under traffic: only the flows the change concerns move; a
//!    broken configuration is rejected and the traffic does not notice.

mod support;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use support::{logs, wait_until};
use xwan::control::Answer;
use xwan_lab::{
    config::{Failback, Timing, render, tables},
    lab::{Lab, all_ready, gateway_state},
    topology::CLIENTS,
    traffic::{Client, FlowStats, RTP_PORT, Traffic},
};

const WAN2: usize = 1;
const WAN3: usize = 2;
/// Carrier loss must move traffic within this (the bound).
const CARRIER_BOUND: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The links that carried `st`'s flow (forward), since `t` or ever.
fn links(lab: &Lab, st: &FlowStats, since: Option<Instant>) -> Vec<usize> {
    let Some(f) = st.key().and_then(|k| lab.observer.flow(&k)) else {
        return Vec::new();
    };
    match since {
        Some(t) => f.links_since(t),
        None => f.forward_links(),
    }
}

/// HTTP, FTP, SQL and four VoIP calls.
fn steady(lab: &Lab) -> Traffic {
    let mut t = Traffic::new(lab.topo.lan.name());
    t.start(Client::Http, CLIENTS[0], ms(20));
    t.start(Client::Ftp, CLIENTS[1], ms(50));
    t.start(Client::SqlSession, CLIENTS[2], ms(20));
    for call in 0..4 {
        t.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    t
}

#[test]
fn carrier_loss_on_the_veth_link_moves_voip_at_once() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let mut calls = Traffic::new(lab.topo.lan.name());
    for call in 0..4 {
        calls.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    std::thread::sleep(ms(500));
    for st in &calls.flows {
        assert_eq!(links(&lab, st, None), vec![WAN3], "{}", st.label);
    }
    let cut = Instant::now();
    lab.topo.cut_carrier(WAN3).unwrap();
    let detected = wait_until("RemoteTunWAN3 Unavailable", ms(2000), || {
        lab.branch
            .status()
            .and_then(|s| gateway_state(&s, "VoIPRouter", "RemoteTunWAN3"))
            .is_some_and(|(_, a)| a == "Unavailable")
    });
    wait_until("every call on WAN2", ms(2000), || {
        calls
            .flows
            .iter()
            .all(|st| links(&lab, st, Some(cut)).contains(&WAN2))
    });
    let moved: Vec<Duration> = calls
        .flows
        .iter()
        .map(|st| {
            let f = lab.observer.flow(&st.key().unwrap()).unwrap();
            f.first_on[WAN2].unwrap() - cut
        })
        .collect();
    let slowest = *moved.iter().max().unwrap();
    println!(
        "carrier lost on WAN3: Unavailable in status after {detected:?}; calls on WAN2 after \
         {moved:?} (the first packet each call sent after the move; calls send every 20 ms)"
    );
    calls.stop();
    for st in &calls.flows {
        println!(
            "{}: sent {}, lost {} around the carrier loss",
            st.label,
            st.sent.load(Ordering::Relaxed),
            st.lost()
        );
    }
    // A call sends every 20 ms, so its first packet after the move can come that much later.
    assert!(
        slowest <= CARRIER_BOUND + ms(20),
        "VoIP moved after {slowest:?}, bound {CARRIER_BOUND:?} (+ one 20 ms packet interval)\n{}",
        logs(&lab)
    );

    // The same link cut silently (nftables drop everything on both ends, carrier stays):
    // only the probes can tell, within frequency + tries × wait.
    lab.topo.restore(WAN3).unwrap();
    // + one commit and a busy scheduler, as in failover.rs.
    let bound = Timing::FAST.detection_bound() + ms(500);
    let back = wait_until("RemoteTunWAN3 Active again", ms(2000), || {
        voip_gateway(&lab, "RemoteTunWAN3").is_some_and(|(s, _)| s == "Active")
    });
    let mut calls = Traffic::new(lab.topo.lan.name());
    for call in 4..8 {
        calls.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    wait_until("new calls on WAN3", ms(2000), || {
        calls
            .flows
            .iter()
            .all(|st| links(&lab, st, None) == vec![WAN3])
    });
    let cut = Instant::now();
    lab.topo.cut_silently(WAN3).unwrap();
    let detected = wait_until("RemoteTunWAN3 Unavailable", bound, || {
        voip_gateway(&lab, "RemoteTunWAN3").is_some_and(|(_, a)| a == "Unavailable")
    });
    wait_until("every call on WAN2", ms(2000), || {
        calls
            .flows
            .iter()
            .all(|st| links(&lab, st, Some(cut)).contains(&WAN2))
    });
    println!(
        "WAN3 restored: Active after {back:?}; then cut silently: detected after {detected:?} \
         (bound {bound:?}), calls on WAN2"
    );
    lab.topo.restore(WAN3).unwrap();
}

fn voip_gateway(lab: &Lab, gw: &str) -> Option<(String, String)> {
    lab.branch
        .status()
        .and_then(|s| gateway_state(&s, "VoIPRouter", gw))
}

#[test]
fn branch_agent_restart_under_traffic_loses_nothing() {
    let (_one, mut lab) = support::lab(Failback::NewConnections);
    let mut traffic = steady(&lab);
    std::thread::sleep(ms(1000));
    let epoch = lab.branch.status().unwrap().epoch;
    let t0 = Instant::now();
    let exited = lab.restart_branch("agent2.log").unwrap();
    let answered = wait_until("the new agent to answer", ms(10_000), || {
        lab.branch.status().is_some()
    });
    let committed = wait_until(
        "the new agent to commit with every gateway Ready",
        ms(10_000),
        || {
            lab.branch
                .status()
                .is_some_and(|s| s.epoch > epoch && all_ready(&s))
        },
    );
    let total = t0.elapsed();
    std::thread::sleep(ms(1000));
    traffic.stop();
    println!(
        "branch agent restarted under traffic: old agent exited after {exited:?}, new agent \
         answering {answered:?} later, first plan committed {committed:?} after that ({total:?} \
         in all)"
    );
    assert!(
        lab.branch.log().contains("adopted"),
        "the new agent did not adopt the pinned data plane\n{}",
        lab.branch.log()
    );
    support::assert_no_loss("across the restart", &traffic.flows, &lab);
    for st in &traffic.flows {
        assert_eq!(
            links(&lab, st, None).len(),
            1,
            "{}: moved between links",
            st.label
        );
    }
}

#[test]
fn reload_moves_only_the_changed_flows_and_a_broken_config_changes_nothing() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let mut traffic = steady(&lab);
    wait_until("every flow seen on its link", ms(5000), || {
        traffic
            .flows
            .iter()
            .all(|st| !links(&lab, st, None).is_empty())
    });
    std::thread::sleep(ms(500));
    let before: Vec<Vec<usize>> = traffic
        .flows
        .iter()
        .map(|st| links(&lab, st, None))
        .collect();

    // The change: a new rule ahead of VoIP sends the call on RTP port 16387 (call 3) through
    // the production router (WAN2).
    let mut cfg = lab.branch_config().unwrap();
    let video = RTP_PORT + 3;
    let rule: toml::Table = format!(
        "name = \"Video\"\nprotocol = [\"udp\"]\ndst_port = [{video}]\naction = \"route\"\n\
         router = \"ProductionRouter\"\n"
    )
    .parse()
    .unwrap();
    let rules = cfg.get_mut("rule").unwrap().as_array_mut().unwrap();
    let voip = rules
        .iter()
        .position(|r| r.get("name").and_then(|n| n.as_str()) == Some("VoIP"))
        .unwrap();
    rules.insert(voip, toml::Value::Table(rule));
    assert_eq!(tables(&mut cfg, "rule").unwrap().count(), 5);
    let t0 = Instant::now();
    let answer = lab.reload_branch(&render(&cfg)).unwrap();
    let reloaded = t0.elapsed();
    assert!(
        matches!(answer, Answer::Reloaded { .. }),
        "valid reload refused: {answer:?}"
    );
    let moved = traffic
        .flows
        .iter()
        .find(|st| st.label.ends_with(&format!(":{video}")))
        .unwrap()
        .clone();
    wait_until("the video call on WAN2", ms(2000), || {
        links(&lab, &moved, Some(t0)).contains(&WAN2)
    });
    let f = lab.observer.flow(&moved.key().unwrap()).unwrap();
    println!(
        "reload with a new rule: answered after {reloaded:?}; the call it concerns reached WAN2 \
         {:?} after the request",
        f.first_on[WAN2].unwrap() - t0
    );

    // A broken configuration: rejected with its location, nothing changes.
    std::thread::sleep(ms(500));
    let t1 = Instant::now();
    let answer = lab.reload_branch("[[router]\nname = \"broken\"\n").unwrap();
    match &answer {
        Answer::Error { message } => {
            println!("broken configuration rejected: {message}");
            assert!(message.contains("xwan.toml:"), "{message}");
        }
        other => panic!("broken configuration accepted: {other:?}"),
    }
    std::thread::sleep(ms(1000));
    traffic.stop();

    for (st, before) in traffic.flows.iter().zip(&before) {
        let after = links(&lab, st, Some(t1));
        if Arc::ptr_eq(st, &moved) {
            assert_eq!(before, &vec![WAN3], "{}", st.label);
            assert_eq!(after, vec![WAN2], "{}: after the reload", st.label);
        } else {
            assert_eq!(&links(&lab, st, None), before, "{}: moved", st.label);
        }
    }
    support::assert_no_loss("across both reloads", &traffic.flows, &lab);
}
