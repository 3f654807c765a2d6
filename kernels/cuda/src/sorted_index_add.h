#pragma once
// index_add's deterministic fast path (sorted_index_add.cu).

#include "kiln/base/buffer.h"

namespace kiln::kernels::cuda {

// out[index[k]] += src[k] over rows (dim 0; the rest contiguous in both):
// sorts the index, then sums each index's rows in order. Returns false, doing
// nothing, when the layout does not fit (the general kernel takes it).
bool index_add_sorted(const Buffer& out, const Buffer& index, const Buffer& src);

}  // namespace kiln::kernels::cuda
