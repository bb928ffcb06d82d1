//! The real binary in tmux: start a short run from Setup, watch the Dashboard show a finished
//! epoch, quit; a hang-up that leaves the run training headless for a later workbench to
//! attach to (its `ps` line naming the config inside its run directory); Esc that never
//! quits, a Setup remembered across launches, and runs picked with the mouse for a three-way
//! Compare; the `$EDITOR` round trip with a scripted editor. Needs tmux: skipped with a
//! message when it is missing, unless CI is set.
mod tui_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One tmux server per session, on its own socket: tests run in parallel, and sessions on the
/// shared default server race (one session's end can take the server down while another test
/// is creating its session: "server exited unexpectedly").
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Starts `script` in a detached 120×40 session on a server of its own (named like the
    /// session, which callers make unique per test process).
    fn start(session: &str, script: &Path) -> Tmux {
        let tmux = Tmux {
            // Session names carry the test process's id, so they name unique sockets too.
            socket: session.to_string(),
            session: session.to_string(),
        };
        let ok = tmux
            .cmd()
            .args(["new-session", "-d", "-s", session, "-x", "120", "-y", "40"])
            .arg(format!("sh {}", script.display()))
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        tmux
    }

    /// A tmux command on this session's own server, without the user's tmux.conf.
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", &self.session, k])
                .status()
                .unwrap()
                .success();
            assert!(ok, "tmux send-keys {k}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// A left click at 1-based (`x`, `y`), as the terminal reports it to a program that asked
    /// for SGR mouse reports (which the workbench does).
    fn click(&self, x: u16, y: u16) {
        for end in ['M', 'm'] {
            let seq = format!("\x1b[<0;{x};{y}{end}");
            let ok = self
                .cmd()
                .args(["send-keys", "-t", &self.session, "-l", &seq])
                .status()
                .unwrap()
                .success();
            assert!(ok, "tmux send-keys (mouse)");
        }
        std::thread::sleep(Duration::from_millis(150));
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
        // Quietly: the server is usually gone already, with the workbench.
        let _ = self
            .cmd()
            .arg("kill-server")
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
log_every = 1
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

    /// A script that runs the workbench (`--preset e2e`) and records its exit code.
    fn script(&self, n: usize, data: &str) -> PathBuf {
        self.script_with(n, &format!("--preset e2e --data {data}"))
    }

    /// A script that runs the workbench with `args` and records its exit code.
    fn script_with(&self, n: usize, args: &str) -> PathBuf {
        self.script_env(n, "", args)
    }

    /// `script_with`, after the shell lines `env` (exports of the test's own).
    fn script_env(&self, n: usize, env: &str, args: &str) -> PathBuf {
        let bin = assert_cmd::cargo::cargo_bin("cptlab");
        let d = self.dir.path();
        let text = format!(
            "export CPTLAB_RUNS_DIR='{runs}' CPTLAB_PRESETS_DIR='{presets}' CPTLAB_CACHE_DIR='{cache}'\n\
             unset CPTLAB_DATA\n\
             {env}\n\
             '{bin}' {args}\n\
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
    // s shows what will start and asks.
    tmux.keys(&["s"]);
    tmux.wait_for("Start this run?", Duration::from_secs(10));
    tmux.keys(&["y"]);
    let pane = tmux.wait_for("epoch 1 done", Duration::from_secs(120));
    println!("{pane}");
    assert!(pane.contains("Dashboard"), "{pane}");
    // Back to Setup, then quit; if the run is still going, stop it.
    tmux.keys(&["Escape"]);
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(10));
    tmux.keys(&["q"]);
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
    first.keys(&["s", "y"]);
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
    // In `top` and `ps` the run is `cptlab run …`, not `exe`.
    let pid = pid.unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "cptlab");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(args[0].ends_with("cptlab"), "{args:?}");
    assert_eq!(args.get(1).map(String::as_str), Some("run"), "{args:?}");
    // Its `--config` is a file that exists, inside its own run directory (`--run-dir`).
    let after = |flag: &str| {
        let i = args.iter().position(|a| a == flag);
        i.and_then(|i| args.get(i + 1)).map(PathBuf::from)
    };
    let config = after("--config").unwrap_or_else(|| panic!("no --config: {args:?}"));
    assert!(
        config.is_file(),
        "--config {} does not exist",
        config.display()
    );
    assert_eq!(config.parent(), Some(dir.as_path()), "{args:?}");
    assert_eq!(
        after("--run-dir").as_deref(),
        Some(dir.as_path()),
        "{args:?}"
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
    second.keys(&["q"]);
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

#[test]
fn esc_is_safe_setup_is_remembered_and_the_mouse_picks_three_runs_to_compare() {
    if !have_tmux() {
        return;
    }
    let home = Home::new(2);
    // Three finished runs, recorded as the engine records them.
    for (i, name) in [
        "20250101-090000-a",
        "20250101-091000-b",
        "20250101-092000-c",
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = tui_common::config(name, None);
        cfg.seed = i as u64;
        let dir = home.runs().join(name);
        let ev = tui_common::events(&dir, &cfg, u64::MAX, true, 0.01 * i as f64);
        tui_common::write_run(&home.runs(), name, &cfg, &ev, None);
    }
    let tmux = Tmux::start(
        &format!("cptlab-e2e-{}-c1", std::process::id()),
        &home.script(1, "synthetic:2048:512"),
    );
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(30));
    // Esc never leaves.
    tmux.keys(&["Escape", "Escape", "Escape"]);
    let pane = tmux.wait_for("Esc goes back; q quits", Duration::from_secs(10));
    assert!(pane.contains("Setup · preset e2e"), "{pane}");
    assert!(!home.exit_file(1).exists(), "Esc quit the workbench");
    // One more epoch: Setup is now modified.
    tmux.keys(&["Down", "Down", "Down", "Down", "Right"]);
    tmux.wait_for("Setup · preset e2e · modified", Duration::from_secs(10));
    // The mouse: the Runs tab (columns 50–55 of row 1), then each run's row, marked with space.
    tmux.click(52, 1);
    tmux.wait_for("Runs · 3", Duration::from_secs(10));
    for row in 0..3 {
        tmux.click(12, 4 + row);
        tmux.keys(&["Space"]);
    }
    tmux.keys(&["c"]);
    let pane = tmux.wait_for("runs against A", Duration::from_secs(20));
    for name in ["092000-c", "091000-b", "090000-a"] {
        assert!(pane.contains(name), "{name} not compared:\n{pane}");
    }
    assert!(pane.contains("config that differs"), "{pane}");
    // Esc goes back to Runs; q asks, since Setup has changes no preset holds.
    tmux.keys(&["Escape"]);
    tmux.wait_for("Runs · 3", Duration::from_secs(10));
    tmux.keys(&["q"]);
    tmux.wait_for("Quit with unsaved Setup changes?", Duration::from_secs(10));
    tmux.keys(&["y"]);
    assert_eq!(home.exit_code(1, Duration::from_secs(30)), "0");

    // The next start, with no preset asked for, brings the change back.
    let again = Tmux::start(
        &format!("cptlab-e2e-{}-c2", std::process::id()),
        &home.script_with(2, "--data synthetic:2048:512"),
    );
    let pane = again.wait_for("Setup · preset e2e · modified", Duration::from_secs(30));
    assert!(pane.contains("epochs        3"), "{pane}");
    again.keys(&["q"]);
    again.wait_for("Quit with unsaved Setup changes?", Duration::from_secs(10));
    again.keys(&["q"]);
    assert_eq!(home.exit_code(2, Duration::from_secs(30)), "0");
}

/// Charts in the real binary: a recorded run opened from Runs, the loss put on a log scale
/// (`y`), zoomed (`+`) and read at the cursor (`i`, `→`), then `Esc` hides the cursor; with
/// `--no-mouse`, which leaves the terminal's own mouse alone.
#[test]
fn log_y_zoom_and_the_cursor_in_the_real_binary() {
    if !have_tmux() {
        return;
    }
    let home = Home::new(2);
    let name = "20250101-090000-replay";
    let cfg = tui_common::config(name, Some(tui_common::cr()));
    let dir = home.runs().join(name);
    let ev = tui_common::events(&dir, &cfg, u64::MAX, true, 0.0);
    tui_common::write_run(&home.runs(), name, &cfg, &ev, None);
    let tmux = Tmux::start(
        &format!("cptlab-e2e-{}-l1", std::process::id()),
        &home.script_with(1, "--preset e2e --data synthetic:2048:512 --no-mouse"),
    );
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(30));
    tmux.keys(&["5"]);
    tmux.wait_for("Runs · 1", Duration::from_secs(10));
    tmux.keys(&["Enter"]);
    tmux.wait_for("FINISHED", Duration::from_secs(20));
    tmux.keys(&["y"]);
    let pane = tmux.wait_for("loss y axis: log", Duration::from_secs(10));
    assert!(pane.contains(" log"), "{pane}");
    tmux.keys(&["+", "i", "Right"]);
    let pane = tmux.wait_for("test acc 31.00% (epoch 1)", Duration::from_secs(10));
    assert!(pane.contains("×2") && pane.contains("step 49"), "{pane}");
    tmux.keys(&["Escape"]);
    wait_until(Duration::from_secs(10), "the cursor to go", || {
        !tmux.capture().contains("step 49")
    });
    tmux.keys(&["0", "q"]);
    assert_eq!(home.exit_code(1, Duration::from_secs(30)), "0");
}

/// `e` on Setup with a scripted `$EDITOR` (sed on the file it is given): an edit that
/// validates is taken and shows in Setup; one that does not shows its error in place, keeps
/// the user's text in `setup-edit.toml`, and the next `e` opens that text again under the
/// error.
#[test]
fn the_editor_round_trip_takes_a_valid_edit_and_keeps_an_invalid_one() {
    if !have_tmux() {
        return;
    }
    let home = Home::new(2);
    let d = home.dir.path();
    // Each call does the next edit: rename the run; then an lr no run can take; then it only
    // copies what it was given.
    let editor = d.join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "n=$(cat '{d}/calls' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{d}/calls'\n\
             case $n in\n\
             1) sed -i 's/^name = .*/name = \"edited-by-sed\"/' \"$1\" ;;\n\
             2) sed -i 's/^lr = .*/lr = -1.0/' \"$1\" ;;\n\
             *) cp \"$1\" '{d}/seen.toml' ;;\n\
             esac\n",
            d = d.display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(
        &format!("cptlab-e2e-{}-e1", std::process::id()),
        &home.script_env(
            1,
            &format!("export EDITOR='sh {}'", editor.display()),
            "--preset e2e --data synthetic:2048:512",
        ),
    );
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(30));
    tmux.keys(&["e"]);
    let pane = tmux.wait_for("edited-by-sed", Duration::from_secs(20));
    assert!(pane.contains("Setup takes the edited config"), "{pane}");
    let kept = d.join("setup-edit.toml");
    assert!(!kept.exists(), "a taken edit leaves no file behind");

    tmux.keys(&["e"]);
    let pane = tmux.wait_for("edited config not taken", Duration::from_secs(20));
    assert!(
        pane.contains("optimizer.lr"),
        "the error names the field:\n{pane}"
    );
    // Setup keeps what it had; the user's text is kept.
    assert!(pane.contains("edited-by-sed"), "{pane}");
    let text = std::fs::read_to_string(&kept).expect("setup-edit.toml kept");
    assert!(
        text.contains("lr = -1.0") && text.contains("edited-by-sed"),
        "{text}"
    );

    // Offered again: the same text, the error on top.
    tmux.keys(&["e"]);
    wait_until(Duration::from_secs(20), "the third edit", || {
        d.join("seen.toml").exists()
    });
    let seen = std::fs::read_to_string(d.join("seen.toml")).unwrap();
    assert!(seen.starts_with("# cptlab: error:"), "{seen}");
    assert!(seen.contains("optimizer.lr"), "{seen}");
    assert!(
        seen.contains("lr = -1.0") && seen.contains("edited-by-sed"),
        "{seen}"
    );
    tmux.wait_for("edited config not taken", Duration::from_secs(20));
    tmux.keys(&["q"]);
    if tmux.capture().contains("Quit with unsaved Setup changes?") {
        tmux.keys(&["y"]);
    }
    assert_eq!(home.exit_code(1, Duration::from_secs(30)), "0");
}

/// Setup's whole config in the real binary: the name edited as a shell line (Ctrl-U, Ctrl-W,
/// Ctrl-A), the optimizer picked from its list with the kinds' descriptions, a setting below the
/// form's fields typed, and what starts is what the form showed (the run's config.toml).
#[test]
fn setup_edits_a_line_picks_a_kind_and_types_a_setting() {
    if !have_tmux() {
        return;
    }
    let home = Home::new(1);
    let tmux = Tmux::start(
        &format!("cptlab-e2e-{}-s1", std::process::id()),
        &home.script(1, "synthetic:512:128"),
    );
    tmux.wait_for("Setup · preset e2e", Duration::from_secs(30));
    // The name: Enter edits; Ctrl-U clears; Ctrl-W drops the last word; Ctrl-A goes home.
    tmux.keys(&["Enter", "C-u", "my run", "C-w", "run", "C-a", "x", "Enter"]);
    tmux.wait_for("xmy run", Duration::from_secs(10));
    // The optimizer (the seventh field): its list, with descriptions; ↓ Enter picks adam.
    tmux.keys(&["Down", "Down", "Down", "Down", "Down", "Down", "Enter"]);
    let pane = tmux.wait_for("Enter picks", Duration::from_secs(10));
    assert!(pane.contains("torch.optim.Adam"), "{pane}");
    tmux.keys(&["Down", "Enter"]);
    tmux.wait_for("•optimizer     ◂ adam ▸", Duration::from_secs(10));
    // Below the fields, every other key under its section: the train loop's grad_clip, typed.
    for _ in 0..80 {
        if focused_on(&tmux, "grad_clip") {
            break;
        }
        tmux.keys(&["Down"]);
    }
    let pane = tmux.capture();
    assert!(pane.contains("── train loop"), "{pane}");
    assert!(focused_on(&tmux, "grad_clip"), "{pane}");
    tmux.keys(&["Enter", "0.5", "Enter"]);
    tmux.wait_for("•grad_clip", Duration::from_secs(10));
    tmux.keys(&["s"]);
    tmux.wait_for("Start this run?", Duration::from_secs(10));
    tmux.keys(&["y"]);
    wait_until(Duration::from_secs(120), "the run's summary", || {
        std::fs::read_dir(home.runs())
            .map(|rd| rd.flatten().any(|e| e.path().join("summary.json").exists()))
            .unwrap_or(false)
    });
    let cfg = std::fs::read_to_string(home.run_dir().join("config.toml")).unwrap();
    assert!(cfg.contains("name = \"xmy run\""), "{cfg}");
    assert!(cfg.contains("kind = \"adam\""), "{cfg}");
    assert!(cfg.contains("grad_clip = 0.5"), "{cfg}");
    tmux.keys(&["q"]);
    tmux.wait_for("Quit with unsaved Setup changes?", Duration::from_secs(10));
    tmux.keys(&["y"]);
    assert_eq!(home.exit_code(1, Duration::from_secs(30)), "0");
}

/// Whether the Setup row of `label` is the focused one (drawn reversed: the capture keeps the
/// escapes with -e).
fn focused_on(tmux: &Tmux, label: &str) -> bool {
    let out = tmux
        .cmd()
        .args(["capture-pane", "-e", "-p", "-t", &tmux.session])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Any SGR sequence on the row that turns reverse video (parameter 7) on.
    let reversed = |l: &str| {
        l.split("\x1b[").skip(1).any(|seq| {
            seq.split_once('m')
                .is_some_and(|(params, _)| params.split(';').any(|p| p == "7"))
        })
    };
    text.lines()
        .find(|l| l.contains(label))
        .is_some_and(reversed)
}
