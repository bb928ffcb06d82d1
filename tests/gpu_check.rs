//! `scripts/gpu-check.sh --dry-run`: finds the binary and torch, then checks for a GPU. Without
//! one it must fail loudly (non-zero, the reason on stderr, no report), never pass silently.
use std::path::Path;
use std::process::Command;

fn has_gpu() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU "))
}

#[test]
fn gpu_check_dry_run_fails_loudly_without_a_gpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/gpu-check.sh"))
        .arg("--dry-run")
        .arg("--out")
        .arg(dir.path().join("gpu-report.md"))
        .current_dir(dir.path())
        .env("CPTLAB_BIN", assert_cmd::cargo::cargo_bin("cptlab"))
        .env("PYTHON", root.join(".venv/bin/python"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if has_gpu() {
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("resnet18-amp_bf16"), "{stdout}");
    } else {
        assert_eq!(
            out.status.code(),
            Some(1),
            "stdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            stderr.contains("gpu-check: FAILED: no GPU"),
            "the reason is on stderr: {stderr}"
        );
        assert!(
            !stdout.contains("would run"),
            "no plan without a GPU: {stdout}"
        );
    }
    // A dry run writes no report either way.
    assert!(!dir.path().join("gpu-report.md").exists());
    // And the real run fails the same way (it never writes a report without a GPU).
    if !has_gpu() {
        let out = Command::new(root.join("scripts/gpu-check.sh"))
            .current_dir(dir.path())
            .env("CPTLAB_BIN", assert_cmd::cargo::cargo_bin("cptlab"))
            .env("PYTHON", root.join(".venv/bin/python"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no GPU"));
        assert!(!dir.path().join("gpu-report.md").exists());
    }
}
