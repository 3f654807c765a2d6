#include "kiln/data/masked_lm.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/ops.h"

namespace kiln::data {

MaskedBatch mask_tokens(const Tensor& tokens, const Tensor& lengths, const MaskingOptions& o, Generator& gen) {
  KILN_CHECK(tokens.dim() == 2 && tokens.dtype() == kInt64 && tokens.device().is_cpu(),
             "[mask_tokens] expects tokens (B, T) int64 on the CPU, got {}", tokens.str());
  KILN_CHECK(o.vocab_size > 0 && o.mask_prob > 0 && o.mask_prob < 1 && o.max_predictions_per_128 > 0,
             "[mask_tokens] needs a vocabulary ({}), a masking probability in (0, 1) ({}) and a positive cap ({})",
             o.vocab_size, o.mask_prob, o.max_predictions_per_128);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  Tensor inputs = tokens.contiguous().clone(), labels = full({B, T}, int64_t{-100}, kInt64);
  const Tensor lens = lengths.defined() ? lengths.to(kCPU, kInt64).contiguous() : full({B}, T, kInt64);
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* lab = labels.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t length = std::min(T, lens[b].item<int64_t>());
    std::vector<int64_t> candidates;
    for (int64_t t = 0; t < length; ++t)
      if (std::find(o.never_mask.begin(), o.never_mask.end(), in[b * T + t]) == o.never_mask.end())
        candidates.push_back(t);
    const int64_t cap = std::max<int64_t>(1, (o.max_predictions_per_128 * length + 64) / 128);
    const int64_t n = std::min({cap, static_cast<int64_t>(candidates.size()),
                                std::max<int64_t>(1, std::llround(static_cast<double>(length) * o.mask_prob))});
    if (n == 0) continue;
    // A uniform draw per candidate orders them (a shuffle); the first n are taken, each with its own
    // draw for what it becomes and a random token in case it is replaced.
    const Tensor order_draws = rand({static_cast<int64_t>(candidates.size())}, gen, kFloat64);
    const Tensor fate = rand({n}, gen, kFloat64);
    const Tensor replacement = randint(0, o.vocab_size, {n}, gen);
    const double* key = order_draws.data_ptr<double>();
    std::vector<size_t> order(candidates.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return key[x] < key[y]; });
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = b * T + candidates[order[static_cast<size_t>(i)]];
      lab[at] = in[at];
      const double u = fate.data_ptr<double>()[i];
      if (u < 0.8) in[at] = o.mask_id;
      else if (u < 0.9) in[at] = replacement.data_ptr<int64_t>()[i];
    }
  }
  return {inputs, labels};
}

}  // namespace kiln::data
