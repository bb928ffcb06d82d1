//! TensorBoard event files read back by the real `tensorboard` package (the project's .venv):
//! `runs export --format tensorboard` and `run --tensorboard DIR` give every scalar series of
//! `metrics.jsonl` (same steps, values as f32) and the resolved config as text.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{of_kind, run_ok, Home};
use serde_json::Value;

/// Reads every event file under a directory with TensorBoard's own `EventAccumulator` (no
/// size limits) and prints the scalars and text tensors as JSON.
const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea_mod
guidance = {k: 0 for k in ea_mod.DEFAULT_SIZE_GUIDANCE}
ea = ea_mod.EventAccumulator(sys.argv[1], size_guidance=guidance)
ea.Reload()
tags = ea.Tags()
out = {
    "scalars": {t: [[e.step, e.wall_time, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
    "texts": {t: [[e.step, [s.decode() for s in e.tensor_proto.string_val]] for e in ea.Tensors(t)]
              for t in tags["tensors"]},
}
print(json.dumps(out, allow_nan=False))
"#;

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: `make test` creates the venv and installs tensorboard there",
        p.display()
    );
    let ok = std::process::Command::new(&p)
        .args(["-c", "import tensorboard"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the tensorboard Python package is missing from {}: `make test` installs it (or `{} -m pip install tensorboard`)",
        p.display(),
        p.display()
    );
    p
}

/// What TensorBoard read: tag → [(step, wall_time, value)], and text tag → [(step, strings)].
struct ReadBack {
    scalars: BTreeMap<String, Vec<(u64, f64, f64)>>,
    texts: BTreeMap<String, Vec<(u64, Vec<String>)>>,
}

fn read_back(dir: &Path) -> ReadBack {
    let out = std::process::Command::new(python())
        .args(["-c", READER])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading {} with tensorboard: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scalars = v["scalars"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap(),
                        p[1].as_f64().unwrap(),
                        p[2].as_f64().unwrap(),
                    )
                })
                .collect();
            (tag.clone(), points)
        })
        .collect();
    let texts = v["texts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let strings = p[1]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect();
                    (p[0].as_u64().unwrap(), strings)
                })
                .collect();
            (tag.clone(), points)
        })
        .collect();
    ReadBack { scalars, texts }
}

/// The series the issue asks for, worked out from `metrics.jsonl` here (not by the code under
/// test): tag → [(step, value)]. GBitOps and skipped steps are running totals.
fn expected_series(run: &Path) -> BTreeMap<String, Vec<(u64, f64)>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let (mut gbitops, mut skipped) = (0.0, 0u64);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let mut put = |tag: &str, step: &Value, value: f64| {
            series
                .entry(tag.to_string())
                .or_default()
                .push((step.as_u64().unwrap(), value));
        };
        let step = &e["step"];
        let field = |k: &str| e.get(k).and_then(Value::as_f64);
        match e["event"].as_str().unwrap() {
            "step" => {
                for (tag, key) in [
                    ("train/loss", "loss"),
                    ("train/lr", "lr"),
                    ("train/grad_norm", "grad_norm"),
                    ("throughput/images_per_sec", "images_per_sec"),
                    ("time/data", "t_data"),
                    ("time/fwd", "t_fwd"),
                    ("time/bwd", "t_bwd"),
                    ("time/comm", "t_comm"),
                    ("time/opt", "t_opt"),
                    ("precision/q_fwd", "q_fwd"),
                    ("precision/q_bwd", "q_bwd"),
                    ("precision/loss_scale", "loss_scale"),
                ] {
                    if let Some(x) = field(key) {
                        put(tag, step, x);
                    }
                }
                if let Some(n) = e.get("skipped_steps").and_then(Value::as_u64) {
                    skipped += n;
                    put("precision/skipped_steps", step, skipped as f64);
                } else if let Some(b) = e.get("skipped").and_then(Value::as_bool) {
                    skipped += u64::from(b);
                    put("precision/skipped_steps", step, skipped as f64);
                }
                if let Some(g) = field("gbitops") {
                    gbitops += g;
                    put("cost/gbitops", step, gbitops);
                }
            }
            "eval" => {
                put("test/loss", step, field("test_loss").unwrap());
                put("test/accuracy", step, field("test_acc").unwrap());
                put("train/epoch_loss", step, field("train_loss").unwrap());
                put("time/epoch_seconds", step, field("epoch_seconds").unwrap());
            }
            _ => {}
        }
    }
    series
}

/// Every series of the run is in TensorBoard with the same steps and the values as f32 (what
/// `simple_value` holds), no other series is, and wall times never go back.
fn assert_same_series(run: &Path, tb: &ReadBack, must_have: &[&str]) {
    let expected = expected_series(run);
    for tag in must_have {
        assert!(
            expected.contains_key(*tag),
            "the run recorded no {tag}: the test does not cover it"
        );
    }
    let got_tags: Vec<&String> = tb.scalars.keys().collect();
    let want_tags: Vec<&String> = expected.keys().collect();
    assert_eq!(got_tags, want_tags, "scalar tags");
    for (tag, want) in &expected {
        let got = &tb.scalars[tag];
        let steps = |v: &[(u64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        let got_steps: Vec<u64> = got.iter().map(|p| p.0).collect();
        assert_eq!(got_steps, steps(want), "{tag}: steps");
        for ((step, _, g), (_, w)) in got.iter().zip(want) {
            assert_eq!(
                *g as f32, *w as f32,
                "{tag} at step {step}: TensorBoard has {g}, metrics.jsonl {w}"
            );
        }
        assert!(
            got.windows(2).all(|p| p[0].1 <= p[1].1),
            "{tag}: wall times go back: {got:?}"
        );
        assert!(got.iter().all(|p| p.1 > 1.0e9), "{tag}: wall times {got:?}");
    }
}

/// The config text is the run's `config.toml`, whole.
fn assert_config_text(run: &Path, tb: &ReadBack) {
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let texts = tb
        .texts
        .get("config")
        .unwrap_or_else(|| panic!("no config text; tensors: {:?}", tb.texts.keys()));
    let (_, strings) = texts.last().unwrap();
    assert_eq!(strings.len(), 1);
    assert!(
        strings[0].contains(config.trim_end()),
        "config text {:?} lacks config.toml {config:?}",
        strings[0]
    );
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    for p in &v {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(".cptlab"),
            "{name}: not an event file (a temp file left behind?)"
        );
    }
    v
}

const RUN: [&str; 10] = [
    "run",
    "--data",
    "synthetic:512:128",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--threads",
    "1",
    "--json",
];

#[test]
fn an_exported_run_reads_back_in_tensorboard_as_recorded() {
    let home = Home::new();
    let mut args = RUN.to_vec();
    // Windows of 4 steps (the event covers them), and a CPT schedule for bits and BitOps.
    args.extend(["--set", "train.log_every=4", "--cpt", "CR", "--q-min", "4"]);
    run_ok(&home, &args);
    let run = home.run_dirs().pop().unwrap();
    let name = run.file_name().unwrap().to_str().unwrap().to_string();
    let out = home
        .cmd()
        .args(["runs", "export", &name, "--format", "tensorboard"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let default_dir = run.join("tensorboard");
    let files = event_files(&default_dir);
    assert_eq!(files.len(), 1);
    assert!(stdout.contains(&files[0].display().to_string()), "{stdout}");
    assert!(stdout.contains("tensorboard --logdir"), "{stdout}");
    let tb = read_back(&default_dir);
    assert_same_series(
        &run,
        &tb,
        &[
            "train/loss",
            "train/lr",
            "test/accuracy",
            "test/loss",
            "precision/q_fwd",
            "precision/q_bwd",
            "cost/gbitops",
            "throughput/images_per_sec",
            "time/fwd",
            "time/epoch_seconds",
        ],
    );
    assert_eq!(tb.scalars["train/loss"].len(), 2 * 16 / 4);
    assert_config_text(&run, &tb);

    // Exporting again, elsewhere and again here, replaces rather than adds.
    let elsewhere = home.dir.path().join("tb-out");
    home.cmd()
        .args(["runs", "export", &name, "--format", "tensorboard", "-o"])
        .arg(&elsewhere)
        .assert()
        .success();
    assert_eq!(event_files(&elsewhere).len(), 1);
    home.cmd()
        .args(["runs", "export", &name, "--format", "tensorboard"])
        .assert()
        .success();
    assert_eq!(event_files(&default_dir), files);
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        std::fs::read(&event_files(&elsewhere)[0]).unwrap(),
        "the same run exports the same bytes"
    );
}

#[test]
fn a_live_run_writes_what_tensorboard_reads_back() {
    let home = Home::new();
    let live = home.dir.path().join("live-tb");
    let mut args = RUN.to_vec();
    // fp16 with injected overflows: the loss scale and skipped steps are series too.
    args.extend(["--set", "train.log_every=1", "--precision", "fp16"]);
    args.push("--tensorboard");
    let live_arg = live.to_str().unwrap().to_string();
    args.push(&live_arg);
    let out = home
        .cmd()
        .env("CPTLAB_INJECT_OVERFLOW", "2,3")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out.stdout);
    let files = event_files(&live);
    assert_eq!(files.len(), 1);
    let told = of_kind(&events, "log").iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&files[0].display().to_string()))
    });
    assert!(told, "no log event names the event file: {events:?}");
    let run = home.run_dirs().pop().unwrap();
    let tb = read_back(&live);
    assert_same_series(
        &run,
        &tb,
        &[
            "train/loss",
            "test/accuracy",
            "precision/loss_scale",
            "precision/skipped_steps",
        ],
    );
    assert_eq!(tb.scalars["precision/skipped_steps"].last().unwrap().2, 2.0);
    assert_config_text(&run, &tb);
}

/// A run killed mid-epoch and resumed with `--tensorboard` into the same directory: the
/// second file starts a session at the first redone step, so TensorBoard shows each step once,
/// as `metrics.jsonl` holds them.
#[test]
fn a_resumed_live_run_shows_each_step_once() {
    let home = Home::new();
    let live = home.dir.path().join("live-tb");
    let live_arg = live.to_str().unwrap().to_string();
    let mut args = RUN.to_vec();
    args.extend(["--set", "train.log_every=1", "--cpt", "CR"]);
    args.extend(["--tensorboard", live_arg.as_str()]);
    // 16 steps an epoch: killed after the epoch-1 checkpoint, within epoch 2.
    common::run_and_kill_at_step(&home, &args, 22);
    let run = home.run_dirs().pop().unwrap();
    let run_arg = run.to_str().unwrap().to_string();
    // The file name has the second and the pid: a resume within the same second is a new file.
    run_ok(
        &home,
        &[
            "run",
            "--resume",
            &run_arg,
            "--json",
            "--tensorboard",
            &live_arg,
        ],
    );
    assert_eq!(event_files(&live).len(), 2);
    let tb = read_back(&live);
    assert_same_series(&run, &tb, &["train/loss", "cost/gbitops", "test/accuracy"]);
    assert_eq!(tb.scalars["train/loss"].len(), 32);
    assert_config_text(&run, &tb);
}

#[test]
fn bad_tensorboard_arguments_are_named() {
    let home = Home::new();
    let file = home.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = home
        .cmd()
        .args([
            "run",
            "--data",
            "synthetic:64:32",
            "--max-steps",
            "1",
            "--tensorboard",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tensorboard") && err.contains("a-file") && err.contains("not a directory"),
        "{err}"
    );
    assert!(
        home.run_dirs().is_empty(),
        "a run that cannot start leaves nothing"
    );

    let mut args = RUN.to_vec();
    args[6] = "1";
    args.extend(["--max-steps", "2"]);
    run_ok(&home, &args);
    let run = home.run_dirs().pop().unwrap();
    let out = home
        .cmd()
        .args(["runs", "export", "--format", "tensorboard", "--evals"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--evals") && err.contains("csv"), "{err}");
    assert!(!run.join("tensorboard").exists());
}
