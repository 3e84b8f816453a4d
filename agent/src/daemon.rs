//! `xwan run`: orchestration only. The daemon owns the configuration, the kernel facts and
//! the committed plan with its router tables; its loop ([`run`]) takes probe verdicts,
//! rtnetlink events, SA reads and control requests one at a time, and every change goes
//! config → plan ([`planner`]) → maps ([`Datapath`]). Every other job is a module's:
//!
//! * [`Fleet`] (`probe/fleet.rs`): one probe task per gateway, and each one's latest verdict;
//! * [`Supervisor`] (`xfrm/supervisor.rs`): the IPsec links' tunnel interfaces, manual SAs and
//!   SA pairs; a link without a pair gives its gateways the link state `NoSa` (Unavailable,
//!   reason `no SA`), as a link down gives `Down` (`link_state`);
//! * [`status::rows`]: what `xwan status` shows; `scrape.rs`: the counters' names in
//!   `/metrics`; [`kernel`]: kernel requests with a deadline, and reader tasks.
//!
//! The loop never waits for anything outside the agent while it handles a verdict or an
//! event: control clients are served by [`control::server`] (status from the snapshot
//! published here after every change, other requests as messages), and what the kernel is
//! asked after an event (addresses, SAs) is read by reader tasks. Only a start, a reload and
//! `xwan stop` await kernel requests, each within 5 s.
//!
//! A probe verdict only rewrites the affected routers' slot tables (the fast path, timed and
//! logged as `commit_us`); interface, neighbour and configuration changes re-apply the whole
//! plan (a new ruleset epoch). A reload keeps the probe state of every gateway whose probing
//! did not change, so flows whose decision is unchanged stay where they are.
//!
//! # Restart and stop
//!
//! SIGTERM / SIGINT exit without detaching anything: the programs stay attached (pinned links)
//! and keep forwarding with the pinned maps. The next `xwan run` adopts both: its programs
//! replace the running ones in place ([`datapath`]'s attach module), and what it does not
//! attach any more is detached ([`Datapath::detach_unclaimed`]). On such an **adopted start**
//! (pinned maps with a committed ruleset) no gateway has a verdict yet, and committing now
//! would empty every router table; so the first plan waits until every gateway has its first
//! verdict, or at most `max(wait × tries + frequency)` over the gateways, and until then the
//! maps keep the previous agent's ruleset, router tables and ready flags (verdicts, kernel
//! events and reloads meanwhile only update what the first plan will be made of). Router tables
//! are a pure function of the usable gateways, so where the verdicts agree with the previous
//! agent's, that plan's tables are the ones already in the maps. `xwan stop`
//! detaches everything and removes every pin (maps and links) and the qdiscs xwan added, the
//! manual SAs and policies, and the tunnel interfaces xwan created (SIGTERM keeps them all).

mod scrape;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result, anyhow};
use futures::{FutureExt, StreamExt};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};
use xwan_common::plan::RouterTable;

use self::scrape::CounterNames;
use crate::{
    config::{self, Config, Forwarding, GatewayId, Link},
    control::{
        self, Answer, Request,
        server::{self, Call, StatusSnapshot},
    },
    datapath::{self, Datapath},
    events::{self, ReloadResult, SaState, What},
    health::Availability,
    kernel,
    metrics::{GatewaySnapshot, Metrics},
    netlink::{self, Event, Netlink},
    offload,
    planner::{self, Facts, Judge, Planned},
    probe::{Fleet, GatewayEvent, GatewayView, LinkState, Recorded, Tag},
    router::{self, Keyword, LoadBalancing},
    status::{self, Status},
    systemd,
    xfrm::Supervisor,
};

struct Daemon {
    path: PathBuf,
    config: Config,
    dp: Datapath,
    nl: Netlink,
    facts: Facts,
    probes: Fleet,
    /// What the maps hold: the plan last committed (also for `xwan explain`); its `routers`
    /// are the committed router tables, the only copy the agent keeps. Its monitor rows.
    committed: Planned,
    /// When each router's state and each gateway's state in it last changed (`xwan status`).
    changes: status::changes::Changes,
    /// Samples of the flows given to each gateway: the measured distribution.
    measured: status::measured::Measured,
    /// Whether this agent has committed a whole plan yet: until then the maps may hold a
    /// previous agent's ruleset, which `committed` does not describe, so no plan may be
    /// committed as a change to it.
    whole_committed: bool,
    /// Whether systemd was told the agent is ready (`Type=notify`).
    told_ready: bool,
    /// Adopted start: the first plan waits for every gateway's first verdict, until then.
    starting: Option<Instant>,
    metrics: Arc<Metrics>,
    /// Names a scrape gives the data plane's counters, refreshed with every plan.
    counters: CounterNames,
    ipsec: Supervisor,
    /// The `netfilter` mode's policy routing, written after each plan.
    policy: kernel::PolicyWriter,
    /// Resets the conntrack entries of the flows the data plane moved.
    _resetter: kernel::ConntrackResetter,
    /// Offloads the flows conntrack confirmed (`netfilter` mode).
    offloader: offload::Offloader,
    /// Where changes go: `[[hook]]` commands and `xwan events` clients.
    events: events::Hub,
    /// The gateway each best-quality router gives new connections to.
    in_use: router::quality::InUse,
    /// Best-quality routers whose gateways' scores changed since they were last compared.
    quality_due: Vec<usize>,
}

pub async fn run(path: &Path) -> Result<()> {
    let (config, warnings) = config::load(path).map_err(|e| anyhow!("{e}"))?;
    for w in &warnings {
        warn!("{w}");
    }
    Supervisor::check_keys(&config)?;
    if let Some(c) = crate::doctor::neighbour_limits(&config)
        && c.status == crate::doctor::Status::Warning
    {
        warn!("{}", c.detail);
    }
    if let Some(at) = datapath::ensure_bpffs(&config.agent.bpffs).with_context(|| {
        format!(
            "preparing the bpf filesystem at {}",
            config.agent.bpffs.display()
        )
    })? {
        info!(path = %at.display(), "mounted a bpf filesystem");
    }
    let mut dp = Datapath::load_sized(&config.agent.bpffs, config.agent.flow_table_size)?;
    let metrics = Arc::new(Metrics::new());
    let resetter = kernel::ConntrackResetter::spawn(dp.moved_ring()?, metrics.clone())
        .context("starting the conntrack resetter thread")?;
    let offloader = offload::Offloader::spawn(dp.flow_offload()?, metrics.clone())
        .context("starting the flow offload thread")?;
    metrics.record_reload(true);
    let counters = CounterNames::serve(&config, metrics.clone()).await?;
    if !dp.adopted_maps().is_empty() {
        info!(
            maps = dp.adopted_maps().len(),
            "adopted pinned maps of a previous run"
        );
    }
    let nl = Netlink::new()?;
    let mut kernel_events = netlink::subscribe()?;
    let mut addresses = kernel::addresses(nl.clone());
    let ipsec = Supervisor::start(&config, nl.clone(), &metrics)?;
    let policy = kernel::PolicyWriter::spawn(nl.clone());
    let events = events::Hub::new(&config.hooks, metrics.clone());
    let mut d = Daemon {
        events,
        in_use: Default::default(),
        quality_due: Vec::new(),
        policy,
        _resetter: resetter,
        offloader,
        path: path.to_path_buf(),
        config,
        dp,
        nl,
        facts: Facts::default(),
        probes: Fleet::default(),
        committed: Planned::default(),
        changes: Default::default(),
        measured: Default::default(),
        whole_committed: false,
        told_ready: false,
        starting: None,
        metrics: metrics.clone(),
        counters,
        ipsec,
    };
    d.ipsec.setup(&d.config).await?;
    d.refresh_facts().await?;
    d.write_policy().await?;
    d.attach(&Interfaces::default())?;
    d.dp.watch_egress();
    if let Err(e) = d.dp.detach_unclaimed() {
        warn!("detaching what a previous run left attached: {e}");
    }
    d.start_probes();
    if !d.dp.adopted_maps().is_empty() && d.dp.epoch().unwrap_or(0) > 0 {
        let bound = Fleet::first_verdicts_within(&d.config);
        info!(
            bound_ms = bound.as_millis() as u64,
            "adopted a running data plane: its tables stay until every gateway has a verdict"
        );
        d.starting = Some(Instant::now() + bound);
        d.finish_start(false)?;
    } else {
        d.apply("start")?;
    }

    let socket = d.config.agent.control_socket.clone();
    let listener = control::bind(&socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    let (status, status_rx) = watch::channel(StatusSnapshot::new(d.status()));
    let (_server, mut calls) = server::spawn(
        listener,
        socket,
        server::Limits::default(),
        status_rx,
        d.events.sender(),
    );
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    info!(config = %d.path.display(), "xwan running");
    d.notify_ready();
    // When the status was last rebuilt, and whether it has missed a probe report since.
    let mut published = Instant::now();
    let mut stale = false;
    let mut sample = tokio::time::interval(status::measured::SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A probe's report that changes no router may wait up to `STATUS_EVERY` for the
        // status; anything else (a verdict, a request, a kernel event) is in it at once.
        let mut report = false;
        tokio::select! {
            Some((tag, ev)) = d.probes.next_event() => {
                // Every event already queued, then one commit for their verdicts: two
                // verdicts for one router must otherwise be an RCU grace period apart (its
                // inactive table is rewritten only then), and at a thousand gateways' start
                // that paced them to a hundred a second.
                let verdicts = Instant::now();
                let (mut changed, mut next, mut n) = (Vec::new(), Some((tag, ev)), 0);
                while let Some((tag, ev)) = next.take() {
                    if let Some(id) = d.on_gateway_event(&tag, ev)
                        && !changed.contains(&id)
                    {
                        changed.push(id);
                    }
                    n += 1;
                    if n < PROBE_EVENTS_PER_COMMIT {
                        next = d.probes.queued_event();
                    }
                }
                report = changed.is_empty();
                d.commit_verdicts(&changed, verdicts);
                d.compare_quality();
                d.finish_start(false)?;
                d.notify_ready();
            }
            _ = tokio::time::sleep_until((published + STATUS_EVERY).into()), if stale => {}
            _ = sample.tick() => d.sample_new_flows(),
            _ = tokio::time::sleep_until(d.starting.unwrap_or_else(Instant::now).into()),
                if d.starting.is_some() => {
                    d.finish_start(true)?;
                    d.notify_ready();
                }
            Some(ev) = kernel_events.next() => {
                // Every event already queued, then one plan: a burst (a thousand gateways'
                // neighbours resolved at the start) would otherwise plan once per event.
                let (mut next, mut replan, mut n) = (Some(ev), false, 0);
                while let Some(ev) = next.take() {
                    match ev {
                        Event::Addresses => addresses.request(),
                        Event::Resync => {
                            addresses.request();
                            d.resync_kernel().await;
                        }
                        ev => replan |= d.on_kernel_event(ev),
                    }
                    n += 1;
                    if n < KERNEL_EVENTS_PER_PLAN {
                        next = kernel_events.next().now_or_never().flatten();
                    }
                }
                if replan && let Err(e) = d.apply("kernel event") {
                    error!("re-planning after kernel events failed, keeping the previous plan: {e:#}");
                }
            }
            Some(a) = addresses.next() => d.on_addresses(a),
            // SA reads drive the `no SA` verdicts.
            Some(sas) = d.ipsec.next_read(&d.config) => {
                for (link, missing) in d.ipsec.on_sas(&d.config, sas) {
                    let state = if missing.is_some() { SaState::Lost } else { SaState::Up };
                    let missing = missing.map(str::to_owned);
                    d.events.emit(What::Ipsec { link, state, missing });
                }
                d.push_link_states();
            }
            Some(call) = calls.recv() => if let Some(stop) = d.on_call(call).await {
                // Requests arriving meanwhile are told at once that the agent is stopping.
                calls.close();
                // Answered once everything is removed: a script may check at once.
                let stopped = d.stop().await;
                stop.answer_and_wait(match &stopped {
                    Ok(()) => Answer::Stopped,
                    Err(e) => Answer::Error { message: format!("stopping: {e:#}") },
                })
                .await;
                return stopped;
            },
            // Logged (and counted) by `reload` itself.
            _ = hup.recv() => { let _ = d.reload().await; }
            _ = term.recv() => { info!("SIGTERM: exiting, the data plane keeps forwarding"); break; }
            // `systemctl stop` (the unit's KillSignal): what `xwan stop` does.
            _ = usr1.recv() => {
                info!("SIGUSR1: stopping");
                calls.close();
                return d.stop().await;
            }
            _ = int.recv() => { info!("SIGINT: exiting, the data plane keeps forwarding"); break; }
        }
        if report && published.elapsed() < STATUS_EVERY {
            stale = true;
            continue;
        }
        status.send_replace(StatusSnapshot::new(d.status()));
        published = Instant::now();
        stale = false;
    }
    let _ = std::fs::remove_file(&d.config.agent.control_socket);
    Ok(())
}

/// The most probe events taken before their verdicts are committed (a bound on how long the
/// loop serves nothing else: reports keep coming while it drains them).
const PROBE_EVENTS_PER_COMMIT: usize = 4096;

/// The most kernel events taken before one plan is made for them (a bound on how long the
/// loop serves nothing else).
const KERNEL_EVENTS_PER_PLAN: usize = 4096;

/// How stale the status may be after probe reports that changed no router (RTT, loss,
/// counts): each report is an event, and rebuilding the status (every gateway's row) per
/// report cost the agent most of a core at a thousand gateways probed every second; every
/// 100 ms it still took a seventh of the agent's CPU there.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The interfaces a configuration attaches programs to.
#[derive(Default)]
struct Interfaces {
    lan: Vec<String>,
    /// Those of the return routes' links.
    links: Vec<String>,
}

impl Interfaces {
    fn of(config: &Config) -> Interfaces {
        Interfaces {
            lan: config.agent.lan_interfaces.clone(),
            links: (config.return_routes.iter())
                .map(|r| config.link(r.link).interface.clone())
                .collect(),
        }
    }
}

/// A link's state for its gateways: interface up, and for IPsec links an SA pair.
fn link_state(facts: &Facts, ipsec: &Supervisor, link: &Link) -> LinkState {
    let up = facts
        .interfaces
        .get(&link.interface)
        .is_some_and(|i| i.is_up());
    if !up {
        LinkState::Down
    } else if ipsec.lacks_sa_pair(link) {
        LinkState::NoSa
    } else {
        LinkState::Up
    }
}

impl Daemon {
    /// Tells every probe task whose link state changed.
    fn push_link_states(&self) {
        let (facts, ipsec) = (&self.facts, &self.ipsec);
        self.probes
            .push_link_states(&self.config, |l| link_state(facts, ipsec, l));
    }

    /// Gateway `id`'s availability as `judge` sees it (Unavailable if the data plane
    /// cannot use it).
    fn availability(&self, judge: Judge, id: u16) -> Availability {
        match planner::usable(&self.config, &self.facts, GatewayId(id)) {
            true => (self.view(judge, GatewayId(id)))
                .map_or(Availability::Unavailable, |v| v.availability),
            false => Availability::Unavailable,
        }
    }

    /// Whether gateway `id` is usable (Ready or Degraded) as `judge` sees it.
    fn is_ready(&self, judge: Judge, id: u16) -> bool {
        self.availability(judge, id).is_usable()
    }

    /// What `judge`'s probe task reported of gateway `id`.
    fn view(&self, judge: Judge, id: GatewayId) -> Option<&GatewayView> {
        self.probes.judged(&self.config, judge, id)
    }

    /// Kernel notifications were lost (the socket's buffer overflowed): interfaces, addresses
    /// and neighbours read again, and the plan made from them, so that a link that went down
    /// or a neighbour that changed meanwhile is seen.
    async fn resync_kernel(&mut self) {
        warn!(
            "kernel notifications were lost (socket buffer full): reading interfaces, addresses \
             and neighbours again"
        );
        self.metrics.record_kernel_resync();
        match self.refresh_facts().await {
            Ok(()) => {
                self.push_link_states();
                if let Err(e) = self.apply("kernel resync") {
                    error!(
                        "re-planning after lost notifications failed, keeping the previous plan: {e:#}"
                    );
                }
            }
            Err(e) => error!(
                "re-reading the kernel after lost notifications failed: {e:#}; keeping what was known"
            ),
        }
    }

    /// Interfaces, addresses, and the neighbours of the gateways.
    async fn refresh_facts(&mut self) -> Result<()> {
        self.facts = kernel::facts(&self.nl, &self.config).await?;
        Ok(())
    }

    /// Attaches the programs to the interfaces the configuration has and `old` (those of the
    /// previous one: LAN interfaces, return-route links) had not; detaches from those it lost.
    fn attach(&mut self, old: &Interfaces) -> Result<()> {
        let new = Interfaces::of(&self.config);
        for gone in (old.lan.iter().chain(&old.links))
            .filter(|i| !new.lan.contains(i) && !new.links.contains(i))
        {
            self.dp.detach_interface(gone)?;
        }
        for name in new.lan.iter().filter(|i| !old.lan.contains(i)) {
            info!(interface = %name, "attached {}", self.dp.attach_lan(name)?);
        }
        for name in new.links.iter().filter(|i| !old.links.contains(i)) {
            info!(interface = %name, "attached {}", self.dp.attach_link(name)?);
        }
        Ok(())
    }

    /// Starts probing every gateway whose probing is new or changed; stops the rest.
    fn start_probes(&mut self) {
        let (facts, ipsec) = (&self.facts, &self.ipsec);
        self.probes
            .sync(&self.config, |l| link_state(facts, ipsec, l));
    }

    /// A probe's report or verdict, recorded; the gateway if its state changed (its routers'
    /// tables are then due: [`Self::commit_verdicts`]).
    fn on_gateway_event(&mut self, tag: &Tag, ev: GatewayEvent) -> Option<GatewayId> {
        let gw = tag.gateway.as_str();
        let Recorded {
            id,
            params,
            primary,
            state_changed,
        } = self.probes.record(tag, &ev)?;
        match &ev {
            GatewayEvent::Probed(r) => {
                self.metrics.observe_probe_report(gw, r, primary);
                // Its best-quality routers compare their gateways again.
                for (i, router) in self.config.routers.iter().enumerate() {
                    if router.options.load_balancing == LoadBalancing::BestQuality
                        && router.uses(id)
                        && !self.quality_due.contains(&i)
                    {
                        self.quality_due.push(i);
                    }
                }
            }
            GatewayEvent::Transition(t) => {
                // The routers that judge the gateway as this task does.
                let routers: Vec<String> = (self.config.routers.iter())
                    .filter(|r| {
                        r.uses(id) && planner::router_health(&self.config, r, id) == *params
                    })
                    .map(|r| r.name.clone())
                    .collect();
                if primary || !routers.is_empty() {
                    t.log(&routers.join(","), gw);
                }
                for router in &routers {
                    self.metrics.record_transition(router, gw, t);
                }
                if t.is_state_change() && (primary || !routers.is_empty()) {
                    self.events.emit(What::Gateway {
                        gateway: gw.to_owned(),
                        state: t.to,
                        previous: t.from,
                        reason: t.reason.to_string(),
                        previous_reason: t.previous.to_string(),
                        routers,
                    });
                }
            }
        }
        state_changed.then_some(id)
    }

    /// Best-quality routers whose gateways reported: those whose choice of gateway changes
    /// get new tables.
    fn compare_quality(&mut self) {
        let due = std::mem::take(&mut self.quality_due);
        if due.is_empty() || self.starting.is_some() {
            return;
        }
        let ready = |j: Judge, id: u16| self.committed_availability(j, id);
        let inputs = self.quality_inputs(&due, &ready);
        if inputs.iter().any(|(i, c)| self.would_switch(*i, c)) {
            self.recompute(&[], &due);
        }
    }

    /// Each best-quality router of `ids` with its candidates (list order) and their scores.
    fn quality_inputs(
        &self,
        ids: &[usize],
        ready: planner::Verdicts,
    ) -> Vec<(usize, router::quality::Scored)> {
        (ids.iter().copied())
            .filter(|&i| {
                self.config.routers[i].options.load_balancing == LoadBalancing::BestQuality
            })
            .map(|i| {
                let scored = (planner::quality_candidates(&self.config, i, ready).into_iter())
                    .map(|g| {
                        let s = self.view(Judge::Router(i), GatewayId(g)).and_then(|v| {
                            router::quality::score(v.stats.rtt, v.stats.jitter, v.stats.loss)
                        });
                        (g, s)
                    })
                    .collect();
                (i, scored)
            })
            .collect()
    }

    /// Whether router `i` would give new connections to another gateway than now.
    fn would_switch(&self, i: usize, scored: &[(u16, Option<f64>)]) -> bool {
        let current = self.picked(i);
        router::quality::pick(current, scored, self.config.routers[i].quality_margin) != current
    }

    /// Records the gateway each best-quality router now prefers, from its
    /// [`Self::quality_inputs`] (logged when it changes).
    fn pick_quality_from(&mut self, inputs: Vec<(usize, router::quality::Scored)>) {
        for (i, scored) in inputs {
            let r = &self.config.routers[i];
            let candidates: Vec<router::quality::Candidate> = (scored.iter())
                .map(|&(g, s)| (g, self.config.gateways[g as usize].name.as_str(), s))
                .collect();
            if let Some((before, now)) = self.in_use.update(&r.name, &candidates, r.quality_margin)
            {
                let scores: Vec<String> = (candidates.iter())
                    .map(|(_, n, s)| match s {
                        Some(s) => format!("{n}={s:.1}ms"),
                        None => format!("{n}=none"),
                    })
                    .collect();
                info!(
                    router = %r.name,
                    gateway = %now,
                    previous = before.as_deref().unwrap_or("none"),
                    scores = scores.join(","),
                    "best-quality router gives new connections to another gateway"
                );
            }
        }
    }

    /// The gateway best-quality router `i` gives new connections to (`None`: its first
    /// candidate).
    fn picked(&self, i: usize) -> Option<u16> {
        (self.in_use.get(&self.config.routers[i].name))
            .and_then(|n| self.config.gateway_by_name(n))
            .map(|g| g.0)
    }

    /// Gateway `id`'s availability as `judge` sees it, Unavailable if the committed plan does
    /// not have it: the facts may already say a gateway is usable while the plan that adds it
    /// failed (an interface vanished while it was applied, say); a table pointing at a
    /// gateway the maps do not have would lose its flows.
    fn committed_availability(&self, judge: Judge, id: u16) -> Availability {
        match self.committed.plan.gateways.iter().any(|g| g.id == id) {
            true => self.availability(judge, id),
            false => Availability::Unavailable,
        }
    }

    /// Commits the router tables after the verdicts of `changed` (taken from `since`).
    fn commit_verdicts(&mut self, changed: &[GatewayId], since: Instant) {
        if changed.is_empty() {
            return;
        }
        self.recompute(changed, &[]);
        self.metrics.observe_commit(since.elapsed());
        let names: Vec<&str> = (changed.iter())
            .map(|&id| self.config.gateway(id).name.as_str())
            .collect();
        info!(
            gateways = names.join(","),
            commit_us = since.elapsed().as_micros() as u64,
            "router tables committed"
        );
    }

    /// Reads the flows given to each gateway, for the measured distribution.
    fn sample_new_flows(&mut self) {
        match self.dp.new_flow_counts(self.config.gateways.len()) {
            Ok(c) => (self.measured).record(tokio::time::Instant::now(), c),
            Err(e) => warn!("reading the new-flow counters failed: {e}"),
        }
    }

    /// Gateway rows and counter labels for the metrics.
    fn publish(&self) {
        self.publish_routers(&(0..self.config.routers.len()).collect::<Vec<_>>());
        self.counters.update(&self.config, &self.dp);
    }

    /// The metrics of routers `ids`' gateways.
    fn publish_routers(&self, ids: &[usize]) {
        for &i in ids {
            let r = &self.config.routers[i];
            for s in self.committed.rows.get(i).into_iter().flatten() {
                let g = &self.config.gateways[s.gateway as usize];
                let view = self.view(Judge::Router(i), GatewayId(s.gateway));
                let last = view.and_then(|v| v.last_change);
                self.metrics
                    .set_gateway(&r.name, &g.name, GatewaySnapshot::from_status(s, last));
            }
        }
    }

    /// Adopted start: commits the first plan once every gateway has its first verdict, or
    /// when `timed_out`. No-op otherwise.
    fn finish_start(&mut self, timed_out: bool) -> Result<()> {
        if self.starting.is_none() {
            return Ok(());
        }
        let waiting = self.probes.unprobed();
        if !waiting.is_empty() {
            if !timed_out {
                return Ok(());
            }
            warn!(gateways = ?waiting, "no first verdict in time, committing without it");
        }
        self.starting = None;
        self.apply("start").map(drop)
    }

    /// Fast path after the verdicts of gateways `changed`: new tables for the routers they
    /// belong to (no other's can change) and `also`, and the gateways' ready flags, no
    /// ruleset change.
    fn recompute(&mut self, changed: &[GatewayId], also: &[usize]) {
        if self.starting.is_some() {
            return;
        }
        // Only gateways the committed plan has (see `committed_availability`).
        let mut committed = vec![false; self.config.gateways.len()];
        for g in &self.committed.plan.gateways {
            if let Some(c) = committed.get_mut(g.id as usize) {
                *c = true;
            }
        }
        let ready = |j: Judge, id: u16| match committed.get(id as usize) {
            Some(true) => self.availability(j, id),
            _ => Availability::Unavailable,
        };
        let affected: Vec<usize> = (self.config.routers.iter().enumerate())
            .filter(|(i, r)| changed.iter().any(|&g| r.uses(g)) || also.contains(i))
            .map(|(i, _)| i)
            .collect();
        let inputs = self.quality_inputs(&affected, &ready);
        self.pick_quality_from(inputs);
        let ready = |j: Judge, id: u16| match committed.get(id as usize) {
            Some(true) => self.availability(j, id),
            _ => Availability::Unavailable,
        };
        let picks = |i: usize| self.picked(i);
        let computed = planner::router_tables_of(&self.config, &affected, &ready, &picks);
        // Their ready flags, written only where they changed.
        for &GatewayId(id) in changed {
            let r = self.is_ready(Judge::Gateway, id);
            if let Some(g) = (self.committed.plan.gateways.iter_mut()).find(|g| g.id == id)
                && g.ready != r
            {
                match self.dp.set_gateway_ready(id, r) {
                    Ok(_) => g.ready = r,
                    Err(e) => error!(gateway = id, "writing the ready flag failed: {e}"),
                }
            }
        }
        // Only the routers whose table changed are written, in one batch.
        let routers = &self.committed.plan.routers;
        let changed_tables: Vec<(u16, &RouterTable)> = (affected.iter().zip(&computed))
            .filter(|&(&i, (table, _))| routers.get(i) != Some(table))
            .map(|(&i, (table, _))| (i as u16, table))
            .collect();
        if let Err(e) = self.dp.set_routers(&changed_tables) {
            let names: Vec<&str> = changed_tables
                .iter()
                .map(|&(i, _)| self.config.routers[i as usize].name.as_str())
                .collect();
            error!(routers = ?names, "committing the router tables failed, keeping the previous ones: {e}");
            return;
        }
        // The configuration is the committed plan's, so the tables line up with its routers.
        for (&i, (table, rows)) in affected.iter().zip(computed) {
            if let Some(t) = self.committed.plan.routers.get_mut(i) {
                *t = table;
            }
            if let Some(r) = self.committed.rows.get_mut(i) {
                *r = rows;
            }
        }
        let now = SystemTime::now();
        let changes = (self.changes).observe(
            &self.config,
            &self.committed.rows,
            affected.iter().copied(),
            now,
        );
        self.emit_router_changes(changes);
        self.publish_routers(&affected);
    }

    /// Full path: a new plan (ruleset epoch). Nothing changes when it cannot be applied.
    fn apply(&mut self, why: &str) -> Result<u32> {
        if self.starting.is_some() {
            // Adopted start: the first plan waits for the first verdicts (`finish_start`).
            return self.dp.epoch().map_err(Into::into);
        }
        let all: Vec<usize> = (0..self.config.routers.len()).collect();
        let inputs = self.quality_inputs(&all, &|j, id| self.availability(j, id));
        self.pick_quality_from(inputs);
        let names: Vec<&str> = self
            .config
            .routers
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        self.in_use.retain(|r| names.contains(&r));
        let ready = |j: Judge, id: u16| self.availability(j, id);
        let picks = |i: usize| self.picked(i);
        let planned = planner::plan_with(&self.config, &self.facts, &ready, &picks)?;
        // A neighbour or a carrier changes gateways only: those, not a new ruleset (which
        // would re-decide every flow and cost the whole configuration's compilation).
        let update = if self.whole_committed {
            self.dp.update(&self.committed.plan, &planned.plan)?
        } else {
            None
        };
        let epoch = match update {
            Some(u) => {
                let epoch = self.dp.epoch()?;
                info!(
                    epoch,
                    why,
                    gateways = u.gateways,
                    routers = u.routers,
                    "gateways updated"
                );
                epoch
            }
            None => {
                let epoch = self.dp.apply(&planned.plan)?;
                self.whole_committed = true;
                info!(
                    epoch,
                    why,
                    rules = planned.plan.rules.len(),
                    gateways = planned.plan.gateways.len(),
                    "plan applied"
                );
                epoch
            }
        };
        // The fast path of confirmed flows exists in `netfilter` mode only.
        let lans = match self.config.agent.forwarding {
            Forwarding::Netfilter(_) => planned.plan.ifaces.iter().map(|i| i.ifindex).collect(),
            Forwarding::Xdp => Vec::new(),
        };
        self.offloader.set_lans(lans);
        self.committed = planned;
        let changes =
            (self.changes).observe_all(&self.config, &self.committed.rows, SystemTime::now());
        self.emit_router_changes(changes);
        self.policy.set(planner::policy(&self.config, &self.facts));
        self.publish();
        Ok(epoch)
    }

    /// The routers whose state or active set a commit changed, as events.
    fn emit_router_changes(&mut self, changes: Vec<status::changes::RouterChange>) {
        for c in changes {
            let r = &self.config.routers[c.router];
            let on_failure = (c.state == status::RouterState::NoGateway)
                .then(|| r.options.on_failure.keyword().to_owned());
            self.events.emit(What::Router {
                router: r.name.clone(),
                state: c.state,
                previous: c.previous,
                active: c.active,
                previous_active: c.previous_active,
                on_failure,
            });
        }
    }

    /// Writes the policy routing the configuration needs now (removes xwan's when it needs
    /// none: XDP forwarding, or what a previous run in `netfilter` mode left), in order.
    async fn write_policy(&mut self) -> Result<()> {
        let policy = planner::policy(&self.config, &self.facts);
        match &policy {
            Some(p) => {
                kernel::bounded("writing the policy routing", self.nl.sync_policy(p)).await?;
            }
            None => {
                kernel::bounded("removing the policy routing", self.nl.remove_policy()).await?;
            }
        }
        self.policy.written(policy);
        Ok(())
    }

    /// The local addresses as just re-read (after an address event).
    fn on_addresses(&mut self, addrs: Vec<IpAddr>) {
        if self.facts.local_addrs == addrs {
            return;
        }
        self.facts.local_addrs = addrs;
        if let Err(e) = self.apply("addresses changed") {
            error!("re-planning after an address change failed, keeping the previous plan: {e:#}");
        }
    }

    /// A link or neighbour event (address events go to the address reader): the facts
    /// updated; whether the plan must be made again.
    fn on_kernel_event(&mut self, ev: Event) -> bool {
        match &ev {
            Event::Link(i) => {
                let old = self.facts.interfaces.insert(i.name.clone(), i.clone());
                self.push_link_states();
                // Index, MAC or MTU changes reach the maps only through a new plan.
                old.is_none_or(|o| {
                    (o.ifindex, o.mac, o.mtu, o.is_up()) != (i.ifindex, i.mac, i.mtu, i.is_up())
                })
            }
            Event::LinkRemoved { name, .. } => {
                self.facts.interfaces.remove(name);
                self.push_link_states();
                true
            }
            Event::Neighbour { ifindex, ip, mac } => {
                let relevant = self
                    .config
                    .gateways
                    .iter()
                    .any(|g| g.next_hops().any(|a| a == *ip));
                let key = (*ifindex, *ip);
                let changed = match mac {
                    Some(m) => self.facts.neighbours.insert(key, *m) != Some(*m),
                    None => self.facts.neighbours.remove(&key).is_some(),
                };
                relevant && changed
            }
            // Both read by the main loop.
            Event::Addresses | Event::Resync => false,
        }
    }

    /// Tells systemd the agent is ready once its first plan is committed (and again after
    /// each reload), with a status line; nothing without systemd.
    fn notify_ready(&mut self) {
        if self.told_ready || self.starting.is_some() || !self.whole_committed {
            return;
        }
        self.told_ready = true;
        let usable = (0..self.config.gateways.len() as u16)
            .filter(|&g| self.is_ready(Judge::Gateway, g))
            .count();
        let status = format!(
            "steering: {} routers, {} of {} gateways usable, ruleset epoch {}",
            self.config.routers.len(),
            usable,
            self.config.gateways.len(),
            self.dp.epoch().unwrap_or(0)
        );
        if let Err(e) = systemd::notify(&systemd::Notice::Ready { status }) {
            warn!("telling systemd the agent is ready failed: {e}");
        }
    }

    /// Reloads the configuration file; counts the result for the metrics.
    async fn reload(&mut self) -> Result<u32> {
        let _ = systemd::notify(&systemd::Notice::Reloading);
        self.told_ready = false;
        let r = self.try_reload().await;
        self.notify_ready();
        self.metrics.record_reload(r.is_ok());
        match &r {
            Ok(epoch) => {
                info!(config = %self.path.display(), epoch, "configuration reloaded");
                self.metrics.retain_config(&self.config);
                self.events.set_hooks(&self.config.hooks);
            }
            Err(e) => error!(
                config = %self.path.display(),
                "reload rejected, keeping the running configuration: {e:#}"
            ),
        }
        self.events.emit(match &r {
            Ok(epoch) => What::Reload {
                result: ReloadResult::Applied,
                epoch: Some(*epoch),
                error: None,
            },
            Err(e) => What::Reload {
                result: ReloadResult::Rejected,
                epoch: None,
                error: Some(format!("{e:#}")),
            },
        });
        r
    }

    async fn try_reload(&mut self) -> Result<u32> {
        let (mut config, warnings) = config::load(&self.path).map_err(|e| anyhow!("{e}"))?;
        for w in &warnings {
            warn!("{w}");
        }
        for setting in config.agent.keep_start_only(&self.config.agent) {
            warn!(
                setting,
                "changed in the file; the running value stays until the next start (xwan stop, \
                 then xwan run)"
            );
        }
        let old = Interfaces::of(&self.config);
        let previous = std::mem::replace(&mut self.config, config);
        let mut r = self.ipsec.setup(&self.config).await;
        if r.is_ok() {
            r = self.refresh_facts().await;
        }
        if r.is_ok() {
            r = self.write_policy().await;
        }
        let reloaded = r.and_then(|()| {
            self.attach(&old)?;
            self.start_probes();
            self.apply("reload").map(drop)
        });
        if let Err(e) = reloaded {
            // Roll back: the running configuration stays, with its committed plan (untouched
            // by a plan that was not applied), its interfaces, its IPsec links and its probes
            // (the new ones may have started).
            let rejected = std::mem::replace(&mut self.config, previous);
            if let Err(e) = self.ipsec.setup(&self.config).await {
                warn!("reload rollback: restoring the IPsec links: {e:#}");
            }
            self.ipsec.remove_stale(&rejected, &self.config).await;
            self.refresh_facts().await.ok();
            if let Err(e) = self.attach(&Interfaces::of(&rejected)) {
                warn!("reload rollback: restoring the attachments: {e:#}");
            }
            self.start_probes();
            self.apply("reload rollback").ok();
            return Err(e);
        }
        self.ipsec.remove_stale(&previous, &self.config).await;
        self.dp.epoch().map_err(Into::into)
    }

    /// Answers a control request (`status` only if the server asks: it answers from the
    /// published snapshot). `stop` comes back unanswered: the loop stops, removes everything,
    /// then answers it.
    async fn on_call(&mut self, call: Call) -> Option<Call> {
        let answer = match &call.request {
            Request::Status => Answer::Status(self.status()),
            Request::Reload => match self.reload().await {
                Ok(epoch) => Answer::Reloaded { epoch },
                Err(e) => Answer::Error {
                    message: format!("{e:#}"),
                },
            },
            Request::Explain(q) => match self.explain(q) {
                Ok(text) => Answer::Explained { text },
                Err(message) => Answer::Error { message },
            },
            Request::Stop => return Some(call),
            // Streamed by the server itself (never a call).
            Request::Events => Answer::Error {
                message: "events are streamed by the control server".into(),
            },
        };
        call.answer(answer);
        None
    }

    fn explain(&self, q: &crate::explain::Query) -> Result<String, String> {
        let ifindex = |name: &str| self.facts.interfaces.get(name).map(|i| i.ifindex);
        let (plan, rows) = (&self.committed.plan, &self.committed.rows);
        let flow = |k: &xwan_common::FlowKey| self.dp.flow(k).ok().flatten();
        let return_route = |k: &xwan_common::FlowKey| self.dp.return_entry(k).ok().flatten();
        let reason = |r: usize, g: u16| {
            let v = self.view(Judge::Router(r), GatewayId(g));
            let mut text = v.map_or("not yet probed".to_owned(), |v| v.reason.to_string());
            let score = (v.filter(|_| {
                self.config.routers[r].options.load_balancing == LoadBalancing::BestQuality
            }))
            .and_then(|v| router::quality::score(v.stats.rtt, v.stats.jitter, v.stats.loss));
            if let Some(s) = score {
                text += &format!(", score {s:.1} ms");
            }
            text
        };
        let live = crate::explain::Live {
            epoch: self.dp.epoch().unwrap_or(0),
            now_ns: crate::datapath::monotonic_coarse_ns(),
            flow: &flow,
            return_route: &return_route,
            reason: &reason,
        };
        crate::explain::explain(&self.config, plan, rows, &ifindex, &live, q)
    }

    fn status(&self) -> Status {
        Status {
            config: self.path.display().to_string(),
            epoch: self.dp.epoch().unwrap_or(0),
            attachments: self
                .dp
                .attachments()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            failed_redirects: self.dp.egress_watch().map(|w| w.to_string()),
            forwarding: Some(self.config.agent.forwarding.summary().into()),
            routers: status::rows::routers(
                &self.config,
                &self.committed.rows,
                &self.changes,
                &self.probes,
                self.measured.window().as_ref(),
            ),
            ipsec: self.ipsec.rows(&self.config),
            return_routes: status::rows::return_routes(&self.config, &self.probes, |id| {
                self.is_ready(Judge::Gateway, id.0)
            }),
        }
    }

    /// `xwan stop`: detach everything, remove the pins and the socket; remove the manual SAs
    /// and policies and the tunnel interfaces xwan created.
    async fn stop(mut self) -> Result<()> {
        let _ = systemd::notify(&systemd::Notice::Stopping);
        info!("stopping: detaching programs and removing pinned maps and links");
        drop(self.probes);
        // Programs first: detaching from a tunnel interface removed below would fail (and
        // leave the pins behind).
        self.dp.detach_all()?;
        if let Err(e) =
            kernel::bounded("removing the policy routing", self.nl.remove_policy()).await
        {
            warn!("{e:#}");
        }
        self.ipsec.teardown(&self.config).await;
        self.dp.remove_pins()?;
        let _ = std::fs::remove_file(&self.config.agent.control_socket);
        Ok(())
    }
}
