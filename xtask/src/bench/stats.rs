//! The repetitions of one figure, summarised: every value, median, min, max, and the flags that
//! say which repetitions to distrust and why.

use serde::Serialize;

use super::load::Conditions;

#[derive(Debug, Clone, Serialize)]
pub struct Reps {
    /// Every repetition's value, in the order measured.
    pub values: Vec<f64>,
    pub min: f64,
    pub max: f64,
    pub median: f64,
    /// E.g. "rep 2: disturbed: only 61% idle before starting (load 1.20)".
    pub flags: Vec<String>,
    /// What the machine was doing around each repetition (same order as `values`).
    pub conditions: Vec<Conditions>,
}

impl Reps {
    /// `None` without values.
    pub fn new(values: Vec<f64>, flags: Vec<String>, conditions: Vec<Conditions>) -> Option<Reps> {
        let median = median(&values)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Reps { values, min, max, median, flags, conditions })
    }

    /// A figure that does not vary between runs (the verifier's instruction count of a
    /// program): measured once, without load conditions, since the machine's load cannot
    /// change it.
    pub fn single(value: f64) -> Reps {
        Reps {
            values: vec![value],
            min: value,
            max: value,
            median: value,
            flags: vec![],
            conditions: vec![],
        }
    }
}

/// The middle value; the mean of the two middle ones for an even count. `None` when empty or
/// when a value is not a number.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|value| value.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// The `quantile` (0..=1) of `values` by the nearest-rank method: the smallest value with at
/// least that share of the values at or below it. `None` when empty.
pub fn quantile(values: &[f64], quantile: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&quantile) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(100.0));
        assert_eq!(quantile(&values, 0.99), Some(198.0));
        assert_eq!(quantile(&values, 1.0), Some(200.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
    }

    #[test]
    fn reps_keep_min_max_median() {
        let reps = Reps::new(vec![2.0, 9.0, 4.0], vec![], vec![]).unwrap();
        assert_eq!((reps.min, reps.max, reps.median), (2.0, 9.0, 4.0));
        assert!(Reps::new(vec![], vec![], vec![]).is_none());
    }
}
