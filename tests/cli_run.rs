//! `cptlab run` end to end on the synthetic set: events, run directory, runs/presets commands.
mod common;

use common::{events, of_kind, read_json, Home};
use predicates::str::contains;

#[test]
fn json_run_reports_events_and_records_the_run() {
    let home = Home::new();
    let out = home
        .cmd()
        .args([
            "run",
            "--preset",
            "quickstart",
            "--data",
            "synthetic:4096:512",
        ])
        .args([
            "--epochs",
            "2",
            "--batch-size",
            "32",
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
    let steps = of_kind(&ev, "step");
    assert_eq!(steps.len(), 2 * (4096 / 32));
    for key in [
        "step",
        "epoch",
        "loss",
        "lr",
        "images_per_sec",
        "t_data",
        "t_fwd",
        "t_bwd",
        "t_comm",
        "t_opt",
    ] {
        assert!(steps[0].get(key).is_some(), "step event lacks {key}");
    }
    let evals = of_kind(&ev, "eval");
    assert_eq!(evals.len(), 2);
    let acc = evals[1]["test_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // The synthetic set is learnable: two short epochs beat chance (10%) clearly.
    assert!(acc > 0.5, "test accuracy {acc}");
    let fin = of_kind(&ev, "finished");
    assert_eq!(fin.len(), 1);
    let s = &fin[0]["summary"];
    assert_eq!(s["status"], "finished");
    assert_eq!(s["epochs"], 2);
    assert_eq!(s["seconds_per_epoch"].as_array().unwrap().len(), 2);
    assert_eq!(s["per_class_acc"].as_array().unwrap().len(), 10);
    assert_eq!(s["final_test_acc"], evals[1]["test_acc"]);

    let dirs = home.run_dirs();
    assert_eq!(dirs.len(), 1);
    let run = &dirs[0];
    assert_eq!(s["run_dir"].as_str().unwrap(), run.display().to_string());
    for f in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert_eq!(read_json(&run.join("summary.json"))["status"], "finished");
    // The recorded config is fully resolved: the data source and every default are written out.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("source = \"synthetic:4096:512\""), "{cfg}");
    assert!(cfg.contains("grad_accum = 1"), "{cfg}");
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.contains("\"event\":\"step\""))
            .count(),
        steps.len()
    );

    home.cmd()
        .args(["runs", "list"])
        .assert()
        .success()
        .stdout(contains("quickstart").and(contains("finished")));
    let name = run.file_name().unwrap().to_str().unwrap().to_string();
    home.cmd()
        .args(["runs", "show", &name])
        .assert()
        .success()
        .stdout(contains("[optimizer]"));
    let csv = home
        .cmd()
        .args(["runs", "export", &name, "--csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("step,epoch,loss,lr"));
    assert_eq!(csv.lines().count(), 1 + steps.len());
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn presets_list_and_show() {
    let home = Home::new();
    home.cmd()
        .args(["presets", "list"])
        .assert()
        .success()
        .stdout(
            contains("quickstart")
                .and(contains("lenet-sgd"))
                .and(contains("lenet-adam-warmup"))
                .and(contains("resnet18-sgd"))
                .and(contains("vit-adam")),
        );
    home.cmd()
        .args(["presets", "show", "lenet-adam-warmup"])
        .assert()
        .success()
        .stdout(contains("warmup_num_steps = 1000"));
}

#[test]
fn a_diverging_run_stops_with_its_step_and_keeps_its_record() {
    let home = Home::new();
    let out = home
        .cmd()
        .args([
            "run",
            "--data",
            "synthetic:512:128",
            "--lr",
            "1e12",
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let ev = events(&out.stdout);
    let failed = of_kind(&ev, "failed");
    assert_eq!(failed.len(), 1);
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.starts_with("diverged at step "), "{err}");
    let run = &home.run_dirs()[0];
    assert_eq!(read_json(&run.join("summary.json"))["status"], "diverged");
    let steps_recorded = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"step\""))
        .count();
    assert_eq!(steps_recorded, of_kind(&ev, "step").len());
}

#[test]
fn doctor_reports_torch_and_paths() {
    let home = Home::new();
    home.cmd().arg("doctor").assert().success().stdout(
        contains("2.11.0")
            .and(contains("cuda available"))
            .and(contains("runs:")),
    );
}

fn step_losses(home: &Home, extra: &[&str]) -> Vec<f64> {
    let mut args = vec![
        "run",
        "--data",
        "synthetic:1024:128",
        "--batch-size",
        "32",
        "--max-steps",
        "12",
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    common::losses(&common::run_ok(home, &args))
}

#[test]
fn gradient_accumulation_matches_the_full_batch() {
    // LeNet has no BatchNorm: 4 micro-batches of 8 give the same gradients as one batch of 32.
    let home = Home::new();
    let full = step_losses(&home, &[]);
    let accumulated = step_losses(&home, &["--set", "train.grad_accum=4"]);
    assert_eq!(full.len(), 12);
    for (a, b) in full.iter().zip(&accumulated) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{full:?} vs {accumulated:?}"
        );
    }
    // And the optimizer really changes the trajectory (the comparison can fail).
    let adam = step_losses(&home, &["--optimizer", "adam", "--lr", "0.001"]);
    assert!((adam[11] - full[11]).abs() > 1e-4);
}
