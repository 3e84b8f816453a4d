//! Test 1 of the lab: all links up, the seed scenario steers each class through its router's
//! main gateway — HTTP and FTP over WAN1, SQL over WAN2, VoIP over WAN3 arriving with DSCP 18
//! — and the head office's return routes send every reply back over the link its connection
//! came in on (its kernel's own route to the branch is WAN1).

mod support;

use std::time::Duration;

use xwan_lab::{
    config::{Failback, Options, Timing},
    firewall,
    observe::Class,
    topology::{CLIENTS, LINKS, Tunnels},
    traffic::{Client, Traffic},
};

/// 1.5 s of traffic of every class (HTTP, FTP, SQL session and per-query connections,
/// `calls` VoIP calls and SIP), then the closing handshakes' time.
fn every_class(lab: &xwan_lab::lab::Lab, calls: u16) -> Traffic {
    let mut traffic = Traffic::new(lab.topo.lan.name());
    let ms = Duration::from_millis;
    traffic.start(Client::Http, CLIENTS[0], ms(50));
    traffic.start(Client::Ftp, CLIENTS[1], ms(50));
    traffic.start(Client::SqlSession, CLIENTS[2], ms(50));
    traffic.start(Client::SqlConnections, CLIENTS[2], ms(50));
    for call in 0..calls {
        traffic.start(Client::Voip(call), CLIENTS[3], ms(20));
    }
    traffic.start(Client::Sip, CLIENTS[3], ms(100));
    std::thread::sleep(Duration::from_millis(1500));
    traffic.stop();
    // Closing handshakes still in flight.
    std::thread::sleep(Duration::from_millis(300));
    traffic
}

#[test]
fn each_class_takes_its_main_link_and_replies_come_back_on_it() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let traffic = every_class(&lab, 3);
    assert_every_class_on_its_main_link(&lab, &traffic);
}

/// Every flow of `traffic` answered without error, over its class's main link both ways
/// (VoIP with DSCP 18), nothing lost on the WAN, no VoIP packet unanswered.
fn assert_every_class_on_its_main_link(lab: &xwan_lab::lab::Lab, traffic: &Traffic) {
    let flows = lab.observer.flows();
    for st in &traffic.flows {
        let answered = st.answered.load(std::sync::atomic::Ordering::Relaxed);
        let errors = st.errors.load(std::sync::atomic::Ordering::Relaxed);
        let seen = support::seen(lab, &flows, st);
        let names = |v: Vec<usize>| v.iter().map(|&l| LINKS[l].name).collect::<Vec<_>>();
        println!(
            "{}: {answered} answers, {errors} errors; forward over {:?}, replies over {:?}, DSCP bits {:#x}, lost (out, back) {:?}",
            st.label,
            names(seen.forward_links()),
            names(seen.reply_links()),
            seen.dscp,
            seen.lost()
        );
        assert!(
            answered > 0 && errors == 0,
            "{}: {answered} answers, {errors} errors",
            st.label
        );
        support::assert_main_link_both_ways(lab, st, seen);
        assert!(
            seen.sent_forward > 0 && seen.sent_replies > 0,
            "{}: taps saw nothing",
            st.label
        );
        assert_eq!(seen.lost(), (0, 0), "{}: packets lost on the WAN", st.label);
        if st.class == Class::Voip {
            assert_eq!(st.lost(), 0, "{}: VoIP packets not echoed", st.label);
        }
    }
}

/// `cargo xtask lab --firewall`: both sites behind the standard stateful forward policy
/// (`xwan_lab::firewall`), both agents forwarding through it (`forwarding = "netfilter"`).
/// Every class still takes its main link both ways with no error, and each site's firewall
/// saw the connections open (its accept rule counts them), dropped none as invalid and none
/// by its policy: replies arrive as established.
#[test]
fn behind_stateful_firewalls_every_class_flows_on_its_main_link() {
    let (_one, lab) = support::lab_with(&Options {
        timing: Timing::FAST,
        failback: Failback::NewConnections,
        tunnels: Tunnels::StandIn,
        firewall: true,
    });
    let traffic = every_class(&lab, 1);
    assert_every_class_on_its_main_link(&lab, &traffic);
    for (site, ns) in [
        ("branch", &lab.topo.branch),
        ("head office", &lab.topo.headoffice),
    ] {
        let count = |what| firewall::counted(ns, what).unwrap();
        let (accepted, invalid, policy) = (
            count(firewall::ACCEPTED_NEW),
            count(firewall::INVALID),
            count(firewall::POLICY),
        );
        println!("{site} firewall: {accepted} new accepted, {invalid} invalid, {policy} by policy");
        assert!(accepted > 0, "{site}: the firewall saw no connection open");
        assert_eq!(
            (invalid, policy),
            (0, 0),
            "{site}: the firewall dropped packets"
        );
    }
    // VoIP's main link, WAN3, is the branch's Ethernet uplink: masqueraded, its calls still
    // flow both ways (checked above).
    let masqueraded = firewall::counted(&lab.topo.branch, firewall::MASQUERADED).unwrap();
    println!("branch: {masqueraded} connections masqueraded on WAN3");
    assert!(masqueraded > 0, "nothing was masqueraded on WAN3");
}

/// The wire's impairments are real: a delay on WAN1 shows in the probes' round-trip time,
/// random loss on WAN2 in their loss ratio (what `xwan status` reports for each gateway).
#[test]
fn wire_delay_and_loss_show_in_the_gateways_probes() {
    let (_one, lab) = support::lab(Failback::NewConnections);
    let gateway = |name: &str| {
        lab.branch.status().and_then(|s| {
            s.routers
                .iter()
                .flat_map(|r| r.gateways.iter())
                .find(|g| g.name == name)
                .cloned()
        })
    };
    let rtt = |name: &str| gateway(name).and_then(|g| g.rtt_ms).unwrap_or(0.0);
    let before = rtt("RemoteTunWAN1");
    lab.topo
        .wire(0)
        .unwrap()
        .set_delay(Duration::from_millis(40));
    let took = support::wait_until(
        "RemoteTunWAN1's RTT to reach 80 ms",
        Duration::from_secs(5),
        || rtt("RemoteTunWAN1") >= 80.0,
    );
    println!(
        "WAN1 delayed 40 ms each way: probe RTT {before:.2} ms → {:.2} ms (after {took:?})",
        rtt("RemoteTunWAN1")
    );
    lab.topo.wire(1).unwrap().set_loss(50.0);
    let took = support::wait_until(
        "RemoteTunWAN2's probe loss",
        Duration::from_secs(10),
        || gateway("RemoteTunWAN2").is_some_and(|g| g.loss_pct > 0.0),
    );
    println!(
        "WAN2 dropping 50 %: probe loss {:.0} % after {took:?}",
        gateway("RemoteTunWAN2").unwrap().loss_pct
    );
    assert!(lab.topo.wire(2).is_err(), "WAN3 (veth) has no wire");
}

/// Behind the firewall, the firewall has the last word: an nftables deny for one client's
/// SQL wins over the xwan rule that routes SQL through WAN2. That client gets no answer (its
/// packets are dropped at the branch, the deny rule counts them, none reaches a WAN), while
/// another client's HTTP, steered by xwan the same way, flows.
#[test]
fn behind_the_firewall_an_nftables_deny_wins_over_an_xwan_route() {
    let (_one, lab) = support::lab_with(&Options {
        timing: Timing::FAST,
        failback: Failback::NewConnections,
        tunnels: Tunnels::StandIn,
        firewall: true,
    });
    let denied = CLIENTS[2];
    lab.topo
        .branch
        .exec(
            "nft",
            &[
                "insert",
                "rule",
                "inet",
                "fw",
                "forward",
                "ip",
                "saddr",
                &denied.to_string(),
                "tcp",
                "dport",
                "1433",
                "counter",
                "drop",
                "comment",
                "\"deny sql\"",
            ],
            "",
        )
        .unwrap();
    let mut traffic = Traffic::new(lab.topo.lan.name());
    let ms = Duration::from_millis;
    let sql = traffic.start(Client::SqlSession, denied, ms(50));
    let http = traffic.start(Client::Http, CLIENTS[0], ms(50));
    std::thread::sleep(Duration::from_millis(1500));
    traffic.stop();

    let answered =
        |st: &xwan_lab::traffic::FlowStats| st.answered.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "denied SQL: {} answers; HTTP: {} answers",
        answered(&sql),
        answered(&http)
    );
    assert_eq!(answered(&sql), 0, "the denied client's SQL was answered");
    assert!(answered(&http) > 0, "HTTP stopped too");
    let dropped = firewall::counted(&lab.topo.branch, "deny sql").unwrap();
    assert!(dropped > 0, "the deny rule counted nothing");
    // The LAN tap saw the client try; no WAN link carried any of it.
    let tried: Vec<_> = (lab.observer.flows().into_iter())
        .filter(|(k, _)| *k.client.ip() == denied && k.server.port() == 1433)
        .collect();
    assert!(!tried.is_empty(), "the denied client sent nothing");
    for (k, seen) in &tried {
        assert!(seen.sent_forward > 0, "{k:?}: {seen:?}");
        assert_eq!(
            seen.forward,
            [0, 0, 0],
            "denied SQL reached a WAN link: {k:?}: {seen:?}"
        );
    }
}
