//! `cptlab bench`: seconds per epoch of cptlab's training loop beside `bench/torch_reference.py`
//! (the same loop in PyTorch eager), in the same invocation on the same machine, for each case
//! and thread count; medians over repetitions, ratios reference/cptlab (> 1: cptlab faster).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::output::outln;
use crate::config::paths::Paths;
use crate::config::presets::PresetStore;
use crate::config::Override;
use crate::engine::{Job, JobSpec};
use crate::telemetry::Event;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Cases: lenet16, lenet128, resnet18 (comma-separated)
    #[arg(
        long,
        default_value = "lenet16,lenet128,resnet18",
        value_delimiter = ','
    )]
    pub cases: Vec<String>,
    /// Intra-op thread counts to measure (comma-separated)
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Repetitions per measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Timed steps per repetition (default: each case's own count)
    #[arg(long)]
    pub steps: Option<u64>,
    /// Data (default: CPTLAB_DATA, else synthetic). Seconds per epoch are always for 50,000 images.
    #[arg(long, env = "CPTLAB_DATA")]
    pub data: Option<String>,
    /// Python with torch for the reference (default: .venv/bin/python, else python3)
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the PyTorch reference
    #[arg(long)]
    pub no_reference: bool,
    /// Also time each case under CPT (precision schedule CR 3→8 bits, backward 8) beside fp32,
    /// and count ATen operator calls per step of both (one extra run each, counter on)
    #[arg(long)]
    pub cpt: bool,
}

struct Case {
    name: &'static str,
    preset: &'static str,
    model: &'static str,
    batch: usize,
    default_steps: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "lenet16",
        preset: "lenet-sgd",
        model: "lenet",
        batch: 16,
        default_steps: 1000,
    },
    Case {
        name: "lenet128",
        preset: "lenet-sgd",
        model: "lenet",
        batch: 128,
        default_steps: 300,
    },
    Case {
        name: "resnet18",
        preset: "resnet18-sgd",
        model: "resnet18",
        batch: 128,
        default_steps: 20,
    },
];

/// Step events come every `train.log_every` steps (the default here): warm-up and timed steps
/// are multiples of it.
const LOG_EVERY: u64 = crate::config::DEFAULT_LOG_EVERY;
const WARMUP_STEPS: u64 = LOG_EVERY;
const EPOCH_IMAGES: f64 = 50_000.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: BenchArgs, paths: &Paths) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(|| "synthetic".into());
    let python = args.python.clone().unwrap_or_else(|| {
        let venv = PathBuf::from(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    });
    let runs = tempfile::tempdir()?;
    let bench_paths = Paths {
        runs: runs.path().to_path_buf(),
        ..paths.clone()
    };
    let cache_file = if args.no_reference {
        None
    } else {
        Some(reference_data(&data, paths)?)
    };
    // A closed pipe ends the bench quietly; other write errors fail it (cli::output).
    outln!(
        "| case | threads | cptlab s/epoch | PyTorch eager s/epoch | ratio (eager/cptlab) | steps timed |"
    )?;
    outln!("|---|---|---|---|---|---|")?;
    for name in &args.cases {
        let case = CASES.iter().find(|c| c.name == name).ok_or_else(|| {
            anyhow::anyhow!("unknown bench case {name:?}; cases: lenet16, lenet128, resnet18")
        })?;
        let steps = args
            .steps
            .unwrap_or(case.default_steps)
            .div_ceil(LOG_EVERY)
            .max(1)
            * LOG_EVERY;
        for &threads in &args.threads {
            let ours: Vec<f64> = (0..args.reps)
                .map(|_| {
                    ours_seconds_per_step(case, threads, steps, &data, &bench_paths, false, false)
                        .map(|r| r.0)
                })
                .collect::<Result<_>>()?;
            let ours = median(ours) * EPOCH_IMAGES / case.batch as f64;
            let theirs = match &cache_file {
                Some(cache) => {
                    let per_rep = reference_seconds_per_step(
                        &python, cache, case, threads, steps, args.reps,
                    )?;
                    Some(median(per_rep) * EPOCH_IMAGES / case.batch as f64)
                }
                None => None,
            };
            outln!(
                "| {} b{} | {} | {:.2} | {} | {} | {} |",
                case.model,
                case.batch,
                threads,
                ours,
                theirs.map_or("-".into(), |t| format!("{t:.2}")),
                theirs.map_or("-".into(), |t| format!("{:.2}×", t / ours)),
                steps
            )?;
        }
    }
    if args.cpt {
        cpt_table(&args, &data, &bench_paths)?;
    }
    Ok(())
}

/// fp32 against CPT for each case: median seconds per step over `reps` runs of each
/// (interleaved), and ATen operator calls per step (a separate run each with the counter on:
/// counting costs a callback per op, so it stays out of the timed runs).
fn cpt_table(args: &BenchArgs, data: &str, paths: &Paths) -> Result<()> {
    outln!()?;
    outln!(
        "| case | threads | fp32 ms/step | CPT ms/step | CPT/fp32 | fp32 ops/step | CPT ops/step | steps timed |"
    )?;
    outln!("|---|---|---|---|---|---|---|---|")?;
    for name in &args.cases {
        let case = CASES
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow::anyhow!("unknown bench case {name:?}"))?;
        let steps = args
            .steps
            .unwrap_or(case.default_steps)
            .div_ceil(LOG_EVERY)
            .max(1)
            * LOG_EVERY;
        for &threads in &args.threads {
            let (mut fp32, mut cpt) = (Vec::new(), Vec::new());
            for _ in 0..args.reps {
                fp32.push(
                    ours_seconds_per_step(case, threads, steps, data, paths, false, false)?.0,
                );
                cpt.push(ours_seconds_per_step(case, threads, steps, data, paths, true, false)?.0);
            }
            let ops = |cpt: bool| -> Result<f64> {
                let (_, ops) =
                    ours_seconds_per_step(case, threads, LOG_EVERY, data, paths, cpt, true)?;
                ops.ok_or_else(|| anyhow::anyhow!("no op count"))
            };
            let (fp32_ops, cpt_ops) = (ops(false)?, ops(true)?);
            let (a, b) = (median(fp32) * 1e3, median(cpt) * 1e3);
            outln!(
                "| {} b{} | {} | {:.2} | {:.2} | {:.2}× | {:.0} | {:.0} | {} |",
                case.model,
                case.batch,
                threads,
                a,
                b,
                b / a,
                fp32_ops,
                cpt_ops,
                steps
            )?;
        }
    }
    Ok(())
}

/// Times `steps` optimizer steps of a real run (after warm-up) from its step events; under
/// `cpt` with the precision schedule CR 3→8 bits (backward 8 bits); with `count_ops` also the
/// ATen operator calls per step (process-wide, the prefetch thread's included).
fn ours_seconds_per_step(
    case: &Case,
    threads: usize,
    steps: u64,
    data: &str,
    paths: &Paths,
    cpt: bool,
    count_ops: bool,
) -> Result<(f64, Option<f64>)> {
    let base = PresetStore::new(&paths.presets).load(case.preset)?;
    let o = |k: &str, v: toml::Value| Override::new(k, v);
    let mut overrides = vec![
        o("name", format!("bench-{}", case.name).into()),
        o("data.source", data.into()),
        o("train.batch_size", (case.batch as i64).into()),
        o("train.max_steps", ((WARMUP_STEPS + steps) as i64).into()),
        o("train.epochs", 1000.into()),
        o("train.checkpoint", false.into()),
        o("train.eval", false.into()),
        o("data.random_crop_padding", 0.into()),
        o("data.horizontal_flip", false.into()),
        o("data.normalize", "half".into()),
        o("devices.threads", (threads as i64).into()),
        o(
            "lr_schedule",
            toml::Value::Table(toml::toml! { kind = "constant" }),
        ),
    ];
    if cpt {
        overrides.push(o(
            "precision.schedule",
            toml::Value::Table(
                toml::toml! { kind = "CR" q_min = 3 q_max = 8 cycles = 8 q_bwd = 8 },
            ),
        ));
    }
    let config = base.with_overrides(&overrides)?;
    let job = Job::start(JobSpec {
        config,
        paths: paths.clone(),
    })?;
    if count_ops {
        crate::quant::OpCount::enable(true)?;
    }
    let mut t_start = None;
    let mut t_end = None;
    let (mut ops_start, mut ops_end) = (0, 0);
    for event in job.events().iter() {
        if let Event::Step(s) = &event {
            if s.step == WARMUP_STEPS {
                t_start = Some(Instant::now());
                ops_start = crate::quant::OpCount::global();
            }
            if s.step == WARMUP_STEPS + steps {
                t_end = Some(Instant::now());
                ops_end = crate::quant::OpCount::global();
            }
        }
    }
    if count_ops {
        crate::quant::OpCount::enable(false)?;
    }
    let summary = job.wait();
    anyhow::ensure!(
        summary.status == crate::telemetry::RunStatus::Finished,
        "bench run {} did not finish: {}",
        case.name,
        summary.error.unwrap_or_default()
    );
    let ops = count_ops.then(|| (ops_end - ops_start) as f64 / steps as f64);
    match (t_start, t_end) {
        (Some(a), Some(b)) => Ok(((b - a).as_secs_f64() / steps as f64, ops)),
        _ => anyhow::bail!("bench run {} reported too few steps", case.name),
    }
}

/// The decoded dataset as a cache file the Python reference can read.
fn reference_data(data: &str, paths: &Paths) -> Result<PathBuf> {
    let source = crate::data::DataSource::detect(data)?;
    let dataset = crate::data::load(
        &source,
        &crate::data::LoadOptions {
            seed: 42,
            image_size: None,
            cache_dir: Some(paths.cache.clone()),
        },
    )?;
    let file = paths.cache.join("bench-reference.bin");
    std::fs::create_dir_all(&paths.cache)?;
    crate::data::cache::write(&file, &dataset)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

fn reference_seconds_per_step(
    python: &Path,
    cache: &Path,
    case: &Case,
    threads: usize,
    steps: u64,
    reps: usize,
) -> Result<Vec<f64>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--data", &cache.display().to_string()])
        .args(["--model", case.model])
        .args(["--batch", &case.batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--steps", &steps.to_string()])
        .args(["--warmup", &WARMUP_STEPS.to_string()])
        .args(["--reps", &reps.to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON", script.display()))?;
    let per = v["seconds_per_step"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("reference output has no seconds_per_step"))?
        .iter()
        .filter_map(|x| x.as_f64())
        .collect();
    Ok(per)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
