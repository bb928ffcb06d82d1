//! Safe wrappers over `csrc/grad_quant.cpp`, the C++ shim that quantizes the error signal in
//! backward (tch 0.24 has no custom autograd Function and no hooks; see the file's header).
//!
//! Tensors cross the boundary as tch's raw `C_tensor*` (an `at::Tensor*`); results are allocated
//! by the shim with `new at::Tensor`, like tch's own C API, and owned by the returned
//! [`Tensor`]. Errors (libtorch exceptions) come back as messages.
use std::ffi::{c_char, c_int, CStr};

use tch::{TchError, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn cpt_free_error(err: *mut c_char);
    fn cpt_qconv2d(
        x: *const C_tensor,
        w: *const C_tensor,
        bias: *const C_tensor,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        bwd_bits: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_qlinear(
        x: *const C_tensor,
        w: *const C_tensor,
        bias: *const C_tensor,
        bwd_bits: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_grad_quant(x: *const C_tensor, bits: i64, out: *mut *mut C_tensor) -> *mut c_char;
    fn cpt_fake_quant(
        x: *const C_tensor,
        lo: *const C_tensor,
        hi: *const C_tensor,
        bits: i64,
        generic: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_fake_quant_channels(
        w: *const C_tensor,
        bits: i64,
        generic: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_sr_quantize(
        t: *const C_tensor,
        bits: i64,
        inplace: c_int,
        generic: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_sr_quantize_segments(
        flat: *const C_tensor,
        offsets: *const i64,
        lens: *const i64,
        n: i64,
        bits: i64,
    ) -> *mut c_char;
    fn cpt_grad_enabled() -> c_int;
}

/// Turns the shim's error pointer into a `Result`, freeing the message.
fn check(err: *mut c_char) -> Result<(), TchError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string from `strdup`, freed exactly once here.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { cpt_free_error(err) };
    Err(TchError::Torch(msg))
}

/// Wraps a tensor the shim allocated.
fn owned(ptr: *mut C_tensor) -> Tensor {
    assert!(!ptr.is_null(), "grad_quant shim returned no tensor");
    // SAFETY: the shim returned a fresh `new at::Tensor`, which the Rust tensor now owns and
    // deletes on drop (tch's `at_free`).
    unsafe { Tensor::from_ptr(ptr) }
}

fn opt_ptr(t: Option<&Tensor>) -> *const C_tensor {
    t.map_or(std::ptr::null(), Tensor::as_ptr)
}

/// `x.conv2d(w, bias, stride, padding, dilation, groups)` whose backward quantizes the gradient
/// w.r.t. its output to `bwd_bits` (stochastic rounding, per-tensor range) before computing the
/// input, weight and bias gradients. `bwd_bits >= 32` still goes through the custom Function.
#[allow(clippy::too_many_arguments)]
pub fn qconv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
    groups: i64,
    bwd_bits: u32,
) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: all pointers are live for the call; arrays have the two entries the shim reads.
    check(unsafe {
        cpt_qconv2d(
            x.as_ptr(),
            w.as_ptr(),
            opt_ptr(bias),
            stride.as_ptr(),
            padding.as_ptr(),
            dilation.as_ptr(),
            groups,
            i64::from(bwd_bits),
            &mut out,
        )
    })?;
    Ok(owned(out))
}

/// `x.linear(w, bias)` whose backward quantizes the output gradient to `bwd_bits` first.
pub fn qlinear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    bwd_bits: u32,
) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointers live for the call.
    check(unsafe {
        cpt_qlinear(
            x.as_ptr(),
            w.as_ptr(),
            opt_ptr(bias),
            i64::from(bwd_bits),
            &mut out,
        )
    })?;
    Ok(owned(out))
}

/// A copy of `x` in forward whose backward quantizes the incoming gradient to `bits`.
pub fn grad_quant(x: &Tensor, bits: u32) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointer lives for the call.
    check(unsafe { cpt_grad_quant(x.as_ptr(), i64::from(bits), &mut out) })?;
    Ok(owned(out))
}

/// Per-tensor fake quantization of `x` to `bits` (1..=31) with the range `lo`, `hi` (0-dim
/// tensors on `x`'s device), straight-through (identity) in backward. On the CPU, contiguous
/// f32 at ≤ 22 bits runs a fused loop; otherwise libtorch's kernel (`generic` forces that).
pub fn fake_quant(
    x: &Tensor,
    lo: &Tensor,
    hi: &Tensor,
    bits: u32,
    generic: bool,
) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointers live for the call.
    check(unsafe {
        cpt_fake_quant(
            x.as_ptr(),
            lo.as_ptr(),
            hi.as_ptr(),
            i64::from(bits),
            c_int::from(generic),
            &mut out,
        )
    })?;
    Ok(owned(out))
}

/// Per-output-channel (dimension 0) fake quantization of `w` to `bits` (1..=31), each channel
/// over its own range, straight-through in backward. CPU f32 contiguous at ≤ 22 bits: a fused
/// loop; otherwise libtorch's per-channel kernel (`generic` forces that).
pub fn fake_quant_channels(w: &Tensor, bits: u32, generic: bool) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointer lives for the call.
    check(unsafe {
        cpt_fake_quant_channels(w.as_ptr(), i64::from(bits), c_int::from(generic), &mut out)
    })?;
    Ok(owned(out))
}

/// Stochastic-rounding quantization of `t` over its own [min, max] (no autograd), as a new
/// tensor. `bits >= 32` returns a shallow copy of `t`. `generic` forces the ATen-op path
/// instead of the fused CPU loop.
pub fn sr_quantize(t: &Tensor, bits: u32, generic: bool) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointer lives for the call.
    check(unsafe {
        cpt_sr_quantize(
            t.as_ptr(),
            i64::from(bits),
            0,
            c_int::from(generic),
            &mut out,
        )
    })?;
    Ok(owned(out))
}

/// In-place variant of [`sr_quantize`].
pub fn sr_quantize_(t: &mut Tensor, bits: u32) -> Result<(), TchError> {
    // SAFETY: pointer lives for the call; `out` null means no result tensor is allocated.
    check(unsafe { cpt_sr_quantize(t.as_mut_ptr(), i64::from(bits), 1, 0, std::ptr::null_mut()) })
}

/// In place on each `(offset, len)` slice of the 1-D tensor `flat`, each with its own range.
pub fn sr_quantize_segments_(
    flat: &mut Tensor,
    segments: &[(i64, i64)],
    bits: u32,
) -> Result<(), TchError> {
    let offsets: Vec<i64> = segments.iter().map(|s| s.0).collect();
    let lens: Vec<i64> = segments.iter().map(|s| s.1).collect();
    // SAFETY: pointers live for the call; both arrays have `segments.len()` entries.
    check(unsafe {
        cpt_sr_quantize_segments(
            flat.as_mut_ptr(),
            offsets.as_ptr(),
            lens.as_ptr(),
            segments.len() as i64,
            i64::from(bits),
        )
    })
}

/// Whether autograd records operations on the calling thread (false inside `tch::no_grad`).
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { cpt_grad_enabled() != 0 }
}
