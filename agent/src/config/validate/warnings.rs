//! Warnings: suspicious but legal settings, computed on a valid [`Config`].

use std::time::Duration;

use super::super::diag::{Kind, Object};
use super::super::model::*;
use super::super::raw::RawMember;
use super::{Validator, at};

impl Validator<'_, '_, '_> {
    // ---- warnings --------------------------------------------------------------------------

    pub(super) fn warnings(&mut self, c: &Config) {
        let doc = self.doc;
        let agent_object = Object::new(Kind::Agent, None, 0);
        let agent_span = doc.agent.as_ref().map_or(0..0, |a| a.span.clone());
        if c.agent.lan_interfaces.is_empty() {
            let span = doc
                .agent
                .as_ref()
                .and_then(|a| a.value.lan_interfaces.as_ref())
                .map_or(agent_span.clone(), |l| l.span());
            self.warn(
                &span,
                &agent_object,
                Some("lan_interfaces"),
                "no LAN interface: xwan attaches to nothing and steers no traffic; list the \
                 LAN-facing interfaces in lan_interfaces"
                    .to_owned(),
            );
        }
        if let Some(list) = doc
            .agent
            .as_ref()
            .and_then(|a| a.value.lan_interfaces.as_ref())
        {
            for (j, n) in list.get_ref().iter().enumerate() {
                if let Some(l) = c.links.iter().find(|l| &l.interface == n.get_ref()) {
                    self.warn(
                        &n.span(),
                        &agent_object,
                        Some(&format!("lan_interfaces[{j}]")),
                        format!(
                            "interface '{}' is also the interface of link '{}': traffic arriving \
                             over that link is classified like LAN traffic; remove it from \
                             lan_interfaces unless this is intended",
                            n.get_ref(),
                            l.name
                        ),
                    );
                }
            }
        }
        for (k, (item, link)) in doc.links.iter().zip(&c.links).enumerate() {
            if !c.gateways.iter().any(|g| g.link.index() == k) {
                let a = at(Kind::Link, item, item.value.name.as_ref());
                self.warn(
                    &a.span,
                    &a.object,
                    None,
                    format!(
                        "no gateway uses this link; add a [[gateway]] with link = \"{}\", or \
                         remove the link",
                        link.name
                    ),
                );
            }
        }
        for (k, (item, g)) in doc.gateways.iter().zip(&c.gateways).enumerate() {
            let a = at(Kind::Gateway, item, item.value.name.as_ref());
            let id = GatewayId(k as u16);
            if let Some(check) = &item.value.check
                && g.check.is_empty()
            {
                self.warn(
                    &check.span(),
                    &a.object,
                    Some("check"),
                    "empty: the gateway is never probed and always counts as Ready, even when \
                     it is down; list targets to probe, or remove check to probe the gateway \
                     itself"
                        .to_owned(),
                );
            }
            if let Some(raw) = &item.value.address6
                && c.agent.forwarding == Forwarding::Xdp
            {
                self.warn(
                    &raw.span(),
                    &a.object,
                    Some("address6"),
                    format!(
                        "has no effect with forwarding = \"xdp\": XDP sends both families to \
                         the MAC address of {}; remove it or set forwarding = \"netfilter\"",
                        g.address
                    ),
                );
            }
            let used = c.routers.iter().any(|r| r.uses(id))
                || c.return_routes.iter().any(|r| r.gateway == id);
            if !used {
                self.warn(
                    &a.span,
                    &a.object,
                    None,
                    "not used by any router or return_route; add it to a router's gateways or \
                     backups, or remove it"
                        .to_owned(),
                );
            }
        }
        for (k, (item, r)) in doc.routers.iter().zip(&c.routers).enumerate() {
            let raw = &item.value;
            let a = at(Kind::Router, item, raw.name.as_ref());
            let o = &a.object;
            let id = RouterId(k as u16);
            if r.frequency < Duration::from_secs(1) {
                let span = raw.frequency.as_ref().map_or(a.span.clone(), |f| f.span());
                self.warn(
                    &span,
                    o,
                    Some("frequency"),
                    format!(
                        "probing every {} is very frequent: it adds load and turns brief \
                         jitter into failovers; use 1s or more unless sub-second failover is \
                         required",
                        humantime::format_duration(r.frequency)
                    ),
                );
            }
            if let Some(b) = &raw.activate_all_backups
                && *b.get_ref()
                && r.backups.len() < 2
            {
                self.warn(
                    &b.span(),
                    o,
                    Some("activate_all_backups"),
                    format!(
                        "has no effect with {} backup{}; remove it or add backups",
                        r.backups.len(),
                        if r.backups.len() == 1 { "" } else { "s" }
                    ),
                );
            }
            if let Some(t) = &raw.backup_threshold
                && r.backups.is_empty()
            {
                self.warn(
                    &t.span(),
                    o,
                    Some("backup_threshold"),
                    "has no effect: this router has no backups; remove it or add backups"
                        .to_owned(),
                );
            }
            if let Some(m) = &raw.quality_margin
                && r.options.load_balancing != LoadBalancing::BestQuality
            {
                self.warn(
                    &m.span(),
                    o,
                    Some("quality_margin"),
                    "has no effect: only load_balancing = \"best-quality\" compares the \
                     gateways' quality; remove it or set load_balancing = \"best-quality\""
                        .to_owned(),
                );
            }
            if matches!(
                r.options.load_balancing,
                LoadBalancing::None | LoadBalancing::BestQuality
            ) {
                let weighted = [("gateways", &raw.gateways), ("backups", &raw.backups)]
                    .into_iter()
                    .flat_map(|(f, l)| {
                        l.iter()
                            .flat_map(|l| l.get_ref().iter().enumerate())
                            .map(move |(j, m)| (f, j, m))
                    })
                    .find_map(|(f, j, m)| match m.get_ref() {
                        RawMember::Table(t) => t.weight.as_ref().map(|w| (f, j, w.span())),
                        RawMember::Name(_) => None,
                    });
                if let Some((f, j, span)) = weighted {
                    self.warn(
                        &span,
                        o,
                        Some(&format!("{f}[{j}].weight")),
                        match r.options.load_balancing {
                            LoadBalancing::BestQuality => {
                                "ignored: load_balancing = \"best-quality\" sends new \
                                 connections to the gateway of best quality; remove the weights \
                                 or use load_balancing = \"connection\""
                            }
                            _ => {
                                "ignored: load_balancing = \"none\" sends everything to the \
                                 first Ready gateway; remove the weights or use load_balancing = \
                                 \"connection\""
                            }
                        }
                        .to_owned(),
                    );
                }
            }
            let routed = c.rules.iter().any(|x| x.action == RuleAction::Route(id));
            if !routed {
                self.warn(
                    &a.span,
                    o,
                    None,
                    format!(
                        "no rule routes to this router; add a [[rule]] with action = \"route\" \
                         and router = \"{}\", or remove the router",
                        r.name
                    ),
                );
            } else if r.backups.is_empty() && raw.on_failure.is_none() {
                self.warn(
                    &a.span,
                    o,
                    Some("on_failure"),
                    "no backups, and on_failure defaults to \"default-route\": when the main \
                     gateways are down, this router's traffic leaves by the kernel's default \
                     route; add backups, set on_failure = \"drop\" if it must not leave another \
                     way, or write on_failure = \"default-route\" to confirm"
                        .to_owned(),
                );
            }
            if let (Some(sla), Some(rs)) = (&r.sla, &raw.sla) {
                if let (Some(rtt), Some(span)) =
                    (sla.rtt, rs.get_ref().rtt.as_ref().map(|x| x.span()))
                    && rtt >= r.wait
                {
                    self.warn(
                        &span,
                        o,
                        Some("sla.rtt"),
                        format!(
                            "never exceeded: a probe slower than wait ({}) counts as lost; set \
                             sla.rtt below wait or raise wait",
                            humantime::format_duration(r.wait)
                        ),
                    );
                }
                if let (Some(loss), Some(span)) =
                    (sla.loss, rs.get_ref().loss.as_ref().map(|x| x.span()))
                    && loss > 0.0
                    && loss < 100.0 / sla.window.get() as f64
                {
                    let one = 100.0 / sla.window.get() as f64;
                    self.warn(
                        &span,
                        o,
                        Some("sla.loss"),
                        format!(
                            "one lost probe in a window of {} is already {}% loss, above {loss}%: \
                             any single loss breaks the SLA; raise sla.window or sla.loss, or set \
                             sla.loss = 0 if that is intended",
                            sla.window,
                            fmt_num(one)
                        ),
                    );
                }
            }
        }
    }
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
