//! The sliding window of the last N probe attempts a gateway's RTT, jitter and loss figures
//! are computed from. Pure arithmetic; [`super::GatewayHealth`] decides when to record or
//! forget samples.

use std::{collections::VecDeque, time::Duration};

/// The last `capacity` probe attempts, oldest first: `Some(rtt)` when answered, `None` when
/// lost.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    samples: VecDeque<Option<Duration>>,
    capacity: usize,
}

impl Window {
    pub(crate) fn new(capacity: usize) -> Window {
        let capacity = capacity.max(1);
        Window {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, sample: Option<Duration>) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn lost(&self) -> usize {
        self.samples.iter().filter(|s| s.is_none()).count()
    }

    /// Lost / recorded attempts (0 when nothing is recorded): what is reported.
    pub(crate) fn loss(&self) -> f64 {
        if self.samples.is_empty() {
            0.0
        } else {
            self.lost() as f64 / self.samples.len() as f64
        }
    }

    /// Lost / capacity: what the SLA compares, so that while the window fills up the attempts
    /// not made yet count as answered and one early loss cannot trip a loss threshold.
    pub(crate) fn loss_of_capacity(&self) -> f64 {
        self.lost() as f64 / self.capacity as f64
    }

    /// Mean RTT of the answered attempts.
    pub(crate) fn mean_rtt(&self) -> Option<Duration> {
        let answered: Vec<Duration> = self.samples.iter().flatten().copied().collect();
        if answered.is_empty() {
            return None;
        }
        let total: Duration = answered.iter().sum();
        Some(total / answered.len() as u32)
    }

    /// Mean absolute difference between consecutive answered RTTs (lost attempts are skipped);
    /// `None` with fewer than two answered attempts.
    pub(crate) fn jitter(&self) -> Option<Duration> {
        let answered: Vec<Duration> = self.samples.iter().flatten().copied().collect();
        if answered.len() < 2 {
            return None;
        }
        let total: Duration = answered.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
        Some(total / (answered.len() - 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn window_keeps_the_last_capacity_samples() {
        let mut w = Window::new(3);
        for s in [Some(ms(1)), None, Some(ms(3)), Some(ms(5))] {
            w.push(s);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.lost(), 1);
        assert_eq!(w.mean_rtt(), Some(ms(4)));
        assert!((w.loss() - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn jitter_is_the_mean_absolute_difference_of_consecutive_answers() {
        let mut w = Window::new(10);
        for s in [Some(ms(10)), Some(ms(20)), None, Some(ms(10)), Some(ms(40))] {
            w.push(s);
        }
        // answered: 10, 20, 10, 40 → |10| + |10| + |30| = 50 over 3 differences.
        assert_eq!(w.jitter(), Some(Duration::from_nanos(16_666_666)));
        assert_eq!(w.mean_rtt(), Some(ms(20)));
    }

    #[test]
    fn empty_and_single_windows_have_no_figures() {
        let mut w = Window::new(4);
        assert_eq!(w.mean_rtt(), None);
        assert_eq!(w.jitter(), None);
        assert_eq!(w.loss(), 0.0);
        w.push(None);
        assert_eq!(w.loss(), 1.0);
        assert_eq!(w.loss_of_capacity(), 0.25);
        w.push(Some(ms(7)));
        assert_eq!(w.jitter(), None);
        assert_eq!(w.capacity(), 4);
    }
}
