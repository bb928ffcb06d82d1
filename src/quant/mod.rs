//! Quantizable layers.
//!
//! Every `Conv2d` and `Linear` of every model is a [`QConv2d`] or [`QLinear`], whose `forward`
//! takes the [`Bits`] in force; layers with [`LayerRole::FullPrecision`] ignore them.
pub mod layers;

pub use layers::{
    torch_default_bias_init, xavier_uniform, Bits, ConvOpts, LayerRole, LayerStats, LinearOpts,
    QConv2d, QLayer, QLinear, TORCH_DEFAULT_WEIGHT_INIT,
};
