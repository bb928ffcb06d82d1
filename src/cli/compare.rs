//! `cptlab compare`: runs grouped by what varies between them, means with 95% intervals over
//! seeds, seed-paired differences to a baseline group.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::output::{self, errln};
use crate::comparison;
use crate::config::paths::Paths;
use crate::telemetry::store;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Runs (directories or names) and folders of runs (a sweep)
    #[arg(required = true, value_name = "RUN|SWEEP")]
    pub runs: Vec<String>,
    /// Group by this config field (dotted key, repeatable; default: every field that varies
    /// between the runs, the seed aside)
    #[arg(long, value_name = "KEY")]
    pub by: Vec<String>,
    /// The group the others are compared with, seed by seed (its label or part of it; default:
    /// the first group)
    #[arg(long, value_name = "GROUP")]
    pub baseline: Option<String>,
    /// Also report the training seconds to reach this test accuracy (a fraction, e.g. 0.6)
    #[arg(long, value_name = "ACC")]
    pub target_acc: Option<f64>,
    /// A Markdown table
    #[arg(long, conflicts_with = "csv")]
    pub md: bool,
    /// CSV
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// JSON: every group's estimates as numbers (mean, half width, bounds), for scripts
    #[arg(long, conflicts_with = "md")]
    pub json: bool,
    /// Write to this file (atomically) instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also draw final accuracy against GBitOps per group, with intervals, into this file
    /// (.svg or .png, by the extension)
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// Also draw each group's training loss and test accuracy across epochs, the mean over its
    /// seeds with a 95% interval band, into this file (.svg or .png)
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot_curves: Option<PathBuf>,
}

pub fn run(args: CompareArgs, paths: &Paths) -> Result<()> {
    if let Some(t) = args.target_acc {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--target-acc {t}: expected a fraction of the test set in 0..=1 (e.g. 0.6 for 60%)"
        );
    }
    // A plot's format comes from its extension: refused before anything is read or written.
    for p in args.plot.iter().chain(&args.plot_curves) {
        comparison::plot::Format::of(p)?;
    }
    let (runs, warnings) = comparison::load(&paths.runs, &args.runs)?;
    for w in &warnings {
        errln!("warning: {w}")?;
    }
    let c = comparison::compare(&runs, &args.by, args.baseline.as_deref(), args.target_acc)?;
    let text = if args.md {
        c.markdown()
    } else if args.csv {
        c.csv()
    } else if args.json {
        format!("{:#}\n", c.json())
    } else {
        c.text()
    };
    if let Some(p) = &args.plot {
        let bytes = comparison::plot::accuracy_vs_gbitops(&c, comparison::plot::Format::of(p)?)
            .with_context(|| format!("--plot {}", p.display()))?;
        store::write_atomic(p, &bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.plot_curves {
        let format = comparison::plot::Format::of(p)?;
        let curves = comparison::curves(&c, &runs)?;
        let bytes = comparison::plot::curves(&curves, format)
            .with_context(|| format!("--plot-curves {}", p.display()))?;
        store::write_atomic(p, &bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    match args.output {
        Some(p) => store::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => output::stdout().write_str(&text)?,
    }
    Ok(())
}
