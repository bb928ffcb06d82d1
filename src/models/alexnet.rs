//! torchvision `alexnet` ("One weird trick" variant), PyTorch default inits.
use tch::nn;
use tch::Tensor;

use super::Classifier;
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

pub(super) struct AlexNet {
    /// features.0, 3, 6, 8, 10
    convs: Vec<QConv2d>,
    /// classifier.1, 4, 6
    fcs: Vec<QLinear>,
}

impl AlexNet {
    pub(super) fn new(p: &nn::Path, in_channels: i64, num_classes: i64) -> Self {
        let f = p.sub("features");
        let conv = |idx: usize, c_in, c_out, k, stride, padding| {
            QConv2d::new(
                &f.sub(idx),
                c_in,
                c_out,
                k,
                ConvOpts {
                    stride,
                    padding,
                    ..Default::default()
                },
            )
        };
        let convs = vec![
            conv(0, in_channels, 64, 11, 4, 2),
            conv(3, 64, 192, 5, 1, 2),
            conv(6, 192, 384, 3, 1, 1),
            conv(8, 384, 256, 3, 1, 1),
            conv(10, 256, 256, 3, 1, 1),
        ];
        let c = p.sub("classifier");
        let fcs = vec![
            QLinear::new(&c.sub(1), 256 * 6 * 6, 4096, LinearOpts::default()),
            QLinear::new(&c.sub(4), 4096, 4096, LinearOpts::default()),
            QLinear::new(&c.sub(6), 4096, num_classes, LinearOpts::default()),
        ];
        AlexNet { convs, fcs }
    }
}

impl Classifier for AlexNet {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let pool = |t: Tensor| t.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        let c = &self.convs;
        let x = pool(c[0].forward(x, bits).relu_());
        let x = pool(c[1].forward(&x, bits).relu_());
        let x = c[2].forward(&x, bits).relu_();
        let x = c[3].forward(&x, bits).relu_();
        let x = pool(c[4].forward(&x, bits).relu_());
        let x = x.adaptive_avg_pool2d([6, 6]).flatten(1, -1);
        let x = self.fcs[0].forward(&x.dropout(0.5, train), bits).relu_();
        let x = self.fcs[1].forward(&x.dropout(0.5, train), bits).relu_();
        self.fcs[2].forward(&x, bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        self.convs.iter_mut().for_each(|l| f(l));
        self.fcs.iter_mut().for_each(|l| f(l));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn alexnet_matches_torchvision() {
        let (vs, mut model) = build_cpu(ModelKind::Alexnet, 1000);
        let full = param_count(&vs);
        assert_eq!(full, 61_100_840);
        check_layers(&vs, model.as_mut(), "features.0", "classifier.6");
        let info = ModelKind::Alexnet.info();
        assert_eq!(
            logits(model.as_ref(), 1, info.default_input).size(),
            [1, 1000]
        );
        drop((vs, model));

        let (vs, model) = build_cpu(ModelKind::Alexnet, 10);
        assert_eq!(
            full - param_count(&vs),
            classifier_params(4096, 1000) - classifier_params(4096, 10)
        );
        assert_eq!(logits(model.as_ref(), 2, info.min_input).size(), [2, 10]);
        check_backward(&vs, model.as_ref(), 2, info.min_input);
    }
}
