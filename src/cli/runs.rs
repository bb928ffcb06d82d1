//! `cptlab runs`: the recorded runs, one run's config and summary, and exports.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use super::follow::print_summary;
use super::output::{self, outln};
use crate::config::diff::differing_fields;
use crate::config::paths::Paths;
use crate::telemetry::store;
use crate::telemetry::tensorboard;

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recorded runs, newest first
    List {
        /// One JSON object per run
        #[arg(long)]
        json: bool,
    },
    /// One run's config and summary
    Show {
        /// A run directory or a run name
        run: String,
        /// One JSON object: the config and the summary
        #[arg(long)]
        json: bool,
    },
    /// A run's metrics in another format (CSV of the steps or the evaluations, JSON lines)
    Export(ExportArgs),
    /// The config fields that differ between two runs
    Diff {
        /// A run directory or a run name
        a: String,
        /// A run directory or a run name
        b: String,
        /// One JSON object per differing field
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values, one row per step (or per evaluation with --evals)
    #[default]
    Csv,
    /// The run's events, one JSON object per line
    Jsonl,
    /// A TensorBoard event file (scalars and the config as text) in a directory (-o DIR;
    /// default: the run's tensorboard folder); view it with: tensorboard --logdir DIR
    Tensorboard,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory or a run name
    pub run: String,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    pub format: ExportFormat,
    /// The same as --format csv
    #[arg(long, hide = true, conflicts_with = "format")]
    pub csv: bool,
    /// CSV of the evaluations instead of the steps
    #[arg(long)]
    pub evals: bool,
    /// Write to this file (atomically) instead of stdout; with --format tensorboard, the
    /// directory the event file goes in
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(c: RunsCommand, paths: &Paths) -> Result<()> {
    match c {
        RunsCommand::List { json } => {
            let runs = store::try_list_runs(&paths.runs)?;
            if json {
                for r in runs {
                    let mut v = serde_json::json!({
                        "run": r.name, "dir": r.dir, "status": r.status(),
                        "summary": r.summary,
                    });
                    if let Some(e) = &r.summary_error {
                        v["summary_error"] = e.clone().into();
                    }
                    output::stdout().json_line(&v)?;
                }
                return Ok(());
            }
            if runs.is_empty() {
                outln!("no runs in {}", paths.runs.display())?;
                return Ok(());
            }
            outln!(
                "{:<40} {:<10} {:>6} {:>9} {:>9} {:>9}",
                "RUN",
                "STATUS",
                "EPOCHS",
                "FINAL",
                "BEST",
                "S/EPOCH"
            )?;
            for r in runs {
                let s = r.summary.clone().unwrap_or_default();
                let pct = |x: Option<f64>| {
                    x.map(|a| format!("{:.2}%", a * 100.0))
                        .unwrap_or("-".into())
                };
                let spe = if s.seconds_per_epoch.is_empty() {
                    "-".to_string()
                } else {
                    // Completed epochs only: a stopped run's train_seconds has a partial epoch.
                    let sum: f64 = s.seconds_per_epoch.iter().sum();
                    format!("{:.1}", sum / s.seconds_per_epoch.len() as f64)
                };
                outln!(
                    "{:<40} {:<10} {:>6} {:>9} {:>9} {:>9}",
                    r.name,
                    r.status(),
                    s.epochs,
                    pct(s.final_test_acc),
                    pct(s.best_test_acc),
                    spe
                )?;
            }
        }
        RunsCommand::Show { run, json } => {
            let dir = store::resolve_run_dir(&paths.runs, &run)?;
            // A summary that exists but cannot be read is not an interrupted run: say why.
            let (summary, summary_error) = match store::read_summary_if_present(&dir) {
                Ok(s) => (s, None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            if json {
                let config = store::read_config(&dir)?;
                let mut v = serde_json::json!({"dir": dir, "config": config, "summary": summary});
                if let Some(e) = &summary_error {
                    v["summary_error"] = e.clone().into();
                }
                output::stdout().json_line(&v)?;
                return Ok(());
            }
            outln!("# {}", dir.display())?;
            output::stdout().write_str(&store::read_config_text(&dir)?)?;
            match summary {
                Some(s) => {
                    outln!()?;
                    print_summary(&s)?;
                    if let Some(e) = &s.error {
                        outln!("error: {e}")?;
                    }
                }
                None => match &summary_error {
                    Some(e) => outln!("\n(no usable summary: {e})")?,
                    None => outln!(
                        "\n(no summary: the run is live, or was interrupted — resume it with `cptlab run --resume {}`)",
                        dir.display()
                    )?,
                },
            }
        }
        RunsCommand::Export(args) => export(args, paths)?,
        RunsCommand::Diff { a, b, json } => diff(&a, &b, json, paths)?,
    }
    Ok(())
}

/// `runs diff A B`: the differing fields, a row each (`-` where a run has no such field).
fn diff(a: &str, b: &str, json: bool, paths: &Paths) -> Result<()> {
    let dirs = [
        store::resolve_run_dir(&paths.runs, a)?,
        store::resolve_run_dir(&paths.runs, b)?,
    ];
    let configs = [store::read_config(&dirs[0])?, store::read_config(&dirs[1])?];
    let fields = differing_fields(&[&configs[0], &configs[1]]);
    if json {
        for f in &fields {
            output::stdout().json_line(&serde_json::json!({
                "key": f.key, "a": f.values[0], "b": f.values[1],
            }))?;
        }
        return Ok(());
    }
    let name = |d: &std::path::Path| {
        d.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if fields.is_empty() {
        outln!(
            "{} and {}: the same config (apart from the name)",
            name(&dirs[0]),
            name(&dirs[1])
        )?;
        return Ok(());
    }
    let width = fields.iter().map(|f| f.key.len()).max().unwrap_or(0).max(5);
    let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let col = fields
        .iter()
        .map(|f| value(&f.values[0]).chars().count())
        .max()
        .unwrap_or(0)
        .max(name(&dirs[0]).chars().count());
    outln!(
        "{:<width$}  {:<col$}  {}",
        "FIELD",
        name(&dirs[0]),
        name(&dirs[1])
    )?;
    for f in &fields {
        outln!(
            "{:<width$}  {:<col$}  {}",
            f.key,
            value(&f.values[0]),
            value(&f.values[1])
        )?;
    }
    Ok(())
}

/// `runs export`: the run's events in another format, on stdout or into a file (atomically).
fn export(args: ExportArgs, paths: &Paths) -> Result<()> {
    let dir = store::resolve_run_dir(&paths.runs, &args.run)?;
    let format = if args.csv {
        ExportFormat::Csv
    } else {
        args.format
    };
    let text = match format {
        ExportFormat::Csv => {
            let events = store::read_metrics(&dir)?;
            if args.evals {
                store::evals_csv(&events)
            } else {
                store::steps_csv(&events)
            }
        }
        ExportFormat::Jsonl => {
            // The events exactly as recorded, re-serialized from their types (a torn last line of
            // a killed run is left out, as `read_metrics` leaves it out).
            let events = store::read_metrics(&dir)?;
            let mut text = String::new();
            for e in &events {
                text.push_str(&serde_json::to_string(e)?);
                text.push('\n');
            }
            text
        }
        ExportFormat::Tensorboard => return export_tensorboard(&dir, &args),
    };
    match args.output {
        Some(p) => store::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => output::stdout().write_str(&text)?,
    }
    Ok(())
}

/// `runs export --format tensorboard`: one event file, into `-o DIR` or `<run dir>/tensorboard/`;
/// prints its path and how to view it.
fn export_tensorboard(dir: &std::path::Path, args: &ExportArgs) -> Result<()> {
    anyhow::ensure!(
        !args.evals,
        "--evals applies to --format csv; a TensorBoard export holds the steps and the evaluations"
    );
    let path = tensorboard::export_run(dir, args.output.as_deref())?;
    let logdir = path.parent().unwrap_or(dir);
    outln!("{}", path.display())?;
    outln!("view it with: tensorboard --logdir {}", logdir.display())?;
    Ok(())
}
