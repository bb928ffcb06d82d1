//! Estimates with their uncertainty, for comparing runs over seeds: the mean with a Student t
//! confidence interval, and seed-paired differences. Pure math over `f64`s.
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean over `n` samples with the half-width of its confidence interval (`None` when `n < 2`:
/// one seed says nothing about the spread).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    pub half_width: Option<f64>,
    /// Sample standard deviation (n − 1 in the denominator); `None` when `n < 2`.
    pub std_dev: Option<f64>,
}

impl Estimate {
    /// `mean ± half_width` as `12.34 ± 0.56`; `12.34` alone for one sample; `-` for none.
    pub fn format(&self, decimals: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        match self.half_width {
            Some(h) => format!("{:.decimals$} ± {:.decimals$}", self.mean, h),
            None => format!("{:.decimals$}", self.mean),
        }
    }

    /// Whether the interval lies entirely above 0 (`Some(true)`), below (`Some(false)`), or
    /// contains it / is unknown (`None`).
    pub fn sign(&self) -> Option<bool> {
        let h = self.half_width?;
        if self.mean - h > 0.0 {
            Some(true)
        } else if self.mean + h < 0.0 {
            Some(false)
        } else {
            None
        }
    }
}

/// The two-sided Student t quantile for `level` (0.95) with `df` degrees of freedom.
pub fn t_quantile(level: f64, df: f64) -> f64 {
    let t = StudentsT::new(0.0, 1.0, df).expect("df > 0 and a unit scale");
    t.inverse_cdf(0.5 + level / 2.0)
}

/// The mean of `xs` with its `level` confidence interval (Student t, n − 1 degrees of freedom).
/// Non-finite samples are left out.
pub fn mean_ci(xs: &[f64], level: f64) -> Estimate {
    let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = xs.len();
    if n == 0 {
        return Estimate {
            n,
            mean: f64::NAN,
            half_width: None,
            std_dev: None,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Estimate {
            n,
            mean,
            half_width: None,
            std_dev: None,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = t_quantile(level, (n - 1) as f64) * sd / (n as f64).sqrt();
    Estimate {
        n,
        mean,
        half_width: Some(half),
        std_dev: Some(sd),
    }
}

/// The paired difference `b − a` over the pairs both have (matched by key, e.g. the seed), with
/// its confidence interval: the paired t interval, narrower than the unpaired one when seeds
/// share their luck.
pub fn paired_difference<K: PartialEq>(a: &[(K, f64)], b: &[(K, f64)], level: f64) -> Estimate {
    let diffs: Vec<f64> = b
        .iter()
        .filter_map(|(k, y)| a.iter().find(|(j, _)| j == k).map(|(_, x)| y - x))
        .collect();
    mean_ci(&diffs, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        // scipy.stats.t.ppf(0.975, df): 12.706204736, 4.302652730, 2.776445105, 2.262157163.
        for (df, want) in [
            (1.0, 12.706204736),
            (2.0, 4.302652730),
            (4.0, 2.776445105),
            (9.0, 2.262157163),
        ] {
            let got = t_quantile(0.95, df);
            assert!((got - want).abs() < 1e-6, "df {df}: {got} vs {want}");
        }
        // scipy.stats.t.ppf(0.95, 3) = 2.353363435 (a 90% interval).
        assert!((t_quantile(0.90, 3.0) - 2.353363435).abs() < 1e-6);
    }

    #[test]
    fn mean_ci_by_hand() {
        // xs = 1, 2, 3, 4, 5: mean 3, sd = sqrt(2.5), half = 2.776445105 · sqrt(2.5)/sqrt(5).
        let e = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95);
        assert_eq!(e.n, 5);
        assert!((e.mean - 3.0).abs() < 1e-12);
        assert!((e.std_dev.unwrap() - 2.5f64.sqrt()).abs() < 1e-12);
        let want = 2.776445105 * 2.5f64.sqrt() / 5f64.sqrt();
        assert!((e.half_width.unwrap() - want).abs() < 1e-8);
        assert_eq!(e.format(2), "3.00 ± 1.96");
        assert_eq!(e.sign(), Some(true));
        // One sample: a mean without an interval; none: nothing.
        let one = mean_ci(&[0.7], 0.95);
        assert_eq!((one.n, one.mean, one.half_width), (1, 0.7, None));
        assert_eq!(one.format(1), "0.7");
        assert_eq!(mean_ci(&[], 0.95).format(1), "-");
        // Non-finite samples (a diverged run) are left out, not averaged in.
        assert_eq!(mean_ci(&[1.0, f64::NAN, 3.0], 0.95).n, 2);
    }

    #[test]
    fn pairing_removes_the_shared_seed_effect() {
        // Seeds differ a lot; b is a everywhere + 0.01 (± a little).
        let a = [(1, 0.50), (2, 0.70), (3, 0.90)];
        let b = [(3, 0.912), (1, 0.508), (2, 0.710)];
        let d = paired_difference(&a, &b, 0.95);
        assert_eq!(d.n, 3);
        assert!((d.mean - 0.01).abs() < 1e-12);
        // diffs 0.008, 0.010, 0.012: sd 0.002, half = 4.302652730 · 0.002 / sqrt(3).
        let want = 4.302652730 * 0.002 / 3f64.sqrt();
        assert!((d.half_width.unwrap() - want).abs() < 1e-9);
        assert_eq!(d.sign(), Some(true));
        // Unpaired, the seed spread swamps the difference.
        let unpaired_a = mean_ci(&[0.5, 0.7, 0.9], 0.95);
        assert!(unpaired_a.half_width.unwrap() > 10.0 * d.half_width.unwrap());
        // A seed only one side has is left out.
        let d = paired_difference(&a, &[(1, 0.6), (7, 0.1)], 0.95);
        assert_eq!(d.n, 1);
    }
}
