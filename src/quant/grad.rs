//! Gradient quantization at `q_bwd` with stochastic rounding.
//!
//! Two places, both per tensor over the tensor's own `[min, max]` with `L = 2^b - 1` levels:
//! `q = min(floor((g - min)/scale + u), L)·scale + min`, `u ~ U[0, 1)`, so `E[q] = g` and every
//! value lies on the grid `min + k·scale`.
//! - The error signal in backward: [`QConv2d`](super::QConv2d)/[`QLinear`](super::QLinear)
//!   do it themselves through the C++ shim; [`error_quant`] does it for any other tensor.
//! - Parameter gradients before the optimizer (and before any all-reduce): [`quantize_grads_`]
//!   on the flat gradient buffer, one range per parameter.
//!
//! Randomness comes from libtorch's default generator of the device (on the CPU the shim draws
//! one 64-bit seed from it per tensor and hashes element indices, so results do not depend on
//! the thread count): reproducible under `tch::manual_seed`. `bits >= 32` is an exact no-op.
use tch::{TchError, Tensor};

use super::fake::FULL_BITS;
use super::shim;

/// Stochastic-rounding quantization of `t` to `bits` bits (no autograd), as a new tensor;
/// `bits >= 32` returns `t` itself (a shallow copy). Non-finite input gives non-finite output.
pub fn stochastic_round(t: &Tensor, bits: u32) -> Tensor {
    check_bits(bits);
    if bits >= FULL_BITS {
        return t.shallow_clone();
    }
    shim::sr_quantize(t, bits, false).unwrap_or_else(|e| panic!("stochastic rounding: {e}"))
}

/// In-place [`stochastic_round`].
pub fn stochastic_round_(t: &mut Tensor, bits: u32) {
    check_bits(bits);
    if bits >= FULL_BITS {
        return;
    }
    shim::sr_quantize_(t, bits).unwrap_or_else(|e| panic!("stochastic rounding: {e}"))
}

/// Quantizes each parameter's gradient, the slice `[offset, offset + len)` of the 1-D
/// `flat_grads` for each `(offset, len)` of `segments`, in place at `bits` with stochastic
/// rounding, each slice over its own range. Exact no-op at `bits >= 32`. Padding outside the
/// segments is left alone. Errors: a segment outside the buffer, or `flat_grads` not 1-D.
pub fn quantize_grads_(
    flat_grads: &mut Tensor,
    segments: &[(i64, i64)],
    bits: u32,
) -> Result<(), TchError> {
    check_bits(bits);
    if bits >= FULL_BITS || segments.is_empty() {
        return Ok(());
    }
    if flat_grads.dim() != 1 {
        return Err(TchError::Shape(format!(
            "quantize_grads_: flat gradient buffer must be 1-D, got shape {:?}",
            flat_grads.size()
        )));
    }
    let n = flat_grads.size()[0];
    if let Some(&(o, l)) = segments.iter().find(|&&(o, l)| o < 0 || l < 0 || o + l > n) {
        return Err(TchError::Shape(format!(
            "quantize_grads_: segment (offset {o}, len {l}) outside the {n}-element buffer"
        )));
    }
    shim::sr_quantize_segments_(flat_grads, segments, bits)
}

/// Identity in forward (a copy: it may be modified in place); in backward the gradient flowing
/// into `x` is quantized to `bits` first. `bits >= 32` returns `x` itself, no op at all.
pub fn error_quant(x: &Tensor, bits: u32) -> Tensor {
    check_bits(bits);
    if bits >= FULL_BITS {
        return x.shallow_clone();
    }
    shim::grad_quant(x, bits).unwrap_or_else(|e| panic!("error quantization: {e}"))
}

fn check_bits(bits: u32) {
    assert!(
        bits >= 1,
        "gradient quantization needs at least 1 bit, got 0"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn grid_check(q: &Tensor, x: &Tensor, bits: u32) {
        let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
        let scale = (hi - lo) / ((1u64 << bits) - 1) as f64;
        let k: Vec<f64> = Vec::try_from((q.to_kind(Kind::Double) - lo) / scale).unwrap();
        for v in k {
            assert!(
                (v - v.round()).abs() < 1e-3 && v > -1e-3 && v < ((1u64 << bits) - 1) as f64 + 1e-3,
                "{v} off the {bits}-bit grid"
            );
        }
        // Never more than one step away from the input.
        let err = (q - x).abs().max().double_value(&[]);
        assert!(err <= scale * (1.0 + 1e-4), "{err} > {scale}");
    }

    #[test]
    fn values_lie_on_the_grid() {
        for bits in [1, 2, 4, 8] {
            let x = Tensor::randn([3000], (Kind::Float, Device::Cpu));
            grid_check(&stochastic_round(&x, bits), &x, bits);
            // The ATen-op path (any dtype/device): doubles.
            let xd = x.to_kind(Kind::Double);
            grid_check(&stochastic_round(&xd, bits), &xd, bits);
        }
    }

    #[test]
    fn unbiased_in_expectation() {
        // x on a coarse 2-bit grid: the mean of many draws converges to x, while rounding to
        // nearest would be off by up to half a step (0.5 here) for most values.
        let x = Tensor::linspace(0.0, 3.0, 101, (Kind::Float, Device::Cpu));
        for kind in [Kind::Float, Kind::Double] {
            let x = x.to_kind(kind);
            let draws = 4000;
            let sum = (0..draws).fold(Tensor::zeros_like(&x), |acc, _| {
                acc + stochastic_round(&x, 2)
            });
            let mean = sum / draws as f64;
            // std of one draw ≤ 0.5 → std of the mean ≤ 0.5/√4000 ≈ 0.008; allow 5σ.
            let err = (&mean - &x).abs().max().double_value(&[]);
            assert!(err < 0.04, "{kind:?}: bias {err}");
        }
    }

    /// Half inputs round in fp32. In fp16 the old scale floor (1e-30) was 0 and a constant
    /// gradient became NaN; in bf16 `t + u` rounded to 8 bits before the floor, a bias of
    /// ~0.004 steps on average.
    #[test]
    fn half_inputs_are_rounded_in_fp32() {
        for kind in [Kind::Half, Kind::BFloat16] {
            let c = Tensor::full([64], 0.25, (kind, Device::Cpu));
            let q = stochastic_round(&c, 4);
            assert_eq!(q.kind(), kind);
            assert!(q.equal(&c), "{kind:?}: a constant is its own quantization");
            let mut inplace = c.copy();
            stochastic_round_(&mut inplace, 4);
            assert!(inplace.equal(&c), "{kind:?} in place");
        }
        // x on a 2-bit grid over [0, 3] (grid points exact in bf16), 16000 draws of each value
        // in one tensor (same range): the mean error over the values is ~0 (σ ≈ 0.0004).
        let x = Tensor::linspace(0.0, 3.0, 101, (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let draws = 16000;
        let q = stochastic_round(&x.repeat([draws]), 2);
        assert_eq!(q.kind(), Kind::BFloat16);
        let mean = q
            .to_kind(Kind::Double)
            .view([draws, 101])
            .mean_dim(0, false, Kind::Double);
        let err = mean - x.to_kind(Kind::Double);
        let bias = err.mean(Kind::Double).double_value(&[]);
        assert!(bias.abs() < 0.0015, "bf16 rounding biased by {bias}");
        let worst = err.abs().max().double_value(&[]);
        assert!(worst < 0.03, "{worst}");
    }

    #[test]
    fn draws_differ_and_follow_the_seed() {
        let x = Tensor::randn([1000], (Kind::Float, Device::Cpu));
        tch::manual_seed(7);
        let a = stochastic_round(&x, 3);
        let b = stochastic_round(&x, 3);
        assert!(!a.equal(&b));
        tch::manual_seed(7);
        assert!(stochastic_round(&x, 3).equal(&a));
    }

    #[test]
    fn full_bits_and_non_finite() {
        let x = Tensor::randn([100], (Kind::Float, Device::Cpu));
        assert!(stochastic_round(&x, 32).equal(&x));
        let mut y = x.copy();
        stochastic_round_(&mut y, 32);
        assert!(y.equal(&x));
        // An overflowed gradient stays non-finite (loss scaling must still see it).
        let z = x.copy();
        let _ = z.get(3).fill_(f64::INFINITY);
        assert!(!bool::try_from(stochastic_round(&z, 8).isfinite().all()).unwrap());
        // A constant tensor is its own quantization.
        let c = Tensor::full([10], 0.25, (Kind::Float, Device::Cpu));
        assert!(stochastic_round(&c, 4).equal(&c));
    }

    #[test]
    fn flat_segments_are_quantized_each_over_its_own_range() {
        // Two "parameters" of very different magnitude plus padding.
        let a = Tensor::randn([500], (Kind::Float, Device::Cpu)) * 1e-3;
        let b = Tensor::randn([300], (Kind::Float, Device::Cpu)) * 10.0;
        let pad = Tensor::randn([7], (Kind::Float, Device::Cpu));
        let orig = Tensor::cat(&[&a, &b, &pad], 0);
        let mut flat = orig.copy();
        let segments = [(0, 500), (500, 300)];
        quantize_grads_(&mut flat, &segments, 4).unwrap();
        grid_check(&flat.narrow(0, 0, 500), &a, 4);
        grid_check(&flat.narrow(0, 500, 300), &b, 4);
        assert!(flat.narrow(0, 800, 7).equal(&pad));
        // 32 bits: untouched.
        let mut same = orig.copy();
        quantize_grads_(&mut same, &segments, 32).unwrap();
        assert!(same.equal(&orig));
        // Errors name the segment.
        let err = quantize_grads_(&mut flat, &[(800, 8)], 4).unwrap_err();
        assert!(err.to_string().contains("offset 800"), "{err}");
    }

    #[test]
    fn error_quant_quantizes_the_incoming_gradient() {
        let x = Tensor::randn([64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::randn([64], (Kind::Float, Device::Cpu));
        let mut y = error_quant(&x, 3);
        assert!(y.detach().equal(&x.detach()));
        // In-place ops on the output are allowed (it is a copy, not a view of x).
        let _ = y.relu_();
        let y2 = error_quant(&x, 3);
        (&y2 * &g).sum(Kind::Float).backward();
        grid_check(&x.grad(), &g, 3);
        assert!(!x.grad().equal(&g));
    }
}
