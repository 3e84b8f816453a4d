//! The probe schedule of one gateway: [`run_gateway`].
//!
//! # Timing (DESIGN.md §2)
//!
//! * A **round** starts every `frequency`, on a fixed grid from the task's start (start,
//!   start + frequency, …). The first round starts at once.
//! * A round is a series of **attempts**. An attempt probes every check target concurrently,
//!   each with `wait` to answer, and ends when every target has answered or failed. It
//!   succeeds if at least `quorum` targets answered (default: **all**, the stricter,
//!   Stormshield-like reading of several check targets: one silent target is enough to doubt
//!   the path; a quorum keeps one dead public resolver from taking a healthy link down). Its
//!   RTT is the time by which the quorum had answered (with all: the slowest target's); a
//!   failed attempt's cause is the first failure in target order.
//! * An unanswered attempt is **retried `wait` after it started** (a timeout ends exactly then,
//!   so the retry follows it immediately; a fast failure such as a refused connection or an
//!   unreachable error still waits out the `wait`, so the cadence does not depend on how a
//!   probe fails). A round ends at the first successful attempt or after `tries` failed ones;
//!   failed attempts are counted consecutively by health, so `tries` failures in one round
//!   make a Ready gateway Unavailable.
//! * Then the regular cadence resumes at the next grid point. If a round lasted longer than
//!   `frequency` (`tries × wait > frequency`), the grid points it overlapped are skipped.
//! * Hence a gateway dying just after a round is declared Unavailable
//!   `frequency + tries × wait` later at worst (defaults: 15 s + 3 × 2 s = 21 s), and
//!   `tries × wait` after the first unanswered round starts (its last attempt is sent
//!   `(tries − 1) × wait` after the round start and times out `wait` later).
//! * **Link events** ([`LinkState`] on a `watch` channel, fed from rtnetlink by the caller):
//!   *down* aborts the current round, marks the gateway Unavailable at once (`link down`) and
//!   stops probing; *up* starts a round at once and a new grid from that instant. The channel
//!   carries a level: a down/up flap shorter than the task's reaction may be seen as nothing.
//!   If the sender is dropped the last state stays.
//! * **Damping** ([`crate::health`]): the task wakes at the instant damping ends, between
//!   rounds or during one, and reports the transition it brings.
//! * The task ends when the events receiver is dropped.
//!
//! Timing uses tokio's clock, so the tests below run on the paused clock and assert exact
//! instants.
//!
//! # What a reader may change
//!
//! Event contents may grow. The timing rules are the product contract and the tests pin
//! them; change them together with DESIGN.md.

use std::{
    future::{Future, poll_fn},
    net::IpAddr,
    pin::Pin,
    task::Poll,
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep_until, timeout},
};

use super::{ProbeError, Prober};
use crate::health::{Availability, GatewayHealth, HealthParams, Stats, Transition};

/// Carrier / administrative state of the link a gateway is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
    /// Up, but an IPsec link without a usable SA pair: treated as down, reason `no SA`.
    NoSa,
}

/// What the per-gateway task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    /// One attempt finished (the quorum of check targets answered, or not).
    Probed(ProbeReport),
    /// The availability or its reason changed: log it ([`Transition::log`]) and recompute the
    /// routers using this gateway.
    Transition(Transition),
}

/// One finished attempt and the gateway's figures after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// When the attempt finished.
    pub at: std::time::Instant,
    /// 1 for the round's first attempt, up to `tries`.
    pub attempt: u32,
    /// The time by which the quorum answered, or the first failure in target order.
    pub outcome: Result<Duration, ProbeError>,
    /// Check targets that answered this attempt, of `targets`.
    pub answered: usize,
    pub targets: usize,
    pub availability: Availability,
    pub stats: Stats,
}

/// Probes one gateway's check `targets` with `prober` on the schedule above until `events`'
/// receiver is dropped, feeding results and `link` changes into its
/// [`GatewayHealth`] and reporting each attempt and each transition.
///
/// With no targets the gateway is "not monitored": Ready, moved only by link events.
///
/// Events are sent with backpressure: the caller must keep draining `events` (a full
/// channel delays the schedule). Spawn it with `tokio::spawn`; abort the handle or drop the
/// receiver to stop it.
pub async fn run_gateway<P: Prober>(
    params: HealthParams,
    prober: P,
    targets: Vec<IpAddr>,
    link: watch::Receiver<LinkState>,
    events: mpsc::Sender<GatewayEvent>,
) {
    run_tagged(params, prober, targets, link, events, |ev| ev).await;
}

/// [`run_gateway`], each event wrapped by `tag` before it is sent: the tasks of many gateways
/// share one channel, each naming its own events.
pub async fn run_tagged<P, T, F>(
    params: HealthParams,
    prober: P,
    targets: Vec<IpAddr>,
    link: watch::Receiver<LinkState>,
    events: mpsc::Sender<T>,
    tag: F,
) where
    P: Prober,
    T: Send,
    F: Fn(GatewayEvent) -> T + Send + Sync,
{
    let start = Instant::now();
    let health = GatewayHealth::new(params.clone(), start.into_std());
    let mut runner = Runner {
        params,
        prober,
        targets,
        link,
        link_open: true,
        link_state: LinkState::Up,
        events,
        tag,
        health,
    };
    // The task ends with `Closed` whichever way.
    let _ = runner.run(start).await;
}

/// The events receiver is gone.
struct Closed;

enum Wake {
    Elapsed,
    Link(LinkState),
}

struct Runner<P, T, F> {
    params: HealthParams,
    prober: P,
    targets: Vec<IpAddr>,
    link: watch::Receiver<LinkState>,
    link_open: bool,
    link_state: LinkState,
    events: mpsc::Sender<T>,
    tag: F,
    health: GatewayHealth,
}

impl<P, T, F> Runner<P, T, F>
where
    P: Prober,
    T: Send,
    F: Fn(GatewayEvent) -> T + Send + Sync,
{
    async fn run(&mut self, start: Instant) -> Result<(), Closed> {
        let initial = *self.link.borrow_and_update();
        self.set_link(initial).await?;
        if self.targets.is_empty() {
            let t = self.health.set_unmonitored(now());
            self.emit_transition(t).await?;
            loop {
                let s = self.wait(None).await?;
                if let Wake::Link(s) = s {
                    self.set_link(s).await?;
                }
            }
        }
        let mut next_round = start;
        loop {
            if self.link_state != LinkState::Up {
                if let Wake::Link(s) = self.wait(None).await? {
                    self.set_link(s).await?;
                    next_round = Instant::now();
                }
                continue;
            }
            if let Wake::Link(s) = self.wait(Some(next_round)).await? {
                self.set_link(s).await?;
                next_round = Instant::now();
                continue;
            }
            let round_start = next_round;
            if let Some(s) = self.round().await? {
                self.set_link(s).await?;
                next_round = Instant::now();
                continue;
            }
            next_round = round_start + self.params.frequency;
            let now = Instant::now();
            while next_round < now {
                next_round += self.params.frequency;
            }
        }
    }

    /// One round: attempts until one succeeds or `tries` failed. `Some(state)` if a link
    /// change interrupted it.
    async fn round(&mut self) -> Result<Option<LinkState>, Closed> {
        let tries = self.params.tries.max(1);
        let wait = self.params.wait;
        let needed = self.params.needed(self.targets.len());
        for attempt in 1..=tries {
            let attempt_start = Instant::now();
            let (outcome, answered) = {
                let probe = probe_all(&self.prober, &self.targets, wait, needed);
                tokio::pin!(probe);
                loop {
                    let deadline = self.health.next_deadline();
                    tokio::select! {
                        biased;
                        s = link_change(&mut self.link, &mut self.link_open, self.link_state) => {
                            return Ok(Some(s));
                        }
                        _ = until(deadline) => {
                            // Fields, not `self.on_time()`: the probe borrows the prober.
                            if let Some(t) = self.health.on_time(now()) {
                                let ev = (self.tag)(GatewayEvent::Transition(t));
                                self.events.send(ev).await.map_err(|_| Closed)?;
                            }
                        }
                        r = &mut probe => break r,
                    }
                }
            };
            let at = now();
            let t = match &outcome {
                Ok(rtt) => self.health.on_success(at, *rtt),
                Err(e) => self.health.on_failure(at, e.cause()),
            };
            let succeeded = outcome.is_ok();
            let report = ProbeReport {
                at,
                attempt,
                outcome,
                answered,
                targets: self.targets.len(),
                availability: self.health.availability(),
                stats: self.health.stats(),
            };
            self.emit(GatewayEvent::Probed(report)).await?;
            self.emit_transition(t).await?;
            if succeeded || attempt == tries {
                break;
            }
            if let Wake::Link(s) = self.wait(Some(attempt_start + wait)).await? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Sleeps until `deadline` (forever if `None`), waking early for a link change; fails when
    /// the events receiver is dropped.
    async fn wait(&mut self, deadline: Option<Instant>) -> Result<Wake, Closed> {
        let sleep = until(deadline.map(Instant::into_std));
        tokio::pin!(sleep);
        loop {
            let damping = self.health.next_deadline();
            tokio::select! {
                biased;
                _ = self.events.closed() => return Err(Closed),
                s = link_change(&mut self.link, &mut self.link_open, self.link_state) => {
                    return Ok(Wake::Link(s));
                }
                _ = until(damping) => self.on_time().await?,
                _ = &mut sleep => return Ok(Wake::Elapsed),
            }
        }
    }

    /// Damping's deadline passed: the machine may show another state.
    async fn on_time(&mut self) -> Result<(), Closed> {
        let t = self.health.on_time(now());
        self.emit_transition(t).await
    }

    async fn set_link(&mut self, state: LinkState) -> Result<(), Closed> {
        self.link_state = state;
        let at = now();
        let t = match state {
            LinkState::Down => self.health.on_link_down(at),
            LinkState::NoSa => self.health.on_sa_lost(at),
            LinkState::Up => self.health.on_link_up(at),
        };
        self.emit_transition(t).await
    }

    async fn emit_transition(&self, t: Option<Transition>) -> Result<(), Closed> {
        match t {
            Some(t) => self.emit(GatewayEvent::Transition(t)).await,
            None => Ok(()),
        }
    }

    async fn emit(&self, ev: GatewayEvent) -> Result<(), Closed> {
        self.events.send((self.tag)(ev)).await.map_err(|_| Closed)
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Sleeps until `deadline` (forever if `None`), on tokio's clock.
async fn until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the link state differs from `current`; never if the sender is gone.
async fn link_change(
    link: &mut watch::Receiver<LinkState>,
    open: &mut bool,
    current: LinkState,
) -> LinkState {
    while *open {
        if link.changed().await.is_err() {
            *open = false;
            break;
        }
        let s = *link.borrow_and_update();
        if s != current {
            return s;
        }
    }
    std::future::pending().await
}

/// One attempt: all targets concurrently, each bounded by `wait`; answered when `needed` of
/// them answer. Also returns how many answered.
async fn probe_all<P: Prober>(
    prober: &P,
    targets: &[IpAddr],
    wait: Duration,
    needed: usize,
) -> (Result<Duration, ProbeError>, usize) {
    let one = |target: IpAddr| async move {
        timeout(wait, prober.probe(target, wait))
            .await
            .unwrap_or(Err(ProbeError::Timeout))
    };
    if let [target] = targets {
        let r = one(*target).await;
        let answered = usize::from(r.is_ok());
        return (r, answered);
    }
    let mut probes: Vec<Pin<Box<_>>> = targets.iter().map(|&t| Box::pin(one(t))).collect();
    let mut results: Vec<Option<Result<Duration, ProbeError>>> = vec![None; probes.len()];
    poll_fn(|cx| {
        let mut pending = false;
        for (p, r) in probes.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match p.as_mut().poll(cx) {
                    Poll::Ready(v) => *r = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    let results: Vec<Result<Duration, ProbeError>> = results.into_iter().flatten().collect();
    let mut rtts: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    rtts.sort_unstable();
    let answered = rtts.len();
    let outcome = match needed.checked_sub(1).and_then(|i| rtts.get(i)) {
        Some(&rtt) => Ok(rtt),
        None if needed == 0 => Ok(Duration::ZERO),
        None => Err(results
            .into_iter()
            .find_map(|r| r.err())
            .unwrap_or(ProbeError::Timeout)),
    };
    (outcome, answered)
}

#[cfg(test)]
mod tests;
