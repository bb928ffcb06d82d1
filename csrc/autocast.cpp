// Mixed precision and CUDA settings that tch 0.24 cannot reach (`src/quant/shim.rs` wraps them).
//
// tch's `autocast()` toggles only the old CUDA-only fp16 flag. libtorch's `at::autocast` has a
// device type and a dtype per device, and its state is thread-local (a dispatch key in the
// thread's local key set plus thread-local dtypes), so each worker thread enters its own.
// `cpt_autocast_enter`/`cpt_autocast_exit` do what `torch.autocast.__enter__`/`__exit__` do:
// save the previous state, enable, set the dtype, count the nesting, enable the weight-cast
// cache; on exit clear the cache when leaving the outermost level and restore the state.
//
// The CUDA switches (cudnn.benchmark, TF32) are process-wide, as in PyTorch. `cpt_pin_memory`
// is `Tensor.pin_memory()` without the deprecated device argument that tch's binding passes.
//
// Same conventions as grad_quant.cpp: plain C, nullptr on success or a malloc'ed message (free
// with `cpt_free_error`); no exception crosses the boundary.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <cstdlib>
#include <cstring>

namespace {

char* autocast_error(const char* what) { return strdup(what ? what : "unknown C++ exception"); }

// 0: CPU, 1: CUDA.
bool device_type(int device, at::DeviceType* out) {
  switch (device) {
    case 0:
      *out = at::kCPU;
      return true;
    case 1:
      *out = at::kCUDA;
      return true;
    default:
      return false;
  }
}

// 0: fp16, 1: bf16.
bool lower_dtype(int dtype, at::ScalarType* out) {
  switch (dtype) {
    case 0:
      *out = at::kHalf;
      return true;
    case 1:
      *out = at::kBFloat16;
      return true;
    default:
      return false;
  }
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return 0;
    case at::kBFloat16:
      return 1;
    default:
      return -1;
  }
}

}  // namespace

#define CPT_AUTOCAST_PROTECT(...)         \
  try {                                   \
    __VA_ARGS__                           \
  } catch (const std::exception& e) {     \
    return autocast_error(e.what());      \
  } catch (...) {                         \
    return autocast_error(nullptr);       \
  }                                       \
  return nullptr;

extern "C" {

// Enters autocast on this thread for `device` (0 CPU, 1 CUDA) with `dtype` (0 fp16, 1 bf16).
// `prev` receives what exit must restore: [enabled, dtype code (-1: neither half type), cache].
char* cpt_autocast_enter(int device, int dtype, int* prev) {
  CPT_AUTOCAST_PROTECT({
    at::DeviceType dt;
    at::ScalarType st;
    if (!device_type(device, &dt) || !lower_dtype(dtype, &st)) {
      return autocast_error("autocast: unknown device or dtype code");
    }
    prev[0] = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    prev[1] = dtype_code(at::autocast::get_autocast_dtype(dt));
    prev[2] = at::autocast::is_autocast_cache_enabled() ? 1 : 0;
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::set_autocast_dtype(dt, st);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(true);
  })
}

// Leaves what `cpt_autocast_enter` entered, restoring `prev`.
char* cpt_autocast_exit(int device, const int* prev) {
  CPT_AUTOCAST_PROTECT({
    at::DeviceType dt;
    if (!device_type(device, &dt)) {
      return autocast_error("autocast: unknown device code");
    }
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dt, prev[0] != 0);
    at::ScalarType st;
    if (lower_dtype(prev[1], &st)) {
      at::autocast::set_autocast_dtype(dt, st);
    }
    at::autocast::set_autocast_cache_enabled(prev[2] != 0);
  })
}

// This thread's autocast state for `device`: -1 off, else the dtype code (0 fp16, 1 bf16).
int cpt_autocast_state(int device) {
  try {
    at::DeviceType dt;
    if (!device_type(device, &dt) || !at::autocast::is_autocast_enabled(dt)) {
      return -1;
    }
    return dtype_code(at::autocast::get_autocast_dtype(dt));
  } catch (...) {
    return -1;
  }
}

// Process-wide CUDA settings: cudnn.benchmark, and TF32 for matmuls and convolutions
// (tf32_matmul, tf32_conv: 1 allow, 0 IEEE fp32). Harmless without CUDA.
char* cpt_set_cuda_math(int benchmark, int tf32_matmul, int tf32_conv) {
  CPT_AUTOCAST_PROTECT({
    auto& ctx = at::globalContext();
    ctx.setBenchmarkCuDNN(benchmark != 0);
    const auto tf32 = at::Float32Precision::TF32;
    const auto ieee = at::Float32Precision::IEEE;
    ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL,
                            tf32_matmul != 0 ? tf32 : ieee);
    ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV,
                            tf32_conv != 0 ? tf32 : ieee);
  })
}

// The settings in force: out = [cudnn.benchmark, TF32 matmul, TF32 conv] (1 on, 0 off).
char* cpt_get_cuda_math(int* out) {
  CPT_AUTOCAST_PROTECT({
    auto& ctx = at::globalContext();
    out[0] = ctx.benchmarkCuDNN() ? 1 : 0;
    const auto tf32 = at::Float32Precision::TF32;
    out[1] = ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) == tf32;
    out[2] = ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) == tf32;
  })
}

// A page-locked copy of the CPU tensor `t` from libtorch's caching host allocator, which keeps
// a block from reuse until the non-blocking copies that read it have run.
char* cpt_pin_memory(const at::Tensor* t, at::Tensor** out) {
  CPT_AUTOCAST_PROTECT({ *out = new at::Tensor(t->pin_memory()); })
}

}  // extern "C"
