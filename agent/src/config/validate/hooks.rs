//! `[[hook]]` checks: an absolute command, known event kinds, a timeout in range.

use std::path::PathBuf;

use super::super::diag::Kind;
use super::super::model::*;
use super::super::raw::{self, Item};
use super::{Validator, at};
use crate::events;

impl Validator<'_, '_, '_> {
    // ---- [[hook]] --------------------------------------------------------------------------

    pub(super) fn hook(&mut self, item: &Item<raw::RawHook>) -> Option<Hook> {
        let h = &item.value;
        let at = at(Kind::Hook, item, h.name.as_ref());
        let o = &at.object;
        let command = self
            .required(
                &h.command,
                &at,
                &item.span,
                "command",
                "\"/usr/local/sbin/xwan-hook\"",
            )
            .and_then(|c| {
                let path = PathBuf::from(c.get_ref());
                if path.is_absolute() {
                    return Some(path);
                }
                self.err(
                    &c.span(),
                    o,
                    Some("command"),
                    format!(
                        "'{}' is not an absolute path; hooks run with no search path and in /: \
                         write the full path, e.g. \"/usr/local/sbin/{}\"",
                        c.get_ref(),
                        c.get_ref().rsplit('/').next().unwrap_or("xwan-hook")
                    ),
                );
                None
            });
        let args = (h.args.as_ref()).map_or(Vec::new(), |l| {
            l.get_ref().iter().map(|a| a.get_ref().clone()).collect()
        });
        let on = match &h.on {
            None => Some(
                (<events::Kind as Keyword>::ALL.iter())
                    .map(|(_, k)| *k)
                    .collect(),
            ),
            Some(list) => self.nonempty_list(list, o, "on", "event").and_then(|l| {
                let mut seen: Vec<(events::Kind, usize)> = Vec::new();
                let mut ok = true;
                for (j, k) in l.iter().enumerate() {
                    let field = format!("on[{j}]");
                    match self.choice(k, o, &field, <events::Kind as Keyword>::ALL) {
                        Some(kind)
                            if self.once(
                                &seen,
                                &kind,
                                &k.span(),
                                o,
                                &field,
                                &format!("'{}'", k.get_ref()),
                            ) =>
                        {
                            seen.push((kind, j))
                        }
                        _ => ok = false,
                    }
                }
                ok.then(|| seen.into_iter().map(|(k, _)| k).collect())
            }),
        };
        let timeout = match &h.timeout {
            None => Some(DEFAULT_HOOK_TIMEOUT),
            Some(t) => self
                .positive_duration(t, o, "timeout", "10s")
                .and_then(|d| {
                    if d <= MAX_HOOK_TIMEOUT {
                        return Some(d);
                    }
                    self.err(
                    &t.span(),
                    o,
                    Some("timeout"),
                    format!(
                        "{} is too long; a hook's timeout is at most {} (a hook runs its events \
                         one at a time: one stuck run holds up the next)",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_HOOK_TIMEOUT)
                    ),
                );
                    None
                }),
        };
        Some(Hook {
            name: h.name.as_ref()?.get_ref().clone(),
            command: command?,
            args,
            on: on?,
            timeout: timeout?,
        })
    }
}
