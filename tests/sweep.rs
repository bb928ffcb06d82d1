//! `cptlab sweep` end to end: expansion into runs, a rerun that redoes nothing, a kill -9
//! mid-sweep after which a rerun finishes the rest without retraining finished points, and
//! `cptlab compare` over the sweep's folder.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use common::Home;
use serde_json::Value;

const SWEEP: &str = r#"
name = "tiny"
seeds = 2
[set]
"data.source" = "synthetic:256:64"
"train.batch_size" = 32
"train.epochs" = 2
"devices.threads" = 1
[axes]
"optimizer.lr" = [0.05, 0.1]
"#;

fn write_sweep(home: &Home) -> PathBuf {
    let p = home.dir.path().join("tiny.toml");
    std::fs::write(&p, SWEEP).unwrap();
    p
}

fn point_dirs(home: &Home) -> Vec<PathBuf> {
    let dir = home.runs().join("tiny");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    v.sort();
    v
}

fn finished(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .map(|s| s.contains("\"status\":\"finished\"") || s.contains("\"status\": \"finished\""))
        .unwrap_or(false)
}

#[test]
fn a_sweep_runs_every_point_once_and_a_rerun_redoes_nothing() {
    let home = Home::new();
    let file = write_sweep(&home);
    let f = file.to_str().unwrap();
    let events = common::run_ok(&home, &["sweep", f, "--json"]);
    let ended: Vec<&Value> = common::of_kind(&events, "point_ended");
    assert_eq!(ended.len(), 4, "{events:?}");
    assert!(ended.iter().all(|e| e["status"] == "finished"));
    let dirs = point_dirs(&home);
    assert_eq!(dirs.len(), 4);
    assert!(dirs.iter().all(|d| finished(d)));
    assert!(home.runs().join("tiny/plan.toml").is_file());

    let again = common::run_ok(&home, &["sweep", f, "--json"]);
    assert_eq!(common::of_kind(&again, "point_skipped").len(), 4);
    assert!(common::of_kind(&again, "point_started").is_empty());
    assert_eq!(point_dirs(&home), dirs);

    // Two groups (the lr), two seeds each; the table names both.
    let out = home
        .cmd()
        .args([
            "compare",
            home.runs().join("tiny").to_str().unwrap(),
            "--md",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("| optimizer.lr=0.05 | 2 |"), "{md}");
    assert!(md.contains("| optimizer.lr=0.1 | 2 |"), "{md}");

    // A changed sweep file numbers its points anew (a third seed makes point 2 lr 0.05's seed
    // 44, where the directory of point 2 holds lr 0.1's seed 42): refused, nothing trained.
    std::fs::write(&file, SWEEP.replace("seeds = 2", "seeds = 3")).unwrap();
    let out = home.cmd().args(["sweep", f]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changed since") && err.contains("point 2") && err.contains("optimizer.lr"),
        "{err}"
    );
    assert_eq!(point_dirs(&home), dirs, "nothing trained");
}

#[test]
fn kill_9_mid_sweep_then_a_rerun_finishes_the_rest() {
    let home = Home::new();
    let file = write_sweep(&home);
    let f = file.to_str().unwrap();
    // Kill the sweep once the second point has trained a step.
    let mut child = home
        .std_cmd()
        .args(["sweep", f, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut second = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "point_started" && e["point"] == 1 {
            second = true;
        }
        if second && e["event"] == "step" {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = point_dirs(&home);
    assert_eq!(before.len(), 2);
    let first = before.iter().find(|d| finished(d)).unwrap().clone();
    let first_summary = std::fs::read(first.join("summary.json")).unwrap();

    let events = common::run_ok(&home, &["sweep", f, "--json"]);
    let skipped = common::of_kind(&events, "point_skipped");
    assert_eq!(skipped.len(), 1, "{events:?}");
    assert_eq!(skipped[0]["point"], 0);
    assert!(!common::of_kind(&events, "point_resumed").is_empty());
    // Point 0 untouched; points 1–3 finished now.
    assert_eq!(
        std::fs::read(first.join("summary.json")).unwrap(),
        first_summary
    );
    let ended = common::of_kind(&events, "point_ended");
    let points: Vec<u64> = ended.iter().map(|e| e["point"].as_u64().unwrap()).collect();
    assert_eq!(points, [1, 2, 3]);
    assert!(ended.iter().all(|e| e["status"] == "finished"));
    // Progress is recorded across both invocations.
    let progress = std::fs::read_to_string(home.runs().join("tiny/sweep.jsonl")).unwrap();
    assert!(
        progress
            .lines()
            .filter(|l| l.contains("sweep_ended"))
            .count()
            == 1
    );
}

#[test]
fn vary_flags_and_dry_run() {
    let home = Home::new();
    let out = home
        .cmd()
        .args([
            "sweep",
            "--vary",
            "precision.schedule.kind=CR,static",
            "--cpt",
            "CR",
            "--seeds",
            "2",
            "--sweep-name",
            "cr",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("cr-p")).count(),
        4,
        "{text}"
    );
    assert!(
        text.contains("precision.schedule.kind=static, seed="),
        "{text}"
    );
    assert!(!home.runs().join("cr").exists(), "a dry run writes nothing");
    let bad = home
        .cmd()
        .args(["sweep", "--vary", "optimizer.lr", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--vary optimizer.lr"));
}

/// The run directory of each point, by the point's name.
fn by_point_name(home: &Home) -> std::collections::BTreeMap<String, PathBuf> {
    point_dirs(home)
        .into_iter()
        .map(|d| {
            let text = std::fs::read_to_string(d.join("config.toml")).unwrap();
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .unwrap()
                .trim_matches('"')
                .to_string();
            (name, d)
        })
        .collect()
}

#[test]
fn parallel_2_trains_every_point_as_a_sequential_sweep_does() {
    let (seq, par) = (Home::new(), Home::new());
    let fs = write_sweep(&seq);
    let fp = write_sweep(&par);
    common::run_ok(&seq, &["sweep", fs.to_str().unwrap(), "--json"]);
    let events = common::run_ok(
        &par,
        &["sweep", fp.to_str().unwrap(), "--json", "--parallel", "2"],
    );
    let ended = common::of_kind(&events, "point_ended");
    assert_eq!(ended.len(), 4, "{events:?}");
    assert!(ended.iter().all(|e| e["status"] == "finished"), "{ended:?}");
    // Every point's run events come through, tagged with the point.
    let steps = common::of_kind(&events, "step");
    assert!(!steps.is_empty() && steps.iter().all(|e| e["point"].is_u64()));
    assert_eq!(common::of_kind(&events, "sweep_ended")[0]["parallel"], 2);
    // No point config files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(par.runs().join("tiny"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".point-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The same record, point by point: config, losses, accuracies.
    let (a, b) = (by_point_name(&seq), by_point_name(&par));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a.len(), 4);
    for (name, da) in &a {
        let db = &b[name];
        assert_eq!(
            std::fs::read_to_string(da.join("config.toml")).unwrap(),
            std::fs::read_to_string(db.join("config.toml")).unwrap(),
            "{name}"
        );
        assert_eq!(common::step_losses(da), common::step_losses(db), "{name}");
        let (sa, sb) = (
            common::read_json(&da.join("summary.json")),
            common::read_json(&db.join("summary.json")),
        );
        for k in ["status", "final_test_acc", "test_acc_per_epoch", "steps"] {
            assert_eq!(sa[k], sb[k], "{name}: {k}");
        }
    }
    // A rerun, parallel or not, redoes nothing.
    let again = common::run_ok(
        &par,
        &["sweep", fp.to_str().unwrap(), "--json", "--parallel", "2"],
    );
    assert_eq!(common::of_kind(&again, "point_skipped").len(), 4);
    assert!(common::of_kind(&again, "point_started").is_empty());
    // Bad combinations are usage errors.
    for bad in [
        vec!["--parallel", "0"],
        vec!["--point-devices", "cuda:0,cuda:0"],
        vec!["--point-devices", "cuda:0", "--parallel", "2"],
    ] {
        let out = par
            .cmd()
            .args(["sweep", fp.to_str().unwrap(), "--dry-run"])
            .args(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
