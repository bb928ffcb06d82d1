//! `cptlab run`, and the flags every training command shares (`ConfigArgs`): how a config is
//! built from a preset or file, flags and `--set`, and which of them `--resume` accepts.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::Args;

use super::follow::{follow_human, follow_json, Signals};
use super::{exit_code, usage, with_failed_event};
use crate::config::paths::Paths;
use crate::config::presets::{PresetStore, DEFAULT_PRESET};
use crate::config::{Override, RunConfig};
use crate::engine::{Job, JobSpec, Sinks};
use crate::models::ModelKind;
use crate::telemetry::store;

/// A count flag: any integer a TOML config can hold (i64's range). The config's own bounds
/// (`RunConfig::validate`) then name the field.
pub(super) fn count() -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(0..=i64::MAX as u64)
}

fn count_usize() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(0..=i64::MAX as u64)
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Continue the run in RUN_DIR (a directory, or a run name) from its last checkpoint (with
    /// --max-steps/--epochs: further)
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["preset", "config"])]
    pub resume: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per event on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Also write the run's events as a TensorBoard event file into DIR as it trains (view
    /// with: tensorboard --logdir DIR; created if missing)
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub tensorboard: Option<PathBuf>,
    /// Record the run in DIR (its name is the run's id) instead of a new directory under the
    /// runs directory: DIR must be new or hold only a config.toml (what the workbench writes
    /// there before it starts a run)
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "Output",
        conflicts_with = "resume"
    )]
    pub run_dir: Option<PathBuf>,
    /// The flags given on the command line (long names; not those from the environment),
    /// filled in by `entry`: what `--resume` checks.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Everything that decides what a run computes; shared by `run`, `worker` and `range-test`.
#[derive(Debug, Args, Default)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub devices: DeviceArgs,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Config")]
pub struct BaseArgs {
    /// Preset to start from (default: quickstart; see: cptlab presets list)
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// TOML config file to start from
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run's name (its directory is NAME-<time>)
    #[arg(long)]
    pub name: Option<String>,
    /// Override any config field: --set optimizer.momentum=0.9 (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// DeepSpeed JSON config (ds_config.json) applied over the preset or config: batch sizes,
    /// optimizer, scheduler, fp16/bf16, ZeRO stage 0 or 1, gradient clipping; the other flags
    /// and --set still override it. Keys without meaning here are listed as warnings
    #[arg(long, value_name = "FILE")]
    pub deepspeed: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Model and training")]
pub struct TrainArgs {
    /// Model
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// Data: synthetic[:TRAIN[:TEST]], download:cifar10, or a path (CIFAR binary or image
    /// folders, .tar.gz or folder)
    #[arg(long, env = "CPTLAB_DATA", hide_env_values = true)]
    pub data: Option<String>,
    /// Optimizer (settings both optimizers have, such as lr, are kept; the others take the new
    /// optimizer's defaults)
    #[arg(long, value_parser = crate::config::OptimizerKind::value_parser())]
    pub optimizer: Option<String>,
    /// Peak learning rate
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Global batch size (all devices and micro-batches)
    #[arg(long, value_parser = count_usize(), allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// Epochs to train
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub epochs: Option<u64>,
    /// Stop after this many optimizer steps (0: the epochs decide)
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub max_steps: Option<u64>,
    /// Seed of the weights, the data order and the augmentation
    #[arg(long, value_parser = count(), allow_negative_numbers = true)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Precision")]
pub struct PrecisionArgs {
    /// Number format
    #[arg(long, value_parser = crate::config::PrecisionMode::value_parser())]
    pub precision: Option<String>,
    /// Cyclic precision schedule (case-insensitive)
    #[arg(long, value_parser = super::schedule::precision_names(), ignore_case = true)]
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
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Devices")]
pub struct DeviceArgs {
    /// auto (default: cuda:0 where libtorch sees a GPU, else cpu), cpu, cpu:N (N worker
    /// threads), cuda:N, cuda:0,1 or cuda:all
    #[arg(long)]
    pub devices: Option<String>,
    /// Intra-op threads per worker
    #[arg(long, value_parser = count_usize(), allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// ZeRO stage: 0 (replicated optimizer state) or 1 (sharded across workers)
    #[arg(long, allow_negative_numbers = true)]
    pub zero: Option<u8>,
}

/// A flag's count as a TOML integer (the flag parsers keep them in i64's range).
fn int(flag: &str, x: impl TryInto<i64>) -> Result<toml::Value> {
    x.try_into()
        .map(toml::Value::Integer)
        .map_err(|_| usage(format!("{flag}: too large for a config value")))
}

/// The config a `run` command describes: preset or file, then flags, then `--set`.
pub fn build_config(args: &ConfigArgs, paths: &Paths) -> Result<RunConfig> {
    let presets = PresetStore::new(&paths.presets);
    let base = match (&args.base.config, &args.base.preset) {
        (Some(file), _) => RunConfig::from_file(file)?,
        (None, Some(name)) => presets.load(name)?,
        (None, None) => presets.load(DEFAULT_PRESET)?,
    };
    build_config_on(base, args)
}

/// The config `args` make of `base` (a preset's or a file's): the DeepSpeed overlay, the flags,
/// then `--set`; validated.
pub fn build_config_on(base: RunConfig, args: &ConfigArgs) -> Result<RunConfig> {
    let base = match &args.base.deepspeed {
        Some(file) => apply_deepspeed(base, file, &args.devices)?,
        None => base,
    };
    let mut o: Vec<Override> = Vec::new();
    if let Some(n) = &args.base.name {
        o.push(Override::new("name", n.clone().into()));
    }
    if let Some(m) = args.train.model {
        o.push(Override::new("model.kind", m.to_string().into()));
    }
    if let Some(kind) = &args.train.optimizer {
        // A new kind keeps the settings it shares with the old one (lr, weight_decay, …):
        // `with_overrides` drops the rest.
        o.push(Override::new("optimizer.kind", kind.clone().into()));
    }
    if let Some(x) = args.train.lr {
        o.push(Override::new("optimizer.lr", x.into()));
    }
    if let Some(x) = args.train.batch_size {
        o.push(Override::new("train.batch_size", int("--batch-size", x)?));
    }
    o.extend(length_overrides(&args.train)?);
    if let Some(x) = args.train.seed {
        o.push(Override::new("seed", int("--seed", x)?));
    }
    if let Some(x) = &args.train.data {
        o.push(Override::new("data.source", x.clone().into()));
    }
    o.extend(device_overrides(&args.devices)?);
    if let Some(x) = &args.precision.precision {
        o.push(Override::new("precision.mode", x.clone().into()));
    }
    if let Some(x) = &args.precision.cpt {
        let kind: crate::schedule::precision::PrecisionScheduleKind =
            x.parse().map_err(|e| usage(format!("--cpt: {e}")))?;
        o.push(Override::new(
            "precision.schedule.kind",
            kind.name().to_string().into(),
        ));
    }
    let schedule_flags = [
        ("q_min", args.precision.q_min),
        ("q_max", args.precision.q_max),
        ("cycles", args.precision.cycles),
        ("q_bwd", args.precision.q_bwd),
    ];
    for (key, value) in schedule_flags {
        if let Some(v) = value {
            if args.precision.cpt.is_none() && base.precision.schedule.is_none() {
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
    for s in &args.base.set {
        o.push(parse_set(s)?);
    }
    let config = base.with_overrides(&o)?;
    config.validate()?;
    Ok(config)
}

/// `--deepspeed FILE` over `base`: the world size of its batch rule is that of the devices the
/// run will use (`--devices` included); ignored and unknown keys are printed as warnings.
pub fn apply_deepspeed(base: RunConfig, file: &Path, devices: &DeviceArgs) -> Result<RunConfig> {
    let placed = base.with_overrides(&device_overrides(devices)?)?;
    let ds = crate::config::deepspeed::read(file, &placed)?;
    for w in &ds.warnings {
        let _ = super::output::errln!("warning: {w}");
    }
    Ok(ds.apply(&base)?)
}

fn parse_set(s: &str) -> Result<Override> {
    s.parse::<Override>()
        .map_err(|e| usage(format!("--set {s}: {e}")))
}

/// `--epochs`, `--max-steps`: how long a run trains (also accepted by `--resume`, to extend it).
fn length_overrides(args: &TrainArgs) -> Result<Vec<Override>> {
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
fn device_overrides(args: &DeviceArgs) -> Result<Vec<Override>> {
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
const RESUME_FLAGS: [&str; 9] = [
    "resume",
    "json",
    "tensorboard",
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
    let mut o = length_overrides(&args.config.train)?;
    o.extend(device_overrides(&args.config.devices)?);
    for s in &args.config.base.set {
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
fn check_resume_length(dir: &Path, overrides: &[Override]) -> Result<()> {
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
pub fn run(args: RunArgs, paths: &Paths) -> Result<i32> {
    let json = args.json;
    with_failed_event(json, run_inner(args, paths))
}

fn run_inner(args: RunArgs, paths: &Paths) -> Result<i32> {
    let signals = Signals::install()?;
    if let Some(dir) = &args.tensorboard {
        // A DIR that is a file fails here, before anything trains; the recorder creates it
        // once the run has started (nothing is created for a run that cannot start).
        if let Ok(m) = std::fs::metadata(dir) {
            anyhow::ensure!(
                m.is_dir(),
                "--tensorboard {}: not a directory (it is a {}); expected a directory for the event files",
                dir.display(),
                crate::files::file_type_name(&m.file_type())
            );
        }
    }
    // Taken before anything is built, so a DIR that holds another run fails at once, and
    // listings show the run live while it starts; released if the run cannot start.
    let claim = match &args.run_dir {
        Some(dir) => Some(store::claim_run_dir(dir).context("--run-dir")?),
        None => None,
    };
    let sinks = Sinks {
        tensorboard: args.tensorboard.clone(),
        run_dir: args.run_dir.clone(),
    };
    let job = match &args.resume {
        Some(dir) => {
            let dir = store::resolve_run_dir(&paths.runs, dir)?;
            let overrides = resume_overrides(&args)?;
            check_resume_length(&dir, &overrides)?;
            Job::resume_with(&dir, paths.clone(), &overrides, sinks)?
        }
        None => {
            let config = build_config(&args.config, paths)?;
            Job::start_with(
                JobSpec {
                    config,
                    paths: paths.clone(),
                },
                sinks,
            )?
        }
    };
    if let Some(claim) = claim {
        claim.keep();
    }
    let summary = if args.json {
        follow_json(job, &signals)
    } else {
        follow_human(job, &signals)
    };
    Ok(exit_code(summary.status))
}
