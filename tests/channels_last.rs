//! `precision.channels_last` on the CPU (forced "on"; mkldnn has NHWC convolutions): a CNN
//! trains like the NCHW run, the run header says the layout is active, ZeRO-1 on two workers and
//! a kill + resume keep it, and `doctor` tells the rule. Each run checks after every epoch that
//! the conv weights and their gradients kept their NHWC strides inside the flat buffers (the
//! run fails otherwise), so every run here also tests that.
mod common;

use common::{losses, of_kind, Home};
use serde_json::Value;

fn args(layout: &str, extra: &[&'static str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--model",
        "resnet20",
        "--data",
        "synthetic:512:64",
        "--batch-size",
        "32",
        "--threads",
        "1",
        // A small step: the two layouts' rounding differences then grow slowly (see below).
        "--lr",
        "0.01",
        "--set",
        "train.log_every=1",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("--set".into());
    a.push(format!("precision.channels_last={layout}"));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(home: &Home, args: &[String]) -> Vec<Value> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::run_ok(home, &args)
}

fn layout_lines(ev: &[Value]) -> Vec<String> {
    of_kind(ev, "log")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("memory layout"))
        .map(str::to_string)
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(1e-12)
}

/// Not bit-exact: NHWC convolutions sum in another order, so the first loss (same weights, same
/// batch) differs by fp32 rounding only (≤ 1e-5 relative; measured 3e-7), and each SGD step
/// feeds that back, so the difference grows step by step (measured ≤ 3e-3 over these 16 steps at
/// lr 0.01, ~1e-4 on the test loss). A wrong layout (weights read in the wrong element order)
/// differs at the first step by far more.
#[test]
fn channels_last_trains_like_nchw_and_says_so() {
    let home = Home::new();
    let off = run(&home, &args("off", &["--epochs", "1"]));
    let on = run(&home, &args("on", &["--epochs", "1"]));
    assert!(layout_lines(&off).is_empty(), "auto/off on the CPU: NCHW");
    let lines = layout_lines(&on);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("channels_last (precision.channels_last = on)"));
    let (a, b) = (losses(&off), losses(&on));
    assert_eq!(a.len(), 16);
    assert_eq!(a.len(), b.len());
    assert!(rel(a[0], b[0]) <= 1e-5, "first step: {} vs {}", a[0], b[0]);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(rel(*x, *y) <= 1e-2, "step {i}: {x} vs {y}");
    }
    let test_loss = |ev: &[Value]| of_kind(ev, "eval")[0]["test_loss"].as_f64().unwrap();
    assert!(
        rel(test_loss(&off), test_loss(&on)) <= 1e-3,
        "{} vs {}",
        test_loss(&off),
        test_loss(&on)
    );
    // "auto" on the CPU is off: the same numbers as "off", bit for bit.
    let auto = run(&home, &args("auto", &["--epochs", "1"]));
    assert!(layout_lines(&auto).is_empty());
    assert_eq!(losses(&auto), a);
}

/// ZeRO-1 over two CPU workers with channels_last: each rank's strided views survive the
/// sharded step, and a run killed mid-epoch resumes from its checkpoint to the same losses as
/// an uninterrupted one.
#[test]
fn zero1_on_two_workers_and_resume_keep_channels_last() {
    let extra = ["--epochs", "2", "--devices", "cpu:2", "--zero", "1"];
    let reference = Home::new();
    let ev = run(&reference, &args("on", &extra));
    assert_eq!(layout_lines(&ev).len(), 1);
    // Against NCHW with the same two workers (BatchNorm's statistics are per worker): the
    // same first loss up to rounding.
    let nchw = run(
        &reference,
        &args(
            "off",
            &["--epochs", "1", "--devices", "cpu:2", "--zero", "1"],
        ),
    );
    let (z, s) = (losses(&ev), losses(&nchw));
    assert!(rel(z[0], s[0]) <= 1e-5, "{} vs {}", z[0], s[0]);
    let ref_run = reference
        .run_dirs()
        .into_iter()
        .find(|d| common::step_losses(d).len() == 32)
        .unwrap();

    let home = Home::new();
    let a = args("on", &extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    common::run_and_kill_at_step(&home, &a, 16 + 5);
    let run_dir = home.run_dirs()[0].clone();
    let resumed = run(
        &home,
        &[
            "run".into(),
            "--resume".into(),
            run_dir.display().to_string(),
            "--json".into(),
        ],
    );
    assert_eq!(of_kind(&resumed, "started")[0]["resumed_after_epoch"], 1);
    assert_eq!(
        layout_lines(&resumed).len(),
        1,
        "the resumed run keeps the layout"
    );
    assert_eq!(common::step_losses(&run_dir), common::step_losses(&ref_run));
}

#[test]
fn doctor_tells_the_channels_last_rule_and_bad_values_are_refused() {
    let home = Home::new();
    let out = home.cmd().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("channels_last:"), "{text}");
    let out = home
        .cmd()
        .args(args("sideways", &["--epochs", "1"]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("channels_last") && err.contains("sideways"),
        "{err}"
    );
}
