//! A model's training cost: one dry forward records every layer's MACs, which
//! `quant::CostModel` turns into effective BitOps.
use tch::Tensor;

use super::Classifier;
use crate::quant::{Bits, CostModel};

/// Runs one dry forward of `input` (any batch size; evaluation mode, no autograd, full
/// precision: no state changes) and scales its per-sample MACs to `batch` samples per step.
pub fn measure_cost(model: &mut dyn Classifier, batch: i64, input: &Tensor) -> CostModel {
    tch::no_grad(|| {
        let _ = model.forward(input, false, Bits::FULL);
    });
    CostModel::from_layers(|f| model.visit_layers(f), batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{build, ModelKind, VitConfig};
    use crate::schedule::{PrecisionSchedule, PrecisionScheduleKind};
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
        let cost = measure_cost(model.as_mut(), 128, &x);
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
        let cost = measure_cost(model.as_mut(), 1, &x);
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
        let cost = measure_cost(model.as_mut(), 64, &x);
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
