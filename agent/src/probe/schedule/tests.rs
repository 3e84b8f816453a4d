//! Schedule tests on tokio's paused clock: a scripted fake prober answers according to the
//! virtual time elapsed since the start, and every instant is asserted exactly.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use super::*;
use crate::health::{Reason, Sla};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 2));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 6));
const C: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 10));

#[derive(Clone, Copy, Debug)]
enum Reply {
    After(Duration),
    Silent,
    Refuse,
}

type Script = dyn Fn(Duration, IpAddr) -> Reply + Send + Sync;

/// Answers per `script(elapsed, target)` and records every call.
#[derive(Clone)]
struct Fake {
    start: Instant,
    script: Arc<Script>,
    calls: Arc<Mutex<Vec<(Duration, IpAddr)>>>,
}

impl Prober for Fake {
    async fn probe(&self, target: IpAddr, _timeout: Duration) -> Result<Duration, ProbeError> {
        let t = self.start.elapsed();
        self.calls.lock().unwrap().push((t, target));
        match (self.script)(t, target) {
            Reply::After(rtt) => {
                tokio::time::sleep(rtt).await;
                Ok(rtt)
            }
            Reply::Silent => std::future::pending().await,
            Reply::Refuse => Err(ProbeError::Refused),
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn s(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

fn defaults(recover: u32) -> HealthParams {
    HealthParams {
        recover,
        ..HealthParams::default()
    }
}

/// Alive (10 ms) except in `[from, to)`.
fn dead_between(from: f64, to: f64) -> impl Fn(Duration, IpAddr) -> Reply + Send + Sync {
    move |t, _| {
        if t >= s(from) && t < s(to) {
            Reply::Silent
        } else {
            Reply::After(ms(10))
        }
    }
}

struct Outcome {
    calls: Vec<Duration>,
    targets: Vec<IpAddr>,
    /// (instant since start, to, reason code)
    transitions: Vec<(Duration, Availability, &'static str)>,
    full: Vec<Transition>,
    reports: Vec<ProbeReport>,
}

impl Outcome {
    fn transitions(&self) -> Vec<(Duration, Availability, &'static str)> {
        self.transitions.clone()
    }
}

/// Runs a gateway for `horizon` of virtual time, applying `link_events` at their instants.
async fn run(
    params: HealthParams,
    targets: Vec<IpAddr>,
    script: impl Fn(Duration, IpAddr) -> Reply + Send + Sync + 'static,
    link_events: &[(f64, LinkState)],
    horizon: f64,
) -> Outcome {
    let start = Instant::now();
    let fake = Fake {
        start,
        script: Arc::new(script),
        calls: Arc::default(),
    };
    let (link_tx, link_rx) = watch::channel(LinkState::Up);
    let (tx, mut rx) = mpsc::channel(10_000);
    let task = tokio::spawn(run_gateway(params, fake.clone(), targets, link_rx, tx));
    for &(at, state) in link_events {
        sleep_until(start + s(at)).await;
        link_tx.send_replace(state);
    }
    sleep_until(start + s(horizon)).await;
    task.abort();
    let mut out = Outcome {
        calls: vec![],
        targets: vec![],
        transitions: vec![],
        full: vec![],
        reports: vec![],
    };
    while let Ok(ev) = rx.try_recv() {
        match ev {
            GatewayEvent::Transition(t) => {
                out.transitions
                    .push((t.at - start.into_std(), t.to, t.reason.code()));
                out.full.push(t);
            }
            GatewayEvent::Probed(r) => out.reports.push(r),
        }
    }
    for (t, target) in fake.calls.lock().unwrap().iter() {
        out.calls.push(*t);
        out.targets.push(*target);
    }
    out
}

use Availability::{Ready, Unavailable};

#[tokio::test(start_paused = true)]
async fn dead_gateway_is_detected_after_tries_waits() {
    // Defaults: frequency 15 s, wait 2 s, tries 3. Dead from 20 s to 50 s.
    let o = run(defaults(1), vec![A], dead_between(20.0, 50.0), &[], 80.0).await;
    assert_eq!(
        o.calls,
        [0.0, 15.0, 30.0, 32.0, 34.0, 45.0, 47.0, 49.0, 60.0, 75.0].map(s),
        "one probe per frequency; retries every wait while unanswered"
    );
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            // first unanswered round at 30 s; last try sent at 30 + (3-1)×2, times out at 36 s
            (s(36.0), Unavailable, "timeout"),
            (s(60.010), Ready, "answering"),
        ]
    );
    let t = &o.full[1];
    assert_eq!(t.from, Ready);
    assert_eq!(t.rtt, Some(ms(10)));
    assert!((t.loss - 3.0 / 5.0).abs() < 1e-9, "{}", t.loss);
    // attempts are numbered within their round
    let attempts: Vec<u32> = o.reports.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 1, 1, 2, 3, 1, 2, 3, 1, 1]);
    assert_eq!(o.reports[4].availability, Unavailable);
    assert_eq!(o.reports[4].stats.lost, 3);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_first_answer() {
    // The first two attempts of every round go unanswered, the third is answered.
    let script = |t: Duration, _| {
        if t.as_secs() % 15 < 4 {
            Reply::Silent
        } else {
            Reply::After(ms(10))
        }
    };
    let o = run(defaults(1), vec![A], script, &[], 40.0).await;
    assert_eq!(
        o.calls,
        [0.0, 2.0, 4.0, 15.0, 17.0, 19.0, 30.0, 32.0, 34.0].map(s)
    );
    // two failures never reach tries = 3: Ready from the first answer on
    assert_eq!(o.transitions(), vec![(s(4.010), Ready, "answering")]);
}

#[tokio::test(start_paused = true)]
async fn recover_needs_that_many_answered_rounds() {
    let o = run(defaults(3), vec![A], dead_between(20.0, 50.0), &[], 100.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(36.0), Unavailable, "timeout"),
            // answered at 60, 75, 90: the third makes it Ready
            (s(90.010), Ready, "answering"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn flapping_gateway() {
    // Dead in every other 15 s slot: [15, 30), [45, 60), [75, 90) …
    let flapping = |t: Duration, _| {
        if (t.as_secs() / 15) % 2 == 1 {
            Reply::Silent
        } else {
            Reply::After(ms(10))
        }
    };
    let o = run(defaults(1), vec![A], flapping, &[], 70.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(21.0), Unavailable, "timeout"),
            (s(30.010), Ready, "answering"),
            (s(51.0), Unavailable, "timeout"),
            (s(60.010), Ready, "answering"),
        ]
    );
    // with recover = 2 a single answered round between failures never brings it back
    let o = run(defaults(2), vec![A], flapping, &[], 130.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(21.0), Unavailable, "timeout"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sla_trip_and_recovery() {
    let params = HealthParams {
        sla: Some(Sla {
            max_rtt: Some(ms(100)),
            window: 4,
            ..Sla::default()
        }),
        ..defaults(1)
    };
    // 10 ms, then 300 ms in [40, 70), then 10 ms again
    let script = |t: Duration, _| {
        if t >= s(40.0) && t < s(70.0) {
            Reply::After(ms(300))
        } else {
            Reply::After(ms(10))
        }
    };
    let o = run(params, vec![A], script, &[], 110.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            // window 10 10 300 300 ms: mean 155 ms > 100 ms
            (s(60.300), Unavailable, "sla"),
            // window 300 10 10 10 ms: mean 82.5 ms
            (s(105.010), Ready, "answering"),
        ]
    );
    assert_eq!(o.full[1].reason.to_string(), "sla (rtt 155.0ms > 100.0ms)");
    // an answered probe is one attempt per round: no retries
    assert_eq!(o.calls.len(), 8);
}

#[tokio::test(start_paused = true)]
async fn link_down_is_immediate_and_pauses_probing() {
    let o = run(
        defaults(1),
        vec![A],
        |_, _| Reply::After(ms(10)),
        &[(20.5, LinkState::Down), (50.5, LinkState::Up)],
        70.0,
    )
    .await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(20.5), Unavailable, "link down"),
            (s(50.5), Unavailable, "link up"),
            (s(50.510), Ready, "answering"),
        ]
    );
    // no probes while down; a round at once on link up, then a new grid from there
    assert_eq!(o.calls, [0.0, 15.0, 50.5, 65.5].map(s));
}

#[tokio::test(start_paused = true)]
async fn losing_the_sa_pair_is_like_carrier_loss() {
    let o = run(
        defaults(1),
        vec![A],
        |_, _| Reply::After(ms(10)),
        &[
            (20.5, LinkState::NoSa),
            (40.0, LinkState::Down),
            (50.5, LinkState::Up),
        ],
        70.0,
    )
    .await;
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(20.5), Unavailable, "no SA"),
            (s(40.0), Unavailable, "link down"),
            (s(50.5), Unavailable, "link up"),
            (s(50.510), Ready, "answering"),
        ]
    );
    // no probes without an SA pair (nothing could pass), a round at once when it is back
    assert_eq!(o.calls, [0.0, 15.0, 50.5, 65.5].map(s));
}

#[tokio::test(start_paused = true)]
async fn link_down_aborts_a_round_in_progress() {
    let o = run(
        defaults(1),
        vec![A],
        dead_between(20.0, 1000.0),
        &[(33.0, LinkState::Down)],
        80.0,
    )
    .await;
    // attempts at 30 and 32 were unanswered; the link went down during the second one
    assert_eq!(o.calls, [0.0, 15.0, 30.0, 32.0].map(s));
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(33.0), Unavailable, "link down"),
        ]
    );
    assert_eq!(o.full[1].previous, Reason::Answering);
}

#[tokio::test(start_paused = true)]
async fn link_up_with_recover_waits_for_answers() {
    let o = run(
        defaults(2),
        vec![A],
        |_, _| Reply::After(ms(10)),
        &[(20.5, LinkState::Down), (50.5, LinkState::Up)],
        70.0,
    )
    .await;
    assert_eq!(
        o.transitions()[2..],
        [
            (s(50.5), Unavailable, "link up"),
            (s(65.510), Ready, "answering"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn every_target_must_answer() {
    // A answers in 10 ms, B in 30 ms but is dead in [20, 50)
    let script = |t: Duration, target| {
        if target == A {
            Reply::After(ms(10))
        } else if t >= s(20.0) && t < s(50.0) {
            Reply::Silent
        } else {
            Reply::After(ms(30))
        }
    };
    let o = run(defaults(1), vec![A, B], script, &[], 70.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            // the slowest target gives the attempt's RTT
            (s(0.030), Ready, "answering"),
            (s(36.0), Unavailable, "timeout"),
            (s(60.030), Ready, "answering"),
        ]
    );
    assert_eq!(o.full[0].rtt, Some(ms(30)));
    // both targets in every attempt, concurrently: 0, 15, 30 32 34, 45 47 49, 60
    assert_eq!(o.calls.len(), 2 * 9);
    assert!(o.calls.chunks(2).all(|c| c[0] == c[1]));
    assert!(
        o.targets
            .chunks(2)
            .all(|c| c.contains(&A) && c.contains(&B))
    );
}

/// Three targets, quorum 2: A answers in 10 ms, B in 20 ms, C in 40 ms; C is silent from
/// 10 s, B from 40 s, both answer again from 70 s.
#[tokio::test(start_paused = true)]
async fn a_quorum_of_targets_must_answer() {
    let script = |t: Duration, target| match target {
        A => Reply::After(ms(10)),
        B if t >= s(40.0) && t < s(70.0) => Reply::Silent,
        B => Reply::After(ms(20)),
        _ if t >= s(10.0) && t < s(70.0) => Reply::Silent,
        _ => Reply::After(ms(40)),
    };
    let params = HealthParams {
        quorum: std::num::NonZeroUsize::new(2),
        ..defaults(1)
    };
    let o = run(params, vec![A, B, C], script, &[], 80.0).await;
    assert_eq!(
        o.transitions(),
        vec![
            // The attempt ends when every target has answered; its RTT is the second's.
            (s(0.040), Ready, "answering"),
            // C's silence alone changes nothing; with B's too, the quorum is lost: rounds
            // at 45 s (attempts 45, 47, 49 s, each ending 2 s later).
            (s(51.0), Unavailable, "timeout"),
            (s(75.040), Ready, "answering"),
        ]
    );
    assert_eq!(o.full[0].rtt, Some(ms(20)));
    // What each attempt's report says: all 3 answered, then 2 of 3 (C silent: the attempt
    // lasts the whole wait), then 1 of 3.
    let answered: Vec<(Duration, usize, bool)> = (o.reports.iter())
        .map(|r| (r.at - o.reports[0].at, r.answered, r.outcome.is_ok()))
        .collect();
    assert_eq!(answered[0], (s(0.0), 3, true));
    assert_eq!(answered[1], (s(16.960), 2, true));
    assert!(o.reports.iter().all(|r| r.targets == 3));
    assert!(answered.contains(&(s(46.960), 1, false)));
}

#[tokio::test(start_paused = true)]
async fn dead_from_the_start_gives_a_first_verdict() {
    let o = run(defaults(1), vec![A], |_, _| Reply::Silent, &[], 20.0).await;
    assert_eq!(o.transitions(), vec![(s(6.0), Unavailable, "timeout")]);
    assert_eq!(o.full[0].previous, Reason::NotYetProbed);
    assert_eq!(o.calls, [0.0, 2.0, 4.0, 15.0, 17.0, 19.0].map(s));
}

#[tokio::test(start_paused = true)]
async fn fast_failures_are_retried_after_the_wait() {
    // refused at once: retries still come `wait` apart, the verdict at the third failure
    let script = |t: Duration, _| {
        if t >= s(10.0) {
            Reply::Refuse
        } else {
            Reply::After(ms(10))
        }
    };
    let o = run(defaults(1), vec![A], script, &[], 20.0).await;
    assert_eq!(o.calls, [0.0, 15.0, 17.0, 19.0].map(s));
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.010), Ready, "answering"),
            (s(19.0), Unavailable, "refused"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn long_rounds_skip_grid_points() {
    // frequency 5 s < tries × wait = 6 s: the round at 0 ends at 6, the next starts at 10
    let params = HealthParams {
        frequency: s(5.0),
        ..defaults(1)
    };
    let o = run(params, vec![A], |_, _| Reply::Silent, &[], 17.0).await;
    assert_eq!(o.calls, [0.0, 2.0, 4.0, 10.0, 12.0, 14.0].map(s));
}

#[tokio::test(start_paused = true)]
async fn no_targets_means_not_monitored() {
    let o = run(
        defaults(3),
        vec![],
        |_, _| Reply::Silent,
        &[(5.0, LinkState::Down), (7.0, LinkState::Up)],
        60.0,
    )
    .await;
    assert!(o.calls.is_empty());
    assert_eq!(
        o.transitions(),
        vec![
            (s(0.0), Ready, "not monitored"),
            (s(5.0), Unavailable, "link down"),
            (s(7.0), Ready, "not monitored"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn link_down_at_start_waits_for_link_up() {
    let start = Instant::now();
    let fake = Fake {
        start,
        script: Arc::new(|_, _| Reply::After(ms(10))),
        calls: Arc::default(),
    };
    let (link_tx, link_rx) = watch::channel(LinkState::Down);
    let (tx, mut rx) = mpsc::channel(100);
    let task = tokio::spawn(run_gateway(defaults(1), fake.clone(), vec![A], link_rx, tx));
    sleep_until(start + s(30.0)).await;
    assert!(fake.calls.lock().unwrap().is_empty());
    link_tx.send_replace(LinkState::Up);
    sleep_until(start + s(31.0)).await;
    let mut codes = vec![];
    while let Ok(ev) = rx.try_recv() {
        if let GatewayEvent::Transition(t) = ev {
            codes.push((t.at - start.into_std(), t.reason.code()));
        }
    }
    assert_eq!(
        codes,
        [
            (s(0.0), "link down"),
            (s(30.0), "link up"),
            (s(30.010), "answering")
        ]
    );
    assert_eq!(*fake.calls.lock().unwrap(), [(s(30.0), A)]);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn the_task_ends_when_nobody_listens() {
    let (_link_tx, link_rx) = watch::channel(LinkState::Up);
    let (tx, rx) = mpsc::channel(100);
    let fake = Fake {
        start: Instant::now(),
        script: Arc::new(|_, _| Reply::After(ms(10))),
        calls: Arc::default(),
    };
    let task = tokio::spawn(run_gateway(defaults(1), fake, vec![A], link_rx, tx));
    sleep_until(Instant::now() + s(1.0)).await;
    drop(rx);
    timeout(s(60.0), task)
        .await
        .expect("task ended")
        .expect("no panic");
}

/// Damping (half-life 10 s, penalty 1000, suppress 2000, reuse 750): carrier lost at 1, 2
/// and 3 s, back half a second later each time. The third loss damps the gateway: it answers
/// from 3.5 s but stays Unavailable (`damped`) until the figure has decayed to 750, and the
/// task wakes at that instant (to tokio's millisecond) to make it Ready, between rounds.
#[tokio::test(start_paused = true)]
async fn a_damped_gateway_comes_back_at_the_instant_its_penalty_decays() {
    let damping = crate::health::Damping {
        half_life: Duration::from_secs(10),
        ..crate::health::Damping::default()
    };
    let params = HealthParams {
        damping: Some(damping),
        ..defaults(1)
    };
    let flaps: Vec<(f64, LinkState)> = [1.0, 2.0, 3.0]
        .into_iter()
        .flat_map(|t| [(t, LinkState::Down), (t + 0.5, LinkState::Up)])
        .collect();
    let o = run(params, vec![A], |_, _| Reply::After(ms(10)), &flaps, 40.0).await;
    let decay = |figure: f64| figure * 0.5f64.powf(0.1);
    let figure = decay(decay(1000.0) + 1000.0) + 1000.0;
    let until = s(3.0) + damping.half_life.mul_f64((figure / 750.0).log2());
    let t = o.transitions();
    assert_eq!(t[t.len() - 2], (s(3.510), Unavailable, "damped"));
    let (at, to, reason) = *t.last().unwrap();
    assert_eq!((to, reason), (Ready, "answering"));
    assert!(
        at >= until && at <= until + ms(1),
        "Ready at {at:?}, damping ends at {until:?}"
    );
    // Before it, the two first losses did not damp: Ready again after each.
    assert_eq!(
        t[..7].iter().map(|x| x.2).collect::<Vec<_>>(),
        [
            "answering",
            "link down",
            "link up",
            "answering",
            "link down",
            "link up",
            "answering"
        ]
    );
}
