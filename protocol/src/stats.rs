//! The one quantile rule every shoal report uses: nearest rank, no
//! interpolation, so a reported p99 is a value that was actually measured.
//! The simulator, the benchmarks and the node's demo logs all quote it, and
//! their figures are only comparable if they agree on it.

/// The `q`-quantile (0..=1) of `sorted` (ascending) by nearest rank: the
/// smallest sample with at least `q` of the samples at or below it. `None`
/// for no samples or a `q` outside 0..=1.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_measured_sample() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&xs, 0.5), Some(50));
        assert_eq!(nearest_rank(&xs, 0.99), Some(99));
        assert_eq!(nearest_rank(&xs, 1.0), Some(100));
        assert_eq!(nearest_rank(&xs, 0.0), Some(1));
    }

    #[test]
    fn p99_of_few_samples_is_the_maximum() {
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 0.99), Some(3.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 0.5), Some(2.0));
    }

    #[test]
    fn no_samples_or_a_bad_q_give_none() {
        assert_eq!(nearest_rank::<u64>(&[], 0.5), None);
        assert_eq!(nearest_rank(&[1u64], 1.01), None);
        assert_eq!(nearest_rank(&[1u64], f64::NAN), None);
    }
}
