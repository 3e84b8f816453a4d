use super::*;
use crate::health::{Availability, FailureCause};
use xwan_common::reason;

fn transition(to: Availability, reason: Reason) -> Transition {
    let now = std::time::Instant::now();
    Transition {
        at: now,
        from: match to {
            Availability::Ready | Availability::Degraded => Availability::Unavailable,
            Availability::Unavailable => Availability::Ready,
        },
        to,
        previous: Reason::NotYetProbed,
        reason,
        since: now,
        rtt: None,
        jitter: None,
        loss: 0.0,
    }
}

fn at(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
}

/// One router, two gateways, a few probes, a reload, a commit and a small data plane.
fn small() -> Metrics {
    let m = Metrics::with_version("1.2.3");
    m.set_gateway(
        "Internet",
        "ISP1",
        GatewaySnapshot {
            availability: Availability::Ready,
            state: GatewayState::Active,
            role: Role::Main,
            weight: 3,
            distribution: 1.0,
            last_change: Some(at(1_700_000_000.5)),
        },
    );
    m.set_gateway(
        "Internet",
        "ISP2",
        GatewaySnapshot {
            availability: Availability::Unavailable,
            state: GatewayState::Unavailable,
            role: Role::Backup,
            weight: 1,
            distribution: 0.0,
            last_change: None,
        },
    );
    m.record_transition(
        "Internet",
        "ISP1",
        &transition(
            Availability::Unavailable,
            Reason::Failed(FailureCause::Timeout),
        ),
    );
    m.record_transition(
        "Internet",
        "ISP1",
        &transition(Availability::Ready, Reason::Answering),
    );
    m.observe_probe("ISP1", Some(Duration::from_micros(1500)));
    m.observe_probe("ISP1", None);
    m.set_probe_window(
        "ISP1",
        &Stats {
            jitter: Some(Duration::from_micros(250)),
            loss: 0.5,
            ..Stats::default()
        },
    );
    m.record_reload_at(true, at(1_700_000_100.0));
    m.record_reload_at(false, at(1_700_000_200.0));
    m.observe_commit(Duration::from_millis(2));
    m.record_hook("notify", crate::events::hooks::Outcome::Success);
    m.record_hook("notify", crate::events::hooks::Outcome::Success);
    m.record_hook("notify", crate::events::hooks::Outcome::Timeout);
    let mut reasons = vec![Counter::default(); reason::COUNT as usize];
    reasons[reason::DROP_RULE as usize] = Counter {
        packets: 3,
        bytes: 180,
    };
    reasons[reason::STEER_CLASSIFIED as usize] = Counter {
        packets: 8,
        bytes: 12_000,
    };
    m.set_datapath(DatapathSnapshot {
        rules: vec![
            (
                "Web".into(),
                Counter {
                    packets: 8,
                    bytes: 12_000,
                },
            ),
            (
                rule_label(1, None),
                Counter {
                    packets: 3,
                    bytes: 180,
                },
            ),
        ],
        gateways: vec![(
            "ISP1".into(),
            Counter {
                packets: 8,
                bytes: 12_000,
            },
        )],
        gateway_failures: vec![(
            "ISP1".into(),
            Counter {
                packets: 2,
                bytes: 3_000,
            },
        )],
        gateway_new_flows: vec![("ISP1".into(), 5)],
        reasons,
        flow_entries: Some(2),
        flow_capacity: Some(262_144),
        flow_memory: vec![("XWAN_FLOWS", 34_000_000), ("XWAN_SNAT", 0)],
        return_entries: Some(0),
        xdp_attach: vec![("lan0".into(), XdpAttachMode::Native)],
        tc_attach: vec![("lan0".into(), TcAttachMode::Tcx)],
    });
    m
}

/// The exposition of [`small`], byte for byte: renaming a metric or a label, or changing a
/// help text or the bucket layout, must show up here.
const SMALL: &str = r##"# HELP xwan_build Build of the running agent.
# TYPE xwan_build info
xwan_build_info{version="1.2.3"} 1
# HELP xwan_gateway_up Whether the gateway is usable (1: Ready or Degraded) or Unavailable (0), per router.
# TYPE xwan_gateway_up gauge
xwan_gateway_up{router="Internet",gateway="ISP1"} 1
xwan_gateway_up{router="Internet",gateway="ISP2"} 0
# HELP xwan_gateway_degraded Whether the gateway is Degraded (1: beyond the router's sla_alarm), per router.
# TYPE xwan_gateway_degraded gauge
xwan_gateway_degraded{router="Internet",gateway="ISP1"} 0
xwan_gateway_degraded{router="Internet",gateway="ISP2"} 0
# HELP xwan_gateway_state Gateway state in the router: 1 for the current one of active, standby, unavailable.
# TYPE xwan_gateway_state gauge
xwan_gateway_state{router="Internet",gateway="ISP1",state="active"} 1
xwan_gateway_state{router="Internet",gateway="ISP1",state="standby"} 0
xwan_gateway_state{router="Internet",gateway="ISP1",state="unavailable"} 0
xwan_gateway_state{router="Internet",gateway="ISP2",state="active"} 0
xwan_gateway_state{router="Internet",gateway="ISP2",state="standby"} 0
xwan_gateway_state{router="Internet",gateway="ISP2",state="unavailable"} 1
# HELP xwan_gateway_main Whether the gateway is a main (1) or backup (0) gateway of the router.
# TYPE xwan_gateway_main gauge
xwan_gateway_main{router="Internet",gateway="ISP1"} 1
xwan_gateway_main{router="Internet",gateway="ISP2"} 0
# HELP xwan_gateway_weight Configured weight of the gateway in the router.
# TYPE xwan_gateway_weight gauge
xwan_gateway_weight{router="Internet",gateway="ISP1"} 3
xwan_gateway_weight{router="Internet",gateway="ISP2"} 1
# HELP xwan_gateway_distribution_ratio Share of the router's new connections sent to the gateway (slot share, 0 to 1).
# TYPE xwan_gateway_distribution_ratio gauge
xwan_gateway_distribution_ratio{router="Internet",gateway="ISP1"} 1.0
xwan_gateway_distribution_ratio{router="Internet",gateway="ISP2"} 0.0
# HELP xwan_gateway_last_change_timestamp_seconds Time of the gateway's last availability change, in seconds since the Unix epoch.
# TYPE xwan_gateway_last_change_timestamp_seconds gauge
# UNIT xwan_gateway_last_change_timestamp_seconds seconds
xwan_gateway_last_change_timestamp_seconds{router="Internet",gateway="ISP1"} 1700000000.5
# HELP xwan_gateway_transitions Availability changes of the gateway, by direction (up: to Ready) and reason.
# TYPE xwan_gateway_transitions counter
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="up",reason="answering"} 1
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="up",reason="not monitored"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="link down"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="probe error"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="refused"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="sla"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="timeout"} 1
xwan_gateway_transitions_total{router="Internet",gateway="ISP1",direction="down",reason="unreachable"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="up",reason="answering"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="up",reason="not monitored"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="link down"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="probe error"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="refused"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="sla"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="timeout"} 0
xwan_gateway_transitions_total{router="Internet",gateway="ISP2",direction="down",reason="unreachable"} 0
# HELP xwan_probes_sent Probe attempts sent to the gateway's check targets.
# TYPE xwan_probes_sent counter
xwan_probes_sent_total{gateway="ISP1"} 2
# HELP xwan_probes_lost Probe attempts that failed (no answer in time, refused, unreachable, error).
# TYPE xwan_probes_lost counter
xwan_probes_lost_total{gateway="ISP1"} 1
# HELP xwan_probe_rtt_seconds Round-trip time of answered probe attempts.
# TYPE xwan_probe_rtt_seconds histogram
# UNIT xwan_probe_rtt_seconds seconds
xwan_probe_rtt_seconds_sum{gateway="ISP1"} 0.0015
xwan_probe_rtt_seconds_count{gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.0001",gateway="ISP1"} 0
xwan_probe_rtt_seconds_bucket{le="0.00025",gateway="ISP1"} 0
xwan_probe_rtt_seconds_bucket{le="0.0005",gateway="ISP1"} 0
xwan_probe_rtt_seconds_bucket{le="0.001",gateway="ISP1"} 0
xwan_probe_rtt_seconds_bucket{le="0.0025",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.005",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.01",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.025",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.05",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.1",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.25",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="0.5",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="1.0",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="2.0",gateway="ISP1"} 1
xwan_probe_rtt_seconds_bucket{le="+Inf",gateway="ISP1"} 1
# HELP xwan_probe_jitter_seconds Mean difference between consecutive probe RTTs over the probe window.
# TYPE xwan_probe_jitter_seconds gauge
# UNIT xwan_probe_jitter_seconds seconds
xwan_probe_jitter_seconds{gateway="ISP1"} 0.00025
# HELP xwan_probe_targets_answering Check targets of the gateway that answered its last probe attempt (see quorum).
# TYPE xwan_probe_targets_answering gauge
# HELP xwan_probe_targets Check targets of the gateway.
# TYPE xwan_probe_targets gauge
# HELP xwan_probe_loss_ratio Share of lost probe attempts over the probe window (0 to 1).
# TYPE xwan_probe_loss_ratio gauge
xwan_probe_loss_ratio{gateway="ISP1"} 0.5
# HELP xwan_config_reloads Configuration loads and reloads, by result.
# TYPE xwan_config_reloads counter
xwan_config_reloads_total{result="success"} 1
xwan_config_reloads_total{result="failure"} 1
# HELP xwan_conntrack_resets Flows on the kernel path that changed gateway, by what became of their conntrack entry: deleted, absent, unsupported (no ports in the tuple), failed (the request failed).
# TYPE xwan_conntrack_resets counter
xwan_conntrack_resets_total{result="deleted"} 0
xwan_conntrack_resets_total{result="absent"} 0
xwan_conntrack_resets_total{result="unsupported"} 0
xwan_conntrack_resets_total{result="failed"} 0
# HELP xwan_kernel_resyncs Times kernel notifications (links, neighbours, addresses) were lost, the socket's buffer full, and the agent read the kernel again.
# TYPE xwan_kernel_resyncs counter
xwan_kernel_resyncs_total 0
# HELP xwan_flow_offloads Changes to the fast path of confirmed flows (netfilter forwarding), by event: offloaded (conntrack confirmed the flow), returned (to the kernel path: conntrack forgot it or TCP is closing), resync (every flow read again from conntrack: a start, lost events), failed (a request failed).
# TYPE xwan_flow_offloads counter
xwan_flow_offloads_total{event="offloaded"} 0
xwan_flow_offloads_total{event="returned"} 0
xwan_flow_offloads_total{event="resync"} 0
xwan_flow_offloads_total{event="failed"} 0
# HELP xwan_hook_events Events handed to each [[hook]], by result: success (exit status 0), failure (another status, or ended by a signal), timeout (killed after its timeout), error (could not be started), dropped (not run: the hook's queue was full).
# TYPE xwan_hook_events counter
xwan_hook_events_total{hook="notify",result="success"} 2
xwan_hook_events_total{hook="notify",result="failure"} 0
xwan_hook_events_total{hook="notify",result="timeout"} 1
xwan_hook_events_total{hook="notify",result="error"} 0
xwan_hook_events_total{hook="notify",result="dropped"} 0
# HELP xwan_config_last_reload_successful Whether the last configuration (re)load succeeded (0: the running one is older).
# TYPE xwan_config_last_reload_successful gauge
xwan_config_last_reload_successful 0
# HELP xwan_config_last_reload_success_timestamp_seconds Time of the last successful configuration (re)load, in seconds since the Unix epoch.
# TYPE xwan_config_last_reload_success_timestamp_seconds gauge
# UNIT xwan_config_last_reload_success_timestamp_seconds seconds
xwan_config_last_reload_success_timestamp_seconds 1700000100.0
# HELP xwan_commit_duration_seconds Time from a probe verdict to the committed router tables.
# TYPE xwan_commit_duration_seconds histogram
# UNIT xwan_commit_duration_seconds seconds
xwan_commit_duration_seconds_sum 0.002
xwan_commit_duration_seconds_count 1
xwan_commit_duration_seconds_bucket{le="0.0001"} 0
xwan_commit_duration_seconds_bucket{le="0.00025"} 0
xwan_commit_duration_seconds_bucket{le="0.0005"} 0
xwan_commit_duration_seconds_bucket{le="0.001"} 0
xwan_commit_duration_seconds_bucket{le="0.0025"} 1
xwan_commit_duration_seconds_bucket{le="0.005"} 1
xwan_commit_duration_seconds_bucket{le="0.01"} 1
xwan_commit_duration_seconds_bucket{le="0.025"} 1
xwan_commit_duration_seconds_bucket{le="0.05"} 1
xwan_commit_duration_seconds_bucket{le="0.1"} 1
xwan_commit_duration_seconds_bucket{le="0.25"} 1
xwan_commit_duration_seconds_bucket{le="0.5"} 1
xwan_commit_duration_seconds_bucket{le="1.0"} 1
xwan_commit_duration_seconds_bucket{le="2.5"} 1
xwan_commit_duration_seconds_bucket{le="+Inf"} 1
# HELP xwan_rule_packets Packets that matched the rule (data plane, summed over CPUs).
# TYPE xwan_rule_packets counter
xwan_rule_packets_total{rule="Web"} 8
xwan_rule_packets_total{rule="#2"} 3
# HELP xwan_rule_bytes Bytes that matched the rule (data plane, summed over CPUs).
# TYPE xwan_rule_bytes counter
# UNIT xwan_rule_bytes bytes
xwan_rule_bytes_total{rule="Web"} 12000
xwan_rule_bytes_total{rule="#2"} 180
# HELP xwan_gateway_packets Packets forwarded through the gateway (data plane, summed over CPUs).
# TYPE xwan_gateway_packets counter
xwan_gateway_packets_total{gateway="ISP1"} 8
# HELP xwan_gateway_bytes Bytes forwarded through the gateway (data plane, summed over CPUs).
# TYPE xwan_gateway_bytes counter
# UNIT xwan_gateway_bytes bytes
xwan_gateway_bytes_total{gateway="ISP1"} 12000
# HELP xwan_gateway_failed_packets Packets steered to the gateway that its egress did not take: the driver dropped them or refused the redirect (data plane, summed over CPUs; not in xwan_gateway_*).
# TYPE xwan_gateway_failed_packets counter
xwan_gateway_failed_packets_total{gateway="ISP1"} 2
# HELP xwan_gateway_failed_bytes Bytes steered to the gateway that its egress did not take: the driver dropped them or refused the redirect (data plane, summed over CPUs; not in xwan_gateway_*).
# TYPE xwan_gateway_failed_bytes counter
# UNIT xwan_gateway_failed_bytes bytes
xwan_gateway_failed_bytes_total{gateway="ISP1"} 3000
# HELP xwan_gateway_new_flows Flows the data plane gave the gateway from its routers' slot tables: new connections, and flows moved off a gateway their router no longer allows (the measured counterpart of xwan_gateway_distribution_ratio).
# TYPE xwan_gateway_new_flows counter
xwan_gateway_new_flows_total{gateway="ISP1"} 5
# HELP xwan_datapath_packets Packets seen by the data plane, by verdict reason (pass_*: handed to the kernel, drop_*: dropped, steer_*: forwarded; drop_redirect and drop_xmit: steered but not taken by the egress).
# TYPE xwan_datapath_packets counter
xwan_datapath_packets_total{reason="pass_not_configured"} 0
xwan_datapath_packets_total{reason="pass_not_ip"} 0
xwan_datapath_packets_total{reason="pass_not_for_us"} 0
xwan_datapath_packets_total{reason="pass_malformed"} 0
xwan_datapath_packets_total{reason="pass_local"} 0
xwan_datapath_packets_total{reason="pass_no_match"} 0
xwan_datapath_packets_total{reason="pass_rule"} 0
xwan_datapath_packets_total{reason="pass_ttl"} 0
xwan_datapath_packets_total{reason="pass_too_big"} 0
xwan_datapath_packets_total{reason="pass_no_gateway"} 0
xwan_datapath_packets_total{reason="pass_gateway_error"} 0
xwan_datapath_packets_total{reason="drop_rule"} 3
xwan_datapath_packets_total{reason="drop_no_gateway"} 0
xwan_datapath_packets_total{reason="steer_flow"} 0
xwan_datapath_packets_total{reason="steer_classified"} 8
xwan_datapath_packets_total{reason="steer_return"} 0
xwan_datapath_packets_total{reason="drop_forged_tag"} 0
xwan_datapath_packets_total{reason="drop_redirect"} 0
xwan_datapath_packets_total{reason="drop_xmit"} 0
xwan_datapath_packets_total{reason="steer_offload"} 0
# HELP xwan_datapath_bytes Bytes seen by the data plane, by verdict reason (pass_*: handed to the kernel, drop_*: dropped, steer_*: forwarded; drop_redirect and drop_xmit: steered but not taken by the egress).
# TYPE xwan_datapath_bytes counter
# UNIT xwan_datapath_bytes bytes
xwan_datapath_bytes_total{reason="pass_not_configured"} 0
xwan_datapath_bytes_total{reason="pass_not_ip"} 0
xwan_datapath_bytes_total{reason="pass_not_for_us"} 0
xwan_datapath_bytes_total{reason="pass_malformed"} 0
xwan_datapath_bytes_total{reason="pass_local"} 0
xwan_datapath_bytes_total{reason="pass_no_match"} 0
xwan_datapath_bytes_total{reason="pass_rule"} 0
xwan_datapath_bytes_total{reason="pass_ttl"} 0
xwan_datapath_bytes_total{reason="pass_too_big"} 0
xwan_datapath_bytes_total{reason="pass_no_gateway"} 0
xwan_datapath_bytes_total{reason="pass_gateway_error"} 0
xwan_datapath_bytes_total{reason="drop_rule"} 180
xwan_datapath_bytes_total{reason="drop_no_gateway"} 0
xwan_datapath_bytes_total{reason="steer_flow"} 0
xwan_datapath_bytes_total{reason="steer_classified"} 12000
xwan_datapath_bytes_total{reason="steer_return"} 0
xwan_datapath_bytes_total{reason="drop_forged_tag"} 0
xwan_datapath_bytes_total{reason="drop_redirect"} 0
xwan_datapath_bytes_total{reason="drop_xmit"} 0
xwan_datapath_bytes_total{reason="steer_offload"} 0
# HELP xwan_flow_table_entries Entries in the data plane's flow table.
# TYPE xwan_flow_table_entries gauge
xwan_flow_table_entries 2
# HELP xwan_flow_table_capacity Size of the data plane's flow table (an LRU: the oldest flows are evicted when full).
# TYPE xwan_flow_table_capacity gauge
xwan_flow_table_capacity 262144
# HELP xwan_flow_table_memory_bytes Kernel memory of the maps sized by flow_table_size (XWAN_FLOWS: flows, XWAN_RETURN: return routes, XWAN_SNAT: translations of offloaded flows, allocated as used).
# TYPE xwan_flow_table_memory_bytes gauge
# UNIT xwan_flow_table_memory_bytes bytes
xwan_flow_table_memory_bytes{map="XWAN_FLOWS"} 34000000
xwan_flow_table_memory_bytes{map="XWAN_SNAT"} 0
# HELP xwan_return_table_entries Entries in the data plane's return-route table.
# TYPE xwan_return_table_entries gauge
xwan_return_table_entries 0
# HELP xwan_xdp_attach_mode How the XDP program is attached to the interface (1 for the mode in use), and how it hands tunnel traffic to TC.
# TYPE xwan_xdp_attach_mode gauge
xwan_xdp_attach_mode{interface="lan0",mode="native",handoff="source_mac"} 1
# HELP xwan_tc_attach_mode How the TC ingress program is attached to the interface (1 for the mode in use).
# TYPE xwan_tc_attach_mode gauge
xwan_tc_attach_mode{interface="lan0",mode="tcx"} 1
# EOF
"##;

#[test]
fn exposition_is_pinned() {
    let text = small().encode();
    if text != SMALL {
        for (i, (got, want)) in text.lines().zip(SMALL.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(text.lines().count(), SMALL.lines().count(), "line count");
        assert_eq!(text, SMALL);
    }
}

/// One parsed sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    /// `{...}` including braces, or empty.
    labels: &'a str,
    value: f64,
}

/// Parses the sample lines of an exposition, checking the OpenMetrics framing on the way: it
/// ends with `# EOF`, every sample belongs to the family declared last, and no family is
/// declared twice.
fn samples(text: &str) -> Vec<Sample<'_>> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker");
    let mut families = std::collections::HashSet::new();
    let mut family = "";
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
            assert!(families.insert(family), "family {family} declared twice");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        assert!(
            name.starts_with(family),
            "sample {name} outside its family {family}"
        );
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn count(s: &[Sample], name: &str) -> usize {
    s.iter().filter(|x| x.name == name).count()
}

fn value(s: &[Sample], name: &str, labels: &str) -> f64 {
    s.iter()
        .find(|x| x.name == name && x.labels == labels)
        .unwrap_or_else(|| panic!("no {name}{labels}"))
        .value
}

#[test]
fn pinned_exposition_parses() {
    let text = small().encode();
    let s = samples(&text);
    assert_eq!(s.len(), 146);
    assert_eq!(
        value(
            &s,
            "xwan_hook_events_total",
            r#"{hook="notify",result="timeout"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, "xwan_probes_lost_total", r#"{gateway="ISP1"}"#),
        1.0
    );
    assert_eq!(
        value(&s, "xwan_flow_table_memory_bytes", r#"{map="XWAN_FLOWS"}"#),
        34e6
    );
}

#[test]
fn large_scrape_encodes_every_series() {
    let (m, _) = bench_fixture(1000, 256);
    let text = m.encode();
    let s = samples(&text);
    let mut seen = std::collections::HashSet::new();
    for x in &s {
        assert!(
            seen.insert((x.name, x.labels)),
            "duplicate {}{}",
            x.name,
            x.labels
        );
    }
    assert_eq!(count(&s, "xwan_rule_packets_total"), 1000);
    assert_eq!(count(&s, "xwan_rule_bytes_total"), 1000);
    assert_eq!(count(&s, "xwan_gateway_packets_total"), 256);
    assert_eq!(count(&s, "xwan_gateway_bytes_total"), 256);
    assert_eq!(
        count(&s, "xwan_datapath_packets_total"),
        reason::COUNT as usize
    );
    assert_eq!(count(&s, "xwan_gateway_up"), 256);
    assert_eq!(count(&s, "xwan_gateway_state"), 3 * 256);
    assert_eq!(count(&s, "xwan_gateway_main"), 256);
    assert_eq!(count(&s, "xwan_gateway_weight"), 256);
    assert_eq!(count(&s, "xwan_gateway_distribution_ratio"), 256);
    assert_eq!(count(&s, "xwan_gateway_last_change_timestamp_seconds"), 256);
    assert_eq!(
        count(&s, "xwan_gateway_transitions_total"),
        INITIAL_TRANSITIONS.len() * 256
    );
    assert_eq!(count(&s, "xwan_probes_sent_total"), 256);
    assert_eq!(count(&s, "xwan_probe_rtt_seconds_bucket"), 256 * 15);
    assert_eq!(count(&s, "xwan_probe_jitter_seconds"), 256);

    // Values land on the right series.
    assert_eq!(
        value(&s, "xwan_rule_packets_total", r#"{rule="rule0999"}"#),
        (1000 + 7 * 999) as f64
    );
    assert_eq!(
        value(&s, "xwan_rule_bytes_total", r#"{rule="rule0999"}"#),
        (1_500_000 + 10_501 * 999) as f64
    );
    assert_eq!(
        value(&s, "xwan_gateway_bytes_total", r#"{gateway="gw255"}"#),
        (1_500_000 + 10_501 * 255) as f64
    );
    assert_eq!(
        value(
            &s,
            "xwan_gateway_up",
            r#"{router="router31",gateway="gw255"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "xwan_gateway_state",
            r#"{router="router31",gateway="gw255",state="unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "xwan_gateway_transitions_total",
            r#"{router="router31",gateway="gw255",direction="down",reason="link down"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, "xwan_probes_lost_total", r#"{gateway="gw255"}"#),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "xwan_probe_rtt_seconds_bucket",
            r#"{le="+Inf",gateway="gw254"}"#
        ),
        10.0
    );
}

#[test]
fn histogram_bounds_are_inclusive() {
    let mut h = histogram::Histogram::new(&RTT_BUCKETS);
    h.observe(0.001);
    h.observe(0.0010001);
    h.observe(5.0);
    let b = h.buckets();
    assert_eq!(b.len(), RTT_BUCKETS.len() + 1);
    assert_eq!(b[3], (0.001, 1));
    assert_eq!(b[4], (0.0025, 1));
    assert_eq!(b[RTT_BUCKETS.len()], (f64::INFINITY, 1));
    assert_eq!(h.count(), 3);
}

#[test]
fn reason_only_changes_are_not_counted() {
    let m = Metrics::new();
    let mut t = transition(Availability::Unavailable, Reason::LinkDown);
    t.from = Availability::Unavailable;
    m.record_transition("R", "G", &t);
    let text = m.encode();
    assert_eq!(count(&samples(&text), "xwan_gateway_transitions_total"), 0);
    // A real change creates the pair's usual series at zero alongside, so `increase()` sees
    // the next ones from their first occurrence.
    t.from = Availability::Ready;
    m.record_transition("R", "G", &t);
    let text = m.encode();
    let s = samples(&text);
    assert_eq!(
        count(&s, "xwan_gateway_transitions_total"),
        INITIAL_TRANSITIONS.len()
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "xwan_gateway_transitions_total")
            .map(|x| x.value)
            .sum::<f64>(),
        1.0
    );
    // No row yet: no gauges.
    assert_eq!(count(&s, "xwan_gateway_up"), 0);
}

#[test]
fn unusual_transition_reasons_get_their_own_series() {
    let m = Metrics::new();
    m.record_transition("R", "G", &transition(Availability::Ready, Reason::LinkUp));
    let text = m.encode();
    assert_eq!(
        value(
            &samples(&text),
            "xwan_gateway_transitions_total",
            r#"{router="R",gateway="G",direction="up",reason="link up"}"#
        ),
        1.0
    );
}

#[test]
fn empty_registry_declares_every_family() {
    let text = Metrics::with_version("1.2.3").encode();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let small = small().encode();
    let all: Vec<&str> = small
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(families, all);
    // Without data: build info, reload counters at zero and an empty commit histogram.
    let s = samples(&text);
    assert_eq!(
        s.iter()
            .map(|x| x.name)
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "xwan_build_info",
            "xwan_config_reloads_total",
            "xwan_conntrack_resets_total",
            "xwan_flow_offloads_total",
            "xwan_kernel_resyncs_total",
            "xwan_commit_duration_seconds_sum",
            "xwan_commit_duration_seconds_count",
            "xwan_commit_duration_seconds_bucket",
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn retain_config_forgets_removed_objects() {
    let (config, _) = crate::config::parse(
        include_str!("../../../examples/minimal.toml"),
        "minimal.toml",
    )
    .expect("example config");
    let m = Metrics::new();
    let row = GatewaySnapshot {
        availability: Availability::Ready,
        state: GatewayState::Active,
        role: Role::Main,
        weight: 1,
        distribution: 1.0,
        last_change: None,
    };
    m.set_gateway("Internet", "ISP", row);
    m.set_gateway("Internet", "Gone", row);
    m.set_gateway("OldRouter", "ISP", row);
    m.observe_probe("ISP", None);
    m.observe_probe("Gone", None);
    m.retain_config(&config);
    let text = m.encode();
    let s = samples(&text);
    let ups: Vec<&str> = s
        .iter()
        .filter(|x| x.name == "xwan_gateway_up")
        .map(|x| x.labels)
        .collect();
    assert_eq!(ups, [r#"{router="Internet",gateway="ISP"}"#]);
    let probed: Vec<&str> = s
        .iter()
        .filter(|x| x.name == "xwan_probes_sent_total")
        .map(|x| x.labels)
        .collect();
    assert_eq!(probed, [r#"{gateway="ISP"}"#]);
    assert!(!text.contains("OldRouter") && !text.contains("Gone"));
}

#[test]
fn a_scrape_in_progress_does_not_block_or_see_updates() {
    let m = small();
    // What a scrape holds while it encodes.
    let held = m.shared.state();
    m.observe_probe("ISP1", None);
    assert_eq!(
        held.probes["ISP1"].sent, 2,
        "the held snapshot is immutable"
    );
    assert_eq!(m.shared.state().probes["ISP1"].sent, 3);
    drop(held);
    // Without a scrape in progress the update is in place (no copy).
    let before = Arc::as_ptr(&m.shared.state());
    m.observe_probe("ISP1", None);
    assert_eq!(Arc::as_ptr(&m.shared.state()), before);
}

#[test]
fn probe_reports_and_labels() {
    let m = Metrics::new();
    let stats = Stats {
        jitter: None,
        loss: 0.25,
        ..Stats::default()
    };
    let report = |outcome: Result<Duration, _>| ProbeReport {
        at: std::time::Instant::now(),
        attempt: 1,
        answered: usize::from(outcome.is_ok()) + 1,
        targets: 3,
        outcome,
        availability: Availability::Ready,
        stats,
    };
    m.observe_probe_report("G", &report(Ok(Duration::from_millis(30))), true);
    m.observe_probe_report("G", &report(Err(crate::probe::ProbeError::Timeout)), true);
    let text = m.encode();
    let s = samples(&text);
    assert_eq!(value(&s, "xwan_probes_sent_total", r#"{gateway="G"}"#), 2.0);
    assert_eq!(value(&s, "xwan_probes_lost_total", r#"{gateway="G"}"#), 1.0);
    assert_eq!(
        value(&s, "xwan_probe_rtt_seconds_sum", r#"{gateway="G"}"#),
        0.03
    );
    assert_eq!(value(&s, "xwan_probe_loss_ratio", r#"{gateway="G"}"#), 0.25);
    // The last attempt: 1 of 3 targets answered.
    let targets = |name| value(&s, name, r#"{gateway="G"}"#);
    assert_eq!(targets("xwan_probe_targets_answering"), 1.0);
    assert_eq!(targets("xwan_probe_targets"), 3.0);
    // No jitter yet: no series rather than a made-up value.
    assert_eq!(count(&s, "xwan_probe_jitter_seconds"), 0);

    assert_eq!(rule_label(2, None), "#3");
    assert_eq!(rule_label(2, Some("Web")), "Web");
    let status = GatewayStatus {
        gateway: 0,
        role: Role::Backup,
        state: GatewayState::OnStandby,
        availability: Availability::Ready,
        weight: 5,
        slots: 0,
        share: 25.0,
    };
    assert_eq!(
        GatewaySnapshot::from_status(&status, None).distribution,
        0.25
    );
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    m.observe_probe("a\"b\\c", None);
    assert!(
        m.encode()
            .contains(r#"xwan_probes_sent_total{gateway="a\"b\\c"} 1"#)
    );
}

#[test]
fn bench_scrape_runs() {
    let (median, p99) = bench_scrape(10, 4, 5);
    assert!(median > 0.0 && p99 >= median);
}
