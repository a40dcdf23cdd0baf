//! Percentiles and means of small sample sets (at most the 1000 retained latencies).
//!
//! A percentile is the nearest-rank one: the smallest sample with at least `p` % of the
//! samples at or below it, i.e. the `ceil(p/100 × n)`-th smallest. It is always a sample that
//! was recorded, never an interpolation.

/// The `p`-th percentile (0 < p ≤ 100) of `samples`, or `None` when there are none.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_of_sorted(&sorted, p)
}

/// [`percentile`] of samples already sorted ascending.
pub fn percentile_of_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Ranks are counted from 1; `p` outside (0, 100] is clamped onto the ends.
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// The mean of `samples`, or `None` when there are none.
pub fn mean(samples: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, count) = samples.into_iter().fold((0.0, 0_u64), |(sum, count), x| (sum + x, count + 1));
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred_are_the_ranks() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 95.0), Some(95.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
    }

    #[test]
    fn percentiles_of_a_thousand_samples_pick_the_950th_and_990th() {
        let samples: Vec<f64> = (1..=1000).map(|i| f64::from(i) / 1000.0).collect();
        assert_eq!(percentile(&samples, 95.0), Some(0.95));
        assert_eq!(percentile(&samples, 99.0), Some(0.99));
    }

    #[test]
    fn small_sets_give_a_recorded_sample_and_empty_sets_none() {
        assert_eq!(percentile(&[], 95.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        // ceil(0.95 × 3) = 3: the largest of three.
        assert_eq!(percentile(&[1.0, 3.0, 2.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
    }

    #[test]
    fn the_mean_of_nothing_is_none() {
        assert_eq!(mean([]), None);
        assert_eq!(mean([1.0, 2.0, 6.0]), Some(3.0));
    }
}
