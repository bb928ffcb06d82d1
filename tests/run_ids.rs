//! Naming a run on the command line: a path, a run id (its directory's name), `last` (the newest
//! run) or a unique prefix of an id, through one resolver (`store::resolve_run_dir`) that every
//! command uses; an ambiguous prefix is an error listing the candidates.
mod common;
#[path = "tui_common/mod.rs"]
mod tui_common;

use std::path::{Path, PathBuf};

use common::Home;
use cptlab::telemetry::store::{self, resolve_run_dir};
use predicates::str::contains;
use tui_common::{config, events, write_run, EPOCHS, SPE};

const IDS: [&str; 3] = [
    "20250101-110000-alpha",
    "20250101-113000-beta",
    "20250102-090000-gamma",
];

/// Three finished runs under `root`, named by `IDS` (the newest last).
fn runs(root: &Path) -> Vec<PathBuf> {
    IDS.iter()
        .map(|id| {
            let cfg = config(id, None);
            let ev = events(&root.join(id), &cfg, u64::MAX, true, 0.0);
            write_run(root, id, &cfg, &ev, None)
        })
        .collect()
}

#[test]
fn ids_prefixes_and_last_resolve_to_one_run() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let dirs = runs(root);
    // The whole id, a path, a unique prefix, `last`.
    assert_eq!(resolve_run_dir(root, IDS[1]).unwrap(), dirs[1]);
    assert_eq!(
        resolve_run_dir(root, &dirs[0].display().to_string()).unwrap(),
        dirs[0]
    );
    assert_eq!(resolve_run_dir(root, "20250102").unwrap(), dirs[2]);
    assert_eq!(resolve_run_dir(root, "20250101-11300").unwrap(), dirs[1]);
    assert_eq!(resolve_run_dir(root, store::LAST).unwrap(), dirs[2]);

    // Ambiguous: both candidates named, and what to do.
    let e = format!("{:#}", resolve_run_dir(root, "20250101").unwrap_err());
    assert!(e.contains("ambiguous"), "{e}");
    assert!(e.contains(IDS[0]) && e.contains(IDS[1]), "{e}");
    assert!(!e.contains(IDS[2]), "{e}");
    assert!(e.contains("give more of the id"), "{e}");

    // Nothing matches: the argument and what was expected.
    let e = format!("{:#}", resolve_run_dir(root, "2024").unwrap_err());
    assert!(e.starts_with("2024: not a run"), "{e}");
    assert!(e.contains("unique prefix"), "{e}");

    // No runs at all: `last` says so.
    let empty = tempfile::tempdir().unwrap();
    let e = format!("{:#}", resolve_run_dir(empty.path(), "last").unwrap_err());
    assert!(e.contains("no runs"), "{e}");
}

#[test]
fn a_run_named_last_is_named_by_its_id() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    runs(root);
    let cfg = config("last", None);
    let own = write_run(root, "last", &cfg, &[], None);
    assert_eq!(resolve_run_dir(root, "last").unwrap(), own);
}

#[test]
fn every_command_that_names_a_run_takes_prefixes_and_last() {
    let home = Home::new();
    std::fs::create_dir_all(home.runs()).unwrap();
    runs(&home.runs());
    home.cmd()
        .args(["runs", "show", "last"])
        .assert()
        .success()
        .stdout(contains(IDS[2]));
    home.cmd()
        .args(["runs", "show", "20250101-11300"])
        .assert()
        .success()
        .stdout(contains(IDS[1]));
    home.cmd()
        .args(["runs", "export", "2025010"])
        .assert()
        .failure()
        .stderr(contains("ambiguous"))
        .stderr(contains(IDS[0]))
        .stderr(contains(IDS[2]));
    let out = home
        .cmd()
        .args(["runs", "export", "last", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count() as u64, 1 + SPE * EPOCHS);
    home.cmd()
        .args(["runs", "diff", "20250101-1100", "last"])
        .assert()
        .success()
        .stdout(contains("the same config"));
    home.cmd()
        .args(["compare", "20250101-11", "last"])
        .assert()
        .failure()
        .stderr(contains("ambiguous"));
    let out = home
        .cmd()
        .args(["compare", "20250101-110", "last"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("not a run") && !err.contains("ambiguous"),
        "{err}"
    );
    // `run --resume` resolves before anything starts: an ambiguous prefix trains nothing.
    home.cmd()
        .args(["run", "--resume", "20250101"])
        .assert()
        .failure()
        .stderr(contains("ambiguous"))
        .stderr(contains(IDS[1]));
}
