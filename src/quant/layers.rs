//! `QConv2d` and `QLinear`: every convolution and fully connected layer of every model is built
//! through these, so precision schedules act on one code path.
//!
//! A `Quantized` layer at `bits.fwd < 32` fake-quantizes its input per tensor (batch range in
//! training, running range in evaluation; see [`ActRange`]) and its weight per output channel
//! before the op; at `bits.bwd < 32`, while autograd records, the op runs as the C++ shim's
//! custom autograd Function whose backward quantizes the gradient w.r.t. the layer output with
//! stochastic rounding before the op's own backward (see `csrc/grad_quant.cpp`). At
//! [`Bits::FULL`] (or with [`LayerRole::FullPrecision`]) the layer runs the plain op, nothing else.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, Init};
use tch::Tensor;

use super::fake::{fake_quant_per_channel, ActRange, RangeMode, FULL_BITS, RANGE_MOMENTUM};
use super::shim;

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
    /// How forward passes tell training from evaluation for the activation range (default
    /// [`RangeMode::Auto`]: training exactly when autograd records).
    fn set_range_mode(&mut self, mode: RangeMode);
    /// Running `[min, max]` of the layer input, None before the first quantized training pass.
    /// Reads the device (a sync): for tests and diagnostics.
    fn running_range(&self) -> Option<(f64, f64)>;
}

/// Quantization state shared by [`QConv2d`] and [`QLinear`].
#[derive(Debug)]
struct LayerQuant {
    act: ActRange,
    mode: RangeMode,
}

impl LayerQuant {
    fn new(p: &nn::Path) -> LayerQuant {
        LayerQuant {
            act: ActRange::new(p, RANGE_MOMENTUM),
            mode: RangeMode::Auto,
        }
    }

    /// Given the layer input and weight and the bits in force, returns quantized copies of
    /// both, or `None` to run the op on the originals.
    fn fake_quantize(&self, x: &Tensor, w: &Tensor, bits: Bits) -> Option<(Tensor, Tensor)> {
        if bits.fwd >= FULL_BITS {
            return None;
        }
        let xq = self.act.quantize(x, bits.fwd, self.mode.is_training());
        Some((xq, fake_quant_per_channel(w, bits.fwd)))
    }

    /// Whether the op must quantize the error signal: backward below 32 bits and autograd
    /// recording (otherwise there is no backward to change).
    fn quantize_error(bits: Bits) -> bool {
        bits.bwd < FULL_BITS && shim::grad_enabled()
    }
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
    quant: LayerQuant,
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
            quant: LayerQuant::new(p),
        }
    }

    pub fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let (s, p, d) = ([self.stride; 2], [self.padding; 2], [self.dilation; 2]);
        let bits = bits_for(self.role, bits);
        let y = if bits.is_full() {
            x.conv2d(&self.weight, self.bias.as_ref(), s, p, d, self.groups)
        } else {
            let q = self.quant.fake_quantize(x, &self.weight, bits);
            let (x, w) = q.as_ref().map_or((x, &self.weight), |(x, w)| (x, w));
            if LayerQuant::quantize_error(bits) {
                let b = self.bias.as_ref();
                shim::qconv2d(x, w, b, s, p, d, self.groups, bits.bwd)
                    .unwrap_or_else(|e| panic!("conv {}: {e}", self.name))
            } else {
                x.conv2d(w, self.bias.as_ref(), s, p, d, self.groups)
            }
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
    fn set_range_mode(&mut self, mode: RangeMode) {
        self.quant.mode = mode;
    }
    fn running_range(&self) -> Option<(f64, f64)> {
        self.quant.act.get()
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
    quant: LayerQuant,
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
            quant: LayerQuant::new(p),
        }
    }

    pub fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let bits = bits_for(self.role, bits);
        let y = if bits.is_full() {
            x.linear(&self.weight, self.bias.as_ref())
        } else {
            let q = self.quant.fake_quantize(x, &self.weight, bits);
            let (x, w) = q.as_ref().map_or((x, &self.weight), |(x, w)| (x, w));
            if LayerQuant::quantize_error(bits) {
                shim::qlinear(x, w, self.bias.as_ref(), bits.bwd)
                    .unwrap_or_else(|e| panic!("linear {}: {e}", self.name))
            } else {
                x.linear(w, self.bias.as_ref())
            }
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
    fn set_range_mode(&mut self, mode: RangeMode) {
        self.quant.mode = mode;
    }
    fn running_range(&self) -> Option<(f64, f64)> {
        self.quant.act.get()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::fake_quant_per_tensor;
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
        assert_eq!(
            names,
            [
                "features.0.act_range",
                "features.0.bias",
                "features.0.weight"
            ]
        );
        assert_eq!(vs.trainable_variables().len(), 2);
        assert_eq!(conv.name(), "features.0");
        let x = Tensor::randn([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| conv.forward(&x, Bits::FULL));
        let reference = x.conv2d(conv.weight(), conv.bias(), [2, 2], [1, 1], [1, 1], 1);
        assert_eq!(y.size(), [2, 8, 5, 5]);
        assert!(y.equal(&reference));
        assert_eq!(conv.stats().macs_per_sample(), 8 * 5 * 5 * 3 * 3 * 3);
        assert_eq!(conv.stats().calls(), 1);
        // 8 bits (evaluation, no running range yet): input per tensor, weight per channel.
        let y = tch::no_grad(|| conv.forward(&x, Bits { fwd: 8, bwd: 8 }));
        let xq = fake_quant_per_tensor(&x, 8);
        let wq = fake_quant_per_channel(conv.weight(), 8);
        assert!(y.equal(&xq.conv2d(&wq, conv.bias(), [2, 2], [1, 1], [1, 1], 1)));
        assert!(!y.equal(&reference));
        assert_eq!(conv.stats().calls(), 2);
    }

    /// The forward of `f` (a layer pass) and `g` (the reference) agree exactly, and so do all
    /// gradients up to float rounding: the shim's backward and autograd's may reach different
    /// convolution kernels (libtorch picks by the intra-op thread count, which other tests in
    /// this process change), so their sums need not be bit-identical.
    fn same_forward_backward(
        exact_grads: bool,
        params: &[&Tensor],
        x: &Tensor,
        f: impl Fn(&Tensor) -> Tensor,
        g: impl Fn(&Tensor) -> Tensor,
    ) {
        let run = |h: &dyn Fn(&Tensor) -> Tensor| {
            let x = x.detach().set_requires_grad(true);
            for p in params {
                p.grad().defined().then(|| p.grad().zero_());
            }
            let y = h(&x);
            let up = Tensor::ones_like(&y).cumsum(-1, Kind::Float);
            (&y * up).sum(Kind::Float).backward();
            let mut out = vec![y.detach(), x.grad()];
            out.extend(params.iter().map(|p| p.grad().copy()));
            out
        };
        let (a, b) = (run(&f), run(&g));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let same = if i == 0 || exact_grads {
                a.equal(b)
            } else {
                a.allclose(b, 1e-5, 1e-6, false)
            };
            assert!(same, "tensor {i} differs");
        }
    }

    #[test]
    fn full_bits_and_full_precision_role_are_bit_identical_with_grads() {
        let vs = VarStore::new(Device::Cpu);
        let opts = ConvOpts {
            stride: 2,
            padding: 1,
            groups: 2,
            ..Default::default()
        };
        let mut conv = QConv2d::new(&vs.root().sub("c"), 4, 6, 3, opts);
        let mut fc = QLinear::new(&vs.root().sub("f"), 10, 5, LinearOpts::default());
        let x = Tensor::randn([3, 4, 8, 8], (Kind::Float, Device::Cpu));
        let t = Tensor::randn([3, 7, 10], (Kind::Float, Device::Cpu));
        let (w, b) = (
            conv.weight().shallow_clone(),
            conv.bias().unwrap().shallow_clone(),
        );
        let plain_conv = |x: &Tensor| x.conv2d(&w, Some(&b), [2, 2], [1, 1], [1, 1], 2);
        let (fw, fb) = (
            fc.weight().shallow_clone(),
            fc.bias().unwrap().shallow_clone(),
        );
        let plain_fc = |x: &Tensor| x.linear(&fw, Some(&fb));
        same_forward_backward(
            true,
            &[&w, &b],
            &x,
            |x| conv.forward(x, Bits::FULL),
            plain_conv,
        );
        same_forward_backward(
            true,
            &[&fw, &fb],
            &t,
            |x| fc.forward(x, Bits::FULL),
            plain_fc,
        );
        conv.set_role(LayerRole::FullPrecision);
        fc.set_role(LayerRole::FullPrecision);
        let low = Bits { fwd: 3, bwd: 4 };
        same_forward_backward(true, &[&w, &b], &x, |x| conv.forward(x, low), plain_conv);
        same_forward_backward(true, &[&fw, &fb], &t, |x| fc.forward(x, low), plain_fc);
        assert_eq!(
            conv.running_range(),
            None,
            "full precision records no range"
        );
    }

    #[test]
    fn quantized_forward_with_exact_backward_is_the_ste_graph() {
        // fwd 4 bits, bwd 32: the op is plain autograd over the fake-quantized tensors.
        let vs = VarStore::new(Device::Cpu);
        let conv = QConv2d::new(&vs.root(), 3, 4, 3, ConvOpts::default());
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu));
        let w = conv.weight().shallow_clone();
        let b = conv.bias().unwrap().shallow_clone();
        let bits = Bits { fwd: 4, bwd: 32 };
        same_forward_backward(
            false,
            &[&w, &b],
            &x,
            |x| conv.forward(x, bits),
            |x| {
                let xq = fake_quant_per_tensor(x, 4);
                let wq = fake_quant_per_channel(&w, 4);
                xq.conv2d(&wq, Some(&b), [1, 1], [0, 0], [1, 1], 1)
            },
        );
        // The training passes recorded the batch range.
        let (lo, hi) = conv.running_range().unwrap();
        let (xlo, xhi) = (x.min().double_value(&[]), x.max().double_value(&[]));
        assert!((lo - xlo).abs() < 1e-6 && (hi - xhi).abs() < 1e-6);
    }

    #[test]
    fn error_signal_is_quantized_in_backward() {
        let vs = VarStore::new(Device::Cpu);
        let fc = QLinear::new(&vs.root(), 6, 50, LinearOpts::default());
        let x = Tensor::randn([1, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::randn([1, 50], (Kind::Float, Device::Cpu));
        let y = fc.forward(&x, Bits { fwd: 32, bwd: 3 });
        (&y * &g).sum(Kind::Float).backward();
        // With one sample the bias gradient is the quantized error itself: on g's 3-bit grid,
        // within a step of g, and not g.
        let gq = fc.bias().unwrap().grad().unsqueeze(0);
        let (lo, hi) = (g.min().double_value(&[]), g.max().double_value(&[]));
        let step = (hi - lo) / 7.0;
        let k: Vec<f64> =
            Vec::try_from(((gq.to_kind(Kind::Double) - lo) / step).flatten(0, -1)).unwrap();
        assert!(k.iter().all(|v| (v - v.round()).abs() < 1e-3), "{k:?}");
        assert!((&gq - &g).abs().max().double_value(&[]) <= step * 1.0001);
        assert!(!gq.equal(&g));
        // Input and weight gradients are computed from that same quantized error.
        let expect_x = gq.matmul(fc.weight());
        assert!(x.grad().allclose(&expect_x, 1e-6, 1e-6, false));
        let expect_w = gq.tr().matmul(&x.detach());
        assert!(fc.weight().grad().allclose(&expect_w, 1e-6, 1e-6, false));
    }

    #[test]
    fn conv_backward_through_the_shim_matches_autograd() {
        // 31-bit error quantization is exact to float precision: the shim's conv backward
        // (strides, padding, dilation, groups, no bias) must give autograd's gradients.
        let vs = VarStore::new(Device::Cpu);
        let opts = ConvOpts {
            stride: 2,
            padding: 2,
            dilation: 2,
            groups: 2,
            bias: false,
            ..Default::default()
        };
        let conv = QConv2d::new(&vs.root(), 4, 6, 3, opts);
        let x = Tensor::randn([2, 4, 9, 9], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = conv.forward(&x, Bits { fwd: 32, bwd: 31 });
        let up = Tensor::randn_like(&y);
        (&y * &up).sum(Kind::Float).backward();
        let (gx, gw) = (x.grad().copy(), conv.weight().grad().copy());
        let x2 = x.detach().set_requires_grad(true);
        let w2 = conv.weight().detach().set_requires_grad(true);
        let y2 = x2.conv2d::<Tensor>(&w2, None, [2, 2], [2, 2], [2, 2], 2);
        assert!(y.equal(&y2));
        (&y2 * &up).sum(Kind::Float).backward();
        assert!(gx.allclose(&x2.grad(), 1e-4, 1e-5, false));
        assert!(gw.allclose(&w2.grad(), 1e-4, 1e-5, false));
    }

    #[test]
    fn in_place_ops_on_the_output_are_allowed() {
        let vs = VarStore::new(Device::Cpu);
        let conv = QConv2d::new(&vs.root(), 3, 4, 3, ConvOpts::default());
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu));
        let y = conv.forward(&x, Bits { fwd: 4, bwd: 8 }).relu_();
        y.sum(Kind::Float).backward();
        assert!(conv.weight().grad().defined());
    }

    #[test]
    fn range_mode_overrides_grad_mode() {
        let vs = VarStore::new(Device::Cpu);
        let mut fc = QLinear::new(&vs.root(), 4, 3, LinearOpts::default());
        let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let bits = Bits { fwd: 4, bwd: 8 };
        // No grad, Auto: evaluation, the range stays unset.
        let _ = tch::no_grad(|| fc.forward(&x, bits));
        assert_eq!(fc.running_range(), None);
        fc.set_range_mode(RangeMode::Train);
        let _ = tch::no_grad(|| fc.forward(&x, bits));
        assert!(fc.running_range().is_some());
        // Eval under autograd: the running range, no update.
        fc.set_range_mode(RangeMode::Eval);
        let before = fc.running_range();
        let _ = fc.forward(&(x * 3.0), bits);
        assert_eq!(fc.running_range(), before);
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

    /// ATen operator calls (this thread's, `OpCount`) of one training step of a small
    /// conv-conv-linear model: forward, loss, backward.
    fn step_ops(bits: Bits) -> u64 {
        // No draws from libtorch's process-wide generator (other tests seed and draw from it
        // concurrently): deterministic weights and data.
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let wave = |shape: &[i64], f: f64| {
            let n: i64 = shape.iter().product();
            (Tensor::arange(n, (Kind::Float, Device::Cpu)) * f)
                .sin()
                .view(shape)
        };
        let conv = |p: &str, c_in, c_out| {
            let l = QConv2d::new(&(&root / p), c_in, c_out, 3, ConvOpts::default());
            tch::no_grad(|| {
                let mut w = l.weight().shallow_clone();
                w.copy_(&(wave(&w.size(), 0.37) * 0.2));
                let _ = l.bias().unwrap().shallow_clone().fill_(0.01);
            });
            l
        };
        let c1 = conv("c1", 3, 8);
        let c2 = conv("c2", 8, 8);
        let fc = QLinear::new(&(&root / "fc"), 8 * 4 * 4, 10, LinearOpts::default());
        tch::no_grad(|| {
            let mut w = fc.weight().shallow_clone();
            w.copy_(&(wave(&w.size(), 0.11) * 0.1));
        });
        let x = wave(&[4, 3, 8, 8], 0.7);
        let y = Tensor::from_slice(&[1i64, 2, 3, 4]);
        let step = || {
            let h = c1.forward(&x, bits).relu();
            let h = c2.forward(&h, bits).relu().flatten(1, -1);
            let loss = fc.forward(&h, bits).cross_entropy_for_logits(&y);
            loss.backward();
        };
        // The first step also initialises the running ranges: count a later one.
        step();
        super::super::OpCount::enable(true).unwrap();
        let before = super::super::OpCount::thread();
        step();
        super::super::OpCount::thread() - before
    }

    /// The op counter counts, and a quantized layer's training step (input range update and
    /// quantizer, weight quantizer, error-signal quantizer) costs few operator calls more than
    /// the same step at full precision: below the count recorded before the fused CPU
    /// quantizers (66 more per layer: `aminmax` alone dispatches eight), and within the
    /// budget they keep now (7.3 measured).
    #[test]
    fn a_quantized_step_adds_few_ops_per_layer() {
        const BEFORE_PER_LAYER: u64 = 66;
        const MAX_PER_LAYER: u64 = 12;
        let fp32 = step_ops(Bits::FULL);
        let cpt = step_ops(Bits { fwd: 4, bwd: 8 });
        assert!(fp32 > 20, "the counter counts: {fp32} ops for a whole step");
        let layers = 3;
        let per_layer = cpt.saturating_sub(fp32) as f64 / layers as f64;
        eprintln!("ops per step: fp32 {fp32}, CPT {cpt}: {per_layer:.1} more per quantized layer");
        assert!(
            cpt < fp32 + BEFORE_PER_LAYER * layers,
            "CPT step {cpt} ops vs fp32 {fp32}: not below the count before the fused quantizers"
        );
        assert!(
            cpt <= fp32 + MAX_PER_LAYER * layers,
            "CPT step {cpt} ops vs fp32 {fp32}: {per_layer:.1} more per layer, at most {MAX_PER_LAYER} expected"
        );
    }

    #[test]
    fn bits_full() {
        assert!(Bits::FULL.is_full());
        assert!(!Bits { fwd: 8, bwd: 32 }.is_full());
    }
}
