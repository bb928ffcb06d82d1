//! Data-parallel CPU workers: equivalence of world sizes and ZeRO stages, failure handling,
//! resume at another world size.
mod common;

use common::{events, of_kind, read_json, Home};
use serde_json::Value;

fn run(home: &Home, extra: &[&str]) -> (Vec<f64>, Value) {
    let mut args = vec![
        "run",
        "--data",
        "synthetic:2048:512",
        "--batch-size",
        "32",
        "--max-steps",
        "50",
        "--threads",
        "1",
        "--set",
        "train.log_every=1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let ev = common::run_ok(home, &args);
    let summary = of_kind(&ev, "finished")[0]["summary"].clone();
    (common::losses(&ev), summary)
}

#[test]
fn one_worker_two_workers_and_zero1_give_the_same_loss_curve() {
    let home = Home::new();
    let (single, s1) = run(&home, &["--devices", "cpu"]);
    let (zero0, s0) = run(&home, &["--devices", "cpu:2", "--zero", "0"]);
    let (zero1, sz) = run(&home, &["--devices", "cpu:2", "--zero", "1"]);
    assert_eq!(single.len(), 50);
    for curve in [&zero0, &zero1] {
        for (a, b) in single.iter().zip(curve.iter()) {
            assert!((a - b).abs() <= 1e-4 * a.abs(), "{single:?}\nvs\n{curve:?}");
        }
    }
    assert_eq!(s1["final_test_acc"], s0["final_test_acc"]);
    let bytes = |s: &Value| s["optimizer_state_bytes_per_rank"].as_u64().unwrap();
    // SGD with momentum: one fp32 buffer. ZeRO-1 holds half of it per rank (plus padding).
    assert_eq!(bytes(&s1), 62_006 * 4);
    assert!(
        bytes(&sz) * 2 >= bytes(&s0) && bytes(&sz) * 2 <= bytes(&s0) + 64,
        "{} vs {}",
        bytes(&sz),
        bytes(&s0)
    );
}

#[test]
fn a_failing_worker_stops_the_others_and_the_run_records_why() {
    let home = Home::new();
    let t = std::time::Instant::now();
    let out = home
        .cmd()
        .env("CPTLAB_INJECT_FAULT", "rank=1,step=5")
        .args([
            "run",
            "--data",
            "synthetic:2048:512",
            "--batch-size",
            "32",
            "--devices",
            "cpu:2",
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(t.elapsed().as_secs() < 60, "the run did not stop promptly");
    let ev = events(&out.stdout);
    let failed = of_kind(&ev, "failed");
    assert_eq!(failed.len(), 1);
    let err = failed[0]["error"].as_str().unwrap();
    assert!(
        err.contains("rank 1") && err.contains("injected fault"),
        "{err}"
    );
    let run = &home.run_dirs()[0];
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "failed");
    assert!(summary["error"].as_str().unwrap().contains("rank 1"));
}

#[test]
fn a_run_killed_on_one_worker_resumes_on_two_with_zero1() {
    let args = [
        "run",
        "--data",
        "synthetic:1024:256",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--set",
        "train.log_every=1",
        "--json",
    ];
    let reference = Home::new();
    assert!(reference
        .cmd()
        .args(args)
        .output()
        .unwrap()
        .status
        .success());
    let ref_run = reference.run_dirs()[0].clone();

    let home = Home::new();
    // Killed (SIGKILL) five steps into epoch 2, after epoch 1's checkpoint.
    common::run_and_kill_at_step(&home, &args, 32 + 5);
    let run = home.run_dirs()[0].clone();
    let out = home
        .cmd()
        .args([
            "run",
            "--resume",
            run.to_str().unwrap(),
            "--devices",
            "cpu:2",
            "--zero",
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
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("devices = \"cpu:2\""),
        "the record says where the run continued: {cfg}"
    );
    let a = common::step_losses(&ref_run);
    let b = common::step_losses(&run);
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-4 * la.abs(),
            "step {sa}: {la} vs {lb}"
        );
    }
    let (ra, rb) = (
        read_json(&ref_run.join("summary.json")),
        read_json(&run.join("summary.json")),
    );
    assert_eq!(rb["status"], "finished");
    assert_eq!(ra["test_acc_per_epoch"], rb["test_acc_per_epoch"]);
}
