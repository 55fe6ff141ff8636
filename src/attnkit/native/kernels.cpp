// attnkit's CPU kernels for decoding and training: each replaces several PyTorch operations with one pass
// over the data, threaded with ATen's own thread pool (at::parallel_for).
// Built on first use by attnkit/native/__init__.py (torch.utils.cpp_extension); float32, CPU only.
//
//   decode_attention(q (n, h, i, d), k (n, h, t, d), v (n, h, t, e), key_mask (n, t) bool or None, scale)
//       -> context (n, h, i, e): softmax(scale · q kᵀ over the allowed keys) v; a row with no allowed key is 0.
//   log_softmax_topk(logits (r, V), k, blocked) -> (values (r, k) float32, indices (r, k) int64)
//       the k largest log-softmax entries of every row, best first (the lower index first on ties);
//       the token `blocked` (if >= 0) is left out after normalising, as if its log-prob were -inf.
//   add_layer_norm(x (r, c), y (r, c), weight (c), bias (c), eps) -> LayerNorm(x + y) over the last axis.
//   pack_panels(w (n, k)) -> the weight as panels of 32 columns; linear_panels(x, panels, bias, n, relu) -> x Wᵀ + b;
//   linear_log_softmax_topk(x, panels, bias, n, k, blocked) -> log_softmax_topk of x Wᵀ + b, the logits kept in cache;
//   decoder_layer_step(...) -> one position through a Transformer decoder layer (see there).
//   greedy_steps(...) -> up to `steps` greedy positions through embedding, stack and output layer (see there).
//
// and for training:
//   smoothed_nll_forward(logits (n, V), target (n,), eps) -> (loss (n,), lse (n,)):
//       (1 - eps)(lse - x_y) + eps (lse - mean_v x_v) with lse = log sum_v exp x_v: label-smoothed cross-entropy.
//   smoothed_nll_backward(logits, lse, target, weight (n,), eps) -> grad (n, V) = w (exp(x - lse) - eps/V - (1 - eps) onehot(y)).
//   dropout_mask(like, p, seed) -> a tensor shaped like `like` of 0 (probability round(p 2^16) / 2^16) or 1/(1 - p):
//       element i keeps iff the 16-bit quarter (i mod 32) / 8 of splitmix64(seed + 8 (i / 32) + i mod 8) >= round(p 2^16);
//       a function of (seed, i) only, so the same for any number of threads.
//   dropout_apply(x, p, seed) -> x * dropout_mask(x, p, seed) in one pass (x read in its contiguous order); the
//       backward pass of dropout is dropout_apply(grad, p, seed): the mask is drawn again, never stored.
//   relu_dropout_apply(x, p, seed) -> relu(x) * dropout_mask(x, p, seed) in one pass, the same bits as the two
//       operations one after the other; relu_dropout_backward(grad, out, p) -> the gradient with respect to x
//       from the output alone: out > 0 where the element was kept and positive (grad / (1 - p) there, else 0).
//   residual_dropout_apply(r, x, p, seed) -> r + x * dropout_mask(x, p, seed) in one pass: the product rounded
//       before the sum, the same bits as r + dropout_apply(x, p, seed).

#include <ATen/ATen.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

namespace {

// 16 floats: one AVX-512 register, two AVX2 ones; GCC/Clang vector extensions lower it to what the
// machine has (the extension is compiled with -march=native on the machine that runs it).
constexpr int kLanes = 16;
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float x) { return vf{} + x; }
// The larger of a and b per lane, NaN if either is (as torch.max propagates NaN).
inline vf vmax(vf a, vf b) { return (a > b) | (a != a) ? a : b; }
inline float nanmax(float a, float b) { return (a > b || a != a) ? a : b; }
inline float hsum(vf v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v[0];
}
inline float hmax(vf v) {
  v = vmax(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v = vmax(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  v = vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return v[0];
}

inline float dot(const float* a, const float* b, int64_t n) {
  vf acc{};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += load(a + i) * load(b + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// exp(x) for x <= 0 (Cody-Waite reduction and the Cephes expf polynomial, ~1 ulp); x below -87 gives
// ~1e-38 instead of a denormal or 0. The vector version computes the same per lane.
inline vf exp_nonpositive(vf x) {
  x = x < -87.f ? splat(-87.f) : x;  // NaN stays NaN
  const vf n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  const vf r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * reinterpret_cast<const vf&>(bits);
}
inline float exp_nonpositive(float x) { return exp_nonpositive(splat(x))[0]; }

// One query over t keys: o = softmax(sc · q kᵀ) v. D, E > 0: head dims known at compile time (multiples
// of 16, the query and the context kept in registers); D = E = 0: any dims (d, e).
template <int D, int E>
void attend_row(const float* qr, float sc, const float* kb, int64_t ks, const float* vb, int64_t vs, const bool* mb,
                int64_t ms, int64_t t, float* w, float* qs, float* acc, float* o, int64_t d = D, int64_t e = E) {
  const float ninf = -std::numeric_limits<float>::infinity();
  float mx = ninf;
  if constexpr (D > 0) {
    vf q[D / kLanes];
    for (int c = 0; c < D / kLanes; ++c) q[c] = load(qr + c * kLanes) * sc;  // scaled first, as scores.scaled_dot
    for (int64_t j = 0; j < t; ++j) {
      if (mb && !mb[j * ms]) {
        w[j] = ninf;
        continue;
      }
      const float* kr = kb + j * ks;
      vf x = q[0] * load(kr);
      for (int c = 1; c < D / kLanes; ++c) x += q[c] * load(kr + c * kLanes);
      w[j] = hsum(x);
      mx = nanmax(mx, w[j]);
    }
  } else {
    for (int64_t c = 0; c < d; ++c) qs[c] = qr[c] * sc;
    for (int64_t j = 0; j < t; ++j) {
      if (mb && !mb[j * ms]) {
        w[j] = ninf;
        continue;
      }
      w[j] = dot(qs, kb + j * ks, d);
      mx = nanmax(mx, w[j]);
    }
  }
  if (mx == ninf) {  // no key allowed (or no keys): a zero context, as the eager backend gives
    std::fill(o, o + e, 0.f);
    return;
  }
  vf sums{};
  int64_t j = 0;
  for (; j + kLanes <= t; j += kLanes) {
    const vf x = load(w + j);
    const vf p = x == ninf ? vf{} : exp_nonpositive(x - mx);  // a masked key weighs exactly 0
    store(w + j, p);
    sums += p;
  }
  float sum = hsum(sums);
  for (; j < t; ++j) {
    w[j] = w[j] == ninf ? 0.f : exp_nonpositive(w[j] - mx);
    sum += w[j];
  }
  const float inv = 1.f / sum;
  if constexpr (E > 0) {
    vf a[E / kLanes] = {};
    for (j = 0; j < t; ++j) {
      const float* vr = vb + j * vs;
      for (int c = 0; c < E / kLanes; ++c) a[c] += w[j] * load(vr + c * kLanes);
    }
    for (int c = 0; c < E / kLanes; ++c) store(o + c * kLanes, a[c] * inv);
  } else {
    std::fill(acc, acc + e, 0.f);
    for (j = 0; j < t; ++j) {
      const float p = w[j];
      const float* vr = vb + j * vs;
      for (int64_t c = 0; c < e; ++c) acc[c] += p * vr[c];
    }
    for (int64_t c = 0; c < e; ++c) o[c] = acc[c] * inv;
  }
}

// attend_row with the head dims as compile-time constants where they are the common ones.
inline void attend_any(const float* qr, float sc, const float* kb, int64_t ks, const float* vb, int64_t vs,
                       const bool* mb, int64_t ms, int64_t t, float* w, float* qs, float* acc, float* o, int64_t d,
                       int64_t e) {
  if (d == 64 && e == 64)
    attend_row<64, 64>(qr, sc, kb, ks, vb, vs, mb, ms, t, w, qs, acc, o);
  else if (d == 32 && e == 32)
    attend_row<32, 32>(qr, sc, kb, ks, vb, vs, mb, ms, t, w, qs, acc, o);
  else if (d == 128 && e == 128)
    attend_row<128, 128>(qr, sc, kb, ks, vb, vs, mb, ms, t, w, qs, acc, o);
  else
    attend_row<0, 0>(qr, sc, kb, ks, vb, vs, mb, ms, t, w, qs, acc, o, d, e);
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void check_float_cpu(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor, got ",
              t.scalar_type(), " on ", t.device());
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const c10::optional<at::Tensor>& key_mask, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "decode_attention: q, k, v must be 4-D (n, h, ., d), got ",
              q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  check_float_cpu(q, "q");
  check_float_cpu(k, "k");
  check_float_cpu(v, "v");
  const int64_t n = q.size(0), h = q.size(1), nq = q.size(2), d = q.size(3), t = k.size(2), e = v.size(3);
  TORCH_CHECK(k.size(0) == n && k.size(1) == h && k.size(3) == d, "decode_attention: k ", k.sizes(), " does not fit q ",
              q.sizes());
  TORCH_CHECK(v.size(0) == n && v.size(1) == h && v.size(2) == t, "decode_attention: v ", v.sizes(), " does not fit k ",
              k.sizes());
  TORCH_CHECK(q.stride(3) == 1, "decode_attention: the last axis of q must be contiguous, q has strides ", q.strides());
  TORCH_CHECK(k.stride(3) == 1, "decode_attention: the last axis of k must be contiguous, k has strides ", k.strides());
  TORCH_CHECK(v.stride(3) == 1, "decode_attention: the last axis of v must be contiguous, v has strides ", v.strides());
  const bool* mp = nullptr;
  int64_t ms0 = 0, ms1 = 0;
  at::Tensor mask;
  if (key_mask.has_value() && key_mask->defined()) {
    mask = *key_mask;
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 2 && mask.size(0) == n && mask.size(1) == t,
                "decode_attention: key_mask must be a bool (n, t) = (", n, ", ", t, ") tensor, got ", mask.scalar_type(),
                " ", mask.sizes());
    mp = mask.data_ptr<bool>();
    ms0 = mask.stride(0);
    ms1 = mask.stride(1);
  }
  auto out = at::empty({n, h, nq, e}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), qs2 = q.stride(2);
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), ks2 = k.stride(2);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2);
  const float sc = static_cast<float>(scale);
  const float ninf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, n * h, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> w(t), qs(d), acc(e);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / h, hh = bh % h;
      const float* kb = kp + b * ks0 + hh * ks1;
      const float* vb = vp + b * vs0 + hh * vs1;
      const bool* mb = mp ? mp + b * ms0 : nullptr;
      for (int64_t i = 0; i < nq; ++i) {
        const float* qr = qp + b * qs0 + hh * qs1 + i * qs2;
        float* o = op + ((b * h + hh) * nq + i) * e;
        attend_any(qr, sc, kb, ks2, vb, vs2, mb, ms1, t, w.data(), qs.data(), acc.data(), o, d, e);
      }
    }
  });
  return out;
}

// The k largest of the values offered, largest first; NaN ranks above every number (as torch.topk ranks it)
// and among equal values the one offered first stays first: offered in index order (or, merging parts, part by
// part in column order, each in its own order), the lower index comes first.
struct TopK {
  int64_t k, filled = 0;
  float* top;
  int64_t* idx;

  static bool above(float a, float b) { return a > b || (a != a && b == b); }
  // whether a value v could enter: the list is not full or v is above its last
  bool wants(float v) const { return filled < k || above(v, top[k - 1]); }
  void offer(float value, int64_t i) {
    if (!wants(value)) return;  // ties keep the earlier (lower) index
    int64_t pos = std::min(filled, k - 1);
    while (pos > 0 && above(value, top[pos - 1])) {
      top[pos] = top[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    top[pos] = value;
    idx[pos] = i;
    filled = std::min(filled + 1, k);
  }
};

// Whether any lane of x could enter `top` (what top.wants(hmax(x)) tells, without the horizontal maximum).
inline bool any_above(vf x, const TopK& top) {
  if (top.filled < top.k) return true;
  const float last = top.top[top.k - 1];
  if (last != last) return false;  // nothing ranks above NaN
#if defined(__AVX512F__)
  __m512 v;
  std::memcpy(&v, &x, sizeof v);
  const __m512 t = _mm512_set1_ps(last);
  return (_mm512_cmp_ps_mask(v, t, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) != 0;
#else
  return top.wants(hmax(x));
#endif
}

// The maximum of row[0, width) (NaN if any is) and its k largest entries into `top` as indices first + j,
// leaving out index `blocked` (the maximum counts every entry: normalising comes before blocking); a block
// of 16 is looked inside only when its maximum could enter.
inline float scan_row(const float* row, int64_t width, int64_t first, int64_t blocked, TopK& top) {
  vf maxes = splat(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) {
    const vf x = load(row + j);
    maxes = vmax(maxes, x);
    if (any_above(x, top))
      for (int l = 0; l < kLanes; ++l)
        if (first + j + l != blocked) top.offer(row[j + l], first + j + l);
  }
  float mx = hmax(maxes);
  for (; j < width; ++j) {
    mx = nanmax(mx, row[j]);
    if (first + j != blocked) top.offer(row[j], first + j);
  }
  return mx;
}

// The sum of exp(row[j] - mx) over row[0, width).
inline float sum_exp(const float* row, int64_t width, float mx) {
  vf sums{};
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) sums += exp_nonpositive(load(row + j) - mx);
  float sum = hsum(sums);
  for (; j < width; ++j) sum += exp_nonpositive(row[j] - mx);
  return sum;
}

void check_topk(int64_t k, int64_t blocked, int64_t vocab, const char* what) {
  const int64_t usable = vocab - (blocked >= 0 && blocked < vocab ? 1 : 0);
  TORCH_CHECK(k >= 1 && k <= usable, what, ": k must be in [1, ", usable, "], got ", k);
}

std::tuple<at::Tensor, at::Tensor> log_softmax_topk(const at::Tensor& logits, int64_t k, int64_t blocked) {
  check_float_cpu(logits, "logits");
  TORCH_CHECK(logits.dim() == 2, "log_softmax_topk: logits must be (rows, vocabulary), got ", logits.sizes());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_topk(k, blocked, vocab, "log_softmax_topk");
  auto x = logits.contiguous();
  auto values = at::empty({rows, k}, logits.options());
  auto indices = at::empty({rows, k}, logits.options().dtype(at::kLong));
  const float* xp = x.data_ptr<float>();
  float* vp = values.data_ptr<float>();
  int64_t* ip = indices.data_ptr<int64_t>();
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * vocab;
      TopK top{k, 0, vp + r * k, ip + r * k};
      const float mx = scan_row(row, vocab, 0, blocked, top);
      const float lse = std::log(sum_exp(row, vocab, mx));
      for (int64_t c = 0; c < k; ++c) top.top[c] = top.top[c] - mx - lse;  // as log_softmax writes it: x - max - log(sum)
    }
  });
  return {values, indices};
}

// One row of LayerNorm(a + b) (b may be nullptr: LayerNorm(a)) over c values, into o (which may be a or b).
inline void norm_row(const float* a, const float* b, const float* wp, const float* bp, float eps, float* o, int64_t c) {
  vf sv{};
  int64_t i = 0;
  for (; i + kLanes <= c; i += kLanes) {
    const vf x = b ? load(a + i) + load(b + i) : load(a + i);
    store(o + i, x);
    sv += x;
  }
  float s = hsum(sv);
  for (; i < c; ++i) {
    o[i] = b ? a[i] + b[i] : a[i];
    s += o[i];
  }
  const float mean = s / static_cast<float>(c);
  vf vv{};
  for (i = 0; i + kLanes <= c; i += kLanes) {
    const vf x = load(o + i) - mean;
    vv += x * x;
  }
  float var = hsum(vv);
  for (; i < c; ++i) var += (o[i] - mean) * (o[i] - mean);
  const float rstd = 1.f / std::sqrt(var / static_cast<float>(c) + eps);
  for (i = 0; i + kLanes <= c; i += kLanes) store(o + i, (load(o + i) - mean) * rstd * load(wp + i) + load(bp + i));
  for (; i < c; ++i) o[i] = (o[i] - mean) * rstd * wp[i] + bp[i];
}

at::Tensor add_layer_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight, const at::Tensor& bias,
                          double eps) {
  check_float_cpu(x, "x");
  check_float_cpu(y, "y");
  check_float_cpu(weight, "weight");
  check_float_cpu(bias, "bias");
  TORCH_CHECK(x.sizes() == y.sizes(), "add_layer_norm: x ", x.sizes(), " and y ", y.sizes(), " differ");
  const int64_t c = x.size(-1);
  TORCH_CHECK(weight.numel() == c && bias.numel() == c, "add_layer_norm: weight and bias must have ", c, " entries");
  auto xc = x.contiguous(), yc = y.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
  auto out = at::empty_like(xc);
  const int64_t rows = c ? xc.numel() / c : 0;
  const float* xp = xc.data_ptr<float>();
  const float* yp = yc.data_ptr<float>();
  const float* wp = wc.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // a decoding step's few rows (under ~32k values) cost less on one thread than the fork/join of two
  at::parallel_for(0, rows, std::max<int64_t>(16, 32768 / std::max<int64_t>(c, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) norm_row(xp + r * c, yp + r * c, wp, bp, static_cast<float>(eps), op + r * c, c);
  });
  return out;
}


// ------------------------------------------------------------------------------------------- a decoder step

// Products for a decoding step's few rows: y = x Wᵀ + b (then relu) with W (n, k) stored as panels of kPanel
// columns, (ceil(n / kPanel), k, kPanel), so that a block of rows times one panel runs from registers: MR rows ×
// kPanel columns of accumulators, one k at a time (the k sums in order 0, 1, ..., then the bias).
constexpr int kPanel = 32;

at::Tensor pack_panels(const at::Tensor& w) {
  check_float_cpu(w, "weight");
  TORCH_CHECK(w.dim() == 2, "pack_panels: the weight must be (out, in), got ", w.sizes());
  const int64_t n = w.size(0), k = w.size(1), panels = (n + kPanel - 1) / kPanel;
  auto out = at::zeros({panels, k, kPanel}, w.options());
  const auto wc = w.contiguous();
  const float* wp = wc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t c = 0; c < n; ++c)
    for (int64_t j = 0; j < k; ++j) op[(c / kPanel) * k * kPanel + j * kPanel + c % kPanel] = wp[c * k + j];
  return out;
}

// While a block of rows runs through one panel, it prefetches `lines` cache lines from `ahead` into L2 (its share of
// the panel the rows take next): a decoding step's weights stream from L3, and a panel's first read would
// otherwise wait for memory while the cores sit idle.
template <int MR>
void panel_block(const float* a, int64_t lda, const float* panel, int64_t k, const float* bias, bool relu, float* c,
                 int64_t ldc, int64_t cols, const char* ahead, int64_t lines) {
  vf c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = vf{};
  auto step = [&](int64_t j) {
    const vf b0 = load(panel + j * kPanel), b1 = load(panel + j * kPanel + kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float x = a[r * lda + j];
      c0[r] += x * b0;
      c1[r] += x * b1;
    }
  };
  int64_t j = 0;
  if (lines > k)  // (at most 2 k: a panel has 2 lines per k) two lines with each k
    for (; j < k && 2 * j < lines; ++j) {
      __builtin_prefetch(ahead + 2 * j * 64, 0, 2);
      __builtin_prefetch(ahead + (2 * j + 1) * 64, 0, 2);
      step(j);
    }
  else
    for (; j < lines; ++j) {
      __builtin_prefetch(ahead + j * 64, 0, 2);
      step(j);
    }
  for (; j < k; ++j) step(j);
  float bb[kPanel] = {};
  if (bias) std::memcpy(bb, bias, cols * sizeof(float));
  const vf bb0 = load(bb), bb1 = load(bb + kLanes);
  for (int r = 0; r < MR; ++r) {
    vf y0 = c0[r] + bb0, y1 = c1[r] + bb1;
    if (relu) {  // NaN stays NaN, as with torch.relu
      y0 = y0 < 0.f ? vf{} : y0;
      y1 = y1 < 0.f ? vf{} : y1;
    }
    if (cols == kPanel) {
      store(c + r * ldc, y0);
      store(c + r * ldc + kLanes, y1);
    } else {
      float t[kPanel];
      store(t, y0);
      store(t + kLanes, y1);
      std::memcpy(c + r * ldc, t, cols * sizeof(float));
    }
  }
}

template <int MR>
void panel_rows(const float* a, int64_t lda, const float* panel, int64_t k, const float* bias, bool relu, float* c,
                int64_t ldc, int64_t cols, int64_t rows, const char* ahead, int64_t lines) {
  if constexpr (MR > 0) {
    if (rows == MR)
      panel_block<MR>(a, lda, panel, k, bias, relu, c, ldc, cols, ahead, lines);
    else
      panel_rows<MR - 1>(a, lda, panel, k, bias, relu, c, ldc, cols, rows, ahead, lines);
  }
}

constexpr int kRows = 8;  // rows per block: 16 accumulators (12 was slower for 1024 inputs and 256 rows)

// Rows [r0, r1) of x (·, k) Wᵀ + b (W (n, k) as pack_panels gave it) for the columns of panels [p0, p1), on the
// calling thread: row r's column c goes to y + r ldy + c - c0 (y may hold only the columns from c0 on).
void panel_part(const float* x, int64_t k, const float* panels, int64_t n, const float* bias, bool relu, float* y,
                int64_t ldy, int64_t c0, int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
  const int64_t lines = k * kPanel * static_cast<int64_t>(sizeof(float)) / 64;  // a panel's cache lines
  const int64_t blocks = (r1 - r0 + kRows - 1) / kRows;
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = panels + p * k * kPanel;
    const int64_t cols = std::min<int64_t>(kPanel, n - p * kPanel);
    const float* bp = bias ? bias + p * kPanel : nullptr;
    float* yp = y + p * kPanel - c0;
    // block i prefetches its share [i lines / blocks, (i + 1) lines / blocks) of the next panel, if there is one
    const char* next = reinterpret_cast<const char*>(panel + k * kPanel);
    const int64_t ahead = p + 1 < p1 ? lines : 0;
    auto share = [&](int64_t i) { return std::make_pair(next + i * ahead / blocks * 64, (i + 1) * ahead / blocks - i * ahead / blocks); };
    int64_t r = r0, i = 0;
    for (; r + kRows <= r1; r += kRows, ++i) {
      const auto [from, count] = share(i);
      panel_block<kRows>(x + r * k, k, panel, k, bp, relu, yp + r * ldy, ldy, cols, from, count);
    }
    if (r < r1) {
      const auto [from, count] = share(i);
      panel_rows<kRows - 1>(x + r * k, k, panel, k, bp, relu, yp + r * ldy, ldy, cols, r1 - r, from, count);
    }
  }
}

// y (m, n) = x (m, k) Wᵀ + b, the threads sharing out the panels.
void panel_linear(const float* x, int64_t m, int64_t k, const float* panels, int64_t n, const float* bias, bool relu,
                  float* y) {
  at::parallel_for(0, (n + kPanel - 1) / kPanel, 1, [&](int64_t begin, int64_t end) {
    panel_part(x, k, panels, n, bias, relu, y, n, 0, 0, m, begin, end);
  });
}

// Whether `panels` holds an (n, k) weight as pack_panels gives it.
bool holds_panels(const at::Tensor& panels, int64_t n, int64_t k, const std::string& name = "panels") {
  check_float_cpu(panels, name);
  return panels.dim() == 3 && panels.is_contiguous() && panels.size(1) == k && panels.size(2) == kPanel &&
         panels.size(0) == (n + kPanel - 1) / kPanel;
}

// A product's bias (n,), checked and made contiguous into `keep`; nullptr without one. `what` names it in errors.
const float* bias_data(const c10::optional<at::Tensor>& bias, int64_t n, const std::string& what, at::Tensor& keep) {
  if (!bias.has_value() || !bias->defined()) return nullptr;
  check_float_cpu(*bias, what);
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, what, " must be (", n, "), got ", bias->sizes());
  keep = bias->contiguous();
  return keep.data_ptr<float>();
}

at::Tensor linear_panels(const at::Tensor& x, const at::Tensor& panels, const c10::optional<at::Tensor>& bias, int64_t n,
                         bool relu) {
  check_float_cpu(x, "x");
  TORCH_CHECK(x.dim() == 2, "linear_panels: x must be (m, k), got ", x.sizes());
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(holds_panels(panels, n, k), "linear_panels: panels ", panels.sizes(), " do not hold a (", n, ", ", k,
              ") weight");
  at::Tensor bc;
  const float* bp = bias_data(bias, n, "linear_panels: bias", bc);
  const auto xc = x.contiguous();
  auto y = at::empty({m, n}, x.options());
  panel_linear(xc.data_ptr<float>(), m, k, panels.data_ptr<float>(), n, bp, relu, y.data_ptr<float>());
  return y;
}

// The k best log-softmax entries of every row of x (m, d) Wᵀ + b, as log_softmax_topk(linear_panels(...)) gives
// them, without the (m, n) logits ever leaving a thread's cache: the threads share out the panels, each computes
// its columns for a chunk of rows at a time into its own buffer (~1 MB) and keeps, per row, its columns'
// maximum, their sum of exp(x - maximum) and their k best; the parts are then merged (sum_p s_p exp(max_p - max)).
std::tuple<at::Tensor, at::Tensor> linear_log_softmax_topk(const at::Tensor& x, const at::Tensor& panels,
                                                           const c10::optional<at::Tensor>& bias, int64_t n, int64_t k,
                                                           int64_t blocked) {
  check_float_cpu(x, "x");
  TORCH_CHECK(x.dim() == 2, "linear_log_softmax_topk: x must be (m, d), got ", x.sizes());
  const int64_t m = x.size(0), d = x.size(1);
  TORCH_CHECK(holds_panels(panels, n, d), "linear_log_softmax_topk: panels ", panels.sizes(), " do not hold a (", n,
              ", ", d, ") weight");
  check_topk(k, blocked, n, "linear_log_softmax_topk");
  at::Tensor bc;
  const float* bp = bias_data(bias, n, "linear_log_softmax_topk: bias", bc);
  const auto xc = x.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  const int64_t count = (n + kPanel - 1) / kPanel;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  auto part_top = at::empty({parts, m, k}, x.options());
  auto part_idx = at::empty({parts, m, k}, x.options().dtype(at::kLong));
  auto part_max = at::empty({parts, m}, x.options()), part_sum = at::empty({parts, m}, x.options());
  auto part_filled = std::vector<int64_t>(parts * m, 0);
  float *tp = part_top.data_ptr<float>(), *mp = part_max.data_ptr<float>(), *sp = part_sum.data_ptr<float>();
  int64_t* ip = part_idx.data_ptr<int64_t>();
  at::parallel_for(0, parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t p0 = q * count / parts, p1 = (q + 1) * count / parts;
      const int64_t c0 = p0 * kPanel, width = std::min(n, p1 * kPanel) - c0;
      // rows per chunk: the chunk's logits in ~1 MB, a multiple of kRows
      const int64_t chunk = std::max<int64_t>(kRows, (262144 / std::max<int64_t>(width, 1)) / kRows * kRows);
      std::vector<float> buffer(std::min(chunk, m) * width);
      for (int64_t r0 = 0; r0 < m; r0 += chunk) {
        const int64_t r1 = std::min(m, r0 + chunk);
        panel_part(xp + r0 * d, d, wp, n, bp, false, buffer.data(), width, c0, 0, r1 - r0, p0, p1);
        for (int64_t r = r0; r < r1; ++r) {
          const float* row = buffer.data() + (r - r0) * width;
          const int64_t at = q * m + r;
          TopK top{k, 0, tp + at * k, ip + at * k};
          mp[at] = scan_row(row, width, c0, blocked, top);
          sp[at] = sum_exp(row, width, mp[at]);
          part_filled[at] = top.filled;
        }
      }
    }
  });
  auto values = at::empty({m, k}, x.options());
  auto indices = at::empty({m, k}, x.options().dtype(at::kLong));
  float* vp = values.data_ptr<float>();
  int64_t* op = indices.data_ptr<int64_t>();
  at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float mx = mp[r];
      for (int64_t q = 1; q < parts; ++q) mx = nanmax(mx, mp[q * m + r]);
      float sum = 0.f;
      TopK top{k, 0, vp + r * k, op + r * k};
      for (int64_t q = 0; q < parts; ++q) {  // in column order: equal values keep the lower index first
        const int64_t at = q * m + r;
        if (mp[at] == mx)
          sum += sp[at];
        else if (mp[at] != -std::numeric_limits<float>::infinity())  // a part of -inf alone adds nothing
          sum += sp[at] * exp_nonpositive(mp[at] - mx);
        for (int64_t c = 0; c < part_filled[at]; ++c) top.offer(tp[at * k + c], ip[at * k + c]);
      }
      const float lse = std::log(sum);
      for (int64_t c = 0; c < k; ++c) top.top[c] = top.top[c] - mx - lse;
    }
  });
  return {values, indices};
}

// One query per row and head: row r's head hh reads q at qp + r qr + hh d, the keys/values of memory row r / g
// (key j of head hh at kp + (r / g) k0 + hh k1 + j k2), t keys, mask row r (mp + r m0, key j at + j m1) or none;
// the context goes to op + r h e + hh e, i.e. (n, h·e) with the heads merged.
struct RowAttention {
  const float* qp;
  int64_t qr;
  const float* kp;
  int64_t k0, k1, k2;
  const float* vp;
  int64_t v0, v1, v2;
  const bool* mp;
  int64_t m0, m1, g, h, d, e, t;
  float sc;
  float* op;

  // (row, head) pairs [begin, end) on the calling thread; w (t), qs (d) and acc (e) are scratch.
  void run(int64_t begin, int64_t end, float* w, float* qs, float* acc) const {
    for (int64_t rh = begin; rh < end; ++rh) {
      const int64_t r = rh / h, hh = rh % h, m = r / g;
      attend_any(qp + r * qr + hh * d, sc, kp + m * k0 + hh * k1, k2, vp + m * v0 + hh * v1, v2,
                 mp ? mp + r * m0 : nullptr, m1, t, w, qs, acc, op + (r * h + hh) * e, d, e);
    }
  }
};

// Scratch for a decoding position's rows through a decoder layer: the layers of a stack share it, since a thread
// takes its rows through one layer before the next.
struct StepScratch {
  at::Tensor qkv, ctx, y, x1, x2, hid, normed;
  StepScratch(int64_t n, int64_t dm, int64_t ff, bool pre_norm, const at::TensorOptions& o)
      : qkv(at::empty({n, 3 * dm}, o)), ctx(at::empty({n, dm}, o)), y(at::empty({n, dm}, o)),
        x1(at::empty({n, dm}, o)), x2(at::empty({n, dm}, o)), hid(at::empty({n, ff}, o)),
        normed(pre_norm ? at::empty({n, dm}, o) : at::Tensor()) {}
};

// One decoding position through one Transformer decoder layer, as DecoderBlock computes it under inference
// (the products summed in another order than oneDNN's):
// self-attention over the cache (the new key/value written at position t), cross-attention over the memory,
// the ReLU feed-forward; each sublayer inside a residual with LayerNorm, post-norm (LayerNorm(x + f(x)), the
// add_layer_norm kernel) or pre-norm (x + f(LayerNorm(x))).
//   x (n, dm); panels: the weights as pack_panels gives them, of [qkv (3 dm), self out, cross q, cross out,
//   ffn 1 (relu), ffn 2];
//   biases: theirs (or None); norms: [self w, b, cross w, b, ffn w, b];
//   k_cache, v_cache (n, h, capacity, dh) contiguous, positions < t filled; memory_k, memory_v (m, h, s, dh)
//   with row r reading memory row r / (n / m); memory_mask (n, s) bool (True = may attend) or None.
// LayerStep holds one layer's checked arguments; rows() takes rows [r0, r1) of xp through it into outp.
struct LayerStep {
  int64_t dm = 0, h = 0, dh = 0, t = 0, s = 0, ff = 0, cs0 = 0, cs1 = 0;
  int64_t outs[6] = {}, ins[6] = {};
  const float *pp[6] = {}, *bias_p[6] = {}, *np[6] = {};
  at::Tensor bias_c[6], norm_c[6];
  float *kc = nullptr, *vc = nullptr;
  float *qkvp = nullptr, *ctxp = nullptr, *yp = nullptr, *x1p = nullptr, *x2p = nullptr, *hp = nullptr,
        *lnp = nullptr;
  RowAttention self_att{}, cross_att{};
  float fe = 0.f;
  bool pre_norm = false;

  // `what` names the call (and the layer) in error messages.
  LayerStep(const std::string& what, int64_t n, int64_t dm_, at::TensorList panels,
            const c10::List<c10::optional<at::Tensor>>& biases, int64_t first, at::TensorList norms,
            const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t t_, const at::Tensor& memory_k,
            const at::Tensor& memory_v, const c10::optional<at::Tensor>& memory_mask, double scale, double eps,
            bool pre_norm_, StepScratch& scratch)
      : dm(dm_), t(t_), pre_norm(pre_norm_) {
    for (const auto* c : {&k_cache, &v_cache}) {
      check_float_cpu(*c, what + (c == &k_cache ? ": key cache" : ": value cache"));
      TORCH_CHECK(c->dim() == 4 && c->is_contiguous() && c->size(0) == n && c->size(1) * c->size(3) == dm,
                  what, ": caches must be contiguous (n, h, capacity, d_model / h), got ", c->sizes(), " for x (", n,
                  ", ", dm, ")");
    }
    h = k_cache.size(1), dh = k_cache.size(3);
    const int64_t cap = k_cache.size(2);
    TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), what, ": key cache ", k_cache.sizes(), " and value cache ",
                v_cache.sizes(), " differ");
    TORCH_CHECK(t >= 0 && t < cap, what, ": position ", t, " is outside the caches' ", cap, " positions");
    for (const auto* c : {&memory_k, &memory_v}) {
      check_float_cpu(*c, what + (c == &memory_k ? ": memory keys" : ": memory values"));
      TORCH_CHECK(c->dim() == 4 && c->stride(3) == 1 && c->size(0) > 0 && n % c->size(0) == 0 &&
                      c->size(0) == memory_k.size(0) && c->size(1) == h && c->size(3) == dh &&
                      c->size(2) == memory_k.size(2),
                  what, ": memory keys and values must both be (m, ", h, ", s, ", dh, ") with m dividing ", n,
                  " and their last axis contiguous, got keys ", memory_k.sizes(), " strides ", memory_k.strides(),
                  " and values ", memory_v.sizes(), " strides ", memory_v.strides());
    }
    s = memory_k.size(2);
    const int64_t g = n / memory_k.size(0);
    const bool* mp = nullptr;
    int64_t m0 = 0, m1 = 0;
    if (memory_mask.has_value() && memory_mask->defined()) {
      const at::Tensor& m = *memory_mask;
      TORCH_CHECK(m.device().is_cpu() && m.scalar_type() == at::kBool && m.dim() == 2 && m.size(0) == n &&
                      m.size(1) == s,
                  what, ": memory_mask must be a bool (", n, ", ", s, ") tensor, got ", m.scalar_type(), " ", m.sizes());
      mp = m.data_ptr<bool>();
      m0 = m.stride(0);
      m1 = m.stride(1);
    }
    ff = panels[first + 5].dim() == 3 ? panels[first + 5].size(1) : 0;  // the feed-forward's width: ffn 2's inputs
    const int64_t o[6] = {3 * dm, dm, dm, dm, ff, dm}, in[6] = {dm, dm, dm, dm, dm, ff};
    for (int i = 0; i < 6; ++i) {
      outs[i] = o[i];
      ins[i] = in[i];
      TORCH_CHECK(holds_panels(panels[first + i], outs[i], ins[i], what + ": weight " + std::to_string(i)), what,
                  ": weight ", i, " must be the panels of a (",
                  outs[i], ", ", ins[i], ") weight, got ", panels[first + i].sizes());
      pp[i] = panels[first + i].data_ptr<float>();
      bias_p[i] = bias_data(biases.get(first + i), outs[i], what + ": bias " + std::to_string(i), bias_c[i]);
    }
    for (int i = 0; i < 6; ++i) {
      const at::Tensor& w = norms[first + i];
      check_float_cpu(w, what + ": norm " + std::to_string(i));
      TORCH_CHECK(w.dim() == 1 && w.size(0) == dm, what, ": norm ", i, " must be (", dm, "), got ", w.sizes());
      norm_c[i] = w.contiguous();
      np[i] = norm_c[i].data_ptr<float>();
    }
    TORCH_CHECK(scratch.hid.size(1) == ff, what, ": every layer's feed-forward must have ", scratch.hid.size(1),
                " units, got ", ff);
    qkvp = scratch.qkv.data_ptr<float>(), ctxp = scratch.ctx.data_ptr<float>(), yp = scratch.y.data_ptr<float>();
    x1p = scratch.x1.data_ptr<float>(), x2p = scratch.x2.data_ptr<float>(), hp = scratch.hid.data_ptr<float>();
    lnp = pre_norm ? scratch.normed.data_ptr<float>() : nullptr;
    kc = k_cache.data_ptr<float>();
    vc = v_cache.data_ptr<float>();
    cs0 = h * cap * dh, cs1 = cap * dh;  // the caches' row and head strides
    fe = static_cast<float>(eps);
    const float sc = static_cast<float>(scale);
    // self-attention reads the query from qkv and t + 1 keys of the caches; cross-attention the query from y
    self_att = RowAttention{qkvp, 3 * dm, kc, cs0, cs1, dh, vc, cs0, cs1, dh, nullptr, 0, 0, 1, h, dh, dh, t + 1, sc, ctxp};
    cross_att = RowAttention{yp, dm, memory_k.data_ptr<float>(), memory_k.stride(0), memory_k.stride(1),
                             memory_k.stride(2), memory_v.data_ptr<float>(), memory_v.stride(0), memory_v.stride(1),
                             memory_v.stride(2), mp, m0, m1, g, h, dh, dh, s, sc, ctxp};
  }

  // Rows [r0, r1) of xp through the whole layer into outp; the products' panels and the attentions' (row, head)
  // pairs shared out among the threads if `share`.
  void rows(const float* xp, float* outp, int64_t r0, int64_t r1, bool share) const {
    const int64_t keys = std::max(t + 1, s);
    auto attend = [&](const RowAttention& att) {
      auto part = [&](int64_t begin, int64_t end) {
        std::vector<float> w(keys), qs(dh), acc(dh);
        att.run(begin, end, w.data(), qs.data(), acc.data());
      };
      if (share)
        at::parallel_for(r0 * h, r1 * h, 8, part);
      else
        part(r0 * h, r1 * h);
    };
    // the input of sublayer i for rows [r0, r1): LayerNorm(a) under pre-norm, a itself under post-norm
    auto sublayer_in = [&](const float* a, int i) -> const float* {
      if (!pre_norm) return a;
      for (int64_t r = r0; r < r1; ++r) norm_row(a + r * dm, nullptr, np[2 * i], np[2 * i + 1], fe, lnp + r * dm, dm);
      return lnp;
    };
    // o = LayerNorm(a + y) (post-norm) or a + y (pre-norm) for rows [r0, r1)
    auto residual = [&](const float* a, int i, float* o) {
      for (int64_t r = r0; r < r1; ++r) {
        if (pre_norm)
          for (int64_t c = 0; c < dm; ++c) o[r * dm + c] = a[r * dm + c] + yp[r * dm + c];
        else
          norm_row(a + r * dm, yp + r * dm, np[2 * i], np[2 * i + 1], fe, o + r * dm, dm);
      }
    };
    auto product = [&](const float* a, int i, bool relu, float* o) {
      if (share)
        panel_linear(a + r0 * ins[i], r1 - r0, ins[i], pp[i], outs[i], bias_p[i], relu, o + r0 * outs[i]);
      else
        panel_part(a, ins[i], pp[i], outs[i], bias_p[i], relu, o, outs[i], 0, r0, r1, 0, (outs[i] + kPanel - 1) / kPanel);
    };

    // self-attention: the new key and value into the caches at t, then one query over t + 1 keys
    product(sublayer_in(xp, 0), 0, false, qkvp);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t hh = 0; hh < h; ++hh) {
        std::memcpy(kc + r * cs0 + hh * cs1 + t * dh, qkvp + r * 3 * dm + dm + hh * dh, dh * sizeof(float));
        std::memcpy(vc + r * cs0 + hh * cs1 + t * dh, qkvp + r * 3 * dm + 2 * dm + hh * dh, dh * sizeof(float));
      }
    attend(self_att);
    product(ctxp, 1, false, yp);
    residual(xp, 0, x1p);

    // cross-attention over the memory
    product(sublayer_in(x1p, 1), 2, false, yp);
    attend(cross_att);
    product(ctxp, 3, false, yp);
    residual(x1p, 1, x2p);

    // feed-forward
    product(sublayer_in(x2p, 2), 4, true, hp);
    product(hp, 5, false, yp);
    residual(x2p, 2, outp);
  }
};

// x (n, dm) through the layers in turn. Rows are independent through every layer. With kRows rows or more for
// every thread, each thread takes an equal share of the rows through every stage of every layer: the threads
// meet once, and no row's data moves between cores. Fewer rows run on the calling thread, layer by layer, the
// products' panels and the attentions shared out.
at::Tensor run_layers(const at::Tensor& x, const std::vector<LayerStep>& layers) {
  const int64_t n = x.size(0), dm = x.size(1), count = static_cast<int64_t>(layers.size());
  // the layers' outputs in turn: out[l] is layer l's (the last one returned)
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < count; ++l) out.push_back(at::empty({n, dm}, x.options()));
  auto through = [&](int64_t r0, int64_t r1, bool share) {
    const float* in = x.data_ptr<float>();
    for (int64_t l = 0; l < count; ++l) {
      float* o = out[l].data_ptr<float>();
      layers[l].rows(in, o, r0, r1, share);
      in = o;
    }
  };
  const int64_t threads = at::get_num_threads();
  if (n >= kRows * threads && threads > 1)
    at::parallel_for(0, threads, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) through(n * i / threads, n * (i + 1) / threads, false);
    });
  else
    through(0, n, true);
  return out.back();
}

// x (n, dm) through L layers: panels, biases and norms 6 per layer, in layer order; one pair of caches and one
// memory per layer, all at position t, under one memory_mask. `op` names the call in errors, and each layer's
// index too when `name_layers`.
at::Tensor step_layers(const std::string& op, bool name_layers, const at::Tensor& x, at::TensorList panels,
                       const c10::List<c10::optional<at::Tensor>>& biases, at::TensorList norms, at::TensorList k_caches,
                       at::TensorList v_caches, int64_t t, at::TensorList memory_k, at::TensorList memory_v,
                       const c10::optional<at::Tensor>& memory_mask, double scale, double eps, bool pre_norm) {
  check_float_cpu(x, op + ": x");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), op, ": x must be a contiguous (n, d_model) tensor, got ", x.sizes());
  const int64_t count = static_cast<int64_t>(k_caches.size());
  const int64_t n = x.size(0), dm = x.size(1);
  const int64_t ff = panels[5].dim() == 3 ? panels[5].size(1) : 0;
  StepScratch scratch(n, dm, ff, pre_norm, x.options());
  std::vector<LayerStep> layers;
  layers.reserve(count);
  for (int64_t l = 0; l < count; ++l) {
    const std::string what = name_layers ? op + ": layer " + std::to_string(l) : op;
    layers.emplace_back(what, n, dm, panels, biases, 6 * l, norms, k_caches[l], v_caches[l], t, memory_k[l],
                        memory_v[l], memory_mask, scale, eps, pre_norm, scratch);
    TORCH_CHECK(layers[l].dh == layers[0].dh, what, ": every layer's heads must have ", layers[0].dh,
                " dimensions (one scale serves them all), got ", layers[l].dh);
  }
  return run_layers(x, layers);
}

at::Tensor decoder_layer_step(const at::Tensor& x, at::TensorList panels, const c10::List<c10::optional<at::Tensor>>& biases,
                              at::TensorList norms, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t t,
                              const at::Tensor& memory_k, const at::Tensor& memory_v,
                              const c10::optional<at::Tensor>& memory_mask, double scale, double eps, bool pre_norm) {
  TORCH_CHECK(panels.size() == 6 && biases.size() == 6 && norms.size() == 6,
              "decoder_layer_step: 6 weights (as panels), 6 biases and 6 norm tensors expected, got ", panels.size(), ", ",
              biases.size(), ", ", norms.size());
  return step_layers("decoder_layer_step", false, x, panels, biases, norms, k_cache, v_cache, t, memory_k, memory_v,
                     memory_mask, scale, eps, pre_norm);
}

// That a stack call got, for L >= 1 layers, 6·L panels, biases and norm tensors and L of each cache and memory
// tensor; `op` names the call in the error.
void check_stack_lists(const char* op, at::TensorList panels, const c10::List<c10::optional<at::Tensor>>& biases,
                       at::TensorList norms, at::TensorList k_caches, at::TensorList v_caches, at::TensorList memory_k,
                       at::TensorList memory_v) {
  const int64_t count = static_cast<int64_t>(k_caches.size());
  TORCH_CHECK(count > 0 && static_cast<int64_t>(panels.size()) == 6 * count &&
                  static_cast<int64_t>(biases.size()) == 6 * count && static_cast<int64_t>(norms.size()) == 6 * count &&
                  static_cast<int64_t>(v_caches.size()) == count && static_cast<int64_t>(memory_k.size()) == count &&
                  static_cast<int64_t>(memory_v.size()) == count,
              op, ": for L layers, 6·L weights (as panels), biases and norm tensors and L key caches, value "
              "caches, memory keys and memory values expected, got ", panels.size(), ", ", biases.size(), ", ",
              norms.size(), " and ", k_caches.size(), ", ", v_caches.size(), ", ", memory_k.size(), ", ",
              memory_v.size());
}

// decoder_layer_step for a stack of L layers in one call (see step_layers); the layers share the head size (and so
// the scale), the feed-forward width, LayerNorm placement and eps. Each layer's output is the next one's input;
// the last one's is returned.
at::Tensor decoder_stack_step(const at::Tensor& x, at::TensorList panels, const c10::List<c10::optional<at::Tensor>>& biases,
                              at::TensorList norms, at::TensorList k_caches, at::TensorList v_caches, int64_t t,
                              at::TensorList memory_k, at::TensorList memory_v,
                              const c10::optional<at::Tensor>& memory_mask, double scale, double eps, bool pre_norm) {
  check_stack_lists("decoder_stack_step", panels, biases, norms, k_caches, v_caches, memory_k, memory_v);
  return step_layers("decoder_stack_step", true, x, panels, biases, norms, k_caches, v_caches, t, memory_k, memory_v,
                     memory_mask, scale, eps, pre_norm);
}

// Greedy decoding for up to `steps` positions from t in one call (a decoding step's Python costs ~9% of greedy
// decoding's time, most of it while the other threads wait). Each step computes what the model's modules and
// the single-step calls compute, the same bits: the previous tokens' embeddings times embed_scale plus the
// position's encoding (ATen's operations, as nn.Embedding and the positional module run them), the stack
// (step_layers, as decoder_stack_step), the final LayerNorm when given (ATen's, as nn.LayerNorm) and the output
// layer with the best log-softmax entry (linear_log_softmax_topk, k = 1; EOS blocked in the first
// `blocked_steps` steps). It stops after the first step in which some row chose `eos`.
//   prev (n,) int64; embedding (V, dm); positions (steps, dm): the encodings of positions t, t + 1, ...; the
//   stack's arguments as decoder_stack_step takes them; final weight and bias (dm) or None; the output layer
//   as pack_panels gives it (vocab rows), its bias or None.
// -> (tokens (n, k) int64, log-probs (n, k)) of the k <= steps steps taken; the caches hold k more positions.
std::tuple<at::Tensor, at::Tensor> greedy_steps(
    const at::Tensor& prev, const at::Tensor& embedding, double embed_scale, const at::Tensor& positions,
    at::TensorList panels, const c10::List<c10::optional<at::Tensor>>& biases, at::TensorList norms,
    at::TensorList k_caches, at::TensorList v_caches, int64_t t, at::TensorList memory_k, at::TensorList memory_v,
    const c10::optional<at::Tensor>& memory_mask, double scale, double eps, bool pre_norm,
    const c10::optional<at::Tensor>& final_weight, const c10::optional<at::Tensor>& final_bias, double final_eps,
    const at::Tensor& out_panels, const c10::optional<at::Tensor>& out_bias, int64_t vocab, int64_t eos,
    int64_t blocked_steps, int64_t steps) {
  TORCH_CHECK(prev.device().is_cpu() && prev.scalar_type() == at::kLong && prev.dim() == 1,
              "greedy_steps: prev must be an int64 (n,) tensor, got ", prev.scalar_type(), " ", prev.sizes());
  check_float_cpu(embedding, "greedy_steps: embedding");
  check_float_cpu(positions, "greedy_steps: positions");
  TORCH_CHECK(embedding.dim() == 2, "greedy_steps: embedding must be (vocabulary, d_model), got ", embedding.sizes());
  const int64_t n = prev.size(0), dm = embedding.size(1);
  TORCH_CHECK(steps >= 1, "greedy_steps: steps must be >= 1, got ", steps);
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) >= steps && positions.size(1) == dm,
              "greedy_steps: positions must be (steps, d_model) = (", steps, ", ", dm, "), got ", positions.sizes());
  TORCH_CHECK(final_weight.has_value() == final_bias.has_value(), "greedy_steps: the final norm needs both its weight and bias");
  TORCH_CHECK(eos >= 0 && eos < vocab, "greedy_steps: eos must be a token id in [0, ", vocab, "), got ", eos);
  check_stack_lists("greedy_steps", panels, biases, norms, k_caches, v_caches, memory_k, memory_v);
  // checked before the first step writes into the caches, and named as this call's
  TORCH_CHECK(k_caches[0].dim() == 4 && t >= 0 && t + steps <= k_caches[0].size(2), "greedy_steps: ", steps,
              " steps from position ", t, " do not fit the caches ", k_caches[0].sizes());
  TORCH_CHECK(holds_panels(out_panels, vocab, dm, "greedy_steps: out_panels"), "greedy_steps: out_panels ",
              out_panels.sizes(), " do not hold a (", vocab, ", ", dm, ") output weight");
  at::Tensor out_bias_c;
  bias_data(out_bias, vocab, "greedy_steps: out_bias", out_bias_c);
  for (const auto* w : {&final_weight, &final_bias})
    if (w->has_value()) {
      check_float_cpu(**w, w == &final_weight ? "greedy_steps: final_weight" : "greedy_steps: final_bias");
      TORCH_CHECK((*w)->dim() == 1 && (*w)->size(0) == dm, "greedy_steps: the final norm's ",
                  w == &final_weight ? "weight" : "bias", " must be (", dm, "), got ", (*w)->sizes());
    }
  auto tokens = at::empty({n, steps}, prev.options());
  auto logps = at::empty({n, steps}, embedding.options());
  at::Tensor last = prev;
  int64_t k = 0;
  while (k < steps) {
    auto x = at::add(at::mul(at::embedding(embedding, last), embed_scale), positions[k]);  // (n, dm)
    auto y = step_layers("greedy_steps", true, x, panels, biases, norms, k_caches, v_caches, t + k, memory_k, memory_v,
                         memory_mask, scale, eps, pre_norm);
    if (final_weight.has_value())
      y = at::layer_norm(y, {dm}, *final_weight, *final_bias, final_eps);
    auto [values, best] = linear_log_softmax_topk(y, out_panels, out_bias, vocab, 1, k < blocked_steps ? eos : -1);
    tokens.select(1, k).copy_(best.select(1, 0));
    logps.select(1, k).copy_(values.select(1, 0));
    last = best.select(1, 0);
    ++k;
    const int64_t* bp = best.data_ptr<int64_t>();
    if (std::any_of(bp, bp + n, [&](int64_t v) { return v == eos; })) break;
  }
  return {tokens.narrow(1, 0, k), logps.narrow(1, 0, k)};
}

// ------------------------------------------------------------------------------------------- training

void check_rows(const at::Tensor& logits, const at::Tensor& target, const char* what) {
  check_float_cpu(logits, "logits");
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), what, ": logits must be a contiguous (n, V) tensor, got ",
              logits.sizes());
  TORCH_CHECK(target.scalar_type() == at::kLong && target.dim() == 1 && target.size(0) == logits.size(0), what,
              ": target must be an int64 (n,) tensor with n = ", logits.size(0), ", got ", target.scalar_type(), " ",
              target.sizes());
  if (target.numel()) {
    const int64_t lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < logits.size(1), what, ": target ids must be in [0, ", logits.size(1), "), got ", lo,
                "..", hi);
  }
}

// Attention for training over short sequences: forward and backward for (batch, head) blocks of i queries
// and j keys, reading q, k, v (and writing their gradients) in the (b, n, h, d) layout the projections
// produce, so that no head is copied out. P (the softmax, before dropout) is kept for the backward pass; the
// dropout mask on P is drawn again from the seed.

struct Strided4 {  // a 4-D view: base pointer and strides, last axis contiguous
  const float* p;
  int64_t s0, s1, s2;
  const float* at(int64_t a, int64_t b, int64_t c) const { return p + a * s0 + b * s1 + c * s2; }
};

inline Strided4 view4(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.stride(3) == 1, "attention_train: ", name,
              " must be 4-D with its last axis contiguous, got sizes ", t.sizes(), " strides ", t.strides());
  return {t.data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)};
}

// The dropout factors (0 or 1/(1 - p)) of one row r of the (b, h, i, j) weights: column j keeps iff quarter j % 4
// of splitmix64(seed + r * ceil(j_count / 4) + j / 4) is >= threshold; one 64-bit draw per four columns.
inline void row_keep(uint64_t seed, int64_t r, int64_t nj, uint32_t threshold, float keep, float* m) {
  const int64_t words = (nj + 3) / 4;
  for (int64_t w = 0; w < words; ++w) {
    const uint64_t x = splitmix64(seed + static_cast<uint64_t>(r * words + w));
    for (int64_t c = 0; c < 4 && 4 * w + c < nj; ++c) m[4 * w + c] = ((x >> (16 * c)) & 0xFFFF) >= threshold ? keep : 0.f;
  }
}

// y (+)= a * x over n floats; N > 0: n = N known at compile time (kept in registers by the caller's loops)
inline void axpy(float* y, float a, const float* x, int64_t n) {
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) store(y + c, load(y + c) + a * load(x + c));
  for (; c < n; ++c) y[c] += a * x[c];
}

struct TrainShape {
  int64_t b, h, ni, nj, d, e;
};

// A 16 × 16 tile transposed in registers: four rounds, each swapping the off-diagonal s × s blocks of
// every 2s × 2s block (s = 8, 4, 2, 1) with two-vector shuffles.
inline void transpose16(vf* r) {
#define ATTNKIT_SWAP(s, LO, HI)                              \
  for (int i = 0; i < 16; ++i)                               \
    if (!(i & s)) {                                          \
      const vf a = r[i], b = r[i + s];                       \
      r[i] = __builtin_shufflevector(a, b, LO);              \
      r[i + s] = __builtin_shufflevector(a, b, HI);          \
    }
#define ATTNKIT_IDX(...) __VA_ARGS__
  ATTNKIT_SWAP(8, ATTNKIT_IDX(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
               ATTNKIT_IDX(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
  ATTNKIT_SWAP(4, ATTNKIT_IDX(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
               ATTNKIT_IDX(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
  ATTNKIT_SWAP(2, ATTNKIT_IDX(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
               ATTNKIT_IDX(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
  ATTNKIT_SWAP(1, ATTNKIT_IDX(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
               ATTNKIT_IDX(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
#undef ATTNKIT_IDX
#undef ATTNKIT_SWAP
}

// The keys (or values) of one (batch, head) block transposed into t (d, nk): t[c nk + j] = x_j[c], for
// products over the keys in vectors of kLanes; nk = j rounded up to kLanes. The padding columns j >= nj
// are written as 0 where d is a multiple of kLanes (tiles of 16 × 16 in registers) and left as they are
// otherwise (the caller zeroes them once).
inline void transpose_keys(const Strided4& X, int64_t bb, int64_t hh, int64_t nj, int64_t d, int64_t nk, float* t) {
  if (d % kLanes == 0) {
    vf r[16];
    for (int64_t j0 = 0; j0 < nj; j0 += 16)
      for (int64_t c0 = 0; c0 < d; c0 += 16) {
        for (int64_t u = 0; u < 16; ++u) r[u] = j0 + u < nj ? load(X.at(bb, hh, j0 + u) + c0) : vf{};
        transpose16(r);
        for (int64_t u = 0; u < 16; ++u) store(t + (c0 + u) * nk + j0, r[u]);
      }
    return;
  }
  for (int64_t j = 0; j < nj; ++j) {
    const float* xr = X.at(bb, hh, j);
    for (int64_t c = 0; c < d; ++c) t[c * nk + j] = xr[c];
  }
}

// s[j] = Σ_c a[c] · t[c nk + j] for the nk (a multiple of kLanes) columns of t (d, nk), each a[c] times
// `scale` first; U vectors of keys at a time, each summed in C chains over c (c mod C) kept in registers,
// so that the additions do not wait on each other.
template <int U, int C>
inline void row_times_keys(const float* a, float scale, const float* t, int64_t d, int64_t nk, int64_t v0, float* s) {
  vf acc[C][U] = {};
  const float* tv = t + v0 * kLanes;
  int64_t c = 0;
  for (; c + C <= d; c += C)
    for (int k = 0; k < C; ++k) {
      const float x = a[c + k] * scale;
      for (int u = 0; u < U; ++u) acc[k][u] += x * load(tv + (c + k) * nk + u * kLanes);
    }
  for (; c < d; ++c) {
    const float x = a[c] * scale;
    for (int u = 0; u < U; ++u) acc[0][u] += x * load(tv + c * nk + u * kLanes);
  }
  for (int u = 0; u < U; ++u) {
    vf sum = acc[0][u];
    for (int k = 1; k < C; ++k) sum += acc[k][u];
    store(s + (v0 + u) * kLanes, sum);
  }
}

inline void row_times_keys(const float* a, float scale, const float* t, int64_t d, int64_t nk, float* s) {
  const int64_t nv = nk / kLanes;
  int64_t v = 0;
  for (; v + 4 <= nv; v += 4) row_times_keys<4, 2>(a, scale, t, d, nk, v, s);
  switch (nv - v) {
    case 3: row_times_keys<3, 2>(a, scale, t, d, nk, v, s); break;
    case 2: row_times_keys<2, 4>(a, scale, t, d, nk, v, s); break;
    case 1: row_times_keys<1, 4>(a, scale, t, d, nk, v, s); break;
    default: break;
  }
}

// One (batch, head) block of the forward pass: the scores of a query against all keys in vectors of keys
// (the keys transposed once per block), the softmax in vectors, then the context; D = E = 64 known at
// compile time (the context kept in registers), or 0 = any.
template <int D>
void attention_block_forward(int64_t bh, const TrainShape& sh, const Strided4& Q, const Strided4& K, const Strided4& V,
                             const bool* mp, const int64_t* ms, float sc, uint64_t seed, uint32_t threshold, float keep,
                             float* pp, float* op, float* kt, float* srow, float* mrow) {
  const int64_t bb = bh / sh.h, hh = bh % sh.h, ni = sh.ni, nj = sh.nj, d = D > 0 ? D : sh.d, e = D > 0 ? D : sh.e;
  const int64_t nk = (nj + kLanes - 1) / kLanes * kLanes;
  const float ninf = -std::numeric_limits<float>::infinity();
  constexpr int R = D > 0 ? D / kLanes : 1;
  transpose_keys(K, bb, hh, nj, d, nk, kt);
  for (int64_t i = 0; i < ni; ++i) {
    float* prow = pp + (bh * ni + i) * nj;
    row_times_keys(Q.at(bb, hh, i), sc, kt, d, nk, srow);  // scaled first, as scores.scaled_dot
    for (int64_t j = 0; j < nj; ++j)
      if (mp && !mp[bb * ms[0] + hh * ms[1] + i * ms[2] + j * ms[3]]) srow[j] = ninf;
    for (int64_t j = nj; j < nk; ++j) srow[j] = ninf;
    vf maxes = splat(ninf);
    for (int64_t j = 0; j < nk; j += kLanes) maxes = vmax(maxes, load(srow + j));
    const float mx = hmax(maxes);
    float* o = op + ((bb * ni + i) * sh.h + hh) * e;
    if (mx == ninf) {  // no key allowed: zero weights, zero context
      std::fill(prow, prow + nj, 0.f);
      std::fill(o, o + e, 0.f);
      continue;
    }
    vf sums{};
    for (int64_t j = 0; j < nk; j += kLanes) {
      const vf x = load(srow + j);
      const vf w = x == ninf ? vf{} : exp_nonpositive(x - mx);  // a masked key weighs exactly 0
      store(srow + j, w);
      sums += w;
    }
    const vf inv = splat(1.f / hsum(sums));
    for (int64_t j = 0; j < nk; j += kLanes) store(srow + j, load(srow + j) * inv);
    std::copy(srow, srow + nj, prow);
    if (threshold) row_keep(seed, bh * ni + i, nj, threshold, keep, mrow);
    if constexpr (D > 0) {
      vf acc[R] = {};
      for (int64_t j = 0; j < nj; ++j) {
        const float w = threshold ? srow[j] * mrow[j] : srow[j];
        const float* vr = V.at(bb, hh, j);
        for (int c = 0; c < R; ++c) acc[c] += w * load(vr + c * kLanes);
      }
      for (int c = 0; c < R; ++c) store(o + c * kLanes, acc[c]);
    } else {
      std::fill(o, o + e, 0.f);
      for (int64_t j = 0; j < nj; ++j) {
        const float w = threshold ? srow[j] * mrow[j] : srow[j];
        if (w != 0.f) axpy(o, w, V.at(bb, hh, j), e);
      }
    }
  }
}

// (context (b, i, h, e) contiguous, P (b, h, i, j))
std::tuple<at::Tensor, at::Tensor> attention_train_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                           const c10::optional<at::Tensor>& mask, double scale,
                                                           double p, int64_t seed) {
  check_float_cpu(q, "q");
  check_float_cpu(k, "k");
  check_float_cpu(v, "v");
  const Strided4 Q = view4(q, "q"), K = view4(k, "k"), V = view4(v, "v");
  const TrainShape sh{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  TORCH_CHECK(k.size(0) == sh.b && k.size(1) == sh.h && k.size(3) == sh.d, "attention_train: k ", k.sizes(),
              " does not fit q ", q.sizes());
  TORCH_CHECK(v.size(0) == sh.b && v.size(1) == sh.h && v.size(2) == sh.nj, "attention_train: v ", v.sizes(),
              " does not fit k ", k.sizes());
  TORCH_CHECK(p >= 0 && p < 1, "attention_train: dropout p must be in [0, 1), got ", p);
  const bool* mp = nullptr;
  int64_t ms[4] = {0, 0, 0, 0};
  if (mask.has_value() && mask->defined()) {
    const auto& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kBool && m.dim() == 4 && m.size(0) == sh.b && m.size(1) == sh.h &&
                    m.size(2) == sh.ni && m.size(3) == sh.nj,
                "attention_train: mask must be a bool (b, h, i, j) = (", sh.b, ", ", sh.h, ", ", sh.ni, ", ", sh.nj,
                ") tensor (broadcast views are fine), got ", m.scalar_type(), " ", m.sizes());
    mp = m.data_ptr<bool>();
    for (int a = 0; a < 4; ++a) ms[a] = m.stride(a);
  }
  auto out = at::empty({sh.b, sh.ni, sh.h, sh.e}, q.options());
  auto probs = at::empty({sh.b, sh.h, sh.ni, sh.nj}, q.options());
  float* op = out.data_ptr<float>();
  float* pp = probs.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  const uint32_t threshold = static_cast<uint32_t>(std::lround(p * 65536.0));
  const float keep = static_cast<float>(1.0 / (1.0 - p));
  const uint64_t s = static_cast<uint64_t>(seed);
  at::parallel_for(0, sh.b * sh.h, 4, [&](int64_t begin, int64_t end) {
    const int64_t nk = (sh.nj + kLanes - 1) / kLanes * kLanes;
    std::vector<float> kt(sh.d * nk), srow(nk), mrow(sh.nj + 4);  // zeroed: kt's padding columns stay 0
    for (int64_t bh = begin; bh < end; ++bh) {
      if (sh.d == 64 && sh.e == 64)
        attention_block_forward<64>(bh, sh, Q, K, V, mp, ms, sc, s, threshold, keep, pp, op, kt.data(), srow.data(),
                                    mrow.data());
      else
        attention_block_forward<0>(bh, sh, Q, K, V, mp, ms, sc, s, threshold, keep, pp, op, kt.data(), srow.data(),
                                   mrow.data());
    }
  });
  return {out, probs};
}

// One (batch, head) block of the backward pass, in three sweeps that each keep their accumulators in
// registers (D = E = 64 known at compile time, or 0 = any): the weights' gradient dS row by row (dO_i
// against all values in vectors of keys, the values transposed once per block), then dQ_i = Σ_j dS_ij k_j,
// then dV_j = Σ_i Pd_ij dO_i and dK_j = Σ_i dS_ij q_i.
template <int D>
void attention_block_backward(int64_t bh, const TrainShape& sh, const Strided4& G, const Strided4& Q,
                              const Strided4& K, const Strided4& V, const float* pp, float sc, uint64_t seed,
                              uint32_t threshold, float keep, float* dqp, float* dkp, float* dvp, float* ds,
                              float* pd, float* vt, float* dprow) {
  const int64_t bb = bh / sh.h, hh = bh % sh.h, ni = sh.ni, nj = sh.nj, d = D > 0 ? D : sh.d, e = D > 0 ? D : sh.e;
  const int64_t nk = (nj + kLanes - 1) / kLanes * kLanes;
  constexpr int R = D > 0 ? D / kLanes : 1;
  transpose_keys(V, bb, hh, nj, e, nk, vt);
  for (int64_t i = 0; i < ni; ++i) {  // dS_ij = P_ij (dP_ij - Σ_j' P_ij' dP_ij') with dP_ij = (dO_i · v_j) m_ij
    const float* prow = pp + (bh * ni + i) * nj;
    float* pdr = pd + i * nj;  // Pd_ij = P_ij m_ij, the weights the forward pass used
    if (threshold)
      row_keep(seed, bh * ni + i, nj, threshold, keep, pdr);
    else
      std::fill(pdr, pdr + nj, 1.f);
    row_times_keys(G.at(bb, hh, i), 1.f, vt, e, nk, dprow);
    float* dsr = ds + i * nj;
    float rowdot = 0.f;
    for (int64_t j = 0; j < nj; ++j) {
      const float m = pdr[j];
      const float dp = prow[j] != 0.f && m != 0.f ? dprow[j] * m : 0.f;
      dsr[j] = dp;
      pdr[j] = prow[j] * m;
      rowdot += prow[j] * dp;
    }
    for (int64_t j = 0; j < nj; ++j) dsr[j] = prow[j] * (dsr[j] - rowdot) * sc;  // the scale folded in
  }
  for (int64_t i = 0; i < ni; ++i) {  // dQ_i
    const float* dsr = ds + i * nj;
    float* dqr = dqp + ((bb * ni + i) * sh.h + hh) * d;
    if constexpr (D > 0) {
      vf acc[R] = {};
      for (int64_t j = 0; j < nj; ++j) {
        const float w = dsr[j];
        if (w == 0.f) continue;
        const float* kr = K.at(bb, hh, j);
        for (int c = 0; c < R; ++c) acc[c] += w * load(kr + c * kLanes);
      }
      for (int c = 0; c < R; ++c) store(dqr + c * kLanes, acc[c]);
    } else {
      std::fill(dqr, dqr + d, 0.f);
      for (int64_t j = 0; j < nj; ++j)
        if (dsr[j] != 0.f) axpy(dqr, dsr[j], K.at(bb, hh, j), d);
    }
  }
  for (int64_t j = 0; j < nj; ++j) {  // dV_j, dK_j
    float* dvr = dvp + ((bb * nj + j) * sh.h + hh) * e;
    float* dkr = dkp + ((bb * nj + j) * sh.h + hh) * d;
    if constexpr (D > 0) {
      vf av[R] = {}, ak[R] = {};
      for (int64_t i = 0; i < ni; ++i) {
        const float wv = pd[i * nj + j], wk = ds[i * nj + j];
        if (wv != 0.f) {
          const float* gr = G.at(bb, hh, i);
          for (int c = 0; c < R; ++c) av[c] += wv * load(gr + c * kLanes);
        }
        if (wk != 0.f) {
          const float* qr = Q.at(bb, hh, i);
          for (int c = 0; c < R; ++c) ak[c] += wk * load(qr + c * kLanes);
        }
      }
      for (int c = 0; c < R; ++c) {
        store(dvr + c * kLanes, av[c]);
        store(dkr + c * kLanes, ak[c]);
      }
    } else {
      std::fill(dvr, dvr + e, 0.f);
      std::fill(dkr, dkr + d, 0.f);
      for (int64_t i = 0; i < ni; ++i) {
        if (pd[i * nj + j] != 0.f) axpy(dvr, pd[i * nj + j], G.at(bb, hh, i), e);
        if (ds[i * nj + j] != 0.f) axpy(dkr, ds[i * nj + j], Q.at(bb, hh, i), d);
      }
    }
  }
}

// The dropout factors (0 or 1/(1 - p)) attention_train_forward applies to the (b, h, i, j) weights for `seed`:
// what a differentiable recomputation needs (second derivatives).
at::Tensor attention_dropout_factors(int64_t b, int64_t h, int64_t ni, int64_t nj, double p, int64_t seed) {
  TORCH_CHECK(b >= 0 && h >= 0 && ni >= 0 && nj >= 0, "attention_dropout_factors: sizes must be >= 0");
  TORCH_CHECK(p >= 0 && p < 1, "attention_dropout_factors: p must be in [0, 1), got ", p);
  auto out = at::empty({b, h, ni, nj}, at::TensorOptions().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const uint32_t threshold = static_cast<uint32_t>(std::lround(p * 65536.0));
  const float keep = static_cast<float>(1.0 / (1.0 - p));
  at::parallel_for(0, b * h * ni, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (threshold)
        row_keep(static_cast<uint64_t>(seed), r, nj, threshold, keep, op + r * nj);
      else
        std::fill(op + r * nj, op + (r + 1) * nj, 1.f);
    }
  });
  return out;
}

// The gradients' 2-norm taken together and each scaled in place by min(1, max_norm / (norm + 1e-6)), as
// torch.nn.utils.clip_grad_norm_ does (a factor of 1 leaves them as they are), in two passes over all of them
// instead of one operation per tensor in each. The squares are summed in float lanes over 256 elements, those
// sums in double over fixed blocks of 2^16 elements, and the blocks' sums in order: the same norm for any
// number of threads. Returns the norm (float32, 0-d), as torch's does; NaN or inf in a gradient gives a NaN
// or inf norm and the factor that torch's computes from it.
at::Tensor clip_grad_norm_(at::TensorList grads, double max_norm) {
  std::vector<float*> ptrs;
  std::vector<int64_t> starts{0};
  for (size_t t = 0; t < grads.size(); ++t) {
    const at::Tensor& g = grads[t];
    TORCH_CHECK(g.device().is_cpu() && g.scalar_type() == at::kFloat && g.is_contiguous(),
                "clip_grad_norm_: gradient ", t, " must be a contiguous float32 CPU tensor, got ", g.scalar_type(),
                " on ", g.device(), g.is_contiguous() ? "" : " (not contiguous)");
    ptrs.push_back(g.data_ptr<float>());
    starts.push_back(starts.back() + g.numel());
  }
  const int64_t total = starts.back(), block = int64_t{1} << 16, nblocks = (total + block - 1) / block;
  auto each_piece = [&](int64_t b, auto&& f) {  // the pieces of tensors that block b covers
    int64_t lo = b * block;
    const int64_t hi = std::min(total, lo + block);
    size_t t = std::upper_bound(starts.begin(), starts.end(), lo) - starts.begin() - 1;
    while (lo < hi) {
      while (starts[t + 1] <= lo) ++t;  // empty tensors
      const int64_t end = std::min(hi, starts[t + 1]);
      f(ptrs[t] + (lo - starts[t]), end - lo);
      lo = end;
    }
  };
  std::vector<double> sums(nblocks);
  at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0;
      each_piece(b, [&](const float* p, int64_t n) {
        for (int64_t c0 = 0; c0 < n; c0 += 256) {
          const int64_t c1 = std::min(n, c0 + 256);
          vf acc{};
          int64_t c = c0;
          for (; c + kLanes <= c1; c += kLanes) {
            const vf x = load(p + c);
            acc += x * x;
          }
          float rest = 0.f;
          for (; c < c1; ++c) rest += p[c] * p[c];
          s += static_cast<double>(hsum(acc)) + rest;
        }
      });
      sums[b] = s;
    }
  });
  double s = 0;
  for (const double x : sums) s += x;
  const float norm = static_cast<float>(std::sqrt(s));
  const float factor = (1.f / (norm + 1e-6f)) * static_cast<float>(max_norm);  // in float32, as torch computes it
  if (!(factor >= 1.f)) {  // NaN scales too, as torch.clamp(NaN, max=1) is NaN
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        each_piece(b, [&](float* p, int64_t n) {
          int64_t c = 0;
          for (; c + kLanes <= n; c += kLanes) store(p + c, load(p + c) * factor);
          for (; c < n; ++c) p[c] *= factor;
        });
    });
  }
  return at::scalar_tensor(norm, at::TensorOptions().dtype(at::kFloat));
}

// (dq, dk, dv), each (b, n, h, d) contiguous
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_train_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& probs,
    double scale, double p, int64_t seed) {
  const Strided4 G = view4(grad, "grad"), Q = view4(q, "q"), K = view4(k, "k"), V = view4(v, "v");
  const TrainShape sh{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  TORCH_CHECK(grad.size(0) == sh.b && grad.size(1) == sh.h && grad.size(2) == sh.ni && grad.size(3) == sh.e,
              "attention_train_backward: grad ", grad.sizes(), " does not fit the context (", sh.b, ", ", sh.h, ", ",
              sh.ni, ", ", sh.e, ")");
  TORCH_CHECK(probs.is_contiguous() && probs.numel() == sh.b * sh.h * sh.ni * sh.nj,
              "attention_train_backward: probs must be the contiguous (b, h, i, j) weights of the forward pass");
  auto dq = at::empty({sh.b, sh.ni, sh.h, sh.d}, q.options());
  auto dk = at::empty({sh.b, sh.nj, sh.h, sh.d}, q.options());
  auto dv = at::empty({sh.b, sh.nj, sh.h, sh.e}, q.options());
  const float* pp = probs.data_ptr<float>();
  float *dqp = dq.data_ptr<float>(), *dkp = dk.data_ptr<float>(), *dvp = dv.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  const uint32_t threshold = static_cast<uint32_t>(std::lround(p * 65536.0));
  const float keep = static_cast<float>(1.0 / (1.0 - p));
  const uint64_t s = static_cast<uint64_t>(seed);
  at::parallel_for(0, sh.b * sh.h, 4, [&](int64_t begin, int64_t end) {
    const int64_t nk = (sh.nj + kLanes - 1) / kLanes * kLanes;
    std::vector<float> ds(sh.ni * sh.nj), pd(sh.ni * sh.nj + 4), vt(sh.e * nk), dprow(nk);  // vt's padding stays 0
    for (int64_t bh = begin; bh < end; ++bh) {
      if (sh.d == 64 && sh.e == 64)
        attention_block_backward<64>(bh, sh, G, Q, K, V, pp, sc, s, threshold, keep, dqp, dkp, dvp, ds.data(), pd.data(),
                                     vt.data(), dprow.data());
      else
        attention_block_backward<0>(bh, sh, G, Q, K, V, pp, sc, s, threshold, keep, dqp, dkp, dvp, ds.data(), pd.data(),
                                    vt.data(), dprow.data());
    }
  });
  return {dq, dk, dv};
}

std::tuple<at::Tensor, at::Tensor> smoothed_nll_forward(const at::Tensor& logits, const at::Tensor& target, double eps) {
  check_rows(logits, target, "smoothed_nll_forward");
  const int64_t n = logits.size(0), vocab = logits.size(1);
  auto loss = at::empty({n}, logits.options());
  auto lse = at::empty({n}, logits.options());
  auto tc = target.contiguous();
  const float* xp = logits.data_ptr<float>();
  const int64_t* tp = tc.data_ptr<int64_t>();
  float* lp = loss.data_ptr<float>();
  float* sp = lse.data_ptr<float>();
  const float e = static_cast<float>(eps);
  const float ninf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * vocab;
      vf maxes = splat(ninf), sums{};
      int64_t j = 0;
      for (; j + kLanes <= vocab; j += kLanes) {
        const vf x = load(row + j);
        maxes = vmax(maxes, x);
        sums += x;
      }
      float mx = hmax(maxes), total = hsum(sums);
      for (; j < vocab; ++j) {
        mx = nanmax(mx, row[j]);
        total += row[j];
      }
      vf es{};
      for (j = 0; j + kLanes <= vocab; j += kLanes) es += exp_nonpositive(load(row + j) - mx);
      float sum = hsum(es);
      for (; j < vocab; ++j) sum += exp_nonpositive(row[j] - mx);
      const float z = mx + std::log(sum);
      const float nll = z - row[tp[r]];
      sp[r] = z;
      lp[r] = e ? (1.f - e) * nll + e * (z - total / static_cast<float>(vocab)) : nll;
    }
  });
  return {loss, lse};
}

at::Tensor smoothed_nll_backward(const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& target,
                                 const at::Tensor& weight, double eps) {
  check_rows(logits, target, "smoothed_nll_backward");
  const int64_t n = logits.size(0), vocab = logits.size(1);
  check_float_cpu(lse, "lse");
  check_float_cpu(weight, "weight");
  TORCH_CHECK(lse.numel() == n, "smoothed_nll_backward: lse must have ", n, " entries (one per row), got ", lse.numel());
  TORCH_CHECK(weight.numel() == n, "smoothed_nll_backward: weight must have ", n, " entries (one per row), got ",
              weight.numel());
  auto grad = at::empty_like(logits);
  auto tc = target.contiguous(), lc = lse.contiguous(), wc = weight.contiguous();
  const float* xp = logits.data_ptr<float>();
  const int64_t* tp = tc.data_ptr<int64_t>();
  const float* zp = lc.data_ptr<float>();
  const float* wp = wc.data_ptr<float>();
  float* gp = grad.data_ptr<float>();
  const float e = static_cast<float>(eps), floor = e / static_cast<float>(vocab);
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * vocab;
      float* g = gp + r * vocab;
      const float w = wp[r], z = zp[r];
      if (w == 0.f) {  // an ignored (padding) position
        std::fill(g, g + vocab, 0.f);
        continue;
      }
      int64_t j = 0;
      for (; j + kLanes <= vocab; j += kLanes) store(g + j, (exp_nonpositive(load(row + j) - z) - floor) * w);
      for (; j < vocab; ++j) g[j] = (exp_nonpositive(row[j] - z) - floor) * w;
      g[tp[r]] -= w * (1.f - e);
    }
  });
  return grad;
}

typedef uint64_t vu64 __attribute__((vector_size(64)));
typedef int64_t vi64 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef float vf8 __attribute__((vector_size(32)));

// Element i of the mask reads word 8 (i / 32) + i % 8 and its 16-bit quarter (i % 32) / 8: eight consecutive
// elements take the same quarter of eight consecutive words, which vectorises without shuffles.
inline uint32_t draw_at(uint64_t seed, int64_t i) {
  const uint64_t word = splitmix64(seed + static_cast<uint64_t>(i / 32) * 8 + static_cast<uint64_t>(i % 8));
  return static_cast<uint32_t>((word >> (16 * ((i % 32) / 8))) & 0xFFFF);
}

// What dropout_into does to each element before and after the mask.
enum class DropoutKind { kPlain, kRelu, kResidual };

// out[i] = (x ? f(x[i]) : 1) * mask[i] (+ r[i] for kResidual): the mask itself (x null), x with dropout applied,
// relu(x) with dropout applied (kRelu), or r plus x with dropout applied (kResidual). Every element's operations
// are the ones the separate PyTorch operations would do, in their order and rounding.
template <DropoutKind kind>
void dropout_into(float* out, const float* x, const float* r, int64_t n, double p, int64_t seed) {
  const uint32_t threshold = static_cast<uint32_t>(std::lround(p * 65536.0));
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  const uint64_t s = static_cast<uint64_t>(seed);
  const int64_t groups = n / 32;  // 8 words, 32 elements at a time
  at::parallel_for(0, groups, 256, [&](int64_t begin, int64_t end) {
    const vu64 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const vf8 keep = vf8{} + scale, drop = vf8{};
    for (int64_t gi = begin; gi < end; ++gi) {
      vu64 w = (vu64{} + (s + static_cast<uint64_t>(gi) * 8)) + lane;  // splitmix64 of 8 counters at once
      w += 0x9E3779B97F4A7C15ull;
      w = (w ^ (w >> 30)) * 0xBF58476D1CE4E5B9ull;
      w = (w ^ (w >> 27)) * 0x94D049BB133111EBull;
      w = w ^ (w >> 31);
      for (int q = 0; q < 4; ++q) {
        const vi64 kept = ((w >> (16 * q)) & 0xFFFF) >= threshold;  // -1 where kept
        vf8 m = __builtin_convertvector(kept, vi8) != 0 ? keep : drop;
        const int64_t at = gi * 32 + q * 8;
        if (x) {
          vf8 v;
          std::memcpy(&v, x + at, sizeof v);
          if (kind == DropoutKind::kRelu) v = v < 0.f ? drop : v;  // as torch.relu: NaN and -0 stay
          m *= v;
        }
        if (kind == DropoutKind::kResidual) {
          asm("" : "+v"(m));  // the product rounded on its own: no fused multiply-add with the sum
          vf8 a;
          std::memcpy(&a, r + at, sizeof a);
          m = a + m;
        }
        std::memcpy(out + at, &m, sizeof m);
      }
    }
  });
  for (int64_t i = groups * 32; i < n; ++i) {  // the last < 32
    const float m = draw_at(s, i) >= threshold ? scale : 0.f;
    float v = x ? x[i] : 1.f;
    if (kind == DropoutKind::kRelu) v = v < 0.f ? 0.f : v;
    volatile float y = x ? v * m : m;  // rounded on its own before the sum
    out[i] = kind == DropoutKind::kResidual ? r[i] + y : static_cast<float>(y);
  }
}

at::Tensor dropout_mask(const at::Tensor& like, double p, int64_t seed) {
  check_float_cpu(like, "like");
  TORCH_CHECK(p >= 0 && p < 1, "dropout_mask: p must be in [0, 1), got ", p);
  auto mask = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  dropout_into<DropoutKind::kPlain>(mask.data_ptr<float>(), nullptr, nullptr, mask.numel(), p, seed);
  return mask;
}

// dropout_into of kind `kind` over x (and r for kResidual, of x's shape) into a new tensor; `what` names the op in errors.
template <DropoutKind kind>
at::Tensor dropout_of(const char* what, const at::Tensor& x, double p, int64_t seed, const at::Tensor* r = nullptr) {
  check_float_cpu(x, "x");
  TORCH_CHECK(p >= 0 && p < 1, what, ": p must be in [0, 1), got ", p);
  at::Tensor rc;
  if (r) {
    check_float_cpu(*r, "r");
    TORCH_CHECK(r->sizes() == x.sizes(), what, ": r ", r->sizes(), " and x ", x.sizes(), " must have one shape");
    rc = r->contiguous();
  }
  auto xc = x.contiguous();
  auto out = at::empty_like(xc);
  dropout_into<kind>(out.data_ptr<float>(), xc.data_ptr<float>(), r ? rc.data_ptr<float>() : nullptr, xc.numel(), p,
                     seed);
  return out;
}

at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  return dropout_of<DropoutKind::kPlain>("dropout_apply", x, p, seed);
}

at::Tensor relu_dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  return dropout_of<DropoutKind::kRelu>("relu_dropout_apply", x, p, seed);
}

// The gradient of relu_dropout_apply with respect to x: grad / (1 - p) (rounded as dropout_apply rounds it) where
// the output is > 0 — kept and positive — and 0 elsewhere: the values threshold_backward after dropout's backward
// gives for finite inputs and gradients (where a positive x was dropped, that gives 0 · grad, -0 for a negative
// grad; for a NaN input it passes the gradient where this gives 0).
at::Tensor relu_dropout_backward(const at::Tensor& grad, const at::Tensor& out, double p) {
  check_float_cpu(grad, "grad");
  check_float_cpu(out, "out");
  TORCH_CHECK(p >= 0 && p < 1, "relu_dropout_backward: p must be in [0, 1), got ", p);
  TORCH_CHECK(grad.sizes() == out.sizes(), "relu_dropout_backward: grad ", grad.sizes(), " and out ", out.sizes(),
              " must have one shape");
  auto gc = grad.contiguous(), oc = out.contiguous();
  auto result = at::empty_like(gc);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  const float* gp = gc.data_ptr<float>();
  const float* op = oc.data_ptr<float>();
  float* rp = result.data_ptr<float>();
  const int64_t n = gc.numel();
  at::parallel_for(0, n, 8192, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) store(rp + i, load(op + i) > 0.f ? load(gp + i) * scale : vf{});
    for (; i < end; ++i) rp[i] = op[i] > 0 ? gp[i] * scale : 0.f;
  });
  return result;
}

at::Tensor residual_dropout_apply(const at::Tensor& r, const at::Tensor& x, double p, int64_t seed) {
  return dropout_of<DropoutKind::kResidual>("residual_dropout_apply", x, p, seed, &r);
}

}  // namespace

TORCH_LIBRARY(attnkit, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float scale) -> Tensor");
  m.def("log_softmax_topk(Tensor logits, int k, int blocked) -> (Tensor, Tensor)");
  m.def("add_layer_norm(Tensor x, Tensor y, Tensor weight, Tensor bias, float eps) -> Tensor");
  m.def("pack_panels(Tensor weight) -> Tensor");
  m.def("linear_panels(Tensor x, Tensor panels, Tensor? bias, int n, bool relu) -> Tensor");
  m.def("linear_log_softmax_topk(Tensor x, Tensor panels, Tensor? bias, int n, int k, int blocked) -> (Tensor, Tensor)");
  m.def("decoder_layer_step(Tensor x, Tensor[] panels, Tensor?[] biases, Tensor[] norms, Tensor(a!) k_cache, "
        "Tensor(b!) v_cache, int t, Tensor memory_k, Tensor memory_v, Tensor? memory_mask, float scale, float eps, "
        "bool pre_norm) -> Tensor");
  m.def("decoder_stack_step(Tensor x, Tensor[] panels, Tensor?[] biases, Tensor[] norms, Tensor(a!)[] k_caches, "
        "Tensor(b!)[] v_caches, int t, Tensor[] memory_k, Tensor[] memory_v, Tensor? memory_mask, float scale, "
        "float eps, bool pre_norm) -> Tensor");
  m.def("greedy_steps(Tensor prev, Tensor embedding, float embed_scale, Tensor positions, Tensor[] panels, "
        "Tensor?[] biases, Tensor[] norms, Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, int t, Tensor[] memory_k, "
        "Tensor[] memory_v, Tensor? memory_mask, float scale, float eps, bool pre_norm, Tensor? final_weight, "
        "Tensor? final_bias, float final_eps, Tensor out_panels, Tensor? out_bias, int vocab, int eos, "
        "int blocked_steps, int steps) -> (Tensor, Tensor)");
  m.def("smoothed_nll_forward(Tensor logits, Tensor target, float eps) -> (Tensor, Tensor)");
  m.def("smoothed_nll_backward(Tensor logits, Tensor lse, Tensor target, Tensor weight, float eps) -> Tensor");
  m.def("dropout_mask(Tensor like, float p, int seed) -> Tensor");
  m.def("dropout_apply(Tensor x, float p, int seed) -> Tensor");
  m.def("relu_dropout_apply(Tensor x, float p, int seed) -> Tensor");
  m.def("relu_dropout_backward(Tensor grad, Tensor out, float p) -> Tensor");
  m.def("residual_dropout_apply(Tensor r, Tensor x, float p, int seed) -> Tensor");
  m.def("attention_train_forward(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, float p, int seed) -> (Tensor, Tensor)");
  // no tensor arguments: a catch-all kernel (nothing to dispatch on)
  m.def("attention_dropout_factors(int b, int h, int i, int j, float p, int seed) -> Tensor", &attention_dropout_factors);
  m.def("clip_grad_norm_(Tensor(a!)[] grads, float max_norm) -> Tensor");
  m.def("attention_train_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor probs, float scale, float p, int seed) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attnkit, CPU, m) {
  m.impl("decode_attention", &decode_attention);
  m.impl("log_softmax_topk", &log_softmax_topk);
  m.impl("add_layer_norm", &add_layer_norm);
  m.impl("pack_panels", &pack_panels);
  m.impl("linear_panels", &linear_panels);
  m.impl("linear_log_softmax_topk", &linear_log_softmax_topk);
  m.impl("decoder_layer_step", &decoder_layer_step);
  m.impl("decoder_stack_step", &decoder_stack_step);
  m.impl("greedy_steps", &greedy_steps);
  m.impl("smoothed_nll_forward", &smoothed_nll_forward);
  m.impl("smoothed_nll_backward", &smoothed_nll_backward);
  m.impl("dropout_mask", &dropout_mask);
  m.impl("dropout_apply", &dropout_apply);
  m.impl("relu_dropout_apply", &relu_dropout_apply);
  m.impl("relu_dropout_backward", &relu_dropout_backward);
  m.impl("residual_dropout_apply", &residual_dropout_apply);
  m.impl("attention_train_forward", &attention_train_forward);
  m.impl("attention_train_backward", &attention_train_backward);
  m.impl("clip_grad_norm_", &clip_grad_norm_);
}
