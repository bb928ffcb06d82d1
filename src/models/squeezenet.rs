//! torchvision `squeezenet1_0`.
use tch::nn::init::DEFAULT_KAIMING_UNIFORM;
use tch::nn::{self, Init};
use tch::Tensor;

use super::Classifier;
use crate::quant::{Bits, ConvOpts, QConv2d, QLayer};

/// torchvision's SqueezeNet init: `kaiming_uniform_` (fan_in, ReLU gain) for every conv but the
/// final one, zero biases.
fn conv(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> QConv2d {
    let opts = ConvOpts {
        stride,
        padding,
        weight_init: DEFAULT_KAIMING_UNIFORM,
        bias_init: Some(Init::Const(0.0)),
        ..Default::default()
    };
    QConv2d::new(p, c_in, c_out, k, opts)
}

/// 1×1 squeeze, then 1×1 and 3×3 expands concatenated.
struct Fire {
    squeeze: QConv2d,
    expand1x1: QConv2d,
    expand3x3: QConv2d,
}

impl Fire {
    fn new(p: &nn::Path, c_in: i64, squeeze: i64, e1: i64, e3: i64) -> Self {
        Fire {
            squeeze: conv(&p.sub("squeeze"), c_in, squeeze, 1, 1, 0),
            expand1x1: conv(&p.sub("expand1x1"), squeeze, e1, 1, 1, 0),
            expand3x3: conv(&p.sub("expand3x3"), squeeze, e3, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let s = self.squeeze.forward(x, bits).relu_();
        Tensor::cat(
            &[
                self.expand1x1.forward(&s, bits).relu_(),
                self.expand3x3.forward(&s, bits).relu_(),
            ],
            1,
        )
    }
}

pub(super) struct SqueezeNet {
    conv0: QConv2d,
    /// Fire modules, each flagged if a 3×3 max pool precedes it.
    features: Vec<(bool, Fire)>,
    final_conv: QConv2d,
}

impl SqueezeNet {
    pub(super) fn new(p: &nn::Path, in_channels: i64, num_classes: i64) -> Self {
        let f = p.sub("features");
        // (index in torchvision's `features`, fire config); a gap in the indices is a max pool.
        let fires = [
            (3, 96, 16, 64, 64),
            (4, 128, 16, 64, 64),
            (5, 128, 32, 128, 128),
            (7, 256, 32, 128, 128),
            (8, 256, 48, 192, 192),
            (9, 384, 48, 192, 192),
            (10, 384, 64, 256, 256),
            (12, 512, 64, 256, 256),
        ];
        let mut features = Vec::new();
        let mut prev = 2; // features.2 is the max pool after conv0
        for (idx, c_in, s, e1, e3) in fires {
            let pool_before = idx != prev + 1;
            features.push((pool_before, Fire::new(&f.sub(idx), c_in, s, e1, e3)));
            prev = idx;
        }
        let final_opts = ConvOpts {
            weight_init: Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bias_init: Some(Init::Const(0.0)),
            ..Default::default()
        };
        SqueezeNet {
            conv0: conv(&f.sub(0), in_channels, 96, 7, 2, 0),
            features,
            final_conv: QConv2d::new(&p.sub("classifier").sub(1), 512, num_classes, 1, final_opts),
        }
    }
}

fn max_pool(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true)
}

impl Classifier for SqueezeNet {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let mut x = max_pool(&self.conv0.forward(x, bits).relu_());
        for (pool_before, fire) in &self.features {
            if *pool_before {
                x = max_pool(&x);
            }
            x = fire.forward(&x, bits);
        }
        // Classifier: dropout, 1×1 conv to classes, ReLU, global average pool.
        let x = self
            .final_conv
            .forward(&x.dropout(0.5, train), bits)
            .relu_();
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.conv0);
        for (_, fire) in &mut self.features {
            f(&mut fire.squeeze);
            f(&mut fire.expand1x1);
            f(&mut fire.expand3x3);
        }
        f(&mut self.final_conv);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn squeezenet1_0_matches_torchvision() {
        let (vs, mut model) = build_cpu(ModelKind::Squeezenet1_0, 1000);
        let full = param_count(&vs);
        assert_eq!(full, 1_248_424);
        check_layers(&vs, model.as_mut(), "features.0", "classifier.1");
        // kaiming_uniform_ (fan_in, relu gain) features, N(0, 0.01) final conv
        assert!(
            (std_of(&vs, "features.0.weight") / (2.0f64 / (3.0 * 49.0)).sqrt() - 1.0).abs() < 0.1
        );
        assert!((std_of(&vs, "classifier.1.weight") / 0.01 - 1.0).abs() < 0.1);
        let info = ModelKind::Squeezenet1_0.info();
        assert_eq!(
            logits(model.as_ref(), 1, info.default_input).size(),
            [1, 1000]
        );

        let (vs10, model) = build_cpu(ModelKind::Squeezenet1_0, 10);
        assert_eq!(
            full - param_count(&vs10),
            classifier_params(512, 1000) - classifier_params(512, 10)
        );
        assert_eq!(logits(model.as_ref(), 2, info.min_input).size(), [2, 10]);
        check_backward(&vs10, model.as_ref(), 2, info.min_input);
    }
}
