#pragma once
// How a (rows, cols) matrix with element strides reaches a BLAS: row-major as
// it is (leading dimension ld), its transpose (column-major), or neither (the
// caller copies it). Shared by the CPU (OpenBLAS) and CUDA (cuBLASLt) GEMMs.

#include <cstdint>

namespace kiln {

// A matrix's layout for a BLAS, or none (ok false).
struct GemmLayout {
  bool ok = false;          // a BLAS can read the matrix as it is
  bool transposed = false;  // column-major: element (i, j) at i + j * ld
  int64_t ld = 0;           // the leading dimension, at least one
};

// The layout of a (rows, cols) matrix whose elements lie row_stride and col_stride apart.
inline GemmLayout
 gemm_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  auto at_least_one = [](int64_t v) { return v < 1 ? int64_t{1} : v; };
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= cols))
    return {true, false, rows == 1 ? at_least_one(cols) : row_stride};
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= rows))
    return {true, true, cols == 1 ? at_least_one(rows) : col_stride};
  return {};
}

}  // namespace kiln
