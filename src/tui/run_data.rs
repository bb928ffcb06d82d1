//! One run as the workbench sees it: everything folded out of its event stream (the child's
//! stdout or the run directory's `metrics.jsonl`). No tensors, no I/O except reading the run's
//! recorded config for the planned precision curve.
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::schedule::PrecisionSchedule;
use crate::telemetry::event::{
    ClassAccuracy, EpochNumbering, EvalEvent, Event, LogLevel, StartedEvent,
};
use crate::telemetry::Summary;

/// One event line with its raw JSON, so fields newer than `Event` (q_fwd, loss_scale, gbitops, …)
/// are still readable.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event: Event,
    pub raw: Value,
}

/// Parses one JSON line; None for blank, torn or unknown lines (a newer engine may emit event
/// kinds this build does not know).
pub fn parse_line(line: &str) -> Option<Incoming> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let raw: Value = serde_json::from_str(line).ok()?;
    let event = Event::deserialize(&raw).ok()?;
    Some(Incoming { event, raw })
}

impl From<Event> for Incoming {
    fn from(event: Event) -> Incoming {
        let raw = serde_json::to_value(&event).unwrap_or(Value::Null);
        Incoming { event, raw }
    }
}

/// A chart series with bounded memory: points are averaged into buckets whose width doubles
/// whenever `CAP` buckets are full, so a 100k-step run costs the same to draw as a 1k-step one.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pts: Vec<(f64, f64)>,
    per: usize,
    acc: (f64, f64, usize),
}

const CAP: usize = 1024;

impl Series {
    pub fn push(&mut self, x: f64, y: f64) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let per = self.per.max(1);
        self.acc = (self.acc.0 + x, self.acc.1 + y, self.acc.2 + 1);
        if self.acc.2 >= per {
            let n = self.acc.2 as f64;
            self.pts.push((self.acc.0 / n, self.acc.1 / n));
            self.acc = (0.0, 0.0, 0);
            if self.pts.len() >= CAP {
                self.pts = self
                    .pts
                    .chunks(2)
                    .map(|c| {
                        let n = c.len() as f64;
                        (
                            c.iter().map(|p| p.0).sum::<f64>() / n,
                            c.iter().map(|p| p.1).sum::<f64>() / n,
                        )
                    })
                    .collect();
                self.per = per * 2;
            }
        }
    }

    /// Points to draw, the bucket in progress included.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let mut v = self.pts.clone();
        if self.acc.2 > 0 {
            let n = self.acc.2 as f64;
            v.push((self.acc.0 / n, self.acc.1 / n));
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.pts.is_empty() && self.acc.2 == 0
    }

    /// (min, max) of y.
    pub fn y_range(&self) -> Option<(f64, f64)> {
        let pts = self.points();
        let mut it = pts.iter().map(|p| p.1);
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), y| (lo.min(y), hi.max(y))))
    }
}

/// A run's figures as they stood after one step event: what Compare reads a run at when
/// another run's progress sets the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtStep {
    pub step: u64,
    pub loss: f64,
    /// GBitOps so far.
    pub gbitops: f64,
    /// Steps skipped so far.
    pub skipped: u64,
}

/// `AtStep` for every step event, with bounded memory: when `CAP` are kept, every other one
/// goes and from then on only every other event is kept (and so on, doubling), so a long
/// run reads at a step at most that stride before the one asked for. The newest is always
/// kept exactly (`RunData::at_step` reads the run's last step from its totals).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pts: Vec<AtStep>,
    every: usize,
    seen: usize,
}

impl Timeline {
    pub fn push(&mut self, p: AtStep) {
        let every = self.every.max(1);
        self.seen += 1;
        if !self.seen.is_multiple_of(every) {
            return;
        }
        self.pts.push(p);
        if self.pts.len() >= CAP * 4 {
            // Every other one, the first kept (a run's early steps stay readable).
            let mut i = 0usize;
            self.pts.retain(|_| {
                i += 1;
                !i.is_multiple_of(2)
            });
            self.every = every * 2;
        }
    }

    /// The newest kept point at or before `step`.
    pub fn at(&self, step: u64) -> Option<AtStep> {
        let n = self.pts.partition_point(|p| p.step <= step);
        n.checked_sub(1).map(|i| self.pts[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Info,
    Warn,
    Error,
    /// Said by the workbench itself (paused, stop requested, …).
    Note,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub kind: LogKind,
    pub text: String,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Waiting for another run to finish (A/B one after the other).
    Queued,
    /// Process started, no `started` event yet (decoding data, building the model).
    Starting,
    Training,
    Paused,
    Stopping,
    /// finished, stopped or diverged (the summary's status).
    Ended(crate::telemetry::RunStatus),
    Failed(String),
    /// The process is gone and left no summary (resumable from its last checkpoint).
    Incomplete,
}

impl RunStatus {
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            RunStatus::Starting | RunStatus::Training | RunStatus::Paused | RunStatus::Stopping
        )
    }

    pub fn label(&self) -> String {
        match self {
            RunStatus::Queued => "queued".into(),
            RunStatus::Starting => "starting".into(),
            RunStatus::Training => "training".into(),
            RunStatus::Paused => "paused".into(),
            RunStatus::Stopping => "stopping".into(),
            RunStatus::Ended(s) => s.to_string(),
            RunStatus::Failed(_) => crate::telemetry::RunStatus::Failed.to_string(),
            RunStatus::Incomplete => "incomplete".into(),
        }
    }
}

/// The latest step, as shown in headers and progress lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastStep {
    pub step: u64,
    /// 1-based.
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub q_fwd: Option<f64>,
    pub q_bwd: Option<f64>,
    pub loss_scale: Option<f64>,
}

/// What the run's recorded config says about precision (read from `config.toml`, tolerant of
/// fields this build does not know).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrecisionPlan {
    pub mode: String,
    pub schedule: Option<PrecisionSchedule>,
}

impl PrecisionPlan {
    pub fn from_config_text(text: &str) -> PrecisionPlan {
        let Ok(v) = text.parse::<toml::Table>() else {
            return PrecisionPlan::default();
        };
        let precision = v.get("precision");
        let mode = precision
            .and_then(|p| p.get("mode"))
            .and_then(|m| m.as_str())
            .unwrap_or("fp32")
            .to_string();
        let schedule = precision
            .and_then(|p| p.get("schedule"))
            .and_then(|s| PrecisionSchedule::deserialize(s.clone()).ok());
        PrecisionPlan { mode, schedule }
    }

    /// "CR 3–8 bits", "static 8 bits", "fp32".
    pub fn describe(&self) -> String {
        match &self.schedule {
            Some(s) if s.kind == crate::schedule::PrecisionScheduleKind::Static => {
                format!("static {}b", s.q_max)
            }
            Some(s) => format!("{} {}–{}b", s.kind, s.q_min, s.q_max),
            None if self.mode.is_empty() => "precision".into(),
            None => self.mode.clone(),
        }
    }

    /// Bits a run without a schedule computes at.
    pub fn static_bits(&self) -> u32 {
        match self.mode.as_str() {
            "fp16" | "bf16" => 16,
            _ => 32,
        }
    }
}

const LOG_CAP: usize = 500;
/// Skipped steps and loss-scale changes kept for the charts (a long fp16 run grows its scale
/// every window: a few thousand marks is more than a chart's columns).
pub const MARK_CAP: usize = 4096;

fn push_capped<T>(q: &mut VecDeque<T>, x: T) {
    if q.len() >= MARK_CAP {
        q.pop_front();
    }
    q.push_back(x);
}
const RATE_CAP: usize = 240;

#[derive(Debug, Clone)]
pub struct RunData {
    /// A short label: the run's name until the `started` event names its directory.
    pub label: String,
    pub dir: Option<PathBuf>,
    pub started: Option<StartedEvent>,
    pub plan: PrecisionPlan,
    pub status: RunStatus,
    pub loss: Series,
    pub lr: Series,
    pub q_fwd: Series,
    pub q_bwd: Series,
    pub loss_scale: Series,
    /// Loss and running totals by step (Compare reads live runs at one step).
    pub timeline: Timeline,
    /// Images per second, one sample per step (most recent `RATE_CAP`).
    pub rate: VecDeque<f64>,
    pub rate_ema: Option<f64>,
    /// Exponential moving averages of t_data, t_fwd, t_bwd, t_comm, t_opt.
    pub breakdown: [f64; 5],
    pub step_time: Option<f64>,
    pub last: Option<LastStep>,
    /// Evaluations, epochs 1-based (older builds' recordings are brought to it).
    pub evals: Vec<EvalEvent>,
    pub logs: VecDeque<LogLine>,
    /// The recorded `config.toml` flattened to dotted keys (Compare's config diff).
    pub config: BTreeMap<String, String>,
    pub skipped: u64,
    /// Where steps were skipped (fp16 overflows, bf16 non-finite steps): `(step, how many of
    /// the event's steps)`, the most recent `MARK_CAP`, for the loss chart's marks.
    pub skip_marks: VecDeque<(u64, u64)>,
    /// Where the loss scale changed: `(step, from, to)`, the most recent `MARK_CAP`.
    pub scale_changes: VecDeque<(u64, f64, f64)>,
    /// The skipped steps in a row, while the newest log line tells of them (one line for a run
    /// of overflows): first step, last step, the loss scale at the first and at the last.
    skip_run: Option<SkipRun>,
    pub gbitops: f64,
    pub has_gbitops: bool,
    pub summary: Option<Summary>,
    /// The summary as JSON, for fields newer than `Summary` (gbitops, optimizer bytes, …).
    pub summary_raw: Option<Value>,
    /// The newest step event's measured peak memory (bytes, and what it counts).
    pub peak_memory: Option<(u64, crate::telemetry::event::MemoryKind)>,
    /// Reads older builds' 0-based epochs as 1-based.
    numbering: EpochNumbering,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct SkipRun {
    first: u64,
    last: u64,
    /// Steps skipped in `first..=last` (all of them, unless an event covering several steps
    /// skipped only some).
    count: u64,
    scale_from: Option<f64>,
    scale_to: Option<f64>,
}

impl SkipRun {
    fn text(&self) -> String {
        let scale = |x: f64| format!("{x}");
        let all = self.count >= self.last + 1 - self.first;
        let steps = match (self.first == self.last, all) {
            (true, _) => format!("step {} skipped", self.first),
            (false, true) => format!("steps {}–{} skipped", self.first, self.last),
            (false, false) => format!(
                "{} of steps {}–{} skipped",
                self.count, self.first, self.last
            ),
        };
        match (self.scale_from, self.scale_to) {
            (Some(a), Some(b)) if a != b => {
                format!("{steps}: loss scale {} → {}", scale(a), scale(b))
            }
            (Some(a), _) => format!("{steps}: loss scale {}", scale(a)),
            _ => steps,
        }
    }
}

impl RunData {
    pub fn new(label: impl Into<String>) -> RunData {
        RunData {
            label: label.into(),
            dir: None,
            started: None,
            plan: PrecisionPlan::default(),
            status: RunStatus::Starting,
            loss: Series::default(),
            lr: Series::default(),
            q_fwd: Series::default(),
            q_bwd: Series::default(),
            loss_scale: Series::default(),
            timeline: Timeline::default(),
            rate: VecDeque::new(),
            rate_ema: None,
            breakdown: [0.0; 5],
            step_time: None,
            last: None,
            evals: Vec::new(),
            logs: VecDeque::new(),
            config: BTreeMap::new(),
            skipped: 0,
            skip_marks: VecDeque::new(),
            scale_changes: VecDeque::new(),
            skip_run: None,
            gbitops: 0.0,
            has_gbitops: false,
            summary: None,
            summary_raw: None,
            peak_memory: None,
            numbering: EpochNumbering::default(),
        }
    }

    /// A run directory opened for replay or attach: label and plan from what is on disk.
    pub fn for_dir(dir: &Path) -> RunData {
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut d = RunData::new(label);
        d.set_dir(dir);
        d
    }

    pub fn set_dir(&mut self, dir: &Path) {
        if self.dir.as_deref() == Some(dir) {
            return;
        }
        self.dir = Some(dir.to_path_buf());
        if let Ok(text) = std::fs::read_to_string(dir.join(crate::telemetry::store::CONFIG_FILE)) {
            self.plan = PrecisionPlan::from_config_text(&text);
            if let Ok(t) = text.parse::<toml::Table>() {
                self.config = crate::config::diff::flatten_toml(&t);
            }
        }
    }

    pub fn note(&mut self, kind: LogKind, text: impl Into<String>) {
        // Any other line ends a run of skipped steps' line.
        self.skip_run = None;
        if self.logs.len() >= LOG_CAP {
            self.logs.pop_front();
        }
        self.logs.push_back(LogLine {
            kind,
            text: text.into(),
        });
    }

    pub fn total_steps(&self) -> Option<u64> {
        self.started.as_ref().map(|s| s.total_steps)
    }

    /// Folds one event into the run.
    pub fn apply(&mut self, inc: &Incoming) {
        let mut event = inc.event.clone();
        self.numbering.apply(&mut event);
        match &event {
            Event::Started(s) => {
                self.label = Path::new(&s.run_dir)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| s.name.clone());
                self.set_dir(Path::new(&s.run_dir));
                if let Some(e) = s.resumed_after_epoch {
                    self.note(LogKind::Info, format!("resumed after epoch {e}"));
                }
                self.started = Some(s.clone());
                if matches!(self.status, RunStatus::Starting | RunStatus::Queued) {
                    self.status = RunStatus::Training;
                }
            }
            Event::Step(s) => {
                let raw = &inc.raw;
                let num = |k: &str| raw.get(k).and_then(Value::as_f64);
                let skipped = raw.get("skipped").and_then(Value::as_bool).unwrap_or(false);
                // An event may stand for several steps (`log_every`), some of them skipped.
                let span = raw.get("steps").and_then(Value::as_u64).unwrap_or(1).max(1);
                let n_skipped = raw
                    .get("skipped_steps")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::from(skipped));
                if let (Some(b), Some(k)) = (s.peak_memory_bytes, s.peak_memory_kind) {
                    self.peak_memory = Some((b, k));
                }
                let x = s.step as f64;
                self.loss.push(x, s.loss);
                self.lr.push(x, s.lr);
                let q_fwd = num("q_fwd");
                let q_bwd = num("q_bwd");
                let loss_scale = num("loss_scale");
                if let Some(q) = q_fwd {
                    self.q_fwd.push(x, q);
                }
                if let Some(q) = q_bwd {
                    self.q_bwd.push(x, q);
                }
                if let Some(ls) = loss_scale {
                    let prev = self.last.as_ref().and_then(|l| l.loss_scale);
                    if let Some(p) = prev.filter(|p| *p != ls) {
                        push_capped(&mut self.scale_changes, (s.step, p, ls));
                    }
                    self.loss_scale.push(x, ls);
                }
                if let Some(g) = num("gbitops") {
                    self.gbitops += g;
                    self.has_gbitops = true;
                }
                if n_skipped > 0 {
                    self.skipped += n_skipped;
                    push_capped(&mut self.skip_marks, (s.step, n_skipped));
                    // Skipped steps in a row are one line, rewritten as the run grows.
                    match self.skip_run {
                        Some(mut r) => {
                            r.last = s.step;
                            r.count += n_skipped;
                            r.scale_to = loss_scale.or(r.scale_to);
                            if let Some(l) = self.logs.back_mut() {
                                l.text = r.text();
                            }
                            self.skip_run = Some(r);
                        }
                        None => {
                            let r = SkipRun {
                                first: (s.step + 1).saturating_sub(span),
                                last: s.step,
                                count: n_skipped,
                                scale_from: loss_scale,
                                scale_to: loss_scale,
                            };
                            self.note(LogKind::Warn, r.text());
                            self.skip_run = Some(r);
                        }
                    }
                    // Some steps of this event were not skipped: the run ends here.
                    if n_skipped < span {
                        self.skip_run = None;
                    }
                } else {
                    self.skip_run = None;
                }
                self.timeline.push(AtStep {
                    step: s.step,
                    loss: s.loss,
                    gbitops: self.gbitops,
                    skipped: self.skipped,
                });
                if self.rate.len() >= RATE_CAP {
                    self.rate.pop_front();
                }
                self.rate.push_back(s.images_per_sec);
                self.rate_ema = Some(ema(self.rate_ema, s.images_per_sec));
                let parts = [s.t_data, s.t_fwd, s.t_bwd, s.t_comm, s.t_opt];
                let first = self.step_time.is_none();
                for (b, p) in self.breakdown.iter_mut().zip(parts) {
                    *b = if first { p } else { ema(Some(*b), p) };
                }
                self.step_time = Some(ema(self.step_time, parts.iter().sum()));
                self.last = Some(LastStep {
                    step: s.step,
                    epoch: s.epoch,
                    loss: s.loss,
                    lr: s.lr,
                    q_fwd,
                    q_bwd,
                    loss_scale,
                });
                if matches!(self.status, RunStatus::Starting) {
                    self.status = RunStatus::Training;
                }
            }
            Event::Eval(e) => {
                self.note(
                    LogKind::Info,
                    format!(
                        "epoch {} done: test acc {:.2}%, test loss {:.4}, {:.1}s",
                        e.epoch,
                        e.test_acc * 100.0,
                        e.test_loss,
                        e.epoch_seconds
                    ),
                );
                self.evals.push(e.clone());
            }
            Event::Checkpoint { epoch, step, .. } => {
                let spe = self.started.as_ref().map_or(0, |s| s.steps_per_epoch);
                let at_end =
                    spe == 0 || step % spe == 0 || self.total_steps().is_some_and(|t| *step >= t);
                let text = if at_end {
                    format!("checkpoint after epoch {epoch} (step {step})")
                } else {
                    format!("checkpoint in epoch {epoch} (step {step})")
                };
                self.note(LogKind::Info, text);
            }
            Event::Log { level, message } => {
                let kind = match level {
                    LogLevel::Info => LogKind::Info,
                    LogLevel::Warn => LogKind::Warn,
                };
                self.note(kind, message.clone());
            }
            Event::Finished { summary } => {
                self.status = RunStatus::Ended(summary.status);
                self.note(
                    LogKind::Info,
                    format!(
                        "run {}: final test acc {}",
                        summary.status,
                        pct(summary.final_test_acc)
                    ),
                );
                // The summary counts every session's skipped steps (a replay may hold fewer).
                self.skipped = self.skipped.max(summary.skipped_steps);
                self.summary = Some(summary.clone());
                self.summary_raw = inc.raw.get("summary").cloned();
            }
            Event::Failed { error, .. } => {
                self.note(LogKind::Error, format!("failed: {error}"));
                self.status = RunStatus::Failed(error.clone());
            }
        }
    }

    /// Folds in the record of a run about to be resumed (`metrics.jsonl` as
    /// `store::read_metrics` returns it), so its Dashboard shows the whole run, not only the
    /// new session: the events before the last checkpoint. A resume cuts the record there
    /// (the checkpoint remembers the length before its own event) and the new session sends
    /// the later steps again, so nothing is shown twice. Returns the events taken.
    pub fn apply_resumed_record(&mut self, events: &[Event]) -> usize {
        let keep = events
            .iter()
            .rposition(|e| matches!(e, Event::Checkpoint { .. }))
            .unwrap_or(0);
        for e in &events[..keep] {
            self.apply(&Incoming::from(e.clone()));
        }
        // The old session's `started` made it training; the new one is not yet.
        self.status = RunStatus::Starting;
        keep
    }

    /// The run as it stood at `step`: its newest step event at or before it (its last step
    /// exactly; earlier ones from the timeline). None before its first step.
    pub fn at_step(&self, step: u64) -> Option<AtStep> {
        let last = self.last.as_ref()?;
        if step >= last.step {
            return Some(AtStep {
                step: last.step,
                loss: last.loss,
                gbitops: self.gbitops,
                skipped: self.skipped,
            });
        }
        self.timeline.at(step)
    }

    /// True while the run trains (or starts, pauses, stops): its figures still grow.
    pub fn is_live(&self) -> bool {
        self.status.is_active()
    }

    /// Steps left until the end, times the recent step time (evaluation not counted).
    pub fn eta_seconds(&self) -> Option<f64> {
        let total = self.total_steps()?;
        let done = self.last.as_ref().map_or(0, |l| l.step);
        Some(total.saturating_sub(done) as f64 * self.step_time?)
    }

    pub fn per_class(&self) -> &[ClassAccuracy] {
        self.summary
            .as_ref()
            .map(|s| s.per_class_acc.as_slice())
            .unwrap_or(&[])
    }

    pub fn best_acc(&self) -> Option<f64> {
        self.summary
            .as_ref()
            .and_then(|s| s.best_test_acc)
            .or_else(|| self.evals.iter().map(|e| e.test_acc).reduce(f64::max))
    }

    pub fn final_acc(&self) -> Option<f64> {
        self.summary
            .as_ref()
            .and_then(|s| s.final_test_acc)
            .or_else(|| self.evals.last().map(|e| e.test_acc))
    }

    /// Mean seconds per training epoch.
    pub fn seconds_per_epoch(&self) -> Option<f64> {
        let v: Vec<f64> = match &self.summary {
            Some(s) if !s.seconds_per_epoch.is_empty() => s.seconds_per_epoch.clone(),
            _ => self.evals.iter().map(|e| e.epoch_seconds).collect(),
        };
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// A number from the summary JSON, under any of `keys`.
    pub fn summary_number(&self, keys: &[&str]) -> Option<f64> {
        let s = self.summary_raw.as_ref()?;
        keys.iter().find_map(|k| s.get(*k).and_then(Value::as_f64))
    }

    /// The planned forward bits over the run, sampled at `n` points.
    pub fn planned_bits(&self, n: usize) -> Vec<(f64, f64)> {
        let Some(total) = self.total_steps().filter(|t| *t > 0) else {
            return Vec::new();
        };
        match &self.plan.schedule {
            Some(s) => sample_steps(total, n)
                .map(|t| (t as f64, f64::from(s.q_fwd_at(t, total))))
                .collect(),
            None => {
                let b = f64::from(self.plan.static_bits());
                vec![(0.0, b), (total as f64, b)]
            }
        }
    }
}

/// `n` steps spread evenly over `0..total` (all of them when there are fewer).
pub fn sample_steps(total: u64, n: usize) -> impl Iterator<Item = u64> {
    let n = (n.max(2) as u64).min(total.max(1));
    (0..n).map(move |i| if n <= 1 { 0 } else { i * (total - 1) / (n - 1) })
}

fn ema(prev: Option<f64>, x: f64) -> f64 {
    match prev {
        Some(p) if x.is_finite() => p * 0.9 + x * 0.1,
        Some(p) => p,
        None => x,
    }
}

pub fn pct(x: Option<f64>) -> String {
    x.map(|a| format!("{:.2}%", a * 100.0))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_stays_bounded_and_keeps_the_mean() {
        let mut s = Series::default();
        for i in 0..100_000 {
            s.push(i as f64, 1.0);
        }
        let p = s.points();
        assert!(p.len() <= CAP, "{}", p.len());
        assert!(p.iter().all(|q| (q.1 - 1.0).abs() < 1e-12));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        s.push(f64::NAN, 3.0);
        assert_eq!(s.y_range(), Some((1.0, 1.0)));
    }

    #[test]
    fn the_timeline_stays_bounded_and_reads_at_or_before_a_step() {
        let mut t = Timeline::default();
        for step in 1..=100_000u64 {
            t.push(AtStep {
                step,
                loss: step as f64,
                gbitops: 2.0 * step as f64,
                skipped: step / 10,
            });
        }
        assert!(t.pts.len() <= CAP * 4, "{}", t.pts.len());
        assert!(t.at(0).is_none());
        for ask in [1u64, 777, 40_000, 99_999] {
            let p = t.at(ask).unwrap_or_else(|| panic!("nothing at {ask}"));
            assert!(
                p.step <= ask && ask - p.step < t.every as u64,
                "{ask}: {p:?}"
            );
            assert_eq!(p.gbitops, 2.0 * p.step as f64, "the totals of that step");
        }
        // Exact while short.
        let mut d = RunData::new("r");
        for n in 1..=50u64 {
            let line = format!(
                r#"{{"event":"step","step":{n},"epoch":1,"loss":{n}.0,"lr":0.1,"images_per_sec":1.0,"t_data":0.0,"t_fwd":0.0,"t_bwd":0.0,"t_comm":0.0,"t_opt":0.0,"gbitops":0.5}}"#
            );
            d.apply(&parse_line(&line).unwrap());
        }
        assert_eq!(d.at_step(20).unwrap().loss, 20.0);
        assert_eq!(d.at_step(20).unwrap().gbitops, 10.0);
        assert_eq!(d.at_step(500).unwrap().step, 50);
    }

    #[test]
    fn unknown_fields_and_kinds_are_tolerated() {
        let line = r#"{"event":"step","step":5,"epoch":0,"loss":2.0,"lr":0.1,"images_per_sec":10.0,"t_data":0.0,"t_fwd":0.01,"t_bwd":0.02,"t_comm":0.0,"t_opt":0.0,"q_fwd":4,"q_bwd":8,"loss_scale":65536.0,"skipped":true,"gbitops":1.5,"rank":0}"#;
        let inc = parse_line(line).unwrap();
        let mut d = RunData::new("r");
        d.apply(&inc);
        assert_eq!(d.last.as_ref().unwrap().q_fwd, Some(4.0));
        assert_eq!(d.skipped, 1);
        assert_eq!(d.gbitops, 1.5);
        assert!(parse_line(r#"{"event":"device_sample","util":3}"#).is_none());
        assert!(parse_line(r#"{"event":"ste"#).is_none());
    }

    #[test]
    fn a_run_of_overflows_is_one_log_line() {
        let step = |n: u64, skipped: bool, scale: f64| {
            parse_line(&format!(
                r#"{{"event":"step","step":{n},"epoch":1,"loss":2.0,"lr":0.1,"images_per_sec":10.0,"t_data":0.0,"t_fwd":0.0,"t_bwd":0.0,"t_comm":0.0,"t_opt":0.0,"loss_scale":{scale},"skipped":{skipped}}}"#
            ))
            .unwrap()
        };
        let mut d = RunData::new("r");
        let mut scale = 65536.0;
        for n in 1..=14 {
            d.apply(&step(n, true, scale));
            scale /= 2.0;
        }
        d.apply(&step(15, false, 8.0));
        d.apply(&step(16, true, 8.0));
        let lines: Vec<&str> = d.logs.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            lines,
            [
                "steps 1–14 skipped: loss scale 65536 → 8",
                "step 16 skipped: loss scale 8",
            ]
        );
        assert_eq!(d.skipped, 15);

        // Events for ten steps each (`log_every`): counts, not one line per event.
        let many = |n: u64, skipped: u64, scale: f64| {
            parse_line(&format!(
                r#"{{"event":"step","step":{n},"epoch":1,"loss":2.0,"lr":0.1,"images_per_sec":10.0,"t_data":0.0,"t_fwd":0.0,"t_bwd":0.0,"t_comm":0.0,"t_opt":0.0,"loss_scale":{scale},"skipped":{},"steps":10,"skipped_steps":{skipped}}}"#,
                skipped > 0
            ))
            .unwrap()
        };
        let mut d = RunData::new("r");
        d.apply(&many(10, 10, 65536.0));
        d.apply(&many(20, 4, 1024.0));
        d.apply(&many(30, 0, 1024.0));
        d.apply(&many(40, 2, 512.0));
        let lines: Vec<&str> = d.logs.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            lines,
            [
                "14 of steps 1–20 skipped: loss scale 65536 → 1024",
                "2 of steps 31–40 skipped: loss scale 512",
            ]
        );
        assert_eq!(d.skipped, 16);
    }

    #[test]
    fn checkpoint_notes_tell_an_epoch_end_from_a_mid_epoch_stop() {
        let mut d = RunData::new("r");
        let lines = [
            r#"{"event":"started","run_dir":"r","name":"n","model":"lenet","params":1,"dataset":"d","classes":[],"train_size":8,"test_size":2,"steps_per_epoch":4,"total_steps":10,"epochs":3,"devices":["cpu"],"threads":1,"epoch_base":1}"#,
            r#"{"event":"checkpoint","epoch":1,"step":4,"path":"p"}"#,
            r#"{"event":"checkpoint","epoch":2,"step":6,"path":"p"}"#,
            r#"{"event":"checkpoint","epoch":3,"step":10,"path":"p"}"#,
        ];
        for l in lines {
            d.apply(&parse_line(l).unwrap());
        }
        let notes: Vec<&str> = d.logs.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            notes,
            [
                "checkpoint after epoch 1 (step 4)",
                "checkpoint in epoch 2 (step 6)",
                "checkpoint after epoch 3 (step 10)",
            ]
        );
    }

    #[test]
    fn plan_reads_a_schedule_when_the_config_has_one() {
        let p = PrecisionPlan::from_config_text(
            "[precision]\nmode = \"fp16\"\n[precision.schedule]\nkind = \"CR\"\nq_min = 3\nq_max = 8\n",
        );
        assert_eq!(p.mode, "fp16");
        assert_eq!(p.schedule.unwrap().q_max, 8);
        assert_eq!(PrecisionPlan::from_config_text("x").static_bits(), 32);
    }
}
