//! The daemon's probe tasks: one [`run_tagged`] task per configured gateway, started with the
//! method and binding its configuration gives, restarted by a reload only when what it probes
//! changes ([`ProbeSignature`]), stopped when the gateway is gone; and the latest verdict of
//! each ([`GatewayView`]), which lives and dies with its task.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::info;

use super::{GatewayEvent, LinkBinding, LinkState, Monitor, run_tagged};
use crate::{
    config::{self, Config, GatewayId, Link},
    health::{Availability, HealthParams, Reason, Stats},
    planner,
};

/// What a gateway's task reported so far, for routers and `xwan status`.
#[derive(Clone, Copy, Debug)]
pub struct GatewayView {
    pub availability: Availability,
    pub reason: Reason,
    pub last_change: Option<SystemTime>,
    pub available_since: Option<SystemTime>,
    pub stats: Stats,
    /// Check targets that answered the last attempt, and how many there are (none before
    /// the first attempt, or without targets).
    pub targets: Option<(usize, usize)>,
}

impl Default for GatewayView {
    fn default() -> Self {
        GatewayView {
            availability: Availability::Unavailable,
            reason: Reason::NotYetProbed,
            last_change: None,
            available_since: None,
            stats: Stats::default(),
            targets: None,
        }
    }
}

impl GatewayView {
    /// Records one event of the gateway's task; true when the availability changed (the
    /// routers using the gateway must be recomputed).
    pub fn record(&mut self, ev: &GatewayEvent) -> bool {
        match ev {
            GatewayEvent::Probed(r) => {
                self.stats = r.stats;
                self.targets = Some((r.answered, r.targets));
                false
            }
            GatewayEvent::Transition(t) => {
                self.reason = t.reason;
                if !t.is_state_change() {
                    return false;
                }
                let now = SystemTime::now();
                self.availability = t.to;
                self.last_change = Some(now);
                self.available_since = (t.to == Availability::Ready).then_some(now);
                true
            }
        }
    }
}

/// A gateway's probing, as far as a reload must restart it when it changes.
#[derive(Clone, PartialEq, Debug)]
struct ProbeSignature {
    /// Device and source address: a reload that changes the link's address must restart
    /// the probes from the new one.
    binding: LinkBinding,
    address: IpAddr,
    check: Vec<IpAddr>,
    monitor: config::Monitor,
    params: HealthParams,
}

impl ProbeSignature {
    fn of(config: &Config, id: GatewayId) -> ProbeSignature {
        let g = config.gateway(id);
        ProbeSignature {
            binding: LinkBinding::of(config.link(g.link)),
            address: g.address,
            check: g.check.clone(),
            monitor: g.monitor,
            params: planner::health_params(config, id),
        }
    }
}

/// One gateway's task and what it reported; dropping it stops the task.
struct Probe {
    /// The gateway's id in the configuration last synced (ids move on a reload; names
    /// stay): a report finds its gateway without a scan of the configuration.
    id: GatewayId,
    signature: ProbeSignature,
    link: watch::Sender<LinkState>,
    task: JoinHandle<()>,
    view: GatewayView,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every gateway's task, by gateway name (stable across reloads), and their events.
pub struct Fleet {
    probes: HashMap<String, Probe>,
    /// One prober per link binding and method, shared by the link's gateways: one raw ICMP
    /// socket per family and link, not per gateway. (Every echo reply reaches every raw
    /// socket bound to its interface: with a socket per gateway, a thousand gateways on a
    /// link made each reply a thousand wake-ups, and the agent busy with them.)
    monitors: HashMap<(LinkBinding, config::Monitor), Monitor>,
    events_tx: mpsc::Sender<(String, GatewayEvent)>,
    events: mpsc::Receiver<(String, GatewayEvent)>,
}

impl Default for Fleet {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        Fleet {
            probes: HashMap::new(),
            monitors: HashMap::new(),
            events_tx,
            events,
        }
    }
}

impl Fleet {
    /// Starts a task (with a fresh view) for every gateway of `config` that has none with the
    /// same signature; stops the rest. `link_state` is a new task's initial link state.
    pub fn sync(&mut self, config: &Config, link_state: impl Fn(&Link) -> LinkState) {
        let mut kept = HashMap::new();
        for (i, g) in config.gateways.iter().enumerate() {
            let id = GatewayId(i as u16);
            let signature = ProbeSignature::of(config, id);
            let probe = match self.probes.remove(&g.name) {
                Some(mut p) if p.signature == signature => {
                    p.id = id;
                    p
                }
                _ => self.spawn(config, id, signature, link_state(config.link(g.link))),
            };
            kept.insert(g.name.clone(), probe);
        }
        // What is left is no longer configured: dropping it stops its task.
        self.probes = kept;
        let used: HashSet<(LinkBinding, config::Monitor)> = self
            .probes
            .values()
            .map(|p| (p.signature.binding.clone(), p.signature.monitor))
            .collect();
        self.monitors.retain(|k, _| used.contains(k));
    }

    fn spawn(
        &mut self,
        config: &Config,
        id: GatewayId,
        signature: ProbeSignature,
        link: LinkState,
    ) -> Probe {
        let g = config.gateway(id);
        let monitor = self
            .monitors
            .entry((signature.binding.clone(), g.monitor))
            .or_insert_with(|| Monitor::new(g.monitor, signature.binding.clone()))
            .clone();
        let (link, link_rx) = watch::channel(link);
        let name = g.name.clone();
        let task = tokio::spawn(run_tagged(
            signature.params.clone(),
            monitor,
            g.check.clone(),
            link_rx,
            self.events_tx.clone(),
            move |ev| (name.clone(), ev),
        ));
        Probe {
            id,
            signature,
            link,
            task,
            view: GatewayView::default(),
        }
    }

    /// How long every gateway of `config` may take to its first verdict, at most: the
    /// longest `wait × tries + frequency`.
    pub fn first_verdicts_within(config: &Config) -> Duration {
        (0..config.gateways.len() as u16)
            .map(|i| planner::health_params(config, GatewayId(i)))
            .map(|p| p.wait * p.tries + p.frequency)
            .max()
            .unwrap_or_default()
    }

    /// The next event of any task, with its gateway's name.
    pub async fn next_event(&mut self) -> Option<(String, GatewayEvent)> {
        self.events.recv().await
    }

    /// An event already queued, if any (without waiting).
    pub fn queued_event(&mut self) -> Option<(String, GatewayEvent)> {
        self.events.try_recv().ok()
    }

    /// Tells every task whose link state changed; `link_state` gives a link's.
    pub fn push_link_states(&self, config: &Config, link_state: impl Fn(&Link) -> LinkState) {
        for (name, p) in &self.probes {
            let link = config.link(config.gateway(p.id).link);
            let state = link_state(link);
            if *p.link.borrow() != state {
                info!(gateway = %name, interface = %link.interface, ?state, "link state");
                let _ = p.link.send(state);
            }
        }
    }

    /// What `gateway`'s task reported; `None` if it is not probed (not configured).
    pub fn view(&self, gateway: &str) -> Option<&GatewayView> {
        self.probes.get(gateway).map(|p| &p.view)
    }

    pub fn view_mut(&mut self, gateway: &str) -> Option<&mut GatewayView> {
        self.probes.get_mut(gateway).map(|p| &mut p.view)
    }

    /// `gateway`'s id in the configuration last synced, and its view.
    pub fn gateway_mut(&mut self, gateway: &str) -> Option<(GatewayId, &mut GatewayView)> {
        self.probes.get_mut(gateway).map(|p| (p.id, &mut p.view))
    }

    /// The gateways without a first verdict.
    pub fn unprobed(&self) -> Vec<&str> {
        self.probes
            .iter()
            .filter(|(_, p)| p.view.reason == Reason::NotYetProbed)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = include_str!("../../../examples/minimal.toml");

    /// A reload restarts a gateway's probes exactly when what they send changes: the link's
    /// address is their source address.
    #[test]
    fn a_new_link_address_restarts_the_probes() {
        let parse = |text: &str| config::parse(text, "xwan.toml").unwrap().0;
        let (a, b) = (
            parse(MINIMAL),
            parse(&MINIMAL.replace("192.0.2.1/24", "192.0.2.7/24")),
        );
        let id = GatewayId(0);
        assert_eq!(
            ProbeSignature::of(&a, id),
            ProbeSignature::of(&parse(MINIMAL), id)
        );
        assert_ne!(ProbeSignature::of(&a, id), ProbeSignature::of(&b, id));
    }
}
