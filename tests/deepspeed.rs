//! DeepSpeed JSON configs in: the CIFAR example's config and one written as DeepSpeed's docs
//! write them, resolved field by field; flags and `--set` over them; the errors DeepSpeed users
//! ask for (batch arithmetic, typos, ZeRO 2/3); `presets import` round-tripping into a run.
mod common;

use std::path::{Path, PathBuf};

use common::{events, of_kind, Home};
use cptlab::config::deepspeed;
use cptlab::config::paths::Paths;
use cptlab::config::presets::{PresetStore, DEFAULT_PRESET};
use cptlab::config::{OptimizerConfig, PrecisionMode, RunConfig, ZeroStage};
use cptlab::schedule::lr::{LrSchedule, WarmupType};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deepspeed")
        .join(name)
}

fn quickstart() -> RunConfig {
    PresetStore::new("/nonexistent")
        .load(DEFAULT_PRESET)
        .unwrap()
}

#[test]
fn the_cifar_example_resolves_field_by_field() {
    let base = quickstart();
    let ds = deepspeed::read(&fixture("cifar_fp16.json"), &base).unwrap();
    let c = ds.apply(&base).unwrap();
    c.validate().unwrap();
    // Batch: train_batch_size alone, one worker: micro 16, no accumulation.
    assert_eq!(c.train.batch_size, 16);
    assert_eq!(c.train.grad_accum, 1);
    assert_eq!(c.train.micro_batch_size, None);
    assert_eq!(c.train.grad_clip, Some(1.0));
    // DeepSpeed's "Adam" is AdamW (adam_w_mode defaults to true).
    assert_eq!(
        c.optimizer,
        OptimizerConfig::AdamW {
            lr: 0.001,
            betas: [0.8, 0.999],
            eps: 1e-8,
            weight_decay: 3e-7,
        }
    );
    assert_eq!(
        c.lr_schedule,
        LrSchedule::WarmupLr {
            warmup_min_lr: 0.0,
            warmup_max_lr: Some(0.001),
            warmup_num_steps: 1000,
            warmup_type: WarmupType::Log,
        }
    );
    assert_eq!(c.precision.mode, PrecisionMode::Fp16);
    let ls = &c.precision.loss_scale;
    assert!(ls.is_dynamic());
    assert_eq!(ls.loss_scale, 0.0);
    assert_eq!(ls.initial_scale_power, 15);
    assert_eq!(ls.loss_scale_window, 500);
    assert_eq!(ls.hysteresis, 2);
    assert!(!ls.consecutive_hysteresis);
    assert_eq!(ls.min_loss_scale, 1.0);
    assert_eq!(c.devices.zero, ZeroStage::Zero1);
    assert_eq!(ds.steps_per_print, Some(2000));
    // DeepSpeed's logging interval is the step-event window.
    assert_eq!(c.train.log_every, 2000);
    assert_eq!(ds.wall_clock_breakdown, Some(false));
    // What the JSON does not say comes from the base.
    assert_eq!(c.model, base.model);
    assert_eq!(c.data, base.data);
    assert_eq!(c.train.epochs, base.train.epochs);
    assert_eq!(c.seed, base.seed);
    // Ignored keys are listed, all in one line.
    let w = ds.warnings.join("\n");
    for key in [
        "prescale_gradients",
        "fp16.fp16_master_weights_and_grads",
        "zero_optimization.overlap_comm",
        "zero_optimization.reduce_bucket_size",
        "zero_optimization.cpu_offload",
    ] {
        assert!(w.contains(key), "{key} not listed as ignored: {w}");
    }
    assert_eq!(
        ds.warnings
            .iter()
            .filter(|l| l.contains("ignored (no meaning in cptlab)"))
            .count(),
        1,
        "{w}"
    );
}

#[test]
fn micro_batch_and_accumulation_use_the_world_size_of_the_devices() {
    let mut base = quickstart();
    base.devices.devices = "cpu:2".parse().unwrap();
    let ds = deepspeed::read(&fixture("docs_micro_batch.json"), &base).unwrap();
    let c = ds.apply(&base).unwrap();
    c.validate().unwrap();
    // 8 per worker × 2 accumulation × 2 workers.
    assert_eq!((c.train.batch_size, c.train.grad_accum), (32, 2));
    assert_eq!(
        c.optimizer,
        OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 5e-4,
        }
    );
    // total_num_steps "auto": the run's own length.
    assert_eq!(
        c.lr_schedule,
        LrSchedule::WarmupCosineLr {
            total_num_steps: None,
            warmup_min_ratio: 0.0,
            warmup_num_steps: 10,
            cos_min_ratio: 0.0001,
            warmup_type: WarmupType::Log,
        }
    );
    assert_eq!(c.precision.mode, PrecisionMode::Bf16);
    assert_eq!(c.devices.zero, ZeroStage::Zero0);
}

fn args_with(file: &str) -> cptlab::cli::ConfigArgs {
    let mut a = cptlab::cli::ConfigArgs::default();
    a.base.deepspeed = Some(fixture(file));
    a
}

fn paths(home: &Home) -> Paths {
    Paths {
        runs: home.runs(),
        presets: home.dir.path().join("presets"),
        cache: home.dir.path().join("cache"),
    }
}

#[test]
fn flags_and_set_override_the_deepspeed_config() {
    let home = Home::new();
    let plain = cptlab::cli::build_config(&args_with("cifar_fp16.json"), &paths(&home)).unwrap();
    assert_eq!(plain.optimizer.lr(), 0.001);
    let mut a = args_with("cifar_fp16.json");
    a.train.lr = Some(0.01);
    a.train.batch_size = Some(32);
    a.base.set = vec![
        "precision.mode=fp32".into(),
        "lr_schedule.warmup_num_steps=5".into(),
        "devices.zero=0".into(),
    ];
    let c = cptlab::cli::build_config(&a, &paths(&home)).unwrap();
    assert_eq!(c.optimizer.lr(), 0.01);
    assert_eq!(c.train.batch_size, 32);
    assert_eq!(c.precision.mode, PrecisionMode::Fp32);
    assert_eq!(c.devices.zero, ZeroStage::Zero0);
    assert!(
        matches!(
            c.lr_schedule,
            LrSchedule::WarmupLr {
                warmup_num_steps: 5,
                ..
            }
        ),
        "{:?}",
        c.lr_schedule
    );
    // What no flag touched stays as the JSON said.
    assert_eq!(c.train.grad_clip, Some(1.0));
    assert_eq!(c.precision.loss_scale.initial_scale_power, 15);
}

fn run_fails(home: &Home, args: &[&str]) -> String {
    let out = home.cmd().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(home.run_dirs().is_empty(), "a failed config left a run");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn inconsistent_batch_sizes_show_the_arithmetic() {
    let home = Home::new();
    let file = fixture("batch_mismatch.json");
    let e = run_fails(
        &home,
        &[
            "run",
            "--deepspeed",
            file.to_str().unwrap(),
            "--devices",
            "cpu:2",
        ],
    );
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(
        e.contains("train_batch_size 64 ≠ micro 8 × accumulation 2 × world 2 = 32"),
        "{e}"
    );
}

#[test]
fn a_typo_in_a_key_that_matters_is_an_error() {
    let home = Home::new();
    let file = fixture("typo_optimiser.json");
    let e = run_fails(&home, &["run", "--deepspeed", file.to_str().unwrap()]);
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(
        e.contains("optimiser: unknown key; did you mean \"optimizer\"?"),
        "{e}"
    );
}

#[test]
fn zero_stage_two_is_refused_by_name() {
    let home = Home::new();
    let file = fixture("zero_stage2.json");
    let e = run_fails(&home, &["run", "--deepspeed", file.to_str().unwrap()]);
    assert!(
        e.contains("zero_optimization.stage: 2: not supported here: cptlab shards optimizer state, stage 1"),
        "{e}"
    );
}

#[test]
fn an_imported_preset_shows_and_trains() {
    let home = Home::new();
    let file = fixture("cifar_fp16.json");
    let out = home
        .cmd()
        .args(["presets", "import", file.to_str().unwrap(), "ds-cifar"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("overlap_comm"),
        "{stderr}"
    );
    // Saving over it needs --force.
    let again = home
        .cmd()
        .args(["presets", "import", file.to_str().unwrap(), "ds-cifar"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let show = home
        .cmd()
        .args(["presets", "show", "ds-cifar"])
        .output()
        .unwrap();
    assert!(show.status.success());
    let text = String::from_utf8_lossy(&show.stdout);
    let shown = RunConfig::from_toml_str(&text, "shown").unwrap();
    assert_eq!(shown.name, "ds-cifar");
    assert_eq!(shown.precision.mode, PrecisionMode::Fp16);
    assert_eq!(shown.devices.zero, ZeroStage::Zero1);
    assert!(matches!(shown.optimizer, OptimizerConfig::AdamW { .. }));

    let out = home
        .cmd()
        .args([
            "run",
            "--preset",
            "ds-cifar",
            "--max-steps",
            "2",
            // A two-step run needs a warmup that fits it.
            "--set",
            "lr_schedule.warmup_num_steps=2",
            "--set",
            "train.log_every=1",
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert_eq!(of_kind(&ev, "step").len(), 2);
    assert_eq!(of_kind(&ev, "finished").len(), 1);
    let dirs = home.run_dirs();
    assert_eq!(dirs.len(), 1);
    let recorded = RunConfig::from_file(&dirs[0].join("config.toml")).unwrap();
    assert_eq!(recorded.train.batch_size, 16);
    assert_eq!(recorded.precision.loss_scale.loss_scale_window, 500);
}

#[test]
fn steps_per_print_sets_the_step_event_window() {
    let base = quickstart();
    let ds = deepspeed::parse(r#"{"steps_per_print": 7}"#, "ds.json", &base).unwrap();
    let c = ds.apply(&base).unwrap();
    c.validate().unwrap();
    assert_eq!(c.train.log_every, 7);
    assert_ne!(base.train.log_every, 7);
    // "auto" keeps the base's window.
    let auto = deepspeed::parse(r#"{"steps_per_print": "auto"}"#, "ds.json", &base).unwrap();
    assert_eq!(
        auto.apply(&base).unwrap().train.log_every,
        base.train.log_every
    );
    let err = deepspeed::parse(r#"{"steps_per_print": 0}"#, "ds.json", &base)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ds.json") && err.contains("steps_per_print") && err.contains("positive"),
        "{err}"
    );
}

/// The built-in presets that reproduce the DeepSpeed CIFAR benchmark's "Adam" train with Adam
/// (L2 weight decay added to the gradient), not AdamW's decoupled decay.
#[test]
fn the_deepspeed_lenet_presets_train_what_deepspeed_trains_for_the_cifar_example() {
    // DeepSpeed runs "type": "Adam" as AdamW (adam_w_mode defaults to true): the presets that
    // model its CIFAR example must use the optimizer the import gives for that config.
    let imported = deepspeed::read(&fixture("cifar_fp16.json"), &quickstart())
        .unwrap()
        .apply(&quickstart())
        .unwrap();
    assert!(
        matches!(imported.optimizer, OptimizerConfig::AdamW { .. }),
        "{:?}",
        imported.optimizer
    );
    let store = PresetStore::new("/nonexistent");
    for name in ["lenet-adam-warmup", "lenet-deepspeed-fp16"] {
        let c = store.load(name).unwrap();
        assert_eq!(c.optimizer, imported.optimizer, "{name}");
    }
}
