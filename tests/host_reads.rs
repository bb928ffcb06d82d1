//! Device→host reads of the training step, counted by the one function they go through
//! (`engine::device::read_to_host`) and reported as the summary's `host_reads_per_step`: one read
//! per `train.log_every` steps (default 10) in fp32, bf16 and amp_bf16, plus one per step for
//! fp16's overflow decision; step events every `log_every` steps carry the means over them.
mod common;

use common::{of_kind, run_ok, Home};
use serde_json::Value;

/// LeNet, 32 images per step, one thread; `train` images (1280: 40 steps per epoch).
fn run(home: &Home, train: u64, extra: &[&str]) -> Vec<Value> {
    let data = format!("synthetic:{train}:128");
    let mut args = vec![
        "run",
        "--data",
        &data,
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    run_ok(home, &args)
}

fn reads_per_step(ev: &[Value]) -> f64 {
    let s = &of_kind(ev, "finished")[0]["summary"];
    s["host_reads_per_step"]
        .as_f64()
        .unwrap_or_else(|| panic!("no host_reads_per_step in {s}"))
}

fn steps_of(ev: &[Value]) -> Vec<(u64, u64)> {
    of_kind(ev, "step")
        .iter()
        .map(|e| {
            (
                e["step"].as_u64().unwrap(),
                e["steps"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

#[test]
fn one_read_per_log_every_steps_in_fp32_bf16_and_amp_bf16() {
    let home = Home::new();
    for mode in ["fp32", "bf16", "amp_bf16"] {
        let ev = run(&home, 1280, &["--max-steps", "40", "--precision", mode]);
        // 40 steps, an epoch end and the run's end on a multiple of 10: four reads.
        assert!(
            reads_per_step(&ev) <= 0.1,
            "{mode}: {}",
            reads_per_step(&ev)
        );
        assert_eq!(
            steps_of(&ev),
            [(10, 10), (20, 10), (30, 10), (40, 10)],
            "{mode}"
        );
    }
    // fp16's overflow decision reads the gradient norm every step (GradScaler does the same).
    let ev = run(&home, 1280, &["--max-steps", "40", "--precision", "fp16"]);
    let r = reads_per_step(&ev);
    assert!(r > 1.0 && r <= 1.1, "fp16: {r}");
}

/// An epoch whose end is not a multiple of `log_every` ends its window there: one more read
/// per such epoch (25 steps per epoch: events at 10, 20, 25, 30, 40, 50).
#[test]
fn epoch_ends_close_a_window() {
    let home = Home::new();
    let ev = run(&home, 800, &["--epochs", "2"]);
    assert_eq!(
        steps_of(&ev),
        [(10, 10), (20, 10), (25, 5), (30, 5), (40, 10), (50, 10)]
    );
    let r = reads_per_step(&ev);
    assert!(r <= 0.1 + 1.0 / 25.0, "{r}");
    // Each eval's training loss is still the mean over its epoch's steps.
    let evals = of_kind(&ev, "eval");
    assert_eq!(evals.len(), 2);
}

/// A step event's loss is the mean of the per-step losses it covers (the same numbers as a run
/// that reports every step), at world size 1 and 2.
#[test]
fn step_events_carry_the_mean_of_their_steps() {
    let home = Home::new();
    let every = common::losses(&run(
        &home,
        1280,
        &["--max-steps", "40", "--set", "train.log_every=1"],
    ));
    assert_eq!(every.len(), 40);
    for devices in ["cpu", "cpu:2"] {
        let ev = run(&home, 1280, &["--max-steps", "40", "--devices", devices]);
        let windows = common::losses(&ev);
        assert_eq!(windows.len(), 4, "{devices}");
        // One worker sums the same numbers; two differ from one by float rounding only.
        let tol = if devices == "cpu" { 1e-12 } else { 1e-4 };
        for (i, w) in windows.iter().enumerate() {
            let mean = every[i * 10..(i + 1) * 10].iter().sum::<f64>() / 10.0;
            assert!(
                (w - mean).abs() <= tol * mean.abs(),
                "{devices} window {i}: {w} vs {mean}"
            );
        }
        assert!(reads_per_step(&ev) <= 0.1, "{devices}");
    }
    // The per-step run read once per step.
    let ev = run(
        &home,
        1280,
        &["--max-steps", "20", "--set", "train.log_every=1"],
    );
    assert_eq!(reads_per_step(&ev), 1.0);
}

/// Gradient clipping stays on the device (as `clip_grad_norm_`): the norm is read only with the
/// window's loss, at world size 1 and under ZeRO-1 across two ranks; fp16 keeps its one read
/// per step for the overflow decision. The step events still carry the (mean) gradient norm,
/// and a tight clip changes the training (the clip is applied, not just measured).
#[test]
fn clipping_reads_the_norm_only_with_the_step_events() {
    let home = Home::new();
    let clip = "train.grad_clip=0.05";
    let norms = |ev: &[Value]| -> Vec<f64> {
        of_kind(ev, "step")
            .iter()
            .map(|e| {
                e["grad_norm"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no grad_norm in {e}"))
            })
            .collect()
    };
    for devices in ["cpu", "cpu:2"] {
        let ev = run(
            &home,
            1280,
            &[
                "--max-steps",
                "40",
                "--devices",
                devices,
                "--zero",
                "1",
                "--set",
                clip,
            ],
        );
        let r = reads_per_step(&ev);
        assert!(r <= 0.1, "{devices}: {r} reads per step with clipping on");
        let n = norms(&ev);
        assert_eq!(n.len(), 4, "{devices}");
        // Every norm is above the clip, or the case would not exercise it.
        assert!(
            n.iter().all(|g| g.is_finite() && *g > 0.05),
            "{devices}: {n:?}"
        );
    }
    let ev = run(
        &home,
        1280,
        &["--max-steps", "40", "--precision", "fp16", "--set", clip],
    );
    let r = reads_per_step(&ev);
    assert!(r > 1.0 && r <= 1.1, "fp16 with clipping: {r}");
    // Clipping changes the losses (same seed, same data, without the clip).
    let clipped = common::losses(&run(&home, 1280, &["--max-steps", "20", "--set", clip]));
    let free = common::losses(&run(&home, 1280, &["--max-steps", "20"]));
    assert_ne!(clipped, free, "clipping at 0.05 changed nothing");
}
