//! The run directory: `config.toml` (resolved config), `metrics.jsonl` (every event, appended as
//! it happens), `summary.json` (written at the end), `checkpoints/`. Everything but the append-only
//! metrics is written atomically (`files::write_atomic`), so a crash never leaves a half-written
//! file, and every failure names the file and says why ("no space left on device").
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Event, RunStatus, Summary};
use crate::config::{ConfigError, RunConfig};
use crate::files::process::{Liveness, ProcessId};
use crate::files::{self, FileError};

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Present while a process is training this run: `{"pid", "start_time", "boot_id", "started"}`
/// (`start_time`: `/proc/<pid>/stat` field 22). Removed when the run ends.
pub const PROCESS_FILE: &str = "process.json";

/// Who `process.json` says is training a run, and whether that process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunProcess {
    /// No marker, an unreadable one, or one whose process is gone (kill -9, power loss) or whose
    /// pid now belongs to another process.
    None,
    /// The recorded process (same pid and start time) is running.
    Live(u32),
    /// A process with the recorded pid runs, but the marker (written by an older version) has no
    /// start time to tell whether it is the same one.
    Unsure(u32),
}

/// What `dir/process.json` says, checked against the running processes.
pub fn run_process(dir: &Path) -> RunProcess {
    let Some(id) = read_process_file(dir) else {
        return RunProcess::None;
    };
    match id.liveness() {
        Liveness::Alive => RunProcess::Live(id.pid),
        Liveness::Unknown => RunProcess::Unsure(id.pid),
        Liveness::Dead => RunProcess::None,
    }
}

fn read_process_file(dir: &Path) -> Option<ProcessId> {
    let text = fs::read_to_string(dir.join(PROCESS_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(ProcessId {
        pid: u32::try_from(v["pid"].as_u64()?).ok()?,
        start_time: v["start_time"].as_u64(),
        boot_id: v["boot_id"].as_str().map(str::to_string),
    })
}

/// The pid of the process training the run in `dir`, if it is alive (or, for a marker without a
/// start time, if a process with its pid runs). A marker left by a dead process is ignored, and
/// so is one whose pid was reused by another process.
pub fn live_pid(dir: &Path) -> Option<u32> {
    match run_process(dir) {
        RunProcess::Live(pid) | RunProcess::Unsure(pid) => Some(pid),
        RunProcess::None => None,
    }
}

/// Whether a process with this pid exists (no identity check: see `files::process` for that).
pub fn process_alive(pid: u32) -> bool {
    files::process::exists(pid)
}

/// Writes `bytes` to `path` atomically (`files::write_atomic`); the error says the path and the
/// cause ("cannot write out.csv: no space left on device").
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    files::write_atomic(path, bytes).map_err(io::Error::from)
}

/// Creates a new run directory under `runs_root` and returns it: `<YYYYmmdd-HHMMSS>-<name>`
/// (characters of the name outside `A-Za-z0-9_-` become `-`), with `-2`, `-3`, … when taken.
/// The directory's name is the run's id. The one naming scheme of runs, for the engine's
/// store and for the workbench, which makes a run's directory before it starts the run.
pub fn new_run_dir(runs_root: &Path, name: &str) -> Result<PathBuf> {
    files::create_dir_all(runs_root).context("runs directory")?;
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
    let slug: String = name
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
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                dir = runs_root.join(format!("{stamp}-{slug}-{n}"));
                n += 1;
            }
            Err(e) => return Err(FileError::new("create directory", &dir, e).into()),
        }
    }
}

/// Whether a new run may be recorded in `dir` (`run --run-dir`): yes when it does not exist
/// yet or holds only `config.toml` (the config the workbench wrote there before starting the
/// run), this process's own `process.json` (`claim_run_dir`) and temporary files. Anything
/// else (another run's metrics, summary, checkpoints, a file of the user's) is refused, named.
pub fn check_new_run_dir(dir: &Path) -> Result<()> {
    if dir.file_name().is_none() {
        anyhow::bail!(
            "{}: not a directory name a run can take (its name is the run's id)",
            dir.display()
        );
    }
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FileError::new("read", dir, e).into()),
    };
    if !meta.is_dir() {
        anyhow::bail!(
            "{}: not a directory (it is {}); expected a new directory for the run",
            dir.display(),
            files::file_type_name(&meta.file_type())
        );
    }
    files::clean_stale_temps(dir)?;
    let rd = fs::read_dir(dir).map_err(|e| FileError::new("read directory", dir, e))?;
    let mut other: Vec<String> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FileError::new("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let allowed = match name.as_str() {
            CONFIG_FILE => entry.path().is_file(),
            PROCESS_FILE => read_process_file(dir).is_some_and(|p| p == ProcessId::current()),
            n => files::is_temp_name(n),
        };
        if !allowed {
            other.push(name);
        }
    }
    if other.is_empty() {
        return Ok(());
    }
    other.sort();
    let run = [METRICS_FILE, SUMMARY_FILE, CHECKPOINT_DIR, PROCESS_FILE]
        .iter()
        .any(|f| other.iter().any(|o| o == f));
    let what = if run {
        "holds another run"
    } else {
        "is not empty"
    };
    const SHOWN: usize = 4;
    let mut names = other
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if other.len() > SHOWN {
        names.push_str(&format!(", and {} more", other.len() - SHOWN));
    }
    anyhow::bail!(
        "{}: {what} ({names}); a run is recorded in a new directory, or in one holding only the {CONFIG_FILE} the workbench wrote there",
        dir.display()
    )
}

/// `dir` taken for the run this process is about to start (`run --run-dir`): checked with
/// `check_new_run_dir`, created if missing, and marked with this process's `process.json`,
/// so listings show the run live while its data and model are built. Dropped without `keep`
/// (the run could not start), the claim takes back what it made: the marker, and the
/// directory if it made it (a config found there stays: it is not ours).
pub struct RunDirClaim {
    dir: PathBuf,
    made_dir: bool,
    kept: bool,
}

pub fn claim_run_dir(dir: &Path) -> Result<RunDirClaim> {
    check_new_run_dir(dir)?;
    let made_dir = !dir.exists();
    files::create_dir_all(dir)?;
    let claim = RunDirClaim {
        dir: dir.to_path_buf(),
        made_dir,
        kept: false,
    };
    write_process_file(dir)?;
    Ok(claim)
}

impl RunDirClaim {
    /// The run started: its store owns the directory now.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for RunDirClaim {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if read_process_file(&self.dir).is_some_and(|p| p == ProcessId::current()) {
            let _ = fs::remove_file(self.dir.join(PROCESS_FILE));
        }
        if self.made_dir {
            // Only when empty: whatever else appeared there is not ours to delete.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

fn write_process_file(dir: &Path) -> Result<()> {
    let me = ProcessId::current();
    let process = serde_json::json!({
        "pid": me.pid,
        "start_time": me.start_time,
        "boot_id": me.boot_id,
        "started": chrono::Local::now().to_rfc3339(),
    });
    files::write_atomic(&dir.join(PROCESS_FILE), process.to_string().as_bytes())?;
    Ok(())
}

/// An open run directory that events are recorded into.
pub struct RunStore {
    dir: PathBuf,
    metrics_path: PathBuf,
    metrics: BufWriter<File>,
    last_flush: Instant,
}

impl RunStore {
    /// Creates `runs_root/<YYYYmmdd-HHMMSS>-<name>/` (`new_run_dir`) and writes the resolved
    /// config into it.
    pub fn create(runs_root: &Path, config: &RunConfig) -> Result<RunStore> {
        let dir = new_run_dir(runs_root, &config.name)?;
        let made = Self::fill(&dir, config);
        if made.is_err() {
            // Nothing half-made stays behind when the run cannot even be set up (a full disk).
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    /// Records the run in `dir` (`run --run-dir`; the run's id is the directory's name): a
    /// directory that does not exist yet, or one holding only what `check_new_run_dir`
    /// allows (the config the workbench wrote there, this process's claim). The resolved
    /// config replaces the one found there.
    pub fn create_in(dir: &Path, config: &RunConfig) -> Result<RunStore> {
        check_new_run_dir(dir)?;
        let existed = dir.exists();
        files::create_dir_all(dir).context("run directory")?;
        let made = Self::fill(dir, config);
        if made.is_err() {
            if existed {
                let _ = fs::remove_dir_all(dir.join(CHECKPOINT_DIR));
                let _ = fs::remove_file(dir.join(METRICS_FILE));
            } else {
                let _ = fs::remove_dir_all(dir);
            }
        }
        made
    }

    fn fill(dir: &Path, config: &RunConfig) -> Result<RunStore> {
        files::create_dir_all(&dir.join(CHECKPOINT_DIR))?;
        files::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        Self::open_metrics(dir.to_path_buf())
    }

    /// Reopens an existing run directory to continue it; metrics recorded after the checkpoint
    /// (`keep_metrics_bytes`) are cut so the resumed run's record has no duplicate steps.
    /// Temporary files that an interrupted write left (a checkpoint cut off by a second SIGTERM)
    /// are removed first.
    pub fn reopen(dir: &Path, keep_metrics_bytes: u64) -> Result<RunStore> {
        files::clean_stale_temps(dir)?;
        files::clean_stale_temps(&dir.join(CHECKPOINT_DIR))?;
        let path = dir.join(METRICS_FILE);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| FileError::new("open", &path, e))?;
        f.set_len(keep_metrics_bytes)
            .map_err(|e| FileError::new("truncate", &path, e))?;
        drop(f);
        let summary = dir.join(SUMMARY_FILE);
        match fs::remove_file(&summary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(FileError::new("remove", &summary, e).into())
            }
            _ => {}
        }
        Self::open_metrics(dir.to_path_buf())
    }

    fn open_metrics(dir: PathBuf) -> Result<RunStore> {
        write_process_file(&dir)?;
        let path = dir.join(METRICS_FILE);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| FileError::new("open", &path, e))?;
        Ok(RunStore {
            dir,
            metrics_path: path,
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

    fn metrics_error(&self, e: io::Error) -> anyhow::Error {
        FileError::new("write", &self.metrics_path, e).into()
    }

    /// Appends one event. Buffered; flushed at least once a second and on every event that is
    /// not a step, so a killed run loses at most a second of step lines.
    pub fn record(&mut self, event: &Event) -> Result<()> {
        let line = serde_json::to_vec(event)?;
        self.metrics
            .write_all(&line)
            .and_then(|()| self.metrics.write_all(b"\n"))
            .map_err(|e| self.metrics_error(e))?;
        if !matches!(event, Event::Step(_)) || self.last_flush.elapsed() > Duration::from_secs(1) {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.metrics.flush().map_err(|e| self.metrics_error(e))?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Bytes of metrics recorded so far (after a flush): what a checkpoint remembers.
    pub fn metrics_len(&mut self) -> Result<u64> {
        self.flush()?;
        let m = self
            .metrics
            .get_ref()
            .metadata()
            .map_err(|e| FileError::new("read the length of", &self.metrics_path, e))?;
        Ok(m.len())
    }

    pub fn write_summary(&mut self, summary: &Summary) -> Result<()> {
        // The summary is written even when the metrics cannot be (a full disk, where the small
        // summary may still fit); the first error is the one reported.
        let flushed = self.flush();
        let path = self.dir.join(SUMMARY_FILE);
        files::write_atomic(&path, serde_json::to_string_pretty(summary)?.as_bytes())?;
        let _ = fs::remove_file(self.dir.join(PROCESS_FILE));
        flushed
    }
}

/// What `runs list` shows for one run directory.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub name: String,
    pub summary: Option<Summary>,
    /// Why `summary.json` exists but cannot be used (the error names the file), if it does.
    pub summary_error: Option<String>,
}

/// What `runs list` shows as a run's status: the summary's, or what the directory says
/// without one. Displayed (and written by `runs list --json`) as the lowercase names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// The run ended and its summary says how.
    Ended(RunStatus),
    /// `summary.json` exists but cannot be read.
    Corrupt,
    /// No summary, and the process training it runs.
    Live,
    /// No summary and no process: interrupted, resumable from its last checkpoint.
    Incomplete,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Ended(s) => s.as_str(),
            RunState::Corrupt => "corrupt",
            RunState::Live => "live",
            RunState::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl serde::Serialize for RunState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl RunInfo {
    /// finished/stopped/diverged/failed from the summary; `corrupt` when the summary file exists
    /// but cannot be read; without one, `live` while its process runs, else `incomplete`
    /// (interrupted: resumable from its last checkpoint).
    pub fn status(&self) -> RunState {
        match &self.summary {
            Some(s) => RunState::Ended(s.status),
            None if self.summary_error.is_some() => RunState::Corrupt,
            None if live_pid(&self.dir).is_some() => RunState::Live,
            None => RunState::Incomplete,
        }
    }
}

/// Every run directory under `runs_root` (those with a `config.toml`), newest first. A runs
/// directory that does not exist yet holds no runs; one that cannot be read (not a directory,
/// no permission) is an error saying so.
pub fn try_list_runs(runs_root: &Path) -> Result<Vec<RunInfo>> {
    let rd = match fs::read_dir(runs_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(anyhow::Error::from(FileError::new(
                "read runs directory",
                runs_root,
                e,
            )))
        }
    };
    let mut runs = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FileError::new("read runs directory", runs_root, e))?;
        let dir = entry.path();
        if !dir.join(CONFIG_FILE).is_file() {
            continue;
        }
        let (summary, summary_error) = match read_summary_if_present(&dir) {
            Ok(s) => (s, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        runs.push(RunInfo {
            dir,
            name,
            summary,
            summary_error,
        });
    }
    runs.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(runs)
}

/// [`try_list_runs`] for views that show what they can: an unreadable runs directory lists no
/// runs. Commands should use `try_list_runs` and report the error.
pub fn list_runs(runs_root: &Path) -> Vec<RunInfo> {
    try_list_runs(runs_root).unwrap_or_default()
}

/// The run's recorded `config.toml`, parsed strictly (an error names the file and the field).
pub fn read_config(dir: &Path) -> std::result::Result<RunConfig, ConfigError> {
    RunConfig::from_file(&dir.join(CONFIG_FILE))
}

/// The run's recorded `config.toml` as written, for showing it or reading it loosely.
pub fn read_config_text(dir: &Path) -> Result<String> {
    let path = dir.join(CONFIG_FILE);
    fs::read_to_string(&path).map_err(|e| FileError::new("read", &path, e).into())
}

/// The run's summary; an error when it is missing or cannot be read.
pub fn read_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(SUMMARY_FILE);
    read_summary_if_present(dir)?.ok_or_else(|| {
        FileError::new("read", &path, io::Error::from_raw_os_error(libc::ENOENT)).into()
    })
}

/// The run's summary, `None` when there is none (the run is live or was interrupted); an error
/// naming the file when it exists but is corrupt or unreadable, which is not the same thing as
/// an interrupted run.
pub fn read_summary_if_present(dir: &Path) -> Result<Option<Summary>> {
    let path = dir.join(SUMMARY_FILE);
    let bytes = match files::read_regular(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "{} is corrupt ({e}): the run's outcome is unknown; its events are in {METRICS_FILE} and its last checkpoint in {CHECKPOINT_DIR}/",
            path.display()
        )
    })
}

/// Reads `metrics.jsonl`; a torn last line (a run killed mid-write) is skipped, any other bad
/// line is an error naming its line number. Epochs come back 1-based whatever build wrote them.
pub fn read_metrics(dir: &Path) -> Result<Vec<Event>> {
    let path = dir.join(METRICS_FILE);
    let (f, _) = files::open_regular(&path)?;
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<io::Result<_>>()
        .map_err(|e| FileError::new("read", &path, e))?;
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
    // Older builds numbered epochs from 0: every reader sees them 1-based.
    super::event::upgrade_epochs(&mut events);
    Ok(events)
}

/// The columns of `steps_csv`, in order: every field a step event carries (`StepEvent`), the
/// first eleven as earlier builds wrote them. A field the event leaves out (`grad_norm`
/// without clipping, `q_fwd` without a schedule, `loss_scale` outside fp16, …) is an empty cell.
/// `steps` is how many optimizer steps the row stands for (`train.log_every`; empty: 1) and
/// `skipped_steps` how many of them were skipped (fp16 overflows, bf16 non-finite steps).
pub const STEP_COLUMNS: &[&str] = &[
    "step",
    "epoch",
    "loss",
    "lr",
    "images_per_sec",
    "grad_norm",
    "t_data",
    "t_fwd",
    "t_bwd",
    "t_comm",
    "t_opt",
    "q_fwd",
    "q_bwd",
    "gbitops",
    "loss_scale",
    "skipped",
    "steps",
    "skipped_steps",
    "peak_memory_bytes",
    "peak_memory_kind",
];

/// The columns of `evals_csv`, in order: every field of an evaluation event (`EvalEvent`).
pub const EVAL_COLUMNS: &[&str] = &[
    "epoch",
    "step",
    "train_loss",
    "test_loss",
    "test_acc",
    "epoch_seconds",
];

/// One CSV cell from a serialized field: numbers as Rust writes them (as earlier builds did),
/// booleans as true/false, a missing field empty.
fn csv_cell(v: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match v {
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Rows of `columns` from events serialized through serde (so a field added to the event
/// cannot be silently dropped by a hand-written row; the column lists are tested against it).
fn csv_of<T: Serialize>(columns: &[&str], rows: impl Iterator<Item = T>) -> String {
    let mut out = columns.join(",");
    out.push('\n');
    for r in rows {
        let v = serde_json::to_value(&r).unwrap_or_default();
        let cells: Vec<String> = columns.iter().map(|c| csv_cell(v.get(*c))).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Step events as CSV, one row per step event (`STEP_COLUMNS`).
pub fn steps_csv(events: &[Event]) -> String {
    csv_of(
        STEP_COLUMNS,
        events.iter().filter_map(|e| match e {
            Event::Step(s) => Some(s),
            _ => None,
        }),
    )
}

/// Evaluation events as CSV, one row per epoch (`EVAL_COLUMNS`).
pub fn evals_csv(events: &[Event]) -> String {
    csv_of(
        EVAL_COLUMNS,
        events.iter().filter_map(|e| match e {
            Event::Eval(v) => Some(v),
            _ => None,
        }),
    )
}

/// The word that names the newest run wherever a run is named.
pub const LAST: &str = "last";

/// Resolves a user's run argument, the one way every command names a run (`runs show`,
/// `diff`, `export`, `rm`, `run --resume`, `compare`): a path to a run directory, a run
/// directory's name (its id) under `runs_root`, `last` (the newest run), or a unique prefix of
/// a run id. An ambiguous prefix is an error listing the runs it matches. An existing
/// directory that is not a run is not matched by prefix (`compare` reads it as a folder of
/// runs).
pub fn resolve_run_dir(runs_root: &Path, arg: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    let candidates = [p.clone(), runs_root.join(arg)];
    for c in candidates {
        if c.join(CONFIG_FILE).is_file() {
            return Ok(c);
        }
    }
    let not_found = || {
        anyhow::anyhow!(
            "{arg}: not a run (expected a run directory with {CONFIG_FILE}, a run id under {} or a unique prefix of one, or `{LAST}`)",
            runs_root.display()
        )
    };
    if arg.is_empty() || arg.contains(std::path::MAIN_SEPARATOR) || p.is_dir() {
        return Err(not_found());
    }
    let runs = try_list_runs(runs_root)?;
    if arg == LAST {
        return runs.first().map(|r| r.dir.clone()).ok_or_else(|| {
            anyhow::anyhow!("{LAST}: there are no runs in {}", runs_root.display())
        });
    }
    let hits: Vec<&RunInfo> = runs.iter().filter(|r| r.name.starts_with(arg)).collect();
    match hits.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one.dir.clone()),
        many => {
            const SHOWN: usize = 10;
            let mut names: Vec<&str> = many.iter().take(SHOWN).map(|r| r.name.as_str()).collect();
            let more = many.len().saturating_sub(SHOWN);
            let tail = if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            };
            names.sort_unstable();
            anyhow::bail!(
                "{arg}: ambiguous, {} runs start with it: {}{tail} (give more of the id)",
                many.len(),
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::event::LogLevel;

    fn quickstart(dir: &Path) -> RunConfig {
        crate::config::presets::PresetStore::new(dir.join("p"))
            .load("quickstart")
            .unwrap()
    }

    #[test]
    fn a_corrupt_summary_is_corrupt_not_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RunStore::create(dir.path(), &quickstart(dir.path())).unwrap();
        s.write_summary(&Summary {
            status: RunStatus::Finished,
            ..Summary::default()
        })
        .unwrap();
        let run = s.dir().to_path_buf();
        drop(s);
        assert_eq!(
            try_list_runs(dir.path()).unwrap()[0].status(),
            RunState::Ended(RunStatus::Finished)
        );
        let summary = run.join(SUMMARY_FILE);
        let text = fs::read_to_string(&summary).unwrap();
        fs::write(&summary, &text[..text.len() / 2]).unwrap();
        let runs = try_list_runs(dir.path()).unwrap();
        assert_eq!(runs[0].status(), RunState::Corrupt);
        let e = read_summary_if_present(&run).unwrap_err().to_string();
        assert!(
            e.contains(&summary.display().to_string()) && e.contains("corrupt"),
            "{e}"
        );
        assert!(runs[0]
            .summary_error
            .as_deref()
            .unwrap()
            .contains("corrupt"));
        fs::remove_file(&summary).unwrap();
        assert!(read_summary_if_present(&run).unwrap().is_none());
        assert!(read_summary(&run)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
    }

    #[test]
    fn a_runs_directory_that_is_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runs");
        fs::write(&file, "x").unwrap();
        let e = try_list_runs(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(list_runs(&file).is_empty());
        assert!(try_list_runs(&dir.path().join("none")).unwrap().is_empty());
        let e = RunStore::create(&file, &quickstart(dir.path()))
            .err()
            .unwrap();
        let e = format!("{e:#}");
        assert!(
            e.contains(&format!("{} is not a directory", file.display())),
            "{e}"
        );
        let under = file.join("deeper");
        let e = RunStore::create(&under, &quickstart(dir.path()))
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("is not a directory (it is a file)"),
            "{e:#}"
        );
    }

    #[test]
    fn a_pid_reused_by_another_process_does_not_make_a_run_live() {
        let dir = tempfile::tempdir().unwrap();
        let s = RunStore::create(dir.path(), &quickstart(dir.path())).unwrap();
        let run = s.dir().to_path_buf();
        assert_eq!(run_process(&run), RunProcess::Live(std::process::id()));
        let me = ProcessId::current();
        // The marker of a process that died, whose pid the kernel then gave to this process.
        let stale = serde_json::json!({
            "pid": me.pid,
            "start_time": me.start_time.unwrap() + 1,
            "boot_id": me.boot_id,
        });
        fs::write(run.join(PROCESS_FILE), stale.to_string()).unwrap();
        assert_eq!(run_process(&run), RunProcess::None);
        assert_eq!(live_pid(&run), None);
        assert_eq!(list_runs(dir.path())[0].status(), RunState::Incomplete);
        // An old marker (pid only) whose pid runs: cannot tell.
        fs::write(run.join(PROCESS_FILE), format!("{{\"pid\": {}}}", me.pid)).unwrap();
        assert_eq!(run_process(&run), RunProcess::Unsure(me.pid));
    }

    #[test]
    fn reopen_removes_temporary_files_of_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = RunStore::create(dir.path(), &quickstart(dir.path())).unwrap();
        let run = s.dir().to_path_buf();
        drop(s);
        let dead = format!("{}{}-7-0-last.pt", files::TEMP_PREFIX, u32::MAX);
        fs::write(run.join(CHECKPOINT_DIR).join(&dead), b"half").unwrap();
        fs::write(run.join(&dead), b"half").unwrap();
        drop(RunStore::reopen(&run, 0).unwrap());
        assert!(!run.join(CHECKPOINT_DIR).join(&dead).exists());
        assert!(!run.join(&dead).exists());
    }

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
        assert_eq!(list_runs(dir.path())[0].status(), RunState::Live);
        // … and once its process is gone (a pid that cannot exist), as interrupted.
        write_atomic(&run.join(PROCESS_FILE), br#"{"pid": 4294967295}"#).unwrap();
        assert_eq!(list_runs(dir.path())[0].status(), RunState::Incomplete);
    }

    /// `runs list` shows (and `runs list --json` writes) the names it always has.
    #[test]
    fn run_states_show_their_old_names() {
        let shown = |r: RunState| {
            (
                r.to_string(),
                serde_json::to_value(r).unwrap(),
                format!("{r:<10}|"),
            )
        };
        for (state, name) in [
            (RunState::Ended(RunStatus::Finished), "finished"),
            (RunState::Ended(RunStatus::Stopped), "stopped"),
            (RunState::Ended(RunStatus::Diverged), "diverged"),
            (RunState::Ended(RunStatus::Failed), "failed"),
            (RunState::Corrupt, "corrupt"),
            (RunState::Live, "live"),
            (RunState::Incomplete, "incomplete"),
        ] {
            let (text, json, padded) = shown(state);
            assert_eq!(text, name);
            assert_eq!(json, name);
            assert_eq!(padded, format!("{name:<10}|"), "column widths still apply");
        }
    }

    #[test]
    fn read_config_reads_what_create_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let config = quickstart(dir.path());
        let s = RunStore::create(dir.path(), &config).unwrap();
        let run = s.dir().to_path_buf();
        drop(s);
        assert_eq!(read_config_text(&run).unwrap(), config.to_toml());
        assert_eq!(read_config(&run).unwrap().to_toml(), config.to_toml());
        let missing = dir.path().join("nope");
        let e = format!("{:#}", read_config_text(&missing).unwrap_err());
        assert!(
            e.contains(&missing.join(CONFIG_FILE).display().to_string()),
            "{e}"
        );
        assert!(read_config(&missing).is_err());
    }

    /// Every field a step or eval event serializes is a column of its CSV, and every column a
    /// field: a field added to the event without its column fails here.
    #[test]
    fn csv_columns_are_every_field_of_the_events() {
        use crate::telemetry::event::{EvalEvent, StepEvent};
        let step = StepEvent {
            step: 20,
            epoch: 1,
            loss: 2.5,
            lr: 1e-5,
            images_per_sec: 100.0,
            grad_norm: Some(0.5),
            t_data: 0.001,
            t_fwd: 0.002,
            t_bwd: 0.003,
            t_comm: 0.0,
            t_opt: 0.004,
            q_fwd: Some(4),
            q_bwd: Some(8),
            gbitops: Some(1.5),
            loss_scale: Some(32768.0),
            skipped: Some(true),
            steps: Some(10),
            skipped_steps: Some(3),
            peak_memory_bytes: Some(1 << 20),
            peak_memory_kind: Some(crate::telemetry::event::MemoryKind::Rss),
        };
        let fields: Vec<String> = serde_json::to_value(&step)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut cols: Vec<String> = STEP_COLUMNS.iter().map(|c| c.to_string()).collect();
        let mut sorted = fields.clone();
        sorted.sort();
        cols.sort();
        assert_eq!(sorted, cols, "STEP_COLUMNS and StepEvent's fields differ");
        let csv = steps_csv(&[Event::Step(step.clone())]);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(STEP_COLUMNS.join(",").as_str()));
        assert_eq!(
            lines.next(),
            Some("20,1,2.5,0.00001,100,0.5,0.001,0.002,0.003,0,0.004,4,8,1.5,32768,true,10,3,1048576,rss")
        );
        // Fields an event leaves out are empty cells; the earlier columns keep their place.
        let bare = StepEvent {
            grad_norm: None,
            q_fwd: None,
            q_bwd: None,
            gbitops: None,
            loss_scale: None,
            skipped: None,
            steps: None,
            skipped_steps: None,
            peak_memory_bytes: None,
            peak_memory_kind: None,
            ..step
        };
        let csv = steps_csv(&[Event::Step(bare)]);
        assert_eq!(
            csv.lines().nth(1),
            Some("20,1,2.5,0.00001,100,,0.001,0.002,0.003,0,0.004,,,,,,,,,")
        );
        assert!(csv.starts_with("step,epoch,loss,lr,images_per_sec,grad_norm,t_data"));

        let eval = EvalEvent {
            epoch: 1,
            step: 20,
            test_loss: 1.0,
            test_acc: 0.5,
            train_loss: 1.2,
            epoch_seconds: 3.0,
        };
        let v = serde_json::to_value(&eval).unwrap();
        let mut fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        fields.sort();
        let mut cols: Vec<&str> = EVAL_COLUMNS.to_vec();
        cols.sort();
        assert_eq!(fields, cols, "EVAL_COLUMNS and EvalEvent's fields differ");
        assert_eq!(
            evals_csv(&[Event::Eval(eval)]).lines().nth(1),
            Some("1,20,1.2,1,0.5,3")
        );
    }
}
