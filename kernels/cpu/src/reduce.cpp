// Reductions over any set of dims. Parallel over output elements; each output
// walks its reduced sub-space in order, so results do not depend on threads.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kiln/base/reduce_geometry.h"
#include "kiln/kernels/cpu.h"
#include "loops.h"
#include "vec_math.h"

namespace kiln::kernels::cpu {

namespace {

// float32 and float64 accumulate in double, the 16-bit floats in float (as on
// the GPU), integers and bool in int64.
template <typename T>
using reduce_acc_t = std::conditional_t<std::is_same_v<acc_t<T>, float> && std::is_same_v<T, float>, double,
                     std::conditional_t<std::is_floating_point_v<acc_t<T>>, acc_t<T>, int64_t>>;

// The sum of a contiguous run.
template <typename Acc, typename T>
KILN_VECTOR_LOOP Acc sum_run(const T* p, int64_t n) {
  return lane_sum<Acc>(n, [&](int64_t r) { return static_cast<Acc>(acc_t<T>(p[r])); });
}

// acc[c] += row[c] for c < n.
template <typename Acc, typename T>
KILN_VECTOR_LOOP void add_row(Acc* acc, const T* row, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += static_cast<Acc>(acc_t<T>(row[c]));
}

// Long runs are summed in blocks of this many elements, added in order: the
// blocks can go to different threads and the total does not depend on how many.
constexpr int64_t kSumBlock = 1 << 14;

}  // namespace

void reduce(ReduceOp op, const Buffer& out, const Buffer& x, uint32_t dims_mask, int64_t correction) {
  const ReduceGeometry g(out, x, dims_mask);
  if (g.n_out == 0) return;
  visit_dtype(x.dtype, "reduce", [&](auto tag) {
    using T = decltype(tag);
    using Acc = reduce_acc_t<T>;
    const T* xp = x.ptr<T>();
    // Calls f(value, r) for the reduced elements of output o, r counting from 0.
    const bool inner_run = g.nr == 1 && g.rx[0] == 1;  // one contiguous reduced dim: a plain loop
    auto walk = [&](int64_t xbase, auto&& f) {
      if (inner_run) {
        const T* p = xp + xbase;
        for (int64_t r = 0; r < g.n_red; ++r) f(static_cast<Acc>(acc_t<T>(p[r])), r);
        return;
      }
      int64_t idx[kMaxDims] = {};
      int64_t off = xbase;
      for (int64_t r = 0; r < g.n_red; ++r) {
        f(static_cast<Acc>(acc_t<T>(xp[off])), r);
        g.next_reduced(idx, off);
      }
    };
    auto store = [&](int64_t ooff, auto v) {
      if (out.dtype == DType::Int64) out.ptr<int64_t>()[ooff] = static_cast<int64_t>(v);
      else out.ptr<T>()[ooff] = T(static_cast<acc_t<T>>(v));
    };
    const bool sum = op == ReduceOp::Sum || op == ReduceOp::Mean;
    auto finish = [&](Acc s) {
      if constexpr (std::is_floating_point_v<Acc>)
        if (op == ReduceOp::Mean) s /= static_cast<Acc>(g.n_red);
      return s;
    };
    if (sum && g.nk >= 1 && g.kx[g.nk - 1] == 1 && g.kout[g.nk - 1] == 1 && !inner_run && g.n_red > 1) {
      // The innermost kept dim is contiguous in x and out (a bias's gradient,
      // heads summed over a group): whole rows of it are added into the sums.
      // Each output still adds its elements in order, however the work is split.
      const int64_t row = g.ksize[g.nk - 1], groups = g.n_out / row;
      const int64_t pieces = groups >= num_threads() ? 1 : std::clamp<int64_t>(row / 64, 1, num_threads());
      parallel_for(groups * pieces, g.n_red * row / pieces, [&](int64_t lo, int64_t hi) {
        std::vector<Acc> acc;
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t c0 = row * (t % pieces) / pieces, c1 = row * (t % pieces + 1) / pieces;
          int64_t xoff, ooff;
          g.output_offsets(t / pieces * row, xoff, ooff);
          acc.assign(static_cast<size_t>(c1 - c0), Acc(0));
          int64_t idx[kMaxDims] = {};
          int64_t off = xoff + c0;
          for (int64_t r = 0; r < g.n_red; ++r) {
            add_row(acc.data(), xp + off, c1 - c0);
            g.next_reduced(idx, off);
          }
          for (int64_t c = c0; c < c1; ++c) store(ooff + c, finish(acc[static_cast<size_t>(c - c0)]));
        }
      });
      return;
    }
    if (sum && inner_run) {
      // Each output's run in blocks; (output, block) pairs split among threads.
      const int64_t blocks = (g.n_red + kSumBlock - 1) / kSumBlock;
      std::vector<Acc> partial(static_cast<size_t>(g.n_out * blocks));
      parallel_for(g.n_out * blocks, std::min(g.n_red, kSumBlock), [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t o = t / blocks, b = t % blocks;
          int64_t xoff, ooff;
          g.output_offsets(o, xoff, ooff);
          partial[static_cast<size_t>(t)] = sum_run<Acc>(xp + xoff + b * kSumBlock, std::min(kSumBlock, g.n_red - b * kSumBlock));
        }
      });
      for (int64_t o = 0; o < g.n_out; ++o) {
        int64_t xoff, ooff;
        g.output_offsets(o, xoff, ooff);
        Acc s = 0;
        for (int64_t b = 0; b < blocks; ++b) s += partial[static_cast<size_t>(o * blocks + b)];
        store(ooff, finish(s));
      }
      return;
    }
    parallel_for(g.n_out, g.n_red, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        int64_t xoff, ooff;
        g.output_offsets(o, xoff, ooff);
        switch (op) {
          case ReduceOp::Sum:
          case ReduceOp::Mean: {
            Acc s = 0;
            walk(xoff, [&](Acc v, int64_t) { s += v; });
            store(ooff, finish(s));
            break;
          }
          case ReduceOp::Max:
          case ReduceOp::Min:
          case ReduceOp::ArgMax:
          case ReduceOp::ArgMin: {
            bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
            Acc best = 0;
            int64_t best_r = -1;
            bool nan_seen = false;
            walk(xoff, [&](Acc v, int64_t r) {
              if (nan_seen) return;
              bool is_nan = false;
              if constexpr (std::is_floating_point_v<Acc>) is_nan = std::isnan(v);
              if (best_r < 0 || is_nan || (want_max ? v > best : v < best)) {
                best = v;
                best_r = r;
                nan_seen = is_nan;  // NaN wins, as in PyTorch
              }
            });
            if (op == ReduceOp::Max || op == ReduceOp::Min) store(ooff, best);
            else out.ptr<int64_t>()[ooff] = best_r;
            break;
          }
          case ReduceOp::Var: {
            if constexpr (std::is_floating_point_v<Acc>) {
              Acc s = 0;
              walk(xoff, [&](Acc v, int64_t) { s += v; });
              Acc mean = s / static_cast<Acc>(g.n_red);
              Acc ss = 0;
              walk(xoff, [&](Acc v, int64_t) { ss += (v - mean) * (v - mean); });
              Acc denom = static_cast<Acc>(g.n_red - correction);
              store(ooff, denom > 0 ? ss / denom : std::numeric_limits<Acc>::quiet_NaN());
            }
            break;
          }
        }
      }
    });
  });
}

void squared_norms(const Buffer& out, const std::vector<Buffer>& xs) {
  double* o = out.ptr<double>();
  for (size_t t = 0; t < xs.size(); ++t) {
    const Buffer& x = xs[t];
    visit_floating(x.dtype, "squared_norms", [&](auto tag) {
      using T = decltype(tag);
      const T* p = x.ptr<T>();
      // Fixed blocks summed in order: the same total for any thread count.
      constexpr int64_t kBlock = 1 << 16;
      const int64_t n = x.numel(), blocks = (n + kBlock - 1) / kBlock;
      std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
      parallel_for(blocks, kBlock, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          double total = 0;
          for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
            const double v = double(acc_t<T>(p[i]));
            total += v * v;
          }
          partial[static_cast<size_t>(b)] = total;
        }
      });
      double total = 0;
      for (double v : partial) total += v;
      o[t] = total;
    });
  }
}

}  // namespace kiln::kernels::cpu
