//! `load_balancing = "best-quality"`: which one of a router's candidate gateways (those the
//! active-set rules would make active) takes its new connections, by the probes' measure of
//! each link. Existing connections stay where they are (the `keep` set, as with any router).
//!
//! * [`score`]: the probe window's mean RTT + 2 × jitter + 10 ms per percent of loss, in
//!   milliseconds; lower is better. Jitter counts twice because it is what real-time traffic
//!   suffers most from; a percent of loss costs about what a retransmission costs a TCP
//!   stream on a short link. A gateway with no answered probe in the window has no score.
//! * [`pick`]: the candidates within a margin of the best score are *good*
//!   (margin = `quality_margin`, or 10 % of the best score if more); the first good one in
//!   list order (mains first) is wanted. The gateway in use stays while it is good and no
//!   gateway listed before it is *clearly* good (within half the margin): a link leaves when
//!   it is worse than the best by more than the margin, and a preferred link comes back once
//!   it is within half the margin, so noise smaller than half the margin moves nothing.
//!
//! Pure, like the rest of this module: the daemon keeps each router's gateway in use and asks
//! again on every probe report of its gateways.

use std::time::Duration;

/// The share of the best score that also counts as the margin, when larger than the
/// configured one.
pub const RELATIVE_MARGIN: f64 = 0.10;

/// Default `quality_margin`.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

/// The margin in milliseconds, given the configured one and the best score: the larger of
/// the two rules (`xwan status` shows it).
pub fn margin_ms(configured: Duration, best: f64) -> f64 {
    (configured.as_secs_f64() * 1e3).max(best * RELATIVE_MARGIN)
}

/// A gateway's score from its probe window: mean RTT, jitter, loss ratio (0.0–1.0). `None`
/// without a mean RTT (nothing answered in the window).
pub fn score(rtt: Option<Duration>, jitter: Option<Duration>, loss: f64) -> Option<f64> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rtt = ms(rtt?);
    Some(rtt + 2.0 * jitter.map_or(0.0, ms) + 10.0 * loss.clamp(0.0, 1.0) * 100.0)
}

/// The gateway to take new connections, among `candidates` (gateway, score) in list order
/// (mains first), given the one in use (`current`) and the margin. `None` only without
/// candidates.
pub fn pick(
    current: Option<u16>,
    candidates: &[(u16, Option<f64>)],
    margin: Duration,
) -> Option<u16> {
    let best = (candidates.iter().filter_map(|&(_, s)| s)).min_by(f64::total_cmp);
    let Some(best) = best else {
        // Nothing measured (the window empty after a link event): list order, or stay.
        return match current {
            Some(c) if candidates.iter().any(|&(g, _)| g == c) => Some(c),
            _ => candidates.first().map(|&(g, _)| g),
        };
    };
    let margin = margin_ms(margin, best);
    let within = |s: Option<f64>, m: f64| s.is_some_and(|s| s <= best + m);
    let first_within = |m: f64| {
        (candidates.iter())
            .find(|&&(_, s)| within(s, m))
            .map(|&(g, _)| g)
    };
    match current.and_then(|c| candidates.iter().position(|&(g, _)| g == c)) {
        Some(i) if within(candidates[i].1, margin) => {
            // Good: only a gateway listed before it and clearly good takes over.
            match candidates[..i]
                .iter()
                .find(|&&(_, s)| within(s, margin / 2.0))
            {
                Some(&(g, _)) => Some(g),
                None => Some(candidates[i].0),
            }
        }
        _ => first_within(margin),
    }
}

/// The gateway in use of each best-quality router, by names (a reload that keeps a router
/// and its gateways keeps its choice).
#[derive(Debug, Default)]
pub struct InUse(std::collections::HashMap<String, String>);

/// A router's candidates (gateway ids, list order) with their scores.
pub type Scored = Vec<(u16, Option<f64>)>;

/// A candidate of a best-quality router: its id, name and score.
pub type Candidate<'a> = (u16, &'a str, Option<f64>);

impl InUse {
    /// The gateway `router` uses, by name.
    pub fn get(&self, router: &str) -> Option<&str> {
        self.0.get(router).map(String::as_str)
    }

    /// Picks `router`'s gateway among `candidates` (list order) with [`pick`]; the gateway
    /// before and after, by name, when it changed.
    pub fn update(
        &mut self,
        router: &str,
        candidates: &[Candidate],
        margin: Duration,
    ) -> Option<(Option<String>, String)> {
        let current = (self.get(router))
            .and_then(|n| candidates.iter().find(|c| c.1 == n))
            .map(|c| c.0);
        let scored: Vec<(u16, Option<f64>)> = candidates.iter().map(|c| (c.0, c.2)).collect();
        let new = pick(current, &scored, margin)?;
        let name = candidates.iter().find(|c| c.0 == new)?.1;
        if self.get(router) == Some(name) {
            return None;
        }
        let before = self.0.insert(router.to_owned(), name.to_owned());
        Some((before, name.to_owned()))
    }

    /// Forgets routers for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|r, _| keep(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Duration = Duration::from_millis(10);

    #[test]
    fn the_score_adds_jitter_twice_and_ten_ms_per_percent_of_loss() {
        let ms = Duration::from_millis;
        assert_eq!(score(Some(ms(20)), Some(ms(5)), 0.02), Some(50.0));
        assert_eq!(score(Some(ms(20)), None, 0.0), Some(20.0));
        assert_eq!(score(None, Some(ms(5)), 0.0), None);
    }

    /// (in use, candidates' scores in list order, picked). Gateways are 1, 2, 3 in order.
    #[test]
    fn a_link_leaves_beyond_the_margin_and_a_preferred_one_returns_within_half_of_it() {
        type Case = (Option<u16>, [Option<f64>; 3], u16, &'static str);
        let cases: &[Case] = &[
            (
                None,
                [Some(5.0), Some(5.0), Some(5.0)],
                1,
                "equal: the first listed",
            ),
            (
                None,
                [Some(30.0), Some(5.0), Some(6.0)],
                2,
                "first start: the best",
            ),
            (
                None,
                [Some(14.0), Some(5.0), Some(6.0)],
                1,
                "first within the margin",
            ),
            (
                Some(1),
                [Some(14.0), Some(5.0), Some(6.0)],
                1,
                "in use, within the margin",
            ),
            (
                Some(1),
                [Some(15.1), Some(5.0), Some(6.0)],
                2,
                "beyond the margin: leaves",
            ),
            (
                Some(2),
                [Some(14.0), Some(5.0), Some(6.0)],
                2,
                "1 not clearly good: stays",
            ),
            (
                Some(2),
                [Some(9.9), Some(5.0), Some(6.0)],
                1,
                "1 clearly good: back",
            ),
            (
                Some(3),
                [None, Some(14.0), Some(8.0)],
                3,
                "2 good, not clearly: stays",
            ),
            (
                Some(3),
                [None, Some(4.0), Some(8.0)],
                2,
                "2 listed first, clearly good",
            ),
            (
                Some(2),
                [Some(5.0), None, Some(6.0)],
                1,
                "the one in use lost its score",
            ),
            // A 10 % margin where it is larger: 300 ms links, 25 ms apart.
            (Some(1), [Some(325.0), Some(300.0), None], 1, "within 30 ms"),
            (Some(1), [Some(331.0), Some(300.0), None], 2, "beyond 30 ms"),
            (Some(1), [None, None, None], 1, "nothing measured: stays"),
            (None, [None, None, None], 1, "nothing measured: list order"),
            (
                Some(7),
                [Some(5.0), Some(4.0), None],
                1,
                "not a candidate any more",
            ),
        ];
        for &(current, scores, want, why) in cases {
            let candidates: Vec<(u16, Option<f64>)> = (1..=3).zip(scores).collect::<Vec<_>>();
            assert_eq!(
                pick(current, &candidates, M),
                Some(want),
                "{why}: {current:?} {scores:?}"
            );
        }
        assert_eq!(pick(Some(1), &[], M), None);
    }

    /// Noise smaller than half the margin on two equal links moves new connections at most
    /// once: to the first listed, if the other was in use.
    #[test]
    fn noise_below_half_the_margin_moves_nothing() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 4_900) as f64 / 1_000.0 // 0 to 4.9 ms
        };
        for start in [1, 2] {
            let (mut current, mut moves) = (Some(start), 0);
            for _ in 0..10_000 {
                let c = [(1, Some(20.0 + noise())), (2, Some(20.0 + noise()))];
                let next = pick(current, &c, M);
                moves += (next != current) as u32;
                current = next;
            }
            assert_eq!(
                (current, moves),
                (Some(1), start as u32 - 1),
                "from {start}"
            );
        }
    }
}
