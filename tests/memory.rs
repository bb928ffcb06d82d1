//! Memory, estimated and measured: `cptlab estimate`'s optimizer state against what a real run
//! reports per rank (SGD with momentum and Adam, ZeRO 0 and 1 over two CPU workers), its
//! parameter bytes against the run's parameter count, and the measured peak in step events and
//! the summary.
mod common;

use common::{of_kind, Home};
use serde_json::Value;

const RUN: &[&str] = &[
    "--data",
    "synthetic:512:128",
    "--batch-size",
    "32",
    "--devices",
    "cpu:2",
    "--threads",
    "1",
];

fn estimate(home: &Home, extra: &[&str]) -> Value {
    estimate_with(home, RUN, extra)
}

fn estimate_with(home: &Home, base: &[&str], extra: &[&str]) -> Value {
    let out = home
        .cmd()
        .arg("estimate")
        .args(base)
        .args(extra)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn train(home: &Home, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["run"];
    args.extend_from_slice(RUN);
    args.extend_from_slice(&["--max-steps", "4", "--set", "train.log_every=2", "--json"]);
    args.extend_from_slice(extra);
    common::run_ok(home, &args)
}

#[test]
fn the_estimated_optimizer_state_is_what_the_ranks_hold() {
    let home = Home::new();
    for optimizer in [
        &["--optimizer", "sgd", "--set", "optimizer.momentum=0.9"][..],
        &["--optimizer", "adam"][..],
    ] {
        for zero in ["0", "1"] {
            let mut extra = optimizer.to_vec();
            extra.extend_from_slice(&["--zero", zero]);
            let e = estimate(&home, &extra);
            let ev = train(&home, &extra);
            let summary = &of_kind(&ev, "finished")[0]["summary"];
            let measured = summary["optimizer_state_bytes_per_rank"].as_u64().unwrap();
            let key = format!("optimizer_state_bytes_zero{zero}");
            assert_eq!(e[&key].as_u64().unwrap(), measured, "{extra:?}: {e}");
            assert_eq!(e["zero_stage"].as_u64().unwrap().to_string(), zero);
            assert!(measured > 0, "{extra:?}");
            // fp32: the parameters are the run's parameter count × 4 bytes (no padding at
            // LeNet's 62,006 over 2 ranks × 16? padding counts: at most 2·16 elements).
            let params = summary["params"].as_u64().unwrap();
            assert_eq!(e["params"].as_u64().unwrap(), params);
            let bytes = e["parameters_bytes"].as_u64().unwrap();
            assert!(
                bytes >= params * 4 && bytes < (params + 32) * 4,
                "{bytes} for {params} parameters"
            );
            // The measured peak is in the summary and every step event.
            assert!(summary["peak_memory_bytes"].as_u64().unwrap() > 0);
            assert_eq!(summary["peak_memory_kind"], "rss");
            let steps = of_kind(&ev, "step");
            assert_eq!(steps.len(), 2);
            for s in steps {
                assert!(s["peak_memory_bytes"].as_u64().unwrap() > 0, "{s}");
                assert_eq!(s["peak_memory_kind"], "rss");
            }
            let started = &of_kind(&ev, "started")[0];
            assert_eq!(started["memory_estimate_bytes"], e["total_bytes"]);
        }
    }
}

#[test]
fn parameters_are_the_count_times_the_element_size() {
    let home = Home::new();
    let fp32 = estimate_with(&home, &["--devices", "cpu"], &[]);
    let n = fp32["params"].as_u64().unwrap();
    assert_eq!(n, 62_006, "LeNet for 10 classes");
    assert_eq!(fp32["parameters_bytes"].as_u64().unwrap(), n * 4);
    assert_eq!(fp32["master_bytes"].as_u64().unwrap(), 0);
    let fp16 = estimate_with(&home, &["--devices", "cpu", "--precision", "fp16"], &[]);
    assert_eq!(fp16["parameters_bytes"].as_u64().unwrap(), n * 2);
    assert_eq!(fp16["master_bytes"].as_u64().unwrap(), n * 8);
    let sum: u64 = [
        "parameters_bytes",
        "gradients_bytes",
        "master_bytes",
        "optimizer_state_bytes_zero0",
        "optimizer_scratch_bytes",
        "activations_bytes",
    ]
    .iter()
    .map(|k| fp16[*k].as_u64().unwrap())
    .sum();
    assert_eq!(fp16["total_bytes"].as_u64().unwrap(), sum);
}

#[test]
fn the_table_shows_both_zero_stages_and_marks_the_one_used() {
    let home = Home::new();
    let out = home
        .cmd()
        .args(["estimate", "--devices", "cpu:2", "--zero", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("zero 1 (used)"), "{text}");
    for row in [
        "parameters",
        "gradients",
        "optimizer state",
        "activations",
        "total",
    ] {
        assert!(text.lines().any(|l| l.starts_with(row)), "{row}: {text}");
    }
}

#[test]
fn a_bad_value_names_the_field() {
    let home = Home::new();
    let out = home
        .cmd()
        .args(["estimate", "--set", "train.batch_size=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.batch_size"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let out = home
        .cmd()
        .args(["estimate", "--classes", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--classes"));
}
