#include "kiln/data/span_corruption.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/ops.h"

namespace kiln::data {

namespace {

// items cut into `segments` nonempty runs uniformly at random: which of the
// items - 1 gaps start a new run is a shuffle of segments - 1 ones among zeros.
std::vector<int64_t> random_segmentation(int64_t items, int64_t segments, Generator& gen) {
  std::vector<int64_t> starts(static_cast<size_t>(items - 1), 0);
  std::fill(starts.begin(), starts.begin() + (segments - 1), 1);
  const Tensor keys = rand({items - 1}, gen, kFloat64);
  const double* key = keys.data_ptr<double>();
  std::vector<size_t> order(starts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return key[x] < key[y]; });
  std::vector<int64_t> lengths(static_cast<size_t>(segments), 0);
  size_t run = 0;
  lengths[0] = 1;
  for (size_t i = 0; i < order.size(); ++i) {
    if (starts[order[i]]) ++run;
    ++lengths[run];
  }
  return lengths;
}

// tokens with each run of masked ones replaced by the next sentinel.
std::vector<int64_t> sentinel_runs(const std::vector<int64_t>& tokens, const std::vector<bool>& masked,
                                   const SpanCorruptionOptions& o) {
  std::vector<int64_t> out;
  size_t run = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!masked[i]) {
      out.push_back(tokens[i]);
    } else if (i == 0 || !masked[i - 1]) {
      KILN_CHECK(o.sentinel_ids.empty() || run < o.sentinel_ids.size(), "[span_corruption] {} spans need more than "
                 "the {} sentinels given", run + 1, o.sentinel_ids.size());
      out.push_back(o.sentinel_ids.empty() ? o.vocab_size - 1 - static_cast<int64_t>(run) : o.sentinel_ids[run]);
      ++run;
    }
  }
  return out;
}

}  // namespace

std::vector<bool> random_spans_noise_mask(int64_t length, const SpanCorruptionOptions& o, Generator& gen) {
  KILN_CHECK(length >= 2 && o.noise_density > 0 && o.noise_density < 1 && o.mean_noise_span_length >= 1,
             "[span_corruption] needs at least 2 tokens ({}), a noise density in (0, 1) ({}) and a mean span of at "
             "least 1 ({})", length, o.noise_density, o.mean_noise_span_length);
  const int64_t noise = std::clamp<int64_t>(std::llround(static_cast<double>(length) * o.noise_density), 1, length - 1);
  const int64_t spans = std::max<int64_t>(1, std::llround(static_cast<double>(noise) / o.mean_noise_span_length));
  KILN_CHECK(length - noise >= spans, "[span_corruption] {} tokens cannot hold {} noise spans between others", length,
             spans);
  const std::vector<int64_t> noisy = random_segmentation(noise, spans, gen);
  const std::vector<int64_t> clean = random_segmentation(length - noise, spans, gen);
  std::vector<bool> mask;
  mask.reserve(static_cast<size_t>(length));
  for (size_t s = 0; s < static_cast<size_t>(spans); ++s) {
    mask.insert(mask.end(), static_cast<size_t>(clean[s]), false);
    mask.insert(mask.end(), static_cast<size_t>(noisy[s]), true);
  }
  return mask;
}

SpanCorrupted span_corrupt(const std::vector<int64_t>& tokens, const std::vector<bool>& noise,
                           const SpanCorruptionOptions& o) {
  KILN_CHECK(tokens.size() == noise.size(), "[span_corruption] {} tokens but a noise mask of {}", tokens.size(),
             noise.size());
  KILN_CHECK(o.vocab_size > 0 || !o.sentinel_ids.empty(), "[span_corruption] needs the sentinels' ids or the "
             "vocabulary's size they count down from");
  std::vector<bool> kept(noise.size());
  std::transform(noise.begin(), noise.end(), kept.begin(), [](bool n) { return !n; });
  SpanCorrupted out{sentinel_runs(tokens, noise, o), sentinel_runs(tokens, kept, o)};
  out.inputs.push_back(o.eos_id);
  out.targets.push_back(o.eos_id);
  return out;
}

SpanBatch span_corruption(const Tensor& tokens, const SpanCorruptionOptions& o, Generator& gen) {
  KILN_CHECK(tokens.dim() == 2 && tokens.dtype() == kInt64 && tokens.device().is_cpu() && tokens.size(0) > 0,
             "[span_corruption] expects tokens (B, T) int64 on the CPU, got {}", tokens.str());
  const Tensor t = tokens.contiguous();
  const int64_t B = t.size(0), T = t.size(1);
  std::vector<int64_t> inputs, labels;
  int64_t Ti = 0, To = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = t.data_ptr<int64_t>() + b * T;
    const SpanCorrupted c = span_corrupt({row, row + T}, random_spans_noise_mask(T, o, gen), o);
    Ti = static_cast<int64_t>(c.inputs.size());
    To = static_cast<int64_t>(c.targets.size());
    inputs.insert(inputs.end(), c.inputs.begin(), c.inputs.end());
    labels.insert(labels.end(), c.targets.begin(), c.targets.end());
  }
  return {tensor(inputs).view({B, Ti}), tensor(labels).view({B, To})};
}

}  // namespace kiln::data
