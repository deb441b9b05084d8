//! A small log-bucket latency histogram, HDR style.
//!
//! Values (microseconds, or any `u64`) below 64 are counted exactly; above that, each
//! power of two is split into 64 equal buckets, so a reported percentile is within
//! 1/64 (about 1.6 %) of the true value. Memory grows with the largest value recorded
//! (at most a few thousand counters), and histograms merge by adding counters.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// A histogram of `u64` values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

/// The bucket holding `value`.
fn bucket(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = value >> shift; // in SUB..2*SUB
    ((shift as u64 + 1) * SUB + (mantissa - SUB)) as usize
}

/// The largest value that falls in bucket `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let mantissa = SUB + index % SUB;
    ((mantissa + 1) << shift).wrapping_sub(1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        let b = bucket(value);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.min = if self.total == 0 {
            value
        } else {
            self.min.min(value)
        };
        self.max = self.max.max(value);
        self.total += 1;
        self.sum += u128::from(value);
    }

    /// Adds every value counted by `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.total == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest value counted (0 if none).
    pub fn min(&self) -> u64 {
        self.min
    }

    /// The largest value counted, exactly (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean of the values counted (0 if none).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at percentile `p` (0–100): the smallest bucket bound below which at
    /// least `p` % of the values lie, clamped to the exact min and max. 0 if empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // (shaving a relative 1e-12 keeps 99.9 % of 1000 at rank 999 despite rounding)
        let rank = ((p / 100.0) * self.total as f64 * (1.0 - 1e-12))
            .ceil()
            .clamp(1.0, self.total as f64) as u64;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(index).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let mut previous = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= previous, "buckets grow with values");
            previous = b;
            assert!(bucket_high(b) >= v, "{v} fits under its bucket's bound");
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "{v} is above the previous bucket");
            }
            let width = bucket_high(b) - if b == 0 { 0 } else { bucket_high(b - 1) };
            assert!(width <= 1.max(v / SUB), "bucket of {v} is {width} wide");
        }
        assert_eq!(bucket_high(bucket(u64::MAX)), u64::MAX);
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 1.0 / 64.0, "got {got}, want about {want}");
        };
        close(h.percentile(50.0), 5_000);
        close(h.percentile(90.0), 9_000);
        close(h.percentile(99.0), 9_900);
        close(h.percentile(99.9), 9_990);
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!((h.count(), h.min(), h.max()), (10_000, 1, 10_000));
        assert!((h.mean() - 5_000.5).abs() < 1e-9);
    }

    #[test]
    fn small_values_are_exact_and_outliers_show_in_the_tail() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(7);
        }
        h.record(1_000_000);
        assert_eq!(h.percentile(50.0), 7);
        assert_eq!(h.percentile(99.9), 7);
        assert_eq!(h.percentile(99.99), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
    }

    #[test]
    fn empty_and_merged() {
        let empty = Histogram::new();
        assert_eq!(
            (empty.percentile(50.0), empty.max(), empty.mean()),
            (0, 0, 0.0)
        );
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        (1..=500).for_each(|v| a.record(v));
        (501..=1000).for_each(|v| b.record(v));
        let mut merged = Histogram::new();
        merged.merge(&a);
        merged.merge(&empty);
        merged.merge(&b);
        let mut direct = Histogram::new();
        (1..=1000).for_each(|v| direct.record(v));
        assert_eq!(merged, direct);
    }
}
