//! The event stream: the only thing that flows from the engine to front ends and the run store.
//! Serialized as one JSON object per line (`metrics.jsonl`, `cptlab run --json`).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started(StartedEvent),
    Step(StepEvent),
    Eval(EvalEvent),
    Checkpoint {
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
}

/// One optimizer step. `loss` is the mean over the whole global batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Optimizer steps completed, counting this one (1-based).
    pub step: u64,
    /// 0-based epoch this step belongs to.
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalEvent {
    pub epoch: u64,
    pub step: u64,
    pub test_loss: f64,
    /// Top-1 accuracy as a fraction in 0..1.
    pub test_acc: f64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    pub epoch_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// finished, stopped, diverged or failed.
    pub status: String,
    pub final_test_acc: Option<f64>,
    pub best_test_acc: Option<f64>,
    pub best_epoch: Option<u64>,
    /// Epochs completed.
    pub epochs: u64,
    pub steps: u64,
    /// Seconds spent in training epochs (evaluation excluded), summed over resumed sessions.
    pub train_seconds: f64,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub acc: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_events_are_flat_json_tagged_by_event() {
        let e = Event::Step(StepEvent {
            step: 3,
            epoch: 0,
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
        });
        let s = serde_json::to_string(&e).unwrap();
        assert!(
            s.starts_with(r#"{"event":"step","step":3,"epoch":0,"loss":2.5"#),
            "{s}"
        );
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }
}
