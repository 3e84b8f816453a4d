//! IPsec metrics: per tunnel link and direction, the state of its SAs; and the kernel's XFRM
//! error counters. Read at scrape time through [`XfrmSource`] (set by the daemon with
//! [`Metrics::set_xfrm_source`]). Labels: configured link names, `in`/`out`, and the fixed
//! counter list of [`crate::xfrm::stats::COUNTERS`], so their number is bounded by the
//! configuration. No key material can appear: [`crate::xfrm::SaInfo`] has none.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::Metrics;
use crate::xfrm::{LinkSas, SaInfo};

/// What one scrape shows.
#[derive(Clone, Debug, Default)]
pub struct XfrmSnapshot {
    /// (link name, its SAs) for every IPsec link of the configuration.
    pub links: Vec<(String, LinkSas)>,
    /// `xfrm_stat` counters (label, value); empty when the kernel has none.
    pub errors: Vec<(&'static str, u64)>,
    /// Unix seconds at the scrape, for ages and lifetimes.
    pub now_unix: u64,
}

/// Produces a snapshot at scrape time.
pub type XfrmSource = Arc<dyn Fn() -> XfrmSnapshot + Send + Sync>;

/// Where the daemon puts its source; empty until it does (no families then).
#[derive(Default)]
pub(super) struct XfrmSlot(Mutex<Option<XfrmSource>>);

impl fmt::Debug for XfrmSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XfrmSlot")
    }
}

#[derive(Debug)]
pub(super) struct XfrmCollector(pub(super) Arc<XfrmSlot>);

impl Metrics {
    /// Sets what scrapes read the IPsec state from.
    pub fn set_xfrm_source(&self, source: XfrmSource) {
        if let Ok(mut s) = self.xfrm.0.lock() {
            *s = Some(source);
        }
    }
}

impl Collector for XfrmCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        // No source (a registry outside the daemon, as in the pinned-exposition tests): no
        // families. `xwan run` always sets one, so there every family is always written.
        let Some(source) = self.0.0.lock().ok().and_then(|s| s.clone()) else {
            return Ok(());
        };
        encode(&source(), &mut enc)
    }
}

fn gauge(m: &mut MetricEncoder, labels: &[(&str, &str)], v: f64) -> fmt::Result {
    m.encode_family(&labels.to_vec())?.encode_gauge(&v)
}

/// (direction label, SAs of that direction), newest first.
fn directions(s: &LinkSas) -> [(&'static str, &[SaInfo]); 2] {
    [("in", &s.inbound[..]), ("out", &s.outbound[..])]
}

type PerSa = fn(&[SaInfo], u64) -> Option<f64>;

pub(super) fn encode(snap: &XfrmSnapshot, enc: &mut DescriptorEncoder) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "xwan_ipsec_link_usable",
        "Whether the IPsec link has an SA in each direction (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for (link, s) in &snap.links {
        gauge(&mut m, &[("link", link)], s.usable() as u8 as f64)?;
    }
    let per_direction: [(&str, &str, PerSa); 7] = [
        (
            "xwan_ipsec_sa_count",
            "SAs installed for the link in this direction (2 during a rekey).",
            |v, _| Some(v.len() as f64),
        ),
        (
            "xwan_ipsec_sa_bytes",
            "Bytes through the link's SAs of this direction (they restart at a rekey).",
            |v, _| Some(v.iter().map(|s| s.bytes).sum::<u64>() as f64),
        ),
        (
            "xwan_ipsec_sa_packets",
            "Packets through the link's SAs of this direction (they restart at a rekey).",
            |v, _| Some(v.iter().map(|s| s.packets).sum::<u64>() as f64),
        ),
        (
            "xwan_ipsec_sa_age_seconds",
            "Age of the newest SA of this direction.",
            |v, now| {
                v.first()
                    .filter(|s| s.add_time > 0)
                    .map(|s| now.saturating_sub(s.add_time) as f64)
            },
        ),
        (
            "xwan_ipsec_sa_lifetime_remaining_seconds",
            "Seconds before the newest SA's hard lifetime ends (absent without one).",
            |v, now| {
                v.first()
                    .and_then(|s| s.lifetime_left(now))
                    .map(|l| l as f64)
            },
        ),
        (
            "xwan_ipsec_sa_replay_errors",
            "Packets the link's SAs of this direction dropped as replayed or out of window.",
            |v, _| Some(v.iter().map(|s| s.replay_errors as u64).sum::<u64>() as f64),
        ),
        (
            "xwan_ipsec_sa_integrity_errors",
            "Packets the link's SAs of this direction dropped for failed integrity checks.",
            |v, _| Some(v.iter().map(|s| s.integrity_errors as u64).sum::<u64>() as f64),
        ),
    ];
    for (name, help, f) in per_direction {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (link, s) in &snap.links {
            for (dir, sas) in directions(s) {
                if let Some(v) = f(sas, snap.now_unix) {
                    gauge(&mut m, &[("link", link), ("direction", dir)], v)?;
                }
            }
        }
    }
    let mut m = enc.encode_descriptor(
        "xwan_xfrm_errors",
        "The kernel's XFRM error counters (/proc/net/xfrm_stat), e.g. in_no_states: ESP for \
         an SA this side does not have.",
        None,
        MetricType::Counter,
    )?;
    for (counter, v) in &snap.errors {
        m.encode_family(&[("counter", *counter)])?
            .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_bounded_labels() {
        let sa = |spi, add_time| SaInfo {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            spi,
            proto: 50,
            reqid: 1,
            mark: Some((101, u32::MAX)),
            if_id: None,
            algorithms: "aes128gcm16".into(),
            keyed: true,
            bytes: 1000,
            packets: 10,
            add_time,
            hard_lifetime: 3600,
            replay_errors: 0,
            integrity_errors: 2,
        };
        let snap = XfrmSnapshot {
            links: vec![
                (
                    "TunWAN1".into(),
                    LinkSas {
                        inbound: vec![sa(2, 1000)],
                        outbound: vec![sa(1, 1000), sa(3, 900)],
                    },
                ),
                ("TunWAN2".into(), LinkSas::default()),
            ],
            errors: vec![("in_no_states", 4)],
            now_unix: 1100,
        };
        let m = Metrics::new();
        m.set_xfrm_source(Arc::new(move || snap.clone()));
        let text = m.encode();
        for want in [
            "xwan_ipsec_link_usable{link=\"TunWAN1\"} 1",
            "xwan_ipsec_link_usable{link=\"TunWAN2\"} 0",
            "xwan_ipsec_sa_count{link=\"TunWAN1\",direction=\"out\"} 2",
            "xwan_ipsec_sa_bytes{link=\"TunWAN1\",direction=\"out\"} 2000",
            "xwan_ipsec_sa_age_seconds{link=\"TunWAN1\",direction=\"in\"} 100",
            "xwan_ipsec_sa_lifetime_remaining_seconds{link=\"TunWAN1\",direction=\"in\"} 3500",
            "xwan_ipsec_sa_integrity_errors{link=\"TunWAN1\",direction=\"in\"} 2",
            "xwan_ipsec_sa_count{link=\"TunWAN2\",direction=\"in\"} 0",
            "xwan_xfrm_errors_total{counter=\"in_no_states\"} 4",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(!text.contains("lifetime_remaining_seconds{link=\"TunWAN2\""));
    }
}
