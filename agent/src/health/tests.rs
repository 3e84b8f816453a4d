//! State-machine tests: each feeds events by hand and checks the verdicts and the transitions.

use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

struct Clock(Instant);

impl Clock {
    fn at(&self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }
}

fn params(tries: u32, recover: u32) -> HealthParams {
    HealthParams {
        tries,
        recover,
        ..HealthParams::default()
    }
}

fn ready(h: &mut GatewayHealth, now: Instant) {
    h.on_success(now, ms(10))
        .expect("first answer makes it Ready");
    assert!(h.is_ready());
}

#[test]
fn starts_unavailable_not_yet_probed() {
    let c = Clock(Instant::now());
    let h = GatewayHealth::new(HealthParams::default(), c.at(0));
    assert_eq!(h.availability(), Availability::Unavailable);
    assert_eq!(h.reason(), Reason::NotYetProbed);
    assert_eq!(h.reason().code(), "not yet probed");
    assert_eq!(h.since(), c.at(0));
    assert_eq!(h.stats(), Stats::default());
}

#[test]
fn first_answer_is_the_first_verdict_even_with_recover() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 5), c.at(0));
    let t = h.on_success(c.at(1), ms(12)).unwrap();
    assert_eq!(t.from, Availability::Unavailable);
    assert_eq!(t.to, Availability::Ready);
    assert_eq!(t.previous, Reason::NotYetProbed);
    assert_eq!(t.reason, Reason::Answering);
    assert_eq!(t.rtt, Some(ms(12)));
    assert_eq!(t.since, c.at(0));
    assert_eq!(h.since(), c.at(1));
}

#[test]
fn first_round_of_failures_is_a_verdict_too() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 1), c.at(0));
    assert_eq!(h.on_failure(c.at(2), FailureCause::Timeout), None);
    assert_eq!(h.on_failure(c.at(4), FailureCause::Timeout), None);
    let t = h.on_failure(c.at(6), FailureCause::Timeout).unwrap();
    assert!(!t.is_state_change());
    assert_eq!(t.previous, Reason::NotYetProbed);
    assert_eq!(t.reason, Reason::Failed(FailureCause::Timeout));
    assert_eq!(t.reason.code(), "timeout");
    assert_eq!(t.loss, 1.0);
    // further failures change nothing
    assert_eq!(h.on_failure(c.at(8), FailureCause::Refused), None);
}

#[test]
fn tries_consecutive_failures_make_ready_unavailable() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 1), c.at(0));
    ready(&mut h, c.at(0));
    assert_eq!(h.on_failure(c.at(15), FailureCause::Timeout), None);
    assert_eq!(h.on_failure(c.at(17), FailureCause::Timeout), None);
    // an answer resets the count
    assert_eq!(h.on_success(c.at(19), ms(10)), None);
    assert_eq!(h.on_failure(c.at(30), FailureCause::Timeout), None);
    assert_eq!(h.on_failure(c.at(32), FailureCause::Timeout), None);
    assert_eq!(h.consecutive_failures(), 2);
    let t = h.on_failure(c.at(34), FailureCause::Timeout).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            Availability::Ready,
            Availability::Unavailable,
            Reason::Failed(FailureCause::Timeout)
        )
    );
    assert_eq!(t.since, c.at(0));
    let s = h.stats();
    assert_eq!((s.sent, s.lost), (7, 5));
    assert!((s.loss - 5.0 / 7.0).abs() < 1e-9);
}

#[test]
fn the_last_failure_names_the_reason() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(1, 1), c.at(0));
    ready(&mut h, c.at(0));
    let t = h.on_failure(c.at(1), FailureCause::Refused).unwrap();
    assert_eq!(t.reason.code(), "refused");
}

#[test]
fn recover_needs_consecutive_answers() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(1, 3), c.at(0));
    ready(&mut h, c.at(0));
    h.on_failure(c.at(1), FailureCause::Timeout).unwrap();
    assert_eq!(h.on_success(c.at(2), ms(10)), None);
    assert_eq!(h.on_success(c.at(3), ms(10)), None);
    // a failure in between starts the count again (no new transition: already timeout)
    assert_eq!(h.on_failure(c.at(4), FailureCause::Timeout), None);
    assert_eq!(h.on_success(c.at(5), ms(10)), None);
    assert_eq!(h.on_success(c.at(6), ms(10)), None);
    let t = h.on_success(c.at(7), ms(10)).unwrap();
    assert_eq!(t.to, Availability::Ready);
    assert_eq!(t.previous, Reason::Failed(FailureCause::Timeout));
    assert_eq!(t.since, c.at(1));
    // the outage was forgotten by the window at the first answer
    assert_eq!(t.loss, 0.0);
}

#[test]
fn link_down_is_immediate_and_link_up_lets_probing_decide() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 2), c.at(0));
    ready(&mut h, c.at(0));
    let t = h.on_link_down(c.at(5)).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            Availability::Ready,
            Availability::Unavailable,
            Reason::LinkDown
        )
    );
    assert_eq!(h.on_link_down(c.at(6)), None, "idempotent");
    // answers while the link is down do not count
    assert_eq!(h.on_success(c.at(7), ms(1)), None);
    assert_eq!(h.on_success(c.at(8), ms(1)), None);
    assert!(!h.is_ready());
    let t = h.on_link_up(c.at(10)).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (Availability::Unavailable, Reason::LinkUp)
    );
    assert_eq!(h.on_link_up(c.at(10)), None, "idempotent");
    assert_eq!(h.on_success(c.at(11), ms(10)), None);
    let t = h.on_success(c.at(12), ms(10)).unwrap();
    assert_eq!(
        (t.from, t.to, t.previous),
        (
            Availability::Unavailable,
            Availability::Ready,
            Reason::LinkUp
        )
    );
}

#[test]
fn link_up_then_silence_is_a_timeout() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(2, 1), c.at(0));
    h.on_link_down(c.at(0)).unwrap();
    h.on_link_up(c.at(1)).unwrap();
    assert_eq!(h.on_failure(c.at(2), FailureCause::Timeout), None);
    let t = h.on_failure(c.at(3), FailureCause::Timeout).unwrap();
    assert_eq!(t.previous, Reason::LinkUp);
    assert_eq!(t.reason, Reason::Failed(FailureCause::Timeout));
}

#[test]
fn unmonitored_gateways_follow_the_link_only() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 3), c.at(0));
    let t = h.set_unmonitored(c.at(0)).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (Availability::Ready, Reason::NotMonitored)
    );
    h.on_link_down(c.at(1)).unwrap();
    let t = h.on_link_up(c.at(2)).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (Availability::Ready, Reason::NotMonitored)
    );
}

#[test]
fn sla_rtt_trips_and_recovers() {
    let c = Clock(Instant::now());
    let sla = Sla {
        max_rtt: Some(ms(100)),
        window: 4,
        ..Sla::default()
    };
    let mut h = GatewayHealth::new(
        HealthParams {
            sla: Some(sla),
            ..params(3, 1)
        },
        c.at(0),
    );
    ready(&mut h, c.at(0)); // 10
    assert_eq!(h.on_success(c.at(1), ms(10)), None);
    assert_eq!(h.on_success(c.at(2), ms(10)), None);
    assert_eq!(h.on_success(c.at(3), ms(300)), None); // mean 82.5
    let t = h.on_success(c.at(4), ms(300)).unwrap(); // 10 10 300 300: mean 155
    assert_eq!(t.to, Availability::Unavailable);
    assert_eq!(t.reason.code(), "sla");
    assert_eq!(
        t.reason,
        Reason::Sla(SlaBreach::Rtt {
            rtt: ms(155),
            max: ms(100)
        })
    );
    assert_eq!(t.reason.to_string(), "sla (rtt 155.0ms > 100.0ms)");
    assert_eq!(h.on_success(c.at(5), ms(10)), None); // 10 300 300 10
    assert_eq!(h.on_success(c.at(6), ms(10)), None); // 300 300 10 10
    let t = h.on_success(c.at(7), ms(10)).unwrap(); // 300 10 10 10: 82.5
    assert_eq!(
        (t.to, t.rtt),
        (Availability::Ready, Some(Duration::from_micros(82_500)))
    );
}

#[test]
fn sla_jitter_trips() {
    let c = Clock(Instant::now());
    let sla = Sla {
        max_jitter: Some(ms(20)),
        window: 5,
        ..Sla::default()
    };
    let mut h = GatewayHealth::new(
        HealthParams {
            sla: Some(sla),
            ..params(3, 1)
        },
        c.at(0),
    );
    ready(&mut h, c.at(0));
    // |10 - 40| = 30 ms of jitter > 20 ms
    assert!(h.on_success(c.at(1), ms(40)).is_some());
    assert_eq!(h.reason().code(), "sla");
    assert!(matches!(
        h.reason(),
        Reason::Sla(SlaBreach::Jitter { jitter, .. }) if jitter == ms(30)
    ));
}

#[test]
fn sla_loss_counts_against_the_full_window() {
    let c = Clock(Instant::now());
    let sla = Sla {
        max_loss_pct: Some(20.0),
        window: 10,
        ..Sla::default()
    };
    let mut h = GatewayHealth::new(
        HealthParams {
            sla: Some(sla),
            ..params(3, 1)
        },
        c.at(0),
    );
    ready(&mut h, c.at(0));
    // one loss out of 2 recorded is 50 % observed, but 10 % of the window: no trip
    assert_eq!(h.on_failure(c.at(1), FailureCause::Timeout), None);
    assert_eq!(h.stats().loss, 0.5);
    for s in 2..6 {
        assert_eq!(h.on_success(c.at(s), ms(10)), None);
    }
    assert_eq!(h.on_failure(c.at(6), FailureCause::Timeout), None); // 2/10
    let t = h.on_failure(c.at(7), FailureCause::Timeout).unwrap(); // 3/10 > 20 %
    assert_eq!(t.reason.code(), "sla");
    assert_eq!(t.reason.to_string(), "sla (loss 30% > 20%)");
    // the third consecutive failure turns sla into timeout
    let t = h.on_failure(c.at(8), FailureCause::Timeout).unwrap();
    assert_eq!((t.previous.code(), t.reason.code()), ("sla", "timeout"));
    // the outage is forgotten at the first answer: Ready again at once (recover 1)
    let t = h.on_success(c.at(9), ms(10)).unwrap();
    assert_eq!(t.to, Availability::Ready);
    assert_eq!(t.loss, 0.0);
}

#[test]
fn sla_losses_must_age_out_before_recovery() {
    let c = Clock(Instant::now());
    let sla = Sla {
        max_loss_pct: Some(20.0),
        window: 5,
        ..Sla::default()
    };
    let mut h = GatewayHealth::new(
        HealthParams {
            sla: Some(sla),
            ..params(5, 1)
        },
        c.at(0),
    );
    ready(&mut h, c.at(0)); // S
    assert_eq!(h.on_failure(c.at(1), FailureCause::Timeout), None); // S F : 20 %
    let t = h.on_failure(c.at(2), FailureCause::Timeout).unwrap(); // S F F : 40 %
    assert_eq!(t.reason.code(), "sla");
    assert_eq!(h.on_success(c.at(3), ms(10)), None); // S F F S
    assert_eq!(h.on_success(c.at(4), ms(10)), None); // S F F S S
    assert_eq!(h.on_success(c.at(5), ms(10)), None); // F F S S S : 40 %
    // F S S S S: 20 % is not > 20 %: Ready
    assert!(h.on_success(c.at(6), ms(10)).is_some());
    assert!(h.is_ready());
    assert_eq!(h.since(), c.at(6));
}

#[test]
fn transitions_display_one_line() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(1, 1), c.at(0));
    let t = h.on_success(c.at(0), ms(12)).unwrap();
    assert_eq!(
        t.to_string(),
        "Unavailable (not yet probed) -> Ready (answering) rtt 12.0ms loss 0%"
    );
    t.log("HTTPRouter", "RemoteTunWAN1");
}

#[test]
fn sa_loss_is_immediate_and_ignores_answers_until_the_pair_is_back() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(params(3, 2), c.at(0));
    ready(&mut h, c.at(0));
    let t = h.on_sa_lost(c.at(5)).unwrap();
    assert_eq!((t.to, t.reason), (Availability::Unavailable, Reason::NoSa));
    assert_eq!(t.reason.to_string(), "no SA");
    assert_eq!(h.on_sa_lost(c.at(6)), None, "idempotent");
    assert_eq!(h.on_success(c.at(7), ms(1)), None);
    assert!(!h.is_ready());
    let t = h.on_link_up(c.at(10)).unwrap();
    assert_eq!((t.previous, t.reason), (Reason::NoSa, Reason::LinkUp));
    h.on_success(c.at(11), ms(1));
    let t = h.on_success(c.at(12), ms(1)).unwrap();
    assert_eq!(
        t.to,
        Availability::Ready,
        "recover = 2 answers after the SA is back"
    );
}

/// Alarm at a mean RTT over 50 ms (window 4), down at 200 ms (window 4).
fn alarm_params() -> HealthParams {
    let sla = |max_ms, window| Sla {
        max_rtt: Some(ms(max_ms)),
        window,
        ..Sla::default()
    };
    HealthParams {
        sla: Some(sla(200, 4)),
        sla_alarm: Some(sla(50, 4)),
        ..params(3, 1)
    }
}

#[test]
fn the_alarm_level_makes_a_ready_gateway_degraded_and_back() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(alarm_params(), c.at(0));
    ready(&mut h, c.at(1));
    // Mean of 10, 130: 70 ms > 50 ms: Degraded, usable.
    let t = h.on_success(c.at(2), ms(130)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Availability::Ready, Availability::Degraded)
    );
    assert_eq!(t.reason.code(), "sla alarm");
    assert_eq!(t.reason.to_string(), "sla alarm (rtt 70.0ms > 50.0ms)");
    assert!(h.is_usable() && !h.is_ready());
    // Still beyond the alarm, within the SLA: no transition.
    assert_eq!(h.on_success(c.at(3), ms(60)), None);
    // Beyond the SLA (mean of 10, 130, 60, 700 = 225 ms): Unavailable.
    let t = h.on_success(c.at(4), ms(700)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Availability::Degraded, Availability::Unavailable)
    );
    assert_eq!(t.reason.code(), "sla");
    // The window ages the slow answers out: within the SLA but beyond the alarm, the
    // gateway comes back Degraded (130, 60, 700, 10 = 225; then 60, 700, 10, 10 = 195).
    assert_eq!(h.on_success(c.at(5), ms(10)), None);
    let t = h.on_success(c.at(6), ms(10)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Availability::Unavailable, Availability::Degraded)
    );
    // 700, 10, 10, 10 = 182.5: still Degraded; then 10 × 4: Ready.
    assert_eq!(h.on_success(c.at(7), ms(10)), None);
    let t = h.on_success(c.at(8), ms(10)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Availability::Degraded, Availability::Ready)
    );
    assert_eq!(t.reason, Reason::Answering);
}

#[test]
fn a_degraded_gateway_still_fails_after_tries() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(alarm_params(), c.at(0));
    ready(&mut h, c.at(1));
    assert!(h.on_success(c.at(2), ms(130)).is_some());
    assert_eq!(h.availability(), Availability::Degraded);
    assert_eq!(h.on_failure(c.at(3), FailureCause::Timeout), None);
    assert_eq!(h.on_failure(c.at(4), FailureCause::Timeout), None);
    let t = h.on_failure(c.at(5), FailureCause::Timeout).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason.code()),
        (Availability::Degraded, Availability::Unavailable, "timeout")
    );
}

#[test]
fn the_alarm_has_its_own_window() {
    let c = Clock(Instant::now());
    let mut p = alarm_params();
    // A one-attempt alarm window: any slow answer alarms, the next fast one clears it.
    p.sla_alarm = p.sla_alarm.map(|a| Sla { window: 1, ..a });
    let mut h = GatewayHealth::new(p, c.at(0));
    ready(&mut h, c.at(1));
    assert_eq!(
        h.on_success(c.at(2), ms(60)).map(|t| t.to),
        Some(Availability::Degraded)
    );
    assert_eq!(
        h.on_success(c.at(3), ms(10)).map(|t| t.to),
        Some(Availability::Ready)
    );
    // The figures shown are the SLA window's (10, 60, 10).
    assert_eq!(h.stats().rtt, Some(ms(80) / 3));
}

/// Half-life 10 s, penalty 1000, suppress 2000, reuse 750.
fn damped_params() -> HealthParams {
    HealthParams {
        damping: Some(Damping {
            half_life: Duration::from_secs(10),
            ..Damping::default()
        }),
        ..params(1, 1)
    }
}

#[test]
fn damping_holds_a_flapping_gateway_out_until_the_figure_decays_to_reuse() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(damped_params(), c.at(0));
    ready(&mut h, c.at(0));
    assert_eq!(h.stats().penalty, Some(0.0));
    // Three flaps at 0, 1, 2 s: 1000, then 1000·2^-0.1 + 1000, then ... > 2000 at the third.
    for (down, up) in [(0, 1), (1, 2)] {
        let t = h.on_link_down(c.at(down)).unwrap();
        assert_eq!(t.reason, Reason::LinkDown);
        assert!(h.on_link_up(c.at(down)).is_some());
        let t = h.on_success(c.at(up), ms(10)).unwrap();
        assert_eq!(t.to, Availability::Ready, "not damped yet at {up} s");
    }
    assert_eq!(h.next_deadline(), None);
    h.on_link_down(c.at(2)).unwrap();
    let figure = 1000.0 * (0.5f64.powf(0.2) + 0.5f64.powf(0.1) + 1.0);
    assert!(
        (h.stats().penalty.unwrap() - figure).abs() < 1e-6,
        "{:?}",
        h.stats()
    );
    // Damped until the figure is 750: 10 s × log2(figure / 750) after the third flap.
    let until = c.at(2) + Duration::from_secs(10).mul_f64((figure / 750.0).log2());
    assert_eq!(h.next_deadline(), Some(until));
    assert_eq!(h.stats().damped_until, Some(until));
    // The link comes back and the probes answer: still Unavailable, reason damped.
    h.on_link_up(c.at(3));
    let t = h.on_success(c.at(3), ms(10)).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (Availability::Unavailable, Reason::Damped)
    );
    assert_eq!(h.reason().code(), "damped");
    assert_eq!(h.on_success(c.at(4), ms(10)), None);
    // Just before the instant: still damped; at it: Ready.
    assert_eq!(h.on_time(until - Duration::from_millis(1)), None);
    let t = h.on_time(until).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Availability::Unavailable, Availability::Ready)
    );
    assert_eq!(t.reason, Reason::Answering);
    assert_eq!(h.next_deadline(), None);
    // The figure goes on decaying: 750 at `until`, 375 one half-life later.
    h.on_time(until + Duration::from_secs(10));
    assert!((h.stats().penalty.unwrap() - 375.0).abs() < 1e-6);
}

#[test]
fn damping_ends_while_the_gateway_is_down_shows_its_real_state() {
    let c = Clock(Instant::now());
    let mut h = GatewayHealth::new(damped_params(), c.at(0));
    ready(&mut h, c.at(0));
    for s in 0..3 {
        h.on_link_down(c.at(s));
        h.on_link_up(c.at(s));
        h.on_success(c.at(s), ms(10));
    }
    h.on_link_down(c.at(3));
    let until = h.next_deadline().expect("damped");
    // Down when damping ends: nothing to show but the link-down it already shows.
    assert_eq!(h.reason(), Reason::LinkDown);
    assert_eq!(h.on_time(until), None);
    assert_eq!(h.next_deadline(), None);
    h.on_link_up(until);
    let t = h.on_success(until, ms(10)).unwrap();
    assert_eq!(t.to, Availability::Ready);
}
