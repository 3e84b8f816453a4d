//! What xwan tells the outside when something changes, for operators' own tooling (mwan3's
//! `mwan3.user`, VyOS's load-balancing hooks): one [`Event`] type, emitted by the daemon
//! through [`Hub::emit`], which never waits, to two kinds of listener:
//!
//! * `xwan events` clients: a broadcast channel the control server streams as JSON lines
//!   ([`Hub::subscribe`]); a client too slow to keep up is told how many it lost;
//! * `[[hook]]` entries: an executable run per event, in order, by a task of its own
//!   ([`hooks`]).
//!
//! The events are the changes an operator acts on, each once: a gateway's availability as
//! its probes judge it ([`What::Gateway`]), a router's set of active gateways as committed
//! ([`What::Router`]), a reload's result ([`What::Reload`]) and an IPsec link losing or
//! regaining its SA pair ([`What::Ipsec`]). The first plan of an agent is the baseline (its
//! state is `xwan status`'s), not an event.

pub mod hooks;

use std::{sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{config::Hook, health::Availability, metrics::Metrics, status::RouterState};

/// One change, as `xwan events` prints it and a hook reads it on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3… since the agent started: a gap tells a listener it missed events.
    pub seq: u64,
    #[serde(with = "time")]
    pub time: SystemTime,
    #[serde(flatten)]
    pub what: What,
}

/// The kinds of event; `[[hook]]`'s `on` names them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// A gateway's availability changed, as judged for `routers` (routers with their own
    /// health settings judge a shared gateway themselves).
    Gateway {
        gateway: String,
        state: Availability,
        previous: Availability,
        reason: String,
        previous_reason: String,
        routers: Vec<String>,
    },
    /// A router's set of active gateways (those taking new connections) changed.
    Router {
        router: String,
        state: RouterState,
        previous: RouterState,
        active: Vec<String>,
        previous_active: Vec<String>,
        /// What happens to its traffic while it has no gateway (`on_failure`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_failure: Option<String>,
    },
    /// A configuration reload (`xwan reload`, SIGHUP) was applied or rejected.
    Reload {
        result: ReloadResult,
        /// The ruleset epoch after an applied reload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u32>,
        /// Why a rejected reload was rejected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An IPsec link lost its SA pair (its gateways become Unavailable, `no SA`) or has one
    /// again.
    Ipsec {
        link: String,
        state: SaState,
        /// What is missing while lost: `inbound`, `outbound` or `both`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    Applied,
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaState {
    Up,
    Lost,
}

/// The kind of an event, as `[[hook]]`'s `on` and the `event` field name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Gateway,
    Router,
    Reload,
    Ipsec,
}

impl crate::router::Keyword for Kind {
    const ALL: &'static [(&'static str, Kind)] = &[
        ("gateway", Kind::Gateway),
        ("router", Kind::Router),
        ("reload", Kind::Reload),
        ("ipsec", Kind::Ipsec),
    ];
}

impl What {
    pub fn kind(&self) -> Kind {
        match self {
            What::Gateway { .. } => Kind::Gateway,
            What::Router { .. } => Kind::Router,
            What::Reload { .. } => Kind::Reload,
            What::Ipsec { .. } => Kind::Ipsec,
        }
    }
}

impl Event {
    /// The event as a hook's environment: each field of its JSON as `XWAN_<FIELD>`
    /// (`XWAN_EVENT=gateway`, `XWAN_STATE=unavailable`, `XWAN_ROUTERS=R1,R2`); lists joined
    /// with commas, absent fields unset. The JSON is the one definition of both.
    pub fn env(&self) -> Vec<(String, String)> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        fields
            .iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    serde_json::Value::Null => return None,
                    serde_json::Value::Array(items) => {
                        items.iter().map(text).collect::<Vec<_>>().join(",")
                    }
                    v => text(v),
                };
                Some((format!("XWAN_{}", k.to_ascii_uppercase()), value))
            })
            .collect()
    }
}

/// Events waiting for an `xwan events` client that has not read them yet; beyond this it is
/// told how many it lost.
pub const LISTENER_QUEUE: usize = 1024;

/// Where the daemon's events go: `xwan events` listeners and the hooks.
pub struct Hub {
    seq: u64,
    listeners: broadcast::Sender<Arc<Event>>,
    hooks: hooks::Hooks,
}

impl Hub {
    pub fn new(hooks: &[Hook], metrics: Arc<Metrics>) -> Hub {
        Hub {
            seq: 0,
            listeners: broadcast::channel(LISTENER_QUEUE).0,
            hooks: hooks::Hooks::new(hooks, metrics),
        }
    }

    /// Numbers `what`, stamps it now and hands it to every listener and hook that wants it.
    /// Never waits: a hook's full queue drops the event for that hook (counted).
    pub fn emit(&mut self, what: What) {
        self.seq += 1;
        let event = Arc::new(Event {
            seq: self.seq,
            time: SystemTime::now(),
            what,
        });
        // No listener is not an error.
        let _ = self.listeners.send(event.clone());
        self.hooks.hand(&event);
    }

    /// A receiver of every event emitted from now on, for an `xwan events` client.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.listeners.subscribe()
    }

    /// For the control server: subscribes its `xwan events` clients.
    pub fn sender(&self) -> broadcast::Sender<Arc<Event>> {
        self.listeners.clone()
    }

    /// The hooks of a reloaded configuration: unchanged ones keep running with their queue.
    pub fn set_hooks(&mut self, hooks: &[Hook]) {
        self.hooks.set(hooks);
    }
}

/// An event's time: RFC 3339, UTC, with milliseconds.
mod time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(|e| D::Error::custom(format!("time {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn an_event_is_one_json_object_with_its_kind_in_event() {
        let e = Event {
            seq: 7,
            time: at(1_796_000_000_123),
            what: What::Gateway {
                gateway: "GW1".into(),
                state: Availability::Unavailable,
                previous: Availability::Ready,
                reason: "timeout".into(),
                previous_reason: "answering".into(),
                routers: vec!["R1".into(), "R2".into()],
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"seq":7,"time":"2026-11-30T00:53:20.123Z","event":"gateway","gateway":"GW1","state":"unavailable","previous":"ready","reason":"timeout","previous_reason":"answering","routers":["R1","R2"]}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }

    #[test]
    fn a_hooks_environment_is_the_json_fields_upper_cased() {
        let e = Event {
            seq: 3,
            time: at(1_000),
            what: What::Router {
                router: "ProductionRouter".into(),
                state: RouterState::OnBackups,
                previous: RouterState::OnMains,
                active: vec!["WAN1".into(), "WAN3".into()],
                previous_active: vec!["WAN2".into()],
                on_failure: None,
            },
        };
        let mut env = e.env();
        env.sort();
        let want: Vec<(String, String)> = [
            ("XWAN_ACTIVE", "WAN1,WAN3"),
            ("XWAN_EVENT", "router"),
            ("XWAN_PREVIOUS", "on_mains"),
            ("XWAN_PREVIOUS_ACTIVE", "WAN2"),
            ("XWAN_ROUTER", "ProductionRouter"),
            ("XWAN_SEQ", "3"),
            ("XWAN_STATE", "on_backups"),
            ("XWAN_TIME", "1970-01-01T00:00:01.000Z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);

        let rejected = Event {
            seq: 4,
            time: at(0),
            what: What::Reload {
                result: ReloadResult::Rejected,
                epoch: None,
                error: Some("xwan.toml:3:1: bad".into()),
            },
        };
        let env = rejected.env();
        assert!(env.contains(&("XWAN_RESULT".into(), "rejected".into())));
        assert!(env.contains(&("XWAN_ERROR".into(), "xwan.toml:3:1: bad".into())));
        assert!(!env.iter().any(|(k, _)| k == "XWAN_EPOCH"), "{env:?}");
    }
}
