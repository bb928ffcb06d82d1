//! Runs outside the workbench's process: launching `cptlab run --json` children in their own
//! session, following run directories, the per-run lock, and signals. Everything here runs on
//! background threads and reports through the `Inbox`; the UI thread only drains it.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedSender;

use super::app::{Command, Msg, RunId};
use super::run_data::{parse_line, Incoming};
use crate::config::paths::Paths;
use crate::config::RunConfig;
use crate::files::process::{Liveness, ProcessId};
use crate::telemetry::event::Event;
use crate::telemetry::store::{self, METRICS_FILE};

/// The lock a workbench holds on a run it drives.
pub const LOCK_FILE: &str = "tui.lock";
/// How often a followed run directory is checked for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Events from background threads. Run events queue up here and only the first one after a
/// drain wakes the UI, so a fast run costs the UI one wake-up per frame, not one per step.
pub struct Inbox {
    queue: Mutex<Vec<(RunId, Incoming)>>,
    tx: UnboundedSender<Msg>,
}

impl Inbox {
    pub fn new(tx: UnboundedSender<Msg>) -> Inbox {
        Inbox {
            queue: Mutex::new(Vec::new()),
            tx,
        }
    }

    pub fn push_all(&self, run: RunId, events: impl IntoIterator<Item = Incoming>) {
        let mut q = self.queue.lock().expect("inbox lock");
        let was_empty = q.is_empty();
        q.extend(events.into_iter().map(|e| (run, e)));
        if was_empty && !q.is_empty() {
            let _ = self.tx.send(Msg::Data);
        }
    }

    pub fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    pub fn drain(&self) -> Vec<(RunId, Incoming)> {
        std::mem::take(&mut *self.queue.lock().expect("inbox lock"))
    }
}

/// Executes the app's commands that touch processes and files outside the UI's state.
pub struct Supervisor {
    paths: Paths,
    inbox: Arc<Inbox>,
    follows: Vec<(RunId, Arc<AtomicBool>)>,
}

impl Supervisor {
    pub fn new(paths: Paths, inbox: Arc<Inbox>) -> Supervisor {
        Supervisor {
            paths,
            inbox,
            follows: Vec::new(),
        }
    }

    /// Runs one command; what it learns comes back as a message for the app.
    pub fn exec(&mut self, cmd: Command) -> Option<Msg> {
        match cmd {
            Command::Resume { run, dir } => Some(match self.launch(run, None, Some(&dir)) {
                Ok(pid) => Msg::Spawned { run, pid },
                Err(e) => Msg::SpawnFailed {
                    run,
                    error: format!("{e:#}"),
                },
            }),
            Command::Launch { run, config } => Some(match self.launch(run, Some(&config), None) {
                Ok(pid) => Msg::Spawned { run, pid },
                Err(e) => Msg::SpawnFailed {
                    run,
                    error: format!("{e:#}"),
                },
            }),
            Command::Follow { run, dir, live } => {
                let cancel = Arc::new(AtomicBool::new(false));
                self.follows.push((run, cancel.clone()));
                let inbox = self.inbox.clone();
                let spawned = std::thread::Builder::new()
                    .name("cptlab-tui-follow".into())
                    .spawn(move || follow_dir(run, &dir, live, &inbox, &cancel));
                spawned.err().map(|e| Msg::SpawnFailed {
                    run,
                    error: format!("cannot start a follower thread: {e}"),
                })
            }
            Command::Unfollow { run } => {
                for (r, cancel) in &self.follows {
                    if *r == run {
                        cancel.store(true, Ordering::SeqCst);
                    }
                }
                self.follows.retain(|(r, _)| *r != run);
                None
            }
            Command::Signal { pid, signal } => {
                send_signal(pid, signal).err().map(|e| Msg::Notice {
                    text: format!("cannot signal process {pid}: {e}"),
                    warn: true,
                })
            }
        }
    }

    /// Starts `cptlab run --json` in a new session (so a hang-up of the workbench's terminal
    /// does not reach it): on `config`, written to `config.toml` in the run's directory,
    /// made here (`store::new_run_dir`) and handed over with `--run-dir`, or `--resume` of the
    /// run in `resume`.
    fn launch(&self, run: RunId, config: Option<&RunConfig>, resume: Option<&Path>) -> Result<u32> {
        let exe = std::env::current_exe().context("cannot find the cptlab executable")?;
        // /proc/<pid>/exe is this very binary even after a rebuild replaced the file on disk,
        // so the child always speaks the same event format as the workbench. It is executed
        // through a link named `cptlab`: the kernel names a process after the file it was
        // started from, so `top` would otherwise show `exe` (`ps` shows argv[0], the path).
        let link = program_link();
        let program = match &link {
            Some((_, path)) => path.as_path(),
            None => exe.as_path(),
        };
        // The config lives where the run does, so `ps` names a file that exists for as long
        // as the run (and after).
        let made = match config {
            Some(config) => Some(NewRunDir::write(&self.paths.runs, config)?),
            None => None,
        };
        // The child's stderr goes to a file: a pipe would break (and panic `eprintln!`) once
        // the workbench is gone, and the terminal belongs to the UI.
        // Unnamed (already unlinked): nothing is left behind, whoever exits first.
        let mut stderr = tempfile::tempfile()?;
        let mut cmd = Proc::new(program);
        {
            use std::os::unix::process::CommandExt;
            cmd.arg0(&exe);
        }
        cmd.arg("run");
        match (&made, resume) {
            (Some(m), _) => cmd
                .arg("--config")
                .arg(m.dir.join(store::CONFIG_FILE))
                .arg("--run-dir")
                .arg(&m.dir),
            (None, Some(dir)) => cmd.arg("--resume").arg(dir),
            (None, None) => anyhow::bail!("nothing to launch: no config and no run to resume"),
        };
        cmd.arg("--json")
            .arg("--runs-dir")
            .arg(&self.paths.runs)
            .arg("--presets-dir")
            .arg(&self.paths.presets)
            .arg("--cache-dir")
            .arg(&self.paths.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.try_clone()?));
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().context("cannot start `cptlab run`")?;
        // The child has been exec'd (spawn waits for that): the link has served.
        drop(link);
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let inbox = self.inbox.clone();
        std::thread::Builder::new()
            .name("cptlab-tui-child".into())
            .spawn(move || {
                let mut batch = Vec::new();
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if let Some(inc) = parse_line(&line) {
                        batch.push(inc);
                        // Hand over what has arrived; more lines already buffered join it.
                        if reader.buffer().is_empty() {
                            inbox.push_all(run, batch.drain(..));
                        }
                    }
                }
                inbox.push_all(run, batch.drain(..));
                let code = child.wait().ok().and_then(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().or_else(|| s.signal().map(|sig| 128 + sig))
                });
                let mut text = String::new();
                if stderr.seek(SeekFrom::Start(0)).is_ok() {
                    let _ = stderr.read_to_string(&mut text);
                }
                inbox.send(Msg::Exited {
                    run,
                    code,
                    stderr: tail(&text, 6),
                });
                // The child is gone: `made` (dropped here) removes a run directory it never used.
                drop(made);
            })
            .context("cannot start the reader thread")?;
        Ok(pid)
    }
}

/// A run directory the workbench made for a run it starts, holding the run's `config.toml`.
struct NewRunDir {
    dir: PathBuf,
}

impl NewRunDir {
    fn write(runs: &Path, config: &RunConfig) -> Result<NewRunDir> {
        let dir = store::new_run_dir(runs, &config.name)?;
        let made = NewRunDir { dir };
        crate::files::write_atomic(
            &made.dir.join(store::CONFIG_FILE),
            config.to_toml().as_bytes(),
        )
        .context("cannot write the run's config file")?;
        Ok(made)
    }
}

impl Drop for NewRunDir {
    /// Once the child is gone (or could not be started): removes the directory if the run
    /// never started in it (the child failed before its store existed: a bad config, data
    /// that cannot be read), so no empty run is listed. Only our own config goes; a directory
    /// holding anything else stays.
    fn drop(&mut self) {
        if self.dir.join(METRICS_FILE).exists() {
            return;
        }
        let _ = fs::remove_file(self.dir.join(store::CONFIG_FILE));
        let _ = crate::files::clean_stale_temps(&self.dir);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A link named `cptlab` (in a fresh temporary directory, removed with it) to this process's
/// own executable, `/proc/<pid>/exe`; None where there is no /proc.
fn program_link() -> Option<(tempfile::TempDir, PathBuf)> {
    let target = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if !target.exists() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("cptlab-exe-")
        .tempdir()
        .ok()?;
    let link = dir.path().join("cptlab");
    std::os::unix::fs::symlink(&target, &link).ok()?;
    Some((dir, link))
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `signal` to `pid`, refusing pids that would hit a process group or this process.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return Err(io::Error::other("pid out of range"));
    };
    if p <= 1 || pid == std::process::id() {
        return Err(io::Error::other("refusing to signal this pid"));
    }
    // SAFETY: plain kill(2) on a single positive pid.
    if unsafe { libc::kill(p, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads `metrics.jsonl` from the start, then (for a live run) polls for appended lines until
/// the run ends, its process is gone, or the app stops following.
fn follow_dir(run: RunId, dir: &Path, live: bool, inbox: &Inbox, cancel: &AtomicBool) {
    let path = dir.join(METRICS_FILE);
    let mut pos = 0u64;
    let mut partial = String::new();
    let mut ended = false;
    let mut gone_polls = 0;
    loop {
        let mut fresh = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                // A resume truncated the record: start over.
                pos = 0;
                partial.clear();
            }
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                pos += buf.len() as u64;
                partial.push_str(&String::from_utf8_lossy(&buf));
                while let Some(nl) = partial.find('\n') {
                    let line: String = partial.drain(..=nl).collect();
                    if let Some(inc) = parse_line(&line) {
                        ended |= matches!(inc.event, Event::Finished { .. } | Event::Failed { .. });
                        fresh.push(inc);
                    }
                }
            }
        }
        inbox.push_all(run, fresh);
        if ended || !live || cancel.load(Ordering::SeqCst) {
            break;
        }
        if store::live_pid(dir).is_none() {
            // The process is gone; give its last flush one more poll, then report.
            gone_polls += 1;
            if gone_polls > 1 {
                inbox.send(Msg::Exited {
                    run,
                    code: None,
                    stderr: String::new(),
                });
                return;
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// True when `pid` is stopped (SIGSTOP: paused by a workbench that has since gone).
pub fn is_stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let close = t.rfind(')')?;
            t[close + 1..].split_whitespace().next().map(str::to_string)
        })
        .is_some_and(|state| state == "T" || state == "t")
}

/// Why a lock could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Another live workbench drives the run.
    Held(u32),
    Io(String),
}

/// Takes `dir/tui.lock` for this process. A lock left by a dead process is stale: cleared and
/// taken. Taking a lock this process already holds succeeds.
pub fn acquire_lock(dir: &Path) -> Result<PathBuf, LockError> {
    let path = dir.join(LOCK_FILE);
    let me = std::process::id();
    for _ in 0..3 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                // pid + start time: a pid the kernel later gives to another process does not
                // hold the lock.
                let id = ProcessId::current();
                let body = serde_json::json!({
                    "pid": id.pid, "start_time": id.start_time, "boot_id": id.boot_id,
                })
                .to_string();
                f.write_all(body.as_bytes())
                    .map_err(|e| LockError::Io(e.to_string()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match lock_holder_id(&path) {
                Some(h) if h.pid == me => return Ok(path),
                Some(h) if holds(&h) => return Err(LockError::Held(h.pid)),
                // Dead holder, or a lock being written right now (no pid yet): a torn lock
                // older than a moment is stale too.
                None if fresh(&path) => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = fs::remove_file(&path);
                }
            },
            Err(e) => return Err(LockError::Io(e.to_string())),
        }
    }
    match lock_holder(&path) {
        Some(pid) => Err(LockError::Held(pid)),
        None => Err(LockError::Io(format!(
            "{} stays unreadable",
            path.display()
        ))),
    }
}

fn fresh(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(2))
}

/// The pid recorded in a lock file.
pub fn lock_holder(path: &Path) -> Option<u32> {
    lock_holder_id(path).map(|h| h.pid)
}

/// Who the lock file names (a lock written by an older build has only a pid).
fn lock_holder_id(path: &Path) -> Option<ProcessId> {
    let text = fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
    Some(ProcessId {
        pid,
        start_time: v["start_time"].as_u64(),
        boot_id: v["boot_id"].as_str().map(str::to_string),
    })
}

/// A lock holds while its process runs; a pid-only lock whose pid runs is taken as held.
fn holds(holder: &ProcessId) -> bool {
    holder.liveness() != Liveness::Dead
}

/// The live workbench (not this one) that holds the lock on `dir`, if any.
pub fn locked_by_other(dir: &Path) -> Option<u32> {
    let h = lock_holder_id(&dir.join(LOCK_FILE))?;
    (h.pid != std::process::id() && holds(&h)).then_some(h.pid)
}

/// Removes a lock if this process holds it.
pub fn release_lock(path: &Path) {
    if lock_holder(path) == Some(std::process::id()) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_stale_locks_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = acquire_lock(dir.path()).unwrap();
        // Re-entrant for the holder.
        assert_eq!(acquire_lock(dir.path()).unwrap(), path);
        assert_eq!(locked_by_other(dir.path()), None);
        // A live other holder (our parent) refuses.
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        fs::write(&path, format!(r#"{{"pid": {parent}}}"#)).unwrap();
        assert_eq!(acquire_lock(dir.path()), Err(LockError::Held(parent)));
        // A dead holder is stale.
        fs::write(&path, r#"{"pid": 4294967295}"#).unwrap();
        assert_eq!(acquire_lock(dir.path()).unwrap(), path);
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        release_lock(&path);
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_whose_pid_was_reused_by_another_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        // Our parent runs, but not since the recorded start time: its pid was reused.
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        let started = crate::files::process::start_time(parent).expect("/proc is readable");
        fs::write(
            &path,
            format!(r#"{{"pid": {parent}, "start_time": {}}}"#, started + 1),
        )
        .unwrap();
        assert_eq!(locked_by_other(dir.path()), None);
        assert_eq!(acquire_lock(dir.path()).unwrap(), path);
        // The same process with its real start time holds it.
        fs::write(
            &path,
            format!(r#"{{"pid": {parent}, "start_time": {started}}}"#),
        )
        .unwrap();
        assert_eq!(acquire_lock(dir.path()), Err(LockError::Held(parent)));
    }

    #[test]
    fn signals_never_reach_groups_or_self() {
        assert!(send_signal(0, 0).is_err());
        assert!(send_signal(1, 0).is_err());
        assert!(send_signal(std::process::id(), 0).is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
    }
}
