//! Nothing silently wrong on disk: a full disk, a read-only file system, a runs "directory" that
//! is a file, temporary files of interrupted writes, stale process markers, corrupt summaries,
//! edited configs and truncated checkpoints each give one clear message naming the file, and
//! never a C++ backtrace or a leftover temporary file.
//!
//! The full-disk and read-only cases mount a small tmpfs (they need root, as in CI; without it
//! they print "skipped: needs mount (root)").
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{events, of_kind, Home};
use cptlab::engine::checkpoint;

/// A tmpfs mounted for one test; unmounted on drop (also when the test fails).
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: needs mount (root)");
            return None;
        }
        Some(Mount {
            dir: dir.to_path_buf(),
        })
    }

    fn remount_read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(ok.success(), "remount read-only");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn run(home: &Home, runs: &Path, args: &[&str]) -> Output {
    home.std_cmd()
        .env("CPTLAB_RUNS_DIR", runs)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file below `dir` whose name marks it as a temporary file (ours or libtorch's/tempfile's).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if name.starts_with(".cptlab-tmp-")
            || name.starts_with(".tmp")
            || name.ends_with(".tmp")
        {
            out.push(p);
        }
    }
    out
}

fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn assert_no_backtrace(s: &str) {
    assert!(
        !s.contains("frame #") && !s.contains("Exception raised from") && !s.contains("terminate"),
        "a C++ backtrace leaked: {s}"
    );
}

/// LeNet's checkpoint is about 500 kB: 800 kB hold the first, not a second beside it.
const SMALL_RUN: &[&str] = &[
    "run",
    "--data",
    "synthetic:256:64",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--json",
];

#[test]
fn a_full_disk_while_checkpointing_fails_clearly_and_keeps_the_last_checkpoint() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(&tmp.path().join("full"), "800k") else {
        return;
    };
    let out = run(&home, &m.dir, SMALL_RUN);
    let err = stderr(&out);
    assert_no_backtrace(&err);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let evs = events(&out.stdout);
    let failed = of_kind(&evs, "failed");
    assert_eq!(failed.len(), 1, "{err}");
    let msg = failed[0]["error"].as_str().unwrap();
    let run_dir = only_run(&m.dir);
    let last = run_dir.join("checkpoints/last.pt");
    assert!(
        msg.contains(&format!("cannot write {}", last.display()))
            && msg.contains("no space left on device"),
        "{msg}"
    );
    assert_no_backtrace(msg);
    // The first epoch's checkpoint is intact and readable; nothing temporary is left.
    assert_eq!(checkpoint::read_meta(&last).unwrap().epochs_done, 1);
    assert_eq!(temp_files(&m.dir), Vec::<PathBuf>::new());
    let summary = common::read_json(&run_dir.join("summary.json"));
    assert_eq!(summary["status"], "failed");
}

#[test]
fn a_full_disk_while_writing_metrics_says_so() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(&tmp.path().join("full"), "64k") else {
        return;
    };
    let out = run(
        &home,
        &m.dir,
        &[
            "run",
            "--data",
            "synthetic:4096:64",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--set",
            "train.checkpoint=false",
            // An event per step: 512 of them fill the 64k disk.
            "--set",
            "train.log_every=1",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let metrics = only_run(&m.dir).join("metrics.jsonl");
    assert!(
        err.contains(&format!(
            "cannot write {}: no space left on device",
            metrics.display()
        )),
        "{err}"
    );
    assert_eq!(temp_files(&m.dir), Vec::<PathBuf>::new());
}

#[test]
fn a_read_only_runs_directory_says_so_and_creates_nothing() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(&tmp.path().join("ro"), "1m") else {
        return;
    };
    m.remount_read_only();
    let out = run(&home, &m.dir, SMALL_RUN);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&m.dir.display().to_string()) && err.contains("read-only file system"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&m.dir).unwrap().count(), 0);
}

#[test]
fn a_runs_directory_that_is_a_file_says_so() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runs");
    fs::write(&file, "not a folder").unwrap();
    let out = run(&home, &file, SMALL_RUN);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{} is not a directory", file.display())),
        "{err}"
    );
}

#[test]
fn runs_list_on_a_runs_directory_that_is_a_file_is_an_error() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runs");
    fs::write(&file, "not a folder").unwrap();
    let out = run(&home, &file, &["runs", "list"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "listed nothing instead of failing");
    assert!(err.contains("not a directory"), "{err}");
}

/// A finished small run under `home`, its directory.
fn finished_run(home: &Home) -> PathBuf {
    let out = run(home, &home.runs(), SMALL_RUN);
    assert!(out.status.success(), "{}", stderr(&out));
    only_run(&home.runs())
}

/// Turns a finished run into an interrupted one (as after kill -9 during its last epoch).
fn interrupt(dir: &Path) {
    fs::remove_file(dir.join("summary.json")).unwrap();
}

#[test]
fn a_stale_process_marker_whose_pid_was_reused_does_not_block_resume() {
    let home = Home::new();
    let dir = finished_run(&home);
    interrupt(&dir);
    // The pid now belongs to another process (a sleep), which started at another time.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let marker = serde_json::json!({"pid": other.id(), "start_time": 1, "started": "then"});
    fs::write(dir.join("process.json"), marker.to_string()).unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["run", "--resume", dir.to_str().unwrap(), "--json"],
    );
    let _ = other.kill();
    let _ = other.wait();
    assert!(out.status.success(), "{}", stderr(&out));

    // A marker without a start time (an older cptlab) naming a running process: the error
    // says which file to delete.
    interrupt(&dir);
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let marker = serde_json::json!({"pid": other.id()});
    fs::write(dir.join("process.json"), marker.to_string()).unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["run", "--resume", dir.to_str().unwrap()],
    );
    let _ = other.kill();
    let _ = other.wait();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("delete {}", dir.join("process.json").display())),
        "{err}"
    );
}

#[test]
fn resume_removes_what_an_interrupted_checkpoint_left() {
    let home = Home::new();
    let dir = finished_run(&home);
    interrupt(&dir);
    let ckpts = dir.join("checkpoints");
    // Ours, from a writer that is gone, and an old version's `.last-*.tmp`, hours old.
    let ours = ckpts.join(format!(".cptlab-tmp-{}-7-0-last.pt", u32::MAX));
    let legacy = ckpts.join(".last-AbCdEf.tmp");
    fs::write(&ours, b"half a checkpoint").unwrap();
    fs::write(&legacy, b"half a checkpoint").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    fs::File::options()
        .write(true)
        .open(&legacy)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["run", "--resume", dir.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!ours.exists() && !legacy.exists());
}

#[test]
fn a_corrupt_summary_is_listed_as_corrupt() {
    let home = Home::new();
    let dir = finished_run(&home);
    fs::write(dir.join("summary.json"), "{\"status\": \"fini").unwrap();
    let out = run(&home, &home.runs(), &["runs", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("corrupt") && !text.contains("incomplete"),
        "{text}"
    );
}

#[test]
fn runs_show_names_a_corrupt_summary() {
    let home = Home::new();
    let dir = finished_run(&home);
    fs::write(dir.join("summary.json"), "{\"status\": \"fini").unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["runs", "show", dir.to_str().unwrap()],
    );
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        all.contains(&dir.join("summary.json").display().to_string()) && all.contains("corrupt"),
        "{all}"
    );
    assert!(!all.contains("resume it"), "{all}");
}

#[test]
fn resuming_after_the_config_was_edited_to_another_model_names_both() {
    let home = Home::new();
    let dir = finished_run(&home);
    interrupt(&dir);
    let config = dir.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("kind = \"lenet\"", "kind = \"resnet20\""),
    )
    .unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["run", "--resume", dir.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    let last = dir.join("checkpoints/last.pt");
    assert!(
        err.contains(&format!("checkpoint {}", last.display()))
            && err.contains("resnet20")
            && err.contains(&config.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("no tensor for"), "{err}");
}

#[test]
fn a_truncated_checkpoint_is_named_without_a_backtrace() {
    let home = Home::new();
    let dir = finished_run(&home);
    interrupt(&dir);
    let last = dir.join("checkpoints/last.pt");
    let bytes = fs::read(&last).unwrap();
    fs::write(&last, &bytes[..1000]).unwrap();
    let out = run(
        &home,
        &home.runs(),
        &["run", "--resume", dir.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_no_backtrace(&err);
    assert!(
        err.contains(&last.display().to_string()) && err.contains("not a readable checkpoint"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
