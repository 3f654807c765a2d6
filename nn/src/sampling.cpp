#include "kiln/nn/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

int64_t sample_token(const Tensor& logits, const SamplingOptions& o, Generator& gen) {
  KILN_CHECK(logits.dim() == 1 && logits.numel() > 0, "[sample_token] expects logits (V,), got [{}]",
             fmt::join(logits.sizes(), ", "));
  KILN_CHECK(o.temperature >= 0 && o.top_k >= 0 && o.top_p > 0 && o.top_p <= 1,
             "[sample_token] temperature ({}) and top_k ({}) must be >= 0, top_p ({}) in (0, 1]", o.temperature,
             o.top_k, o.top_p);
  Tensor host = logits.detach().to(kCPU, kFloat64).contiguous();
  const double* l = host.data_ptr<double>();
  const int64_t V = host.numel();
  if (o.temperature == 0) return std::max_element(l, l + V) - l;
  // Candidates by descending logit; keep the top k, then the smallest prefix with mass >= top_p.
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b]; });
  size_t keep = o.top_k > 0 ? std::min<size_t>(static_cast<size_t>(o.top_k), order.size()) : order.size();
  std::vector<double> p(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i] = std::exp((l[order[i]] - l[order[0]]) / o.temperature);
  double mass = 0;
  size_t nucleus = 0;
  while (nucleus < keep && mass < o.top_p * total) mass += p[nucleus++];
  // One Philox uniform decides, so a seeded generator replays the sample.
  double u = rand({1}, gen, kFloat64).item<double>() * mass;
  for (size_t i = 0; i < nucleus; ++i) {
    if ((u -= p[i]) < 0) return order[i];
  }
  return order[nucleus - 1];
}

std::vector<int64_t> prompt_window(const std::vector<int64_t>& prompt, int64_t max_new_tokens, int64_t max_positions) {
  KILN_CHECK(!prompt.empty(), "[generate] the prompt must hold at least one token");
  const int64_t room = std::max<int64_t>(1, max_positions - std::min(max_new_tokens, max_positions - 1));
  return {prompt.end() - std::min<int64_t>(static_cast<int64_t>(prompt.size()), room), prompt.end()};
}

std::vector<int64_t> generate(const TransformerLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop) {
  NoGradGuard no_grad;
  const Device device = model.embed_tokens->weight.device();
  const int64_t limit = model.spec().max_positions;
  std::vector<KVCache> caches(model.layers->size());
  std::vector<int64_t> out;
  Tensor input = tensor(prompt_window(prompt, max_new_tokens, limit)).view({1, -1}).to(device);
  for (int64_t i = 0; i < max_new_tokens && caches[0].length() < limit; ++i) {
    Tensor logits = model.forward(input, &caches);  // (1, t, V)
    int64_t next = sample_token(logits[0][logits.size(1) - 1], options, gen);
    out.push_back(next);
    if (next == stop) break;
    input = full({1, 1}, next, TensorOptions(kInt64).device(device));
  }
  return out;
}

}  // namespace kiln::nn
