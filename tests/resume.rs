//! kill -9 in the middle of an epoch, `--resume`, and the run ends with the same numbers as an
//! uninterrupted one (CPU, fixed threads).
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{events, of_kind, read_json, Home};
use serde_json::Value;

const ARGS: &[&str] = &[
    "run",
    "--preset",
    "quickstart",
    "--data",
    "synthetic:1024:256",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--threads",
    "1",
    "--set",
    "data.random_crop_padding=4",
    "--set",
    "data.horizontal_flip=true",
    "--set",
    "train.log_every=1",
    "--json",
];

#[test]
fn killed_run_resumes_to_the_same_numbers() {
    let reference = Home::new();
    let out = reference.cmd().args(ARGS).output().unwrap();
    assert!(out.status.success());
    let ref_run = reference.run_dirs()[0].clone();
    let ref_summary = read_json(&ref_run.join("summary.json"));

    let home = Home::new();
    let mut child = home
        .std_cmd()
        .args(ARGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen_eval = false;
    for line in reader.lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "eval" {
            seen_eval = true;
        }
        // Kill a few steps into the second epoch: after the checkpoint, before the next one.
        if seen_eval && e["event"] == "step" && e["step"] == 32 + 5 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let run = home.run_dirs()[0].clone();
    assert!(!run.join("summary.json").exists());

    let out = home
        .cmd()
        .args(["run", "--resume", run.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert_eq!(of_kind(&ev, "started")[0]["resumed_after_epoch"], 1);
    assert_eq!(
        of_kind(&ev, "step")[0]["step"],
        33,
        "resumes at the first step of epoch 2"
    );

    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(
        summary["test_acc_per_epoch"],
        ref_summary["test_acc_per_epoch"]
    );
    assert_eq!(summary["final_test_acc"], ref_summary["final_test_acc"]);
    // The record has each step once, with the same losses as the uninterrupted run.
    assert_eq!(common::step_losses(&run), common::step_losses(&ref_run));
}

#[test]
fn resume_refuses_what_is_not_a_run() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let out = home
        .cmd()
        .args(["run", "--resume", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a run (expected a run directory"), "{err}");
}

/// Starts `ARGS` (with `--json`) and stops it with SIGTERM at step `step`; waits for the graceful
/// stop (checkpoint, summary `stopped`).
fn stop_at_step(home: &Home, args: &[&str], step: u64) {
    let mut child = home
        .std_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "step" && e["step"] == step {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

const SHORT: &[&str] = &[
    "run",
    "--data",
    "synthetic:1024:128",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--max-steps",
    "20",
    "--threads",
    "1",
    "--set",
    "train.log_every=1",
    "--json",
];

#[test]
fn resume_honours_a_new_max_steps() {
    let home = Home::new();
    stop_at_step(&home, SHORT, 5);
    let run = home.run_dirs()[0].clone();
    let stopped = read_json(&run.join("summary.json"));
    assert_eq!(stopped["status"], "stopped");
    let done = stopped["steps"].as_u64().unwrap();
    assert!((5..20).contains(&done), "stopped at step {done}");
    let dir = run.to_str().unwrap();

    // Past the recorded max_steps (20): it trains to the new count, into the next epoch.
    let ev = common::run_ok(
        &home,
        &["run", "--resume", dir, "--max-steps", "40", "--json"],
    );
    assert_eq!(of_kind(&ev, "started")[0]["total_steps"], 40);
    let steps: Vec<u64> = of_kind(&ev, "step")
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&(done + 1)));
    assert_eq!(steps.last(), Some(&40));
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["steps"], 40);
    // The record says how far the run was meant to go; each step is recorded once.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("max_steps = 40"), "{cfg}");
    let recorded: Vec<u64> = common::step_losses(&run).iter().map(|s| s.0).collect();
    assert_eq!(recorded, (1..=40).collect::<Vec<_>>());

    // A length the checkpoint is already past is refused.
    let out = home
        .cmd()
        .args(["run", "--resume", dir, "--max-steps", "30"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--max-steps 30: the run is already at step"),
        "{err}"
    );
}

#[test]
fn resume_refuses_flags_that_would_change_the_numbers() {
    let home = Home::new();
    stop_at_step(&home, SHORT, 3);
    let run = home.run_dirs()[0].clone();
    let dir = run.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--model", "resnet20"], "--model"),
        (&["--lr", "0.5"], "--lr"),
        (&["--batch-size", "64"], "--batch-size"),
        (&["--seed", "7"], "--seed"),
        (&["--data", "synthetic"], "--data"),
        (&["--set", "optimizer.lr=0.5"], "--set optimizer.lr=0.5"),
    ];
    for (extra, flag) in cases {
        let out = home
            .cmd()
            .args(["run", "--resume", dir])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(&format!("error: {flag}")), "{extra:?}: {err}");
    }
    // Nothing was touched: the run is still stopped and resumable.
    assert_eq!(read_json(&run.join("summary.json"))["status"], "stopped");
    // CPTLAB_DATA in the environment is not a --data flag.
    let out = home
        .cmd()
        .env("CPTLAB_DATA", "synthetic")
        .args(["run", "--resume", dir, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_json(&run.join("summary.json"))["steps"], 20);
    // It ended at its max_steps inside epoch 1 (32 steps per epoch): going further finishes
    // that epoch and counts it once, whole.
    let ev = common::run_ok(
        &home,
        &["run", "--resume", dir, "--max-steps", "40", "--json"],
    );
    assert_eq!(of_kind(&ev, "step")[0]["step"], 21);
    let evals: Vec<u64> = of_kind(&ev, "eval")
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, vec![1, 2]);
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["steps"], 40);
    assert_eq!(summary["epochs"], 1, "epoch 2 is still open at step 40");
    assert_eq!(summary["seconds_per_epoch"].as_array().unwrap().len(), 1);
    assert_eq!(summary["test_acc_per_epoch"].as_array().unwrap().len(), 2);
}

#[test]
fn resume_honours_more_epochs() {
    let home = Home::new();
    let args = [
        "run",
        "--data",
        "synthetic:512:64",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--set",
        "train.log_every=1",
        "--json",
    ];
    common::run_ok(&home, &args);
    let run = home.run_dirs()[0].clone();
    assert_eq!(read_json(&run.join("summary.json"))["epochs"], 1);
    let dir = run.to_str().unwrap();
    let ev = common::run_ok(&home, &["run", "--resume", dir, "--epochs", "3", "--json"]);
    assert_eq!(of_kind(&ev, "step")[0]["step"], 17);
    assert_eq!(of_kind(&ev, "eval").len(), 2);
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["epochs"], 3);
    assert_eq!(summary["steps"], 48);
    // Already there: nothing to extend.
    let out = home
        .cmd()
        .args(["run", "--resume", dir, "--epochs", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--epochs 3: the run has already completed 3 epochs"),
        "{err}"
    );
}
