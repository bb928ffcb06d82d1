//! torchvision ResNet with BasicBlocks (`resnet18` = [2, 2, 2, 2]).
use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, BatchNorm, Init, ModuleT};
use tch::Tensor;

use super::{batch_norm2d, Classifier};
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

/// torchvision's ResNet init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")` for convs.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

fn conv(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> QConv2d {
    let opts = ConvOpts {
        stride,
        padding: k / 2,
        bias: false,
        weight_init: CONV_INIT,
        ..Default::default()
    };
    QConv2d::new(p, c_in, c_out, k, opts)
}

struct BasicBlock {
    conv1: QConv2d,
    bn1: BatchNorm,
    conv2: QConv2d,
    bn2: BatchNorm,
    /// 1×1 conv + BN when the shape changes.
    downsample: Option<(QConv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p.sub("downsample");
            (
                conv(&d.sub(0), c_in, c_out, 1, stride),
                batch_norm2d(d.sub(1), c_out),
            )
        });
        BasicBlock {
            conv1: conv(&p.sub("conv1"), c_in, c_out, 3, stride),
            bn1: batch_norm2d(p.sub("bn1"), c_out),
            conv2: conv(&p.sub("conv2"), c_out, c_out, 3, 1),
            bn2: batch_norm2d(p.sub("bn2"), c_out),
            downsample,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let out = self
            .bn1
            .forward_t(&self.conv1.forward(x, bits), train)
            .relu_();
        let mut out = self.bn2.forward_t(&self.conv2.forward(&out, bits), train);
        match &self.downsample {
            Some((conv, bn)) => out += bn.forward_t(&conv.forward(x, bits), train),
            None => out += x,
        }
        out.relu_()
    }
}

pub(super) struct ResNet {
    conv1: QConv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    fc: QLinear,
}

impl ResNet {
    pub(super) fn new(
        p: &nn::Path,
        layers: [usize; 4],
        in_channels: i64,
        num_classes: i64,
    ) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, &n) in layers.iter().enumerate() {
            let c_out = 64 << stage;
            let lp = p.sub(format!("layer{}", stage + 1));
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(&lp.sub(i), c_in, c_out, stride));
                c_in = c_out;
            }
        }
        ResNet {
            conv1: conv(&p.sub("conv1"), in_channels, 64, 7, 2),
            bn1: batch_norm2d(p.sub("bn1"), 64),
            blocks,
            fc: QLinear::new(&p.sub("fc"), c_in, num_classes, LinearOpts::default()),
        }
    }
}

impl Classifier for ResNet {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let mut x = self
            .bn1
            .forward_t(&self.conv1.forward(x, bits), train)
            .relu_()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            x = block.forward(&x, train, bits);
        }
        self.fc
            .forward(&x.adaptive_avg_pool2d([1, 1]).flatten(1, -1), bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.conv1);
        for b in &mut self.blocks {
            f(&mut b.conv1);
            f(&mut b.conv2);
            if let Some((conv, _)) = &mut b.downsample {
                f(conv);
            }
        }
        f(&mut self.fc);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn resnet18_matches_torchvision() {
        let (vs, mut model) = build_cpu(ModelKind::Resnet18, 1000);
        let full = param_count(&vs);
        assert_eq!(full, 11_689_512);
        check_layers(&vs, model.as_mut(), "conv1", "fc");
        assert!(vs
            .variables()
            .contains_key("layer2.0.downsample.1.running_mean"));
        // kaiming_normal_(fan_out, relu)
        assert!((std_of(&vs, "conv1.weight") / (2.0f64 / (64.0 * 49.0)).sqrt() - 1.0).abs() < 0.1);
        let info = ModelKind::Resnet18.info();
        assert_eq!(
            logits(model.as_ref(), 1, info.default_input).size(),
            [1, 1000]
        );

        let (vs10, model) = build_cpu(ModelKind::Resnet18, 10);
        assert_eq!(
            full - param_count(&vs10),
            classifier_params(512, 1000) - classifier_params(512, 10)
        );
        assert_eq!(logits(model.as_ref(), 2, info.min_input).size(), [2, 10]);
        assert_eq!(logits(model.as_ref(), 2, 32).size(), [2, 10]);
        check_backward(&vs10, model.as_ref(), 2, 32);
    }
}
