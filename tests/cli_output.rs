//! Output that cannot be written: a reader that closes the pipe (`| head`), a full disk
//! (`/dev/full`). Listings stop quietly (exit 0) or fail clearly (exit 1), never panic; a run
//! goes on training and recording whatever happens to its stdout and stderr.
mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};

use common::{read_json, Home};

/// Runs `cmd` with stdout and stderr piped; `read` bytes of stdout are read before its reader
/// is dropped (0: dropped before the child writes anything). Returns the exit status and the
/// whole stderr.
fn with_stdout_closed(mut cmd: Command, read: usize) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    if read > 0 {
        let mut buf = vec![0u8; read];
        stdout.read_exact(&mut buf).unwrap();
    }
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// A home with one short finished run; returns its directory name.
fn home_with_a_run() -> (Home, String) {
    let home = Home::new();
    common::run_ok(
        &home,
        &[
            "run",
            "--data",
            "synthetic:256:64",
            "--batch-size",
            "32",
            "--max-steps",
            "3",
            "--threads",
            "1",
            "--json",
        ],
    );
    let name = home.run_dirs()[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    (home, name)
}

fn listings(run: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["runs", "list"]),
        v(&["runs", "list", "--json"]),
        v(&["runs", "show", run]),
        v(&["runs", "show", run, "--json"]),
        v(&["runs", "export", run, "--csv"]),
        v(&["runs", "export", run, "--format", "jsonl"]),
        v(&["runs", "diff", run, run]),
        v(&["presets", "list"]),
        v(&["presets", "show", "quickstart"]),
        v(&["doctor"]),
        v(&["schedule", "precision", "CR", "--steps", "500"]),
        v(&["schedule", "lr", "cosine_annealing", "--steps", "500"]),
    ]
}

#[test]
fn listings_exit_quietly_when_the_reader_closes_the_pipe() {
    let (home, run) = home_with_a_run();
    for args in listings(&run) {
        let mut cmd = home.std_cmd();
        cmd.args(&args);
        // The reader is gone before the first write: every write finds the pipe closed.
        let (status, err) = with_stdout_closed(cmd, 0);
        assert_eq!(status.code(), Some(0), "{args:?}: {status}, stderr: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("error"), "{args:?}: {err}");
    }
    // Long CSVs, read a little (as `| head -c 20`): the writes after that fail.
    for args in [
        &["schedule", "precision", "CR", "--csv", "--steps", "100000"][..],
        &[
            "schedule",
            "lr",
            "cosine_annealing",
            "--csv",
            "--steps",
            "100000",
        ][..],
    ] {
        let mut cmd = home.std_cmd();
        cmd.args(args);
        let (status, err) = with_stdout_closed(cmd, 20);
        assert_eq!(status.code(), Some(0), "{args:?}: {status}, stderr: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_full_disk_is_a_clear_error() {
    let (home, run) = home_with_a_run();
    for args in listings(&run) {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out: Output = home
            .std_cmd()
            .args(&args)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("error: cannot write to stdout: No space left on device"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_run_outlives_its_closed_stdout_and_stderr() {
    for json in [false, true] {
        let home = Home::new();
        let mut cmd = home.std_cmd();
        cmd.args([
            "run",
            "--data",
            "synthetic:512:64",
            "--batch-size",
            "32",
            "--epochs",
            "2",
            "--threads",
            "1",
        ]);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Both readers go away before the run prints anything (as `cptlab run 2>&1 | head`
        // once head has exited).
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "json {json}: {status}");
        let dirs = home.run_dirs();
        assert_eq!(dirs.len(), 1);
        let summary = read_json(&dirs[0].join("summary.json"));
        assert_eq!(summary["status"], "finished", "json {json}");
        assert_eq!(summary["epochs"], 2);
        assert!(!dirs[0].join("process.json").exists());
    }
}

#[test]
fn a_run_writing_to_a_full_disk_goes_on_and_says_so() {
    let home = Home::new();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = home
        .std_cmd()
        .args([
            "run",
            "--data",
            "synthetic:256:64",
            "--batch-size",
            "32",
            "--max-steps",
            "4",
            "--threads",
            "1",
            "--json",
        ])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.matches("warning: cannot write to stdout").count(),
        1,
        "{err}"
    );
    let summary = read_json(&home.run_dirs()[0].join("summary.json"));
    assert_eq!(summary["status"], "finished");
}

/// `runs diff` names exactly the fields that differ, with both values; `export --format jsonl`
/// gives back the recorded events, parsed and re-written from their types.
#[test]
fn runs_diff_and_jsonl_export() {
    let (home, first) = home_with_a_run();
    common::run_ok(
        &home,
        &[
            "run",
            "--data",
            "synthetic:256:64",
            "--batch-size",
            "32",
            "--max-steps",
            "3",
            "--threads",
            "1",
            "--lr",
            "0.125",
            "--seed",
            "9",
            "--name",
            "other",
            "--json",
        ],
    );
    let second = home
        .run_dirs()
        .into_iter()
        .map(|d| d.file_name().unwrap().to_str().unwrap().to_string())
        .find(|n| *n != first)
        .unwrap();
    let out = home
        .cmd()
        .args(["runs", "diff", &first, &second, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = common::events(&out.stdout);
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["optimizer.lr", "seed"], "{rows:?}");
    assert_eq!(rows[0]["b"], "0.125");
    let text = home
        .cmd()
        .args(["runs", "diff", &first, &second])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("seed") && l.ends_with('9')),
        "{text}"
    );
    let same = home
        .cmd()
        .args(["runs", "diff", &first, &first])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stdout).contains("the same config"));

    let out = home
        .cmd()
        .args(["runs", "export", &first, "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let exported = common::events(&out.stdout);
    let recorded = std::fs::read_to_string(home.runs().join(&first).join("metrics.jsonl")).unwrap();
    let recorded = common::events(recorded.as_bytes());
    assert_eq!(exported, recorded);
    assert!(!common::of_kind(&exported, "step").is_empty());
}
