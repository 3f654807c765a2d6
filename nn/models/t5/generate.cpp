// Greedy and beam-search decoding for T5: the encoder's output and each
// cross-attention's keys and values are computed once, the decoder's self-
// attention grows its KV cache one token per step; beams are reordered by
// selecting cache rows.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kiln/autograd.h"
#include "kiln/nn/models/t5.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

// Each row's log-probabilities of the next token (rows, V), on the host in float64.
std::vector<std::vector<double>> next_log_probs(const Tensor& logits) {
  Tensor lp = log_softmax(logits.select(1, logits.size(1) - 1).to(kCPU, kFloat64), -1).contiguous();
  const int64_t rows = lp.size(0), V = lp.size(1);
  const double* p = lp.data_ptr<double>();
  std::vector<std::vector<double>> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) out[static_cast<size_t>(r)].assign(p + r * V, p + (r + 1) * V);
  return out;
}

Tensor row_index(const std::vector<int64_t>& rows, Device device) {
  return tensor(rows, TensorOptions(kInt64).device(device));
}

// A row's finished beams: the `beams` best by score (log-probability / length ^ penalty).
struct Finished {
  std::vector<std::pair<double, std::vector<int64_t>>> hyps;
  double worst() const {
    double w = std::numeric_limits<double>::infinity();
    for (const auto& h : hyps) w = std::min(w, h.first);
    return w;
  }
  void add(double score, std::vector<int64_t> tokens, size_t beams) {
    if (hyps.size() >= beams && score <= worst()) return;
    hyps.emplace_back(score, std::move(tokens));
    if (hyps.size() > beams)
      hyps.erase(std::min_element(hyps.begin(), hyps.end(), [](const auto& a, const auto& b) { return a.first < b.first; }));
  }
};

}  // namespace

std::vector<std::vector<int64_t>> generate(const T5& model, const Tensor& ids, const Tensor& lengths,
                                           const Seq2SeqOptions& options) {
  KILN_CHECK(options.beams >= 1 && options.max_new_tokens >= 1, "[t5 generate] beams ({}) and max_new_tokens ({}) "
             "must be at least 1", options.beams, options.max_new_tokens);
  NoGradGuard no_grad;
  const T5Config& c = model.config();
  const int64_t B = ids.size(0), K = options.beams;
  const Device device = ids.device();
  Memory memory = model.encode(ids, lengths);
  if (K > 1) {  // each row's encoder output once per beam
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b) rows.insert(rows.end(), static_cast<size_t>(K), b);
    memory.states = index_select(memory.states, 0, row_index(rows, device));
    if (memory.lengths.defined()) memory.lengths = index_select(memory.lengths, 0, row_index(rows, memory.lengths.device()));
  }
  std::vector<KVCache> caches;
  std::vector<std::vector<int64_t>> seqs(static_cast<size_t>(B * K));
  std::vector<int64_t> next(static_cast<size_t>(B * K), c.decoder_start_token_id);
  // Beam search: the running beams' log-probabilities (only the first beam of
  // a row is alive at first), each row's finished beams and whether it is done.
  std::vector<double> scores(static_cast<size_t>(B * K), 0.0);
  for (int64_t r = 0; r < B * K; ++r)
    if (r % K != 0) scores[static_cast<size_t>(r)] = -1e9;
  std::vector<Finished> finished(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  auto penalized = [&](double score, size_t length) {
    return score / std::pow(static_cast<double>(length), options.length_penalty);
  };

  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    Tensor logits = model.decode(row_index(next, device).view({B * K, 1}), memory, &caches);
    const std::vector<std::vector<double>> lp = next_log_probs(logits);
    const int64_t V = static_cast<int64_t>(lp[0].size());
    if (K == 1) {
      for (int64_t b = 0; b < B; ++b) {
        auto& seq = seqs[static_cast<size_t>(b)];
        if (done[static_cast<size_t>(b)]) {
          next[static_cast<size_t>(b)] = c.pad_token_id;
          continue;
        }
        const auto& row = lp[static_cast<size_t>(b)];
        const int64_t token = std::max_element(row.begin(), row.end()) - row.begin();
        seq.push_back(token);
        next[static_cast<size_t>(b)] = token;
        if (token == c.eos_token_id) done[static_cast<size_t>(b)] = true;
      }
    } else {
      std::vector<int64_t> parent(static_cast<size_t>(B * K));
      std::vector<double> new_scores(static_cast<size_t>(B * K));
      std::vector<std::vector<int64_t>> new_seqs(static_cast<size_t>(B * K));
      for (int64_t b = 0; b < B; ++b) {
        if (done[static_cast<size_t>(b)]) {  // keeps its rows, unused
          for (int64_t k = 0; k < K; ++k) {
            const size_t r = static_cast<size_t>(b * K + k);
            parent[r] = static_cast<int64_t>(r);
            new_scores[r] = scores[r];
            next[r] = c.pad_token_id;
          }
          continue;
        }
        // The 2K best continuations over the row's beams, best first.
        std::vector<int64_t> cand(static_cast<size_t>(K * V));
        std::iota(cand.begin(), cand.end(), int64_t{0});
        auto total = [&](int64_t i) {
          const size_t r = static_cast<size_t>(b * K + i / V);
          return scores[r] + lp[r][static_cast<size_t>(i % V)];
        };
        const auto take = std::min<int64_t>(2 * K, K * V);
        std::partial_sort(cand.begin(), cand.begin() + take, cand.end(),
                          [&](int64_t x, int64_t y) { return total(x) > total(y); });
        int64_t kept = 0;
        for (int64_t rank = 0; rank < take && kept < K; ++rank) {
          const int64_t i = cand[static_cast<size_t>(rank)], beam = b * K + i / V, token = i % V;
          const double score = total(i);
          std::vector<int64_t> tokens = seqs[static_cast<size_t>(beam)];
          tokens.push_back(token);
          if (token == c.eos_token_id) {  // finished, if among the best K
            if (rank < K) finished[static_cast<size_t>(b)].add(penalized(score, tokens.size()), tokens, K);
            continue;
          }
          const size_t r = static_cast<size_t>(b * K + kept++);
          parent[r] = beam;
          new_scores[r] = score;
          new_seqs[r] = std::move(tokens);
          next[r] = token;
        }
        const size_t length = new_seqs[static_cast<size_t>(b * K)].size();
        const Finished& f = finished[static_cast<size_t>(b)];
        done[static_cast<size_t>(b)] = static_cast<int64_t>(f.hyps.size()) >= K &&
                                       f.worst() >= penalized(new_scores[static_cast<size_t>(b * K)], length);
      }
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < K; ++k) {
          const size_t r = static_cast<size_t>(b * K + k);
          if (!new_seqs[r].empty()) seqs[r] = std::move(new_seqs[r]);
        }
      scores = new_scores;
      Tensor order = row_index(parent, device);
      for (KVCache& cache : caches) {
        cache.k = index_select(cache.k, 0, order);
        cache.v = index_select(cache.v, 0, order);
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  if (K == 1) {
    seqs.resize(static_cast<size_t>(B));
    return seqs;
  }
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    Finished& f = finished[static_cast<size_t>(b)];
    if (!done[static_cast<size_t>(b)])
      for (int64_t k = 0; k < K; ++k) {
        const size_t r = static_cast<size_t>(b * K + k);
        f.add(penalized(scores[r], seqs[r].size()), seqs[r], static_cast<size_t>(K));
      }
    out[static_cast<size_t>(b)] =
        std::max_element(f.hyps.begin(), f.hyps.end(), [](const auto& x, const auto& y) { return x.first < y.first; })->second;
  }
  return out;
}

}  // namespace kiln::nn
