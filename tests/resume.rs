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
    assert!(err.contains("not a run directory"), "{err}");
}
