#include "kiln/dist/model_parallel.h"

#include <algorithm>
#include <cmath>

#include "kiln/autograd.h"
#include "kiln/ops.h"
#include "kiln/optim/schedule.h"

namespace kiln::dist {

ModelParallel::ModelParallel(ParallelState& state, bool sequence_parallel)
    : state_(&state), sequence_parallel_(sequence_parallel && state.tp() > 1) {}

std::shared_ptr<nn::LinearLayer> ModelParallel::column(const nn::LinearOptions& o, std::vector<int64_t> segments) const {
  return std::make_shared<ColumnParallelLinear>(
      ParallelLinearOptions{o.in_features, o.out_features, o.bias, o.dtype, o.device, std::move(segments),
                            sequence_parallel_},
      *state_->tp_group(), nullptr);
}

std::shared_ptr<nn::LinearLayer> ModelParallel::row(const nn::LinearOptions& o) const {
  return std::make_shared<RowParallelLinear>(
      ParallelLinearOptions{o.in_features, o.out_features, o.bias, o.dtype, o.device, {}, sequence_parallel_},
      *state_->tp_group(), nullptr);
}

Tensor ModelParallel::copy_to_tensor_parallel(const Tensor& x) const {
  return state_->tp() == 1 ? x : copy_to_group(x, *state_->tp_group());
}

std::shared_ptr<nn::EmbeddingLayer> ModelParallel::vocab_embedding(const nn::EmbeddingOptions& o) const {
  return std::make_shared<VocabParallelEmbedding>(o.num_embeddings, o.embedding_dim, *state_->tp_group(), nullptr,
                                                  o.dtype, o.device, sequence_parallel_);
}

Tensor ModelParallel::vocab_loss(const Tensor& hidden, const Tensor& head, int64_t vocab_start,
                                 const Tensor& targets, double z_loss) const {
  if (state_->tp() == 1) return nn::LayerFactory::vocab_loss(hidden, head, vocab_start, targets, z_loss);
  ProcessGroup& tp = *state_->tp_group();
  // Every rank's columns of the logits, for the whole sequence.
  Tensor x = sequence_parallel_ ? gather_from_sequence(hidden, tp) : copy_to_group(hidden, tp);
  Tensor logits = matmul(x, head.t());
  return vocab_parallel_cross_entropy(logits.reshape({-1, head.size(0)}), targets.reshape({-1}), vocab_start, tp, -100,
                                      z_loss);
}

Tensor ModelParallel::vocab_logits(const Tensor& hidden, const Tensor& head, int64_t vocab_size) const {
  if (state_->tp() == 1) return nn::LayerFactory::vocab_logits(hidden, head, vocab_size);
  ProcessGroup& tp = *state_->tp_group();
  Tensor logits = matmul(copy_to_group(hidden, tp), head.t());  // this rank's padded rows
  return gather_from_group(logits, -1, tp).narrow(-1, 0, vocab_size);
}

Tensor ModelParallel::exchange_expert_rows(const Tensor& rows, const std::vector<int64_t>& out_splits,
                                           const std::vector<int64_t>& in_splits) const {
  return exchange_rows(rows, *state_->ep_group(), out_splits, in_splits);
}

Tensor ModelParallel::exchange_expert_counts(const Tensor& counts) const {
  Tensor out = empty_like(counts);
  state_->ep_group()->all_to_all(out, counts.contiguous());
  return out;
}

bool is_expert_parameter(const nn::ParallelModel& model, const std::string& name) {
  return model.shard_spec(name).experts;
}

namespace {

// Replaces p's gradient (zeros when it has none) by its sum over the group.
void sum_gradient(Tensor p, ProcessGroup& group) {
  Tensor g = p.grad().defined() ? p.grad().contiguous() : zeros_like(p);
  group.all_reduce(g);
  p.set_grad(g);
}

bool is_tied_copy(const nn::ParallelModel& model, const std::string& name) {
  if (model.is_first_stage()) return false;  // the first stage's copy is the one that counts
  auto tied = model.tied_across_stages();
  return std::find(tied.begin(), tied.end(), name) != tied.end();
}

}  // namespace

void sync_gradients(const nn::ParallelModel& model, const ParallelState& state) {
  NoGradGuard no_grad;
  const auto tied = model.tied_across_stages();
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;  // frozen (the base of a LoRA model)
    if (state.embedding_group() && std::find(tied.begin(), tied.end(), name) != tied.end())
      sum_gradient(p, *state.embedding_group());
    if (model.layout().sequence_parallel() && model.shard_spec(name).replicated())
      sum_gradient(p, *state.tp_group());
  }
}

namespace {

// The parameters a norm counts on this rank, by name: replicated weights
// (and experts, whole on every tp rank) on tp rank 0, tied weights on the first stage.
std::vector<std::pair<std::string, Tensor>> counted_parameters(const nn::ParallelModel& model,
                                                               const ParallelState& state) {
  std::vector<std::pair<std::string, Tensor>> counted;
  for (auto& [name, p] : model.named_parameters()) {
    const nn::ShardSpec spec = model.shard_spec(name);
    if ((spec.replicated() || spec.experts) && state.tp_rank() != 0) continue;
    if (is_tied_copy(model, name)) continue;
    counted.emplace_back(name, p);
  }
  return counted;
}

}  // namespace

std::vector<Tensor> norm_parameters(const nn::ParallelModel& model, const ParallelState& state) {
  std::vector<Tensor> counted;
  for (auto& [name, p] : counted_parameters(model, state)) counted.push_back(p);
  return counted;
}

double clip_grad_norm(const nn::ParallelModel& model, const ParallelState& state, double max_norm) {
  const Device device = model.parameters().at(0).device();
  std::vector<Tensor> shared, experts;
  for (auto& [name, p] : counted_parameters(model, state)) (is_expert_parameter(model, name) ? experts : shared).push_back(p);
  // Each rank of the expert-parallel group holds other experts.
  Tensor expert_total = full({1}, optim::grad_squared_sum(experts), TensorOptions(kFloat64).device(device));
  state.ep_group()->all_reduce(expert_total);
  Tensor total = full({1}, optim::grad_squared_sum(shared), TensorOptions(kFloat64).device(device)) + expert_total;
  state.tp_group()->all_reduce(total);
  state.pp_group()->all_reduce(total);
  const double norm = std::sqrt(total.item<double>());
  optim::clip_grads_to(model.parameters(), norm, max_norm);
  return norm;
}

std::map<std::string, Tensor> gather_full(const nn::ParallelModel& model, const ParallelState& state,
                                          const std::map<std::string, Tensor>& local) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  // Experts first, across the expert-parallel group (replicas of the first
  // ep block take part); then the replicas hold the same values.
  std::map<std::string, Tensor> experts;
  for (const auto& [name, t] : local)
    if (is_expert_parameter(model, name))
      experts[name] = all_gather_shards(t, model.shard_spec(name), *state.ep_group());
  if (state.dp_rank() != 0) return out;
  const Device device = model.parameters().at(0).device();
  // Within each stage: assemble across tp. Then stage s's tp rank 0 sends its
  // tensors to world rank 0 (pp rank 0 of the same pp group): a count, then
  // per tensor its name, shape and values.
  ProcessGroup& pipe = *state.pp_group();
  std::vector<std::pair<std::string, Tensor>> mine;
  for (const auto& [name, t] : local) {
    if (is_tied_copy(model, name)) continue;
    auto expert = experts.find(name);
    mine.emplace_back(name, expert != experts.end() ? expert->second
                                                    : all_gather_shards(t, model.shard_spec(name), *state.tp_group()));
  }
  if (state.tp_rank() != 0) return out;
  if (state.pp_rank() == 0) {
    for (auto& [name, t] : mine) out[name] = t;
    for (int s = 1; s < state.pp(); ++s) {
      // Received on the model's device (NCCL moves device memory), kept on the CPU.
      auto receive = [&](Shape sizes, DType dtype) {
        Tensor t = empty(sizes, TensorOptions(dtype).device(device));
        pipe.recv(t, s);
        return t.to(kCPU);
      };
      const int64_t count = receive({1}, kInt64).item<int64_t>();
      for (int64_t i = 0; i < count; ++i) {
        Tensor header = receive({3}, kInt64);  // name length, dims, dtype
        Tensor name = receive({header[0].item<int64_t>()}, kInt32);
        const auto* chars = static_cast<const int32_t*>(name.data_ptr());
        Tensor shape = receive({header[1].item<int64_t>()}, kInt64);
        Shape sizes;
        for (int64_t d = 0; d < shape.numel(); ++d) sizes.push_back(shape[d].item<int64_t>());
        out[std::string(chars, chars + name.numel())] = receive(sizes, static_cast<DType>(header[2].item<int64_t>()));
      }
    }
  } else {
    auto send = [&](const Tensor& t) { pipe.send(t.to(device).contiguous(), 0); };
    send(full({1}, static_cast<int64_t>(mine.size()), kInt64));
    for (auto& [name, t] : mine) {
      send(tensor(std::vector<int64_t>{static_cast<int64_t>(name.size()), t.dim(), static_cast<int64_t>(t.dtype())}));
      send(tensor(std::vector<int32_t>(name.begin(), name.end())));
      send(tensor(std::vector<int64_t>(t.sizes().begin(), t.sizes().end())));
      send(t);
    }
  }
  return out;
}

std::map<std::string, Tensor> full_state_dict(const nn::ParallelModel& model, const ParallelState& state) {
  std::map<std::string, Tensor> local;
  for (auto& [name, p] : model.named_parameters()) local[name] = p;
  return gather_full(model, state, local);
}

}  // namespace kiln::dist
