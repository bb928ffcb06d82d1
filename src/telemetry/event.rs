//! The event stream: the only thing that flows from the engine to front ends and the run store.
//! Serialized as one JSON object per line (`metrics.jsonl`, `cptlab run --json`).
//!
//! **Epochs are numbered from 1 everywhere**, as users read them: step and eval events,
//! checkpoint events, `Summary::best_epoch`, the CSV exports, logs and the workbench. Builds
//! before `StartedEvent::epoch_base` numbered step and eval epochs and `best_epoch` from 0 (their
//! checkpoint events already counted from 1 at epoch ends). Their files still read: their
//! `started` events lack `epoch_base`, which then reads as 0, and `EpochNumbering` (or
//! `upgrade_epochs`) brings their events to 1-based, one session at a time, since a run resumed by
//! a newer build holds both. Front ends and exports that read recorded events pass them through
//! it; what the engine emits needs nothing. A `summary.json` written by an older build (no
//! marker of its own) has a 0-based `best_epoch`; the `finished` event of its `metrics.jsonl` is
//! upgraded with the rest.
use serde::{Deserialize, Serialize};

/// The number of the first epoch in the events this build writes.
pub const EPOCH_BASE: u64 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started(StartedEvent),
    Step(StepEvent),
    Eval(EvalEvent),
    Checkpoint {
        /// 1-based epoch of the checkpoint's last step: the epoch just finished, or the epoch
        /// a mid-epoch stop interrupted (`step` tells which).
        epoch: u64,
        step: u64,
        path: String,
    },
    Log {
        level: LogLevel,
        message: String,
    },
    Finished {
        summary: Summary,
    },
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Info,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedEvent {
    pub run_dir: String,
    pub name: String,
    pub model: String,
    pub params: u64,
    pub dataset: String,
    pub classes: Vec<String>,
    pub train_size: u64,
    pub test_size: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub epochs: u64,
    pub devices: Vec<String>,
    pub threads: usize,
    /// The epoch a resumed run continues after (None for a fresh run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after_epoch: Option<u64>,
    /// The number of the first epoch in this session's events: `EPOCH_BASE` (1) from this build
    /// on; absent, hence 0, in files of older builds, whose step and eval epochs and
    /// `best_epoch` counted from 0 (see the module's documentation).
    #[serde(default)]
    pub epoch_base: u64,
    /// `cptlab estimate`'s total bytes per rank for this run (rank 0's replica), for the
    /// workbench's "estimate / measured" line. Absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_estimate_bytes: Option<u64>,
}

/// One optimizer step, or (every `train.log_every` steps) the last `steps` steps up to `step`:
/// then `loss`, `lr` (the last), `images_per_sec`, `grad_norm` and the timings are means per
/// step over them, `gbitops` their sum. `loss` is the mean over the whole global batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Optimizer steps completed, counting this one (1-based).
    pub step: u64,
    /// 1-based epoch this step belongs to (the first epoch is 1).
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_sec: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Wall-clock breakdown of the step in seconds, as DeepSpeed's `wall_clock_breakdown`.
    pub t_data: f64,
    pub t_fwd: f64,
    pub t_bwd: f64,
    pub t_comm: f64,
    pub t_opt: f64,
    /// Forward and backward bits of this step under a precision schedule (absent at fp32 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_fwd: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_bwd: Option<u32>,
    /// Effective GBitOps of this step (forward + backward, all layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbitops: Option<f64>,
    /// fp16: the loss scale this step ran with, and whether its update was skipped (overflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
    /// Steps this event covers, ending at `step` (absent: 1, as in older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// fp16: how many of them were skipped (`skipped`: whether any was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
    /// Peak memory so far of the reporting rank (rank 0), bytes: the CUDA caching allocator's
    /// peak allocated bytes on its GPU, or the process's peak RSS on the CPU
    /// (`peak_memory_kind` says which). Absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_kind: Option<MemoryKind>,
}

/// What a measured peak memory figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// The process's peak resident set size (`VmHWM`): every CPU rank of the process and
    /// everything else it holds.
    Rss,
    /// The CUDA caching allocator's peak allocated bytes on the rank's GPU (tensors only, not
    /// the allocator's reserve nor the CUDA context).
    Cuda,
}

impl MemoryKind {
    pub const ALL: [MemoryKind; 2] = [MemoryKind::Rss, MemoryKind::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Rss => "rss",
            MemoryKind::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalEvent {
    /// 1-based epoch just evaluated (the first epoch is 1).
    pub epoch: u64,
    pub step: u64,
    pub test_loss: f64,
    /// Top-1 accuracy as a fraction in 0..1.
    pub test_acc: f64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Training seconds of the epoch (evaluation and paused time excluded; after a mid-epoch
    /// stop and resume, both parts).
    pub epoch_seconds: f64,
}

/// How a run ended, as its summary records it. Serialized as the lowercase names older builds
/// wrote as free text (`"finished"`, `"stopped"`, `"diverged"`, `"failed"`), so every existing
/// `summary.json` and `metrics.jsonl` reads unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Trained every epoch.
    #[serde(rename = "finished")]
    Finished,
    /// Stopped by the user (Ctrl-C, SIGTERM, the workbench): resumable.
    #[serde(rename = "stopped")]
    Stopped,
    /// The loss became non-finite or exploded.
    #[serde(rename = "diverged")]
    Diverged,
    /// An error ended the run (`Summary::error` says which). Also the status of a summary built
    /// before its ending is known.
    #[default]
    #[serde(rename = "failed")]
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Finished,
        RunStatus::Stopped,
        RunStatus::Diverged,
        RunStatus::Failed,
    ];

    /// The name on disk and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Event {
    /// The event that ends a run's stream, from its summary: `finished` for a run that finished
    /// or was stopped, `failed` (with the error) for one that diverged or failed.
    pub fn ending(summary: &Summary) -> Event {
        match summary.status {
            RunStatus::Finished | RunStatus::Stopped => Event::Finished {
                summary: summary.clone(),
            },
            RunStatus::Diverged | RunStatus::Failed => Event::Failed {
                error: summary
                    .error
                    .clone()
                    .unwrap_or_else(|| summary.status.to_string()),
                step: (summary.steps > 0).then_some(summary.steps),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub status: RunStatus,
    pub final_test_acc: Option<f64>,
    pub best_test_acc: Option<f64>,
    /// 1-based epoch of `best_test_acc` (0-based in summaries of older builds).
    pub best_epoch: Option<u64>,
    /// Epochs completed.
    pub epochs: u64,
    pub steps: u64,
    /// Seconds spent in training epochs (evaluation and paused time excluded), summed over
    /// resumed sessions, the part of an epoch a stop interrupted included.
    pub train_seconds: f64,
    /// Training seconds of each completed epoch (paused time excluded).
    pub seconds_per_epoch: Vec<f64>,
    pub test_acc_per_epoch: Vec<f64>,
    /// Accuracy per class at the end, in class order.
    #[serde(default)]
    pub per_class_acc: Vec<ClassAccuracy>,
    pub run_dir: String,
    pub name: String,
    pub model: String,
    pub params: u64,
    pub dataset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Optimizer state held by each rank (halved per rank by ZeRO-1 at world size 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_state_bytes_per_rank: Option<u64>,
    /// Effective GBitOps of all training steps, and their ratio to a static run at the
    /// schedule's top precision of the same length (1.0 without a schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbitops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbitops_ratio_vs_static: Option<f64>,
    /// Steps whose update was skipped (fp16 overflow).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Device→host reads per training step in this session (each waits for the device to
    /// finish what was queued); absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_reads_per_step: Option<f64>,
    /// Peak memory of the reporting rank over the session, as in the step events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_kind: Option<MemoryKind>,
    /// In this process only (never written): the failure only reports that another rank (or
    /// the job) aborted the group, so the root cause is elsewhere. Set with status `failed`.
    #[serde(skip)]
    pub aborted_by_peer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub acc: f64,
}

/// Brings recorded events to 1-based epochs, event by event in file order: each `started`
/// event says how the session after it counts (`epoch_base`). Events of this build pass
/// unchanged.
#[derive(Debug, Clone, Default)]
pub struct EpochNumbering {
    /// Added to a 0-based session's step and eval epochs and `best_epoch`.
    shift: u64,
    steps_per_epoch: u64,
}

impl EpochNumbering {
    pub fn apply(&mut self, event: &mut Event) {
        match event {
            Event::Started(s) => {
                self.shift = EPOCH_BASE.saturating_sub(s.epoch_base);
                self.steps_per_epoch = s.steps_per_epoch;
                s.epoch_base = EPOCH_BASE;
            }
            _ if self.shift == 0 => {}
            Event::Step(s) => s.epoch += self.shift,
            Event::Eval(e) => e.epoch += self.shift,
            Event::Checkpoint { epoch, step, .. } => {
                // Older builds wrote the epochs completed: a mid-epoch stop's checkpoint named
                // the epoch before the one it interrupted.
                if self.steps_per_epoch > 0 {
                    *epoch = step.div_ceil(self.steps_per_epoch);
                }
            }
            Event::Finished { summary } => {
                if let Some(b) = &mut summary.best_epoch {
                    *b += self.shift;
                }
            }
            Event::Log { .. } | Event::Failed { .. } => {}
        }
    }
}

/// `EpochNumbering` over a whole recorded stream (`metrics.jsonl` as `read_metrics` returns it).
pub fn upgrade_epochs(events: &mut [Event]) {
    let mut n = EpochNumbering::default();
    for e in events {
        n.apply(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_events_are_flat_json_tagged_by_event() {
        let e = Event::Step(StepEvent {
            step: 3,
            epoch: 1,
            loss: 2.5,
            lr: 0.1,
            images_per_sec: 100.0,
            grad_norm: None,
            t_data: 0.0,
            t_fwd: 0.0,
            t_bwd: 0.0,
            t_comm: 0.0,
            t_opt: 0.0,
            q_fwd: None,
            q_bwd: None,
            gbitops: None,
            loss_scale: None,
            skipped: None,
            steps: None,
            skipped_steps: None,
            peak_memory_bytes: None,
            peak_memory_kind: None,
        });
        let s = serde_json::to_string(&e).unwrap();
        assert!(
            s.starts_with(r#"{"event":"step","step":3,"epoch":1,"loss":2.5"#),
            "{s}"
        );
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }

    fn started(epoch_base: Option<u64>) -> String {
        let base = epoch_base.map_or(String::new(), |b| format!(r#","epoch_base":{b}"#));
        format!(
            r#"{{"event":"started","run_dir":"r","name":"n","model":"lenet","params":1,"dataset":"d","classes":[],"train_size":8,"test_size":2,"steps_per_epoch":4,"total_steps":8,"epochs":2,"devices":["cpu"],"threads":1{base}}}"#
        )
    }

    fn step(step: u64, epoch: u64) -> String {
        format!(
            r#"{{"event":"step","step":{step},"epoch":{epoch},"loss":1.0,"lr":0.1,"images_per_sec":1.0,"t_data":0,"t_fwd":0,"t_bwd":0,"t_comm":0,"t_opt":0}}"#
        )
    }

    fn epochs(events: &[Event]) -> Vec<(&'static str, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some(("step", s.epoch)),
                Event::Eval(v) => Some(("eval", v.epoch)),
                Event::Checkpoint { epoch, .. } => Some(("checkpoint", *epoch)),
                Event::Finished { summary } => summary.best_epoch.map(|b| ("best", b)),
                _ => None,
            })
            .collect()
    }

    /// A run of an older build (0-based), stopped in epoch 2 and resumed by this build.
    #[test]
    fn older_0_based_sessions_read_as_1_based() {
        let eval = |epoch: u64, step: u64| {
            format!(
                r#"{{"event":"eval","epoch":{epoch},"step":{step},"test_loss":1,"test_acc":0.5,"train_loss":1,"epoch_seconds":1}}"#
            )
        };
        let ckpt = |epoch: u64, step: u64| {
            format!(r#"{{"event":"checkpoint","epoch":{epoch},"step":{step},"path":"p"}}"#)
        };
        let lines = [
            started(None),
            step(4, 0),
            eval(0, 4),
            ckpt(1, 4),
            step(5, 1),
            // The old mid-epoch checkpoint named the epochs completed.
            ckpt(1, 5),
            started(Some(1)),
            step(6, 2),
            step(8, 2),
            eval(2, 8),
            ckpt(2, 8),
            r#"{"event":"finished","summary":{"status":"finished","final_test_acc":0.5,"best_test_acc":0.5,"best_epoch":2,"epochs":2,"steps":8,"train_seconds":2,"seconds_per_epoch":[1,1],"test_acc_per_epoch":[0.5,0.5],"run_dir":"r","name":"n","model":"lenet","params":1,"dataset":"d"}}"#.to_string(),
        ];
        let mut events: Vec<Event> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let Event::Started(s) = &events[0] else {
            panic!()
        };
        assert_eq!(s.epoch_base, 0, "a missing marker is an older build's");
        upgrade_epochs(&mut events);
        assert_eq!(
            epochs(&events),
            [
                ("step", 1),
                ("eval", 1),
                ("checkpoint", 1),
                ("step", 2),
                ("checkpoint", 2),
                ("step", 2),
                ("step", 2),
                ("eval", 2),
                ("checkpoint", 2),
                ("best", 2),
            ]
        );
        // This build's own stream passes unchanged.
        let mut fresh: Vec<Event> = [started(Some(EPOCH_BASE)), step(1, 1)]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let before = fresh.clone();
        upgrade_epochs(&mut fresh);
        assert_eq!(fresh, before);
    }

    #[test]
    fn every_run_status_round_trips_as_its_old_string() {
        for status in RunStatus::ALL {
            let old = match status {
                RunStatus::Finished => "finished",
                RunStatus::Stopped => "stopped",
                RunStatus::Diverged => "diverged",
                RunStatus::Failed => "failed",
            };
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{old}\""));
            assert_eq!(serde_json::from_str::<RunStatus>(&json).unwrap(), status);
            assert_eq!(status.as_str(), old);
            assert_eq!(status.to_string(), old);
        }
        assert!(serde_json::from_str::<RunStatus>("\"live\"").is_err());
    }

    /// A `summary.json` as older builds wrote it (status as free text, no newer fields).
    #[test]
    fn an_old_summary_json_parses_and_writes_back_the_same_status() {
        let text = r#"{
  "status": "stopped",
  "final_test_acc": 0.4,
  "best_test_acc": 0.45,
  "best_epoch": 1,
  "epochs": 2,
  "steps": 10,
  "train_seconds": 3.5,
  "seconds_per_epoch": [1.5, 2.0],
  "test_acc_per_epoch": [0.45, 0.4],
  "run_dir": "runs/r",
  "name": "r",
  "model": "lenet",
  "params": 61706,
  "dataset": "synthetic",
  "error": "stopped by user"
}"#;
        let s: Summary = serde_json::from_str(text).unwrap();
        assert_eq!(s.status, RunStatus::Stopped);
        assert_eq!(s.error.as_deref(), Some("stopped by user"));
        assert!(!s.aborted_by_peer);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["status"], "stopped");
        assert!(v.get("aborted_by_peer").is_none(), "in-process only");
    }
}
