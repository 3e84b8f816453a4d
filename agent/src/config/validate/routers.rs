//! `[[router]]` checks: main and backup gateways, probing, failover options and the SLA.

use std::num::NonZeroU32;
use std::time::Duration;

use super::super::diag::{Kind, Object};
use super::super::model::*;
use super::super::raw::{self, Item, List, RawMember, Str};
use super::{Names, Validator, at, optional, valid_name};
use crate::health::Damping;

impl Validator<'_, '_, '_> {
    // ---- [[router]] ------------------------------------------------------------------------

    pub(super) fn router(
        &mut self,
        item: &Item<raw::RawRouter>,
        gateway_names: &Names,
        gateways: &[Option<Gateway>],
    ) -> Option<Router> {
        let r = &item.value;
        let at = at(Kind::Router, item, r.name.as_ref());
        let o = &at.object;
        let mut ok = r.name.as_ref().is_some_and(|n| valid_name(n.get_ref()));

        let mut listed: Vec<(usize, String)> = Vec::new();
        let mut members = |v: &mut Self, list: &Option<List<RawMember>>, field: &str| {
            let mut out = Vec::new();
            let mut good = true;
            for (j, m) in list.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
                let (name, gfield, weight): (Str, String, _) = match m.get_ref() {
                    RawMember::Name(n) => (
                        toml::Spanned::new(m.span(), n.clone()),
                        format!("{field}[{j}]"),
                        None,
                    ),
                    RawMember::Table(t) => {
                        let Some(g) = &t.gateway else {
                            v.err(
                                &m.span(),
                                o,
                                Some(&format!("{field}[{j}]")),
                                "no gateway given; write { gateway = \"NAME\", weight = N } \
                                 or just \"NAME\""
                                    .to_owned(),
                            );
                            good = false;
                            continue;
                        };
                        (
                            g.clone(),
                            format!("{field}[{j}].gateway"),
                            t.weight.as_ref(),
                        )
                    }
                };
                let id = v.resolve(Kind::Gateway, gateway_names, &name, o, &gfield);
                let weight = match weight {
                    Some(w) => v.weight(w, o, &format!("{field}[{j}].weight")),
                    None => Some(
                        id.and_then(|i| gateways[i].as_ref())
                            .map_or(NonZeroU32::MIN, |g| g.weight),
                    ),
                };
                if let Some(i) = id {
                    if let Some((_, first)) = listed.iter().find(|(g, _)| *g == i) {
                        v.err(
                            &name.span(),
                            o,
                            Some(&gfield),
                            format!(
                                "gateway '{}' is already listed in {first}; list each gateway \
                                 once per router",
                                name.get_ref()
                            ),
                        );
                        good = false;
                    } else {
                        listed.push((i, format!("{field}[{j}]")));
                    }
                }
                match (id, weight) {
                    (Some(i), Some(w)) => out.push(Member {
                        gateway: GatewayId(i as u16),
                        weight: w,
                    }),
                    _ => good = false,
                }
            }
            good.then_some(out)
        };
        let mains = members(self, &r.gateways, "gateways");
        let backups = members(self, &r.backups, "backups");
        let mains_count = r.gateways.as_ref().map_or(0, |l| l.get_ref().len());
        if mains_count == 0 {
            let span = r.gateways.as_ref().map_or(item.span.clone(), |l| l.span());
            self.err(
                &span,
                o,
                Some("gateways"),
                "a router needs at least one main gateway; add gateways = [\"NAME\"]".to_owned(),
            );
            ok = false;
        }

        let frequency = match &r.frequency {
            None => Some(DEFAULT_FREQUENCY),
            Some(s) => self.positive_duration(s, o, "frequency", "15s"),
        };
        let wait = match &r.wait {
            None => Some(DEFAULT_WAIT),
            Some(s) => self.positive_duration(s, o, "wait", "2s"),
        };
        if let (Some(f), Some(w)) = (frequency, wait)
            && w >= f
        {
            let (span, field) = match (&r.wait, &r.frequency) {
                (Some(s), _) => (s.span(), "wait"),
                (None, Some(s)) => (s.span(), "frequency"),
                (None, None) => (at.span.clone(), "wait"),
            };
            self.err(
                &span,
                o,
                Some(field),
                format!(
                    "wait ({}) must be shorter than frequency ({}): an unanswered probe is \
                     retried after wait, before the next one is due; lower wait or raise \
                     frequency",
                    humantime::format_duration(w),
                    humantime::format_duration(f)
                ),
            );
            ok = false;
        }
        let count =
            |v: &mut Self, x: &Option<toml::Spanned<raw::Int>>, field: &str, d: u32, hint: &str| {
                match x {
                    None => NonZeroU32::new(d),
                    Some(x) => v
                        .int(x, o, field, (1, MAX_TRIES as i64), hint)
                        .and_then(|n| NonZeroU32::new(n as u32)),
                }
            };
        let tries = count(
            self,
            &r.tries,
            "tries",
            DEFAULT_TRIES,
            " (consecutive failed probes that make a gateway Unavailable)",
        );
        let recover = count(
            self,
            &r.recover,
            "recover",
            DEFAULT_RECOVER,
            " (consecutive successful probes that make a gateway Ready again)",
        );
        let backup_threshold = match &r.backup_threshold {
            None => Some(1),
            Some(t) if mains_count > 0 => {
                let n = t.get_ref().0;
                let m = mains_count as i64;
                let range = if m == 1 {
                    "with one main gateway use 1 (the default: backups when the main is down)"
                        .to_owned()
                } else {
                    format!(
                        "use 1 (the default: backups when no main is Ready) to {m} (backups as \
                         soon as one main is down)"
                    )
                };
                let what = if n < 1 {
                    format!("{n} never activates the backups")
                } else {
                    format!("{n} is more than the number of main gateways ({m})")
                };
                if (1..=m).contains(&n) {
                    Some(n as usize)
                } else {
                    self.err(
                        &t.span(),
                        o,
                        Some("backup_threshold"),
                        format!("{what}; {range}"),
                    );
                    None
                }
            }
            Some(_) => None,
        };
        let activate_all_backups = r
            .activate_all_backups
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        let load_balancing = self.keyword(&r.load_balancing, o, "load_balancing");
        let on_failure = self.keyword(&r.on_failure, o, "on_failure");
        let failback = self.keyword(&r.failback, o, "failback");
        let sla = match &r.sla {
            None => Some(None),
            Some(s) => self.sla(s, o, "sla").map(Some),
        };
        let sla_alarm = match &r.sla_alarm {
            None => Some(None),
            Some(s) => self.sla(s, o, "sla_alarm").map(Some),
        };
        let damping = match &r.damping {
            None => Some(None),
            Some(d) => self.damping(d, o).map(Some),
        };
        let quality_margin = match &r.quality_margin {
            None => Some(crate::router::quality::DEFAULT_MARGIN),
            Some(m) => self.duration(m, o, "quality_margin", "10ms"),
        };
        if let (Some(Some(alarm)), Some(Some(down)), Some(raw)) = (&sla_alarm, &sla, &r.sla_alarm) {
            ok &= self.alarm_below_sla(alarm, down, raw.get_ref(), o);
        }
        if !ok {
            return None;
        }
        Some(Router {
            name: r.name.as_ref()?.get_ref().clone(),
            mains: mains?,
            backups: backups?,
            frequency: frequency?,
            wait: wait?,
            tries: tries?,
            recover: recover?,
            options: RouterOptions {
                backup_threshold: backup_threshold?,
                activate_all_backups,
                load_balancing: load_balancing?,
                on_failure: on_failure?,
                failback: failback?,
            },
            sla: sla?,
            sla_alarm: sla_alarm?,
            damping: damping?,
            quality_margin: quality_margin?,
        })
    }

    /// `damping`: each field optional (RFC 2439's usual values), `reuse` below `suppress`.
    fn damping(&mut self, d: &toml::Spanned<raw::RawDamping>, o: &Object) -> Option<Damping> {
        let raw = d.get_ref();
        let default = Damping::default();
        let half_life = match &raw.half_life {
            None => Some(default.half_life),
            Some(h) => self.positive_duration(h, o, "damping.half_life", "15m"),
        };
        let mut figure = |v: &Option<toml::Spanned<raw::Int>>, field: &str, default: f64| match v {
            None => Some(default),
            Some(v) => {
                (self.int(v, o, field, (1, 1_000_000), " (a penalty figure)")).map(|n| n as f64)
            }
        };
        let penalty = figure(&raw.penalty, "damping.penalty", default.penalty);
        let suppress = figure(&raw.suppress, "damping.suppress", default.suppress);
        let reuse = figure(&raw.reuse, "damping.reuse", default.reuse);
        if let (Some(s), Some(r)) = (suppress, reuse)
            && r >= s
        {
            let span = raw.reuse.as_ref().map_or(d.span(), |r| r.span());
            self.err(
                &span,
                o,
                Some("damping.reuse"),
                format!(
                    "{r} is not below suppress {s}: damping holds a gateway out from above \
                     suppress until its figure has decayed to reuse, so reuse must be lower; \
                     e.g. reuse = {}",
                    (s * 3.0 / 8.0).round()
                ),
            );
            return None;
        }
        Some(Damping {
            half_life: half_life?,
            penalty: penalty?,
            suppress: suppress?,
            reuse: reuse?,
        })
    }

    /// Each threshold of `sla_alarm` must be below `sla`'s of the same figure (both set):
    /// otherwise the alarm could never come before the gateway is down.
    fn alarm_below_sla(&mut self, alarm: &Sla, down: &Sla, raw: &raw::RawSla, o: &Object) -> bool {
        // (field, (alarm, down, alarm below down) when both are set, where it is written)
        let time = |a: Option<Duration>, d: Option<Duration>| {
            let fmt = |d| humantime::format_duration(d).to_string();
            a.zip(d).map(|(a, d)| (fmt(a), fmt(d), a < d))
        };
        let span = |x: &Option<raw::Str>| x.as_ref().map(|x| x.span());
        let loss =
            (alarm.loss.zip(down.loss)).map(|(a, d)| (format!("{a}%"), format!("{d}%"), a < d));
        let fields = [
            ("rtt", time(alarm.rtt, down.rtt), span(&raw.rtt)),
            ("jitter", time(alarm.jitter, down.jitter), span(&raw.jitter)),
            ("loss", loss, raw.loss.as_ref().map(|x| x.span())),
        ];
        let mut ok = true;
        for (field, compared, span) in fields {
            if let (Some((a, d, false)), Some(span)) = (compared, span) {
                self.err(
                    &span,
                    o,
                    Some(&format!("sla_alarm.{field}")),
                    format!(
                        "{a} is not below sla.{field} {d}: the alarm level must be stricter \
                         than the down level, or the gateway is down before it is Degraded; \
                         lower sla_alarm.{field} or raise sla.{field}"
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    /// `sla` or `sla_alarm` (`name`): the same fields.
    fn sla(&mut self, s: &toml::Spanned<raw::RawSla>, o: &Object, name: &str) -> Option<Sla> {
        let raw = s.get_ref();
        let mut ok = true;
        let field = |f: &str| format!("{name}.{f}");
        let rtt = raw
            .rtt
            .as_ref()
            .map(|d| self.positive_duration(d, o, &field("rtt"), "150ms"));
        let jitter = raw
            .jitter
            .as_ref()
            .map(|d| self.positive_duration(d, o, &field("jitter"), "30ms"));
        let loss = raw.loss.as_ref().map(|l| {
            let v = l.get_ref().0;
            if (0.0..100.0).contains(&v) {
                Some(v)
            } else {
                self.err(
                    &l.span(),
                    o,
                    Some(&field("loss")),
                    format!(
                        "{v} is out of range; loss is a percentage from 0 up to (not \
                         including) 100, e.g. 5.0"
                    ),
                );
                None
            }
        });
        let window = match &raw.window {
            None => NonZeroU32::new(DEFAULT_SLA_WINDOW),
            Some(w) => self
                .int(
                    w,
                    o,
                    &field("window"),
                    (1, MAX_SLA_WINDOW as i64),
                    " (probes the figures are computed over)",
                )
                .and_then(|n| NonZeroU32::new(n as u32)),
        };
        if raw.rtt.is_none() && raw.jitter.is_none() && raw.loss.is_none() {
            self.err(
                &s.span(),
                o,
                Some(name),
                format!("sets no threshold; give rtt, jitter or loss, or remove {name}"),
            );
            ok = false;
        }
        let (rtt, jitter, loss) = (optional(rtt), optional(jitter), optional(loss));
        if !ok {
            return None;
        }
        Some(Sla {
            rtt: rtt?,
            jitter: jitter?,
            loss: loss?,
            window: window?,
        })
    }
}
