//! The daemon's probe tasks: one [`run_tagged`] task per configured gateway and distinct
//! judgement of it ([`planner::judgements`]: each router judges a gateway with its own timing
//! and SLA; routers with equal settings share a task, and most gateways have one), started
//! with the method and binding its configuration gives, restarted by a reload only when what
//! it probes changes ([`ProbeSignature`]), stopped when the gateway is gone; and the latest
//! verdict of each ([`GatewayView`]), which lives and dies with its task.

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
                // Usable since: kept from Ready to Degraded and back.
                self.available_since = match (t.from.is_usable(), t.to.is_usable()) {
                    (_, false) => None,
                    (false, true) => Some(now),
                    (true, true) => self.available_since.or(Some(now)),
                };
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
    /// `id`'s probing for the judgement `params`.
    fn of(config: &Config, id: GatewayId, params: HealthParams) -> ProbeSignature {
        let g = config.gateway(id);
        let mut binding = LinkBinding::of(config.link(g.link));
        binding.mark = planner::probe_mark(config, id);
        ProbeSignature {
            binding,
            address: g.address,
            check: g.check.clone(),
            monitor: g.monitor,
            params,
        }
    }
}

/// Which task an event comes from: the gateway's name and the task's serial number (unique
/// in the fleet's life).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub gateway: String,
    serial: u64,
}

/// One task of a gateway and what it reported; dropping it stops the task.
struct Probe {
    /// The gateway's id in the configuration last synced (ids move on a reload; names
    /// stay): a report finds its gateway without a scan of the configuration.
    id: GatewayId,
    serial: u64,
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

/// A task's event, recorded ([`Fleet::record`]).
pub struct Recorded<'a> {
    pub id: GatewayId,
    /// The judgement the task makes.
    pub params: &'a HealthParams,
    /// The gateway's own judgement ([`planner::Judge::Gateway`]): its probe figures are the
    /// ones the metrics show.
    pub primary: bool,
    /// The availability changed: the routers judging with `params` must be recomputed.
    pub state_changed: bool,
}

/// Every gateway's tasks, by gateway name (stable across reloads), and their events.
pub struct Fleet {
    /// By gateway name: a task per judgement, the gateway's own first.
    probes: HashMap<String, Vec<Probe>>,
    /// One prober per link binding and method, shared by the link's gateways: one raw ICMP
    /// socket per family and link, not per gateway. (Every echo reply reaches every raw
    /// socket bound to its interface: with a socket per gateway, a thousand gateways on a
    /// link made each reply a thousand wake-ups, and the agent busy with them.)
    monitors: HashMap<(LinkBinding, config::Monitor), Monitor>,
    serials: u64,
    events_tx: mpsc::Sender<(Tag, GatewayEvent)>,
    events: mpsc::Receiver<(Tag, GatewayEvent)>,
}

impl Default for Fleet {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        Fleet {
            probes: HashMap::new(),
            monitors: HashMap::new(),
            serials: 0,
            events_tx,
            events,
        }
    }
}

impl Fleet {
    /// Starts a task (with a fresh view) for every judgement of every gateway of `config`
    /// that has none with the same signature; stops the rest. `link_state` is a new task's
    /// initial link state.
    pub fn sync(&mut self, config: &Config, link_state: impl Fn(&Link) -> LinkState) {
        let mut kept = HashMap::new();
        for (i, g) in config.gateways.iter().enumerate() {
            let id = GatewayId(i as u16);
            let mut old = self.probes.remove(&g.name).unwrap_or_default();
            let mut tasks = Vec::new();
            for params in planner::judgements(config, id) {
                let signature = ProbeSignature::of(config, id, params);
                let probe = match old.iter().position(|p| p.signature == signature) {
                    Some(k) => {
                        let mut p = old.swap_remove(k);
                        p.id = id;
                        p
                    }
                    None => self.spawn(config, id, signature, link_state(config.link(g.link))),
                };
                tasks.push(probe);
            }
            // What is left in `old` is no longer wanted: dropping it stops its task.
            kept.insert(g.name.clone(), tasks);
        }
        self.probes = kept;
        let used: HashSet<(LinkBinding, config::Monitor)> = (self.probes.values().flatten())
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
        self.serials += 1;
        let tag = Tag {
            gateway: g.name.clone(),
            serial: self.serials,
        };
        let task = tokio::spawn(run_tagged(
            signature.params.clone(),
            monitor,
            g.check.clone(),
            link_rx,
            self.events_tx.clone(),
            move |ev| (tag.clone(), ev),
        ));
        Probe {
            id,
            serial: self.serials,
            signature,
            link,
            task,
            view: GatewayView::default(),
        }
    }

    /// How long every gateway of `config` may take to its first verdicts, at most: the
    /// longest `wait × tries + frequency` of their judgements.
    pub fn first_verdicts_within(config: &Config) -> Duration {
        (0..config.gateways.len() as u16)
            .flat_map(|i| planner::judgements(config, GatewayId(i)))
            .map(|p| p.wait * p.tries + p.frequency)
            .max()
            .unwrap_or_default()
    }

    /// The next event of any task, with its tag.
    pub async fn next_event(&mut self) -> Option<(Tag, GatewayEvent)> {
        self.events.recv().await
    }

    /// An event already queued, if any (without waiting).
    pub fn queued_event(&mut self) -> Option<(Tag, GatewayEvent)> {
        self.events.try_recv().ok()
    }

    /// Records `ev` of the task `tag` in its view; `None` if that task is gone (stopped by a
    /// reload while its event was queued).
    pub fn record(&mut self, tag: &Tag, ev: &GatewayEvent) -> Option<Recorded<'_>> {
        let tasks = self.probes.get_mut(&tag.gateway)?;
        let k = tasks.iter().position(|p| p.serial == tag.serial)?;
        let p = &mut tasks[k];
        let state_changed = p.view.record(ev);
        Some(Recorded {
            id: p.id,
            params: &p.signature.params,
            primary: k == 0,
            state_changed,
        })
    }

    /// Tells every task whose link state changed; `link_state` gives a link's.
    pub fn push_link_states(&self, config: &Config, link_state: impl Fn(&Link) -> LinkState) {
        for (name, tasks) in &self.probes {
            for p in tasks {
                let link = config.link(config.gateway(p.id).link);
                let state = link_state(link);
                if *p.link.borrow() != state {
                    if p.serial == tasks[0].serial {
                        info!(gateway = %name, interface = %link.interface, ?state, "link state");
                    }
                    let _ = p.link.send(state);
                }
            }
        }
    }

    /// `gateway`'s own verdict ([`planner::Judge::Gateway`]); `None` if it is not probed
    /// (not configured).
    pub fn view(&self, gateway: &str) -> Option<&GatewayView> {
        self.probes.get(gateway)?.first().map(|p| &p.view)
    }

    /// Gateway `id`'s verdict as `judge` sees it (`config` is the one last synced).
    pub fn judged(
        &self,
        config: &Config,
        judge: planner::Judge,
        id: GatewayId,
    ) -> Option<&GatewayView> {
        let name = &config.gateway(id).name;
        match judge {
            planner::Judge::Gateway => self.view(name),
            j => self.view_of(name, &planner::judge_health(config, j, id)),
        }
    }

    /// `gateway`'s verdict as judged with `params` (a router's: [`planner::judge_health`]).
    fn view_of(&self, gateway: &str, params: &HealthParams) -> Option<&GatewayView> {
        let tasks = self.probes.get(gateway)?;
        let p = tasks.iter().find(|p| p.signature.params == *params)?;
        Some(&p.view)
    }

    /// The gateways with a judgement that has no first verdict yet.
    pub fn unprobed(&self) -> Vec<&str> {
        (self.probes.iter())
            .filter(|(_, tasks)| tasks.iter().any(|p| p.view.reason == Reason::NotYetProbed))
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
        let of = |c: &Config| ProbeSignature::of(c, id, planner::health_params(c, id));
        assert_eq!(of(&a), of(&parse(MINIMAL)));
        assert_ne!(of(&a), of(&b));
    }
}
