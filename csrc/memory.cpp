// Memory figures tch 0.24 cannot reach (`src/engine/memory.rs` wraps them).
//
// - A thread-local allocation tracker: libtorch's CPU allocator reports every allocation and
//   free to the thread's `MemoryReportingInfoBase` (the hook the profiler's memory view uses)
//   when it says profiling is on. `cpt_memtrack_begin` installs ours (a `DebugInfoGuard`) on
//   the calling thread; `cpt_memtrack_read` gives the bytes allocated since, now and at the peak.
//   Frees of blocks allocated before the tracker are unknown to it and ignored.
// - The CUDA caching allocator's peak and current allocated bytes, through the device-generic
//   `c10::DeviceAllocator` (no CUDA headers needed; on a machine without CUDA it reports an
//   error, which the caller treats as "no figure").
//
// Same conventions as grad_quant.cpp: plain C, nullptr on success or a malloc'ed message (free
// with `cpt_free_error`); no exception crosses the boundary.
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>

namespace {

struct Tracker : c10::MemoryReportingInfoBase {
  int64_t current = 0;
  int64_t peak = 0;

  void reportMemoryUsage(void*, int64_t alloc_size, size_t, size_t, c10::Device device) override {
    if (device.type() != c10::DeviceType::CPU) return;
    current += alloc_size;
    peak = std::max(peak, current);
  }
  void reportOutOfMemory(int64_t, size_t, size_t, c10::Device) override {}
  bool memoryProfilingEnabled() const override { return true; }
};

struct Handle {
  std::shared_ptr<Tracker> tracker;
  std::unique_ptr<c10::DebugInfoGuard> guard;
};

char* memory_error(const char* what) { return strdup(what ? what : "unknown C++ exception"); }

}  // namespace

extern "C" {

char* cpt_memtrack_begin(void** out) {
  try {
    auto h = std::make_unique<Handle>();
    h->tracker = std::make_shared<Tracker>();
    h->guard = std::make_unique<c10::DebugInfoGuard>(c10::DebugInfoKind::PROFILER_STATE, h->tracker);
    *out = h.release();
    return nullptr;
  } catch (const std::exception& e) {
    return memory_error(e.what());
  } catch (...) {
    return memory_error(nullptr);
  }
}

void cpt_memtrack_read(void* handle, int64_t* current, int64_t* peak) {
  auto* h = static_cast<Handle*>(handle);
  *current = h->tracker->current;
  *peak = h->tracker->peak;
}

// Must be called on the thread that began it (the guard is thread-local).
void cpt_memtrack_end(void* handle) { delete static_cast<Handle*>(handle); }

char* cpt_cuda_allocated(int device, int64_t* current, int64_t* peak) {
  try {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr || !alloc->initialized()) return memory_error("the CUDA allocator is not initialized");
    auto stats = alloc->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto& s = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *current = s.current;
    *peak = s.peak;
    return nullptr;
  } catch (const std::exception& e) {
    return memory_error(e.what());
  } catch (...) {
    return memory_error(nullptr);
  }
}

}  // extern "C"
