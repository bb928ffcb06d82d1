//! LeNet of the PyTorch CIFAR-10 tutorial, as used by DeepSpeed's CIFAR example.
use tch::nn;
use tch::Tensor;

use super::Classifier;
use crate::quant::{Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

/// conv(5) relu pool2, conv(5) relu pool2, fc 400→120→84→classes; PyTorch default inits.
pub(super) struct LeNet {
    conv1: QConv2d,
    conv2: QConv2d,
    fc1: QLinear,
    fc2: QLinear,
    fc3: QLinear,
}

impl LeNet {
    pub(super) fn new(p: &nn::Path, in_channels: i64, num_classes: i64) -> Self {
        LeNet {
            conv1: QConv2d::new(&p.sub("conv1"), in_channels, 6, 5, ConvOpts::default()),
            conv2: QConv2d::new(&p.sub("conv2"), 6, 16, 5, ConvOpts::default()),
            fc1: QLinear::new(&p.sub("fc1"), 16 * 5 * 5, 120, LinearOpts::default()),
            fc2: QLinear::new(&p.sub("fc2"), 120, 84, LinearOpts::default()),
            fc3: QLinear::new(&p.sub("fc3"), 84, num_classes, LinearOpts::default()),
        }
    }
}

impl Classifier for LeNet {
    fn forward(&self, x: &Tensor, _train: bool, bits: Bits) -> Tensor {
        // max-pool then ReLU: the same values and gradients as ReLU then max-pool (both are
        // monotone), with the ReLU on a quarter of the elements.
        let x = self
            .conv1
            .forward(x, bits)
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .relu_();
        let x = self
            .conv2
            .forward(&x, bits)
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .relu_();
        let x = x.flatten(1, -1);
        let x = self.fc1.forward(&x, bits).relu_();
        let x = self.fc2.forward(&x, bits).relu_();
        self.fc3.forward(&x, bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.conv1);
        f(&mut self.conv2);
        f(&mut self.fc1);
        f(&mut self.fc2);
        f(&mut self.fc3);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ModelKind;

    #[test]
    fn lenet_params_shape_and_layers() {
        let (vs, mut model) = build_cpu(ModelKind::Lenet, 10);
        assert_eq!(param_count(&vs), 62_006);
        assert_eq!(logits(model.as_ref(), 2, 32).size(), [2, 10]);
        check_layers(&vs, model.as_mut(), "conv1", "fc3");
        check_backward(&vs, model.as_ref(), 2, 32);
    }
}
