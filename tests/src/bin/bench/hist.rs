//! A small log-linear latency histogram (HdrHistogram's bucketing, simplified): values in
//! microseconds, exact below 256 µs, above that 128 linear sub-buckets per power of two, so a
//! reported percentile is at most 1/128 (< 0.8 %) above the true value. Fixed size (7,424
//! counters), no allocation per value; histograms of several workers are merged with [`add`].
//!
//! [`add`]: Histogram::add

use std::time::Duration;

/// Values below this are counted exactly (one bucket per microsecond).
const EXACT: u64 = 256;
/// Linear sub-buckets per power of two above `EXACT`.
const SUB: u64 = 128;
/// Powers of two from 2^8 up to 2^63.
const BUCKETS: usize = (EXACT + 56 * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < EXACT {
            return us as usize;
        }
        let magnitude = 63 - u64::from(us.leading_zeros()); // floor(log2), >= 8
        let shift = magnitude - 7; // us >> shift lies in [128, 256)
        let top = us >> shift;
        (EXACT + (shift - 1) * SUB + (top - SUB)) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn highest_in(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let shift = (i - EXACT) / SUB + 1;
        let top = (i - EXACT) % SUB + SUB;
        // Wraps to u64::MAX for the very last bucket.
        ((top + 1) << shift).wrapping_sub(1)
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
        self.sum += u128::from(us);
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The value at quantile `q` (0..=1) in milliseconds: the highest value of the bucket that
    /// holds the ceil(q * count)-th smallest value, capped at the largest value recorded. `None`
    /// when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::highest_in(i).min(self.max) as f64 / 1000.0);
            }
        }
        Some(self.max as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.total > 0).then(|| self.max as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous_high = None;
        for i in 0..BUCKETS {
            let high = Histogram::highest_in(i);
            if let Some(p) = previous_high {
                assert_eq!(Histogram::index(p + 1), i, "bucket {i} starts after {p}");
            }
            assert_eq!(Histogram::index(high), i);
            previous_high = Some(high);
            if high == u64::MAX {
                break;
            }
        }
        for us in [300u64, 1_000, 12_345, 999_999, 3_600_000_000] {
            let high = Histogram::highest_in(Histogram::index(us));
            assert!(
                high >= us && (high - us) as f64 <= us as f64 / 128.0,
                "{us} -> {high}"
            );
        }
    }

    #[test]
    fn quantiles_of_one_to_ten_thousand_microseconds() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ms(0.5).unwrap_or_default();
        let p99 = h.quantile_ms(0.99).unwrap_or_default();
        assert!((5.0..=5.04).contains(&p50), "{p50}");
        assert!((9.9..=9.98).contains(&p99), "{p99}");
        assert_eq!(h.quantile_ms(1.0), Some(10.0));
        assert_eq!(h.total, 10_000);
    }
}
