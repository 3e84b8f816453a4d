//! Rows of `xwan status` built from the daemon's state: each router's monitor table and the
//! return routes. (The IPsec rows come from [`crate::xfrm::Supervisor::rows`], which holds
//! the SAs.)

use std::time::Duration;

use super::{
    Availability, GatewayRow, ReturnRouteRow, RouterStatus,
    changes::{Changes, RouterView},
};
use crate::{
    config::Router,
    config::{Config, GatewayId},
    planner::Judge,
    probe::{Fleet, GatewayView},
    router::{GatewayStatus, Keyword, LoadBalancing, quality},
};

/// The margin another gateway of best-quality router `r` must beat: its `quality_margin`, or
/// 10 % of the best score of its usable gateways if more.
fn quality_margin(r: &Router, rows: &[GatewayStatus], score: &dyn Fn(u16) -> Option<f64>) -> f64 {
    let best = (rows.iter())
        .filter(|s| s.availability.is_usable())
        .filter_map(|s| score(s.gateway))
        .min_by(f64::total_cmp)
        .unwrap_or(0.0);
    quality::margin_ms(r.quality_margin, best)
}

/// Each router of `config` with its committed monitor rows (`rows`, index = router id), when
/// its state and each gateway's state in it last changed (`changes`), what the probes
/// reported, as the router judges each gateway, and the flows each gateway was given over the
/// measured window (`measured`: its span and the counts by gateway id).
pub fn routers(
    config: &Config,
    rows: &[Vec<GatewayStatus>],
    changes: &Changes,
    probes: &Fleet,
    measured: Option<&(Duration, Vec<u64>)>,
) -> Vec<RouterStatus> {
    (config.routers.iter().enumerate())
        .map(|(i, r)| {
            let rows = rows.get(i).map(Vec::as_slice).unwrap_or_default();
            let view = RouterView::of(rows);
            let given = |g: u16| measured.map(|(_, n)| n.get(g as usize).copied().unwrap_or(0));
            let total = measured.map(|_| rows.iter().filter_map(|s| given(s.gateway)).sum());
            let best_quality = r.options.load_balancing == LoadBalancing::BestQuality;
            let score = |g: u16| {
                let v = view_of(config, probes, Judge::Router(i), GatewayId(g));
                quality::score(v.stats.rtt, v.stats.jitter, v.stats.loss)
            };
            RouterStatus {
                name: r.name.clone(),
                state: view.state,
                active_mains: view.active_mains,
                active_backups: view.active_backups,
                on_failure: r.options.on_failure.keyword().to_owned(),
                last_change: changes.router(&r.name),
                window_s: measured.map(|(span, _)| span.as_secs_f64()),
                new_flows: total,
                quality_margin_ms: best_quality.then(|| quality_margin(r, rows, &score)),
                gateways: (rows.iter())
                    .map(|s| {
                        let v = view_of(config, probes, Judge::Router(i), GatewayId(s.gateway));
                        let mut row = gateway(config, s, v);
                        row.last_change = changes.gateway(&r.name, &row.name);
                        row.new_flows = given(s.gateway);
                        row.score_ms = best_quality.then(|| score(s.gateway)).flatten();
                        row.measured_distribution = match (row.new_flows, total) {
                            (Some(n), Some(t)) if t > 0 => Some(n as f64 * 100.0 / t as f64),
                            _ => None,
                        };
                        row
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The return routes of `config`; `ready` says whether a gateway is usable now.
pub fn return_routes(
    config: &Config,
    probes: &Fleet,
    ready: impl Fn(GatewayId) -> bool,
) -> Vec<ReturnRouteRow> {
    config
        .return_routes
        .iter()
        .map(|r| ReturnRouteRow {
            link: config.link(r.link).name.clone(),
            gateway: config.gateway(r.gateway).name.clone(),
            availability: match ready(r.gateway) {
                true => Availability::Ready,
                false => Availability::Unavailable,
            },
            reason: (view_of(config, probes, Judge::Gateway, r.gateway).reason).to_string(),
        })
        .collect()
}

/// What the probes reported of `id` as `judge` sees it (a gateway not probed yet reads as
/// never probed).
fn view_of(config: &Config, probes: &Fleet, judge: Judge, id: GatewayId) -> GatewayView {
    probes
        .judged(config, judge, id)
        .copied()
        .unwrap_or_default()
}

fn gateway(config: &Config, s: &GatewayStatus, v: GatewayView) -> GatewayRow {
    let g = config.gateway(GatewayId(s.gateway));
    GatewayRow {
        name: g.name.clone(),
        state: s.state,
        // The caller's: the state's change in the router.
        last_change: None,
        availability: s.availability,
        reason: v.reason.to_string(),
        available_since: v.available_since,
        role: s.role,
        address: g.address.to_string(),
        weight: s.weight,
        distribution: s.share,
        // The caller's: over its window.
        new_flows: None,
        measured_distribution: None,
        // The caller's: best-quality routers only.
        score_ms: None,
        rtt_ms: v.stats.rtt.map(|d| d.as_secs_f64() * 1e3),
        jitter_ms: v.stats.jitter.map(|d| d.as_secs_f64() * 1e3),
        loss_pct: v.stats.loss * 100.0,
        targets_answering: v.targets.map(|(n, _)| n),
        targets: g.check.len(),
        penalty: v.stats.penalty,
        reused_in_s: (v.stats.damped_until).map(|u| {
            u.saturating_duration_since(std::time::Instant::now())
                .as_secs_f64()
        }),
    }
}
