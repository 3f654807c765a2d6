#include "kiln/data/blank_infilling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/ops.h"

namespace kiln::data {

namespace {

// A uniform double in [0, 1) from gen.
double uniform(Generator& gen) { return rand({1}, gen, kFloat64).data_ptr<double>()[0]; }

// A span length from Poisson(mean) restricted to 1 .. max_span - 1 (GLM's weights, renormalized).
int64_t span_length(const BlankInfillingOptions& o, Generator& gen) {
  std::vector<double> cumulative;
  double total = 0;
  for (int64_t k = 1; k < o.max_span; ++k) {
    total += std::exp(static_cast<double>(k) * std::log(o.mean_span) - o.mean_span - std::lgamma(static_cast<double>(k + 1)));
    cumulative.push_back(total);
  }
  const double u = uniform(gen) * total;
  return static_cast<int64_t>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin()) + 1;
}

// spans in a random order (uniform keys, stably sorted).
std::vector<std::pair<int64_t, int64_t>> shuffled(const std::vector<std::pair<int64_t, int64_t>>& spans,
                                                  Generator& gen) {
  std::vector<double> keys;
  for (size_t i = 0; i < spans.size(); ++i) keys.push_back(uniform(gen));
  std::vector<size_t> order(spans.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return keys[x] < keys[y]; });
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t i : order) out.push_back(spans[i]);
  return out;
}

}  // namespace

GlmExample glm_layout(const std::vector<int64_t>& tokens, const std::vector<std::pair<int64_t, int64_t>>& spans,
                      const BlankInfillingOptions& o) {
  const auto n = static_cast<int64_t>(tokens.size());
  std::vector<std::pair<int64_t, int64_t>> in_text = spans;
  std::sort(in_text.begin(), in_text.end());
  for (size_t i = 0; i < in_text.size(); ++i) {
    const auto [start, end] = in_text[i];
    KILN_CHECK(start >= 0 && start < end && end <= n && (i == 0 || in_text[i - 1].second <= start),
               "[blank_infilling] span [{}, {}) of {} tokens is empty, out of bounds or overlaps another", start, end, n);
  }
  // Position in part A: a span's tokens all stand at its mask's place.
  std::vector<int64_t> position(static_cast<size_t>(n), 1);
  for (const auto& [start, end] : in_text) std::fill(position.begin() + start + 1, position.begin() + end, 0);
  std::partial_sum(position.begin(), position.end(), position.begin());
  for (int64_t& p : position) p -= 1;

  GlmExample ex;
  int64_t last = 0;
  for (const auto& [start, end] : in_text) {
    for (int64_t t = last; t < start; ++t) {
      ex.tokens.push_back(tokens[static_cast<size_t>(t)]);
      ex.positions.push_back(position[static_cast<size_t>(t)]);
    }
    ex.tokens.push_back(o.mask_id);
    ex.positions.push_back(position[static_cast<size_t>(start)]);
    last = end;
  }
  for (int64_t t = last; t < n; ++t) {
    ex.tokens.push_back(tokens[static_cast<size_t>(t)]);
    ex.positions.push_back(position[static_cast<size_t>(t)]);
  }
  ex.prefix = static_cast<int64_t>(ex.tokens.size());
  ex.labels.assign(ex.tokens.size(), -100);
  ex.block_positions.assign(ex.tokens.size(), 0);
  for (const auto& [start, end] : spans) {
    for (int64_t t = start - 1; t < end; ++t) {  // [START] x_start .. x_{end-2}, predicting x_start .. [END]
      ex.tokens.push_back(t < start ? o.start_id : tokens[static_cast<size_t>(t)]);
      ex.labels.push_back(t + 1 < end ? tokens[static_cast<size_t>(t + 1)] : o.end_id);
      ex.positions.push_back(position[static_cast<size_t>(start)]);
      ex.block_positions.push_back(t - start + 2);
    }
  }
  return ex;
}

std::vector<std::pair<int64_t, int64_t>> blank_spans(int64_t length, const BlankInfillingOptions& o, Generator& gen) {
  KILN_CHECK(o.ratio > 0 && o.ratio < 1 && o.mean_span > 0 && o.max_span >= 2,
             "[blank_infilling] needs a ratio in (0, 1) ({}), a positive mean span ({}) and max_span >= 2 ({})", o.ratio,
             o.mean_span, o.max_span);
  std::vector<int64_t> lengths;
  int64_t covered = 0;
  while (covered < static_cast<int64_t>(o.ratio * static_cast<double>(length))) {
    lengths.push_back(span_length(o, gen));
    covered += lengths.back();
  }
  // Drop spans that cannot fit with a token between each two.
  while (!lengths.empty() && covered + static_cast<int64_t>(lengths.size()) - 1 > length) {
    covered -= lengths.back();
    lengths.pop_back();
  }
  // GLM's placement: the free tokens distributed by sorted uniform draws, one kept between spans.
  const int64_t free = length - covered - static_cast<int64_t>(lengths.size()) + 1;
  std::vector<int64_t> places;
  for (size_t i = 0; i < lengths.size(); ++i)
    places.push_back(std::min(free, static_cast<int64_t>(uniform(gen) * static_cast<double>(free + 1))));
  std::sort(places.begin(), places.end());
  std::vector<std::pair<int64_t, int64_t>> spans;
  int64_t offset = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    spans.emplace_back(offset + places[i], offset + places[i] + lengths[i]);
    offset += lengths[i] + 1;
  }
  return shuffled(spans, gen);  // part B's order
}

std::vector<std::pair<int64_t, int64_t>> sentence_spans(const std::vector<int64_t>& tokens,
                                                        const std::vector<bool>& ends_sentence, int64_t eos_id,
                                                        const BlankInfillingOptions& o, Generator& gen) {
  std::vector<std::pair<int64_t, int64_t>> sentences;
  const auto n = static_cast<int64_t>(tokens.size());
  int64_t first = 0;
  auto add = [&](int64_t end) {
    if (first < end && end - first < o.max_span) sentences.emplace_back(first, end);
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = tokens[static_cast<size_t>(i)];
    KILN_CHECK(t >= 0 && (t == eos_id || t < static_cast<int64_t>(ends_sentence.size())),
               "[blank_infilling] token {} is outside the {} ids ends_sentence marks", t, ends_sentence.size());
    if (t == eos_id) {
      first = i + 1;
    } else if (ends_sentence[static_cast<size_t>(t)]) {
      add(i + 1);
      first = i + 1;
    }
  }
  add(n);
  std::vector<std::pair<int64_t, int64_t>> taken;
  int64_t covered = 0;
  for (const auto& span : shuffled(sentences, gen)) {
    taken.push_back(span);
    covered += span.second - span.first;
    if (covered >= static_cast<int64_t>(o.ratio * static_cast<double>(n))) break;
  }
  return taken;
}

std::pair<int64_t, int64_t> generation_span(int64_t length, const BlankInfillingOptions& o, Generator& gen) {
  KILN_CHECK(length >= 3, "[blank_infilling] generation needs at least 3 tokens, got {}", length);
  const int64_t shortest = std::max<int64_t>(1, static_cast<int64_t>(o.min_generation_ratio * static_cast<double>(length)));
  const int64_t longest = std::max(shortest, length - 2);
  const int64_t span = shortest + std::min(longest - shortest,
                                           static_cast<int64_t>(uniform(gen) * static_cast<double>(longest - shortest + 1)));
  return {length - span, length};
}

}  // namespace kiln::data
