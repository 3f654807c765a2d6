// Mixture-of-experts token dispatch: each expert's rows gathered from the
// tokens (moe_gather), each token's expert outputs summed under its gates
// (moe_combine), and the gates' gradient. Every output row is one unit of
// work with no accumulation across rows, so results do not depend on the
// threads. Indices are checked before anything is written.

#include <algorithm>
#include <vector>

#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

// The gates are float32, or float64 beside float64 rows.
double gate(const Buffer& weights, int64_t c) {
  if (!weights.data) return 1.0;
  return weights.dtype == DType::Float64 ? weights.ptr<double>()[c] : weights.ptr<float>()[c];
}

void check_indices(const Buffer& index, int64_t size, bool allow_dropped, const char* op) {
  const int64_t* p = index.ptr<int64_t>();
  for (int64_t i = 0; i < index.numel(); ++i)
    KILN_CHECK((p[i] >= 0 || (allow_dropped && p[i] == -1)) && p[i] < size,
               "[{}] index {} is out of range for {} rows", op, p[i], size);
}

}  // namespace

void moe_gather(const Buffer& out, const Buffer& x, const Buffer& row_choice, const Buffer& weights, int64_t top_k) {
  const int64_t R = out.sizes[0], C = out.sizes[1];
  check_indices(row_choice, x.sizes[0] * top_k, false, "moe_gather");
  const int64_t* choice = row_choice.ptr<int64_t>();
  visit_floating(x.dtype, "moe_gather", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    parallel_for(R, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* src = x.ptr<T>() + choice[r] / top_k * C;
        T* dst = out.ptr<T>() + r * C;
        const A w = static_cast<A>(gate(weights, choice[r]));
        for (int64_t i = 0; i < C; ++i) dst[i] = weights.data ? T(A(src[i]) * w) : src[i];
      }
    });
  });
}

void moe_combine(const Buffer& out, const Buffer& rows, const Buffer& slot, const Buffer& weights) {
  const int64_t N = out.sizes[0], C = out.sizes[1], k = slot.sizes[1];
  check_indices(slot, rows.sizes[0], true, "moe_combine");
  const int64_t* s = slot.ptr<int64_t>();
  visit_floating(out.dtype, "moe_combine", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    parallel_for(N, C * k, [&](int64_t b, int64_t e) {
      std::vector<A> acc(static_cast<size_t>(C));
      for (int64_t t = b; t < e; ++t) {
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t j = 0; j < k; ++j) {
          const int64_t r = s[t * k + j];
          if (r < 0) continue;
          const A w = static_cast<A>(gate(weights, t * k + j));
          const T* src = rows.ptr<T>() + r * C;
          for (int64_t i = 0; i < C; ++i) acc[i] += w * A(src[i]);
        }
        T* dst = out.ptr<T>() + t * C;
        for (int64_t i = 0; i < C; ++i) dst[i] = T(acc[i]);
      }
    });
  });
}

void moe_combine_weights_backward(const Buffer& dweights, const Buffer& dout, const Buffer& rows, const Buffer& slot) {
  const int64_t N = dout.sizes[0], C = dout.sizes[1], k = slot.sizes[1];
  check_indices(slot, rows.sizes[0], true, "moe_combine_weights_backward");
  const int64_t* s = slot.ptr<int64_t>();
  visit_floating(dout.dtype, "moe_combine_weights_backward", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(N, C * k, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (int64_t j = 0; j < k; ++j) {
          const int64_t r = s[t * k + j];
          double dot = 0;
          if (r >= 0) {
            const T* y = rows.ptr<T>() + r * C;
            const T* g = dout.ptr<T>() + t * C;
            for (int64_t i = 0; i < C; ++i) dot += double(acc_t<T>(y[i])) * double(acc_t<T>(g[i]));
          }
          if (dweights.dtype == DType::Float64) dweights.ptr<double>()[t * k + j] = dot;
          else dweights.ptr<float>()[t * k + j] = static_cast<float>(dot);
        }
    });
  });
}

}  // namespace kiln::kernels::cpu
