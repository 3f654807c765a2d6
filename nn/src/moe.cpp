#include "kiln/nn/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/ranges.h>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

int64_t expert_capacity(int64_t tokens, const MoeSpec& spec) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(tokens * spec.top_k) /
                                        static_cast<double>(spec.experts) * spec.capacity_factor));
}

Routing route(const Tensor& experts, const Tensor& gates, int64_t num_experts, int64_t capacity, DropPolicy policy) {
  KILN_CHECK(experts.dim() == 2 && gates.sizes() == experts.sizes(), "[route] expects experts and gates of one "
             "shape (N, k), got [{}] and [{}]", fmt::join(experts.sizes(), ", "),
             fmt::join(gates.sizes(), ", "));
  const int64_t N = experts.size(0), k = experts.size(1);
  const Tensor chosen_host = experts.to(kCPU, kInt64).contiguous(), gate_host = gates.to(kCPU, kFloat64).contiguous();
  const int64_t* chosen = chosen_host.data_ptr<int64_t>();
  const double* gate = gate_host.data_ptr<double>();
  // Each expert's choices, in token order.
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(num_experts));
  for (int64_t c = 0; c < N * k; ++c) {
    KILN_CHECK(chosen[c] >= 0 && chosen[c] < num_experts, "[route] token {} chose expert {} of {}", c / k, chosen[c],
               num_experts);
    by_expert[chosen[c]].push_back(c);
  }
  Routing r;
  std::vector<int64_t> row_choice, slot(static_cast<size_t>(N * k), -1);
  for (int64_t e = 0; e < num_experts; ++e) {
    std::vector<int64_t>& mine = by_expert[e];
    r.expert_choices.push_back(static_cast<int64_t>(mine.size()));
    if (capacity >= 0 && static_cast<int64_t>(mine.size()) > capacity) {
      if (policy == DropPolicy::Probs) {  // keep the largest gates (the earlier token among equals)
        std::stable_sort(mine.begin(), mine.end(), [&](int64_t a, int64_t b) { return gate[a] > gate[b]; });
        mine.resize(static_cast<size_t>(capacity));
        std::sort(mine.begin(), mine.end());
      } else {
        mine.resize(static_cast<size_t>(capacity));
      }
    }
    r.expert_rows.push_back(static_cast<int64_t>(mine.size()));
    for (int64_t c : mine) {
      slot[c] = static_cast<int64_t>(row_choice.size());
      row_choice.push_back(c);
    }
  }
  r.dropped = N * k - static_cast<int64_t>(row_choice.size());
  const TensorOptions index = TensorOptions(kInt64).device(experts.device());
  r.permutation = {tensor(row_choice, index), tensor(slot, index).view({N, k})};
  return r;
}

void MoeStats::add(const MoeStats& other) {
  aux_loss += other.aux_loss;
  z_loss += other.z_loss;
  if (expert_choices.size() < other.expert_choices.size()) expert_choices.resize(other.expert_choices.size(), 0);
  for (size_t e = 0; e < other.expert_choices.size(); ++e) expert_choices[e] += other.expert_choices[e];
  choices += other.choices;
  dropped += other.dropped;
  forwards += other.forwards;
}

namespace {

// out unchanged; in backward, loss (a scalar) receives the gradient `scale`,
// as if it had been added to the loss that training differentiates.
Tensor with_auxiliary_loss(const Tensor& out, const Tensor& loss, double scale) {
  Tensor result = out.detach();
  autograd::record("MoE auxiliary loss", result, {out, loss}, [scale, dtype = loss.dtype(), device = loss.device()](
                                                                      const Tensor& g, const autograd::Needs& n) {
    return autograd::Grads{n[0] ? g : Tensor(), n[1] ? full({}, scale, TensorOptions(dtype).device(device)) : Tensor()};
  });
  return result;
}

}  // namespace

Tensor MoeLayer::local_experts(const Tensor& rows, const std::vector<int64_t>& expert_rows) const {
  Tensor h = mlp_activation(kind_, grouped_linear(rows, cast_cached(up, rows.dtype()), expert_rows));
  return grouped_linear(h, cast_cached(down, rows.dtype()), expert_rows);
}

Tensor MoeLayer::experts(const Tensor& rows, const std::vector<int64_t>& expert_rows) const {
  const int64_t ep = factory_->ep_size();
  if (ep == 1) return local_experts(rows, expert_rows);
  // Rank j holds experts [j El, (j + 1) El): its rows are one block.
  const int64_t E = spec_.experts, El = E / ep;
  std::vector<int64_t> send(static_cast<size_t>(ep), 0), receive(static_cast<size_t>(ep), 0);
  for (int64_t e = 0; e < E; ++e) send[e / El] += expert_rows[e];
  // received[i El + l]: the rows rank i sends for local expert l.
  const Tensor counts = factory_->exchange_expert_counts(tensor(expert_rows, TensorOptions(kInt64).device(rows.device())));
  const Tensor host = counts.to(kCPU).contiguous();
  const int64_t* received = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < ep; ++i)
    for (int64_t l = 0; l < El; ++l) receive[i] += received[i * El + l];
  Tensor arrived = factory_->exchange_expert_rows(rows, receive, send);  // by source rank, then local expert
  // Regrouped by local expert (then source rank) for the grouped GEMM, and back.
  std::vector<int64_t> start(static_cast<size_t>(ep * El)), order, local_rows(static_cast<size_t>(El), 0);
  for (int64_t c = 0, at = 0; c < ep * El; ++c) {
    start[c] = at;
    at += received[c];
  }
  for (int64_t l = 0; l < El; ++l)
    for (int64_t i = 0; i < ep; ++i)
      for (int64_t k = 0; k < received[i * El + l]; ++k) {
        order.push_back(start[i * El + l] + k);
        ++local_rows[l];
      }
  std::vector<int64_t> inverse(order.size());
  for (size_t k = 0; k < order.size(); ++k) inverse[order[k]] = static_cast<int64_t>(k);
  const TensorOptions index = TensorOptions(kInt64).device(rows.device());
  Tensor y = local_experts(index_select(arrived, 0, tensor(order, index)), local_rows);
  return factory_->exchange_expert_rows(index_select(y, 0, tensor(inverse, index)), send, receive);
}

MoeLayer::MoeLayer(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype,
                   Device device)
    : factory_(&factory), spec_(*spec.mlp.moe), kind_(spec.mlp.kind) {
  const int64_t E = spec_.experts, C = spec.d_model, hidden = spec.mlp_hidden(), ep = factory.ep_size();
  KILN_CHECK(E % ep == 0, "[MoeLayer] {} experts do not divide among {} expert-parallel ranks", E, ep);
  const TensorOptions o = TensorOptions(dtype).device(device);
  router = register_parameter("router", empty({E, C}, o));
  up = register_parameter("up", empty({E / ep, is_gated(kind_) ? 2 * hidden : hidden, C}, o));
  down = register_parameter("down", empty({E / ep, C, hidden}, o));
  for (const char* name : {"up", "down"}) set_shard_spec(name, {.dim = 0, .experts = true});
  dropout = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_gen));
}

Tensor MoeLayer::forward(const Tensor& x) const {
  KILN_CHECK(x.dim() == 3 && x.size(2) == router.size(1), "[MoeLayer] expects (B, T, {}), got [{}]", router.size(1),
             fmt::join(x.sizes(), ", "));
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T, E = spec_.experts, k = spec_.top_k;
  const DType stat = x.dtype() == kFloat64 ? kFloat64 : kFloat32;
  Tensor tokens = x.reshape({N, C});
  // The router's softmax and the gates in float32.
  Tensor logits = linear(tokens, cast_cached(router, x.dtype())).to(stat);
  Tensor probs = softmax(logits, -1);
  auto [top, chosen] = topk(spec_.score == RouterScore::TopKThenSoftmax ? logits : probs, k);
  Tensor gates = spec_.score == RouterScore::TopKThenSoftmax ? softmax(top, -1) : top;
  const int64_t capacity = spec_.capacity_factor > 0 ? expert_capacity(N, spec_) : -1;
  const Routing r = route(chosen, gates.detach(), E, capacity, spec_.drop_policy);

  Tensor y = experts(moe_permute(tokens, r.permutation), r.expert_rows);
  Tensor out = moe_unpermute(y, gates, r.permutation).view({B, T, C});  // gates in stat, as moe_unpermute takes them

  if (!is_training() || !autograd::grad_mode_enabled()) return dropout->forward(out);
  // Training: the auxiliary losses, and what the layer did.
  MoeStats now;
  now.expert_choices = r.expert_choices;
  now.choices = N * k;
  now.dropped = r.dropped;
  now.forwards = 1;
  Tensor aux;
  if (spec_.aux_loss_coeff > 0) {
    std::vector<double> counts(r.expert_choices.begin(), r.expert_choices.end());
    Tensor f = tensor(counts, TensorOptions(stat).device(x.device()));
    const double norm = static_cast<double>(E) * spec_.aux_loss_coeff / (static_cast<double>(k * N) * N);
    Tensor balance = sum(sum(probs, {0}) * f) * norm;
    pending_aux_ = pending_aux_.defined() ? pending_aux_ + balance.detach() : balance.detach();
    aux = balance;
  }
  if (spec_.z_loss_coeff > 0) {
    Tensor z = mean(pow(logsumexp(logits, -1), 2.0)) * spec_.z_loss_coeff;
    pending_z_ = pending_z_.defined() ? pending_z_ + z.detach() : z.detach();
    aux = aux.defined() ? aux + z : z;
  }
  stats_.add(now);
  if (aux.defined()) out = with_auxiliary_loss(out, aux, aux_loss_scale_);
  return dropout->forward(out);
}

const MoeStats& MoeLayer::stats() const {
  for (auto [pending, total] : {std::pair{&pending_aux_, &stats_.aux_loss}, std::pair{&pending_z_, &stats_.z_loss}})
    if (pending->defined()) {
      *total += pending->item<double>();
      *pending = Tensor();
    }
  return stats_;
}

void MoeLayer::reset_stats() {
  stats_ = {};
  pending_aux_ = pending_z_ = Tensor();
}

}  // namespace kiln::nn
