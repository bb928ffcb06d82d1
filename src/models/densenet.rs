//! torchvision DenseNet-BC (`densenet121` = growth 32, blocks [6, 12, 24, 16], 64 initial
//! features, bottleneck width 4·growth, no dropout).
use tch::nn::init::DEFAULT_KAIMING_NORMAL;
use tch::nn::{self, BatchNorm, Init, ModuleT};
use tch::Tensor;

use super::{batch_norm2d, Classifier};
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

const BN_SIZE: i64 = 4;

/// torchvision's DenseNet init: plain `kaiming_normal_` (fan_in, ReLU gain), no conv biases.
fn conv(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> QConv2d {
    let opts = ConvOpts {
        stride,
        padding,
        bias: false,
        weight_init: DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    QConv2d::new(p, c_in, c_out, k, opts)
}

/// BN-ReLU-conv1×1 bottleneck, then BN-ReLU-conv3×3 producing `growth` new channels.
struct DenseLayer {
    norm1: BatchNorm,
    conv1: QConv2d,
    norm2: BatchNorm,
    conv2: QConv2d,
}

impl DenseLayer {
    fn forward(&self, features: &[Tensor], train: bool, bits: Bits) -> Tensor {
        let x = Tensor::cat(features, 1);
        let x = self
            .conv1
            .forward(&self.norm1.forward_t(&x, train).relu_(), bits);
        self.conv2
            .forward(&self.norm2.forward_t(&x, train).relu_(), bits)
    }
}

/// BN-ReLU-conv1×1 halving the channels, then 2×2 average pooling.
struct Transition {
    norm: BatchNorm,
    conv: QConv2d,
}

pub(super) struct DenseNet {
    conv0: QConv2d,
    norm0: BatchNorm,
    /// Dense blocks, each followed by a transition except the last.
    blocks: Vec<(Vec<DenseLayer>, Option<Transition>)>,
    norm5: BatchNorm,
    classifier: QLinear,
}

impl DenseNet {
    pub(super) fn new(
        p: &nn::Path,
        growth: i64,
        block_config: [i64; 4],
        init_features: i64,
        in_channels: i64,
        num_classes: i64,
    ) -> Self {
        let f = p.sub("features");
        let mut c = init_features;
        let mut blocks = Vec::new();
        for (b, &n_layers) in block_config.iter().enumerate() {
            let bp = f.sub(format!("denseblock{}", b + 1));
            let layers = (0..n_layers)
                .map(|i| {
                    let lp = bp.sub(format!("denselayer{}", i + 1));
                    let c_in = c + i * growth;
                    DenseLayer {
                        norm1: batch_norm2d(lp.sub("norm1"), c_in),
                        conv1: conv(&lp.sub("conv1"), c_in, BN_SIZE * growth, 1, 1, 0),
                        norm2: batch_norm2d(lp.sub("norm2"), BN_SIZE * growth),
                        conv2: conv(&lp.sub("conv2"), BN_SIZE * growth, growth, 3, 1, 1),
                    }
                })
                .collect();
            c += n_layers * growth;
            let transition = (b + 1 < block_config.len()).then(|| {
                let tp = f.sub(format!("transition{}", b + 1));
                let t = Transition {
                    norm: batch_norm2d(tp.sub("norm"), c),
                    conv: conv(&tp.sub("conv"), c, c / 2, 1, 1, 0),
                };
                c /= 2;
                t
            });
            blocks.push((layers, transition));
        }
        // Linear weight keeps PyTorch's default init; torchvision zeroes only its bias.
        let classifier_opts = LinearOpts {
            bias_init: Some(Init::Const(0.0)),
            ..Default::default()
        };
        DenseNet {
            conv0: conv(&f.sub("conv0"), in_channels, init_features, 7, 2, 3),
            norm0: batch_norm2d(f.sub("norm0"), init_features),
            blocks,
            norm5: batch_norm2d(f.sub("norm5"), c),
            classifier: QLinear::new(&p.sub("classifier"), c, num_classes, classifier_opts),
        }
    }
}

impl Classifier for DenseNet {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let mut x = self
            .norm0
            .forward_t(&self.conv0.forward(x, bits), train)
            .relu_()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (layers, transition) in &self.blocks {
            // Each layer sees the concatenation of the block input and all earlier outputs.
            let mut features = Vec::with_capacity(layers.len() + 1);
            features.push(x);
            for layer in layers {
                let new = layer.forward(&features, train, bits);
                features.push(new);
            }
            x = Tensor::cat(&features, 1);
            if let Some(t) = transition {
                x = t
                    .conv
                    .forward(&t.norm.forward_t(&x, train).relu_(), bits)
                    .avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
            }
        }
        let x = self
            .norm5
            .forward_t(&x, train)
            .relu_()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1);
        self.classifier.forward(&x, bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.conv0);
        for (layers, transition) in &mut self.blocks {
            for l in layers {
                f(&mut l.conv1);
                f(&mut l.conv2);
            }
            if let Some(t) = transition {
                f(&mut t.conv);
            }
        }
        f(&mut self.classifier);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn densenet121_matches_torchvision() {
        let (vs, mut model) = build_cpu(ModelKind::Densenet121, 1000);
        let full = param_count(&vs);
        assert_eq!(full, 7_978_856);
        check_layers(&vs, model.as_mut(), "features.conv0", "classifier");
        // conv0, two convs per dense layer, three transitions, classifier.
        assert_eq!(
            layers(model.as_mut()).len(),
            1 + 2 * (6 + 12 + 24 + 16) + 3 + 1
        );
        // kaiming_normal_ (fan_in, relu gain)
        assert!(
            (std_of(&vs, "features.conv0.weight") / (2.0f64 / (3.0 * 49.0)).sqrt() - 1.0).abs()
                < 0.1
        );
        let info = ModelKind::Densenet121.info();
        assert_eq!(
            logits(model.as_ref(), 1, info.default_input).size(),
            [1, 1000]
        );

        let (vs10, model) = build_cpu(ModelKind::Densenet121, 10);
        assert_eq!(
            full - param_count(&vs10),
            classifier_params(1024, 1000) - classifier_params(1024, 10)
        );
        assert_eq!(logits(model.as_ref(), 2, info.min_input).size(), [2, 10]);
        check_backward(&vs10, model.as_ref(), 2, info.min_input);
    }
}
