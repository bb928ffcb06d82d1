//! Safe wrappers over the C++ shim: `csrc/grad_quant.cpp` quantizes the error signal in
//! backward (tch 0.24 has no custom autograd Function and no hooks; see the file's header);
//! `csrc/autocast.cpp` enters libtorch's thread-local `at::autocast` with a device type and a
//! dtype (tch only toggles the old CUDA fp16 flag) and sets the CUDA math switches.
//!
//! Tensors cross the boundary as tch's raw `C_tensor*` (an `at::Tensor*`); results are allocated
//! by the shim with `new at::Tensor`, like tch's own C API, and owned by the returned
//! [`Tensor`]. Errors (libtorch exceptions) come back as messages.
use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;

use tch::{Device, Kind, TchError, Tensor};
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
    fn cpt_autocast_enter(device: c_int, dtype: c_int, prev: *mut c_int) -> *mut c_char;
    fn cpt_autocast_exit(device: c_int, prev: *const c_int) -> *mut c_char;
    fn cpt_autocast_state(device: c_int) -> c_int;
    fn cpt_set_cuda_math(benchmark: c_int, tf32_matmul: c_int, tf32_conv: c_int) -> *mut c_char;
    fn cpt_get_cuda_math(out: *mut c_int) -> *mut c_char;
    fn cpt_pin_memory(t: *const C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn cpt_act_quant_train(
        x: *const C_tensor,
        range: *const C_tensor,
        momentum: f64,
        bits: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn cpt_op_count_enable(on: c_int) -> *mut c_char;
    fn cpt_op_count_global() -> i64;
    fn cpt_op_count_thread() -> i64;
    fn cpt_set_cuda_device(index: i64) -> *mut c_char;
    fn cpt_current_cuda_device(out: *mut i64) -> *mut c_char;
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

/// A training pass of an activation quantizer in one call where the fused CPU path applies
/// (contiguous f32 `x` at ≤ 22 bits, an f32 `range` on the CPU): updates the running `range`
/// (`[min, max]`; set when unset, else `lerp_` towards the batch range by `momentum`) and returns
/// `x` fake-quantized over its own range (straight-through backward). `None`: not applicable,
/// nothing changed.
pub fn act_quant_train(
    x: &Tensor,
    range: &Tensor,
    momentum: f64,
    bits: u32,
) -> Result<Option<Tensor>, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointers live for the call; the shim leaves `out` null when it does nothing.
    check(unsafe {
        cpt_act_quant_train(
            x.as_ptr(),
            range.as_ptr(),
            momentum,
            i64::from(bits),
            &mut out,
        )
    })?;
    Ok((!out.is_null()).then(|| owned(out)))
}

/// Whether autograd records operations on the calling thread (false inside `tch::no_grad`).
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { cpt_grad_enabled() != 0 }
}

/// The shim's device code: autocast exists for the CPU and CUDA.
fn autocast_device(device: Device) -> Result<c_int, TchError> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(TchError::Kind(format!(
            "autocast: no autocast for {other:?}"
        ))),
    }
}

fn autocast_dtype(kind: Kind) -> Result<c_int, TchError> {
    match kind {
        Kind::Half => Ok(0),
        Kind::BFloat16 => Ok(1),
        other => Err(TchError::Kind(format!(
            "autocast: {other:?} is not a lower-precision type (Half or BFloat16)"
        ))),
    }
}

/// libtorch's autocast, entered on the calling thread until dropped (`torch.autocast(device,
/// dtype)` as a scope): ops on its lists run in `dtype` (matmuls, convolutions), others in fp32
/// or their inputs' type. Thread-local, so it is neither `Send` nor `Sync`: each worker thread
/// enters its own.
pub struct AutocastGuard {
    device: c_int,
    prev: [c_int; 3],
    _thread_local: PhantomData<*const ()>,
}

impl AutocastGuard {
    /// Enters autocast for `device`'s type (CPU or CUDA) with `dtype` (`Half` or `BFloat16`).
    pub fn enter(device: Device, dtype: Kind) -> Result<AutocastGuard, TchError> {
        let (d, k) = (autocast_device(device)?, autocast_dtype(dtype)?);
        let mut prev = [0; 3];
        // SAFETY: `prev` has the three entries the shim writes.
        check(unsafe { cpt_autocast_enter(d, k, prev.as_mut_ptr()) })?;
        Ok(AutocastGuard {
            device: d,
            prev,
            _thread_local: PhantomData,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: restores the state saved by `enter` on this (the same) thread.
        let err = check(unsafe { cpt_autocast_exit(self.device, self.prev.as_ptr()) });
        debug_assert!(err.is_ok(), "leaving autocast: {err:?}");
    }
}

/// The calling thread's autocast dtype for `device`'s type, None when autocast is off.
pub fn autocast_state(device: Device) -> Option<Kind> {
    let d = autocast_device(device).ok()?;
    // SAFETY: reads thread-local state.
    match unsafe { cpt_autocast_state(d) } {
        0 => Some(Kind::Half),
        1 => Some(Kind::BFloat16),
        _ => None,
    }
}

/// libtorch's process-wide CUDA math switches (PyTorch's `torch.backends.cudnn.benchmark`,
/// `torch.backends.cuda.matmul.fp32_precision`, `torch.backends.cudnn.conv.fp32_precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaMath {
    /// cuDNN times the algorithms for each new input shape and keeps the fastest.
    pub cudnn_benchmark: bool,
    /// fp32 matmuls may run in TF32.
    pub tf32_matmul: bool,
    /// fp32 convolutions may run in TF32.
    pub tf32_conv: bool,
}

/// Sets [`CudaMath`] for the process (harmless without CUDA).
pub fn set_cuda_math(m: CudaMath) -> Result<(), TchError> {
    // SAFETY: plain values.
    check(unsafe {
        cpt_set_cuda_math(
            c_int::from(m.cudnn_benchmark),
            c_int::from(m.tf32_matmul),
            c_int::from(m.tf32_conv),
        )
    })
}

/// The [`CudaMath`] in force.
pub fn cuda_math() -> Result<CudaMath, TchError> {
    let mut out = [0; 3];
    // SAFETY: `out` has the three entries the shim writes.
    check(unsafe { cpt_get_cuda_math(out.as_mut_ptr()) })?;
    Ok(CudaMath {
        cudnn_benchmark: out[0] != 0,
        tf32_matmul: out[1] != 0,
        tf32_conv: out[2] != 0,
    })
}

/// A page-locked (pinned) copy of the CPU tensor `t`, for non-blocking copies to a GPU. Needs
/// CUDA (an error without it).
pub fn pin_memory(t: &Tensor) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: pointer lives for the call.
    check(unsafe { cpt_pin_memory(t.as_ptr(), &mut out) })?;
    Ok(owned(out))
}

/// Counts ATen operator calls (`csrc/runtime.cpp`: a global `RecordFunction` callback, scope
/// FUNCTION, nested calls included) while enabled. Counts only grow: read differences.
pub struct OpCount;

impl OpCount {
    /// Installs (or removes) the counting callback for the whole process. Off, operators pay
    /// nothing; on, every call pays one callback.
    pub fn enable(on: bool) -> Result<(), TchError> {
        // SAFETY: plain value; the shim serialises installation.
        check(unsafe { cpt_op_count_enable(c_int::from(on)) })
    }

    /// Calls counted in the process (every thread, autograd's device threads included).
    pub fn global() -> u64 {
        // SAFETY: reads an atomic.
        unsafe { cpt_op_count_global() as u64 }
    }

    /// Calls counted on the calling thread (CPU backward runs on the caller's thread too).
    pub fn thread() -> u64 {
        // SAFETY: reads a thread-local counter.
        unsafe { cpt_op_count_thread() as u64 }
    }
}

/// Makes `device` the calling thread's current CUDA device (what `torch.cuda.set_device` and a
/// `CUDAGuard` set): kernels, streams and NCCL calls that do not name a device go there. A
/// no-op for the CPU.
pub fn set_current_device(device: Device) -> Result<(), TchError> {
    match device {
        // SAFETY: plain value.
        Device::Cuda(i) => check(unsafe { cpt_set_cuda_device(i as i64) }),
        _ => Ok(()),
    }
}

/// The calling thread's current CUDA device index (an error without CUDA support).
pub fn current_cuda_device() -> Result<usize, TchError> {
    let mut out = -1i64;
    // SAFETY: `out` outlives the call.
    check(unsafe { cpt_current_cuda_device(&mut out) })?;
    Ok(out.max(0) as usize)
}
