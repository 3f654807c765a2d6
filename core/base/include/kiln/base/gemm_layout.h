#pragma once
// How a (rows, cols) matrix with element strides reaches a BLAS: row-major as
// it is (leading dimension ld), its transpose (column-major), or neither (the
// caller copies it), and the alignment it offers. Shared by the CPU (OpenBLAS)
// and CUDA (cuBLASLt) GEMMs.

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

// The alignment, in bytes, that a BLAS may assume of a matrix starting at
// `address` with leading dimension `ld` and, when `batch` > 1, matrices
// `batch_stride` elements apart: the largest power of two up to 256 that
// divides all three in bytes. (cuBLASLt otherwise assumes 256 and may pick a
// kernel that faults on a view at an odd element offset.)
inline uint32_t gemm_alignment(uint64_t address, int64_t ld, int64_t batch_stride, int64_t batch, int64_t element_size) {
  uint64_t bits = address | 256;
  bits |= static_cast<uint64_t>(ld * element_size);
  if (batch > 1) bits |= static_cast<uint64_t>(batch_stride * element_size);
  return static_cast<uint32_t>(bits & (~bits + 1));  // the lowest set bit
}

}  // namespace kiln
