#include "kiln/dist/tensor_parallel.h"

#include <limits>
#include <optional>

#include "kiln/autograd.h"
#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"
#include "kiln/ops.h"

namespace kiln::dist {

namespace {

Tensor all_reduced(const Tensor& x, ProcessGroup& group) {
  Tensor t = x.clone();  // a contiguous copy
  group.all_reduce(t);
  return t;
}

// Every rank's x concatenated along dim, in rank order.
Tensor all_gathered(const Tensor& x, int64_t dim, ProcessGroup& group) {
  const int n = group.size();
  Tensor local = x.contiguous();
  Shape stacked{n};
  for (int64_t s : local.sizes()) stacked.push_back(s);
  Tensor out = empty(stacked, TensorOptions(local.dtype()).device(local.device()));
  group.all_gather(out, local);
  // (n, s0, .., s_dim, ..) -> (s0, .., n, s_dim, ..) -> (s0, .., n * s_dim, ..)
  Shape order;
  for (int64_t i = 1; i <= dim; ++i) order.push_back(i);
  order.push_back(0);
  for (int64_t i = dim + 1; i <= local.dim(); ++i) order.push_back(i);
  Shape merged = local.sizes();
  merged[static_cast<size_t>(dim)] *= n;
  return out.permute(order).reshape(merged);
}

// The sum over ranks of x, of which this rank keeps its slice along dim.
Tensor reduce_scattered(const Tensor& x, int64_t dim, ProcessGroup& group) {
  const int64_t n = group.size(), size = x.size(dim);
  KILN_CHECK(size % n == 0, "[reduce_scatter_to_sequence] size {} along dim {} does not divide among {} ranks", size,
             dim, n);
  Tensor front = x.transpose(0, dim).contiguous();  // rank r's slice is the r-th contiguous chunk
  Shape sizes = front.sizes();
  sizes[0] /= n;
  Tensor out = empty(sizes, TensorOptions(x.dtype()).device(x.device()));
  group.reduce_scatter(out, front);
  return out.transpose(0, dim).contiguous();
}

Tensor own_slice(const Tensor& x, int64_t dim, ProcessGroup& group) {
  const int64_t size = x.size(dim), n = group.size();
  KILN_CHECK(size % n == 0, "[scatter_to_group] size {} along dim {} does not divide among {} ranks", size, dim, n);
  return x.narrow(dim, group.rank() * (size / n), size / n).contiguous();
}

int64_t normalized_dim(const Tensor& x, int64_t dim, const char* op) {
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  KILN_CHECK(d >= 0 && d < x.dim(), "[{}] dim {} is out of range for a tensor of {} dims", op, dim, x.dim());
  return d;
}

// An autograd op made of a collective: forward(x) runs without recording, and
// the gradient goes through backward (its adjoint). Over a group of one, the
// identity.
template <typename Forward, typename Backward>
Tensor collective(const char* name, const Tensor& x, ProcessGroup& group, Forward forward, Backward backward) {
  if (group.size() == 1) return x;
  Tensor out;
  {
    NoGradGuard no_grad;
    out = forward(x, group);
  }
  if (autograd::any_requires_grad({x}))
    autograd::record(name, out, {x}, [g = &group, backward](const Tensor& grad, const autograd::Needs&) {
      return autograd::Grads{backward(grad, *g)};
    });
  return out;
}

Tensor identity(const Tensor& x, ProcessGroup&) { return x.detach(); }

}  // namespace

Tensor copy_to_group(const Tensor& x, ProcessGroup& group) {
  return collective("copy_to_group", x, group, identity, all_reduced);
}

Tensor reduce_from_group(const Tensor& x, ProcessGroup& group) {
  return collective("reduce_from_group", x, group, all_reduced, identity);
}

Tensor gather_from_group(const Tensor& x, int64_t dim, ProcessGroup& group) {
  const int64_t d = normalized_dim(x, dim, "gather_from_group");
  auto gather = [d](const Tensor& t, ProcessGroup& g) { return all_gathered(t, d, g); };
  auto slice = [d](const Tensor& t, ProcessGroup& g) { return own_slice(t, d, g); };
  return collective("gather_from_group", x, group, gather, slice);
}

Tensor scatter_to_group(const Tensor& x, int64_t dim, ProcessGroup& group) {
  const int64_t d = normalized_dim(x, dim, "scatter_to_group");
  auto gather = [d](const Tensor& t, ProcessGroup& g) { return all_gathered(t, d, g); };
  auto slice = [d](const Tensor& t, ProcessGroup& g) { return own_slice(t, d, g); };
  return collective("scatter_to_group", x, group, slice, gather);
}

Tensor exchange_rows(const Tensor& x, ProcessGroup& group, const std::vector<int64_t>& out_splits,
                     const std::vector<int64_t>& in_splits) {
  int64_t rows = 0;
  for (int64_t n : out_splits) rows += n;
  auto exchange = [](const Tensor& t, ProcessGroup& g, const std::vector<int64_t>& to_splits,
                     const std::vector<int64_t>& from_splits, int64_t to_rows) {
    Shape shape = t.sizes();
    shape[0] = to_rows;
    Tensor out = empty(shape, TensorOptions(t.dtype()).device(t.device()));
    g.all_to_all(out, t.contiguous(), to_splits, from_splits);
    return out;
  };
  const int64_t in_rows = x.size(0);
  return collective(
      "exchange_rows", x, group,
      [&](const Tensor& t, ProcessGroup& g) { return exchange(t, g, out_splits, in_splits, rows); },
      [exchange, out_splits, in_splits, in_rows](const Tensor& t, ProcessGroup& g) {
        return exchange(t, g, in_splits, out_splits, in_rows);
      });
}

Tensor gather_from_sequence(const Tensor& x, ProcessGroup& group) {
  const int64_t d = normalized_dim(x, -2, "gather_from_sequence");
  auto gather = [d](const Tensor& t, ProcessGroup& g) { return all_gathered(t, d, g); };
  auto scatter = [d](const Tensor& t, ProcessGroup& g) { return reduce_scattered(t, d, g); };
  return collective("gather_from_sequence", x, group, gather, scatter);
}

Tensor reduce_scatter_to_sequence(const Tensor& x, ProcessGroup& group) {
  const int64_t d = normalized_dim(x, -2, "reduce_scatter_to_sequence");
  auto gather = [d](const Tensor& t, ProcessGroup& g) { return all_gathered(t, d, g); };
  auto scatter = [d](const Tensor& t, ProcessGroup& g) { return reduce_scattered(t, d, g); };
  return collective("reduce_scatter_to_sequence", x, group, scatter, gather);
}

// --- shards -------------------------------------------------------------------

Tensor all_gather_shards(const Tensor& local, const nn::ShardSpec& spec, ProcessGroup& group) {
  NoGradGuard no_grad;
  const DType dtype = local.dtype() == kFloat64 ? kFloat64 : kFloat32;
  // Gathered where the tensor lives (NCCL moves device memory), assembled on the CPU.
  Tensor mine = local.detach().to(dtype).contiguous();
  if (spec.replicated() || group.size() == 1) return spec.assemble({mine.to(kCPU)});
  Shape stacked{group.size()};
  for (int64_t s : mine.sizes()) stacked.push_back(s);
  Tensor all = empty(stacked, TensorOptions(dtype).device(mine.device()));
  group.all_gather(all, mine);
  all = all.to(kCPU);
  std::vector<Tensor> parts;
  for (int r = 0; r < group.size(); ++r) parts.push_back(all[r]);
  return spec.assemble(parts);
}

// --- layers -------------------------------------------------------------------

namespace {

void check_divides(const char* layer, const char* what, int64_t size, int ranks) {
  KILN_CHECK(size % ranks == 0, "[{}] {} ({}) does not divide among {} tensor-parallel ranks", layer, what, size,
             ranks);
}

// This rank's part of a parameter of shape `shape`, as a leaf: cut from `drawn`
// (the whole tensor, as the unsplit layer draws it), or, when drawn is
// undefined, allocated in the part's shape for the caller to fill.
Tensor shard_parameter(Shape shape, const nn::ShardSpec& spec, ProcessGroup& group, TensorOptions options,
                       const Tensor& drawn) {
  NoGradGuard no_grad;
  if (drawn.defined()) return spec.take(drawn, group.rank(), group.size()).clone();
  if (!spec.replicated()) shape[static_cast<size_t>(spec.dim)] /= group.size();  // every segment divides
  return empty(shape, options);
}

// A split linear layer's weight and bias (undefined without one): this rank's
// parts of nn::Linear(o) drawn from *gen, or allocated when gen is null.
std::pair<Tensor, Tensor> split_linear_parameters(const ParallelLinearOptions& o, const nn::ShardSpec& weight_spec,
                                                  const nn::ShardSpec& bias_spec, ProcessGroup& group, Generator* gen) {
  std::optional<nn::Linear> full;
  if (gen) full.emplace(nn::LinearOptions{o.in_features, o.out_features, o.bias, o.dtype, o.device}, *gen);
  const TensorOptions t = TensorOptions(o.dtype).device(o.device);
  Tensor w = shard_parameter({o.out_features, o.in_features}, weight_spec, group, t, full ? full->weight : Tensor());
  Tensor b = o.bias ? shard_parameter({o.out_features}, bias_spec, group, t, full ? full->bias : Tensor()) : Tensor();
  return {w, b};
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(const ParallelLinearOptions& o, ProcessGroup& group, Generator* gen)
    : options_(o), group_(&group) {
  for (int64_t seg : o.segments.empty() ? std::vector<int64_t>{o.out_features} : o.segments)
    check_divides("ColumnParallelLinear", "an output segment", seg, group.size());
  const nn::ShardSpec rows{0, o.segments};
  auto [w, b] = split_linear_parameters(o, rows, rows, group, gen);
  weight = register_parameter("weight", w);
  set_shard_spec("weight", rows);
  if (o.bias) {
    bias = register_parameter("bias", b);
    set_shard_spec("bias", rows);
  }
  split = {nn::LinearSplit::Column, o.in_features, o.out_features, o.segments};
}

Tensor ColumnParallelLinear::project(const Tensor& x, Activation activation) const {
  KILN_CHECK(x.dim() >= 1 && x.size(-1) == options_.in_features,
             "[ColumnParallelLinear] expects input (..., {}), got shape [{}]", options_.in_features,
             fmt::join(x.sizes(), ", "));
  Tensor in = options_.sequence_parallel ? gather_from_sequence(x, *group_) : copy_to_group(x, *group_);
  Tensor y = linear(in, cast_cached(weight, x.dtype()), bias.defined() ? cast_cached(bias, x.dtype()) : Tensor(),
                    activation);
  return options_.gather_output ? gather_from_group(y, -1, *group_) : y;
}

RowParallelLinear::RowParallelLinear(const ParallelLinearOptions& o, ProcessGroup& group, Generator* gen)
    : options_(o), group_(&group) {
  check_divides("RowParallelLinear", "in_features", o.in_features, group.size());
  const nn::ShardSpec columns{1, {}};
  auto [w, b] = split_linear_parameters(o, columns, {}, group, gen);
  weight = register_parameter("weight", w);
  set_shard_spec("weight", columns);
  if (o.bias) bias = register_parameter("bias", b);
  split = {nn::LinearSplit::Row, o.in_features, o.out_features, {}};
}

Tensor RowParallelLinear::project(const Tensor& x, Activation activation) const {
  const bool input_is_parallel = options_.input_is_parallel;
  const int64_t in = input_is_parallel ? options_.in_features / group_->size() : options_.in_features;
  KILN_CHECK(x.dim() >= 1 && x.size(-1) == in, "[RowParallelLinear] expects input (..., {}), got shape [{}]", in,
             fmt::join(x.sizes(), ", "));
  Tensor local = input_is_parallel ? x : scatter_to_group(x, -1, *group_);
  Tensor partial = matmul(local, cast_cached(weight, x.dtype()).t());
  Tensor y = options_.sequence_parallel ? reduce_scatter_to_sequence(partial, *group_)
                                        : reduce_from_group(partial, *group_);
  if (bias.defined()) y = y + cast_cached(bias, x.dtype());
  return activation == Activation::GeluTanh ? gelu(y, "tanh") : y;
}

VocabParallelEmbedding::VocabParallelEmbedding(int64_t num_embeddings, int64_t embedding_dim, ProcessGroup& group,
                                               Generator* gen, DType dtype, Device device, bool sequence_parallel)
    : group_(&group), sequence_parallel_(sequence_parallel) {
  check_divides("VocabParallelEmbedding", "num_embeddings", num_embeddings, group.size());
  std::optional<nn::Embedding> full;
  if (gen) full.emplace(nn::EmbeddingOptions{num_embeddings, embedding_dim, dtype, device}, *gen);
  const nn::ShardSpec rows{0, {}};
  weight = register_parameter("weight", shard_parameter({num_embeddings, embedding_dim}, rows, group,
                                                        TensorOptions(dtype).device(device),
                                                        full ? full->weight : Tensor()));
  set_shard_spec("weight", rows);
  start_ = group.rank() * (num_embeddings / group.size());
}

Tensor VocabParallelEmbedding::forward(const Tensor& ids) const {
  KILN_CHECK(!is_floating(ids.dtype()), "[VocabParallelEmbedding] expects integer ids, got {}", ids.dtype());
  const int64_t rows = weight.size(0);
  Tensor outside = logical_or(ids < start_, ids >= start_ + rows);
  Tensor local = masked_fill(ids - start_, outside, 0);
  Tensor y = masked_fill(embedding(weight, local), outside.unsqueeze(-1), 0.0);
  return sequence_parallel_ ? reduce_scatter_to_sequence(y, *group_) : reduce_from_group(y, *group_);
}

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                                    ProcessGroup& group, int64_t ignore_index, double z_loss) {
  KILN_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) &&
                 !is_floating(targets.dtype()),
             "[vocab_parallel_cross_entropy] expects logits (N, V) and integer targets (N), got [{}] {} and [{}] {}",
             fmt::join(logits.sizes(), ", "), logits.dtype(), fmt::join(targets.sizes(), ", "), targets.dtype());
  const int64_t N = logits.size(0), width = logits.size(1);
  Tensor z = logits.dtype() == kFloat64 ? logits : logits.to(kFloat32);
  const TensorOptions opts = TensorOptions(z.dtype()).device(z.device());
  // The global row maximum (a constant shift: no gradient flows through it).
  Tensor shift;
  {
    NoGradGuard no_grad;
    shift = width > 0 ? max(z, 1).contiguous().clone()
                      : full({N}, -std::numeric_limits<double>::infinity(), opts);
    group.all_reduce(shift, ReduceOp::Max);
  }
  Tensor shifted = z - shift.unsqueeze(1);
  // sum_j exp over every rank's columns, and the target's logit from the rank holding it.
  Tensor local_sum = width > 0 ? sum(exp(shifted), {1}) : zeros({N}, opts);
  Tensor mine = logical_and(targets >= vocab_start, targets < vocab_start + width);
  Tensor index = masked_fill(targets - vocab_start, logical_not(mine), 0).unsqueeze(1);
  Tensor local_target = width > 0 ? masked_fill(gather(shifted, 1, index).squeeze(1), logical_not(mine), 0.0)
                                  : zeros({N}, opts);
  Tensor shifted_lse = log(reduce_from_group(local_sum, group));
  Tensor losses = shifted_lse - reduce_from_group(local_target, group);
  if (z_loss != 0.0) {
    Tensor lse = shifted_lse + shift;
    losses = losses + lse * lse * z_loss;
  }
  Tensor valid = targets != ignore_index;
  Tensor count = sum(valid.to(z.dtype()));
  return sum(masked_fill(losses, logical_not(valid), 0.0)) / maximum(count, ones({}, opts));
}

}  // namespace kiln::dist
