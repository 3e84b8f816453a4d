//! Gateway health through the real agent (`xwan run` in the two-WAN topology): what the
//! health options of a gateway and a router change in the verdicts users see in `xwan status`
//! and in the metrics, with targets silenced by nftables in the WAN peers.

use std::time::Duration;

use xwan::status::Availability;

use super::support::{
    self,
    netns::Netns,
    wan::{AgentConfig, Roles, TwoWan, gateway_state, metric, status, wait, wait_until},
};

/// WAN1's peer also answers on 192.0.3.2–4, hosts beyond GW1 (routed through it): three
/// check targets for GW1. The route is the operator's here.
fn three_targets(net: &TwoWan) {
    net.rtr.ip(&[
        "route",
        "add",
        "192.0.3.0/29",
        "via",
        "192.0.2.2",
        "dev",
        "w1",
    ]);
    for a in ["192.0.3.2/32", "192.0.3.3/32", "192.0.3.4/32"] {
        net.wan1.ip(&["addr", "add", a, "dev", "lo"]);
    }
}

/// Sleeps until `t` (at once if it has passed).
fn sleep_until(t: std::time::Instant) {
    std::thread::sleep(t.saturating_duration_since(std::time::Instant::now()));
}

/// The peer in `ns` stops answering echo requests to `target` (table `silent`).
fn silence(ns: &Netns, target: &str) {
    ns.exec(
        "nft",
        &[&format!(
            "add table ip silent; \
             add chain ip silent in {{ type filter hook input priority 0 ; }}; \
             add rule ip silent in ip daddr {target} icmp type echo-request drop"
        )],
    );
}

/// A gateway with three check targets and `quorum = 2` stays Ready while one target is
/// silent, and goes Unavailable (`timeout`) once a second one is; status and metrics say how
/// many answered.
#[test]
fn a_quorum_of_targets_keeps_a_gateway_ready() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.83.0");
    three_targets(&net);
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.links[0].gateway_more = vec![
        r#"check = ["192.0.3.2", "192.0.3.3", "192.0.3.4"]"#.into(),
        "quorum = 2".into(),
    ];
    let (dir, mut agent, _) = net.start_agent_with("quorum", &config, wait());
    let socket = dir.socket();
    // The probes' route: a rule for GW1's mark and a table through 192.0.2.2, xwan's own.
    let rules = net.rtr.try_ip(&["-4", "rule"]).unwrap();
    assert!(
        rules.contains("fwmark") && rules.contains("proto 120"),
        "{rules}"
    );
    let targets = || {
        let s = status(&socket)?;
        let r = s.routers.iter().find(|r| r.name == "R")?;
        let g = r.gateways.iter().find(|g| g.name == "GW1")?;
        Some((g.targets_answering?, g.targets))
    };
    wait_until("GW1's three targets answering", wait(), || {
        targets() == Some((3, 3))
    });

    silence(&net.wan1, "192.0.3.3");
    wait_until("two of GW1's three targets answering", wait(), || {
        targets() == Some((2, 3))
    });
    // Ten more rounds (200 ms each) with one target silent: still Ready, never went down.
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&socket).unwrap();
    assert_eq!(
        gateway_state(&s, "GW1"),
        Some(("Active".into(), "Ready".into())),
        "{}",
        dir.log("agent.log")
    );
    let rtr = &net.rtr;
    let down = r#"xwan_gateway_transitions_total{router="R",gateway="GW1",direction="down",reason="timeout"}"#;
    assert_eq!(metric(rtr, down).unwrap_or(0.0), 0.0);
    assert_eq!(
        metric(rtr, r#"xwan_probe_targets_answering{gateway="GW1"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(rtr, r#"xwan_probe_targets{gateway="GW1"}"#),
        Some(3.0)
    );

    // A second silent target: below the quorum, Unavailable after `tries`; GW2 takes over.
    net.wan1.exec(
        "nft",
        &["add rule ip silent in ip daddr 192.0.3.4 icmp type echo-request drop"],
    );
    wait_until("GW1 unavailable below its quorum", wait(), || {
        status(&socket).is_some_and(|s| {
            gateway_state(&s, "GW1").is_some_and(|g| g.1 == "Unavailable")
                && gateway_state(&s, "GW2").is_some_and(|g| g.0 == "Active")
        })
    });
    assert_eq!(metric(rtr, down), Some(1.0));
    assert_eq!(targets().map(|t| t.0), Some(1));
    agent.stop(&dir, wait());
    // Stopped: no rule left (nor the table's route with it).
    let rules = net.rtr.try_ip(&["-4", "rule"]).unwrap();
    assert!(!rules.contains("fwmark"), "{rules}");
}

/// GW1 is shared by R (3 tries of 100 ms) and R2 (20 tries): each router judges it with its
/// own settings. A silent GW1 is Unavailable for R after its 3 tries while R2 still holds it
/// Ready; R2 follows once its 20 tries have failed. `xwan status` shows both views.
#[test]
fn each_router_judges_a_shared_gateway_itself() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.84.0");
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.more = vec![
        "\n[[router]]".into(),
        r#"name = "R2""#.into(),
        r#"gateways = ["GW1"]"#.into(),
        r#"frequency = "200ms""#.into(),
        r#"wait = "100ms""#.into(),
        "tries = 20".into(),
    ];
    let (dir, mut agent, _) = net.start_agent_with("shared", &config, wait());
    let socket = dir.socket();
    // (R's view, R2's view) of GW1's availability.
    let views = || {
        let s = status(&socket)?;
        let of = |router: &str| {
            let r = s.routers.iter().find(|r| r.name == router)?;
            let g = r.gateways.iter().find(|g| g.name == "GW1")?;
            Some(g.availability.to_string())
        };
        Some((of("R")?, of("R2")?))
    };
    wait_until("GW1 Ready for both routers", wait(), || {
        views() == Some(("Ready".into(), "Ready".into()))
    });

    let t = std::time::Instant::now();
    support::wan::blackhole(&net.wan1);
    wait_until("GW1 unavailable for R", wait(), || {
        views().is_some_and(|v| v.0 == "Unavailable")
    });
    let r_took = t.elapsed();
    // R2's 20 tries take 2 s from its first unanswered attempt: well after R's 300 ms.
    assert_eq!(
        views().map(|v| v.1),
        Some("Ready".into()),
        "R2 judged GW1 with R's settings ({r_took:?} after the blackhole)\n{}",
        dir.log("agent.log")
    );
    let rtr = &net.rtr;
    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R",gateway="GW1"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(rtr, r#"xwan_gateway_up{router="R2",gateway="GW1"}"#),
        Some(1.0)
    );
    wait_until("GW1 unavailable for R2 too", wait(), || {
        views().is_some_and(|v| v.1 == "Unavailable")
    });
    println!(
        "GW1 silent: Unavailable for R after {r_took:?}, for R2 after {:?}",
        t.elapsed()
    );
    agent.stop(&dir, wait());
}

/// R with `damping = { half_life = "4s" }` (penalty 1000, suppress 2000, reuse 750): GW1's
/// carrier flapping every 2 s (1 s down, 1 s up) is damped at the third loss (1000, then
/// 1000 + 707, then 1000 + 1207 = 2207); once the link is steady again, GW1 stays out
/// (Unavailable, `damped`, status showing the figure and the time left) until the figure has
/// decayed to 750, then comes back by itself.
#[test]
fn a_flapping_link_is_damped_until_its_penalty_decays() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.85.0");
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.router = vec![r#"damping = { half_life = "4s" }"#.into()];
    let (dir, mut agent, _) = net.start_agent_with("damping", &config, wait());
    let socket = dir.socket();
    let gw1 = || {
        let s = status(&socket)?;
        let r = s.routers.iter().find(|r| r.name == "R")?;
        r.gateways.iter().find(|g| g.name == "GW1").cloned()
    };
    let ready = || gw1().is_some_and(|g| g.availability == Availability::Ready);
    // Three carrier losses 2 s apart, each a second long: the agent sees each loss and each
    // recovery well within its half of the period (a slower one would stretch the period:
    // printed below).
    let half = Duration::from_secs(1);
    let start = std::time::Instant::now();
    for flap in 0..3u32 {
        let down_at = start + 2 * half * flap;
        sleep_until(down_at);
        net.wan1.ip(&["link", "set", "p1", "down"]);
        wait_until("GW1 down on carrier loss", wait(), || {
            gw1().is_some_and(|g| g.availability == Availability::Unavailable)
        });
        sleep_until(down_at + half);
        net.wan1.ip(&["link", "set", "p1", "up"]);
        if flap < 2 {
            wait_until("GW1 Ready again", wait(), ready);
        }
    }
    println!("three flaps in {:?}", start.elapsed());
    let damped = std::time::Instant::now();
    wait_until("GW1 damped", wait(), || {
        gw1().is_some_and(|g| g.reason == "damped")
    });
    let g = gw1().unwrap();
    let (penalty, left) = (g.penalty.unwrap(), g.reused_in_s.unwrap());
    println!("GW1 damped: penalty {penalty:.0}, reused in {left:.2} s");
    // Above 2000 at the third loss, decaying since (the figure is as of the last probe).
    assert!(penalty > 750.0 && penalty <= 3000.0, "{penalty}");
    // The time left is 4 s × log2(penalty / 750), both read at about the same instant.
    let expected = 4.0 * (penalty / 750.0).log2();
    assert!(
        (left - expected).abs() < 0.5,
        "{left} s left, expected {expected:.2}"
    );
    let s = status(&socket).unwrap();
    assert_eq!(
        gateway_state(&s, "GW2"),
        Some(("Active".into(), "Ready".into()))
    );
    // Still out a second later although the link is steady and GW1 answers.
    std::thread::sleep(Duration::from_secs(1));
    assert!(gw1().is_some_and(|g| g.reason == "damped"), "{:?}", gw1());
    let back = wait_until("GW1 reused", Duration::from_secs(10), ready);
    let took = damped.elapsed();
    println!("GW1 Ready again {took:?} after being damped ({back:?} of waiting)");
    assert!(
        took.as_secs_f64() >= expected - 0.5,
        "reused after {took:?}"
    );
    agent.stop(&dir, wait());
}

/// IPv6: WAN1 carries 2001:db8:1::/64 and GW1 is 2001:db8:1::2, probed at 2001:db8:99::1, a
/// host beyond it that the router has no route to: xwan's IPv6 rule and table take the
/// probes through GW1, which becomes Ready (its next hop resolved by them); `xwan stop`
/// removes the rule.
#[test]
fn a_remote_ipv6_target_is_probed_through_its_gateway() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.86.0");
    net.rtr.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "w1",
        "nodad",
    ]);
    net.wan1.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "p1",
        "nodad",
    ]);
    net.wan1
        .ip(&["-6", "addr", "add", "2001:db8:99::1/128", "dev", "lo"]);
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.links[0].address = "2001:db8:1::1/64";
    config.links[0].gateway_address = "2001:db8:1::2";
    config.links[0].gateway_more = vec![r#"check = ["2001:db8:99::1"]"#.into()];
    let (dir, mut agent, took) = net.start_agent_with("remote6", &config, wait());
    println!("GW1 Ready through its IPv6 policy routing {took:?} after the start");
    let rules = net.rtr.try_ip(&["-6", "rule"]).unwrap();
    assert!(
        rules.contains("fwmark") && rules.contains("proto 120"),
        "{rules}"
    );
    let s = status(&dir.socket()).unwrap();
    let r = s.routers.iter().find(|r| r.name == "R").unwrap();
    let gw1 = r.gateways.iter().find(|g| g.name == "GW1").unwrap();
    assert_eq!((gw1.targets_answering, gw1.targets), (Some(1), 1));
    agent.stop(&dir, wait());
    let rules = net.rtr.try_ip(&["-6", "rule"]).unwrap();
    assert!(!rules.contains("fwmark"), "{rules}");
}

/// GW1 checked through 192.0.2.9, another host on WAN1's subnet (a /24 here): nothing of the
/// kernel's ever sends to GW1's own address (the data plane forwards by its MAC), yet GW1
/// becomes Ready and Active, because xwan has the kernel keep that next hop resolved (a
/// managed entry, `proto 120`); `xwan stop` removes the entry.
#[test]
fn a_gateway_checked_through_another_host_has_its_next_hop_resolved() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.86.0");
    net.rtr.ip(&["addr", "del", "192.0.2.1/30", "dev", "w1"]);
    net.rtr.ip(&["addr", "add", "192.0.2.1/24", "dev", "w1"]);
    net.wan1.ip(&["addr", "add", "192.0.2.9/24", "dev", "p1"]);
    net.rtr.ip(&["neigh", "flush", "dev", "w1"]);
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.links[0].address = "192.0.2.1/24";
    config.links[0].check = Some("192.0.2.9");
    let (dir, mut agent, took) = net.start_agent_with("managed", &config, wait());
    println!("GW1 Active after {took:?}");
    let s = status(&dir.socket()).unwrap();
    assert_eq!(
        gateway_state(&s, "GW1"),
        Some(("Active".into(), "Ready".into()))
    );
    let entry = || {
        net.rtr
            .try_ip(&["-d", "neigh", "show", "192.0.2.2", "dev", "w1"])
    };
    let e = entry().unwrap();
    assert!(e.contains("managed") && e.contains("proto 120"), "{e}");
    agent.stop(&dir, wait());
    let e = entry().unwrap();
    assert!(!e.contains("proto 120"), "left behind: {e}");
}
