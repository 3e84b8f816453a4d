//! Rows of `xwan status` built from the daemon's state: each router's monitor table and the
//! return routes. (The IPsec rows come from [`crate::xfrm::Supervisor::rows`], which holds
//! the SAs.)

use super::{GatewayRow, ReturnRouteRow, RouterStatus, unix};
use crate::{
    config::{Config, GatewayId},
    planner::Judge,
    probe::{Fleet, GatewayView},
    router::{GatewayState, GatewayStatus, Role},
};

/// Each router of `config` with its committed monitor rows (`rows`, index = router id) and
/// what the probes reported, as the router judges each gateway.
pub fn routers(config: &Config, rows: &[Vec<GatewayStatus>], probes: &Fleet) -> Vec<RouterStatus> {
    config
        .routers
        .iter()
        .enumerate()
        .map(|(i, r)| RouterStatus {
            name: r.name.clone(),
            gateways: rows
                .get(i)
                .into_iter()
                .flatten()
                .map(|s| {
                    let v = view(config, probes, Judge::Router(i), GatewayId(s.gateway));
                    gateway(config, s, v)
                })
                .collect(),
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
            availability: if ready(r.gateway) {
                "Ready"
            } else {
                "Unavailable"
            }
            .into(),
            reason: (view(config, probes, Judge::Gateway, r.gateway).reason).to_string(),
        })
        .collect()
}

/// What the probes reported of `id` as `judge` sees it (a gateway not probed yet reads as
/// never probed).
fn view(config: &Config, probes: &Fleet, judge: Judge, id: GatewayId) -> GatewayView {
    probes
        .judged(config, judge, id)
        .copied()
        .unwrap_or_default()
}

fn gateway(config: &Config, s: &GatewayStatus, v: GatewayView) -> GatewayRow {
    let g = config.gateway(GatewayId(s.gateway));
    GatewayRow {
        name: g.name.clone(),
        state: match s.state {
            GatewayState::Active => "Active",
            GatewayState::OnStandby => "On standby",
            GatewayState::Unavailable => "Unavailable",
        }
        .into(),
        last_change_unix: unix(v.last_change),
        availability: s.availability.to_string(),
        reason: v.reason.to_string(),
        available_since_unix: unix(v.available_since),
        role: match s.role {
            Role::Main => "Main",
            Role::Backup => "Backup",
        }
        .into(),
        address: g.address.to_string(),
        weight: s.weight,
        distribution: s.share,
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
