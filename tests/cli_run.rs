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
            "--set",
            "train.log_every=1",
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
        "--set",
        "train.log_every=1",
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

/// Spawns `cmd` (a run with `--json`) and sends each signal when its step event arrives;
/// returns the exit code and every event.
fn signals_at_steps(
    mut cmd: std::process::Command,
    plan: &[(u64, libc::c_int)],
) -> (Option<i32>, Vec<serde_json::Value>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut next = plan.iter().peekable();
    for line in reader.lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some((step, signal)) = next.peek() {
            if e["event"] == "step" && e["step"] == *step {
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, *signal) }, 0);
                next.next();
            }
        }
        seen.push(e);
    }
    assert!(
        next.peek().is_none(),
        "the run ended before {:?}",
        next.peek()
    );
    (child.wait().unwrap().code(), seen)
}

fn signal_at_step(
    cmd: std::process::Command,
    step: u64,
    signal: libc::c_int,
) -> (Option<i32>, Vec<serde_json::Value>) {
    signals_at_steps(cmd, &[(step, signal)])
}

const LONG_RUN: &[&str] = &[
    "run",
    "--data",
    "synthetic:1024:128",
    "--batch-size",
    "32",
    "--epochs",
    "50",
    "--threads",
    "1",
    "--json",
    "--set",
    "train.log_every=1",
];

#[test]
fn a_hang_up_stops_a_run_gracefully() {
    let home = Home::new();
    let mut cmd = home.std_cmd();
    cmd.args(LONG_RUN);
    let (code, ev) = signal_at_step(cmd, 5, libc::SIGHUP);
    assert_eq!(code, Some(130), "SIGHUP exits as a stopped run");
    let fin = of_kind(&ev, "finished");
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0]["summary"]["status"], "stopped");
    let run = &home.run_dirs()[0];
    assert_eq!(read_json(&run.join("summary.json"))["status"], "stopped");
    assert!(!run.join("process.json").exists(), "stale process.json");
    assert!(run.join("checkpoints/last.pt").is_file());
}

#[test]
fn a_hang_up_ignored_at_start_stays_ignored() {
    // As `nohup cptlab run …`: the run trains through the hang-up; SIGTERM still stops it.
    use std::os::unix::process::CommandExt;
    let home = Home::new();
    let mut cmd = home.std_cmd();
    cmd.args(LONG_RUN);
    // SAFETY: signal() is async-signal-safe; the child has not started yet.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let (code, ev) = signals_at_steps(cmd, &[(5, libc::SIGHUP), (40, libc::SIGTERM)]);
    assert_eq!(code, Some(130));
    let summary = &of_kind(&ev, "finished")[0]["summary"];
    assert_eq!(summary["status"], "stopped");
    assert!(summary["steps"].as_u64().unwrap() >= 40, "{summary}");
}

#[test]
fn sigterm_stops_with_the_stopped_exit_code() {
    let home = Home::new();
    let mut cmd = home.std_cmd();
    cmd.args(LONG_RUN);
    let (code, _) = signal_at_step(cmd, 5, libc::SIGTERM);
    assert_eq!(code, Some(130));
    let run = &home.run_dirs()[0];
    assert_eq!(read_json(&run.join("summary.json"))["status"], "stopped");
}

#[test]
fn failures_before_the_run_end_json_output_with_one_failed_event() {
    let home = Home::new();
    let cases: [(&[&str], &str, i32); 5] = [
        (&["--preset", "nope"], "no preset named", 1),
        (&["--set", "noequals"], "KEY=VALUE", 2),
        (&["--set", "train.nope=1"], "unknown field `nope`", 1),
        (&["--data", "/nonexistent/cifar"], "/nonexistent/cifar", 1),
        (&["--epochs", "many"], "--epochs", 2),
    ];
    for (extra, says, code) in cases {
        let out = home
            .cmd()
            .arg("run")
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        let ev = events(&out.stdout);
        assert_eq!(ev.len(), 1, "{extra:?}: {ev:?}");
        assert_eq!(ev[0]["event"], "failed", "{extra:?}");
        assert!(
            ev[0]["error"].as_str().unwrap().contains(says),
            "{extra:?}: {ev:?}"
        );
    }
    assert!(home.run_dirs().is_empty());
}

#[test]
fn counts_are_bounded_with_the_field_or_flag_named() {
    let home = Home::new();
    let cases: [(&[&str], &str, i32); 6] = [
        (
            &["--threads", "100000"],
            "devices.threads = 100000: at most 1024",
            1,
        ),
        (
            &["--epochs", "4611686018427387904"],
            "train.epochs = 4611686018427387904: at most",
            1,
        ),
        (&["--epochs", "18446744073709551615"], "--epochs", 2),
        (&["--seed", "18446744073709551615"], "--seed", 2),
        (
            &["--set", "train.max_steps=9223372036854775807"],
            "train.max_steps",
            1,
        ),
        (
            &["--lr", "-0.1"],
            "optimizer.lr = -0.1: a non-negative finite number",
            1,
        ),
    ];
    for (extra, says, code) in cases {
        let out = home.cmd().arg("run").args(extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(!err.contains("-1"), "{extra:?} wrapped around: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    assert!(home.run_dirs().is_empty(), "a refused run left a directory");
}

#[test]
fn a_new_kind_drops_the_old_kinds_parameters() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cosine.toml");
    std::fs::write(
        &file,
        "name = \"k\"\n[model]\nkind = \"lenet\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.02\n\
         momentum = 0.9\nweight_decay = 1e-4\n[lr_schedule]\nkind = \"cosine_annealing\"\n\
         eta_min = 0.001\n[train]\nbatch_size = 32\nepochs = 1\n",
    )
    .unwrap();
    common::run_ok(
        &home,
        &[
            "run",
            "--config",
            file.to_str().unwrap(),
            "--data",
            "synthetic:256:64",
            "--max-steps",
            "2",
            "--threads",
            "1",
            "--set",
            "lr_schedule.kind=warmup_lr",
            "--set",
            "lr_schedule.warmup_num_steps=2",
            "--optimizer",
            "adam",
            "--json",
        ],
    );
    let cfg: toml::Table = std::fs::read_to_string(home.run_dirs()[0].join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let sched = cfg["lr_schedule"].as_table().unwrap();
    assert_eq!(sched["kind"].as_str(), Some("warmup_lr"));
    assert_eq!(sched["warmup_num_steps"].as_integer(), Some(2));
    assert!(!sched.contains_key("eta_min"), "{sched:?}");
    let opt = cfg["optimizer"].as_table().unwrap();
    assert_eq!(opt["kind"].as_str(), Some("adam"));
    // What both optimizers have is kept; SGD's own settings are gone.
    assert_eq!(opt["lr"].as_float(), Some(0.02));
    assert_eq!(opt["weight_decay"].as_float(), Some(1e-4));
    assert!(!opt.contains_key("momentum"), "{opt:?}");
    // A parameter the new kind does not have is still an error when the user sets it.
    let out = home
        .cmd()
        .args(["run", "--config", file.to_str().unwrap()])
        .args([
            "--set",
            "lr_schedule.kind=warmup_lr",
            "--set",
            "lr_schedule.eta_min=0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `eta_min`"), "{err}");
}

#[test]
fn a_stopped_worker_exits_like_a_stopped_run() {
    // One CPU rank (Gloo, world 1) started from plain variables: SIGTERM stops it as it
    // stops `cptlab run`.
    let home = Home::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = home.std_cmd();
    cmd.env("RANK", "0")
        .env("WORLD_SIZE", "1")
        .env("LOCAL_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("CPTLAB_RDZV_TOKEN", "a-token-for-one-rank");
    cmd.arg("worker")
        .args(["--devices", "cpu"])
        .args(&LONG_RUN[1..]);
    let (code, ev) = signal_at_step(cmd, 5, libc::SIGTERM);
    assert_eq!(code, Some(130), "a stopped worker exits as `run` does");
    assert_eq!(of_kind(&ev, "finished")[0]["summary"]["status"], "stopped");
    let run = &home.run_dirs()[0];
    assert_eq!(read_json(&run.join("summary.json"))["status"], "stopped");
}

/// `run --run-dir DIR` (how the workbench starts a run whose config it wrote into DIR): the
/// run is recorded in DIR, its id is DIR's name, and the config given lives there.
#[test]
fn run_dir_records_the_run_where_its_config_was_written() {
    let home = Home::new();
    let dir = home.runs().join("20250101-120000-mine");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = cptlab::config::presets::PresetStore::new(home.runs().join("no-presets"))
        .load("quickstart")
        .unwrap();
    cfg.name = "mine".into();
    cfg.train.max_steps = Some(3);
    cfg.devices.threads = Some(1);
    std::fs::write(dir.join("config.toml"), cfg.to_toml()).unwrap();
    let config = dir.join("config.toml");
    let ev = common::run_ok(
        &home,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--run-dir",
            dir.to_str().unwrap(),
            "--data",
            "synthetic:256:64",
            "--json",
        ],
    );
    let started = of_kind(&ev, "started");
    assert_eq!(started[0]["run_dir"], dir.display().to_string());
    assert_eq!(home.run_dirs(), vec![dir.clone()]);
    for f in ["config.toml", "metrics.jsonl", "summary.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(
        !dir.join("process.json").exists(),
        "the marker goes with the run"
    );
    // The recorded config is the resolved one (the data source filled in).
    let recorded = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(recorded.contains("synthetic:256:64"), "{recorded}");
    // `runs show` finds it by that id.
    home.cmd()
        .args(["runs", "show", "20250101-120000-mine"])
        .assert()
        .success();

    // Again into the same directory: it holds a run now, and nothing of it is touched.
    let before = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    home.cmd()
        .args(["run", "--preset", "quickstart", "--run-dir"])
        .arg(&dir)
        .args(["--data", "synthetic:256:64", "--max-steps", "2"])
        .assert()
        .failure()
        .stderr(contains("--run-dir"))
        .stderr(contains(dir.display().to_string()))
        .stderr(contains("holds another run"))
        .stderr(contains("metrics.jsonl"));
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
        before
    );
    assert!(dir.join("summary.json").is_file());
}

#[test]
fn run_dir_misuse_is_refused_with_the_reason() {
    let home = Home::new();
    std::fs::create_dir_all(home.runs()).unwrap();
    // A directory with a file of the user's in it.
    let other = home.runs().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "x").unwrap();
    let quick = ["--preset", "quickstart", "--data", "synthetic:256:64"];
    home.cmd()
        .arg("run")
        .args(quick)
        .arg("--run-dir")
        .arg(&other)
        .assert()
        .failure()
        .stderr(contains("is not empty (todo.txt)"));
    assert!(other.join("todo.txt").is_file());
    // A file.
    let file = home.runs().join("plain");
    std::fs::write(&file, "x").unwrap();
    home.cmd()
        .arg("run")
        .args(quick)
        .arg("--run-dir")
        .arg(&file)
        .assert()
        .failure()
        .stderr(contains("not a directory (it is a file)"));
    // With --resume: a resumed run keeps its directory.
    home.cmd()
        .args(["run", "--resume", "last", "--run-dir"])
        .arg(home.runs().join("x"))
        .assert()
        .failure()
        .stderr(contains("--run-dir"));
    // A run that cannot start leaves no directory behind (nor the claim's marker).
    let fresh = home.runs().join("20250101-130000-bad");
    home.cmd()
        .arg("run")
        .args(quick)
        .args(["--set", "train.batch_size=0", "--run-dir"])
        .arg(&fresh)
        .assert()
        .failure()
        .stderr(contains("batch_size"));
    assert!(!fresh.exists(), "{} was left behind", fresh.display());
}
