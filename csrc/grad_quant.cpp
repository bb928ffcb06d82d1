// Quantization kernels for cptlab's quantized layers (`src/quant/shim.rs` wraps them).
//
// tch 0.24 exposes neither custom autograd Functions nor gradient hooks, and every ATen backward
// formula is linear in the incoming gradient, so quantizing the error signal in backward needs
// libtorch itself. This file defines `torch::autograd::Function`s for conv2d and linear whose
// forward is the plain op and whose backward first quantizes the gradient w.r.t. the layer output
// (per tensor, min/max range, stochastic rounding) and then runs the op's ordinary backward.
// Wrapping the op itself (instead of an identity Function on its output) keeps the output a fresh
// tensor that later in-place ops (`relu_`) may modify — autograd forbids in-place changes to an
// input returned as-is from a custom Function — and costs no extra copy.
//
// The forward fake quantizers live here too, as Functions with a pure straight-through backward
// and fused, vectorised CPU loops (libtorch's fake-quantize kernels are scalar and write a mask).
//
// Interface: plain C, tensors as tch's `C_tensor*` (= `at::Tensor*`); results are allocated with
// `new at::Tensor(...)` exactly as tch's own C API does, so `tch::Tensor::from_ptr` owns them.
// Every function returns nullptr on success or a malloc'ed error message (free with
// `cpt_free_error`).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/fake_quantize_per_channel_affine.h>
#include <ATen/ops/fake_quantize_per_tensor_affine.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/rand_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

char* dup_error(const char* what) {
  return strdup(what ? what : "unknown C++ exception");
}

// One draw from libtorch's default CPU generator (seeded by `tch::manual_seed`).
uint32_t draw_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random();
}

// murmur3's finaliser: a bijection on 32 bits with full avalanche.
inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

inline bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// A one-element tensor's value as float. A CPU float tensor is read through its pointer:
// `item()` is two dispatched ops (item, _local_scalar_dense) for the same number.
inline float scalar_of(const at::Tensor& t) {
  if (t.device().is_cpu() && t.scalar_type() == at::kFloat) {
    return *t.const_data_ptr<float>();
  }
  return t.item<float>();
}

// `t` in `st` (no dispatched `to` when it already is).
inline at::Tensor to_type(const at::Tensor& t, at::ScalarType st) {
  return t.scalar_type() == st ? t : t.to(st);
}

// The quantizer parameters of one range in f32, operation for operation what the ATen path
// computes on tensors (the same IEEE operations, NaN propagated as clamp does), so the fused
// CPU paths give libtorch's numbers without dispatching a dozen one-element ops:
// l = min(lo, 0), h = max(hi, 0), scale = max((h - l)·f32(1/L), eps),
// zp = clamp(-round_half_even(l / scale), 0, L).
inline void host_qparams(float lo, float hi, double levels, float* scale_out, float* zp_out) {
  const float eps = std::numeric_limits<float>::epsilon();
  const float top = static_cast<float>(levels);
  const float l = std::isnan(lo) ? lo : std::min(lo, 0.0f);
  const float h = std::isnan(hi) ? hi : std::max(hi, 0.0f);
  float scale = (h - l) * static_cast<float>(1.0 / levels);
  scale = std::isnan(scale) ? scale : std::max(scale, eps);
  float zp = -std::nearbyint(l / scale);
  zp = std::isnan(zp) ? zp : std::min(std::max(zp, 0.0f), top);
  *scale_out = scale;
  *zp_out = zp;
}

// Under autocast (the thread's state for t's device) a floating tensor in the autocast dtype,
// as autocast's own lower-precision ops cast their inputs; otherwise t itself. A plain cast,
// not autocast's weight cache: these casts run with autograd off inside a custom Function, and
// a cached copy without history must not be handed to an op outside it.
at::Tensor autocast_input(const at::Tensor& t) {
  if (!t.defined() || !t.is_floating_point() || t.scalar_type() == at::kDouble) {
    return t;
  }
  const auto dt = t.device().type();
  if (!at::autocast::is_autocast_available(dt) || !at::autocast::is_autocast_enabled(dt)) {
    return t;
  }
  const auto to = at::autocast::get_autocast_dtype(dt);
  return t.scalar_type() == to ? t : t.to(to);
}

// Compiled twice on x86-64 (AVX2 and baseline SSE2), picked at load time: the 32-bit multiplies
// of the hash are emulated on SSE2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPT_CLONES
#endif

// out[i] = min(floor((g-mn)/s + u_i), L)·s + mn for i in [begin, end), with u_i in [0, 1) from
// a counter-based hash of (seed, i), so results do not depend on how threads split the work.
// Written to vectorise (32-bit integer hash; truncating conversion instead of floor: the
// argument is never negative).
CPT_CLONES void sr_chunk(const float* in, float* out, int64_t begin, int64_t end, float mn,
                         float scale, float inv, float levels, uint32_t seed) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t h = fmix32(static_cast<uint32_t>(i) * 0x9E3779B9u + seed);
    const float u = static_cast<float>(static_cast<int32_t>(h >> 8)) * (1.0f / 16777216.0f);
    const float t = (in[i] - mn) * inv + u;
    float q = static_cast<float>(static_cast<int32_t>(t));
    q = q > levels ? levels : q;
    out[i] = q * scale + mn;
  }
}

// [min, max] of n > 0 floats, as `aminmax` gives them (a NaN anywhere makes both NaN), in 16
// independent lanes so that the loop vectorises without fast-math.
CPT_CLONES void minmax_span(const float* in, int64_t n, float* mn_out, float* mx_out,
                            bool* nan_out) {
  constexpr int W = 16;
  float mn[W], mx[W];
  int32_t bad[W];
  for (int j = 0; j < W; ++j) {
    mn[j] = std::numeric_limits<float>::infinity();
    mx[j] = -std::numeric_limits<float>::infinity();
    bad[j] = 0;
  }
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    for (int j = 0; j < W; ++j) {
      const float v = in[i + j];
      mn[j] = v < mn[j] ? v : mn[j];
      mx[j] = v > mx[j] ? v : mx[j];
      bad[j] |= static_cast<int32_t>(v != v);
    }
  }
  for (; i < n; ++i) {
    const float v = in[i];
    mn[0] = v < mn[0] ? v : mn[0];
    mx[0] = v > mx[0] ? v : mx[0];
    bad[0] |= static_cast<int32_t>(v != v);
  }
  float a = mn[0], b = mx[0];
  int32_t nan = bad[0];
  for (int j = 1; j < W; ++j) {
    a = mn[j] < a ? mn[j] : a;
    b = mx[j] > b ? mx[j] : b;
    nan |= bad[j];
  }
  *mn_out = a;
  *mx_out = b;
  *nan_out = nan != 0;
}

// [min, max] of a contiguous float range (n > 0) without dispatching an op (`aminmax` is eight:
// output allocation, fills, reshapes): fixed chunks in parallel, combined in order.
void minmax_cpu(const float* in, int64_t n, float* mn, float* mx) {
  constexpr int64_t chunk = 1 << 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<float> lo(chunks), hi(chunks);
  std::vector<char> bad(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      bool b = false;
      minmax_span(in + c * chunk, std::min(chunk, n - c * chunk), &lo[c], &hi[c], &b);
      bad[c] = b;
    }
  });
  float a = lo[0], b = hi[0];
  bool nan = bad[0];
  for (int64_t c = 1; c < chunks; ++c) {
    a = lo[c] < a ? lo[c] : a;
    b = hi[c] > b ? hi[c] : b;
    nan = nan || bad[c];
  }
  if (nan) {
    a = b = std::numeric_limits<float>::quiet_NaN();
  }
  *mn = a;
  *mx = b;
}

// The fused CPU path for contiguous float32.
void sr_cpu_float(const float* in, float* out, int64_t n, float mn, float scale, float inv,
                  float levels, uint32_t seed) {
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
    sr_chunk(in, out, begin, end, mn, scale, inv, levels, seed);
  });
}

// Quantizes `g` to `bits` bits with stochastic rounding over its own [min, max]. `inplace`
// writes into `g` (which must then be a plain tensor, e.g. a slice of a gradient buffer).
// Non-finite input gives non-finite output (overflow detection downstream still sees it).
// `generic` forces the ATen-op path (tests compare both).
at::Tensor sr_quantize(const at::Tensor& g, int64_t bits, bool inplace, bool generic = false) {
  if (bits >= 32 || !g.defined() || g.numel() == 0) {
    return g;
  }
  if (is_half(g)) {
    // Range, scale and the rounding itself in fp32: in fp16 the scale of a constant tensor
    // (1e-30 floor) is 0 and 0·inf gives NaN; in bf16 `t + u` rounds to the 8-bit mantissa
    // before the floor, which biases the rounding. Only the grid values are rounded to g's type.
    at::Tensor f = g.to(at::kFloat).contiguous();
    at::Tensor q = sr_quantize(f, bits, true, generic);
    return inplace ? g.copy_(q) : q.to(g.scalar_type());
  }
  const double levels = std::ldexp(1.0, static_cast<int>(bits)) - 1.0;
  if (!generic && bits <= 24 && g.device().is_cpu() && g.scalar_type() == at::kFloat &&
      g.is_contiguous()) {
    float mn, mx;
    minmax_cpu(g.const_data_ptr<float>(), g.numel(), &mn, &mx);
    at::Tensor out = inplace ? g : at::empty_like(g);
    const float range = mx - mn;
    if (!std::isfinite(range)) {
      return out.fill_(std::numeric_limits<float>::quiet_NaN());
    }
    const float scale = (range > 1e-30f ? range : 1e-30f) / static_cast<float>(levels);
    sr_cpu_float(g.const_data_ptr<float>(), out.mutable_data_ptr<float>(), g.numel(), mn, scale,
                 1.0f / scale, static_cast<float>(levels), draw_seed());
    return out;
  }
  // Any device / dtype: the same arithmetic from ATen ops (random numbers from the device's
  // default generator). Min/max and scale stay on the device: no host synchronisation.
  auto mm = at::aminmax(g);
  const at::Tensor& mn = std::get<0>(mm);
  at::Tensor scale = std::get<1>(mm).sub(mn).clamp_min_(1e-30).div_(levels);
  at::Tensor t = at::rand_like(g);
  t.addcmul_(g.sub(mn), scale.reciprocal()).floor_().clamp_max_(levels);
  if (inplace) {
    return g.copy_(at::addcmul(mn, t, scale));
  }
  return at::addcmul(mn, t, scale);
}

// out = round(clamp(x·inv, qlo, qhi))·scale over n elements (qlo, qhi integers: rounding after
// clamping equals clamping after rounding). Adding and subtracting 1.5·2^23 rounds half to even
// for |t| < 2^22 without SSE4.1's roundps.
CPT_CLONES void fq_span(const float* in, float* out, int64_t n, float inv, float qlo, float qhi,
                        float scale) {
  constexpr float magic = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) {
    float t = in[i] * inv;
    t = t < qlo ? qlo : t;
    t = t > qhi ? qhi : t;
    out[i] = ((t + magic) - magic) * scale;
  }
}

// Per-output-channel (dimension 0) fake quantization of a weight, each channel over its own
// range, same formulas as `fake_quant_tensor`. Qparams come from ATen ops on the device; the CPU
// fused path reads them from host memory (no sync there), the generic path hands them to
// libtorch's kernel with a float zero point (an int32 one makes it sync to check the range).
at::Tensor fake_quant_channels(const at::Tensor& w, int64_t bits, bool generic) {
  if (is_half(w)) {
    // Quantizer parameters and the quantization in fp32; only the result is rounded back.
    return fake_quant_channels(w.to(at::kFloat).contiguous(), bits, generic).to(w.scalar_type());
  }
  const double levels = std::ldexp(1.0, static_cast<int>(bits)) - 1.0;
  const double eps = std::numeric_limits<float>::epsilon();
  const int64_t channels = w.size(0);
  if (!generic && bits <= 22 && w.device().is_cpu() && w.scalar_type() == at::kFloat &&
      w.is_contiguous() && channels > 0) {
    // Per channel: its [min, max] (minmax_span), qparams on the host (host_qparams: the ATen
    // path's numbers), the fused quantizing pass; one allocation is the only dispatched op.
    const int64_t k = w.numel() / channels;
    at::Tensor out = at::empty_like(w);
    const float* in = w.const_data_ptr<float>();
    float* o = out.mutable_data_ptr<float>();
    const float top = static_cast<float>(levels);
    at::parallel_for(0, channels, std::max<int64_t>(1, 32768 / std::max<int64_t>(k, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t c = begin; c < end; ++c) {
                         float lo, hi, sc, z;
                         bool nan = false;
                         minmax_span(in + c * k, k, &lo, &hi, &nan);
                         if (nan) {
                           lo = hi = std::numeric_limits<float>::quiet_NaN();
                         }
                         host_qparams(lo, hi, levels, &sc, &z);
                         fq_span(in + c * k, o + c * k, k, 1.0f / sc, -z, top - z, sc);
                       }
                     });
    return out;
  }
  auto mm = at::aminmax(w.reshape({channels, -1}), 1);
  at::Tensor l = std::get<0>(mm).to(at::kFloat).clamp_max_(0.0);
  at::Tensor h = std::get<1>(mm).to(at::kFloat).clamp_min_(0.0);
  at::Tensor scale = h.sub(l).mul_(1.0 / levels).clamp_min_(eps);
  at::Tensor zp = l.div(scale).round_().neg_().clamp_(0.0, levels);
  return at::fake_quantize_per_channel_affine(w, scale, zp, 0, 0,
                                              static_cast<int64_t>(levels));
}

// The fused CPU per-tensor quantizer (contiguous f32 `x`, range given on the host).
at::Tensor fake_quant_host(const at::Tensor& x, float lo, float hi, double levels) {
  float scale, zp;
  host_qparams(lo, hi, levels, &scale, &zp);
  const float top = static_cast<float>(levels);
  const float inv = 1.0f / scale;
  at::Tensor out = at::empty_like(x);
  const float* in = x.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
    fq_span(in + begin, o + begin, end - begin, inv, -zp, top - zp, scale);
  });
  return out;
}

// Per-tensor fake quantization of `x` with the range [lo, hi] (0-dim tensors), the formulas of
// `fake.rs`: the range widened to contain 0, scale = max((hi-lo)·(1/L), f32 eps),
// zero_point = clamp(-round(lo/scale), 0, L), out = (clamp(round(x/scale) + zp, 0, L) - zp)·scale.
at::Tensor fake_quant_tensor(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                             int64_t bits, bool generic) {
  if (is_half(x)) {
    return fake_quant_tensor(x.to(at::kFloat).contiguous(), lo, hi, bits, generic)
        .to(x.scalar_type());
  }
  const double levels = std::ldexp(1.0, static_cast<int>(bits)) - 1.0;
  const float eps = std::numeric_limits<float>::epsilon();
  if (!generic && bits <= 22 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
      x.is_contiguous()) {
    return fake_quant_host(x, scalar_of(lo), scalar_of(hi), levels);
  }
  at::Tensor l = lo.to(at::kFloat).clamp_max(0.0);
  at::Tensor h = hi.to(at::kFloat).clamp_min(0.0);
  at::Tensor scale = h.sub(l).mul_(1.0 / levels).clamp_min_(eps);
  at::Tensor zp = l.div(scale).round_().neg_().clamp_(0.0, levels).to(at::kInt);
  return at::fake_quantize_per_tensor_affine(x, scale.reshape({1}), zp.reshape({1}), 0,
                                             static_cast<int64_t>(levels));
}

// `t` in the scalar type recorded under `key` (a gradient in its input's type).
at::Tensor as_type(const at::Tensor& t, AutogradContext* ctx, const char* key) {
  if (!t.defined()) {
    return t;
  }
  const auto st = static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
  return t.scalar_type() == st ? t : t.to(st);
}

struct QConv2dFn : public torch::autograd::Function<QConv2dFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                            std::vector<int64_t> padding, std::vector<int64_t> dilation,
                            int64_t groups, int64_t bwd_bits) {
    // Under autocast the op runs in the autocast dtype, as `conv2d` would (torch's
    // `custom_fwd`); backward then works on the cast tensors it saved and returns gradients in
    // the inputs' own types.
    const at::Tensor xc = autocast_input(x);
    const at::Tensor wc = autocast_input(w);
    const bool has_bias = bias.has_value() && bias->defined();
    std::optional<at::Tensor> bc = has_bias ? std::optional<at::Tensor>(autocast_input(*bias))
                                            : std::nullopt;
    ctx->save_for_backward({xc, wc});
    ctx->saved_data["bias"] = has_bias;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["bits"] = bwd_bits;
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["w_type"] = static_cast<int64_t>(w.scalar_type());
    ctx->saved_data["b_type"] =
        static_cast<int64_t>(has_bias ? bias->scalar_type() : w.scalar_type());
    return at::convolution(xc, wc, bc, stride, padding, dilation, false, {0, 0}, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    at::Tensor g = sr_quantize(grads[0], ctx->saved_data["bits"].toInt(), false);
    std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                has_bias && ctx->needs_input_grad(2)};
    std::vector<int64_t> bias_sizes = {w.size(0)};
    auto stride = ctx->saved_data["stride"].toIntVector();
    auto padding = ctx->saved_data["padding"].toIntVector();
    auto dilation = ctx->saved_data["dilation"].toIntVector();
    std::vector<int64_t> output_padding = {0, 0};
    auto r = at::convolution_backward(
        to_type(g, x.scalar_type()), x, w, has_bias ? at::OptionalIntArrayRef(bias_sizes) : std::nullopt,
        stride, padding, dilation, false, output_padding, ctx->saved_data["groups"].toInt(),
        mask);
    return {as_type(std::get<0>(r), ctx, "x_type"), as_type(std::get<1>(r), ctx, "w_type"),
            has_bias ? as_type(std::get<2>(r), ctx, "b_type") : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct QLinearFn : public torch::autograd::Function<QLinearFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, int64_t bwd_bits) {
    // Autocast as in QConv2dFn.
    const at::Tensor xc = autocast_input(x);
    const at::Tensor wc = autocast_input(w);
    const bool has_bias = bias.has_value() && bias->defined();
    std::optional<at::Tensor> bc = has_bias ? std::optional<at::Tensor>(autocast_input(*bias))
                                            : std::nullopt;
    ctx->save_for_backward({xc, wc});
    ctx->saved_data["bias"] = has_bias;
    ctx->saved_data["bits"] = bwd_bits;
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["w_type"] = static_cast<int64_t>(w.scalar_type());
    ctx->saved_data["b_type"] =
        static_cast<int64_t>(has_bias ? bias->scalar_type() : w.scalar_type());
    return at::linear(xc, wc, bc);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    at::Tensor g =
        to_type(sr_quantize(grads[0], ctx->saved_data["bits"].toInt(), false), x.scalar_type());
    const int64_t out_features = w.size(0);
    at::Tensor g2 = g.reshape({-1, out_features});
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = g.matmul(w);
    }
    if (ctx->needs_input_grad(1)) {
      gw = g2.t().mm(x.reshape({-1, x.size(-1)}));
    }
    if (has_bias && ctx->needs_input_grad(2)) {
      gb = g2.sum(0);
    }
    return {as_type(gx, ctx, "x_type"), as_type(gw, ctx, "w_type"), as_type(gb, ctx, "b_type"),
            at::Tensor()};
  }
};

// Per-tensor fake quantization with a pure straight-through estimator: the gradient passes
// unchanged (as in Banner et al.'s `UniformQuantize`, which CPT's code uses). No mask is stored
// or multiplied in backward.
struct FakeQuantFn : public torch::autograd::Function<FakeQuantFn> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& x, const at::Tensor& lo,
                            const at::Tensor& hi, int64_t bits, bool generic) {
    return fake_quant_tensor(x, lo, hi, bits, generic);
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list grads) {
    return {grads[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Per-tensor fake quantization with the range given on the host (the fused CPU path of a
// training pass, whose range the host already has), pure straight-through estimator.
struct FakeQuantHostFn : public torch::autograd::Function<FakeQuantHostFn> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& x, double lo, double hi,
                            int64_t bits) {
    const double levels = std::ldexp(1.0, static_cast<int>(bits)) - 1.0;
    return fake_quant_host(x, static_cast<float>(lo), static_cast<float>(hi), levels);
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list grads) {
    return {grads[0], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Per-channel weight fake quantization, pure straight-through estimator in backward.
struct FakeQuantChannelFn : public torch::autograd::Function<FakeQuantChannelFn> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& w, int64_t bits,
                            bool generic) {
    return fake_quant_channels(w, bits, generic);
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list grads) {
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};

struct GradQuantFn : public torch::autograd::Function<GradQuantFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t bits) {
    ctx->saved_data["bits"] = bits;
    // A copy, not `x` itself: outputs that alias an input may not be modified in place.
    return x.clone();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {sr_quantize(grads[0], ctx->saved_data["bits"].toInt(), false), at::Tensor()};
  }
};

std::optional<at::Tensor> opt(const at::Tensor* t) {
  if (t == nullptr || !t->defined()) {
    return std::nullopt;
  }
  return *t;
}

}  // namespace

#define CPT_PROTECT(...)                 \
  try {                                   \
    __VA_ARGS__                           \
  } catch (const std::exception& e) {     \
    return dup_error(e.what());           \
  } catch (...) {                         \
    return dup_error(nullptr);            \
  }                                       \
  return nullptr;

extern "C" {

void cpt_free_error(char* err) { free(err); }

// Conv2d (no transposition, 2-D stride/padding/dilation) whose backward quantizes the gradient
// w.r.t. its output to `bwd_bits` first. `bias` may be null.
char* cpt_qconv2d(const at::Tensor* x, const at::Tensor* w, const at::Tensor* bias,
                  const int64_t* stride, const int64_t* padding, const int64_t* dilation,
                  int64_t groups, int64_t bwd_bits, at::Tensor** out) {
  CPT_PROTECT({
    std::vector<int64_t> s(stride, stride + 2), p(padding, padding + 2), d(dilation, dilation + 2);
    *out = new at::Tensor(QConv2dFn::apply(*x, *w, opt(bias), s, p, d, groups, bwd_bits));
  })
}

// Linear over the last dimension, backward quantizing the output gradient; `bias` may be null.
char* cpt_qlinear(const at::Tensor* x, const at::Tensor* w, const at::Tensor* bias,
                  int64_t bwd_bits, at::Tensor** out) {
  CPT_PROTECT({ *out = new at::Tensor(QLinearFn::apply(*x, *w, opt(bias), bwd_bits)); })
}

// Identity (a copy) in forward; backward quantizes the incoming gradient.
char* cpt_grad_quant(const at::Tensor* x, int64_t bits, at::Tensor** out) {
  CPT_PROTECT({ *out = new at::Tensor(GradQuantFn::apply(*x, bits)); })
}

// Per-tensor fake quantization of `x` with the range [lo, hi] (0-dim tensors) to `bits` in
// 1..=31, straight-through in backward. `generic` forces the ATen path (for tests).
char* cpt_fake_quant(const at::Tensor* x, const at::Tensor* lo, const at::Tensor* hi,
                     int64_t bits, int generic, at::Tensor** out) {
  CPT_PROTECT({ *out = new at::Tensor(FakeQuantFn::apply(*x, *lo, *hi, bits, generic != 0)); })
}

// A training pass of an activation quantizer (`ActRange::quantize`) in one call on the CPU:
// the batch range (one aminmax, read through its pointer), the running range `range` ([min,
// max], f32) set to it when unset (min > max) or moved by `range.lerp_(batch, momentum)` (the
// kernel the ATen path uses, so the same numbers), and the fused quantizer over the batch range.
// Where that path does not apply (not a contiguous f32 CPU tensor, above 22 bits, a range of
// another type) `*out` is null and nothing was changed: the caller takes the ATen path.
char* cpt_act_quant_train(const at::Tensor* x, const at::Tensor* range, double momentum,
                          int64_t bits, at::Tensor** out) {
  CPT_PROTECT({
    *out = nullptr;
    const at::Tensor& r = *range;
    const bool fused = bits <= 22 && x->device().is_cpu() && x->scalar_type() == at::kFloat &&
                       x->is_contiguous() && x->numel() > 0 && r.device().is_cpu() &&
                       r.scalar_type() == at::kFloat && r.is_contiguous() && r.numel() == 2;
    if (fused) {
      float lo, hi;
      {
        at::NoGradGuard no_grad;
        minmax_cpu(x->const_data_ptr<float>(), x->numel(), &lo, &hi);
        float* rp = r.mutable_data_ptr<float>();
        if (rp[0] > rp[1]) {
          rp[0] = lo;
          rp[1] = hi;
        } else {
          at::Tensor b = at::empty({2}, r.options());
          float* bp = b.mutable_data_ptr<float>();
          bp[0] = lo;
          bp[1] = hi;
          r.lerp_(b, momentum);
        }
      }
      *out = new at::Tensor(FakeQuantHostFn::apply(*x, lo, hi, bits));
    }
  })
}

// Per-output-channel fake quantization of the weight `w` to `bits` in 1..=31, each channel over
// its own range, straight-through in backward. `generic` forces the ATen path (for tests).
char* cpt_fake_quant_channels(const at::Tensor* w, int64_t bits, int generic, at::Tensor** out) {
  CPT_PROTECT({ *out = new at::Tensor(FakeQuantChannelFn::apply(*w, bits, generic != 0)); })
}

// Stochastic-rounding quantization without autograd: in place on `t`, or into a new tensor.
// `generic` forces the ATen-op path (for tests).
char* cpt_sr_quantize(const at::Tensor* t, int64_t bits, int inplace, int generic,
                      at::Tensor** out) {
  CPT_PROTECT({
    at::NoGradGuard no_grad;
    at::Tensor r = sr_quantize(*t, bits, inplace != 0, generic != 0);
    if (out != nullptr) {
      *out = new at::Tensor(r);
    }
  })
}

// In place on each slice [offsets[i], offsets[i] + lens[i]) of the 1-D tensor `flat`.
char* cpt_sr_quantize_segments(const at::Tensor* flat, const int64_t* offsets,
                               const int64_t* lens, int64_t n, int64_t bits) {
  CPT_PROTECT({
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor slice = flat->narrow(0, offsets[i], lens[i]);
      sr_quantize(slice, bits, true);
    }
  })
}

// Whether autograd records operations on this thread (tch has no getter).
int cpt_grad_enabled() { return at::GradMode::is_enabled() ? 1 : 0; }

}  // extern "C"
