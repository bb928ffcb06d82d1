//! `cptlab range-test`: CPT's precision range test, a row per precision as it finishes.
use anyhow::Result;
use clap::Args;

use super::output::{self, outln, OutputError};
use super::run::{build_config, count, ConfigArgs};
use crate::config::paths::Paths;
use crate::engine::range_test::{self, RangeTestOptions};

#[derive(Debug, Args)]
pub struct RangeTestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per row on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Lowest precision tried
    #[arg(long, default_value_t = 2, help_heading = "Range test")]
    pub from: u32,
    /// Highest precision tried
    #[arg(long, default_value_t = 8, help_heading = "Range test")]
    pub to: u32,
    /// Optimizer steps per precision
    #[arg(long, default_value_t = 200, value_parser = count(), help_heading = "Range test")]
    pub steps: u64,
    /// Relative loss fall (first tenth vs last tenth of the steps) that counts as progress
    #[arg(
        long,
        default_value_t = 0.05,
        allow_negative_numbers = true,
        help_heading = "Range test"
    )]
    pub threshold: f64,
    /// Record the short runs in the runs directory (default: a temporary directory)
    #[arg(long, help_heading = "Range test")]
    pub keep_runs: bool,
}

pub fn run(args: RangeTestArgs, paths: &Paths) -> Result<()> {
    let config = build_config(&args.config, paths)?;
    let tmp = tempfile::tempdir()?;
    let mut test_paths = paths.clone();
    if !args.keep_runs {
        test_paths.runs = tmp.path().to_path_buf();
    }
    let opts = RangeTestOptions {
        from: args.from,
        to: args.to,
        steps: args.steps,
        threshold: args.threshold,
    };
    let json = args.json;
    if !json {
        outln!(
            "range test: {} on {} steps per precision, progress = loss falls by {:.0}%",
            config.model.kind,
            args.steps,
            args.threshold * 100.0
        )?;
        outln!(
            "{:>5} {:>11} {:>11} {:>8}  PROGRESS",
            "BITS",
            "FIRST LOSS",
            "LAST LOSS",
            "FALL"
        )?;
    }
    // The rows are printed as they come; a write error ends the command once the test is done.
    let mut lost: Option<OutputError> = None;
    let rows = range_test::run(&config, &test_paths, &opts, |r| {
        let printed = if json {
            output::stdout().json_line(&serde_json::json!({"event": "range", "row": r}))
        } else {
            outln!(
                "{:>5} {:>11.4} {:>11.4} {:>7.1}%  {}{}",
                r.bits,
                r.first_loss,
                r.last_loss,
                r.fall * 100.0,
                if r.progress { "yes" } else { "no" },
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        };
        if let Err(e) = printed {
            lost.get_or_insert(e);
        }
    })?;
    if let Some(e) = lost {
        return Err(e.into());
    }
    let suggestion = range_test::suggest_q_min(&rows);
    if json {
        output::stdout()
            .json_line(&serde_json::json!({"event": "suggestion", "q_min": suggestion}))?;
    } else {
        match suggestion {
            Some(q) => outln!("suggested q_min: {q}")?,
            None => outln!(
                "no precision up to {} made progress: raise --to or --steps, or lower --threshold",
                args.to
            )?,
        }
    }
    Ok(())
}
