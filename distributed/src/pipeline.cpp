#include "kiln/dist/pipeline.h"

#include <optional>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::dist {

PipelineSchedule parse_pipeline_schedule(std::string_view name) {
  if (name == "gpipe") return PipelineSchedule::GPipe;
  if (name == "1f1b") return PipelineSchedule::OneForwardOneBackward;
  KILN_FAIL("[pipeline] unknown schedule '{}': use gpipe or 1f1b", name);
}

namespace {

constexpr int kActivationTag = 1, kGradientTag = 2;

// Rows [first, first + rows) of a batch of B rows' attention inputs (a
// tensor of one row, a bias for every row, is everyone's).
nn::AttentionInputs rows_of(const nn::AttentionInputs& in, int64_t first, int64_t rows, int64_t B) {
  auto part = [&](const Tensor& t) { return t.defined() && t.size(0) == B ? t.narrow(0, first, rows) : t; };
  return {part(in.prefix_lengths), part(in.key_lengths), part(in.key_starts), part(in.positions),
          in.cu_seqlens,           part(in.block_positions), part(in.bias)};
}

// One stage's view of a batch: its micro-batches, the tensors kept between a
// micro-batch's forward and backward, and the transfers to its neighbours.
class StageRun {
 public:
  StageRun(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx, const Tensor& targets,
           const PipelineOptions& options, DistributedDataParallel* ddp, const nn::AttentionInputs* attention)
      : model_(model), pipe_(*state.pp_group()), idx_(idx), targets_(targets), M_(options.microbatches),
        loss_fn_(options.loss), ddp_(ddp), attention_(attention), inputs_(static_cast<size_t>(M_)),
        outputs_(static_cast<size_t>(M_)) {
    KILN_CHECK(idx.dim() == 2 && targets.sizes() == idx.sizes(),
               "[pipeline] expects tokens and targets (B, T) of one shape, got [{}] and [{}]",
               fmt::join(idx.sizes(), ", "), fmt::join(targets.sizes(), ", "));
    KILN_CHECK(M_ > 0 && idx.size(0) % M_ == 0, "[pipeline] {} micro-batches do not divide a batch of {}", M_,
               idx.size(0));
    b_ = idx.size(0) / M_;
    KILN_CHECK(!attention || !attention->cu_seqlens.defined() || M_ == 1,
               "[pipeline] packed rows (cu_seqlens) do not split into {} micro-batches", M_);
    KILN_CHECK(pipe_.size() == model.layout().pp_size() && pipe_.rank() == model.layout().pp_rank(),
               "[pipeline] the model is stage {} of {}, the pipeline group's rank {} of {}", model.layout().pp_rank(),
               model.layout().pp_size(), pipe_.rank(), pipe_.size());
    activation_dtype_ = model.activation_dtype();
    activation_shape_ = model.activation_shape(b_, idx.size(1));
  }

  int stage() const { return pipe_.rank(); }
  bool first() const { return model_.is_first_stage(); }
  bool last() const { return model_.is_last_stage(); }

  // Micro-batch m's forward from its input (undefined on the first stage);
  // returns what goes to the next stage (undefined on the last).
  Tensor forward(int64_t m, Tensor input) {
    Tensor in = first() ? idx_.narrow(0, m * b_, b_) : input;
    if (!first() && autograd::grad_mode_enabled()) in.requires_grad_();
    nn::AttentionInputs rows;
    if (attention_) rows = M_ == 1 ? *attention_ : rows_of(*attention_, m * b_, b_, idx_.size(0));
    Tensor out = model_.forward_stage(in, nullptr, attention_ ? &rows : nullptr);
    if (last()) {
      const Tensor targets = targets_.narrow(0, m * b_, b_);
      Tensor loss = (loss_fn_ ? loss_fn_(out, targets) : model_.loss_from_hidden(out, targets)) / static_cast<double>(M_);
      loss_ += loss.item<double>();
      out = loss;
    }
    if (autograd::grad_mode_enabled()) {
      inputs_[static_cast<size_t>(m)] = in;
      outputs_[static_cast<size_t>(m)] = out;
    }
    return last() ? Tensor() : out.detach();
  }

  // Micro-batch m's backward from its output's gradient (ignored on the last
  // stage); returns its input's gradient for the previous stage (undefined on
  // the first). DDP communicates during the last micro-batch only.
  Tensor backward(int64_t m, const Tensor& grad) {
    std::optional<DistributedDataParallel::NoSync> no_sync;
    if (ddp_ && m + 1 < M_) no_sync.emplace(*ddp_);
    Tensor& out = outputs_[static_cast<size_t>(m)];
    Tensor& in = inputs_[static_cast<size_t>(m)];
    if (last()) out.backward();
    else out.backward(grad);
    Tensor g = first() ? Tensor() : in.grad();
    out = Tensor();
    in = Tensor();
    return g;
  }

  // The transfers, each posted together with its opposite-direction partner.
  Tensor recv_forward() { return exchange({}, -1, first() ? -1 : stage() - 1, kActivationTag); }
  void send_forward(const Tensor& out) { exchange(out, last() ? -1 : stage() + 1, -1, kActivationTag); }
  Tensor recv_backward() { return exchange({}, -1, last() ? -1 : stage() + 1, kGradientTag); }
  void send_backward(const Tensor& grad) { exchange(grad, first() ? -1 : stage() - 1, -1, kGradientTag); }
  Tensor send_forward_recv_backward(const Tensor& out) {
    return last() ? Tensor() : exchange(out, stage() + 1, stage() + 1, kGradientTag);
  }
  Tensor send_backward_recv_forward(const Tensor& grad) {
    return first() ? Tensor() : exchange(grad, stage() - 1, stage() - 1, kActivationTag);
  }

  // The batch's mean loss, from the last stage to every stage.
  double mean_loss() {
    Tensor t = full({1}, loss_, TensorOptions(kFloat64).device(idx_.device()));
    pipe_.broadcast(t, pipe_.size() - 1);
    return t.item<double>();
  }

 private:
  // Sends `send` to send_peer (-1: nothing) and receives an activation-shaped
  // tensor from recv_peer (-1: nothing) tagged recv_tag; returns it.
  Tensor exchange(const Tensor& send, int send_peer, int recv_peer, int recv_tag) {
    std::vector<P2POp> ops;
    Tensor received;
    if (send_peer >= 0) {
      // Activations go forward (to a higher stage), gradients backward.
      int tag = send_peer > stage() ? kActivationTag : kGradientTag;
      ops.push_back({P2POp::Send, send.contiguous(), send_peer, tag});
    }
    if (recv_peer >= 0) {
      received = empty(activation_shape_, TensorOptions(activation_dtype_).device(idx_.device()));
      ops.push_back({P2POp::Recv, received, recv_peer, recv_tag});
    }
    if (!ops.empty()) pipe_.send_recv(ops);
    return received;
  }

  const nn::StagedModel& model_;
  ProcessGroup& pipe_;
  Tensor idx_, targets_;
  int64_t M_, b_ = 0;
  StageLoss loss_fn_;
  DistributedDataParallel* ddp_;
  const nn::AttentionInputs* attention_;
  DType activation_dtype_ = kFloat32;
  Shape activation_shape_;
  std::vector<Tensor> inputs_, outputs_;
  double loss_ = 0;
};

}  // namespace

double pipeline_train_step(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                           const Tensor& targets, const PipelineOptions& options, DistributedDataParallel* ddp,
                           const nn::AttentionInputs* inputs) {
  StageRun run(model, state, idx, targets, options, ddp, inputs);
  const int64_t M = options.microbatches;
  model.set_aux_loss_scale(1.0 / static_cast<double>(M));  // each micro-batch's weight, as its loss's
  if (options.schedule == PipelineSchedule::GPipe) {
    for (int64_t m = 0; m < M; ++m) run.send_forward(run.forward(m, run.recv_forward()));
    for (int64_t m = 0; m < M; ++m) run.send_backward(run.backward(m, run.recv_backward()));
    return run.mean_loss();
  }
  // 1F1B: warm up with the forwards the later stages need before the first
  // backward reaches this one, then one forward and one backward in turn.
  const int pp = state.pp();
  const int64_t warmup = std::min<int64_t>(pp - run.stage() - 1, M), steady = M - warmup;
  for (int64_t m = 0; m < warmup; ++m) run.send_forward(run.forward(m, run.recv_forward()));
  Tensor input = steady > 0 ? run.recv_forward() : Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    Tensor grad = run.send_forward_recv_backward(run.forward(warmup + i, input));
    Tensor input_grad = run.backward(i, grad);
    if (i + 1 == steady) run.send_backward(input_grad);
    else input = run.send_backward_recv_forward(input_grad);
  }
  for (int64_t m = steady; m < M; ++m) run.send_backward(run.backward(m, run.recv_backward()));
  return run.mean_loss();
}

std::vector<int64_t> pipeline_generate(const nn::TransformerLM& model, const ParallelState& state,
                                       const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                       const nn::SamplingOptions& options, Generator& gen, int64_t stop) {
  if (state.pp() == 1) return nn::generate(model, prompt, max_new_tokens, options, gen, stop);
  NoGradGuard no_grad;
  ProcessGroup& pipe = *state.pp_group();
  const int stage = pipe.rank(), last = pipe.size() - 1;
  const Device device = model.parameters().at(0).device();
  const int64_t limit = model.spec().max_positions;
  std::vector<nn::KVCache> caches(model.layers->size());
  std::vector<int64_t> context = nn::prompt_window(prompt, max_new_tokens, limit), out;
  Tensor input = tensor(context).view({1, -1}).to(device);
  for (int64_t length = 0, i = 0; i < max_new_tokens && length < limit; ++i) {
    const int64_t t = input.size(1);
    if (stage > 0) {
      input = empty(model.activation_shape(1, t), TensorOptions(model.activation_dtype()).device(device));
      pipe.recv(input, stage - 1, kActivationTag);
    }
    Tensor x = model.forward_stage(input, &caches);
    length += t;
    Tensor next = empty({1}, TensorOptions(kInt64).device(device));
    if (stage < last) {
      pipe.send(x.contiguous(), stage + 1, kActivationTag);
    } else {
      Tensor logits = model.logits_from_hidden(x);  // (1, t, V)
      next.fill_(nn::sample_token(logits[0][t - 1], options, gen));
    }
    pipe.broadcast(next, last);
    out.push_back(next.item<int64_t>());
    if (out.back() == stop) break;
    input = next.view({1, 1});
  }
  return out;
}

double pipeline_eval_loss(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                          const Tensor& targets, const PipelineOptions& options, const nn::AttentionInputs* inputs) {
  NoGradGuard no_grad;
  StageRun run(model, state, idx, targets, options, nullptr, inputs);
  for (int64_t m = 0; m < options.microbatches; ++m) run.send_forward(run.forward(m, run.recv_forward()));
  return run.mean_loss();
}

double pipeline_eval_loss(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                          const Tensor& targets, int64_t microbatches) {
  return pipeline_eval_loss(model, state, idx, targets, PipelineOptions{.microbatches = microbatches});
}

}  // namespace kiln::dist
