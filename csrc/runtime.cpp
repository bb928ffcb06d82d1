// libtorch runtime hooks that tch 0.24 does not expose (`src/quant/shim.rs` wraps them):
//
// - An ATen op counter: one global `RecordFunction` callback (scope FUNCTION, no inputs or
//   outputs recorded) that counts every dispatched operator call, nested calls included, per
//   process and per calling thread. `cptlab bench` reports it as ops per training step; tests
//   read the thread's count (other tests run on other threads of the same process).
// - The calling thread's current CUDA device, as `c10::cuda::set_device` / `CUDAGuard` set it,
//   through c10's device-guard registry: no CUDA symbol is referenced here, so the shim links
//   and runs the same against a CPU-only libtorch (where it reports that CUDA is absent).
//
// Interface as in grad_quant.cpp: plain C; functions that can fail return nullptr or a malloc'ed
// message (free with `cpt_free_error`).
#include <ATen/record_function.h>
#include <c10/core/Device.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

namespace {

std::atomic<int64_t> g_ops{0};
thread_local int64_t t_ops = 0;
std::mutex g_mu;
at::CallbackHandle g_handle = 0;

char* runtime_error(const char* what) { return strdup(what ? what : "unknown C++ exception"); }

const c10::impl::DeviceGuardImplInterface* cuda_guard() {
  if (!c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA)) {
    throw std::runtime_error("this libtorch has no CUDA support (no CUDA device guard registered)");
  }
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
}

}  // namespace

#define CPT_RT_PROTECT(...)            \
  try {                                 \
    __VA_ARGS__                         \
  } catch (const std::exception& e) {   \
    return runtime_error(e.what());     \
  } catch (...) {                       \
    return runtime_error(nullptr);      \
  }                                     \
  return nullptr;

extern "C" {

// Installs (on != 0) or removes (on == 0) the counting callback; idempotent. Counts keep their
// values across enable/disable (read differences).
char* cpt_op_count_enable(int on) {
  CPT_RT_PROTECT({
    std::lock_guard<std::mutex> lock(g_mu);
    if (on != 0 && g_handle == 0) {
      auto cb = at::RecordFunctionCallback(
                    [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> {
                      g_ops.fetch_add(1, std::memory_order_relaxed);
                      ++t_ops;
                      return nullptr;
                    })
                    .needsInputs(false)
                    .needsOutputs(false)
                    .needsIds(false)
                    .scopes({at::RecordScope::FUNCTION});
      g_handle = at::addGlobalCallback(std::move(cb));
    } else if (on == 0 && g_handle != 0) {
      at::removeCallback(g_handle);
      g_handle = 0;
    }
  })
}

// Operator calls counted so far in the whole process.
int64_t cpt_op_count_global() { return g_ops.load(std::memory_order_relaxed); }

// Operator calls counted so far on the calling thread.
int64_t cpt_op_count_thread() { return t_ops; }

// Makes CUDA device `index` the calling thread's current device (what a `CUDAGuard` sets).
char* cpt_set_cuda_device(int64_t index) {
  CPT_RT_PROTECT({
    cuda_guard()->setDevice(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index)));
  })
}

// The calling thread's current CUDA device into `*out`.
char* cpt_current_cuda_device(int64_t* out) {
  CPT_RT_PROTECT({ *out = static_cast<int64_t>(cuda_guard()->getDevice().index()); })
}

}  // extern "C"
