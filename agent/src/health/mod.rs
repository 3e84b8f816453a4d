//! Per-gateway health: a pure state machine (no I/O, no clock of its own) turning probe
//! results and link events into Ready / Unavailable verdicts, with the RTT, jitter and loss
//! figures shown to users.
//!
//! [`crate::probe::run_gateway`] drives it on the probe schedule; unit tests drive it by hand.
//! Every method takes the current time and returns `Some(`[`Transition`]`)` when the state or
//! its reason changed, so the caller logs exactly one structured line per change
//! ([`Transition::log`]).
//!
//! # Semantics (DESIGN.md §2)
//!
//! * **Initial state**: Unavailable, reason `not yet probed`. The first verdict comes from the
//!   first probe round: the first answered probe makes the gateway Ready at once (`recover` is
//!   *not* applied: there is no failure to recover from and a healthy link must not be held
//!   back for `recover × frequency` at start-up), or `tries` consecutive failures turn the
//!   reason into `timeout` (a transition Unavailable → Unavailable, so the verdict is logged).
//! * **Failure**: `tries` consecutive failed probe attempts make the gateway Unavailable
//!   (reason `timeout`, or `refused` / `unreachable` / `probe error` after the last failure's
//!   cause). Any answered attempt resets the count.
//! * **Recovery**: `recover` (≥ 1) consecutive answered attempts make an Unavailable gateway
//!   Ready again, provided the SLA (if any) is met.
//! * **Link down** (carrier loss or admin down): Unavailable at once, reason `link down`;
//!   probe results are ignored until the link is up. **Link up**: reason `link up`, still
//!   Unavailable; probing decides (`recover` answers → Ready, `tries` failures → `timeout`).
//! * **No SA** (IPsec links: no SA in one direction): the same as link down, reason `no SA`;
//!   when the pair is back, the same as link up.
//! * **SLA** ([`Sla`], optional): over the last `window` attempts, the mean RTT of the answered
//!   ones, the jitter (mean absolute difference of consecutive answered RTTs) and the loss are
//!   compared with the thresholds (strictly greater = breach). A Ready gateway beyond its SLA
//!   becomes Unavailable with reason `sla` (the detail names the threshold); it becomes Ready
//!   again once the SLA is met and the last `recover` attempts were answered. While the window
//!   is filling up, loss is counted against the full window size, so one early loss cannot
//!   trip a 20 % threshold.
//! * **Alarm level** (`sla_alarm`, the same fields as `sla`, optional): a Ready gateway
//!   beyond it (and within `sla`) is **Degraded**, reason `sla alarm`: still usable, but a
//!   router prefers its healthy gateways (see `router`). It is Ready again once the alarm level
//!   is met; beyond `sla`, or after `tries` failures, it is Unavailable as a Ready one would
//!   be. A gateway recovering from Unavailable comes back Degraded when it is beyond the alarm
//!   level. The alarm level has its own window (`sla_alarm.window`).
//! * **Damping** (`damping`, optional; RFC 2439's route-flap damping): every change from
//!   usable (Ready or Degraded) to Unavailable adds `penalty` to a figure that halves every
//!   `half_life`. Once the figure is above `suppress` the gateway is **damped**: whatever the
//!   probes say it shows Unavailable (reason `damped` while it would otherwise be usable)
//!   until the figure has decayed to `reuse`, at the instant computed from the half-life
//!   ([`GatewayHealth::next_deadline`]; the caller wakes the machine then with
//!   [`GatewayHealth::on_time`]). Probing and the rules above go on underneath, so at that
//!   instant the gateway takes the state they give.
//! * **Outages are forgotten by the SLA**: when a gateway that was Unavailable for `timeout`
//!   or a link event answers again, the window is cleared first. The outage was the `tries`
//!   rule's business; the recovered gateway is judged on what it does afterwards (otherwise a
//!   10-probe window full of timeouts would keep a healthy gateway out for minutes).
//! * **No check targets**: [`GatewayHealth::set_unmonitored`] makes the gateway Ready for
//!   good (reason `not monitored`); only link events move it.
//!
//! # What a reader may change
//!
//! The figures (mean vs. EWMA RTT, jitter definition) live in `window.rs` and may change
//! freely. The transition rules above are the product contract (DESIGN.md §2) and the
//! schedule tests in `probe::schedule` assert exact instants against them: change both
//! together. Reason codes ([`Reason::code`]) are shown to users and matched by scripts.

mod window;

use std::{
    fmt,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use window::Window;

/// Size of the RTT/jitter/loss window when no SLA sets one.
pub const DEFAULT_WINDOW: usize = 10;

/// Probe timing and verdict thresholds of one gateway (from its router object).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthParams {
    /// A probe round starts every `frequency` (default 15 s).
    pub frequency: Duration,
    /// How long a probe waits for its answer; an unanswered one is retried after it (2 s).
    pub wait: Duration,
    /// Consecutive failed attempts that make a gateway Unavailable (3).
    pub tries: u32,
    /// Consecutive answered attempts that make an Unavailable gateway Ready (1).
    pub recover: u32,
    /// Optional quality thresholds: beyond them, Unavailable.
    pub sla: Option<Sla>,
    /// Optional alarm thresholds: beyond them (within `sla`), Degraded.
    pub sla_alarm: Option<Sla>,
    /// Optional route-flap damping.
    pub damping: Option<Damping>,
    /// How many check targets must answer for an attempt to count as answered (the
    /// gateway's `quorum`); `None`: all of them.
    pub quorum: Option<NonZeroUsize>,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams {
            frequency: Duration::from_secs(15),
            wait: Duration::from_secs(2),
            tries: 3,
            recover: 1,
            sla: None,
            sla_alarm: None,
            damping: None,
            quorum: None,
        }
    }
}

impl HealthParams {
    /// How many of `targets` check targets must answer an attempt.
    pub fn needed(&self, targets: usize) -> usize {
        self.quorum.map_or(targets, |q| q.get().min(targets))
    }

    /// Number of attempts the RTT/jitter/loss figures are computed over.
    pub fn window(&self) -> usize {
        self.sla.map_or(DEFAULT_WINDOW, |s| s.window).max(1)
    }
}

/// SLA thresholds; a gateway beyond any of them is Unavailable with reason `sla`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sla {
    /// Maximum mean RTT of the answered attempts in the window.
    pub max_rtt: Option<Duration>,
    /// Maximum jitter (mean absolute difference of consecutive answered RTTs).
    pub max_jitter: Option<Duration>,
    /// Maximum loss in percent (0–100) over the window.
    pub max_loss_pct: Option<f64>,
    /// Number of attempts the figures are computed over (default 10).
    pub window: usize,
}

impl Default for Sla {
    fn default() -> Self {
        Sla {
            max_rtt: None,
            max_jitter: None,
            max_loss_pct: None,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Route-flap damping (RFC 2439) of a router's gateways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damping {
    /// The figure halves every `half_life` (default 15 min).
    pub half_life: Duration,
    /// Added at each change from usable to Unavailable (1000).
    pub penalty: f64,
    /// Above it, the gateway is damped (2000: the third flap in quick succession).
    pub suppress: f64,
    /// Damped until the figure has decayed to it (750).
    pub reuse: f64,
}

impl Default for Damping {
    fn default() -> Damping {
        Damping {
            half_life: Duration::from_secs(15 * 60),
            penalty: 1000.0,
            suppress: 2000.0,
            reuse: 750.0,
        }
    }
}

/// A gateway's damping figure.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Penalty {
    /// The figure at `at`.
    figure: f64,
    at: Instant,
    /// Damped until then (the instant the figure decays to `reuse`).
    until: Option<Instant>,
}

impl Penalty {
    fn at(&self, now: Instant, d: &Damping) -> f64 {
        let halvings = now.saturating_duration_since(self.at).as_secs_f64()
            / d.half_life.as_secs_f64().max(1e-9);
        self.figure * 0.5f64.powf(halvings)
    }
}

/// The Availability column of the monitor (`ready`, `degraded`, `unavailable` in `xwan
/// status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Ready,
    /// Usable, but beyond the alarm level (`sla_alarm`): routers prefer healthy gateways.
    Degraded,
    Unavailable,
}

impl Availability {
    /// Ready or Degraded: the gateway can carry traffic.
    pub fn is_usable(self) -> bool {
        self != Availability::Unavailable
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Ready => "Ready",
            Availability::Degraded => "Degraded",
            Availability::Unavailable => "Unavailable",
        })
    }
}

/// Why a probe attempt failed, as far as health cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// No answer within `wait`.
    Timeout,
    /// TCP monitor: the peer answered with a reset.
    Refused,
    /// The kernel reported the target unreachable (no route, no neighbour).
    Unreachable,
    /// A local error (socket, bind, send).
    Error,
}

impl FailureCause {
    pub fn code(self) -> &'static str {
        match self {
            FailureCause::Timeout => "timeout",
            FailureCause::Refused => "refused",
            FailureCause::Unreachable => "unreachable",
            FailureCause::Error => "probe error",
        }
    }
}

/// Which SLA threshold was exceeded, with the measured figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlaBreach {
    Rtt { rtt: Duration, max: Duration },
    Jitter { jitter: Duration, max: Duration },
    Loss { loss_pct: f64, max_pct: f64 },
}

impl fmt::Display for SlaBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SlaBreach::Rtt { rtt, max } => write!(f, "rtt {} > {}", ms(rtt), ms(max)),
            SlaBreach::Jitter { jitter, max } => {
                write!(f, "jitter {} > {}", ms(jitter), ms(max))
            }
            SlaBreach::Loss { loss_pct, max_pct } => {
                write!(f, "loss {loss_pct:.0}% > {max_pct}%")
            }
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

/// Why a gateway is in its current state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// Initial state: no verdict yet.
    NotYetProbed,
    /// No check targets: always Ready (link events aside).
    NotMonitored,
    /// Ready: probes are answered.
    Answering,
    /// `tries` consecutive attempts failed; the cause of the last one.
    Failed(FailureCause),
    /// Beyond an SLA threshold.
    Sla(SlaBreach),
    /// Beyond an alarm threshold (Degraded).
    SlaAlarm(SlaBreach),
    /// Held Unavailable by damping although the probes would make it usable.
    Damped,
    /// Carrier loss or admin down on the link's interface.
    LinkDown,
    /// An IPsec link without a usable SA pair (deleted, expired, never negotiated).
    NoSa,
    /// The link came back; waiting for probes to decide.
    LinkUp,
}

impl Reason {
    /// Short stable code shown in status and logs (`sla`, `link down`, `timeout`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NotYetProbed => "not yet probed",
            Reason::NotMonitored => "not monitored",
            Reason::Answering => "answering",
            Reason::Failed(c) => c.code(),
            Reason::Sla(_) => "sla",
            Reason::SlaAlarm(_) => "sla alarm",
            Reason::Damped => "damped",
            Reason::LinkDown => "link down",
            Reason::NoSa => "no SA",
            Reason::LinkUp => "link up",
        }
    }

    fn same_kind(&self, other: &Reason) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Sla(b) => write!(f, "sla ({b})"),
            Reason::SlaAlarm(b) => write!(f, "sla alarm ({b})"),
            r => f.write_str(r.code()),
        }
    }
}

/// Figures kept per gateway.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// RTT of the last answered attempt.
    pub last_rtt: Option<Duration>,
    /// Mean RTT of the answered attempts in the window.
    pub rtt: Option<Duration>,
    /// Mean absolute difference of consecutive answered RTTs in the window.
    pub jitter: Option<Duration>,
    /// Lost / recorded attempts in the window (0.0–1.0).
    pub loss: f64,
    /// Attempts since start.
    pub sent: u64,
    /// Failed attempts since start.
    pub lost: u64,
    /// The damping figure now (with `damping` set).
    pub penalty: Option<f64>,
    /// Damped until then.
    pub damped_until: Option<Instant>,
}

/// One change of state or reason, with what a log line needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: Instant,
    pub from: Availability,
    pub to: Availability,
    /// Reason of the state left.
    pub previous: Reason,
    /// Reason of the new state.
    pub reason: Reason,
    /// When the state left had begun.
    pub since: Instant,
    /// Mean RTT over the window.
    pub rtt: Option<Duration>,
    pub jitter: Option<Duration>,
    /// Loss ratio over the window (0.0–1.0).
    pub loss: f64,
}

impl Transition {
    /// Whether the availability changed (otherwise only the reason did).
    pub fn is_state_change(&self) -> bool {
        self.from != self.to
    }

    /// Logs the one structured line of this change.
    pub fn log(&self, router: &str, gateway: &str) {
        let rtt_ms = self.rtt.map(|d| d.as_secs_f64() * 1e3);
        let jitter_ms = self.jitter.map(|d| d.as_secs_f64() * 1e3);
        tracing::info!(
            router,
            gateway,
            from = %self.from,
            to = %self.to,
            reason = %self.reason,
            previous = %self.previous,
            rtt_ms,
            jitter_ms,
            loss_pct = self.loss * 100.0,
            after_s = self.at.saturating_duration_since(self.since).as_secs_f64(),
            "gateway state change"
        );
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) -> {} ({})",
            self.from, self.previous, self.to, self.reason
        )?;
        if let Some(rtt) = self.rtt {
            write!(f, " rtt {}", ms(rtt))?;
        }
        if let Some(j) = self.jitter {
            write!(f, " jitter {}", ms(j))?;
        }
        write!(f, " loss {:.0}%", self.loss * 100.0)
    }
}

/// The health of one gateway. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct GatewayHealth {
    params: HealthParams,
    /// What the rules give, damping aside.
    ruled: Availability,
    ruled_reason: Reason,
    /// What is shown (and reported): `state` and `reason`, unless damped.
    shown: Availability,
    shown_reason: Reason,
    since: Instant,
    penalty: Option<Penalty>,
    /// The latest instant an event brought (the figures are given as of then).
    seen: Instant,
    link_up: bool,
    monitored: bool,
    fail_streak: u32,
    ok_streak: u32,
    window: Window,
    /// The alarm level's window, when `sla_alarm` is set.
    alarm_window: Option<Window>,
    last_rtt: Option<Duration>,
    sent: u64,
    lost: u64,
}

impl GatewayHealth {
    /// A gateway not probed yet: Unavailable, reason `not yet probed`, link assumed up.
    pub fn new(params: HealthParams, now: Instant) -> GatewayHealth {
        let window = Window::new(params.window());
        let alarm_window = params.sla_alarm.map(|a| Window::new(a.window));
        GatewayHealth {
            params,
            ruled: Availability::Unavailable,
            ruled_reason: Reason::NotYetProbed,
            shown: Availability::Unavailable,
            shown_reason: Reason::NotYetProbed,
            since: now,
            penalty: None,
            seen: now,
            link_up: true,
            monitored: true,
            fail_streak: 0,
            ok_streak: 0,
            window,
            alarm_window,
            last_rtt: None,
            sent: 0,
            lost: 0,
        }
    }

    pub fn params(&self) -> &HealthParams {
        &self.params
    }

    pub fn availability(&self) -> Availability {
        self.shown
    }

    pub fn is_ready(&self) -> bool {
        self.shown == Availability::Ready
    }

    /// Ready or Degraded.
    pub fn is_usable(&self) -> bool {
        self.shown.is_usable()
    }

    pub fn reason(&self) -> Reason {
        self.shown_reason
    }

    /// When the current state (or reason) began: "last status change".
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn link_is_up(&self) -> bool {
        self.link_up
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.fail_streak
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.ok_streak
    }

    pub fn stats(&self) -> Stats {
        Stats {
            last_rtt: self.last_rtt,
            rtt: self.window.mean_rtt(),
            jitter: self.window.jitter(),
            loss: self.window.loss(),
            sent: self.sent,
            lost: self.lost,
            penalty: self.params.damping.map(|d| match self.penalty {
                Some(p) => p.at(self.seen, &d),
                None => 0.0,
            }),
            damped_until: self.penalty.and_then(|p| p.until),
        }
    }

    /// The gateway has no check targets: Ready (unless its link is down), for good.
    pub fn set_unmonitored(&mut self, now: Instant) -> Option<Transition> {
        self.monitored = false;
        if self.link_up {
            self.go(now, Availability::Ready, Reason::NotMonitored)
        } else {
            None
        }
    }

    /// One probe attempt was answered after `rtt`.
    pub fn on_success(&mut self, now: Instant, rtt: Duration) -> Option<Transition> {
        self.sent += 1;
        self.last_rtt = Some(rtt);
        self.fail_streak = 0;
        self.ok_streak = self.ok_streak.saturating_add(1);
        if self.ok_streak == 1 && self.in_outage() {
            self.window.clear();
            if let Some(w) = &mut self.alarm_window {
                w.clear();
            }
        }
        self.push(Some(rtt));
        if !self.link_up || !self.monitored {
            return None;
        }
        if self.ruled == Availability::Unavailable {
            let needed = match self.ruled_reason {
                Reason::NotYetProbed => 1,
                _ => self.params.recover.max(1),
            };
            if self.ok_streak < needed {
                return None;
            }
        }
        self.judge_quality(now)
    }

    /// The state the SLA and the alarm level give a gateway that answers (Ready, Degraded or
    /// Unavailable for `sla`), from whatever state it is in.
    fn judge_quality(&mut self, now: Instant) -> Option<Transition> {
        if let Some(b) = self.sla_breach() {
            return self.go(now, Availability::Unavailable, Reason::Sla(b));
        }
        match self.alarm_breach() {
            Some(b) => self.go(now, Availability::Degraded, Reason::SlaAlarm(b)),
            None => self.go(now, Availability::Ready, Reason::Answering),
        }
    }

    fn push(&mut self, sample: Option<Duration>) {
        self.window.push(sample);
        if let Some(w) = &mut self.alarm_window {
            w.push(sample);
        }
    }

    /// One probe attempt failed.
    pub fn on_failure(&mut self, now: Instant, cause: FailureCause) -> Option<Transition> {
        self.sent += 1;
        self.lost += 1;
        self.ok_streak = 0;
        self.fail_streak = self.fail_streak.saturating_add(1);
        self.push(None);
        if !self.link_up || !self.monitored {
            return None;
        }
        if self.fail_streak >= self.params.tries.max(1) {
            return self.go(now, Availability::Unavailable, Reason::Failed(cause));
        }
        if self.ruled.is_usable() {
            // A loss can breach the SLA or the alarm level (or, dropping out of the window,
            // end an alarm).
            return self.judge_quality(now);
        }
        None
    }

    /// Carrier loss or admin down on the link: Unavailable at once.
    pub fn on_link_down(&mut self, now: Instant) -> Option<Transition> {
        self.link_up = false;
        self.fail_streak = 0;
        self.ok_streak = 0;
        self.go(now, Availability::Unavailable, Reason::LinkDown)
    }

    /// The link's IPsec SA pair is gone: Unavailable at once, like [`Self::on_link_down`],
    /// with reason `no SA`. [`Self::on_link_up`] ends it.
    pub fn on_sa_lost(&mut self, now: Instant) -> Option<Transition> {
        self.link_up = false;
        self.fail_streak = 0;
        self.ok_streak = 0;
        self.go(now, Availability::Unavailable, Reason::NoSa)
    }

    /// The link is up again: probing decides (an unmonitored gateway is Ready at once).
    pub fn on_link_up(&mut self, now: Instant) -> Option<Transition> {
        if self.link_up {
            return None;
        }
        self.link_up = true;
        self.fail_streak = 0;
        self.ok_streak = 0;
        if self.monitored {
            self.go(now, Availability::Unavailable, Reason::LinkUp)
        } else {
            self.go(now, Availability::Ready, Reason::NotMonitored)
        }
    }

    /// Unavailable because it did not answer (or its link was down), as opposed to `sla`.
    fn in_outage(&self) -> bool {
        self.ruled == Availability::Unavailable
            && matches!(
                self.ruled_reason,
                Reason::NotYetProbed
                    | Reason::Failed(_)
                    | Reason::LinkDown
                    | Reason::NoSa
                    | Reason::LinkUp
            )
    }

    fn sla_breach(&self) -> Option<SlaBreach> {
        breach(self.params.sla.as_ref()?, &self.window)
    }

    fn alarm_breach(&self) -> Option<SlaBreach> {
        breach(self.params.sla_alarm.as_ref()?, self.alarm_window.as_ref()?)
    }

    /// Moves to (`to`, `reason`) by the rules, counting a flap for damping; a transition
    /// only if what is shown changes state or kind of reason.
    fn go(&mut self, now: Instant, to: Availability, reason: Reason) -> Option<Transition> {
        self.seen = self.seen.max(now);
        if let Some(d) = self.params.damping
            && self.ruled.is_usable()
            && !to.is_usable()
        {
            let figure = self.penalty.map_or(0.0, |p| p.at(now, &d)) + d.penalty;
            let damped = self.penalty.and_then(|p| p.until).is_some() || figure > d.suppress;
            // The instant the figure decays to `reuse`: half-lives of log2(figure / reuse).
            let until = damped.then(|| {
                let halvings = (figure / d.reuse).log2().max(0.0);
                now + d.half_life.mul_f64(halvings)
            });
            self.penalty = Some(Penalty {
                figure,
                at: now,
                until,
            });
        }
        self.ruled = to;
        self.ruled_reason = reason;
        self.show(now)
    }

    /// The instant the machine must be woken ([`Self::on_time`]): the end of damping.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.penalty.and_then(|p| p.until)
    }

    /// Time passed: damping may end (at [`Self::next_deadline`]).
    pub fn on_time(&mut self, now: Instant) -> Option<Transition> {
        self.seen = self.seen.max(now);
        self.show(now)
    }

    /// Shows the rules' state, or Unavailable (`damped`) while damping holds a usable
    /// gateway back.
    fn show(&mut self, now: Instant) -> Option<Transition> {
        if let Some(p) = &mut self.penalty
            && p.until.is_some_and(|u| now >= u)
        {
            p.until = None;
        }
        let damped = self.penalty.is_some_and(|p| p.until.is_some());
        let (to, reason) = match damped && self.ruled.is_usable() {
            true => (Availability::Unavailable, Reason::Damped),
            false => (self.ruled, self.ruled_reason),
        };
        if self.shown == to && self.shown_reason.same_kind(&reason) {
            self.shown_reason = reason;
            return None;
        }
        let stats = self.stats();
        let t = Transition {
            at: now,
            from: self.shown,
            to,
            previous: self.shown_reason,
            reason,
            since: self.since,
            rtt: stats.rtt,
            jitter: stats.jitter,
            loss: stats.loss,
        };
        self.shown = to;
        self.shown_reason = reason;
        self.since = now;
        Some(t)
    }
}

/// The first threshold of `sla` that the figures of `window` exceed (strictly).
fn breach(sla: &Sla, window: &Window) -> Option<SlaBreach> {
    if let (Some(max), Some(rtt)) = (sla.max_rtt, window.mean_rtt())
        && rtt > max
    {
        return Some(SlaBreach::Rtt { rtt, max });
    }
    if let (Some(max), Some(jitter)) = (sla.max_jitter, window.jitter())
        && jitter > max
    {
        return Some(SlaBreach::Jitter { jitter, max });
    }
    if let Some(max_pct) = sla.max_loss_pct {
        let loss_pct = window.loss_of_capacity() * 100.0;
        if loss_pct > max_pct {
            return Some(SlaBreach::Loss { loss_pct, max_pct });
        }
    }
    None
}

#[cfg(test)]
mod tests;
