//! CPU training across processes (`cptlab worker --devices cpu`, Gloo through libtorch's c10d):
//! two processes of one thread, started by torchrun (static rendezvous and `--standalone`, with
//! torch's own agent store), by plain variables and by a Slurm-like environment, train exactly
//! as `cptlab run --devices cpu:2` (two threads) does; the run resumes at another world size; a
//! rank killed with SIGKILL stops the other, which names it.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{events, of_kind, read_json, step_losses, Home};

const TOKEN: &str = "a-shared-secret-token";
const STEPS: usize = 30;

fn train_args(zero: u8) -> Vec<String> {
    [
        "--model",
        "lenet",
        "--data",
        "synthetic:2048:512",
        "--batch-size",
        "32",
        "--max-steps",
        "30",
        "--threads",
        "1",
        "--set",
        "train.log_every=1",
        "--json",
        "--zero",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([zero.to_string()])
    .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one run directory a launch recorded.
fn only_run(home: &Home) -> PathBuf {
    let dirs = home.run_dirs();
    assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
    dirs[0].clone()
}

/// `cptlab run --devices cpu:2` (two worker threads): the reference.
fn threads_run(zero: u8) -> (Home, Vec<(u64, f64)>) {
    threads_run_on(zero, "cpu:2")
}

fn threads_run_on(zero: u8, devices: &str) -> (Home, Vec<(u64, f64)>) {
    let home = Home::new();
    let out = home
        .cmd()
        .arg("run")
        .args(train_args(zero))
        .args(["--devices", devices])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let losses = step_losses(&only_run(&home));
    (home, losses)
}

fn assert_same_losses(got: &[(u64, f64)], want: &[(u64, f64)], what: &str) {
    assert_eq!(got.len(), STEPS, "{what}: {got:?}");
    assert_eq!(want.len(), STEPS);
    for ((s1, a), (s2, b)) in got.iter().zip(want) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= 1e-6 * b.abs(),
            "{what}, step {s1}: {a} vs {b} (two threads)"
        );
    }
}

fn torchrun() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    p.exists().then_some(p)
}

/// A command with the test home's variables (torchrun passes them on to its workers).
fn with_home(home: &Home, program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("CPTLAB_RUNS_DIR", home.runs())
        .env("CPTLAB_PRESETS_DIR", home.dir.path().join("presets"))
        .env("CPTLAB_CACHE_DIR", home.dir.path().join("cache"))
        .env("CPTLAB_RDZV_TOKEN", TOKEN)
        .env_remove("CPTLAB_DATA")
        .env_remove("MASTER_ADDR")
        .env_remove("MASTER_PORT")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE");
    c
}

/// Runs `launch` up to three times while the port it picked turns out to be taken.
fn retry_port(mut launch: impl FnMut() -> Output) -> Output {
    for _ in 0..3 {
        let out = launch();
        let t = text(&out);
        if out.status.success() || !(t.contains("already in use") || t.contains("EADDRINUSE")) {
            return out;
        }
    }
    launch()
}

enum Launcher {
    TorchrunStatic,
    TorchrunStandalone,
    Env,
    Slurm,
}

/// Two ranks of `cptlab worker --devices cpu` started as `how` says; returns rank 0's output
/// (every output under torchrun, which merges them).
fn two_ranks(home: &Home, how: &Launcher, zero: u8) -> Output {
    let bin = assert_cmd::cargo::cargo_bin("cptlab");
    let worker_args: Vec<String> = ["worker", "--devices", "cpu", "--rdzv-timeout", "60"]
        .iter()
        .map(|s| s.to_string())
        .chain(train_args(zero))
        .collect();
    match how {
        Launcher::TorchrunStatic | Launcher::TorchrunStandalone => {
            let tr = torchrun().expect("torchrun");
            retry_port(|| {
                let mut c = with_home(home, &tr);
                c.args(["--nproc-per-node", "2"]);
                match how {
                    Launcher::TorchrunStatic => {
                        c.args(["--master-addr", "127.0.0.1", "--master-port"])
                            .arg(free_port().to_string());
                    }
                    _ => {
                        c.arg("--standalone");
                    }
                }
                c.arg("--no-python").arg(&bin).args(&worker_args);
                c.output().unwrap()
            })
        }
        Launcher::Env | Launcher::Slurm => retry_port(|| {
            let port = match how {
                Launcher::Slurm => slurm_port(),
                _ => free_port(),
            };
            let rank = |r: usize| {
                let mut c = with_home(home, &bin);
                match how {
                    Launcher::Slurm => {
                        // srun's variables only: the master is the first node, the port comes
                        // from the job id (15000 + its last four digits).
                        c.env("SLURM_JOB_ID", format!("7{:04}", port - 15000))
                            .env("SLURM_JOB_NAME", "cptlab-test")
                            .env("SLURM_PROCID", r.to_string())
                            .env("SLURM_LOCALID", r.to_string())
                            .env("SLURM_NODEID", "0")
                            .env("SLURM_NTASKS", "2")
                            .env("SLURM_TASKS_PER_NODE", "2")
                            .env("SLURM_NODELIST", "localhost");
                    }
                    _ => {
                        c.env("RANK", r.to_string())
                            .env("LOCAL_RANK", r.to_string())
                            .env("WORLD_SIZE", "2")
                            .env("MASTER_ADDR", "127.0.0.1")
                            .env("MASTER_PORT", port.to_string());
                    }
                }
                c.args(&worker_args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            };
            let r1 = rank(1);
            let r0 = rank(0);
            let o0 = r0.wait_with_output().unwrap();
            let o1 = r1.wait_with_output().unwrap();
            assert!(
                o1.status.success() || !o0.status.success(),
                "rank 1 failed alone: {}",
                text(&o1)
            );
            o0
        }),
    }
}

/// A free port in Slurm's derived range (15000–24999).
fn slurm_port() -> u16 {
    let start = (std::process::id() as u16).wrapping_mul(37) % 10000;
    (0..10000u16)
        .map(|i| 15000 + (start + i * 131) % 10000)
        .find(|&p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok())
        .expect("a free port")
}

/// Every launcher, ZeRO 0 and 1: the per-step losses rank 0 records equal two threads'.
fn matches_threads(how: Launcher, name: &str) {
    if matches!(how, Launcher::TorchrunStatic | Launcher::TorchrunStandalone)
        && torchrun().is_none()
    {
        eprintln!("skipped: no .venv/bin/torchrun");
        return;
    }
    for zero in [0u8, 1] {
        let (_ref_home, want) = threads_run(zero);
        let home = Home::new();
        let out = two_ranks(&home, &how, zero);
        assert!(out.status.success(), "{name}, zero {zero}: {}", text(&out));
        let run = only_run(&home);
        assert_same_losses(&step_losses(&run), &want, &format!("{name}, zero {zero}"));
        let summary = read_json(&run.join("summary.json"));
        assert_eq!(summary["status"], "finished", "{summary}");
        let launcher = match how {
            Launcher::TorchrunStatic | Launcher::TorchrunStandalone => "torchrun: rank",
            Launcher::Slurm => "slurm: rank",
            Launcher::Env => "env: rank",
        };
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(launcher),
            "the header names the launcher: {}",
            text(&out)
        );
    }
}

#[test]
fn torchrun_static_two_cpu_ranks_train_as_two_threads() {
    matches_threads(Launcher::TorchrunStatic, "torchrun --master-port");
}

#[test]
fn torchrun_standalone_two_cpu_ranks_train_as_two_threads() {
    matches_threads(Launcher::TorchrunStandalone, "torchrun --standalone");
}

#[test]
fn plain_variables_two_cpu_ranks_train_as_two_threads() {
    matches_threads(Launcher::Env, "RANK/WORLD_SIZE");
}

#[test]
fn a_slurm_environment_two_cpu_ranks_train_as_two_threads() {
    matches_threads(Launcher::Slurm, "srun variables");
}

/// One process per node driving several ranks as threads: two processes of `--devices cpu:2`
/// are a world of four (process p's threads are ranks 2p, 2p+1) and train as four threads do.
#[test]
fn two_processes_of_two_cpu_ranks_train_as_four_threads() {
    let Some(tr) = torchrun() else {
        eprintln!("skipped: no .venv/bin/torchrun");
        return;
    };
    let bin = assert_cmd::cargo::cargo_bin("cptlab");
    let (_ref_home, want) = threads_run_on(1, "cpu:4");
    let home = Home::new();
    let out = retry_port(|| {
        with_home(&home, &tr)
            .args(["--nproc-per-node", "2", "--master-addr", "127.0.0.1"])
            .arg("--master-port")
            .arg(free_port().to_string())
            .arg("--no-python")
            .arg(&bin)
            .args(["worker", "--devices", "cpu:2", "--rdzv-timeout", "60"])
            .args(train_args(1))
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "{}", text(&out));
    let run = only_run(&home);
    assert_same_losses(&step_losses(&run), &want, "2 processes × cpu:2");
    let recorded = events(&std::fs::read(run.join("metrics.jsonl")).unwrap());
    let started = of_kind(&recorded, "started");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        started[0]["devices"].as_array().map(Vec::len),
        Some(4),
        "a world of four: {}",
        started[0]
    );
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "finished", "{summary}");
}

#[test]
fn a_two_process_run_resumes_at_another_world_size() {
    let (ref_home, _) = threads_run(1);
    let home = Home::new();
    let out = two_ranks(&home, &Launcher::Env, 1);
    assert!(out.status.success(), "{}", text(&out));
    // Both runs continue on one worker for 10 more steps: the same numbers.
    let resume = |h: &Home| {
        let run = only_run(h);
        let out = h
            .cmd()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--devices", "cpu", "--max-steps", "40", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        step_losses(&run)
            .into_iter()
            .filter(|(s, _)| *s > STEPS as u64)
            .collect::<Vec<_>>()
    };
    let (got, want) = (resume(&home), resume(&ref_home));
    assert_eq!(got.len(), 10, "{got:?}");
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * b.abs(), "step {s}: {a} vs {b}");
    }
}

#[test]
fn a_killed_rank_stops_the_other_which_names_it() {
    let home = Home::new();
    let port = free_port();
    let timeout = 10;
    let bin = assert_cmd::cargo::cargo_bin("cptlab");
    let rank = |r: usize, out: Stdio| {
        with_home(&home, &bin)
            .env("RANK", r.to_string())
            .env("LOCAL_RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .args([
                "worker",
                "--devices",
                "cpu",
                "--model",
                "lenet",
                "--data",
                "synthetic:2048:512",
                "--batch-size",
                "32",
                "--epochs",
                "50",
                "--threads",
                "1",
                "--set",
                "train.log_every=1",
                "--json",
                "--collective-timeout",
            ])
            .arg(timeout.to_string())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut r1 = rank(1, Stdio::null());
    let mut r0 = rank(0, Stdio::piped());
    let mut lines = BufReader::new(r0.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        let at_10 = e["event"] == "step" && e["step"] == 10;
        seen.push(e);
        if at_10 {
            break;
        }
    }
    assert!(
        seen.iter().any(|e| e["event"] == "step"),
        "rank 0 trained: {seen:?}"
    );
    r1.kill().unwrap();
    let killed = Instant::now();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = r0.wait().unwrap();
    let took = killed.elapsed();
    r1.wait().unwrap();
    assert!(!status.success(), "rank 0 must fail");
    assert!(
        took <= Duration::from_secs(timeout + 10),
        "rank 0 took {took:?} to stop (collective timeout {timeout} s)"
    );
    let ev = events(rest.join("\n").as_bytes());
    let failed = of_kind(&ev, "failed");
    assert_eq!(failed.len(), 1, "{rest:?}");
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.contains("rank 1"), "the error names rank 1: {err}");
    let summary = read_json(&only_run(&home).join("summary.json"));
    assert_eq!(summary["status"], "failed");
    assert!(
        summary["error"].as_str().unwrap().contains("rank 1"),
        "{summary}"
    );
}
