//! A fixed-bucket histogram kept inside the metrics state (updated under its lock, encoded
//! from a snapshot).

/// Counts per bucket (not cumulative), the last bucket being `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` counts: one per bound, then `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// `bounds`: increasing upper bounds, without `+Inf`.
    pub(super) fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub(super) fn observe(&mut self, v: f64) {
        // `le` semantics: a value equal to a bound falls in that bound's bucket.
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub(super) fn sum(&self) -> f64 {
        self.sum
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// `(upper bound, count in this bucket)`, the way prometheus-client's encoder wants them
    /// (it accumulates); the last bound is `+Inf`.
    pub(super) fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}
