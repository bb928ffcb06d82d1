//! CIFAR ResNets of He et al. 2016 (6n+2 layers), as in Yerlan Idelbayev's widely used
//! `resnet.py`: option-A shortcuts (no parameters), `kaiming_normal_` init.
use tch::nn::init::DEFAULT_KAIMING_NORMAL;
use tch::nn::{self, BatchNorm, ModuleT};
use tch::Tensor;

use super::{batch_norm2d, Classifier};
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

fn conv3x3(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> QConv2d {
    let opts = ConvOpts {
        stride,
        padding: 1,
        bias: false,
        weight_init: DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    QConv2d::new(p, c_in, c_out, 3, opts)
}

struct BasicBlock {
    conv1: QConv2d,
    bn1: BatchNorm,
    conv2: QConv2d,
    bn2: BatchNorm,
    /// Option A: channels zero-padded by this many on each side after stride-2 subsampling.
    shortcut_pad: Option<i64>,
}

impl BasicBlock {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        BasicBlock {
            conv1: conv3x3(&p.sub("conv1"), c_in, c_out, stride),
            bn1: batch_norm2d(p.sub("bn1"), c_out),
            conv2: conv3x3(&p.sub("conv2"), c_out, c_out, 1),
            bn2: batch_norm2d(p.sub("bn2"), c_out),
            // Every shape change here doubles the channels (planes // 4 per side) and halves H, W.
            shortcut_pad: (stride != 1 || c_in != c_out).then_some(c_out / 4),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let out = self
            .bn1
            .forward_t(&self.conv1.forward(x, bits), train)
            .relu_();
        let mut out = self.bn2.forward_t(&self.conv2.forward(&out, bits), train);
        match self.shortcut_pad {
            Some(pad) => {
                out += x
                    .slice(2, None, None, 2)
                    .slice(3, None, None, 2)
                    .constant_pad_nd([0, 0, 0, 0, pad, pad])
            }
            None => out += x,
        }
        out.relu_()
    }
}

pub(super) struct CifarResNet {
    conv1: QConv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    linear: QLinear,
}

impl CifarResNet {
    /// ResNet-(6n+2): n blocks per stage.
    pub(super) fn new(p: &nn::Path, n: usize, in_channels: i64, num_classes: i64) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = 16;
        for (stage, c_out) in [16, 32, 64].into_iter().enumerate() {
            let lp = p.sub(format!("layer{}", stage + 1));
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(&lp.sub(i), c_in, c_out, stride));
                c_in = c_out;
            }
        }
        // Only the weight is Kaiming-initialised; the bias keeps PyTorch's default.
        let linear_opts = LinearOpts {
            weight_init: DEFAULT_KAIMING_NORMAL,
            ..Default::default()
        };
        CifarResNet {
            conv1: conv3x3(&p.sub("conv1"), in_channels, 16, 1),
            bn1: batch_norm2d(p.sub("bn1"), 16),
            blocks,
            linear: QLinear::new(&p.sub("linear"), 64, num_classes, linear_opts),
        }
    }
}

impl Classifier for CifarResNet {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let mut x = self
            .bn1
            .forward_t(&self.conv1.forward(x, bits), train)
            .relu_();
        for block in &self.blocks {
            x = block.forward(&x, train, bits);
        }
        // Global average pool (the reference's avg_pool2d over the full, square map).
        self.linear
            .forward(&x.adaptive_avg_pool2d([1, 1]).flatten(1, -1), bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.conv1);
        for b in &mut self.blocks {
            f(&mut b.conv1);
            f(&mut b.conv2);
        }
        f(&mut self.linear);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn cifar_resnets_param_counts_and_shapes() {
        for (kind, params, convs) in [
            (ModelKind::Resnet20, 269_722, 19),
            (ModelKind::Resnet56, 853_018, 55),
            (ModelKind::Resnet74, 1_144_666, 73),
        ] {
            let (vs, mut model) = build_cpu(kind, 10);
            assert_eq!(param_count(&vs), params, "{kind}");
            check_layers(&vs, model.as_mut(), "conv1", "linear");
            assert_eq!(layers(model.as_mut()).len(), convs + 1);
            if kind == ModelKind::Resnet20 {
                assert_eq!(
                    logits(model.as_ref(), 2, kind.info().default_input).size(),
                    [2, 10]
                );
                assert_eq!(
                    logits(model.as_ref(), 2, kind.info().min_input).size(),
                    [2, 10]
                );
                check_backward(&vs, model.as_ref(), 2, 32);
                // kaiming_normal_ (fan_in, relu gain)
                let std = std_of(&vs, "layer3.0.conv2.weight");
                assert!(
                    (std / (2.0f64 / (64.0 * 9.0)).sqrt() - 1.0).abs() < 0.1,
                    "{std}"
                );
                let (vs100, _) = build_cpu(kind, 100);
                assert_eq!(
                    param_count(&vs100) - params,
                    classifier_params(64, 100) - classifier_params(64, 10)
                );
            }
        }
    }
}
