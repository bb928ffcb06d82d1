// libtorch's c10d for cptlab's multi-process runs (`src/engine/store.rs` and
// `src/engine/collective/gloo.rs` wrap it): `c10d::TCPStore` (server or client), `PrefixStore`,
// and, when built with `-DUSE_C10D_GLOO` (gloo's headers from Debian's `libgloo-dev`; the code is
// torch's own, in `libtorch_cpu`), `c10d::ProcessGroupGloo` for CPU ranks across processes.
//
// Interface: plain C. Objects are opaque boxes holding libtorch's intrusive pointers; tensors are
// tch's `C_tensor*` (= `at::Tensor*`). Every function that can fail returns nullptr on success
// or a malloc'ed message (free with `cptlab_c10d_free_error`); nothing throws across the
// boundary (a destructor that throws is swallowed). The kind of the last error on this thread
// (`cptlab_c10d_last_error_kind`) tells a timeout, a network error (address in use, connection
// refused) and other errors apart.
//
// Gloo's `_reduce_scatter_base` is not wrapped: it is an all-reduce of a clone whose work object
// (a LambdaWork) never reports completion; the Rust side does the same all-reduce itself.
#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

// Error kinds (mirrored in src/engine/store.rs).
constexpr int kOther = 0;
constexpr int kTimeout = 1;
constexpr int kNetwork = 2;
constexpr int kStore = 3;
constexpr int kBackend = 4;

thread_local int last_kind = kOther;

char* fail(int kind, const char* what) {
  last_kind = kind;
  return strdup(what ? what : "unknown C++ exception");
}

// Runs `f`, turning any exception into an error message of the right kind.
template <typename F>
char* guard(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10d::TimeoutError& e) {
    return fail(kTimeout, e.what_without_backtrace());
  } catch (const c10::DistNetworkError& e) {
    return fail(kNetwork, e.what_without_backtrace());
  } catch (const c10::DistStoreError& e) {
    // A store `wait`/`get` that ran out of time is a DistStoreError saying so.
    std::string m = e.what_without_backtrace();
    bool timeout = m.find("imeout") != std::string::npos ||
        m.find("timed out") != std::string::npos;
    return fail(timeout ? kTimeout : kStore, m.c_str());
  } catch (const c10::DistBackendError& e) {
    return fail(kBackend, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return fail(kOther, e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(kOther, e.what());
  } catch (...) {
    return fail(kOther, "unknown C++ exception");
  }
}

std::vector<uint8_t> bytes(const uint8_t* p, size_t n) {
  return n == 0 ? std::vector<uint8_t>() : std::vector<uint8_t>(p, p + n);
}

}  // namespace

struct CptStore {
  c10::intrusive_ptr<c10d::Store> store;
};

// A queued operation and a flag its future's callback raises, so a waiting thread wakes the
// moment the operation ends instead of polling.
struct Signal {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
};

struct CptWork {
  c10::intrusive_ptr<c10d::Work> work;
  std::shared_ptr<Signal> signal;
};

namespace {

CptWork* track(c10::intrusive_ptr<c10d::Work> work) {
  auto signal = std::make_shared<Signal>();
  // Runs on the backend's thread when the work completes or fails (at once if it already has).
  work->getFuture()->addCallback([signal](c10::ivalue::Future&) {
    std::lock_guard<std::mutex> lock(signal->mutex);
    signal->done = true;
    signal->cv.notify_all();
  });
  return new CptWork{std::move(work), std::move(signal)};
}

}  // namespace

extern "C" {

void cptlab_c10d_free_error(char* err) { free(err); }

int cptlab_c10d_last_error_kind() { return last_kind; }

// c10's own log threshold (0 info, 1 warning, 2 error, 3 fatal). c10d logs every retry and
// failure with a C++ backtrace on stderr; cptlab reports the same errors itself.
void cptlab_c10d_set_log_level(int level) { FLAGS_caffe2_log_level = level; }

int cptlab_c10d_has_gloo() {
#ifdef USE_C10D_GLOO
  return 1;
#else
  return 0;
#endif
}

// A TCPStore: the server (listening on every interface at `port`, 0 = any free port) or a
// client of `host:port`. `timeout_ms` bounds connecting and every blocking operation.
// `bound_port` receives the port actually used.
char* cptlab_c10d_tcp_store(const char* host, uint16_t port, int is_server,
                            int64_t timeout_ms, CptStore** out,
                            uint16_t* bound_port) {
  return guard([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    // Ranks are counted (and missing ones named) by cptlab's own rendezvous.
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    opts.multiTenant = false;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *bound_port = store->getPort();
    *out = new CptStore{store};
  });
}

char* cptlab_c10d_prefix_store(const char* prefix, const CptStore* base,
                               CptStore** out) {
  return guard([&] {
    *out = new CptStore{
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base->store)};
  });
}

// A new connection to the same store (for a second thread).
char* cptlab_c10d_store_clone(const CptStore* s, CptStore** out) {
  return guard([&] { *out = new CptStore{s->store->clone()}; });
}

void cptlab_c10d_store_free(CptStore* s) {
  try {
    delete s;
  } catch (...) {
  }
}

void cptlab_c10d_store_set_timeout(CptStore* s, int64_t timeout_ms) {
  s->store->setTimeout(std::chrono::milliseconds(timeout_ms));
}

char* cptlab_c10d_store_set(CptStore* s, const char* key, const uint8_t* value,
                            size_t len) {
  return guard([&] { s->store->set(std::string(key), bytes(value, len)); });
}

// Blocks until `key` exists (up to the store's timeout). `*value` is malloc'ed (free with
// `cptlab_c10d_free_bytes`).
char* cptlab_c10d_store_get(CptStore* s, const char* key, uint8_t** value,
                            size_t* len) {
  return guard([&] {
    auto v = s->store->get(std::string(key));
    *len = v.size();
    *value = static_cast<uint8_t*>(malloc(v.empty() ? 1 : v.size()));
    if (*value == nullptr) {
      throw std::bad_alloc();
    }
    if (!v.empty()) {
      memcpy(*value, v.data(), v.size());
    }
  });
}

void cptlab_c10d_free_bytes(uint8_t* p) { free(p); }

char* cptlab_c10d_store_add(CptStore* s, const char* key, int64_t delta,
                            int64_t* result) {
  return guard([&] { *result = s->store->add(std::string(key), delta); });
}

// Whether `key` exists, without waiting.
char* cptlab_c10d_store_check(CptStore* s, const char* key, int* exists) {
  return guard([&] {
    *exists = s->store->check({std::string(key)}) ? 1 : 0;
  });
}

// Blocks until every key exists, up to `timeout_ms`.
char* cptlab_c10d_store_wait(CptStore* s, const char* const* keys, size_t n,
                             int64_t timeout_ms) {
  return guard([&] {
    std::vector<std::string> k;
    for (size_t i = 0; i < n; i++) {
      k.emplace_back(keys[i]);
    }
    s->store->wait(k, std::chrono::milliseconds(timeout_ms));
  });
}

char* cptlab_c10d_store_delete(CptStore* s, const char* key, int* deleted) {
  return guard([&] {
    *deleted = s->store->deleteKey(std::string(key)) ? 1 : 0;
  });
}

#ifdef USE_C10D_GLOO

struct CptGloo {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

// One rank of a Gloo process group meeting its peers through `store`. The transport binds to
// `ifname` (an interface, as GLOO_SOCKET_IFNAME names it) when given, else to `address`.
char* cptlab_c10d_gloo_new(const CptStore* store, int rank, int size,
                           int64_t timeout_ms, const char* address,
                           const char* ifname, CptGloo** out) {
  return guard([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(timeout_ms));
    if (ifname != nullptr && ifname[0] != '\0') {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(std::string(ifname)));
    } else {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(std::string(address)));
    }
    // One operation at a time is all the trainer issues.
    opts->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank,
                                                          size, opts);
    *out = new CptGloo{pg};
  });
}

// Destroys the group: waits for queued work to finish (a healthy group only; after an error
// the caller leaks the group instead, since a blocked operation would hold this up to the
// timeout).
void cptlab_c10d_gloo_free(CptGloo* g) {
  try {
    delete g;
  } catch (...) {
  }
}

char* cptlab_c10d_gloo_allreduce(CptGloo* g, at::Tensor* t, CptWork** out) {
  return guard([&] {
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    *out = track(g->pg->allreduce(v, o));
  });
}

// `output` (world × n) receives every rank's `input` (n) in rank order.
char* cptlab_c10d_gloo_allgather(CptGloo* g, at::Tensor* input,
                                 at::Tensor* output, CptWork** out) {
  return guard([&] {
    *out = track(g->pg->_allgather_base(*output, *input));
  });
}

char* cptlab_c10d_gloo_broadcast(CptGloo* g, at::Tensor* t, int root,
                                 CptWork** out) {
  return guard([&] {
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    *out = track(g->pg->broadcast(v, o));
  });
}

char* cptlab_c10d_gloo_barrier(CptGloo* g, CptWork** out) {
  return guard([&] { *out = track(g->pg->barrier()); });
}

#else

struct CptGloo {};

char* cptlab_c10d_gloo_new(const CptStore*, int, int, int64_t, const char*,
                           const char*, CptGloo**) {
  return fail(kOther, "this build has no Gloo backend");
}
void cptlab_c10d_gloo_free(CptGloo*) {}
char* cptlab_c10d_gloo_allreduce(CptGloo*, at::Tensor*, CptWork**) {
  return fail(kOther, "this build has no Gloo backend");
}
char* cptlab_c10d_gloo_allgather(CptGloo*, at::Tensor*, at::Tensor*,
                                 CptWork**) {
  return fail(kOther, "this build has no Gloo backend");
}
char* cptlab_c10d_gloo_broadcast(CptGloo*, at::Tensor*, int, CptWork**) {
  return fail(kOther, "this build has no Gloo backend");
}
char* cptlab_c10d_gloo_barrier(CptGloo*, CptWork**) {
  return fail(kOther, "this build has no Gloo backend");
}

#endif

// Waits up to `timeout_ms` for the work. 0: still running; 1: finished; -1: failed (`*err`
// receives the message).
int cptlab_c10d_work_wait(CptWork* w, int64_t timeout_ms, char** err) {
  *err = nullptr;
  {
    std::unique_lock<std::mutex> lock(w->signal->mutex);
    if (!w->signal->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                [&] { return w->signal->done; })) {
      return 0;
    }
  }
  // The future completes just before the work records its end: this returns at once, or
  // rethrows the operation's error.
  *err = guard([&] { w->work->wait(); });
  return *err != nullptr ? -1 : 1;
}

void cptlab_c10d_work_free(CptWork* w) {
  try {
    delete w;
  } catch (...) {
  }
}

}  // extern "C"
