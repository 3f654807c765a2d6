#include "kiln/nn/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/autograd.h"
#include "kiln/nn/objectives.h"
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
  // -inf masks a token out; NaN or +inf (an overflowed or broken model) leaves nothing to draw from.
  const int64_t bad = std::find_if(l, l + V, [](double x) { return std::isnan(x) || x == INFINITY; }) - l;
  KILN_CHECK(bad == V, "[sample_token] logit {} of {} is {}: the model's output is not finite", bad, V,
             bad < V ? l[bad] : 0.0);
  KILN_CHECK(*std::max_element(l, l + V) > -INFINITY, "[sample_token] every one of the {} logits is -inf: no token "
             "can be drawn", V);
  if (o.temperature == 0) return std::max_element(l, l + V) - l;
  if (o.top_k == 0 && o.top_p == 1) {  // nothing filtered: no need to rank the candidates
    const double top = *std::max_element(l, l + V);
    std::vector<double> p(static_cast<size_t>(V));
    double total = 0;
    for (int64_t i = 0; i < V; ++i) total += p[i] = std::exp((l[i] - top) / o.temperature);
    double u = rand({1}, gen, kFloat64).item<double>() * total;
    int64_t last = 0;  // the last candidate that can be drawn, should rounding leave u >= 0
    for (int64_t i = 0; i < V; ++i) {
      if (p[i] > 0) last = i;
      if ((u -= p[i]) < 0) return i;
    }
    return last;
  }
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

namespace {

// The logits of each row's last position (B, 1, V) after feeding input
// through the caches: the head runs on that position alone, not the prompt's.
Tensor last_logits(const TransformerLM& model, const Tensor& input, std::vector<KVCache>& caches,
                   const AttentionInputs* inputs) {
  KILN_CHECK(model.layout().pp_size() == 1, "[generate] the model holds {} pipeline stages: decode with "
             "dist::pipeline_generate", model.layout().pp_size());
  Tensor hidden = model.forward_stage(input, &caches, inputs);
  return model.logits_from_hidden(hidden.narrow(1, hidden.size(1) - 1, 1));
}

}  // namespace

std::vector<int64_t> generate(const TransformerLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop) {
  NoGradGuard no_grad;
  const Device device = model.embed_tokens->weight.device();
  const int64_t limit = model.spec().max_positions;
  std::vector<KVCache> caches(model.layers->size());
  std::vector<int64_t> out;
  Tensor input = tensor(prompt_window(prompt, max_new_tokens, limit)).view({1, -1}).to(device);
  for (int64_t i = 0; i < max_new_tokens && caches[0].length() < limit; ++i) {
    Tensor logits = last_logits(model, input, caches, nullptr);  // (1, 1, V)
    int64_t next = sample_token(logits[0][0], options, gen);
    out.push_back(next);
    if (next == stop) break;
    input = full({1, 1}, next, TensorOptions(kInt64).device(device));
  }
  return out;
}

BatchGeneration generate_batch(const TransformerLM& model, const std::vector<std::vector<int64_t>>& prompts,
                               int64_t max_new_tokens, const SamplingOptions& options,
                               std::vector<Generator>& generators, int64_t stop) {
  NoGradGuard no_grad;
  const Device device = model.embed_tokens->weight.device();
  const int64_t limit = model.spec().max_positions, B = static_cast<int64_t>(prompts.size());
  KILN_CHECK(generators.size() == prompts.size(), "[generate_batch] needs a generator per prompt: {} prompts, {} "
             "generators", prompts.size(), generators.size());
  BatchGeneration out{std::vector<std::vector<int64_t>>(prompts.size()), std::vector<std::vector<double>>(prompts.size())};
  if (B == 0) return out;
  // Prefill: each window right-aligned at width L; row b's tokens at positions 0 .. length - 1.
  std::vector<std::vector<int64_t>> windows;
  int64_t L = 0;
  for (const auto& p : prompts) {
    windows.push_back(prompt_window(p, max_new_tokens, limit));
    L = std::max<int64_t>(L, static_cast<int64_t>(windows.back().size()));
  }
  std::vector<int64_t> ids(static_cast<size_t>(B * L), 0), positions(ids.size(), 0), starts, next_position;
  for (int64_t b = 0; b < B; ++b) {
    const auto n = static_cast<int64_t>(windows[b].size());
    starts.push_back(L - n);
    next_position.push_back(n);
    for (int64_t t = 0; t < n; ++t) {
      ids[b * L + L - n + t] = windows[b][t];
      positions[b * L + L - n + t] = t;
    }
  }
  auto on_device = [&](const std::vector<int64_t>& v, int64_t rows) { return tensor(v).view({rows, -1}).to(device); };
  Tensor input = on_device(ids, B);
  AttentionInputs inputs{.key_starts = on_device(starts, B).view({-1}), .positions = on_device(positions, B)};
  std::vector<KVCache> caches(model.layers->size());
  std::vector<int64_t> rows(static_cast<size_t>(B));  // the prompt of each row still in the batch
  std::iota(rows.begin(), rows.end(), 0);
  for (int64_t step = 0; step < max_new_tokens && caches[0].length() < limit; ++step) {
    Tensor last = last_logits(model, input, caches, &inputs);  // (rows, 1, V)
    Tensor host = last.to(kCPU, kFloat64).view({static_cast<int64_t>(rows.size()), -1});
    std::vector<int64_t> drawn, keep;
    for (size_t r = 0; r < rows.size(); ++r)
      drawn.push_back(sample_token(host[static_cast<int64_t>(r)], options, generators[static_cast<size_t>(rows[r])]));
    Tensor log_p = token_log_probs(last, on_device(drawn, static_cast<int64_t>(rows.size()))).to(kCPU, kFloat64);
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto b = static_cast<size_t>(rows[r]);
      out.tokens[b].push_back(drawn[r]);
      out.log_probs[b].push_back(log_p.data_ptr<double>()[r]);
      if (drawn[r] != stop) keep.push_back(static_cast<int64_t>(r));
    }
    ++out.steps;
    if (keep.empty()) break;
    // The unfinished rows go on: their caches, starts and next tokens.
    std::vector<int64_t> next_ids, next_positions, kept_rows;
    for (int64_t r : keep) {
      next_ids.push_back(drawn[r]);
      next_positions.push_back(next_position[rows[r]]++);
      kept_rows.push_back(rows[r]);
    }
    if (keep.size() < rows.size()) {
      Tensor index = on_device(keep, 1).view({-1});
      for (KVCache& c : caches) c = {index_select(c.k, 0, index), index_select(c.v, 0, index)};
      inputs.key_starts = index_select(inputs.key_starts, 0, index);
    }
    rows = std::move(kept_rows);
    const auto n = static_cast<int64_t>(rows.size());
    input = on_device(next_ids, n);
    inputs.positions = on_device(next_positions, n);
  }
  return out;
}

}  // namespace kiln::nn
