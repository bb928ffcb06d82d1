//! Effective BitOps: the training cost measure of CPT papers.
//!
//! Per optimizer step, with `F_l` the forward FLOPs of layer `l` (2 × its MACs × the batch):
//!
//! `BitOps = Σ_quantized F_l·(q_fwd·q_fwd + 2·q_fwd·q_bwd)/32² + Σ_full-precision F_l·3`
//!
//! — forward multiplies `q_fwd`-bit weights by `q_fwd`-bit activations, backward counts as twice
//! the forward at `q_fwd × q_bwd` (error × weight, error × activation), and full-precision layers
//! run all three at 32 × 32 bits. Only conv and linear layers count (they hold the MACs).
use crate::quant::{LayerRole, QLayer};
use crate::schedule::PrecisionSchedule;

/// Forward FLOPs per optimizer step, split by layer role.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// FLOPs of one forward pass at the run's batch size through `Quantized` layers.
    pub quantized_flops: f64,
    /// The same through `FullPrecision` layers.
    pub full_flops: f64,
}

impl CostModel {
    /// From the MACs the layers recorded in their most recent forward (0 for layers that have
    /// not run yet), for `batch` samples per step. `visit` walks a model's quantizable layers
    /// (a model's `visit_layers`; models sit above this module, so it takes the walk, not the
    /// model).
    pub fn from_layers(
        visit: impl FnOnce(&mut dyn FnMut(&mut dyn QLayer)),
        batch: i64,
    ) -> CostModel {
        let (mut quantized, mut full) = (0u64, 0u64);
        visit(&mut |l| {
            let macs = l.stats().macs_per_sample();
            match l.role() {
                LayerRole::Quantized => quantized += macs,
                LayerRole::FullPrecision => full += macs,
            }
        });
        let per_step = |macs: u64| 2.0 * macs as f64 * batch as f64;
        CostModel {
            quantized_flops: per_step(quantized),
            full_flops: per_step(full),
        }
    }

    /// Effective BitOps of one step at these bits, in GBitOps (10⁹).
    pub fn gbitops(&self, q_fwd: u32, q_bwd: u32) -> f64 {
        let (f, b) = (f64::from(q_fwd), f64::from(q_bwd));
        (self.quantized_flops * (f * f + 2.0 * f * b) / 1024.0 + self.full_flops * 3.0) / 1e9
    }

    /// GBitOps of one step of `schedule` at step `t` of `total_steps`.
    pub fn gbitops_at(&self, schedule: &PrecisionSchedule, t: u64, total_steps: u64) -> f64 {
        self.gbitops(
            schedule.q_fwd_at(t, total_steps),
            schedule.q_bwd_at(t, total_steps),
        )
    }

    /// GBitOps of a whole `total_steps` run of `schedule`.
    pub fn run_gbitops(&self, schedule: &PrecisionSchedule, total_steps: u64) -> f64 {
        (0..total_steps)
            .map(|t| self.gbitops_at(schedule, t, total_steps))
            .sum()
    }

    /// GBitOps of `steps` steps at static `q_fwd`/`q_bwd`.
    pub fn static_gbitops(&self, q_fwd: u32, q_bwd: u32, steps: u64) -> f64 {
        self.gbitops(q_fwd, q_bwd) * steps as f64
    }

    /// GBitOps of the static baseline for `schedule`: `q_max` forward, the schedule's `q_bwd`,
    /// `steps` steps (the convention of `PrecisionSchedule::cost_ratio_vs_static`).
    pub fn static_baseline_gbitops(&self, schedule: &PrecisionSchedule, steps: u64) -> f64 {
        self.static_gbitops(schedule.q_max, schedule.q_bwd(), steps)
    }

    /// `run_gbitops / static_baseline_gbitops` for the same steps (1 for an empty run).
    pub fn ratio_vs_static(&self, schedule: &PrecisionSchedule, total_steps: u64) -> f64 {
        let base = self.static_baseline_gbitops(schedule, total_steps);
        if base > 0.0 {
            self.run_gbitops(schedule, total_steps) / base
        } else {
            1.0
        }
    }
}
