//! The command line. Every subcommand works without a terminal; output for machines with
//! `--json` (one JSON object per line).
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::paths::{PathOverrides, Paths};
use crate::config::presets::{Origin, PresetStore, DEFAULT_PRESET};
use crate::config::{Override, RunConfig};
use crate::engine::{Job, JobSpec};
use crate::models::ModelKind;
use crate::telemetry::event::{Event, LogLevel};
use crate::telemetry::store;
use crate::telemetry::Summary;

pub mod schedule;

#[derive(Debug, Parser)]
#[command(
    name = "cptlab",
    version,
    about = "Train image classifiers with libtorch and compare precision schedules"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Preset loaded into the workbench's Setup view (TUI only; `run` has its own --preset)
    #[arg(long)]
    pub preset: Option<String>,
    /// Data for runs started from the workbench (TUI only; `run` has its own --data)
    #[arg(long, env = "CPTLAB_DATA")]
    pub data: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Where runs are recorded [env: CPTLAB_RUNS_DIR; default: the user data dir]
    #[arg(long, global = true)]
    pub runs_dir: Option<PathBuf>,
    /// Where user presets live [env: CPTLAB_PRESETS_DIR; default: the user config dir]
    #[arg(long, global = true)]
    pub presets_dir: Option<PathBuf>,
    /// Where decoded datasets are cached [env: CPTLAB_CACHE_DIR; default: the user cache dir]
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
}

impl GlobalArgs {
    pub fn paths(&self) -> Paths {
        Paths::resolve(&PathOverrides {
            runs: self.runs_dir.clone(),
            presets: self.presets_dir.clone(),
            cache: self.cache_dir.clone(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one run headless (progress bar on a terminal, JSON lines with --json)
    Run(RunArgs),
    /// Recorded runs
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Built-in and user presets
    #[command(subcommand)]
    Presets(PresetsCommand),
    /// Torch, CUDA and thread settings, and where files live
    Doctor,
    /// CPT's precision range test: the lowest precision at which training makes progress
    RangeTest(RangeTestArgs),
    /// One rank of a multi-machine job, started like torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
    /// MASTER_ADDR, MASTER_PORT, and CPTLAB_RDZV_TOKEN)
    Worker(WorkerArgs),
    /// Print an LR or precision schedule's curve (terminal plot, or CSV)
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Seconds per epoch beside a PyTorch eager reference (see docs/BENCHMARKS.md)
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Preset to start from (default: quickstart)
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// TOML config file to start from
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["preset", "config"])]
    pub resume: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// sgd, adam or adamw (other optimizer settings revert to that optimizer's defaults)
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Global batch size (all devices and micro-batches)
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data: synthetic[:TRAIN[:TEST]], download:cifar10, or a path (CIFAR binary or image folders, .tar.gz or folder)
    #[arg(long, env = "CPTLAB_DATA")]
    pub data: Option<String>,
    /// cpu or cuda:N
    #[arg(long)]
    pub devices: Option<String>,
    /// Intra-op threads per worker
    #[arg(long)]
    pub threads: Option<usize>,
    /// ZeRO stage: 0 (replicated optimizer state) or 1 (sharded across workers)
    #[arg(long)]
    pub zero: Option<u8>,
    /// Number format: fp32
    #[arg(long)]
    pub precision: Option<String>,
    /// Cyclic precision schedule: static cpt CR CT LR LT ER ETV ETH RR RTV RTH
    #[arg(long)]
    pub cpt: Option<String>,
    /// Lowest forward bits of the precision schedule
    #[arg(long)]
    pub q_min: Option<u32>,
    /// Highest forward bits of the precision schedule
    #[arg(long)]
    pub q_max: Option<u32>,
    /// Cycles of the precision schedule over the run
    #[arg(long)]
    pub cycles: Option<u32>,
    /// Backward (error and gradient) bits
    #[arg(long)]
    pub q_bwd: Option<u32>,
    /// Override any config field: --set optimizer.momentum=0.9 (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// One JSON object per event on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RangeTestArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Lowest precision tried
    #[arg(long, default_value_t = 2)]
    pub from: u32,
    /// Highest precision tried
    #[arg(long, default_value_t = 8)]
    pub to: u32,
    /// Optimizer steps per precision
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Relative loss fall (first tenth vs last tenth of the steps) that counts as progress
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// Record the short runs in the runs directory (default: a temporary directory)
    #[arg(long)]
    pub keep_runs: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Only rendezvous: agree on the config with every rank, print the peers, exit
    #[arg(long)]
    pub check: bool,
    /// Seconds to wait for every rank at the rendezvous
    #[arg(long, default_value_t = 300)]
    pub rdzv_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recorded runs, newest first
    List {
        #[arg(long)]
        json: bool,
    },
    /// One run's config and summary
    Show {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// A run's metrics as CSV (steps, or evaluations with --evals)
    Export {
        run: String,
        #[arg(long, required = true)]
        csv: bool,
        #[arg(long)]
        evals: bool,
        /// Write to this file (atomically) instead of stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PresetsCommand {
    List,
    /// A preset's TOML
    Show {
        name: String,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> Result<i32> {
    let paths = cli.global.paths();
    match cli.command {
        None => crate::tui::run(
            &paths,
            crate::tui::TuiOptions {
                preset: cli.preset,
                data: cli.data,
            },
        ),
        Some(Command::Run(args)) => run(args, &paths),
        Some(Command::Runs(c)) => runs(c, &paths).map(|()| 0),
        Some(Command::Presets(c)) => presets(c, &paths).map(|()| 0),
        Some(Command::Doctor) => {
            doctor(&paths);
            Ok(0)
        }
        Some(Command::Bench(args)) => crate::bench::run(args, &paths).map(|()| 0),
        Some(Command::RangeTest(args)) => range_test(args, &paths).map(|()| 0),
        Some(Command::Schedule(cmd)) => schedule::run(cmd).map(|()| 0),
        Some(Command::Worker(args)) => worker(args, &paths),
    }
}

/// The config a `run` command describes: preset or file, then flags, then `--set`.
pub fn build_config(args: &RunArgs, paths: &Paths) -> Result<RunConfig> {
    let presets = PresetStore::new(&paths.presets);
    let base = match (&args.config, &args.preset) {
        (Some(file), _) => RunConfig::from_file(file)?,
        (None, Some(name)) => presets.load(name)?,
        (None, None) => presets.load(DEFAULT_PRESET)?,
    };
    let mut o: Vec<Override> = Vec::new();
    let v = |x: toml::Value| x;
    if let Some(n) = &args.name {
        o.push(Override::new("name", v(n.clone().into())));
    }
    if let Some(m) = args.model {
        o.push(Override::new("model.kind", v(m.to_string().into())));
    }
    let mut config = base.with_overrides(&o)?;
    if let Some(kind) = &args.optimizer {
        // Switching optimizer keeps the learning rate; other fields take the new one's defaults.
        if kind != config.optimizer.kind_name() {
            let mut t = toml::Table::new();
            t.insert("kind".into(), kind.clone().into());
            t.insert("lr".into(), config.optimizer.lr().into());
            let o = Override {
                key: vec!["optimizer".into()],
                value: toml::Value::Table(t),
            };
            config = config.with_overrides(&[o])?;
        }
    }
    let mut o: Vec<Override> = Vec::new();
    if let Some(x) = args.lr {
        o.push(Override::new("optimizer.lr", x.into()));
    }
    if let Some(x) = args.batch_size {
        o.push(Override::new("train.batch_size", (x as i64).into()));
    }
    if let Some(x) = args.epochs {
        o.push(Override::new("train.epochs", (x as i64).into()));
    }
    if let Some(x) = args.max_steps {
        o.push(Override::new("train.max_steps", (x as i64).into()));
    }
    if let Some(x) = args.seed {
        o.push(Override::new("seed", (x as i64).into()));
    }
    if let Some(x) = &args.data {
        o.push(Override::new("data.source", x.clone().into()));
    }
    if let Some(x) = &args.devices {
        o.push(Override::new("devices.devices", x.clone().into()));
    }
    if let Some(x) = args.threads {
        o.push(Override::new("devices.threads", (x as i64).into()));
    }
    if let Some(x) = args.zero {
        o.push(Override::new("devices.zero", (x as i64).into()));
    }
    if let Some(x) = &args.precision {
        o.push(Override::new("precision.mode", x.clone().into()));
    }
    if let Some(x) = &args.cpt {
        let kind: crate::schedule::precision::PrecisionScheduleKind =
            x.parse().map_err(|e| anyhow::anyhow!("--cpt: {e}"))?;
        o.push(Override::new(
            "precision.schedule.kind",
            kind.name().to_string().into(),
        ));
    }
    let schedule_flags = [
        ("q_min", args.q_min),
        ("q_max", args.q_max),
        ("cycles", args.cycles),
        ("q_bwd", args.q_bwd),
    ];
    for (key, value) in schedule_flags {
        if let Some(v) = value {
            if args.cpt.is_none() && config.precision.schedule.is_none() {
                anyhow::bail!(
                    "--{}: the config has no precision schedule; name one with --cpt (e.g. --cpt CR)",
                    key.replace('_', "-")
                );
            }
            o.push(Override::new(
                &format!("precision.schedule.{key}"),
                (v as i64).into(),
            ));
        }
    }
    for s in &args.set {
        o.push(s.parse()?);
    }
    let config = config.with_overrides(&o)?;
    config.validate()?;
    Ok(config)
}

/// What may change when a run is resumed: where and how it runs, not what it computes.
fn resume_overrides(args: &RunArgs) -> Result<Vec<Override>> {
    let mut o = Vec::new();
    if let Some(x) = &args.devices {
        o.push(Override::new("devices.devices", x.clone().into()));
    }
    if let Some(x) = args.threads {
        o.push(Override::new("devices.threads", (x as i64).into()));
    }
    if let Some(x) = args.zero {
        o.push(Override::new("devices.zero", (x as i64).into()));
    }
    for s in &args.set {
        let ov: Override = s.parse()?;
        anyhow::ensure!(
            ov.key.first().map(String::as_str) == Some("devices"),
            "--set {s}: a resumed run keeps its recorded config; only devices.* may change"
        );
        o.push(ov);
    }
    Ok(o)
}

fn run(args: RunArgs, paths: &Paths) -> Result<i32> {
    let job = match &args.resume {
        Some(dir) => {
            let dir = store::resolve_run_dir(&paths.runs, dir)?;
            Job::resume(&dir, paths.clone(), &resume_overrides(&args)?)?
        }
        None => {
            let config = build_config(&args, paths)?;
            Job::start(JobSpec {
                config,
                paths: paths.clone(),
            })?
        }
    };
    let summary = if args.json {
        follow_json(job)?
    } else {
        follow_human(job)?
    };
    Ok(match summary.status.as_str() {
        "finished" => 0,
        "stopped" => 130,
        _ => 1,
    })
}

/// Feeds every event of `job` to `f` until the run ends. SIGINT/SIGTERM ask the run to stop
/// gracefully (checkpoint, summary "stopped"); a second one exits at once.
fn follow(job: Job, mut f: impl FnMut(Event) -> Result<()>) -> Result<Summary> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Exit code 130 on the second signal, when the first is already being handled.
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone())?;
        signal_hook::flag::register(sig, interrupted.clone())?;
    }
    let mut stop_sent = false;
    loop {
        match job.events().recv_timeout(Duration::from_millis(100)) {
            Ok(event) => f(event)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if interrupted.load(Ordering::SeqCst) && !stop_sent {
            job.control().stop();
            stop_sent = true;
        }
    }
    Ok(job.wait())
}

fn follow_json(job: Job) -> Result<Summary> {
    let stdout = std::io::stdout();
    follow(job, |event| {
        let mut out = stdout.lock();
        // A closed pipe (`| head`, a workbench whose terminal went away) must not stop
        // training: the run directory keeps recording.
        let _ = serde_json::to_writer(&mut out, &event);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
        Ok(())
    })
}

fn follow_human(job: Job) -> Result<Summary> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        Some(b)
    } else {
        None
    };
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    };
    follow(job, |event| {
        match event {
            Event::Started(s) => {
                say(format!(
                    "run {}: {} ({} params) on {} ({} train / {} test), {} epochs × {} steps, {} on {} thread(s)",
                    s.name, s.model, s.params, s.dataset, s.train_size, s.test_size, s.epochs,
                    s.steps_per_epoch, s.devices.join(","), s.threads
                ));
                say(format!("recording to {}", s.run_dir));
                if let Some(b) = &bar {
                    b.set_length(s.total_steps);
                    b.set_position(
                        s.total_steps
                            .min(s.resumed_after_epoch.unwrap_or(0) * s.steps_per_epoch),
                    );
                }
            }
            Event::Step(s) => {
                if let Some(b) = &bar {
                    b.set_position(s.step);
                    b.set_prefix(format!("{}", s.epoch + 1));
                    b.set_message(format!("loss {:.4} lr {:.3e}", s.loss, s.lr));
                }
            }
            Event::Eval(e) => say(format!(
                "epoch {:>3}  train loss {:.4}  test loss {:.4}  test acc {:6.2}%  {:.1}s",
                e.epoch + 1,
                e.train_loss,
                e.test_loss,
                e.test_acc * 100.0,
                e.epoch_seconds
            )),
            Event::Log { level, message } => say(match level {
                LogLevel::Info => message,
                LogLevel::Warn => format!("warning: {message}"),
            }),
            Event::Checkpoint { .. } => {}
            Event::Finished { summary } => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                print_summary(&summary);
            }
            Event::Failed { error, .. } => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                eprintln!("error: {error}");
            }
        }
        Ok(())
    })
}

fn print_summary(s: &Summary) {
    let pct = |x: Option<f64>| {
        x.map(|a| format!("{:.2}%", a * 100.0))
            .unwrap_or("-".into())
    };
    println!(
        "{}: {} after {} epochs ({} steps, {:.1}s training); final test acc {}, best {}{}",
        s.name,
        s.status,
        s.epochs,
        s.steps,
        s.train_seconds,
        pct(s.final_test_acc),
        pct(s.best_test_acc),
        s.best_epoch
            .map(|e| format!(" (epoch {})", e + 1))
            .unwrap_or_default()
    );
    if !s.per_class_acc.is_empty() {
        let parts: Vec<String> = s
            .per_class_acc
            .iter()
            .map(|c| format!("{} {:.1}%", c.class, c.acc * 100.0))
            .collect();
        println!("per class: {}", parts.join(", "));
    }
    println!("run directory: {}", s.run_dir);
}

/// One rank of a multi-process job: rendezvous with rank 0 (which hands out the NCCL id and its
/// resolved config, checked against this rank's own), then train on `cuda:LOCAL_RANK`.
fn worker(args: WorkerArgs, paths: &Paths) -> Result<i32> {
    use crate::engine::collective::nccl::NcclCollective;
    use crate::engine::rendezvous::{self, RendezvousEnv};
    anyhow::ensure!(
        args.run.resume.is_none(),
        "--resume does not apply to `cptlab worker`"
    );
    let env = RendezvousEnv::from_env()?;
    let token = rendezvous::token_from_env()?;
    let timeout = Duration::from_secs(args.rdzv_timeout);
    let mut config = build_config(&args.run, paths)?;
    // Every rank resolves the data source the same way, so the configs compare equal.
    crate::engine::job::resolve_data_source(&mut config)?;
    let own = config.to_toml();
    let (blob, agreed) = if env.rank == 0 {
        let blob = if args.check {
            Vec::new()
        } else {
            NcclCollective::unique_id()?
        };
        let peers = rendezvous::host(&env, &token, &blob, &own, timeout)?;
        if args.check {
            for p in &peers {
                println!(
                    "rank {} (local {}) on {} at {}",
                    p.rank, p.local_rank, p.hostname, p.addr
                );
            }
        }
        (blob, own)
    } else {
        rendezvous::join(&env, &token, Some(rendezvous::config_hash(&own)), timeout)?
    };
    if args.check {
        println!(
            "rank {} of {}: rendezvous complete, config {}",
            env.rank,
            env.world_size,
            hex::encode(&rendezvous::config_hash(&agreed)[..8])
        );
        return Ok(0);
    }
    let config = RunConfig::from_toml_str(&agreed, "the config rank 0 handed out")?;
    let device = tch::Device::Cuda(env.local_rank);
    let collective = NcclCollective::from_id(&blob, env.rank, env.world_size, device)?;
    let job = Job::start_rank(
        JobSpec {
            config,
            paths: paths.clone(),
        },
        device,
        Box::new(collective),
    )?;
    let summary = if args.run.json {
        follow_json(job)?
    } else {
        follow_human(job)?
    };
    Ok(if summary.status == "finished" { 0 } else { 1 })
}

fn range_test(args: RangeTestArgs, paths: &Paths) -> Result<()> {
    use crate::engine::range_test::{self, RangeTestOptions};
    anyhow::ensure!(
        args.run.resume.is_none(),
        "--resume does not apply to a range test"
    );
    let config = build_config(&args.run, paths)?;
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
    let json = args.run.json;
    if !json {
        println!(
            "range test: {} on {} steps per precision, progress = loss falls by {:.0}%",
            config.model.kind,
            args.steps,
            args.threshold * 100.0
        );
        println!(
            "{:>5} {:>11} {:>11} {:>8}  PROGRESS",
            "BITS", "FIRST LOSS", "LAST LOSS", "FALL"
        );
    }
    let rows = range_test::run(&config, &test_paths, &opts, |r| {
        if json {
            println!("{}", serde_json::json!({"event": "range", "row": r}));
        } else {
            println!(
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
            );
        }
    })?;
    let suggestion = range_test::suggest_q_min(&rows);
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "suggestion", "q_min": suggestion})
        );
    } else {
        match suggestion {
            Some(q) => println!("suggested q_min: {q}"),
            None => println!(
                "no precision up to {} made progress: raise --to or --steps, or lower --threshold",
                args.to
            ),
        }
    }
    Ok(())
}

fn runs(c: RunsCommand, paths: &Paths) -> Result<()> {
    match c {
        RunsCommand::List { json } => {
            let runs = store::list_runs(&paths.runs);
            if json {
                for r in runs {
                    let v = serde_json::json!({
                        "run": r.name, "dir": r.dir, "status": r.status(),
                        "summary": r.summary,
                    });
                    println!("{v}");
                }
                return Ok(());
            }
            if runs.is_empty() {
                println!("no runs in {}", paths.runs.display());
                return Ok(());
            }
            println!(
                "{:<40} {:<10} {:>6} {:>9} {:>9} {:>9}",
                "RUN", "STATUS", "EPOCHS", "FINAL", "BEST", "S/EPOCH"
            );
            for r in runs {
                let s = r.summary.clone().unwrap_or_default();
                let pct = |x: Option<f64>| {
                    x.map(|a| format!("{:.2}%", a * 100.0))
                        .unwrap_or("-".into())
                };
                let spe = if s.seconds_per_epoch.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1}", s.train_seconds / s.seconds_per_epoch.len() as f64)
                };
                println!(
                    "{:<40} {:<10} {:>6} {:>9} {:>9} {:>9}",
                    r.name,
                    r.status(),
                    s.epochs,
                    pct(s.final_test_acc),
                    pct(s.best_test_acc),
                    spe
                );
            }
        }
        RunsCommand::Show { run, json } => {
            let dir = store::resolve_run_dir(&paths.runs, &run)?;
            let summary = store::read_summary(&dir).ok();
            if json {
                let config = RunConfig::from_file(&dir.join(store::CONFIG_FILE))?;
                println!(
                    "{}",
                    serde_json::json!({"dir": dir, "config": config, "summary": summary})
                );
                return Ok(());
            }
            println!("# {}", dir.display());
            print!("{}", std::fs::read_to_string(dir.join(store::CONFIG_FILE))?);
            match summary {
                Some(s) => {
                    println!();
                    print_summary(&s);
                    if let Some(e) = &s.error {
                        println!("error: {e}");
                    }
                }
                None => println!("\n(no summary: the run is live, or was interrupted — resume it with `cptlab run --resume {}`)", dir.display()),
            }
        }
        RunsCommand::Export {
            run,
            csv: _,
            evals,
            output,
        } => {
            let dir = store::resolve_run_dir(&paths.runs, &run)?;
            let events = store::read_metrics(&dir)?;
            let text = if evals {
                crate::telemetry::store::evals_csv(&events)
            } else {
                crate::telemetry::store::steps_csv(&events)
            };
            match output {
                Some(p) => store::write_atomic(&p, text.as_bytes())
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                }
            }
        }
    }
    Ok(())
}

fn presets(c: PresetsCommand, paths: &Paths) -> Result<()> {
    let store = PresetStore::new(&paths.presets);
    match c {
        PresetsCommand::List => {
            println!("{:<22} {:<9} DESCRIPTION", "NAME", "ORIGIN");
            for p in store.list() {
                let origin = match &p.origin {
                    Origin::BuiltIn => "built-in".to_string(),
                    Origin::User(_) if p.shadows_built_in => "user*".to_string(),
                    Origin::User(_) => "user".to_string(),
                };
                let desc = match &p.config {
                    Ok(c) => c.description.clone(),
                    Err(e) => format!("INVALID: {e}"),
                };
                println!("{:<22} {:<9} {}", p.name, origin, desc);
            }
            println!(
                "\nuser presets: {} (user* = shadows a built-in)",
                store.dir().display()
            );
        }
        PresetsCommand::Show { name } => print!("{}", store.text(&name)?),
    }
    Ok(())
}

fn doctor(paths: &Paths) {
    println!("cptlab {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch (built against): {}", env!("CPTLAB_TORCH_VERSION"));
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
    println!("cuda devices: {}", tch::Cuda::device_count());
    if cuda {
        println!("cudart version: {}", tch::utils::version_cudart());
        println!("cudnn version: {}", tch::utils::version_cudnn());
    }
    println!("intra-op threads: {}", tch::get_num_threads());
    println!(
        "cpu cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let presets = PresetStore::new(&paths.presets);
    println!("presets: {}", presets.dir().display());
    println!("runs: {}", paths.runs.display());
    println!("cache: {}", paths.cache.display());
    println!(
        "data (CPTLAB_DATA): {}",
        std::env::var("CPTLAB_DATA").unwrap_or_else(|_| "(unset: synthetic)".into())
    );
}
