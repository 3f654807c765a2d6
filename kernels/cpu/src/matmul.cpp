// Batched matmul: float32/float64 through OpenBLAS's GEMM (single-threaded,
// split over kiln's thread pool), bfloat16/float16 widened to float32 for it,
// integers through a plain loop in int64.

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kiln/base/gemm_layout.h"
#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

struct Layout {
  CBLAS_TRANSPOSE trans = CblasNoTrans;
  int64_t ld = 0;
};

// p as BLAS sees it: in place when its strides allow, else copied row-major into scratch.
template <typename T>
const T* as_blas(const T* p, int64_t rows, int64_t cols, int64_t srow, int64_t scol, Layout& l,
                 std::vector<T>& scratch) {
  GemmLayout g = gemm_layout(rows, cols, srow, scol);
  if (g.ok) {
    l = {g.transposed ? CblasTrans : CblasNoTrans, g.ld};
    return p;
  }
  scratch.resize(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) scratch[i * cols + j] = p[i * srow + j * scol];
  l = {CblasNoTrans, std::max<int64_t>(cols, 1)};
  return scratch.data();
}

// The fewest FLOPs of a GEMM worth another thread.
constexpr double kGemmGrain = 1 << 21;

template <typename T>
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
          const T* b, int64_t ldb, T* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
}

}  // namespace

// out[p, i, j] += bias[j] (bias of any numeric dtype; out of T).
template <typename T>
void add_bias(const Buffer& out, const Buffer& bias) {
  visit_numeric(bias.dtype, "matmul bias", [&](auto btag) {
    using B = decltype(btag);
    const B* bp = bias.ptr<B>();
    for (int64_t p = 0; p < out.sizes[0]; ++p)
      for (int64_t i = 0; i < out.sizes[1]; ++i) {
        T* row = out.ptr<T>() + p * out.strides[0] + i * out.strides[1];
        for (int64_t j = 0; j < out.sizes[2]; ++j)
          row[j * out.strides[2]] = T(acc_t<T>(row[j * out.strides[2]]) + acc_t<T>(acc_t<B>(bp[j])));
      }
  });
}

namespace {
// The GELU epilogue on a finished product (+ bias): pre-activation kept if asked for.
void gelu_epilogue(const Buffer& out, const GemmOptions& options) {
  if (!options.gelu_tanh) return;
  if (options.pre_activation.data) copy(options.pre_activation, out);
  unary(UnaryOp::GeluTanh, out, out, 0, 0);
}
}  // namespace

void matmul(const Buffer& out, const Buffer& a, const Buffer& b, const GemmOptions& options) {
  const int64_t batch = out.sizes[0], m = out.sizes[1], n = out.sizes[2], k = a.sizes[2];
  visit_numeric(out.dtype, "matmul", [&](auto tag) {
    using T = decltype(tag);
    T* c = out.ptr<T>();
    if (k == 0) {
      for (int64_t p = 0; p < batch; ++p)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) c[p * out.strides[0] + i * out.strides[1] + j * out.strides[2]] = T(0);
      if (options.bias.data) add_bias<T>(out, options.bias);
      return gelu_epilogue(out, options);
    }
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      // Operands as BLAS takes them (copied when their strides do not allow).
      std::vector<std::vector<T>> sa(static_cast<size_t>(batch)), sb(static_cast<size_t>(batch));
      std::vector<const T*> pa(static_cast<size_t>(batch)), pb(static_cast<size_t>(batch));
      std::vector<Layout> la(static_cast<size_t>(batch)), lb(static_cast<size_t>(batch));
      for (size_t p = 0; p < static_cast<size_t>(batch); ++p) {
        const auto q = static_cast<int64_t>(p);
        pa[p] = as_blas(a.ptr<T>() + q * a.strides[0], m, k, a.strides[1], a.strides[2], la[p], sa[p]);
        pb[p] = as_blas(b.ptr<T>() + q * b.strides[0], k, n, b.strides[1], b.strides[2], lb[p], sb[p]);
      }
      // Each product's rows (or columns, when it has fewer rows) in parts
      // over the threads, the parts of every product of the batch as tasks;
      // BLAS runs single-threaded in each. Products too small to split are
      // spread over the batch.
      const bool by_rows = m >= n;
      const int64_t extent = by_rows ? m : n;
      const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
      const int64_t parts =
          std::clamp<int64_t>(static_cast<int64_t>(flops / kGemmGrain), 1, std::min<int64_t>(num_threads(), extent));
      auto part = [&](int64_t task) {
        const auto p = static_cast<size_t>(task / parts);
        const int64_t lo = task % parts * extent / parts, hi = (task % parts + 1) * extent / parts;
        T* pc = c + static_cast<int64_t>(p) * out.strides[0];
        if (hi == lo) return;
        if (by_rows)
          gemm<T>(la[p].trans, lb[p].trans, hi - lo, n, k, pa[p] + (la[p].trans == CblasNoTrans ? lo * la[p].ld : lo),
                  la[p].ld, pb[p], lb[p].ld, pc + lo * out.strides[1], out.strides[1]);
        else
          gemm<T>(la[p].trans, lb[p].trans, m, hi - lo, k, pa[p], la[p].ld,
                  pb[p] + (lb[p].trans == CblasNoTrans ? lo : lo * lb[p].ld), lb[p].ld, pc + lo, out.strides[1]);
      };
      if (m > 0 && n > 0) {
        const int64_t tasks = batch * parts;
        if (tasks == 1 || static_cast<double>(batch) * flops < kGemmGrain) {
          for (int64_t t = 0; t < tasks; ++t) part(t);
        } else {
          parallel_tasks(tasks, part);
        }
      }
      if (options.bias.data) add_bias<T>(out, options.bias);
      gelu_epilogue(out, options);
    } else if constexpr (std::is_floating_point_v<acc_t<T>>) {
      // 16-bit floats: widen to float32, multiply with SGEMM (float32
      // accumulation, as on the GPU), round the result once.
      auto widen = [](const Buffer& x) {
        Buffer f = x;
        f.dtype = DType::Float32;
        f.strides[2] = 1;
        f.strides[1] = x.sizes[2];
        f.strides[0] = x.sizes[1] * x.sizes[2];
        return f;
      };
      std::vector<float> fa(static_cast<size_t>(a.numel())), fb(static_cast<size_t>(b.numel())),
          fc(static_cast<size_t>(out.numel()));
      Buffer ba = widen(a), bb = widen(b), bc = widen(out);
      ba.data = fa.data();
      bb.data = fb.data();
      bc.data = fc.data();
      copy(ba, a);
      copy(bb, b);
      matmul(bc, ba, bb, options);  // bias and GELU applied in float32, before rounding once
      copy(out, bc);
    } else {
      using Acc = int64_t;
      parallel_for(batch * m, n * k, [&](int64_t begin, int64_t end) {
        std::vector<Acc> row(static_cast<size_t>(n));
        for (int64_t pi = begin; pi < end; ++pi) {
          int64_t p = pi / m, i = pi % m;
          std::fill(row.begin(), row.end(), Acc(0));
          const T* pa = a.ptr<T>() + p * a.strides[0] + i * a.strides[1];
          const T* pb = b.ptr<T>() + p * b.strides[0];
          for (int64_t q = 0; q < k; ++q) {
            Acc av = static_cast<Acc>(acc_t<T>(pa[q * a.strides[2]]));
            const T* brow = pb + q * b.strides[1];
            for (int64_t j = 0; j < n; ++j) row[j] += av * static_cast<Acc>(acc_t<T>(brow[j * b.strides[2]]));
          }
          T* pc = c + p * out.strides[0] + i * out.strides[1];
          for (int64_t j = 0; j < n; ++j) pc[j * out.strides[2]] = T(static_cast<acc_t<T>>(row[j]));
        }
      });
      if (options.bias.data) add_bias<T>(out, options.bias);
    }
  });
}

void grouped_matmul(const std::vector<Buffer>& out, const std::vector<Buffer>& a, const std::vector<Buffer>& b,
                    const GemmOptions& options, bool) {
  for (size_t i = 0; i < out.size(); ++i) matmul(out[i], a[i], b[i], options);
}

}  // namespace kiln::kernels::cpu
