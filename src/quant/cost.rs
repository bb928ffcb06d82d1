//! Effective BitOps: the training cost measure of CPT papers.
//!
//! Per optimizer step, with `F_l` the forward FLOPs of layer `l` (2 × its MACs × the batch):
//!
//! `BitOps = Σ_quantized F_l·(q_fwd·q_fwd + 2·q_fwd·q_bwd)/32² + Σ_full-precision F_l·3`
//!
//! — forward multiplies `q_fwd`-bit weights by `q_fwd`-bit activations, backward counts as twice
//! the forward at `q_fwd × q_bwd` (error × weight, error × activation), and full-precision layers
//! run all three at 32 × 32 bits. Only conv and linear layers count (they hold the MACs).
use tch::Tensor;

use crate::models::Classifier;
use crate::quant::{Bits, LayerRole};
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
    /// Runs one dry forward of `input` (any batch size; evaluation mode, no autograd, full
    /// precision: no state changes) and scales its per-sample MACs to `batch` samples per step.
    pub fn measure(model: &mut dyn Classifier, batch: i64, input: &Tensor) -> CostModel {
        tch::no_grad(|| {
            let _ = model.forward(input, false, Bits::FULL);
        });
        CostModel::from_layers(model, batch)
    }

    /// From the MACs the layers recorded in their most recent forward (0 for layers that have
    /// not run yet), for `batch` samples per step.
    pub fn from_layers(model: &mut dyn Classifier, batch: i64) -> CostModel {
        let (mut quantized, mut full) = (0u64, 0u64);
        model.visit_layers(&mut |l| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{build, ModelKind, VitConfig};
    use crate::schedule::PrecisionScheduleKind;
    use tch::{nn::VarStore, Device, Kind};

    fn lenet() -> (VarStore, Box<dyn Classifier>) {
        let vs = VarStore::new(Device::Cpu);
        let model = build(ModelKind::Lenet, &VitConfig::default(), &vs.root(), 10, 3);
        (vs, model)
    }

    #[test]
    fn lenet_flops_by_hand() {
        let (_vs, mut model) = lenet();
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let cost = CostModel::measure(model.as_mut(), 128, &x);
        // MACs per sample: conv1 6·28·28 outputs × 3·5·5 = 352_800; conv2 16·10·10 × 6·5·5 =
        // 240_000; fc1 400·120 = 48_000; fc2 120·84 = 10_080 (all quantized); fc3 84·10 = 840
        // (the classifier, full precision).
        let quantized_macs = 352_800.0 + 240_000.0 + 48_000.0 + 10_080.0;
        assert_eq!(cost.quantized_flops, 2.0 * quantized_macs * 128.0);
        assert_eq!(cost.full_flops, 2.0 * 840.0 * 128.0);
        // 8/8 bits: 166_625_280 FLOPs × (64 + 128)/1024 + 215_040 × 3 = 31_887_360 BitOps.
        assert!((cost.gbitops(8, 8) - 0.031_887_36).abs() < 1e-12);
        // 32/32 bits: everything at 3 × FLOPs.
        let all = 3.0 * (cost.quantized_flops + cost.full_flops) / 1e9;
        assert!((cost.gbitops(32, 32) - all).abs() < 1e-12);
        // 4 forward / 8 backward: (16 + 64)/1024.
        let expect = (166_625_280.0 * 80.0 / 1024.0 + 645_120.0) / 1e9;
        assert!((cost.gbitops(4, 8) - expect).abs() < 1e-12);
    }

    #[test]
    fn roles_move_flops_between_terms() {
        let (_vs, mut model) = lenet();
        model.set_layer_roles(true, true);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let cost = CostModel::measure(model.as_mut(), 1, &x);
        assert_eq!(
            cost.quantized_flops,
            2.0 * (240_000.0 + 48_000.0 + 10_080.0)
        );
        assert_eq!(cost.full_flops, 2.0 * (352_800.0 + 840.0));
    }

    #[test]
    fn schedules_against_the_static_baseline() {
        let (_vs, mut model) = lenet();
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let cost = CostModel::measure(model.as_mut(), 64, &x);
        let stat = PrecisionSchedule::new(PrecisionScheduleKind::Static);
        assert!((cost.ratio_vs_static(&stat, 100) - 1.0).abs() < 1e-12);
        assert!(
            (cost.run_gbitops(&stat, 100) - cost.static_gbitops(8, 8, 100)).abs() < 1e-9,
            "static 8 = 100 steps at 8/8"
        );
        let cr = PrecisionSchedule::new(PrecisionScheduleKind::Cr);
        let r = cost.ratio_vs_static(&cr, 1000);
        // Between the all-quantized ratio and 1: the full-precision classifier does not shrink.
        let pure = cr.cost_ratio_vs_static(1000);
        assert!(pure < r && r < 1.0, "{pure} {r}");
        let manual: f64 = (0..1000).map(|t| cost.gbitops_at(&cr, t, 1000)).sum();
        assert!((cost.run_gbitops(&cr, 1000) - manual).abs() < 1e-9);
    }
}
