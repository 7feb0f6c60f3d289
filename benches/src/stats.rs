//! Summaries of repeated measurements: median, p90, min and max.

/// A summary of one series of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The median (mean of the two middle samples when `n` is even).
    pub median: f64,
    /// The 90th percentile, linearly interpolated between closest ranks.
    pub p90: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none (or one is NaN).
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            n: sorted.len(),
            median: quantile(&sorted, 0.5),
            p90: quantile(&sorted, 0.9),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The `q` quantile (0..=1) of sorted, non-empty `sorted`: the sample at
/// rank `q * (n - 1)`, interpolating between its two neighbours (the
/// usual "type 7" definition, which gives the plain median at 0.5).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let weight = rank - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * weight
}

/// The `q` quantile (0..=1) of unsorted `samples` (p99: `0.99`), as the
/// p90 of [`Summary`] is taken; `None` when there are none.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    let summary = Summary::of(samples)?;
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(quantile(&sorted, q).clamp(summary.min, summary.max))
}

/// husk's median over the peer's: below 1.0 husk is faster or smaller.
pub fn ratio(husk: &Summary, peer: &Summary) -> Option<f64> {
    (peer.median > 0.0).then(|| husk.median / peer.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
        assert_eq!(Summary::of(&[7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn p90_interpolates_between_ranks() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        // Rank 0.9 * 9 = 8.1: 9 + 0.1 * (10 - 9).
        assert!((Summary::of(&ten).unwrap().p90 - 9.1).abs() < 1e-9);
        let five = Summary::of(&[10.0, 50.0, 20.0, 40.0, 30.0]).unwrap();
        // Rank 3.6 between 40 and 50.
        assert!((five.p90 - 46.0).abs() < 1e-9);
        assert_eq!((five.min, five.max, five.n), (10.0, 50.0, 5));
        assert_eq!(Summary::of(&[5.0]).unwrap().p90, 5.0);
    }

    #[test]
    fn p99_of_a_batch() {
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        // Rank 0.99 * 99 = 98.01: 99 + 0.01 * (100 - 99).
        assert!((percentile(&hundred, 0.99).unwrap() - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[], 0.99), None);
    }

    #[test]
    fn nothing_to_summarise() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_is_husk_over_peer() {
        let husk = Summary::of(&[5.0]).unwrap();
        let peer = Summary::of(&[10.0]).unwrap();
        assert_eq!(ratio(&husk, &peer), Some(0.5));
        assert_eq!(ratio(&husk, &Summary::of(&[0.0]).unwrap()), None);
    }
}
