//! Quantization: quantizable layers, fake quantization, gradient quantization, BitOps.
//!
//! Every `Conv2d` and `Linear` of every model is a [`QConv2d`] or [`QLinear`], whose `forward`
//! takes the [`Bits`] in force; layers with [`LayerRole::FullPrecision`] ignore them.
//! - [`fake`]: forward quantizers (per-tensor activations with a running range, per-channel
//!   weights; straight-through estimator in backward), libtorch's fused kernels.
//! - [`grad`]: stochastic-rounding quantization of error signals and parameter gradients.
//! - [`cost`]: effective BitOps per step from the layer shapes.
//! - `shim`: the C++ custom autograd Functions (`csrc/grad_quant.cpp`) behind the error-signal
//!   quantization, which tch cannot express; and libtorch's thread-local autocast and CUDA math
//!   switches (`csrc/autocast.cpp`: [`AutocastGuard`], [`CudaMath`]), re-exported here for the
//!   engine. Quantized layers under autocast run their op in the autocast dtype and compute
//!   quantizer parameters in fp32.
pub mod cost;
pub mod fake;
pub mod grad;
pub mod layers;
mod shim;

pub use cost::CostModel;
pub use fake::{RangeMode, FULL_BITS};
pub use grad::{error_quant, quantize_grads_, stochastic_round, stochastic_round_};
pub use layers::{
    torch_default_bias_init, xavier_uniform, Bits, ConvOpts, LayerRole, LayerStats, LinearOpts,
    QConv2d, QLayer, QLinear, TORCH_DEFAULT_WEIGHT_INIT,
};
pub use shim::{autocast_state, cuda_math, pin_memory, set_cuda_math, AutocastGuard, CudaMath};
pub use shim::{current_cuda_device, set_current_device, OpCount};
