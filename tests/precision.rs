//! Precision end to end: CPT schedules drive the bits of each step and the BitOps account;
//! fp16 loss scaling follows DeepSpeed's rules when overflows are injected.
mod common;

use common::{events, of_kind, Home};
use serde_json::Value;

fn run(home: &Home, env: &[(&str, &str)], args: &[&str]) -> Vec<Value> {
    let mut cmd = home.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args([
            "run",
            "--data",
            "synthetic:1024:128",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--json",
            // Every step's event: these tests read each step's bits, scale and loss.
            "--set",
            "train.log_every=1",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    events(&out.stdout)
}

#[test]
fn a_cpt_schedule_sets_each_steps_bits_and_saves_bitops() {
    let home = Home::new();
    let ev = run(
        &home,
        &[],
        &[
            "--max-steps",
            "40",
            "--cpt",
            "CR",
            "--q-min",
            "3",
            "--q-max",
            "8",
            "--cycles",
            "2",
        ],
    );
    let steps = of_kind(&ev, "step");
    let q: Vec<u64> = steps.iter().map(|s| s["q_fwd"].as_u64().unwrap()).collect();
    assert_eq!(q[0], 3, "a cosine-repeated cycle starts at q_min");
    assert!(
        q.contains(&8) && q.iter().all(|b| (3..=8).contains(b)),
        "{q:?}"
    );
    assert!(steps.iter().all(|s| s["q_bwd"] == 8));
    // Fewer bits cost fewer BitOps, step by step.
    let g = |i: usize| steps[i]["gbitops"].as_f64().unwrap();
    let (lo, hi) = (
        q.iter().position(|&b| b == 3).unwrap(),
        q.iter().position(|&b| b == 8).unwrap(),
    );
    assert!(g(lo) < g(hi));
    let summary = &of_kind(&ev, "finished")[0]["summary"];
    let ratio = summary["gbitops_ratio_vs_static"].as_f64().unwrap();
    assert!(ratio > 0.3 && ratio < 1.0, "{ratio}");
    let total: f64 = steps.iter().map(|s| s["gbitops"].as_f64().unwrap()).sum();
    assert!((summary["gbitops"].as_f64().unwrap() - total).abs() < 1e-6 * total);
}

#[test]
fn fp16_overflows_follow_deepspeeds_loss_scaler() {
    let home = Home::new();
    // Scale 2^4, hysteresis 2: the first overflow (step 2) only spends hysteresis, the second
    // (step 3) halves to 8, the third (step 5, hysteresis already spent) halves to 4. Skipped
    // steps do not advance the LR schedule.
    let ev = run(
        &home,
        &[("CPTLAB_INJECT_OVERFLOW", "2,3,5")],
        &[
            "--max-steps",
            "8",
            "--precision",
            "fp16",
            "--set",
            "precision.loss_scale.initial_scale_power=4",
        ],
    );
    let steps = of_kind(&ev, "step");
    let scales: Vec<f64> = steps
        .iter()
        .map(|s| s["loss_scale"].as_f64().unwrap())
        .collect();
    let skipped: Vec<bool> = steps
        .iter()
        .map(|s| s["skipped"].as_bool().unwrap())
        .collect();
    assert_eq!(scales, vec![16.0, 16.0, 16.0, 8.0, 8.0, 4.0, 4.0, 4.0]);
    assert_eq!(
        skipped,
        vec![false, true, true, false, true, false, false, false]
    );
    let lr: Vec<f64> = steps.iter().map(|s| s["lr"].as_f64().unwrap()).collect();
    assert_eq!(
        lr[1], lr[2],
        "a skipped step leaves the schedule where it was"
    );
    assert_eq!(lr[2], lr[3]);
    assert_eq!(lr[4], lr[5]);
    assert!(lr[3] > lr[4]);
    assert_eq!(of_kind(&ev, "finished")[0]["summary"]["skipped_steps"], 3);
}

#[test]
fn bf16_trains_with_fp32_master_weights() {
    let home = Home::new();
    let fp32 = run(&home, &[], &["--max-steps", "30"]);
    let bf16 = run(&home, &[], &["--max-steps", "30", "--precision", "bf16"]);
    let loss = |ev: &[Value], i: usize| of_kind(ev, "step")[i]["loss"].as_f64().unwrap();
    // Same start; bf16 rounding makes the curves close, not equal.
    assert!((loss(&fp32, 0) - loss(&bf16, 0)).abs() < 0.05);
    assert!((loss(&fp32, 29) - loss(&bf16, 29)).abs() < 0.1);
    assert_ne!(loss(&fp32, 29), loss(&bf16, 29));
}

/// DeepSpeed-style bf16: the replica's weights are bf16 but BatchNorm's parameters and running
/// statistics stay fp32 (in the checkpoint too), and a resume from the fp32 master weights
/// continues with exactly the numbers of an uninterrupted run.
#[test]
fn half_replicas_keep_batchnorm_in_fp32_and_resume_exactly() {
    let args = |steps: &'static str| {
        vec![
            "run",
            "--model",
            "resnet20",
            "--data",
            "synthetic:256:32",
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--precision",
            "bf16",
            "--max-steps",
            steps,
            "--set",
            "train.log_every=1",
            // The run's length must not change the schedule (max_steps does change it).
            "--set",
            "lr_schedule.kind=constant",
            "--json",
        ]
    };
    let reference = Home::new();
    let full = common::losses(&common::run_ok(&reference, &args("6")));
    assert_eq!(full.len(), 6);

    let home = Home::new();
    common::run_ok(&home, &args("3"));
    let run = home.run_dirs()[0].clone();
    let saved = tch::Tensor::load_multi(run.join("checkpoints/last.pt")).unwrap();
    let kind = |name: &str| {
        saved
            .iter()
            .find(|(n, _)| n.replace('|', ".") == name)
            .unwrap_or_else(|| panic!("no {name} in the checkpoint"))
            .1
            .kind()
    };
    assert_eq!(kind("var/conv1.weight"), tch::Kind::BFloat16);
    assert_eq!(kind("var/linear.weight"), tch::Kind::BFloat16);
    for bn in ["bn1", "layer2.0.bn2"] {
        for v in ["weight", "bias", "running_mean", "running_var"] {
            assert_eq!(kind(&format!("var/{bn}.{v}")), tch::Kind::Float, "{bn}.{v}");
        }
    }
    let ev = common::run_ok(
        &home,
        &[
            "run",
            "--resume",
            run.to_str().unwrap(),
            "--max-steps",
            "6",
            "--json",
        ],
    );
    assert_eq!(common::losses(&ev), full[3..], "resumed steps 4..6");
}
