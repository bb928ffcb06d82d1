//! `cptlab sweep`: a sweep file (or `--vary` flags) expanded into runs, trained one after
//! another in the sweep's directory; rerunning it skips finished points and resumes interrupted
//! ones, so a kill -9 loses at most the steps since a point's last checkpoint.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::follow::{follow_human, follow_json, Signals};
use super::output::{self, errln, outln};
use super::run::{build_config_on, ConfigArgs};
use super::{exit_code, usage, EXIT_OK};
use crate::config::paths::Paths;
use crate::config::presets::PresetStore;
use crate::config::Override;
use crate::engine::{Job, JobSpec};
use crate::files;
use crate::sweep::{self, PointState, Progress, SweepFile, PLAN_FILE, PROGRESS_FILE};
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
    /// Train up to N points at once, each in its own cptlab run process; CPU points split the
    /// cores (devices.threads = cores ÷ N unless the sweep sets it). Resumable as a plain sweep
    #[arg(long, value_name = "N", help_heading = "Sweep")]
    pub parallel: Option<usize>,
    /// Spread the points over these devices, one point per device at a time (cuda:0,cuda:1):
    /// each point trains on one of them; --parallel defaults to their count
    #[arg(long, value_name = "LIST", help_heading = "Sweep")]
    pub point_devices: Option<String>,
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
    let point_devices = match &args.point_devices {
        Some(list) => Some(sweep::parse_point_devices(list).map_err(|e| usage(format!("{e:#}")))?),
        None => None,
    };
    let parallel = match (args.parallel, &point_devices) {
        (Some(0), _) => return Err(usage("--parallel 0: at least one point at a time")),
        (Some(n), Some(d)) if n > d.len() => {
            return Err(usage(format!(
                "--parallel {n} with {} --point-devices: at most one point per device at a time",
                d.len()
            )))
        }
        (Some(n), _) => n,
        (None, Some(d)) => d.len(),
        (None, None) => 1,
    };
    if args.dry_run {
        for p in &plan.points {
            outln!("{:>3}  {}  {}", p.index, p.config.name, p.label)?;
        }
        outln!("{} points into {}", plan.points.len(), dir.display())?;
        return Ok(EXIT_OK);
    }
    files::create_dir_all(&dir)?;
    // The plan as it was expanded, for the record (rewritten whole on every run).
    let plan_text = sweep::progress::plan_toml(&plan);
    files::write_atomic(&dir.join(PLAN_FILE), plan_text.as_bytes())?;
    let mut progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(PROGRESS_FILE))
        .with_context(|| format!("cannot open {}", dir.join(PROGRESS_FILE).display()))?;
    let mut note = |v: Progress| -> Result<()> {
        use std::io::Write;
        // One write per line, so a kill tears at most the last one.
        progress
            .write_all(format!("{}\n", v.to_line()).as_bytes())
            .context("cannot write the sweep's progress")?;
        if args.json {
            output::stdout().json_line(&v)?;
        }
        Ok(())
    };
    let point_paths = Paths {
        runs: dir.clone(),
        ..paths.clone()
    };
    // A point is found again by its name: a changed sweep file would map names to other runs.
    sweep::check_points(&dir, &plan)?;
    let many = parallel > 1 || point_devices.is_some();
    note(Progress::started_here(
        plan.points.len(),
        many.then_some(parallel),
    ))?;
    if many {
        return parallel::run(
            &plan,
            &dir,
            &point_paths,
            parallel::Options {
                parallel,
                devices: point_devices,
                json: args.json,
                fail_fast: args.fail_fast,
            },
            &mut note,
        );
    }
    let signals = Signals::install()?;
    let (mut done, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    for p in &plan.points {
        let state = sweep::point_state(&dir, p);
        let job = match &state {
            PointState::Ended(status, run_dir) => {
                skipped += 1;
                if *status != RunStatus::Finished {
                    failed += 1;
                }
                note_skipped(&mut note, p, *status, run_dir, plan.points.len(), args.json)?;
                continue;
            }
            PointState::Interrupted(run_dir) => {
                note(Progress::PointResumed {
                    point: p.index,
                    label: p.label.clone(),
                    run_dir: run_dir.clone(),
                })?;
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
            PointState::Mismatch { dir, fields } => bail!(
                "point {} ({}): {} was recorded with other values of {}",
                p.index,
                p.label,
                dir.display(),
                fields.join(", ")
            ),
            PointState::New => {
                note(Progress::PointStarted {
                    point: p.index,
                    label: p.label.clone(),
                })?;
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
                note(Progress::PointFailed {
                    point: p.index,
                    label: p.label.clone(),
                    error: format!("{e:#}"),
                })?;
                errln!("point {} ({}): {e:#}", p.index, p.label)?;
                if args.fail_fast {
                    break;
                }
                continue;
            }
        };
        note(Progress::PointEnded {
            point: p.index,
            label: p.label.clone(),
            status: summary.status,
            final_test_acc: summary.final_test_acc,
            run_dir: Some(summary.run_dir.clone().into()),
            exit_code: None,
        })?;
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
    note(Progress::SweepEnded {
        trained: done,
        skipped,
        failed,
        points: plan.points.len(),
        dir: dir.clone(),
        parallel: None,
    })?;
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

/// A point a rerun skips because it already ended: one progress event, and a line on a
/// terminal (plain and parallel sweeps alike).
fn note_skipped(
    note: &mut dyn FnMut(Progress) -> Result<()>,
    p: &sweep::Point,
    status: RunStatus,
    run_dir: &std::path::Path,
    total: usize,
    json: bool,
) -> Result<()> {
    note(Progress::PointSkipped {
        point: p.index,
        label: p.label.clone(),
        status,
        run_dir: run_dir.to_path_buf(),
    })?;
    if !json {
        outln!(
            "[{}/{total}] {}: already {status}, skipped",
            p.index + 1,
            p.label
        )?;
    }
    Ok(())
}

/// `--parallel N` / `--point-devices`: up to N points at once, each a `cptlab run --json` child
/// process in the sweep's directory (libtorch's generator and thread pool are process-wide, so
/// points in one process would not train as they do alone). The points, their names and their
/// run directories are those of a plain sweep, so either kind of rerun resumes the other.
mod parallel {
    use std::collections::VecDeque;
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use anyhow::{Context, Result};
    use serde_json::{json, Value};

    use super::super::output::{self, errln, outln};
    use super::super::{exit_code, EXIT_OK};
    use crate::config::paths::Paths;
    use crate::config::{DeviceSpec, Override};
    use crate::files;
    use crate::sweep::{self, Plan, Point, PointState, Progress};
    use crate::telemetry::store::CHECKPOINT_DIR;
    use crate::telemetry::RunStatus;

    pub struct Options {
        pub parallel: usize,
        /// One entry per slot: the device its points train on (None: each point's own).
        pub devices: Option<Vec<String>>,
        pub json: bool,
        pub fail_fast: bool,
    }

    enum Msg {
        Line(usize, Value),
        Exited(usize),
    }

    struct Running {
        point: usize,
        slot: usize,
        child: Child,
        /// The point's config file, removed once the child has read it (its run has started).
        config: Option<PathBuf>,
        summary: Option<Value>,
        error: Option<String>,
    }

    /// The point's config as it trains in slot `slot`: on the slot's device, with its share of
    /// the cores when the sweep does not set the thread count.
    fn slot_config(p: &Point, opts: &Options, slot: usize) -> Result<crate::config::RunConfig> {
        let mut o = Vec::new();
        if let Some(d) = opts.devices.as_ref().map(|d| &d[slot]) {
            o.push(Override::new("devices.devices", d.clone().into()));
        }
        let config = p.config.with_overrides(&o)?;
        let mut o = Vec::new();
        if let DeviceSpec::Cpu { workers } =
            crate::engine::device::on_this_machine(&config.devices.devices)
        {
            if config.devices.threads.is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let t = sweep::split_threads(cores, opts.parallel, workers);
                o.push(Override::new("devices.threads", (t as i64).into()));
            }
        }
        Ok(config.with_overrides(&o)?)
    }

    fn spawn(
        p: &Point,
        state: &PointState,
        slot: usize,
        dir: &Path,
        paths: &Paths,
        opts: &Options,
    ) -> Result<(Child, Option<PathBuf>)> {
        let exe = std::env::current_exe().context("cannot find the cptlab executable")?;
        let mut cmd = Command::new(exe);
        let mut config_file = None;
        let resume = match state {
            PointState::Interrupted(run_dir) => run_dir
                .join(CHECKPOINT_DIR)
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some())
                .then_some(run_dir),
            _ => None,
        };
        match resume {
            Some(run_dir) => {
                cmd.arg("run").arg("--resume").arg(run_dir);
                if let Some(d) = opts.devices.as_ref().map(|d| &d[slot]) {
                    cmd.arg("--devices").arg(d);
                }
            }
            None => {
                let config = slot_config(p, opts, slot)?;
                let path = dir.join(format!(".point-{:03}.toml", p.index));
                files::write_atomic(&path, config.to_toml().as_bytes())?;
                cmd.arg("run").arg("--config").arg(&path);
                config_file = Some(path);
            }
        }
        cmd.arg("--json")
            .arg("--runs-dir")
            .arg(&paths.runs)
            .arg("--presets-dir")
            .arg(&paths.presets)
            .arg("--cache-dir")
            .arg(&paths.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches nothing of the parent. A child
            // whose sweep dies (kill -9) is asked to stop gracefully, so a rerun never finds a
            // point still training behind its back.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `cptlab run` for point {}", p.index))?;
        Ok((child, config_file))
    }

    pub fn run(
        plan: &Plan,
        dir: &Path,
        paths: &Paths,
        opts: Options,
        note: &mut dyn FnMut(Progress) -> Result<()>,
    ) -> Result<i32> {
        let total = plan.points.len();
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // A second signal exits at once (the children then get SIGTERM from the kernel).
            signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone())?;
            signal_hook::flag::register(sig, interrupted.clone())?;
        }
        let (mut done, mut skipped, mut failed) = (0usize, 0usize, 0usize);
        let mut queue: VecDeque<(usize, PointState)> = VecDeque::new();
        for p in &plan.points {
            match sweep::point_state(dir, p) {
                PointState::Ended(status, run_dir) => {
                    skipped += 1;
                    if status != RunStatus::Finished {
                        failed += 1;
                    }
                    super::note_skipped(note, p, status, &run_dir, total, opts.json)?;
                }
                state => queue.push_back((p.index, state)),
            }
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut running: Vec<Running> = Vec::new();
        let mut free: Vec<usize> = (0..opts.parallel).rev().collect();
        let mut stopping = false;
        let mut stop_sent = false;
        loop {
            while !stopping && !queue.is_empty() && !free.is_empty() {
                let (i, state) = queue.pop_front().expect("not empty");
                let p = &plan.points[i];
                let slot = free.pop().expect("not empty");
                let (event, verb) = match &state {
                    PointState::Interrupted(d) => (
                        Progress::PointResumed {
                            point: i,
                            label: p.label.clone(),
                            run_dir: d.clone(),
                        },
                        "resuming",
                    ),
                    _ => (
                        Progress::PointStarted {
                            point: i,
                            label: p.label.clone(),
                        },
                        "starting",
                    ),
                };
                note(event)?;
                match spawn(p, &state, slot, dir, paths, &opts) {
                    Ok((mut child, config)) => {
                        if !opts.json {
                            outln!(
                                "[{}/{total}] {}: {verb} (slot {slot}, pid {})",
                                i + 1,
                                p.label,
                                child.id()
                            )?;
                        }
                        let stdout = child.stdout.take().expect("stdout is piped");
                        let tx = tx.clone();
                        std::thread::Builder::new()
                            .name(format!("cptlab-sweep-p{i:03}"))
                            .spawn(move || {
                                for line in BufReader::new(stdout).lines() {
                                    let Ok(line) = line else { break };
                                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                                        if tx.send(Msg::Line(i, v)).is_err() {
                                            return;
                                        }
                                    }
                                }
                                let _ = tx.send(Msg::Exited(i));
                            })
                            .context("cannot start a thread to follow a point")?;
                        running.push(Running {
                            point: i,
                            slot,
                            child,
                            config,
                            summary: None,
                            error: None,
                        });
                    }
                    Err(e) => {
                        free.push(slot);
                        failed += 1;
                        note(Progress::PointFailed {
                            point: i,
                            label: p.label.clone(),
                            error: format!("{e:#}"),
                        })?;
                        errln!("point {i} ({}): {e:#}", p.label)?;
                        if opts.fail_fast {
                            stopping = true;
                        }
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            if interrupted.load(Ordering::SeqCst) && !stop_sent {
                // Every running point stops gracefully (checkpoint, summary `stopped`).
                stopping = true;
                stop_sent = true;
                for r in &running {
                    // SAFETY: kill only sends a signal to our own child's pid.
                    unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
                }
            }
            let msg = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                Msg::Line(i, mut v) => {
                    let r = running
                        .iter_mut()
                        .find(|r| r.point == i)
                        .expect("a running point");
                    match v["event"].as_str() {
                        Some("started") => {
                            if let Some(c) = r.config.take() {
                                let _ = std::fs::remove_file(c);
                            }
                        }
                        Some("finished") => r.summary = Some(v["summary"].clone()),
                        Some("failed") => r.error = v["error"].as_str().map(str::to_string),
                        _ => {}
                    }
                    if opts.json {
                        v["point"] = json!(i);
                        output::stdout().json_line(&v)?;
                    }
                }
                Msg::Exited(i) => {
                    let k = running
                        .iter()
                        .position(|r| r.point == i)
                        .expect("a running point");
                    let mut r = running.swap_remove(k);
                    let code = r.child.wait().ok().and_then(|s| s.code());
                    if let Some(c) = r.config.take() {
                        let _ = std::fs::remove_file(c);
                    }
                    free.push(r.slot);
                    let p = &plan.points[i];
                    let status = r
                        .summary
                        .as_ref()
                        .and_then(|s| s["status"].as_str())
                        .and_then(|s| RunStatus::ALL.into_iter().find(|k| k.as_str() == s))
                        .unwrap_or(RunStatus::Failed);
                    let summary = r.summary.clone().unwrap_or(Value::Null);
                    note(Progress::PointEnded {
                        point: i,
                        label: p.label.clone(),
                        status,
                        final_test_acc: summary["final_test_acc"].as_f64(),
                        run_dir: summary["run_dir"].as_str().map(PathBuf::from),
                        exit_code: code,
                    })?;
                    match status {
                        RunStatus::Finished => {
                            done += 1;
                            if !opts.json {
                                let acc = summary["final_test_acc"]
                                    .as_f64()
                                    .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
                                outln!(
                                    "[{}/{total}] {}: finished, final test accuracy {acc}",
                                    i + 1,
                                    p.label
                                )?;
                            }
                        }
                        RunStatus::Stopped => {
                            if !opts.json {
                                outln!("[{}/{total}] {}: stopped", i + 1, p.label)?;
                            }
                        }
                        RunStatus::Failed | RunStatus::Diverged => {
                            failed += 1;
                            let why = r.error.clone().unwrap_or_else(|| match code {
                                Some(c) => format!("`cptlab run` exited {c} without a summary"),
                                None => "`cptlab run` was killed by a signal".to_string(),
                            });
                            errln!("point {i} ({}): {status}: {why}", p.label)?;
                            if opts.fail_fast {
                                stopping = true;
                            }
                        }
                    }
                }
            }
        }
        if stop_sent {
            outln!("sweep stopped; run it again to resume the unfinished points")?;
            return Ok(exit_code(RunStatus::Stopped));
        }
        note(Progress::SweepEnded {
            trained: done,
            skipped,
            failed,
            points: total,
            dir: dir.to_path_buf(),
            parallel: Some(opts.parallel),
        })?;
        if !opts.json {
            outln!(
                "sweep {}: {done} trained, {skipped} already done, {failed} failed, of {total} points ({} at a time); compare with `cptlab compare {}`",
                plan.name,
                opts.parallel,
                dir.display()
            )?;
        }
        Ok(if failed > 0 {
            exit_code(RunStatus::Failed)
        } else {
            EXIT_OK
        })
    }
}
