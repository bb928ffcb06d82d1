//! `cptlab sweep`: a sweep file (or `--vary` flags) expanded into runs, trained one after
//! another in the sweep's directory; rerunning it skips finished points and resumes interrupted
//! ones, so a kill -9 loses at most the steps since a point's last checkpoint.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use super::follow::{follow_human, follow_json, Signals};
use super::output::{self, errln, outln};
use super::run::{build_config_on, ConfigArgs};
use super::{exit_code, usage, EXIT_OK};
use crate::config::paths::Paths;
use crate::config::presets::PresetStore;
use crate::config::Override;
use crate::engine::{Job, JobSpec};
use crate::files;
use crate::sweep::{self, PointState, SweepFile, PLAN_FILE, PROGRESS_FILE};
use crate::telemetry::RunStatus;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Sweep file (TOML: name, preset or config, [set], [axes] KEY = [values], seeds)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// An axis: KEY=V1,V2,… over any config field (repeatable; added to the file's axes)
    #[arg(long, value_name = "KEY=V1,V2", help_heading = "Sweep")]
    pub vary: Vec<String>,
    /// Seeds per point: N (the base seed and the next N − 1)
    #[arg(long, value_name = "N", help_heading = "Sweep")]
    pub seeds: Option<u64>,
    /// The sweep's name: its directory under the runs directory (default: the file's, else
    /// sweep-<config name>)
    #[arg(long = "sweep-name", value_name = "NAME", help_heading = "Sweep")]
    pub sweep_name: Option<String>,
    /// Stop at the first point that fails (default: record it and go on)
    #[arg(long, help_heading = "Sweep")]
    pub fail_fast: bool,
    /// Print the points and exit
    #[arg(long, help_heading = "Sweep")]
    pub dry_run: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per event on stdout (sweep events and every point's run events)
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

pub fn run(args: SweepArgs, paths: &Paths) -> Result<i32> {
    let mut file = match &args.file {
        Some(p) => SweepFile::read(p)?,
        None => SweepFile::default(),
    };
    if args.file.is_some()
        && (args.config.base.preset.is_some() || args.config.base.config.is_some())
    {
        return Err(usage(
            "--preset/--config: a sweep file names its own base (preset = … or config = …)",
        ));
    }
    if file.preset.is_none() && file.config.is_none() {
        file.preset = args.config.base.preset.clone();
        file.config = args.config.base.config.clone();
    }
    for v in &args.vary {
        let (key, values) = v
            .split_once('=')
            .ok_or_else(|| usage(format!("--vary {v}: expected KEY=V1,V2,…")))?;
        let values: Vec<toml::Value> = values
            .split(',')
            .map(|x| {
                format!("k={x}")
                    .parse::<Override>()
                    .map(|o| o.value)
                    .map_err(|e| usage(format!("--vary {v}: {e}")))
            })
            .collect::<Result<_>>()?;
        file.axes.insert(key.trim().to_string(), values);
    }
    if let Some(n) = args.seeds {
        file.seeds = Some(sweep::Seeds::Count(n));
    }
    if let Some(n) = &args.sweep_name {
        file.name = Some(n.clone());
    }
    let base = sweep::base_config(&file, &PresetStore::new(&paths.presets))?;
    let base = build_config_on(base, &args.config)?;
    let plan = sweep::expand(&file, &base)?;
    if plan.name.is_empty() || plan.name.contains(['/', '\\']) || plan.name.starts_with('.') {
        bail!(
            "sweep name {:?}: expected a plain directory name",
            plan.name
        );
    }
    let dir = paths.runs.join(&plan.name);
    if args.dry_run {
        for p in &plan.points {
            outln!("{:>3}  {}  {}", p.index, p.config.name, p.label)?;
        }
        outln!("{} points into {}", plan.points.len(), dir.display())?;
        return Ok(EXIT_OK);
    }
    files::create_dir_all(&dir)?;
    // The plan as it was expanded, for the record (rewritten whole on every run).
    let mut plan_text = String::new();
    for p in &plan.points {
        plan_text.push_str(&format!(
            "[[point]]\nindex = {}\nname = {:?}\nlabel = {:?}\n\n",
            p.index, p.config.name, p.label
        ));
    }
    files::write_atomic(&dir.join(PLAN_FILE), plan_text.as_bytes())?;
    let mut progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(PROGRESS_FILE))
        .with_context(|| format!("cannot open {}", dir.join(PROGRESS_FILE).display()))?;
    let mut note = |v: serde_json::Value| -> Result<()> {
        use std::io::Write;
        writeln!(progress, "{v}").context("cannot write the sweep's progress")?;
        if args.json {
            output::stdout().json_line(&v)?;
        }
        Ok(())
    };
    let signals = Signals::install()?;
    let point_paths = Paths {
        runs: dir.clone(),
        ..paths.clone()
    };
    let (mut done, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    for p in &plan.points {
        let state = sweep::point_state(&dir, p);
        let job = match &state {
            PointState::Ended(status, run_dir) => {
                skipped += 1;
                if *status != RunStatus::Finished {
                    failed += 1;
                }
                note(
                    json!({"event": "point_skipped", "point": p.index, "label": p.label,
                    "status": status.to_string(), "run_dir": run_dir}),
                )?;
                if !args.json {
                    outln!(
                        "[{}/{}] {}: already {status}, skipped",
                        p.index + 1,
                        plan.points.len(),
                        p.label
                    )?;
                }
                continue;
            }
            PointState::Interrupted(run_dir) => {
                note(
                    json!({"event": "point_resumed", "point": p.index, "label": p.label, "run_dir": run_dir}),
                )?;
                if !args.json {
                    outln!(
                        "[{}/{}] {}: resuming {}",
                        p.index + 1,
                        plan.points.len(),
                        p.label,
                        run_dir.display()
                    )?;
                }
                match Job::resume(run_dir, point_paths.clone(), &[]) {
                    Ok(job) => Ok(job),
                    // No checkpoint yet (killed before the first one): start the point afresh;
                    // the old directory stays as it was.
                    Err(_) => Job::start(JobSpec {
                        config: p.config.clone(),
                        paths: point_paths.clone(),
                    }),
                }
            }
            PointState::New => {
                note(json!({"event": "point_started", "point": p.index, "label": p.label}))?;
                if !args.json {
                    outln!("[{}/{}] {}", p.index + 1, plan.points.len(), p.label)?;
                }
                Job::start(JobSpec {
                    config: p.config.clone(),
                    paths: point_paths.clone(),
                })
            }
        };
        let summary = match job {
            Ok(job) if args.json => follow_json(job, &signals),
            Ok(job) => follow_human(job, &signals),
            Err(e) => {
                failed += 1;
                note(
                    json!({"event": "point_failed", "point": p.index, "label": p.label, "error": format!("{e:#}")}),
                )?;
                errln!("point {} ({}): {e:#}", p.index, p.label)?;
                if args.fail_fast {
                    break;
                }
                continue;
            }
        };
        note(
            json!({"event": "point_ended", "point": p.index, "label": p.label,
            "status": summary.status.to_string(), "final_test_acc": summary.final_test_acc,
            "run_dir": summary.run_dir}),
        )?;
        match summary.status {
            RunStatus::Finished => done += 1,
            RunStatus::Stopped => {
                outln!(
                    "sweep stopped; run it again to resume from point {}",
                    p.index
                )?;
                return Ok(exit_code(RunStatus::Stopped));
            }
            RunStatus::Failed | RunStatus::Diverged => {
                failed += 1;
                if args.fail_fast {
                    break;
                }
            }
        }
    }
    note(
        json!({"event": "sweep_ended", "trained": done, "skipped": skipped, "failed": failed,
        "points": plan.points.len(), "dir": dir}),
    )?;
    if !args.json {
        outln!(
            "sweep {}: {done} trained, {skipped} already done, {failed} failed, of {} points; compare with `cptlab compare {}`",
            plan.name,
            plan.points.len(),
            dir.display()
        )?;
    }
    Ok(if failed > 0 {
        exit_code(RunStatus::Failed)
    } else {
        EXIT_OK
    })
}
