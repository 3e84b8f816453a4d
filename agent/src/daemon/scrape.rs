//! The metrics endpoint's view of the data plane: the kernel's counters, named after the rules
//! and gateways of the last plan. A scrape reads them on the metrics server's thread through
//! its own map descriptors: it never waits for the daemon.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tracing::info;

use crate::{
    config::Config,
    datapath::{AttachReport, CounterReader, Datapath},
    metrics::{self, DatapathSnapshot, Metrics},
};

/// What a scrape needs to name the kernel's counters.
#[derive(Clone, Default)]
struct Labels {
    /// (counter slot, rule label).
    rules: Vec<(u16, String)>,
    /// (gateway id, name).
    gateways: Vec<(u16, String)>,
    attachments: Vec<AttachReport>,
}

/// The names scrapes give the counters; the daemon refreshes them with every plan.
pub struct CounterNames(Arc<Mutex<Labels>>);

impl CounterNames {
    /// Serves `metrics` and the counters of the maps pinned in `config.agent.bpffs` on
    /// `config.agent.metrics_listen`.
    pub async fn serve(config: &Config, metrics: Arc<Metrics>) -> Result<CounterNames> {
        let labels = Arc::new(Mutex::new(Labels::default()));
        let http = tokio::net::TcpListener::bind(config.agent.metrics_listen)
            .await
            .with_context(|| {
                format!(
                    "binding the metrics endpoint {}",
                    config.agent.metrics_listen
                )
            })?;
        let reader = CounterReader::open(&config.agent.bpffs)?;
        let source: metrics::DatapathSource = {
            let labels = labels.clone();
            Arc::new(move || {
                let l = labels.lock().map(|l| l.clone()).unwrap_or_default();
                snapshot(&reader, &l)
            })
        };
        tokio::spawn(metrics::serve_on(http, metrics, source));
        info!(listen = %config.agent.metrics_listen, "serving /metrics");
        Ok(CounterNames(labels))
    }

    /// The names of `config`'s rules and gateways, and how `dp` is attached.
    pub fn update(&self, config: &Config, dp: &Datapath) {
        if let Ok(mut l) = self.0.lock() {
            l.rules = (config.rules.iter().enumerate())
                .map(|(n, r)| (n as u16, metrics::rule_label(n, r.name.as_deref())))
                .collect();
            l.gateways = (config.gateways.iter().enumerate())
                .map(|(i, g)| (i as u16, g.name.clone()))
                .collect();
            l.attachments = dp.attachments();
        }
    }
}

/// Reads the kernel's counters for one scrape.
fn snapshot(reader: &CounterReader, labels: &Labels) -> DatapathSnapshot {
    let mut s = DatapathSnapshot {
        rules: labels
            .rules
            .iter()
            .map(|(slot, n)| (n.clone(), reader.rule(*slot).unwrap_or_default()))
            .collect(),
        gateways: labels
            .gateways
            .iter()
            .map(|(id, n)| (n.clone(), reader.gateway(*id).unwrap_or_default()))
            .collect(),
        gateway_failures: labels
            .gateways
            .iter()
            .map(|(id, n)| (n.clone(), reader.gateway_failures(*id).unwrap_or_default()))
            .collect(),
        gateway_new_flows: labels
            .gateways
            .iter()
            .map(|(id, n)| {
                let c = reader.gateway_new_flows(*id).unwrap_or_default();
                (n.clone(), c.packets)
            })
            .collect(),
        reasons: reader.reasons().unwrap_or_default(),
        flow_entries: reader.flow_count().ok().map(|n| n as u64),
        flow_capacity: reader.flow_capacity().ok(),
        flow_memory: reader.flow_memory().unwrap_or_default(),
        ..DatapathSnapshot::default()
    };
    s.set_attachments(&labels.attachments);
    s
}
