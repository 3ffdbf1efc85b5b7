//! Summary statistics of repeated timings.

use serde::Serialize;

/// Median and spread of a set of timings, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of timed repetitions.
    pub reps: usize,
    /// Median.
    pub median_us: f64,
    /// Fastest repetition.
    pub min_us: f64,
    /// Slowest repetition.
    pub max_us: f64,
    /// First quartile (linear interpolation between order statistics).
    pub q1_us: f64,
    /// Third quartile.
    pub q3_us: f64,
}

impl Summary {
    /// Summarises `samples` (seconds). `None` when there are none or any is not finite.
    pub fn from_seconds(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut v: Vec<f64> = samples.iter().map(|s| s * 1e6).collect();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            reps: v.len(),
            median_us: quantile(&v, 0.5),
            min_us: v[0],
            max_us: v[v.len() - 1],
            q1_us: quantile(&v, 0.25),
            q3_us: quantile(&v, 0.75),
        })
    }
}

/// The `q` quantile of sorted `v` (non-empty), interpolating linearly between neighbours.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Formats microseconds with a unit that keeps 3–4 significant digits.
pub fn fmt_us(us: f64) -> String {
    let (v, unit) = time_unit(us);
    format!("{} {unit}", fmt_sig(us / v))
}

/// Formats a `lo–hi` range of microseconds in the unit of `reference`.
pub fn fmt_range_us(lo: f64, hi: f64, reference: f64) -> String {
    let (v, unit) = time_unit(reference);
    format!("{}–{} {unit}", fmt_sig(lo / v), fmt_sig(hi / v))
}

fn time_unit(us: f64) -> (f64, &'static str) {
    if us >= 1e6 {
        (1e6, "s")
    } else if us >= 1e3 {
        (1e3, "ms")
    } else {
        (1.0, "µs")
    }
}

/// A number with about 3–4 significant digits and no exponent.
pub fn fmt_sig(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles_of_odd_and_even_counts() {
        let s = Summary::from_seconds(&[5e-6, 1e-6, 3e-6, 2e-6, 4e-6]).unwrap();
        assert_eq!(s.reps, 5);
        assert!((s.median_us - 3.0).abs() < 1e-9);
        assert!((s.min_us - 1.0).abs() < 1e-9);
        assert!((s.max_us - 5.0).abs() < 1e-9);
        assert!((s.q1_us - 2.0).abs() < 1e-9);
        assert!((s.q3_us - 4.0).abs() < 1e-9);
        let s = Summary::from_seconds(&[4e-6, 1e-6, 2e-6, 3e-6]).unwrap();
        assert!((s.median_us - 2.5).abs() < 1e-9);
        assert!((s.q1_us - 1.75).abs() < 1e-9);
        assert!((s.q3_us - 3.25).abs() < 1e-9);
    }

    #[test]
    fn one_sample_and_bad_samples() {
        let s = Summary::from_seconds(&[2e-3]).unwrap();
        assert_eq!((s.median_us, s.min_us, s.max_us), (2000.0, 2000.0, 2000.0));
        assert!(Summary::from_seconds(&[]).is_none());
        assert!(Summary::from_seconds(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn times_pick_a_readable_unit() {
        assert_eq!(fmt_us(12.345), "12.3 µs");
        assert_eq!(fmt_us(4321.0), "4.32 ms");
        assert_eq!(fmt_us(2.5e6), "2.50 s");
        assert_eq!(fmt_range_us(4000.0, 4500.0, 4200.0), "4.00–4.50 ms");
    }
}
