//! Shared set-up for the CLI tests: an isolated home for runs, presets and cache.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same command as a plain `std::process::Command` (for spawning and killing).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("cptlab"));
        c.env("CPTLAB_RUNS_DIR", self.runs())
            .env("CPTLAB_PRESETS_DIR", self.dir.path().join("presets"))
            .env("CPTLAB_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("CPTLAB_DATA");
        c
    }

    /// Run directories created so far.
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.runs()) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        v
    }
}

/// Parses `--json` output into events.
pub fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Starts `cptlab ARGS` (which must include `--json`), reads its events until step `step`, and
/// kills it with SIGKILL.
pub fn run_and_kill_at_step(home: &Home, args: &[&str], step: u64) {
    use std::io::{BufRead, BufReader};
    let mut child = home
        .std_cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "step" && e["step"] == step {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// (step, loss) of every step event in a run's metrics.
pub fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "step")
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

/// Runs `cptlab ARGS` (with `--json`), asserts it succeeded, returns its events.
pub fn run_ok(home: &Home, args: &[&str]) -> Vec<Value> {
    let out = home.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    events(&out.stdout)
}

/// The `loss` of every step event.
pub fn losses(events: &[Value]) -> Vec<f64> {
    of_kind(events, "step")
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}
