//! torchvision VGG with batch norm (`vgg11_bn`).
use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, BatchNorm, Init, ModuleT};
use tch::Tensor;

use super::{batch_norm2d, Classifier};
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

/// Configuration "A": conv widths, 0 = 2×2 max pool.
pub(super) const VGG11: [i64; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];

/// conv3×3-BN-ReLU, optionally followed by a 2×2 max pool.
struct ConvBn {
    conv: QConv2d,
    bn: BatchNorm,
    pool_after: bool,
}

pub(super) struct Vgg {
    features: Vec<ConvBn>,
    /// classifier.0, 3, 6
    fcs: Vec<QLinear>,
}

/// torchvision's VGG init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")` for convs.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

impl Vgg {
    pub(super) fn new(p: &nn::Path, cfg: &[i64], in_channels: i64, num_classes: i64) -> Self {
        let f = p.sub("features");
        // Module indices as in torchvision's nn.Sequential: conv, bn, relu per conv; one per pool.
        let mut idx = 0;
        let mut c_in = in_channels;
        let mut features = Vec::new();
        for &v in cfg {
            if v == 0 {
                let last: &mut ConvBn = features.last_mut().expect("VGG config starts with a pool");
                last.pool_after = true;
                idx += 1;
            } else {
                let opts = ConvOpts {
                    padding: 1,
                    weight_init: CONV_INIT,
                    bias_init: Some(Init::Const(0.0)),
                    ..Default::default()
                };
                let conv = QConv2d::new(&f.sub(idx), c_in, v, 3, opts);
                let bn = batch_norm2d(f.sub(idx + 1), v);
                features.push(ConvBn {
                    conv,
                    bn,
                    pool_after: false,
                });
                idx += 3;
                c_in = v;
            }
        }
        let c = p.sub("classifier");
        let fc = |i: usize, n_in, n_out| {
            let opts = LinearOpts {
                weight_init: Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
                bias_init: Some(Init::Const(0.0)),
                ..Default::default()
            };
            QLinear::new(&c.sub(i), n_in, n_out, opts)
        };
        let fcs = vec![
            fc(0, 512 * 7 * 7, 4096),
            fc(3, 4096, 4096),
            fc(6, 4096, num_classes),
        ];
        Vgg { features, fcs }
    }
}

impl Classifier for Vgg {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let mut x = x.shallow_clone();
        for l in &self.features {
            x = l.bn.forward_t(&l.conv.forward(&x, bits), train).relu_();
            if l.pool_after {
                x = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            }
        }
        let x = x.adaptive_avg_pool2d([7, 7]).flatten(1, -1);
        let x = self.fcs[0].forward(&x, bits).relu_().dropout(0.5, train);
        let x = self.fcs[1].forward(&x, bits).relu_().dropout(0.5, train);
        self.fcs[2].forward(&x, bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        for l in &mut self.features {
            f(&mut l.conv);
        }
        self.fcs.iter_mut().for_each(|l| f(l));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn vgg11_bn_matches_torchvision() {
        let (vs, mut model) = build_cpu(ModelKind::Vgg11Bn, 1000);
        let full = param_count(&vs);
        assert_eq!(full, 132_868_840);
        check_layers(&vs, model.as_mut(), "features.0", "classifier.6");
        assert!(vs.variables().contains_key("features.26.running_var"));
        // kaiming_normal_(fan_out, relu) convs, N(0, 0.01) linears, BN weight 1.
        assert!(
            (std_of(&vs, "features.0.weight") / (2.0f64 / (64.0 * 9.0)).sqrt() - 1.0).abs() < 0.1
        );
        assert!((std_of(&vs, "classifier.0.weight") / 0.01 - 1.0).abs() < 0.01);
        assert_eq!(std_of(&vs, "features.1.weight"), 0.0);
        let info = ModelKind::Vgg11Bn.info();
        assert_eq!(
            logits(model.as_ref(), 1, info.default_input).size(),
            [1, 1000]
        );
        drop((vs, model));

        let (vs, model) = build_cpu(ModelKind::Vgg11Bn, 10);
        assert_eq!(
            full - param_count(&vs),
            classifier_params(4096, 1000) - classifier_params(4096, 10)
        );
        assert_eq!(logits(model.as_ref(), 2, info.min_input).size(), [2, 10]);
        check_backward(&vs, model.as_ref(), 2, info.min_input);
    }
}
