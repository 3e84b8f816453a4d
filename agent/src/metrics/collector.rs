//! The collectors: encode a snapshot of the state (and of the data plane) at scrape time.
//!
//! Every metric family's descriptor is always written, even without samples, so the set of
//! families does not depend on what the daemon has pushed yet.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};
use xwan_common::{Counter, reason};

use super::{GatewaySnapshot, Shared, State, histogram::Histogram, unix_seconds};
use crate::{
    datapath::{TcAttachMode, XdpAttachMode},
    events::hooks::Outcome as HookOutcome,
    netlink::conntrack::Reset,
    offload::Event as OffloadEvent,
    router::{Availability, GatewayState, Role},
};

/// Encodes the state pushed by the daemon.
#[derive(Debug)]
pub(super) struct StateCollector(pub(super) Arc<Shared>);

/// Encodes the last data-plane snapshot.
#[derive(Debug)]
pub(super) struct DatapathCollector(pub(super) Arc<Shared>);

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let state = self.0.state();
        encode_state(&state, &mut enc)
    }
}

impl Collector for DatapathCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let dp = self.0.datapath();
        encode_datapath(&dp, &mut enc)
    }
}

/// Writes one metric family: the descriptor, then whatever `samples` writes.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    samples: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, metric_type)?;
    samples(&mut m)
}

fn gauge_f64(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn gauge_i64(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: i64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn histogram(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, h: &Histogram) -> fmt::Result {
    m.encode_family(labels)?
        .encode_histogram::<NoLabelSet>(h.sum(), h.count(), &h.buckets(), None)
}

fn state_label(s: GatewayState) -> &'static str {
    match s {
        GatewayState::Active => "active",
        GatewayState::OnStandby => "standby",
        GatewayState::Unavailable => "unavailable",
    }
}

const STATES: [GatewayState; 3] = [
    GatewayState::Active,
    GatewayState::OnStandby,
    GatewayState::Unavailable,
];

/// Every (router, gateway, snapshot) that has a snapshot.
fn rows(state: &State) -> impl Iterator<Item = (&str, &str, &GatewaySnapshot)> {
    state.gateways.iter().flat_map(|(r, gws)| {
        gws.iter()
            .filter_map(move |(g, e)| e.snapshot.as_ref().map(|s| (&**r, &**g, s)))
    })
}

fn encode_state(state: &State, enc: &mut DescriptorEncoder) -> fmt::Result {
    let seconds = Unit::Seconds;

    // ---- per router and gateway ----
    family(
        enc,
        "xwan_gateway_up",
        "Whether the gateway is usable (1: Ready or Degraded) or Unavailable (0), per router.",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                let up = s.availability.is_usable();
                gauge_i64(m, &[("router", r), ("gateway", g)], up as i64)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_degraded",
        "Whether the gateway is Degraded (1: beyond the router's sla_alarm), per router.",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                let degraded = s.availability == Availability::Degraded;
                gauge_i64(m, &[("router", r), ("gateway", g)], degraded as i64)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_state",
        "Gateway state in the router: 1 for the current one of active, standby, unavailable.",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                for st in STATES {
                    let labels = [("router", r), ("gateway", g), ("state", state_label(st))];
                    gauge_i64(m, &labels, (s.state == st) as i64)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_main",
        "Whether the gateway is a main (1) or backup (0) gateway of the router.",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                gauge_i64(
                    m,
                    &[("router", r), ("gateway", g)],
                    (s.role == Role::Main) as i64,
                )?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_weight",
        "Configured weight of the gateway in the router.",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                gauge_i64(m, &[("router", r), ("gateway", g)], s.weight as i64)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_distribution_ratio",
        "Share of the router's new connections sent to the gateway (slot share, 0 to 1).",
        None,
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                gauge_f64(m, &[("router", r), ("gateway", g)], s.distribution)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_last_change_timestamp",
        "Time of the gateway's last availability change, in seconds since the Unix epoch.",
        Some(&seconds),
        MetricType::Gauge,
        |m| {
            for (r, g, s) in rows(state) {
                if let Some(t) = s.last_change {
                    gauge_f64(m, &[("router", r), ("gateway", g)], unix_seconds(t))?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_gateway_transitions",
        "Availability changes of the gateway, by direction (up: to Ready) and reason.",
        None,
        MetricType::Counter,
        |m| {
            for (r, gws) in &state.gateways {
                for (g, e) in gws {
                    for ((d, reason), n) in &e.transitions {
                        let labels = [
                            ("router", &**r),
                            ("gateway", &**g),
                            ("direction", d.label()),
                            ("reason", reason),
                        ];
                        counter(m, &labels, *n)?;
                    }
                }
            }
            Ok(())
        },
    )?;

    // ---- probes, per gateway ----
    family(
        enc,
        "xwan_probes_sent",
        "Probe attempts sent to the gateway's check targets.",
        None,
        MetricType::Counter,
        |m| {
            for (g, p) in &state.probes {
                counter(m, &[("gateway", &**g)], p.sent)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probes_lost",
        "Probe attempts that failed (no answer in time, refused, unreachable, error).",
        None,
        MetricType::Counter,
        |m| {
            for (g, p) in &state.probes {
                counter(m, &[("gateway", &**g)], p.lost)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probe_rtt",
        "Round-trip time of answered probe attempts.",
        Some(&seconds),
        MetricType::Histogram,
        |m| {
            for (g, p) in &state.probes {
                histogram(m, &[("gateway", &**g)], &p.rtt)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probe_jitter",
        "Mean difference between consecutive probe RTTs over the probe window.",
        Some(&seconds),
        MetricType::Gauge,
        |m| {
            for (g, p) in &state.probes {
                if let Some(j) = p.jitter {
                    gauge_f64(m, &[("gateway", &**g)], j)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probe_targets_answering",
        "Check targets of the gateway that answered its last probe attempt (see quorum).",
        None,
        MetricType::Gauge,
        |m| {
            for (g, p) in &state.probes {
                if let Some((n, _)) = p.targets {
                    gauge_i64(m, &[("gateway", &**g)], n as i64)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probe_targets",
        "Check targets of the gateway.",
        None,
        MetricType::Gauge,
        |m| {
            for (g, p) in &state.probes {
                if let Some((_, n)) = p.targets {
                    gauge_i64(m, &[("gateway", &**g)], n as i64)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_probe_loss_ratio",
        "Share of lost probe attempts over the probe window (0 to 1).",
        None,
        MetricType::Gauge,
        |m| {
            for (g, p) in &state.probes {
                if let Some(l) = p.loss {
                    gauge_f64(m, &[("gateway", &**g)], l)?;
                }
            }
            Ok(())
        },
    )?;

    // ---- agent ----
    family(
        enc,
        "xwan_config_reloads",
        "Configuration loads and reloads, by result.",
        None,
        MetricType::Counter,
        |m| {
            counter(m, &[("result", "success")], state.reloads_ok)?;
            counter(m, &[("result", "failure")], state.reloads_failed)
        },
    )?;
    family(
        enc,
        "xwan_conntrack_resets",
        "Flows on the kernel path that changed gateway, by what became of their conntrack \
         entry: deleted, absent, unsupported (no ports in the tuple), failed (the request \
         failed).",
        None,
        MetricType::Counter,
        |m| {
            for (r, n) in Reset::ALL.iter().zip(&state.conntrack_resets) {
                counter(m, &[("result", r.name())], *n)?;
            }
            counter(
                m,
                &[("result", "failed")],
                state.conntrack_resets[Reset::ALL.len()],
            )
        },
    )?;
    family(
        enc,
        "xwan_kernel_resyncs",
        "Times kernel notifications (links, neighbours, addresses) were lost, the socket's \
         buffer full, and the agent read the kernel again.",
        None,
        MetricType::Counter,
        |m| m.encode_counter::<NoLabelSet, u64, u64>(&state.kernel_resyncs, None),
    )?;
    family(
        enc,
        "xwan_flow_offloads",
        "Changes to the fast path of confirmed flows (netfilter forwarding), by event: \
         offloaded (conntrack confirmed the flow), returned (to the kernel path: conntrack \
         forgot it or TCP is closing), resync (every flow read again from conntrack: a start, \
         lost events), failed (a request failed).",
        None,
        MetricType::Counter,
        |m| {
            for (e, n) in OffloadEvent::ALL.iter().zip(&state.offloads) {
                counter(m, &[("event", e.name())], *n)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_hook_events",
        "Events handed to each [[hook]], by result: success (exit status 0), failure (another \
         status, or ended by a signal), timeout (killed after its timeout), error (could not \
         be started), dropped (not run: the hook's queue was full).",
        None,
        MetricType::Counter,
        |m| {
            for (hook, counts) in &state.hooks {
                for (o, n) in HookOutcome::ALL.iter().zip(counts) {
                    counter(m, &[("hook", &**hook), ("result", o.name())], *n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_config_last_reload_successful",
        "Whether the last configuration (re)load succeeded (0: the running one is older).",
        None,
        MetricType::Gauge,
        |m| match state.last_reload_ok {
            Some(ok) => m.encode_gauge(&(ok as i64)),
            None => Ok(()),
        },
    )?;
    family(
        enc,
        "xwan_config_last_reload_success_timestamp",
        "Time of the last successful configuration (re)load, in seconds since the Unix epoch.",
        Some(&seconds),
        MetricType::Gauge,
        |m| match state.last_reload_success {
            Some(t) => m.encode_gauge(&t),
            None => Ok(()),
        },
    )?;
    family(
        enc,
        "xwan_commit_duration",
        "Time from a probe verdict to the committed router tables.",
        Some(&seconds),
        MetricType::Histogram,
        |m| {
            let h = &state.commit;
            m.encode_histogram::<NoLabelSet>(h.sum(), h.count(), &h.buckets(), None)
        },
    )
}

fn xdp_label(m: XdpAttachMode) -> &'static str {
    match m {
        XdpAttachMode::Native => "native",
        XdpAttachMode::Generic => "generic",
    }
}

fn tc_label(m: TcAttachMode) -> &'static str {
    match m {
        TcAttachMode::Tcx => "tcx",
        TcAttachMode::Clsact => "clsact",
    }
}

/// Packets and bytes counters of one labelled list.
fn traffic<'a>(
    enc: &mut DescriptorEncoder,
    what: &str,
    label: &'static str,
    help: &str,
    items: impl Iterator<Item = (&'a str, Counter)> + Clone,
) -> fmt::Result {
    let bytes = Unit::Bytes;
    family(
        enc,
        &format!("xwan_{what}_packets"),
        &format!("Packets {help}."),
        None,
        MetricType::Counter,
        |m| {
            for (n, c) in items.clone() {
                counter(m, &[(label, n)], c.packets)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        &format!("xwan_{what}"),
        &format!("Bytes {help}."),
        Some(&bytes),
        MetricType::Counter,
        |m| {
            for (n, c) in items {
                counter(m, &[(label, n)], c.bytes)?;
            }
            Ok(())
        },
    )
}

fn encode_datapath(dp: &super::DatapathSnapshot, enc: &mut DescriptorEncoder) -> fmt::Result {
    traffic(
        enc,
        "rule",
        "rule",
        "that matched the rule (data plane, summed over CPUs)",
        dp.rules.iter().map(|(n, c)| (n.as_str(), *c)),
    )?;
    traffic(
        enc,
        "gateway",
        "gateway",
        "forwarded through the gateway (data plane, summed over CPUs)",
        dp.gateways.iter().map(|(n, c)| (n.as_str(), *c)),
    )?;
    traffic(
        enc,
        "gateway_failed",
        "gateway",
        "steered to the gateway that its egress did not take: the driver dropped them or \
         refused the redirect (data plane, summed over CPUs; not in xwan_gateway_*)",
        dp.gateway_failures.iter().map(|(n, c)| (n.as_str(), *c)),
    )?;
    family(
        enc,
        "xwan_gateway_new_flows",
        "Flows the data plane gave the gateway from its routers' slot tables: new \
         connections, and flows moved off a gateway their router no longer allows (the \
         measured counterpart of xwan_gateway_distribution_ratio).",
        None,
        MetricType::Counter,
        |m| {
            for (n, c) in &dp.gateway_new_flows {
                counter(m, &[("gateway", n.as_str())], *c)?;
            }
            Ok(())
        },
    )?;
    traffic(
        enc,
        "datapath",
        "reason",
        "seen by the data plane, by verdict reason (pass_*: handed to the kernel, drop_*: \
         dropped, steer_*: forwarded; drop_redirect and drop_xmit: steered but not taken by \
         the egress)",
        dp.reasons
            .iter()
            .take(reason::COUNT as usize)
            .enumerate()
            .map(|(i, c)| (reason::NAMES[i], *c)),
    )?;
    family(
        enc,
        "xwan_flow_table_entries",
        "Entries in the data plane's flow table.",
        None,
        MetricType::Gauge,
        |m| match dp.flow_entries {
            Some(n) => m.encode_gauge(&(n as i64)),
            None => Ok(()),
        },
    )?;
    family(
        enc,
        "xwan_flow_table_capacity",
        "Size of the data plane's flow table (an LRU: the oldest flows are evicted when full).",
        None,
        MetricType::Gauge,
        |m| match dp.flow_capacity {
            Some(n) => m.encode_gauge(&(n as i64)),
            None => Ok(()),
        },
    )?;
    family(
        enc,
        "xwan_flow_table_memory",
        "Kernel memory of the maps sized by flow_table_size (XWAN_FLOWS: flows, XWAN_RETURN: \
         return routes, XWAN_SNAT: translations of offloaded flows, allocated as used).",
        Some(&Unit::Bytes),
        MetricType::Gauge,
        |m| {
            for (map, bytes) in &dp.flow_memory {
                gauge_i64(m, &[("map", *map)], *bytes as i64)?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_return_table_entries",
        "Entries in the data plane's return-route table.",
        None,
        MetricType::Gauge,
        |m| match dp.return_entries {
            Some(n) => m.encode_gauge(&(n as i64)),
            None => Ok(()),
        },
    )?;
    family(
        enc,
        "xwan_xdp_attach_mode",
        "How the XDP program is attached to the interface (1 for the mode in use), and how it hands tunnel traffic to TC.",
        None,
        MetricType::Gauge,
        |m| {
            for (i, mode) in &dp.xdp_attach {
                gauge_i64(
                    m,
                    &[
                        ("interface", i.as_str()),
                        ("mode", xdp_label(*mode)),
                        ("handoff", xwan_common::TUNNEL_HANDOFF),
                    ],
                    1,
                )?;
            }
            Ok(())
        },
    )?;
    family(
        enc,
        "xwan_tc_attach_mode",
        "How the TC ingress program is attached to the interface (1 for the mode in use).",
        None,
        MetricType::Gauge,
        |m| {
            for (i, mode) in &dp.tc_attach {
                gauge_i64(
                    m,
                    &[("interface", i.as_str()), ("mode", tc_label(*mode))],
                    1,
                )?;
            }
            Ok(())
        },
    )
}
