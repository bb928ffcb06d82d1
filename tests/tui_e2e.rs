//! The real binary in tmux: start a short run from Setup, watch the Dashboard show a finished
//! epoch, quit; and a hang-up that leaves the run training headless for a later workbench to
//! attach to. Needs tmux: skipped with a message when it is missing, unless CI is set.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
}

impl Tmux {
    /// Starts `script` in a detached 120×40 session.
    fn start(session: &str, script: &Path) -> Tmux {
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", session, "-x", "120", "-y", "40"])
            .arg(format!("sh {}", script.display()))
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Tmux {
            session: session.to_string(),
        }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, k])
                .status()
                .unwrap()
                .success();
            assert!(ok, "tmux send-keys {k}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until the pane shows `text`; returns the pane.
    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            let pane = self.capture();
            if pane.contains(text) {
                return pane;
            }
            assert!(
                t.elapsed() < limit,
                "no {text:?} after {limit:?}; the pane shows:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn kill(&self) {
        // Quietly: the session is usually gone already, with the workbench.
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill();
    }
}

fn have_tmux() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is required when CI is set (make test installs it)"
        );
        eprintln!("skipping the tmux end-to-end test: tmux is not installed");
    }
    ok
}

struct Home {
    dir: tempfile::TempDir,
}

impl Drop for Home {
    /// A failed test must not leave a run training in the background.
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.runs()) else {
            return;
        };
        for dir in rd.flatten().map(|e| e.path()) {
            if let Some(pid) = cptlab::telemetry::store::live_pid(&dir) {
                // SAFETY: kill(2) on the pid the run itself recorded.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

impl Home {
    /// A home with a user preset `e2e`: LeNet on small synthetic data, `epochs` epochs.
    fn new(epochs: u32) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let presets = dir.path().join("presets");
        std::fs::create_dir_all(&presets).unwrap();
        let preset = format!(
            r#"name = "e2e"
seed = 42
[model]
kind = "lenet"
[data]
random_crop_padding = 0
horizontal_flip = false
normalize = "half"
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
[lr_schedule]
kind = "cosine_annealing"
[train]
batch_size = 64
epochs = {epochs}
[devices]
threads = 1
"#
        );
        std::fs::write(presets.join("e2e.toml"), preset).unwrap();
        Home { dir }
    }

    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    fn exit_file(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("exit-{n}"))
    }

    /// A script that runs the workbench and records its exit code.
    fn script(&self, n: usize, data: &str) -> PathBuf {
        let bin = assert_cmd::cargo::cargo_bin("cptlab");
        let d = self.dir.path();
        let text = format!(
            "export CPTLAB_RUNS_DIR='{runs}' CPTLAB_PRESETS_DIR='{presets}' CPTLAB_CACHE_DIR='{cache}'\n\
             unset CPTLAB_DATA\n\
             '{bin}' --preset e2e --data {data}\n\
             echo $? > '{exit}'\n",
            runs = self.runs().display(),
            presets = d.join("presets").display(),
            cache = d.join("cache").display(),
            bin = bin.display(),
            exit = self.exit_file(n).display(),
        );
        let path = d.join(format!("run-{n}.sh"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn exit_code(&self, n: usize, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(self.exit_file(n)) {
                return s.trim().to_string();
            }
            assert!(t.elapsed() < limit, "the workbench did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_dir(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.runs())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }
}

fn summary_status(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["status"].as_str().map(str::to_string)
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_short_run_shows_a_finished_epoch_then_quits() {
    if !have_tmux() {
        return;
    }
    let home = Home::new(2);
    let tmux = Tmux::start(
        &format!("cptlab-e2e-{}-a", std::process::id()),
        &home.script(1, "synthetic:2048:512"),
    );
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(30));
    tmux.keys(&["s"]);
    let pane = tmux.wait_for("epoch 1 done", Duration::from_secs(120));
    println!("{pane}");
    assert!(pane.contains("Dashboard"), "{pane}");
    // Back to Setup, then quit; if the run is still going, stop it.
    tmux.keys(&["q", "q"]);
    if tmux.capture().contains("Leave the workbench?") {
        tmux.keys(&["x"]);
    }
    assert_eq!(home.exit_code(1, Duration::from_secs(30)), "0");
    let dir = home.run_dir();
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains(r#""event":"eval""#));
    wait_until(Duration::from_secs(60), "the run's summary", || {
        summary_status(&dir).is_some()
    });
    assert!(!dir.join("tui.lock").exists(), "the lock is released");
}

#[test]
fn a_hangup_leaves_the_run_training_and_a_new_workbench_attaches() {
    if !have_tmux() {
        return;
    }
    // Long enough to outlive the first workbench; stopped from the second.
    let home = Home::new(500);
    let first = Tmux::start(
        &format!("cptlab-e2e-{}-b1", std::process::id()),
        &home.script(1, "synthetic:1024:256"),
    );
    first.wait_for("Setup · preset e2e", Duration::from_secs(30));
    first.keys(&["s"]);
    first.wait_for("TRAINING", Duration::from_secs(120));
    // The terminal goes away (as with a dropped SSH connection): SIGHUP to the workbench.
    first.kill();
    let dir = home.run_dir();
    std::thread::sleep(Duration::from_secs(2));
    let pid = cptlab::telemetry::store::live_pid(&dir);
    assert!(
        pid.is_some(),
        "the run died with its workbench (does `cptlab run --json` stop when its stdout closes?)"
    );
    let steps = || {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap_or_default()
            .matches(r#""event":"step""#)
            .count()
    };
    let before = steps();
    wait_until(
        Duration::from_secs(30),
        "new steps after the hang-up",
        || steps() > before,
    );

    let second = Tmux::start(
        &format!("cptlab-e2e-{}-b2", std::process::id()),
        &home.script(2, "synthetic:1024:256"),
    );
    second.wait_for("still training headless", Duration::from_secs(30));
    second.keys(&["Enter"]);
    second.wait_for("attached", Duration::from_secs(30));
    second.wait_for("TRAINING", Duration::from_secs(30));
    let holder = cptlab::tui::process::lock_holder(&dir.join("tui.lock"));
    assert!(holder.is_some(), "the attached workbench holds the lock");
    second.keys(&["x"]);
    second.wait_for("Stop the run?", Duration::from_secs(10));
    second.keys(&["y"]);
    second.wait_for("STOPPED", Duration::from_secs(60));
    assert_eq!(summary_status(&dir).as_deref(), Some("stopped"));
    second.keys(&["q", "q"]);
    assert_eq!(home.exit_code(2, Duration::from_secs(30)), "0");
    assert!(!dir.join("tui.lock").exists());
}

/// The workbench pauses a run by stopping its process (`p`: SIGSTOP, then SIGCONT). The time it
/// stood still is in none of the run's timings: epoch seconds, `train_seconds`, throughput.
/// (No tmux needed: this sends the same signals the workbench's `p` sends.)
#[test]
fn a_run_paused_by_the_workbench_does_not_count_the_pause() {
    use std::io::{BufRead, BufReader};
    let home = Home::new(2);
    let d = home.dir.path();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("cptlab"))
        .args([
            "run",
            "--preset",
            "e2e",
            "--data",
            "synthetic:4096:256",
            "--json",
        ])
        .env("CPTLAB_RUNS_DIR", home.runs())
        .env("CPTLAB_PRESETS_DIR", d.join("presets"))
        .env("CPTLAB_CACHE_DIR", d.join("cache"))
        .env_remove("CPTLAB_DATA")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let pause = Duration::from_secs(2);
    let (mut started, mut stood_still) = (None, 0.0);
    let mut events: Vec<serde_json::Value> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "started" {
            started = Some(Instant::now());
        }
        if e["event"] == "step" && e["step"] == 5 {
            let t = Instant::now();
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(pause);
            unsafe { libc::kill(pid, libc::SIGCONT) };
            stood_still = t.elapsed().as_secs_f64();
        }
        events.push(e);
    }
    let wall = started.expect("a started event").elapsed().as_secs_f64();
    assert!(child.wait().unwrap().success());
    let summary = events.last().unwrap()["summary"].clone();
    assert_eq!(summary["status"], "finished", "{summary}");
    let train = summary["train_seconds"].as_f64().unwrap();
    let epochs: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "eval")
        .map(|e| e["epoch_seconds"].as_f64().unwrap())
        .collect();
    assert_eq!(epochs.len(), 2);
    assert!(
        train < wall - stood_still * 0.8,
        "train_seconds {train:.3} of a {wall:.3}s run stopped for {stood_still:.3}s"
    );
    assert!(
        epochs[0] < wall - stood_still * 0.8,
        "epoch 1: {:.3}s of a {wall:.3}s run stopped for {stood_still:.3}s",
        epochs[0]
    );
    let slowest = events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| 64.0 / e["images_per_sec"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(slowest < stood_still * 0.5, "a step of {slowest:.3}s");
}
