//! CPT's precision range test: train briefly from the same initialization at increasing static
//! precision and find the lowest precision at which training makes progress. That precision is
//! the suggested `q_min` of a cyclic schedule.
use anyhow::Result;
use serde::Serialize;

use super::{Job, JobSpec};
use crate::config::paths::Paths;
use crate::config::RunConfig;
use crate::schedule::precision::{PrecisionSchedule, PrecisionScheduleKind};
use crate::telemetry::Event;

#[derive(Debug, Clone)]
pub struct RangeTestOptions {
    pub from: u32,
    pub to: u32,
    /// Optimizer steps per precision.
    pub steps: u64,
    /// Relative fall of the loss (mean of the last window vs the first) that counts as progress.
    pub threshold: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeRow {
    pub bits: u32,
    pub first_loss: f64,
    pub last_loss: f64,
    /// (first - last) / first
    pub fall: f64,
    pub progress: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Mean of the first and last tenth (at least one step) of `losses`.
fn window_means(losses: &[f64]) -> (f64, f64) {
    let w = (losses.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&losses[..w]), mean(&losses[losses.len() - w..]))
}

/// Runs one short training per precision `from..=to` (same seed, so the same initialization and
/// data order), each in `paths.runs`. Returns one row per precision.
pub fn run(
    base: &RunConfig,
    paths: &Paths,
    opts: &RangeTestOptions,
    mut progress: impl FnMut(&RangeRow),
) -> Result<Vec<RangeRow>> {
    anyhow::ensure!(
        1 <= opts.from && opts.from <= opts.to && opts.to <= 32,
        "--from {} --to {}: expected 1 ≤ from ≤ to ≤ 32",
        opts.from,
        opts.to
    );
    anyhow::ensure!(
        opts.steps >= 2,
        "--steps {}: expected at least 2",
        opts.steps
    );
    let mut rows = Vec::new();
    for bits in opts.from..=opts.to {
        let mut config = base.clone();
        config.name = format!("{}-range-q{bits}", base.name);
        config.train.max_steps = Some(opts.steps);
        config.train.eval = false;
        config.train.checkpoint = false;
        let mut schedule = PrecisionSchedule::new(PrecisionScheduleKind::Static);
        schedule.q_min = bits;
        schedule.q_max = bits;
        schedule.q_bwd = config.precision.schedule.as_ref().and_then(|s| s.q_bwd);
        config.precision.schedule = Some(schedule);
        let job = Job::start(JobSpec {
            config,
            paths: paths.clone(),
        })?;
        let mut losses = Vec::new();
        for event in job.events().iter() {
            if let Event::Step(s) = event {
                losses.push(s.loss);
            }
        }
        let summary = job.wait();
        let row = if losses.len() < 2 || !losses.iter().all(|l| l.is_finite()) {
            RangeRow {
                bits,
                first_loss: losses.first().copied().unwrap_or(f64::NAN),
                last_loss: losses.last().copied().unwrap_or(f64::NAN),
                fall: f64::NAN,
                progress: false,
                error: summary.error.or(Some("no usable losses".into())),
            }
        } else {
            let (first, last) = window_means(&losses);
            let fall = (first - last) / first;
            RangeRow {
                bits,
                first_loss: first,
                last_loss: last,
                fall,
                progress: fall >= opts.threshold,
                error: summary.error,
            }
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The lowest precision from which every higher precision also made progress.
pub fn suggest_q_min(rows: &[RangeRow]) -> Option<u32> {
    let mut suggestion = None;
    for row in rows.iter().rev() {
        if !row.progress {
            break;
        }
        suggestion = Some(row.bits);
    }
    suggestion
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bits: u32, progress: bool) -> RangeRow {
        RangeRow {
            bits,
            first_loss: 2.3,
            last_loss: 2.0,
            fall: 0.1,
            progress,
            error: None,
        }
    }

    #[test]
    fn suggestion_is_the_bottom_of_the_top_run_of_progress() {
        let rows: Vec<_> = [(2, false), (3, true), (4, false), (5, true), (6, true)]
            .iter()
            .map(|&(b, p)| row(b, p))
            .collect();
        assert_eq!(suggest_q_min(&rows), Some(5));
        assert_eq!(suggest_q_min(&[row(2, false)]), None);
    }

    #[test]
    fn windows_are_tenths() {
        let losses: Vec<f64> = (0..20).map(|i| 20.0 - i as f64).collect();
        assert_eq!(window_means(&losses), (19.5, 1.5));
    }
}
