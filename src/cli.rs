//! The command line. Every subcommand works without a terminal; output for machines with
//! `--json` (one JSON object per line). Everything printed goes through `output` (a closed pipe
//! ends a listing quietly and never stops a run); runs are followed by `follow`.
//!
//! Exit codes: 0 finished (or a listing whose reader closed the pipe), 1 failed or diverged
//! (and any other error), 2 a wrong command line (clap's code for usage errors, also used for
//! flags a command refuses), 130 a run stopped by a signal.
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::paths::{PathOverrides, Paths};
use crate::config::presets::{Origin, PresetStore, DEFAULT_PRESET};
use crate::config::{Override, RunConfig};
use crate::engine::{Job, JobSpec};
use crate::models::ModelKind;
use crate::telemetry::store;
use crate::telemetry::{Event, RunStatus};

pub mod bench;
pub mod follow;
pub mod output;
pub mod schedule;

use follow::{follow_human, follow_json, print_summary, Signals};
use output::{errln, outln, OutputError};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
/// clap's exit code for usage errors.
pub const EXIT_USAGE: i32 = 2;
/// 128 + SIGINT, as a shell reports Ctrl-C; also for SIGTERM and SIGHUP.
pub const EXIT_STOPPED: i32 = 130;

/// How `cptlab run` and `cptlab worker` exit, from the run's final status.
pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Finished => EXIT_OK,
        RunStatus::Stopped => EXIT_STOPPED,
        RunStatus::Diverged | RunStatus::Failed => EXIT_FAILED,
    }
}

/// A wrong command line that clap cannot see (a flag a command refuses, a malformed `--set`):
/// exits with clap's code for usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

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
    Bench(bench::BenchArgs),
}

/// A count flag: any integer a TOML config can hold (i64's range). The config's own bounds
/// (`RunConfig::validate`) then name the field.
fn count() -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(0..=i64::MAX as u64)
}

fn count_usize() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(0..=i64::MAX as u64)
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Preset to start from (default: quickstart)
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// TOML config file to start from
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (with --max-steps/--epochs: further)
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["preset", "config"])]
    pub resume: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// Optimizer (settings both optimizers have, such as lr, are kept; the others take the new
    /// optimizer's defaults)
    #[arg(long, value_parser = crate::config::OptimizerKind::value_parser())]
    pub optimizer: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Global batch size (all devices and micro-batches)
    #[arg(long, value_parser = count_usize(), allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub epochs: Option<u64>,
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub max_steps: Option<u64>,
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Data: synthetic[:TRAIN[:TEST]], download:cifar10, or a path (CIFAR binary or image folders, .tar.gz or folder)
    #[arg(long, env = "CPTLAB_DATA")]
    pub data: Option<String>,
    /// cpu or cuda:N
    #[arg(long)]
    pub devices: Option<String>,
    /// Intra-op threads per worker
    #[arg(long, value_parser = count_usize(), allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// ZeRO stage: 0 (replicated optimizer state) or 1 (sharded across workers)
    #[arg(long, allow_negative_numbers = true)]
    pub zero: Option<u8>,
    /// Number format
    #[arg(long, value_parser = crate::config::PrecisionMode::value_parser())]
    pub precision: Option<String>,
    /// Cyclic precision schedule: static cpt CR CT LR LT ER ETV ETH RR RTV RTH
    #[arg(long)]
    pub cpt: Option<String>,
    /// Lowest forward bits of the precision schedule
    #[arg(long, allow_negative_numbers = true)]
    pub q_min: Option<u32>,
    /// Highest forward bits of the precision schedule
    #[arg(long, allow_negative_numbers = true)]
    pub q_max: Option<u32>,
    /// Cycles of the precision schedule over the run
    #[arg(long, allow_negative_numbers = true)]
    pub cycles: Option<u32>,
    /// Backward (error and gradient) bits
    #[arg(long, allow_negative_numbers = true)]
    pub q_bwd: Option<u32>,
    /// Override any config field: --set optimizer.momentum=0.9 (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// One JSON object per event on stdout
    #[arg(long)]
    pub json: bool,
    /// The flags given on the command line (long names; not those from the environment),
    /// filled in by `entry`: what `--resume` checks.
    #[arg(skip)]
    pub given: Vec<String>,
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
    #[arg(long, default_value_t = 200, value_parser = count())]
    pub steps: u64,
    /// Relative loss fall (first tenth vs last tenth of the steps) that counts as progress
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
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

/// The `tracing` subscriber: `CPTLAB_LOG` filters, stderr, never a panic on a closed stderr.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CPTLAB_LOG"))
        .with_writer(|| output::TracingWriter)
        .log_internal_errors(false)
        .try_init();
}

/// The whole program: parses `args` (the first is the program name), runs the command, prints
/// any error on stderr, and returns the exit code.
pub fn entry<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" too, printed on stdout with code 0.
            let code = e.exit_code();
            if code != EXIT_OK && streams_events(&args) {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                print_failed_event(first.trim_start_matches("error: "));
            }
            // clap's own printing ignores a closed pipe.
            let _ = e.print();
            return code;
        }
    };
    let code = match main(cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    // What is still buffered (text without a final newline) must reach stdout too. A failure
    // the command already met was its to handle: a run only warns, and exits as the run ended.
    let unseen = output::stdout().is_open();
    match output::stdout().flush() {
        Err(e @ OutputError::Failed { .. }) if unseen && code == EXIT_OK => {
            let _ = errln!("error: {e}");
            EXIT_FAILED
        }
        _ => code,
    }
}

fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Some(Command::Run(run)), Some(("run", sub))) = (&mut cli.command, matches.subcommand())
    {
        run.given = given_flags(sub, "run");
    }
    Ok(cli)
}

/// The long names of the flags of subcommand `name` that the command line itself gave.
fn given_flags(m: &ArgMatches, name: &str) -> Vec<String> {
    let cmd = Cli::command();
    let Some(sub) = cmd.find_subcommand(name) else {
        return Vec::new();
    };
    sub.get_arguments()
        .filter(|a| {
            m.try_contains_id(a.get_id().as_str()).unwrap_or(false)
                && m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// Whether the command line asks for JSON events (`run`, `worker` or `range-test` with `--json`):
/// then even a usage error ends stdout with a `failed` event.
fn streams_events(args: &[OsString]) -> bool {
    if !args.iter().any(|a| a == "--json") {
        return false;
    }
    // The first word that is neither a flag nor the value of a top-level flag.
    let takes_value = [
        "--runs-dir",
        "--presets-dir",
        "--cache-dir",
        "--preset",
        "--data",
    ];
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        let w = w.to_string_lossy();
        if takes_value.contains(&w.as_ref()) {
            words.next();
        } else if !w.starts_with('-') {
            return matches!(w.as_ref(), "run" | "worker" | "range-test");
        }
    }
    false
}

/// `{"event":"failed","error":…}` on stdout.
fn print_failed_event(error: &str) {
    let _ = output::stdout().json_line(&Event::Failed {
        error: error.to_string(),
        step: None,
    });
}

/// Prints a command's error and gives its exit code; a closed pipe is no error.
fn report(e: &anyhow::Error) -> i32 {
    if let Some(OutputError::Closed(_)) = OutputError::in_chain(e) {
        return EXIT_OK;
    }
    let _ = errln!("error: {e:#}");
    if e.chain().any(|c| c.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
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
        Some(Command::Runs(c)) => runs(c, &paths).map(|()| EXIT_OK),
        Some(Command::Presets(c)) => presets(c, &paths).map(|()| EXIT_OK),
        Some(Command::Doctor) => doctor(&paths).map(|()| EXIT_OK),
        Some(Command::Bench(args)) => bench::run(args, &paths).map(|()| EXIT_OK),
        Some(Command::RangeTest(args)) => {
            let json = args.run.json;
            with_failed_event(json, range_test(args, &paths)).map(|()| EXIT_OK)
        }
        Some(Command::Schedule(cmd)) => schedule::run(cmd).map(|()| EXIT_OK),
        Some(Command::Worker(args)) => {
            let json = args.run.json;
            with_failed_event(json, worker(args, &paths))
        }
    }
}

/// Under `--json`, an error of a command that streams events ends its stdout with one `failed`
/// event (the run's own failures arrive as events and are not errors here).
fn with_failed_event<T>(json: bool, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        let closed = matches!(OutputError::in_chain(e), Some(OutputError::Closed(_)));
        if json && !closed {
            print_failed_event(&format!("{e:#}"));
        }
    }
    r
}

/// A flag's count as a TOML integer (the flag parsers keep them in i64's range).
fn int(flag: &str, x: impl TryInto<i64>) -> Result<toml::Value> {
    x.try_into()
        .map(toml::Value::Integer)
        .map_err(|_| usage(format!("{flag}: too large for a config value")))
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
    if let Some(n) = &args.name {
        o.push(Override::new("name", n.clone().into()));
    }
    if let Some(m) = args.model {
        o.push(Override::new("model.kind", m.to_string().into()));
    }
    if let Some(kind) = &args.optimizer {
        // A new kind keeps the settings it shares with the old one (lr, weight_decay, …):
        // `with_overrides` drops the rest.
        o.push(Override::new("optimizer.kind", kind.clone().into()));
    }
    if let Some(x) = args.lr {
        o.push(Override::new("optimizer.lr", x.into()));
    }
    if let Some(x) = args.batch_size {
        o.push(Override::new("train.batch_size", int("--batch-size", x)?));
    }
    o.extend(length_overrides(args)?);
    if let Some(x) = args.seed {
        o.push(Override::new("seed", int("--seed", x)?));
    }
    if let Some(x) = &args.data {
        o.push(Override::new("data.source", x.clone().into()));
    }
    o.extend(device_overrides(args)?);
    if let Some(x) = &args.precision {
        o.push(Override::new("precision.mode", x.clone().into()));
    }
    if let Some(x) = &args.cpt {
        let kind: crate::schedule::precision::PrecisionScheduleKind =
            x.parse().map_err(|e| usage(format!("--cpt: {e}")))?;
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
            if args.cpt.is_none() && base.precision.schedule.is_none() {
                return Err(usage(format!(
                    "--{}: the config has no precision schedule; name one with --cpt (e.g. --cpt CR)",
                    key.replace('_', "-")
                )));
            }
            o.push(Override::new(
                &format!("precision.schedule.{key}"),
                i64::from(v).into(),
            ));
        }
    }
    for s in &args.set {
        o.push(parse_set(s)?);
    }
    let config = base.with_overrides(&o)?;
    config.validate()?;
    Ok(config)
}

fn parse_set(s: &str) -> Result<Override> {
    s.parse::<Override>()
        .map_err(|e| usage(format!("--set {s}: {e}")))
}

/// `--epochs`, `--max-steps`: how long a run trains (also accepted by `--resume`, to extend it).
fn length_overrides(args: &RunArgs) -> Result<Vec<Override>> {
    let mut o = Vec::new();
    if let Some(x) = args.epochs {
        o.push(Override::new("train.epochs", int("--epochs", x)?));
    }
    if let Some(x) = args.max_steps {
        o.push(Override::new("train.max_steps", int("--max-steps", x)?));
    }
    Ok(o)
}

/// `--devices`, `--threads`, `--zero`: where a run trains (also accepted by `--resume`).
fn device_overrides(args: &RunArgs) -> Result<Vec<Override>> {
    let mut o = Vec::new();
    if let Some(x) = &args.devices {
        o.push(Override::new("devices.devices", x.clone().into()));
    }
    if let Some(x) = args.threads {
        o.push(Override::new("devices.threads", int("--threads", x)?));
    }
    if let Some(x) = args.zero {
        o.push(Override::new("devices.zero", int("--zero", x)?));
    }
    Ok(o)
}

/// Flags `--resume` accepts: where the run goes on and for how long, not what it computes.
const RESUME_FLAGS: [&str; 8] = [
    "resume",
    "json",
    "max-steps",
    "epochs",
    "devices",
    "threads",
    "zero",
    "set",
];

/// Config keys (or their tables) `--set` may change on resume.
const RESUME_KEYS: [&str; 3] = ["devices", "train.max_steps", "train.epochs"];

/// The overrides a resumed run takes: `--max-steps`/`--epochs` (to extend it), where it runs
/// (`--devices --threads --zero`), and `--set` of those keys. Any other flag would change the
/// run's numbers and is refused, by name.
fn resume_overrides(args: &RunArgs) -> Result<Vec<Override>> {
    if let Some(flag) = args
        .given
        .iter()
        .find(|f| !RESUME_FLAGS.contains(&f.as_str()))
    {
        return Err(usage(format!(
            "--{flag} does not apply to --resume: a resumed run keeps the config it recorded. \
             It may go on longer (--max-steps, --epochs) and elsewhere (--devices, --threads, \
             --zero, --set {})",
            RESUME_KEYS.join("|")
        )));
    }
    let mut o = length_overrides(args)?;
    o.extend(device_overrides(args)?);
    for s in &args.set {
        let ov = parse_set(s)?;
        let key = ov.key.join(".");
        let allowed = RESUME_KEYS
            .iter()
            .any(|k| key == *k || key.starts_with(&format!("{k}.")));
        if !allowed {
            return Err(usage(format!(
                "--set {s}: a resumed run keeps the config it recorded; --set may change only {}",
                RESUME_KEYS.join(", ")
            )));
        }
        o.push(ov);
    }
    Ok(o)
}

/// A resumed run's new length must lie ahead of its checkpoint.
fn check_resume_length(dir: &std::path::Path, overrides: &[Override]) -> Result<()> {
    use crate::engine::checkpoint;
    let ckpt = dir.join(store::CHECKPOINT_DIR).join(checkpoint::LAST);
    let Ok(meta) = checkpoint::read_meta(&ckpt) else {
        // Job::resume says what is wrong with it.
        return Ok(());
    };
    let value = |key: &str| {
        overrides
            .iter()
            .rev()
            .find(|o| o.key.join(".") == key)
            .and_then(|o| o.value.as_integer())
    };
    if let Some(m) = value("train.max_steps") {
        anyhow::ensure!(
            u64::try_from(m).is_ok_and(|m| m > meta.global_step),
            "--max-steps {m}: the run is already at step {}; give more steps to continue it",
            meta.global_step
        );
    }
    if let Some(e) = value("train.epochs") {
        anyhow::ensure!(
            u64::try_from(e).is_ok_and(|e| e > meta.epochs_done),
            "--epochs {e}: the run has already completed {} epochs",
            meta.epochs_done
        );
    }
    Ok(())
}

/// `cptlab run`: exit code from how the run ended; under `--json`, an error before the run
/// starts (config, data, devices) still ends stdout with one `failed` event.
fn run(args: RunArgs, paths: &Paths) -> Result<i32> {
    let json = args.json;
    with_failed_event(json, run_inner(args, paths))
}

fn run_inner(args: RunArgs, paths: &Paths) -> Result<i32> {
    let signals = Signals::install()?;
    let job = match &args.resume {
        Some(dir) => {
            let dir = store::resolve_run_dir(&paths.runs, dir)?;
            let overrides = resume_overrides(&args)?;
            check_resume_length(&dir, &overrides)?;
            Job::resume(&dir, paths.clone(), &overrides)?
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
        follow_json(job, &signals)
    } else {
        follow_human(job, &signals)
    };
    Ok(exit_code(summary.status))
}

/// One rank of a multi-process job: rendezvous with rank 0 (which hands out the NCCL id and its
/// resolved config, checked against this rank's own), then train on `cuda:LOCAL_RANK`.
fn worker(args: WorkerArgs, paths: &Paths) -> Result<i32> {
    use crate::engine::collective::nccl::NcclCollective;
    use crate::engine::rendezvous::{self, RendezvousEnv};
    if args.run.resume.is_some() {
        return Err(usage("--resume does not apply to `cptlab worker`"));
    }
    let signals = Signals::install()?;
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
                outln!(
                    "rank {} (local {}) on {} at {}",
                    p.rank,
                    p.local_rank,
                    p.hostname,
                    p.addr
                )?;
            }
        }
        (blob, own)
    } else {
        rendezvous::join(&env, &token, Some(rendezvous::config_hash(&own)), timeout)?
    };
    if args.check {
        outln!(
            "rank {} of {}: rendezvous complete, config {}",
            env.rank,
            env.world_size,
            hex::encode(&rendezvous::config_hash(&agreed)[..8])
        )?;
        return Ok(EXIT_OK);
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
        follow_json(job, &signals)
    } else {
        follow_human(job, &signals)
    };
    Ok(exit_code(summary.status))
}

fn range_test(args: RangeTestArgs, paths: &Paths) -> Result<()> {
    use crate::engine::range_test::{self, RangeTestOptions};
    if args.run.resume.is_some() {
        return Err(usage("--resume does not apply to a range test"));
    }
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

fn runs(c: RunsCommand, paths: &Paths) -> Result<()> {
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
                None => output::stdout().write_str(&text)?,
            }
        }
    }
    Ok(())
}

fn presets(c: PresetsCommand, paths: &Paths) -> Result<()> {
    let store = PresetStore::new(&paths.presets);
    match c {
        PresetsCommand::List => {
            outln!("{:<22} {:<9} DESCRIPTION", "NAME", "ORIGIN")?;
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
                outln!("{:<22} {:<9} {}", p.name, origin, desc)?;
            }
            outln!(
                "\nuser presets: {} (user* = shadows a built-in)",
                store.dir().display()
            )?;
        }
        PresetsCommand::Show { name } => output::stdout().write_str(&store.text(&name)?)?,
    }
    Ok(())
}

fn doctor(paths: &Paths) -> Result<()> {
    outln!("cptlab {}", env!("CARGO_PKG_VERSION"))?;
    outln!("libtorch (built against): {}", env!("CPTLAB_TORCH_VERSION"))?;
    let cuda = tch::Cuda::is_available();
    outln!("cuda available: {cuda}")?;
    outln!("cudnn available: {}", tch::Cuda::cudnn_is_available())?;
    outln!("cuda devices: {}", tch::Cuda::device_count())?;
    if cuda {
        outln!("cudart version: {}", tch::utils::version_cudart())?;
        outln!("cudnn version: {}", tch::utils::version_cudnn())?;
    }
    outln!("intra-op threads: {}", tch::get_num_threads())?;
    outln!(
        "cpu cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    let presets = PresetStore::new(&paths.presets);
    outln!("presets: {}", presets.dir().display())?;
    outln!("runs: {}", paths.runs.display())?;
    outln!("cache: {}", paths.cache.display())?;
    outln!(
        "data (CPTLAB_DATA): {}",
        std::env::var("CPTLAB_DATA").unwrap_or_else(|_| "(unset: synthetic)".into())
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_worker_share_one_exit_code_mapping() {
        // No wildcard: a new status does not compile until it has an exit code.
        for status in RunStatus::ALL {
            let expected = match status {
                RunStatus::Finished => 0,
                RunStatus::Stopped => 130,
                RunStatus::Diverged | RunStatus::Failed => 1,
            };
            assert_eq!(exit_code(status), expected, "{status}");
        }
    }

    #[test]
    fn only_run_worker_and_range_test_stream_events() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(streams_events(&v(&["cptlab", "run", "--json"])));
        assert!(streams_events(&v(&[
            "cptlab",
            "--runs-dir",
            "run",
            "worker",
            "--json"
        ])));
        assert!(!streams_events(&v(&["cptlab", "runs", "list", "--json"])));
        assert!(!streams_events(&v(&["cptlab", "run"])));
    }

    #[test]
    fn given_flags_are_the_command_lines_own() {
        let args = v(&[
            "cptlab",
            "run",
            "--max-steps",
            "5",
            "--set",
            "a=1",
            "--json",
        ]);
        let cli = parse(&args).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.given, ["max-steps", "set", "json"]);
        // Negative numbers are values, for validation to judge.
        let cli = parse(&v(&["cptlab", "run", "--lr", "-0.1"])).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.lr, Some(-0.1));
        let e = parse(&v(&["cptlab", "run", "--epochs", "18446744073709551615"])).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("--epochs"), "{e}");
    }

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }
}
