//! What a sweep directory records besides its points' runs: `plan.toml` (the expanded points)
//! and `sweep.jsonl` (one [`Progress`] line per point started or ended). `cli::sweep` writes
//! both through these types and the workbench's Sweeps view reads them back through
//! [`overview`]; a torn last line (the sweep killed mid-write) is skipped.
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Plan, PLAN_FILE, PROGRESS_FILE};
use crate::files::process::ProcessId;
use crate::files::{self, FileError};
use crate::telemetry::store::{self, CONFIG_FILE};
use crate::telemetry::RunStatus;

/// One line of `sweep.jsonl` (and, with `--json`, of the sweep's stdout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A `cptlab sweep` process began (or resumed) the sweep. Absent in sweeps recorded by
    /// older builds.
    SweepStarted {
        points: usize,
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_time: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parallel: Option<usize>,
    },
    PointStarted {
        point: usize,
        label: String,
    },
    /// An interrupted point taken up again from its run directory.
    PointResumed {
        point: usize,
        label: String,
        run_dir: PathBuf,
    },
    /// A point a rerun found already ended (not trained again).
    PointSkipped {
        point: usize,
        label: String,
        status: RunStatus,
        run_dir: PathBuf,
    },
    /// A point that could not start (its error).
    PointFailed {
        point: usize,
        label: String,
        error: String,
    },
    PointEnded {
        point: usize,
        label: String,
        status: RunStatus,
        final_test_acc: Option<f64>,
        /// The run's directory (absent when a `--parallel` child died without a summary).
        #[serde(default)]
        run_dir: Option<PathBuf>,
        /// `--parallel`: the child's exit code (None: killed by a signal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    SweepEnded {
        trained: usize,
        skipped: usize,
        failed: usize,
        points: usize,
        dir: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parallel: Option<usize>,
    },
    /// A line of a kind this build does not know (a newer build's): read past.
    #[serde(other)]
    Other,
}

impl Progress {
    /// The `sweep_started` line of this process.
    pub fn started_here(points: usize, parallel: Option<usize>) -> Progress {
        let me = ProcessId::current();
        Progress::SweepStarted {
            points,
            pid: me.pid,
            start_time: me.start_time,
            boot_id: me.boot_id,
            parallel,
        }
    }

    /// The line as written (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("progress lines serialize to JSON")
    }
}

/// Why a sweep directory cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum SweepReadError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}:{line}: not a sweep progress line: {why}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{}: not a sweep plan: {why}", path.display())]
    BadPlan { path: PathBuf, why: String },
}

/// Reads `sweep.jsonl` at `path`. A last line that does not parse (torn by a kill mid-write) is
/// skipped; any other bad line is an error naming its number.
pub fn read_progress(path: &Path) -> Result<Vec<Progress>, SweepReadError> {
    let (f, _) = files::open_regular(path)?;
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<io::Result<_>>()
        .map_err(|e| FileError::new("read", path, e))?;
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(p) => out.push(p),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(SweepReadError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    why: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// One point as `plan.toml` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub index: usize,
    /// The point's run name (`<sweep>-pNNN`).
    pub name: String,
    /// `key=value` of each axis, `seed=N` last.
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PlanRecord {
    #[serde(default)]
    point: Vec<PlanEntry>,
}

/// `plan.toml`'s text for `plan`.
pub fn plan_toml(plan: &Plan) -> String {
    let rec = PlanRecord {
        point: plan
            .points
            .iter()
            .map(|p| PlanEntry {
                index: p.index,
                name: p.config.name.clone(),
                label: p.label.clone(),
            })
            .collect(),
    };
    toml::to_string(&rec).expect("a plan serializes to TOML")
}

/// The points `dir/plan.toml` records.
pub fn read_plan(dir: &Path) -> Result<Vec<PlanEntry>, SweepReadError> {
    let path = dir.join(PLAN_FILE);
    let bytes = files::read_regular(&path)?;
    let text = String::from_utf8(bytes).map_err(|_| SweepReadError::BadPlan {
        path: path.clone(),
        why: "not UTF-8 text".into(),
    })?;
    let rec: PlanRecord = toml::from_str(&text).map_err(|e| SweepReadError::BadPlan {
        path: path.clone(),
        why: e.message().to_string(),
    })?;
    Ok(rec.point)
}

/// Where a point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointStatus {
    /// Not started yet.
    Pending,
    /// Started by a sweep process that still runs.
    Running,
    /// Ended finished in this sweep's runs.
    Done,
    /// A rerun found it already ended and left it (`point_skipped`).
    Skipped(RunStatus),
    /// Ended failed or diverged, or could not start.
    Failed,
    /// Started, and its sweep is gone (or the point was stopped): a rerun resumes it.
    Interrupted,
}

impl PointStatus {
    /// True if the point has a finished run to show.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            PointStatus::Done | PointStatus::Skipped(RunStatus::Finished)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PointStatus::Pending => "pending",
            PointStatus::Running => "running",
            PointStatus::Done => "done",
            PointStatus::Skipped(RunStatus::Finished) => "skipped",
            PointStatus::Skipped(_) => "skipped (failed)",
            PointStatus::Failed => "failed",
            PointStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for PointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a sweep stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepStatus {
    /// Its `cptlab sweep` process runs (or, for an older sweep, one of its points trains).
    Running,
    /// Its last session ended with no point failed.
    Finished,
    /// Its last session ended with failed points.
    Failed,
    /// Its last session did not end (killed, stopped): a rerun takes it up again.
    Interrupted,
}

impl SweepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepStatus::Running => "running",
            SweepStatus::Finished => "finished",
            SweepStatus::Failed => "failed",
            SweepStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for SweepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One point of a sweep's overview.
#[derive(Debug, Clone, PartialEq)]
pub struct PointProgress {
    pub index: usize,
    pub name: String,
    pub label: String,
    pub status: PointStatus,
    /// Its run directory, once it has one.
    pub run_dir: Option<PathBuf>,
    /// Why it could not start (`point_failed`).
    pub error: Option<String>,
}

/// A sweep directory read back: its points and where each stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub status: SweepStatus,
    pub points: Vec<PointProgress>,
}

impl Overview {
    pub fn done(&self) -> usize {
        self.points.iter().filter(|p| p.status.is_done()).count()
    }
}

/// The points of `plan` as `events` leave them; `alive` says whether the sweep's process still
/// runs (points started and not ended are running then, else interrupted).
pub fn fold(plan: &[PlanEntry], events: &[Progress], alive: bool) -> Overview {
    let mut points: Vec<PointProgress> = plan
        .iter()
        .map(|e| PointProgress {
            index: e.index,
            name: e.name.clone(),
            label: e.label.clone(),
            status: PointStatus::Pending,
            run_dir: None,
            error: None,
        })
        .collect();
    // The last session's ending, if it has one.
    let mut ended: Option<usize> = None;
    for ev in events {
        let mut set = |i: &usize, status: PointStatus, dir: Option<&PathBuf>| {
            if let Some(p) = points.iter_mut().find(|p| p.index == *i) {
                p.status = status;
                if let Some(d) = dir {
                    p.run_dir = Some(d.clone());
                }
            }
        };
        match ev {
            Progress::SweepStarted { .. } => {
                ended = None;
                // Points the previous session left running were cut off with it.
                for p in &mut points {
                    if p.status == PointStatus::Running {
                        p.status = PointStatus::Interrupted;
                    }
                }
            }
            Progress::PointStarted { point, .. } => set(point, PointStatus::Running, None),
            Progress::PointResumed { point, run_dir, .. } => {
                set(point, PointStatus::Running, Some(run_dir))
            }
            Progress::PointSkipped {
                point,
                status,
                run_dir,
                ..
            } => set(point, PointStatus::Skipped(*status), Some(run_dir)),
            Progress::PointFailed { point, error, .. } => {
                set(point, PointStatus::Failed, None);
                if let Some(p) = points.iter_mut().find(|p| p.index == *point) {
                    p.error = Some(error.clone());
                }
            }
            Progress::PointEnded {
                point,
                status,
                run_dir,
                ..
            } => {
                let s = match status {
                    RunStatus::Finished => PointStatus::Done,
                    RunStatus::Stopped => PointStatus::Interrupted,
                    RunStatus::Failed | RunStatus::Diverged => PointStatus::Failed,
                };
                set(point, s, run_dir.as_ref());
            }
            Progress::SweepEnded { failed, .. } => {
                ended = Some(*failed);
                // A point that never ended in a session that did (fail-fast) is not running.
                for p in &mut points {
                    if p.status == PointStatus::Running {
                        p.status = PointStatus::Interrupted;
                    }
                }
            }
            Progress::Other => {}
        }
    }
    if !alive {
        for p in &mut points {
            if p.status == PointStatus::Running {
                p.status = PointStatus::Interrupted;
            }
        }
    }
    let status = match (alive, ended) {
        (true, _) => SweepStatus::Running,
        (false, Some(0)) => SweepStatus::Finished,
        (false, Some(_)) => SweepStatus::Failed,
        (false, None) => SweepStatus::Interrupted,
    };
    Overview { status, points }
}

/// The process of the sweep's last session, if the progress names one.
pub fn last_process(events: &[Progress]) -> Option<ProcessId> {
    events.iter().rev().find_map(|e| match e {
        Progress::SweepStarted {
            pid,
            start_time,
            boot_id,
            ..
        } => Some(ProcessId {
            pid: *pid,
            start_time: *start_time,
            boot_id: boot_id.clone(),
        }),
        _ => None,
    })
}

/// Whether the sweep whose progress is `events` still runs: its last session's process is
/// alive, or (a sweep of an older build, which names no process) one of its points' runs
/// (`runs`) trains.
pub fn sweep_alive(events: &[Progress], runs: &BTreeMap<String, PathBuf>) -> bool {
    match last_process(events) {
        Some(id) => !matches!(events.last(), Some(Progress::SweepEnded { .. })) && id.is_alive(),
        None => runs.values().any(|d| store::live_pid(d).is_some()),
    }
}

/// The run directories in a sweep directory by their run's name (the newest attempt of a
/// name counts, as `point_state` finds it), read loosely from each `config.toml`.
pub fn run_dirs(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let text = std::fs::read_to_string(p.join(CONFIG_FILE)).ok()?;
            let t: toml::Table = text.parse().ok()?;
            let name = t.get("name")?.as_str()?.to_string();
            Some((name, p))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.into_iter().collect()
}

/// What a sweep directory's files say: `plan.toml`, `sweep.jsonl` (a missing one: nothing
/// started yet) and its run directories by name. Read again only when the files change; where
/// the sweep stands right now is [`SweepRecord::overview`].
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRecord {
    pub plan: Vec<PlanEntry>,
    pub events: Vec<Progress>,
    pub runs: BTreeMap<String, PathBuf>,
}

pub fn read_record(dir: &Path) -> Result<SweepRecord, SweepReadError> {
    let plan = read_plan(dir)?;
    let events = match read_progress(&dir.join(PROGRESS_FILE)) {
        Ok(e) => e,
        Err(SweepReadError::File(e)) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(SweepRecord {
        plan,
        events,
        runs: run_dirs(dir),
    })
}

impl SweepRecord {
    /// The points and the sweep as they stand now (whether its process runs is looked up
    /// afresh); a point's run directory comes from the progress, else by the point's name.
    pub fn overview(&self) -> Overview {
        let alive = sweep_alive(&self.events, &self.runs);
        let mut o = fold(&self.plan, &self.events, alive);
        for p in &mut o.points {
            if p.run_dir.is_none() && p.status != PointStatus::Pending {
                p.run_dir = self.runs.get(&p.name).cloned();
            }
        }
        o
    }
}

/// A sweep directory read back ([`read_record`], then [`SweepRecord::overview`]).
pub fn overview(dir: &Path) -> Result<Overview, SweepReadError> {
    Ok(read_record(dir)?.overview())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> Vec<PlanEntry> {
        (0..n)
            .map(|i| PlanEntry {
                index: i,
                name: format!("s-p{i:03}"),
                label: format!("optimizer.lr=0.1, seed={i}"),
            })
            .collect()
    }

    #[test]
    fn progress_lines_round_trip_and_a_torn_last_line_is_skipped() {
        let events = vec![
            Progress::SweepStarted {
                points: 3,
                pid: 7,
                start_time: Some(11),
                boot_id: Some("b".into()),
                parallel: None,
            },
            Progress::PointStarted {
                point: 0,
                label: "a, seed=0".into(),
            },
            Progress::PointEnded {
                point: 0,
                label: "a, seed=0".into(),
                status: RunStatus::Finished,
                final_test_acc: Some(0.5),
                run_dir: Some("/r/0".into()),
                exit_code: None,
            },
            Progress::PointSkipped {
                point: 1,
                label: "a, seed=1".into(),
                status: RunStatus::Diverged,
                run_dir: "/r/1".into(),
            },
            Progress::PointResumed {
                point: 2,
                label: "a, seed=2".into(),
                run_dir: "/r/2".into(),
            },
            Progress::PointFailed {
                point: 2,
                label: "a, seed=2".into(),
                error: "no".into(),
            },
            Progress::SweepEnded {
                trained: 1,
                skipped: 1,
                failed: 2,
                points: 3,
                dir: "/r".into(),
                parallel: Some(2),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        let mut text: String = events.iter().map(|e| e.to_line() + "\n").collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_progress(&path).unwrap(), events);
        // The names older builds wrote, and a kind this build does not know.
        let first = events[1].to_line();
        assert!(
            first.starts_with(r#"{"event":"point_started","point":0"#),
            "{first}"
        );
        text.push_str("{\"event\":\"from_the_future\",\"x\":1}\n");
        // Killed mid-write: a torn last line.
        text.push_str("{\"event\":\"point_sta");
        std::fs::write(&path, &text).unwrap();
        let back = read_progress(&path).unwrap();
        assert_eq!(back.len(), events.len() + 1);
        assert_eq!(back.last(), Some(&Progress::Other));
        // A bad line before the last one is an error naming the line.
        std::fs::write(
            &path,
            "{\"event\":\n{\"event\":\"point_started\",\"point\":0,\"label\":\"x\"}\n",
        )
        .unwrap();
        let e = read_progress(&path).unwrap_err().to_string();
        assert!(e.contains(":1: not a sweep progress line"), "{e}");
    }

    #[test]
    fn older_builds_lines_read() {
        // As the ad-hoc JSON of earlier builds wrote them (keys sorted, nulls included).
        let old = r#"{"event":"point_ended","exit_code":null,"final_test_acc":null,"label":"x","point":1,"run_dir":null,"status":"failed"}"#;
        let p: Progress = serde_json::from_str(old).unwrap();
        assert!(matches!(
            p,
            Progress::PointEnded {
                status: RunStatus::Failed,
                run_dir: None,
                ..
            }
        ));
    }

    #[test]
    fn fold_gives_each_point_and_the_sweep_a_status() {
        let plan = plan(4);
        let started = |i| Progress::PointStarted {
            point: i,
            label: String::new(),
        };
        let ended = |i, status| Progress::PointEnded {
            point: i,
            label: String::new(),
            status,
            final_test_acc: None,
            run_dir: Some(format!("/r/{i}").into()),
            exit_code: None,
        };
        let ev = vec![
            started(0),
            ended(0, RunStatus::Finished),
            started(1),
            ended(1, RunStatus::Diverged),
            started(2),
        ];
        let o = fold(&plan, &ev, true);
        let st: Vec<PointStatus> = o.points.iter().map(|p| p.status).collect();
        use PointStatus as P;
        assert_eq!(st, [P::Done, P::Failed, P::Running, P::Pending]);
        assert_eq!(o.status, SweepStatus::Running);
        assert_eq!(o.done(), 1);
        assert_eq!(o.points[0].run_dir.as_deref(), Some(Path::new("/r/0")));
        let o = fold(&plan, &ev, false);
        assert_eq!(o.points[2].status, P::Interrupted);
        assert_eq!(o.status, SweepStatus::Interrupted);
        let mut ev = ev;
        ev.push(ended(2, RunStatus::Finished));
        ev.push(started(3));
        ev.push(ended(3, RunStatus::Finished));
        ev.push(Progress::SweepEnded {
            trained: 3,
            skipped: 0,
            failed: 1,
            points: 4,
            dir: "/r".into(),
            parallel: None,
        });
        let o = fold(&plan, &ev, false);
        assert_eq!(o.status, SweepStatus::Failed);
        assert_eq!(o.done(), 3);
        // A point the previous session was training when it died is not running in the next
        // session until that session takes it up again.
        let again = |mut ev: Vec<Progress>| {
            ev.push(Progress::SweepStarted {
                points: 4,
                pid: 1,
                start_time: None,
                boot_id: None,
                parallel: None,
            });
            ev
        };
        let ev = again(vec![started(0)]);
        assert_eq!(fold(&plan, &ev, true).points[0].status, P::Interrupted);
        let mut ev = ev;
        ev.push(Progress::PointResumed {
            point: 0,
            label: String::new(),
            run_dir: "/r/0".into(),
        });
        assert_eq!(fold(&plan, &ev, true).points[0].status, P::Running);
    }
}
