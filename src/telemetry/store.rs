//! The run directory: `config.toml` (resolved config), `metrics.jsonl` (every event, appended as
//! it happens), `summary.json` (written at the end), `checkpoints/`. Everything but the append-only
//! metrics is written atomically (temp file + rename), so a crash never leaves a half-written file.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Event, Summary};
use crate::config::RunConfig;

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Present while a process is training this run: `{"pid": …}`. Removed when the run ends.
pub const PROCESS_FILE: &str = "process.json";

/// The pid of the process training the run in `dir`, if that process is alive. A file left by a
/// dead process (kill -9, power loss) is stale and ignored.
pub fn live_pid(dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(dir.join(PROCESS_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
    process_alive(pid).then_some(pid)
}

pub fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence and permission without sending anything.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 has no effect on the target.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Writes `bytes` to `path` via a temp file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// An open run directory that events are recorded into.
pub struct RunStore {
    dir: PathBuf,
    metrics: BufWriter<File>,
    last_flush: Instant,
}

impl RunStore {
    /// Creates `runs_root/<YYYYmmdd-HHMMSS>-<name>/` (with a numeric suffix if taken) and writes
    /// the resolved config into it.
    pub fn create(runs_root: &Path, config: &RunConfig) -> Result<RunStore> {
        fs::create_dir_all(runs_root)
            .with_context(|| format!("cannot create runs directory {}", runs_root.display()))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let slug: String = config
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut dir = runs_root.join(format!("{stamp}-{slug}"));
        let mut n = 2;
        // create_dir (not _all) fails if it exists: two runs started in the same second get
        // distinct directories instead of sharing one.
        loop {
            match fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    dir = runs_root.join(format!("{stamp}-{slug}-{n}"));
                    n += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()))
                }
            }
        }
        fs::create_dir_all(dir.join(CHECKPOINT_DIR))?;
        write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())
            .with_context(|| format!("cannot write {}", dir.join(CONFIG_FILE).display()))?;
        Self::open_metrics(dir)
    }

    /// Reopens an existing run directory to continue it; metrics recorded after the checkpoint
    /// (`keep_metrics_bytes`) are cut so the resumed run's record has no duplicate steps.
    pub fn reopen(dir: &Path, keep_metrics_bytes: u64) -> Result<RunStore> {
        let path = dir.join(METRICS_FILE);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.set_len(keep_metrics_bytes)
            .with_context(|| format!("cannot truncate {}", path.display()))?;
        drop(f);
        let _ = fs::remove_file(dir.join(SUMMARY_FILE));
        Self::open_metrics(dir.to_path_buf())
    }

    fn open_metrics(dir: PathBuf) -> Result<RunStore> {
        let process = serde_json::json!({
            "pid": std::process::id(),
            "started": chrono::Local::now().to_rfc3339(),
        });
        write_atomic(&dir.join(PROCESS_FILE), process.to_string().as_bytes())
            .with_context(|| format!("cannot write {}", dir.join(PROCESS_FILE).display()))?;
        let path = dir.join(METRICS_FILE);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(RunStore {
            dir,
            metrics: BufWriter::with_capacity(1 << 16, f),
            last_flush: Instant::now(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_DIR)
    }

    /// Appends one event. Buffered; flushed at least once a second and on every event that is
    /// not a step, so a killed run loses at most a second of step lines.
    pub fn record(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, event)?;
        self.metrics.write_all(b"\n")?;
        if !matches!(event, Event::Step(_)) || self.last_flush.elapsed() > Duration::from_secs(1) {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.metrics.flush()?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Bytes of metrics recorded so far (after a flush): what a checkpoint remembers.
    pub fn metrics_len(&mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.metrics.get_ref().metadata()?.len())
    }

    pub fn write_summary(&mut self, summary: &Summary) -> Result<()> {
        self.flush()?;
        let path = self.dir.join(SUMMARY_FILE);
        write_atomic(&path, serde_json::to_string_pretty(summary)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        let _ = fs::remove_file(self.dir.join(PROCESS_FILE));
        Ok(())
    }
}

/// What `runs list` shows for one run directory.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub name: String,
    pub summary: Option<Summary>,
}

impl RunInfo {
    /// finished/stopped/diverged/failed from the summary; without one, `live` while its process
    /// runs, else `incomplete` (interrupted: resumable from its last checkpoint).
    pub fn status(&self) -> &str {
        match &self.summary {
            Some(s) => s.status.as_str(),
            None if live_pid(&self.dir).is_some() => "live",
            None => "incomplete",
        }
    }
}

/// Every run directory under `runs_root` (those with a `config.toml`), newest first.
pub fn list_runs(runs_root: &Path) -> Vec<RunInfo> {
    let Ok(rd) = fs::read_dir(runs_root) else {
        return Vec::new();
    };
    let mut runs: Vec<RunInfo> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(CONFIG_FILE).is_file())
        .map(|dir| {
            let summary = read_summary(&dir).ok();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            RunInfo { dir, name, summary }
        })
        .collect();
    runs.sort_by(|a, b| b.name.cmp(&a.name));
    runs
}

pub fn read_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(SUMMARY_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid summary", path.display()))
}

/// Reads `metrics.jsonl`; a torn last line (a run killed mid-write) is skipped, any other bad
/// line is an error naming its line number.
pub fn read_metrics(dir: &Path) -> Result<Vec<Event>> {
    let path = dir.join(METRICS_FILE);
    let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(f).lines().collect::<io::Result<_>>()?;
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(e) => events.push(e),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => anyhow::bail!("{}:{}: not a valid event: {e}", path.display(), i + 1),
        }
    }
    Ok(events)
}

/// Step events as CSV, one row per optimizer step.
pub fn steps_csv(events: &[Event]) -> String {
    let mut out = String::from(
        "step,epoch,loss,lr,images_per_sec,grad_norm,t_data,t_fwd,t_bwd,t_comm,t_opt\n",
    );
    for e in events {
        if let Event::Step(s) = e {
            let norm = s.grad_norm.map(|g| g.to_string()).unwrap_or_default();
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                s.step,
                s.epoch,
                s.loss,
                s.lr,
                s.images_per_sec,
                norm,
                s.t_data,
                s.t_fwd,
                s.t_bwd,
                s.t_comm,
                s.t_opt
            ));
        }
    }
    out
}

/// Evaluation events as CSV, one row per epoch.
pub fn evals_csv(events: &[Event]) -> String {
    let mut out = String::from("epoch,step,train_loss,test_loss,test_acc,epoch_seconds\n");
    for e in events {
        if let Event::Eval(v) = e {
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                v.epoch, v.step, v.train_loss, v.test_loss, v.test_acc, v.epoch_seconds
            ));
        }
    }
    out
}

/// Resolves a user's run argument: a path, or a run directory name under `runs_root`.
pub fn resolve_run_dir(runs_root: &Path, arg: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    let candidates = [p.clone(), runs_root.join(arg)];
    for c in candidates {
        if c.join(CONFIG_FILE).is_file() {
            return Ok(c);
        }
    }
    anyhow::bail!(
        "{arg}: not a run directory (expected a folder with {CONFIG_FILE}, as a path or a name under {})",
        runs_root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::event::LogLevel;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn metrics_survive_a_torn_last_line_and_reopen_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::config::presets::PresetStore::new(dir.path().join("p"))
            .load("quickstart")
            .unwrap();
        let mut s = RunStore::create(dir.path(), &c).unwrap();
        let ev = Event::Log {
            level: LogLevel::Info,
            message: "a".into(),
        };
        s.record(&ev).unwrap();
        let keep = s.metrics_len().unwrap();
        s.record(&ev).unwrap();
        let run = s.dir().to_path_buf();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(run.join(METRICS_FILE))
            .unwrap();
        f.write_all(b"{\"event\":\"lo").unwrap();
        assert_eq!(read_metrics(&run).unwrap().len(), 2);
        drop(RunStore::reopen(&run, keep).unwrap());
        assert_eq!(read_metrics(&run).unwrap(), vec![ev]);
        assert_eq!(list_runs(dir.path()).len(), 1);
        // This test process wrote process.json and is alive: the run counts as live …
        assert_eq!(list_runs(dir.path())[0].status(), "live");
        // … and once its process is gone (a pid that cannot exist), as interrupted.
        write_atomic(&run.join(PROCESS_FILE), br#"{"pid": 4294967295}"#).unwrap();
        assert_eq!(list_runs(dir.path())[0].status(), "incomplete");
    }
}
