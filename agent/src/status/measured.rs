//! The measured distribution: how many flows each gateway was given over the last
//! [`WINDOW`], from samples of the data plane's per-gateway counters
//! (`xwan_common::NEW_FLOWS_MAP`), beside the configured slot share. A skew the slot share
//! cannot show (one client opening thousands of connections, source hashing behind a NAT)
//! shows here.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// The span the measured distribution covers.
pub const WINDOW: Duration = Duration::from_secs(300);

/// How often the counters are sampled (the window's resolution).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples of the counters (index = gateway id) over the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Measured {
    samples: VecDeque<(Instant, Vec<u64>)>,
}

impl Measured {
    /// Records the counters read at `at`, and forgets samples the window no longer needs
    /// (the newest one at or before its start is kept: the window's baseline).
    pub fn record(&mut self, at: Instant, counts: Vec<u64>) {
        self.samples.push_back((at, counts));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The flows each gateway was given between the oldest and the newest sample, and the
    /// span they cover; `None` before two samples.
    pub fn window(&self) -> Option<(Duration, Vec<u64>)> {
        let ((t0, first), (t1, last)) = (self.samples.front()?, self.samples.back()?);
        if t1 == t0 {
            return None;
        }
        // A counter that went down (a gateway id given to another gateway by a reload)
        // counts from zero.
        let given = (last.iter().enumerate())
            .map(|(i, &n)| n.saturating_sub(first.get(i).copied().unwrap_or(0)))
            .collect();
        Some((t1.saturating_duration_since(*t0), given))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_spans_the_last_five_minutes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut m = Measured::default();
        m.record(at(0), vec![0, 0]);
        assert_eq!(m.window(), None, "one sample is no window");
        m.record(at(10), vec![5, 1]);
        assert_eq!(m.window(), Some((Duration::from_secs(10), vec![5, 1])));
        // Six minutes on: the baseline is the sample five minutes (or just more) back.
        for s in (20..=360).step_by(10) {
            m.record(at(s), vec![5 + s, 1 + s / 10]);
        }
        let (span, given) = m.window().unwrap();
        assert_eq!(span, Duration::from_secs(300));
        assert_eq!(given, vec![300, 30]);
        // A counter that went down (a reload renumbered the gateways) counts from zero.
        m.record(at(370), vec![2, 100]);
        assert_eq!(m.window().unwrap().1, vec![0, 92]);
    }
}
