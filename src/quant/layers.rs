//! `QConv2d` and `QLinear`: every convolution and fully connected layer of every model is built
//! through these, so precision schedules act on one code path.
//!
//! Forward passes are currently exact whatever `Bits` says; [`fake_quantize`] is the one place
//! where fake quantization will be inserted.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, Init};
use tch::Tensor;

/// Bit widths in force for this forward/backward pass. 32 = full precision (exact pass-through,
/// no extra ops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bits {
    /// Bits for weights and activations in the forward pass.
    pub fwd: u32,
    /// Bits for gradients in the backward pass.
    pub bwd: u32,
}

impl Bits {
    /// Full precision both ways.
    pub const FULL: Bits = Bits { fwd: 32, bwd: 32 };

    /// True when neither direction is quantized.
    pub fn is_full(&self) -> bool {
        self.fwd >= 32 && self.bwd >= 32
    }
}

/// Whether a layer follows the schedule or stays at full precision (CPT keeps the classifier full
/// precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRole {
    /// Runs at the bits passed to `forward`.
    Quantized,
    /// Ignores the bits passed to `forward` and always runs at [`Bits::FULL`].
    FullPrecision,
}

/// PyTorch's default weight init for `nn.Conv2d` and `nn.Linear`: `kaiming_uniform_(a=√5)`, i.e.
/// U(±1/√fan_in). The gain √(2/(1+a²)) = 1/√3.
pub const TORCH_DEFAULT_WEIGHT_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Uniform,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::ExplicitGain(0.577_350_269_189_625_8),
};

/// PyTorch's default bias init for a layer with `fan_in` inputs: U(±1/√fan_in).
pub fn torch_default_bias_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Glorot/Xavier uniform for a weight with the given fans: U(±√(6/(fan_in+fan_out))).
pub fn xavier_uniform(fan_in: i64, fan_out: i64) -> Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Per-layer counters for FLOPs accounting, updated by every forward call.
///
/// Shared through an `Arc` so that accounting code can keep handles after visiting the model.
#[derive(Debug, Default)]
pub struct LayerStats {
    macs_per_sample: AtomicU64,
    calls: AtomicU64,
}

impl LayerStats {
    /// Multiply-accumulates per sample in the most recent forward call (0 before the first).
    pub fn macs_per_sample(&self) -> u64 {
        self.macs_per_sample.load(Ordering::Relaxed)
    }

    /// Number of forward calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn record(&self, macs_per_sample: u64) {
        self.macs_per_sample
            .store(macs_per_sample, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// What models expose about each quantizable layer (see `Classifier::visit_layers`).
pub trait QLayer {
    /// VarStore path of the layer, e.g. `layer1.0.conv1`; its parameters are `<name>.weight` and
    /// `<name>.bias`.
    fn name(&self) -> &str;
    /// Current role.
    fn role(&self) -> LayerRole;
    /// Changes the role; takes effect on the next forward call.
    fn set_role(&mut self, role: LayerRole);
    /// FLOPs counters of this layer.
    fn stats(&self) -> &Arc<LayerStats>;
}

/// The single place where fake quantization plugs in: given the layer input and weight and the
/// bits in force, returns quantized copies of both, or `None` to run the exact full-precision op.
/// Gradient quantization at `bits.bwd` will wrap the layer output in the same place.
fn fake_quantize(_x: &Tensor, _w: &Tensor, _bits: Bits) -> Option<(Tensor, Tensor)> {
    // No quantizer yet: every pass is exact.
    None
}

fn path_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

fn bits_for(role: LayerRole, bits: Bits) -> Bits {
    match role {
        LayerRole::Quantized => bits,
        LayerRole::FullPrecision => Bits::FULL,
    }
}

/// Options for [`QConv2d::new`]; `Default` matches `torch.nn.Conv2d`'s defaults.
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    pub stride: i64,
    pub padding: i64,
    pub dilation: i64,
    pub groups: i64,
    pub bias: bool,
    pub weight_init: Init,
    /// `None`: PyTorch's default U(±1/√fan_in).
    pub bias_init: Option<Init>,
}

impl Default for ConvOpts {
    fn default() -> Self {
        ConvOpts {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
            weight_init: TORCH_DEFAULT_WEIGHT_INIT,
            bias_init: None,
        }
    }
}

/// A square-kernel 2-D convolution whose precision follows the schedule.
#[derive(Debug)]
pub struct QConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    padding: i64,
    dilation: i64,
    groups: i64,
    role: LayerRole,
    name: String,
    stats: Arc<LayerStats>,
}

impl QConv2d {
    /// Registers `weight` `[c_out, c_in/groups, k, k]` (and `bias` `[c_out]`) under `p`.
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, k: i64, opts: ConvOpts) -> Self {
        assert!(
            opts.groups > 0 && c_in % opts.groups == 0 && c_out % opts.groups == 0,
            "conv {}: channels {c_in}->{c_out} not divisible by groups {}",
            path_name(p),
            opts.groups
        );
        let weight = p.var(
            "weight",
            &[c_out, c_in / opts.groups, k, k],
            opts.weight_init,
        );
        let fan_in = c_in / opts.groups * k * k;
        let bias = opts.bias.then(|| {
            p.var(
                "bias",
                &[c_out],
                opts.bias_init
                    .unwrap_or_else(|| torch_default_bias_init(fan_in)),
            )
        });
        QConv2d {
            weight,
            bias,
            stride: opts.stride,
            padding: opts.padding,
            dilation: opts.dilation,
            groups: opts.groups,
            role: LayerRole::Quantized,
            name: path_name(p),
            stats: Arc::default(),
        }
    }

    pub fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let (s, p, d) = ([self.stride; 2], [self.padding; 2], [self.dilation; 2]);
        let y = match fake_quantize(x, &self.weight, bits_for(self.role, bits)) {
            Some((xq, wq)) => xq.conv2d(&wq, self.bias.as_ref(), s, p, d, self.groups),
            None => x.conv2d(&self.weight, self.bias.as_ref(), s, p, d, self.groups),
        };
        // Each output element costs one MAC per weight element of its filter.
        let size = y.size();
        let per_output = self.weight.numel() as i64 / size[1];
        let outputs_per_sample: i64 = size[1..].iter().product();
        self.stats.record((outputs_per_sample * per_output) as u64);
        y
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl QLayer for QConv2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn role(&self) -> LayerRole {
        self.role
    }
    fn set_role(&mut self, role: LayerRole) {
        self.role = role;
    }
    fn stats(&self) -> &Arc<LayerStats> {
        &self.stats
    }
}

/// Options for [`QLinear::new`]; `Default` matches `torch.nn.Linear`'s defaults.
#[derive(Debug, Clone, Copy)]
pub struct LinearOpts {
    pub bias: bool,
    pub weight_init: Init,
    /// `None`: PyTorch's default U(±1/√fan_in).
    pub bias_init: Option<Init>,
}

impl Default for LinearOpts {
    fn default() -> Self {
        LinearOpts {
            bias: true,
            weight_init: TORCH_DEFAULT_WEIGHT_INIT,
            bias_init: None,
        }
    }
}

/// A fully connected layer whose precision follows the schedule. Accepts `[.., in_features]`.
#[derive(Debug)]
pub struct QLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    role: LayerRole,
    name: String,
    stats: Arc<LayerStats>,
}

impl QLinear {
    /// Registers `weight` `[out_features, in_features]` (and `bias` `[out_features]`) under `p`.
    pub fn new(p: &nn::Path, in_features: i64, out_features: i64, opts: LinearOpts) -> Self {
        let weight = p.var("weight", &[out_features, in_features], opts.weight_init);
        let bias = opts.bias.then(|| {
            p.var(
                "bias",
                &[out_features],
                opts.bias_init
                    .unwrap_or_else(|| torch_default_bias_init(in_features)),
            )
        });
        QLinear {
            weight,
            bias,
            role: LayerRole::Quantized,
            name: path_name(p),
            stats: Arc::default(),
        }
    }

    pub fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let y = match fake_quantize(x, &self.weight, bits_for(self.role, bits)) {
            Some((xq, wq)) => xq.linear(&wq, self.bias.as_ref()),
            None => x.linear(&self.weight, self.bias.as_ref()),
        };
        let size = y.size();
        let in_features = self.weight.size()[1];
        let outputs_per_sample: i64 = size[1..].iter().product();
        self.stats.record((outputs_per_sample * in_features) as u64);
        y
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl QLayer for QLinear {
    fn name(&self) -> &str {
        &self.name
    }
    fn role(&self) -> LayerRole {
        self.role
    }
    fn set_role(&mut self, role: LayerRole) {
        self.role = role;
    }
    fn stats(&self) -> &Arc<LayerStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn conv_matches_plain_conv2d_and_registers_params() {
        let vs = VarStore::new(Device::Cpu);
        let conv = QConv2d::new(
            &vs.root().sub("features").sub("0"),
            3,
            8,
            3,
            ConvOpts {
                stride: 2,
                padding: 1,
                ..Default::default()
            },
        );
        let names: Vec<String> = {
            let mut v: Vec<String> = vs.variables().into_keys().collect();
            v.sort();
            v
        };
        assert_eq!(names, ["features.0.bias", "features.0.weight"]);
        assert_eq!(conv.name(), "features.0");
        let x = Tensor::randn([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| conv.forward(&x, Bits { fwd: 8, bwd: 8 }));
        let reference = x.conv2d(conv.weight(), conv.bias(), [2, 2], [1, 1], [1, 1], 1);
        assert_eq!(y.size(), [2, 8, 5, 5]);
        assert!(y.equal(&reference));
        assert_eq!(conv.stats().macs_per_sample(), 8 * 5 * 5 * 3 * 3 * 3);
        assert_eq!(conv.stats().calls(), 1);
    }

    #[test]
    fn conv_default_init_is_pytorch_default() {
        let vs = VarStore::new(Device::Cpu);
        let conv = QConv2d::new(&vs.root(), 16, 64, 3, ConvOpts::default());
        let bound = 1.0 / ((16 * 9) as f64).sqrt();
        for t in [conv.weight(), conv.bias().unwrap()] {
            let max = t.abs().max().double_value(&[]);
            assert!(max <= bound && max > 0.8 * bound, "max {max} bound {bound}");
        }
        let no_bias = QConv2d::new(
            &vs.root().sub("nb"),
            4,
            4,
            1,
            ConvOpts {
                bias: false,
                ..Default::default()
            },
        );
        assert!(no_bias.bias().is_none());
    }

    #[test]
    fn linear_handles_tokens_and_counts_macs() {
        let vs = VarStore::new(Device::Cpu);
        let mut fc = QLinear::new(&vs.root().sub("fc"), 6, 4, LinearOpts::default());
        let bound = 1.0 / 6f64.sqrt();
        assert!(fc.weight().abs().max().double_value(&[]) <= bound);
        assert_eq!(vs.trainable_variables().len(), 2);
        let x = Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu));
        fc.set_role(LayerRole::FullPrecision);
        let y = tch::no_grad(|| fc.forward(&x, Bits { fwd: 4, bwd: 8 }));
        assert_eq!(y.size(), [2, 5, 4]);
        assert!(y.equal(&x.linear(fc.weight(), fc.bias())));
        assert_eq!(fc.stats().macs_per_sample(), 5 * 4 * 6);
        assert_eq!(fc.role(), LayerRole::FullPrecision);
    }

    #[test]
    fn bits_full() {
        assert!(Bits::FULL.is_full());
        assert!(!Bits { fwd: 8, bwd: 32 }.is_full());
    }
}
