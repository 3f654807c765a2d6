// Tensor and pipeline parallelism under mpirun (label mpi, 4 ranks); also
// runs as one process. Every layer and layout is checked against the
// single-process model it splits. Only CHECKs here: a rank leaving a test
// early would leave the others waiting in a collective.

#include <array>

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {

std::shared_ptr<dist::ProcessGroup> world() { return dist::mpi_world(); }

// A fixed gradient direction: loss = sum(y * w) for a seeded w.
Tensor weighted_sum(const Tensor& y, uint64_t seed) {
  Generator g(seed);
  return sum(y * randn(y.sizes(), g));
}

void check_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  INFO(what);
  CHECK(got.sizes() == want.sizes());
  if (got.sizes() == want.sizes()) CHECK(kt::rel_error(values(got), values(want)) <= tol);
}

}  // namespace

TEST_CASE("shard specs split and reassemble segments") {
  Tensor full = arange(0.0, 24.0, 1.0, kFloat32).view({12, 2});
  nn::ShardSpec qkv{0, {4, 4, 4}};
  Tensor part1 = qkv.take(full, 1, 2);  // rows 2-3, 6-7, 10-11
  CHECK(values(part1.narrow(1, 0, 1).reshape({-1})) == std::vector<double>{4, 6, 12, 14, 20, 22});
  CHECK(values(qkv.assemble({qkv.take(full, 0, 2), part1})) == values(full));
  nn::ShardSpec columns{1, {}};
  CHECK(values(columns.assemble({columns.take(full, 0, 2), columns.take(full, 1, 2)})) == values(full));
  CHECK_THROWS_WITH(qkv.take(full, 0, 3), Catch::Contains("does not divide among 3 ranks"));
  // A padded vocabulary: 5 real rows held as 8, the padding dropped again.
  nn::ShardSpec vocab{0, {}, 5, 8};
  Tensor table = arange(0.0, 10.0, 1.0, kFloat32).view({5, 2});
  Tensor last = vocab.take(table, 1, 2);  // rows 4..7: one real row, three of padding
  CHECK(values(last) == std::vector<double>{8, 9, 0, 0, 0, 0, 0, 0});
  CHECK(values(vocab.assemble({vocab.take(table, 0, 2), last})) == values(table));
}

TEST_CASE("tensor-parallel layers equal their single-process twins") {
  auto w = world();
  const int n = w->size(), r = w->rank();
  dist::ParallelState ps(w, n, 1, 1);  // the whole world is one tensor-parallel group
  dist::ProcessGroup& tp = *ps.tp_group();
  const int64_t in = 6, out = 4 * n;
  Generator data(5);
  Tensor x = randn({3, 2, in}, data);

  SECTION("column parallel: each rank's slice of the output, and the input gradient summed") {
    Generator g1(11), g2(11);
    nn::Linear full({in, out});
    full.reset_parameters(g1);
    dist::ColumnParallelLinear col({.in_features = in, .out_features = out, .gather_output = true}, tp, &g2);
    Tensor xf = x.detach().requires_grad_(), xp = x.detach().requires_grad_();
    Tensor yf = full.forward(xf), yp = col.forward(xp);
    check_close(yp, yf, 1e-6, "gathered output");
    weighted_sum(yf, 3).backward();
    weighted_sum(yp, 3).backward();
    check_close(col.weight.grad(), full.weight.grad().narrow(0, r * (out / n), out / n), 1e-5, "weight grad");
    check_close(col.bias.grad(), full.bias.grad().narrow(0, r * (out / n), out / n), 1e-5, "bias grad");
    check_close(xp.grad(), xf.grad(), 1e-5, "input grad");
  }
  SECTION("row parallel: partial products summed, the input gradient sliced") {
    Generator g1(12), g2(12);
    nn::Linear full({out, in});
    full.reset_parameters(g1);
    dist::RowParallelLinear row({.in_features = out, .out_features = in, .input_is_parallel = false}, tp, &g2);
    Tensor z = randn({5, out}, data);
    Tensor zf = z.detach().requires_grad_(), zp = z.detach().requires_grad_();
    Tensor yf = full.forward(zf), yp = row.forward(zp);
    check_close(yp, yf, 1e-6, "output");
    weighted_sum(yf, 4).backward();
    weighted_sum(yp, 4).backward();
    check_close(row.weight.grad(), full.weight.grad().narrow(1, r * (out / n), out / n), 1e-5, "weight grad");
    check_close(row.bias.grad(), full.bias.grad(), 1e-5, "bias grad");
    check_close(zp.grad(), zf.grad(), 1e-5, "input grad");
  }
  SECTION("vocab-parallel embedding and cross-entropy") {
    const int64_t vocab = 8 * n, dim = 5;
    Generator g1(13), g2(13);
    nn::Embedding emb({vocab, dim}, g1);
    dist::VocabParallelEmbedding pemb(vocab, dim, tp, &g2);
    Tensor ids = randint(0, vocab, {4, 3}, data);
    Tensor ef = emb.forward(ids), ep = pemb.forward(ids);
    check_close(ep, ef, 0, "lookup");
    weighted_sum(ef, 5).backward();
    weighted_sum(ep, 5).backward();
    check_close(pemb.weight.grad(), emb.weight.grad().narrow(0, pemb.vocab_start(), vocab / n), 1e-6, "table grad");

    Tensor logits = randn({6, vocab}, data) * 3.0;
    Tensor targets = randint(0, vocab, {6}, data);
    targets = where(arange(0, 6, 1, kInt64) == 2, full({6}, int64_t(-100), kInt64), targets);  // one ignored row
    for (double z : {0.0, 0.05}) {  // without and with PaLM's z-loss
      INFO("z_loss " << z);
      Tensor lf = logits.detach().requires_grad_();
      Tensor lp = logits.narrow(1, r * (vocab / n), vocab / n).contiguous().requires_grad_();
      Tensor want = cross_entropy(lf, targets, -100, Reduction::Mean, z);
      Tensor got = dist::vocab_parallel_cross_entropy(lp, targets, r * (vocab / n), tp, -100, z);
      check_close(got, want, 1e-6, "loss");
      want.backward();
      got.backward();
      check_close(lp.grad(), lf.grad().narrow(1, r * (vocab / n), vocab / n), 1e-5, "logit grads");
    }
  }
}

namespace {

nn::ModelSpec tiny_gpt() {
  return nn::GPTConfig{.vocab_size = 200, .block_size = 16, .n_layer = 4, .n_head = 4, .n_embd = 32}.spec();
}

// GQA (2 kv heads, split across tp 2), RoPE at theta 500000, an untied head.
nn::ModelSpec tiny_llama() {
  return nn::LlamaConfig{.vocab_size = 200, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 4,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                         .rope_theta = 500000.0}
      .spec();
}

struct Layout {
  int tp, pp, dp;
  dist::PipelineSchedule schedule = dist::PipelineSchedule::OneForwardOneBackward;
  bool zero1 = false;  // ZeRO-1 over dp instead of DDP
  bool sequence_parallel = false;
  bool recompute = false;  // the split model replays its blocks in backward, the reference does not
  std::optional<nn::LoraConfig> lora;  // both models adapted, their bases frozen
};

// Three AdamW steps with clipping on (B, T) = (8, 16), as one process and
// split over the layout; every step's loss, gradient norm and the final
// weights must agree. In float64, so that only the order of additions differs
// and the tolerances can be tight (AdamW magnifies rounding in tiny gradients).
void check_layout(const nn::ModelSpec& spec, const Layout& l) {
  auto w = world();
  INFO(spec.family << ": tp " << l.tp << " pp " << l.pp << " dp " << l.dp << (l.zero1 ? " zero1" : "")
                   << (l.sequence_parallel ? " sequence parallel" : "") << (l.recompute ? " recompute" : "")
                   << (l.lora ? " lora" : ""));
  dist::ParallelState ps(w, l.tp, l.pp, l.dp);
  nn::ModelSpec split = spec;
  split.block.recompute = l.recompute;
  Generator g1(21), g2(21);
  nn::TransformerLM reference(spec, g1, kFloat64);
  nn::TransformerLM model(split, g2, kFloat64, kCPU, std::make_shared<dist::ModelParallel>(ps, l.sequence_parallel));
  CHECK(g1.offset() == g2.offset());  // dropout would continue from the same place
  if (l.lora) {
    nn::add_lora(reference, *l.lora, g1);
    nn::add_lora(model, *l.lora, g2);
  }

  optim::AdamW ref_opt(optim::decay_groups(reference.named_parameters(), 0.1), {.lr = 1e-2});
  auto groups = optim::decay_groups(model.named_parameters(), 0.1);
  optim::AdamW opt(groups, {.lr = 1e-2});
  auto adamw = [](std::vector<optim::ParamGroup> g) {
    return std::make_unique<optim::AdamW>(std::move(g), optim::AdamWOptions{.lr = 1e-2});
  };
  dist::ZeroRedundancyOptimizer zero(groups, ps.dp_group(), adamw);
  std::unique_ptr<dist::DistributedDataParallel> ddp;
  if (l.dp > 1 && !l.zero1)
    ddp = std::make_unique<dist::DistributedDataParallel>(model, ps.dp_group(), /*bucket_bytes=*/4096);
  const int64_t B = 8, T = 16, local = B / l.dp, microbatches = l.pp > 1 ? 2 : 1;
  const double clip = 0.5;  // below the first steps' norms: clipping is exercised
  Generator data(9);
  for (int step = 0; step < 3; ++step) {
    Tensor idx = randint(0, spec.vocab_size, {B, T}, data), targets = randint(0, spec.vocab_size, {B, T}, data);
    ref_opt.zero_grad();
    Tensor ref_loss = reference.loss(idx, targets);
    ref_loss.backward();
    double ref_norm = optim::clip_grad_norm(reference.parameters(), clip);
    ref_opt.step();

    opt.zero_grad();
    zero.zero_grad();
    Tensor my_idx = idx.narrow(0, ps.dp_rank() * local, local), my_targets = targets.narrow(0, ps.dp_rank() * local, local);
    double loss = dist::pipeline_train_step(model, ps, my_idx, my_targets, {l.schedule, microbatches}, ddp.get());
    if (ddp) ddp->finish();
    dist::sync_gradients(model, ps);
    double norm = 0;
    if (l.zero1) {
      zero.reduce_gradients();
      norm = zero.clip_grad_norm(clip, dist::norm_parameters(model, ps), {ps.tp_group().get(), ps.pp_group().get()});
      zero.step();
    } else {
      norm = dist::clip_grad_norm(model, ps, clip);
      opt.step();
    }
    // The pipeline's loss is this dp rank's; average over dp for the batch's.
    Tensor mean = full({1}, loss, kFloat64);
    ps.dp_group()->all_reduce(mean, dist::ReduceOp::Avg);
    INFO("step " << step);
    CHECK(mean.item<double>() == Approx(ref_loss.item<double>()).epsilon(1e-12));
    CHECK(norm == Approx(ref_norm).epsilon(1e-12));
  }
  {
    Tensor idx = randint(0, spec.vocab_size, {B, T}, data), targets = randint(0, spec.vocab_size, {B, T}, data);
    NoGradGuard no_grad;
    Tensor eval = full({1}, dist::pipeline_eval_loss(model, ps, idx.narrow(0, ps.dp_rank() * local, local),
                                                     targets.narrow(0, ps.dp_rank() * local, local), microbatches),
                       kFloat64);
    ps.dp_group()->all_reduce(eval, dist::ReduceOp::Avg);
    CHECK(eval.item<double>() == Approx(reference.loss(idx, targets).item<double>()).epsilon(1e-12));
    if (l.pp == 1 && !l.sequence_parallel) {
      // The split model's logits, gathered over the vocabulary, are the whole model's.
      Tensor logits = model.forward(idx.narrow(0, 0, 2));
      check_close(logits, reference.forward(idx.narrow(0, 0, 2)), 1e-10, "logits");
    }
  }
  if (l.zero1 && l.tp == 1 && l.pp == 1) {
    // The sharded state, gathered, is AdamW's on the whole model; and it loads back.
    auto state = zero.state_dict();
    for (auto& [key, t] : ref_opt.state_dict()) check_close(state.at(key), t, 1e-9, "optimizer " + key);
    dist::ZeroRedundancyOptimizer again(groups, ps.dp_group(), adamw);
    again.load_state_dict(state);
    for (auto& [key, t] : again.state_dict()) check_close(t, state.at(key), 0, "reloaded " + key);
  }
  std::map<std::string, Tensor> gathered = dist::full_state_dict(model, ps);
  if (w->rank() != 0) {
    CHECK(gathered.empty());
    return;
  }
  auto want = reference.full_state_dict();
  CHECK(gathered.size() == want.size());
  for (auto& [name, t] : gathered) check_close(t, want.at(name), 1e-10, name);
}

}  // namespace

TEST_CASE("a model that does not divide over the layout raises a clear error on every rank") {
  auto w = world();
  const int n = w->size();
  if (n % 2 != 0) return;
  dist::ParallelState tp2(w, 2, 1, n / 2);
  auto tp2_layers = std::make_shared<dist::ModelParallel>(tp2);
  nn::GPTConfig heads{.vocab_size = 200, .block_size = 16, .n_layer = 4, .n_head = 3, .n_embd = 30};
  CHECK_THROWS_WITH(nn::GPT(heads, default_generator(), kFloat32, kCPU, tp2_layers),
                    Catch::Contains("the attention heads (3) must divide among 2 tensor-parallel ranks"));
  nn::LlamaConfig mqa{.vocab_size = 200, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                      .num_attention_heads = 4, .num_key_value_heads = 1};
  CHECK_THROWS_WITH(nn::Llama(mqa, default_generator(), kFloat32, kCPU, tp2_layers),
                    Catch::Contains("the kv heads (1) must divide among 2 tensor-parallel ranks"));
  dist::ParallelState pp2(w, 1, 2, n / 2);
  auto pp2_layers = std::make_shared<dist::ModelParallel>(pp2);
  nn::GPTConfig layers{.vocab_size = 200, .block_size = 16, .n_layer = 1, .n_head = 4, .n_embd = 32};
  CHECK_THROWS_WITH(nn::GPT(layers, default_generator(), kFloat32, kCPU, pp2_layers),
                    Catch::Contains("1 layers cannot fill 2 pipeline stages"));
  nn::TransformerLM model(tiny_gpt(), default_generator(), kFloat32, kCPU, pp2_layers);
  Tensor idx = zeros({3, 4}, kInt64);
  CHECK_THROWS_WITH(dist::pipeline_train_step(model, pp2, idx, idx, {dist::PipelineSchedule::GPipe, 2}),
                    Catch::Contains("2 micro-batches do not divide a batch of 3"));
  CHECK_THROWS_WITH(dist::pipeline_train_step(model, tp2, idx, idx, {dist::PipelineSchedule::GPipe, 1}),
                    Catch::Contains("the pipeline group's rank"));
  if (model.is_last_stage()) CHECK_THROWS_WITH(model.loss(idx, idx), Catch::Contains("use a pipeline schedule"));
}

TEST_CASE("every parallel layout trains GPT-2 like one process") {
  const int n = world()->size();
  const nn::ModelSpec gpt = tiny_gpt();
  check_layout(gpt, {1, 1, n});  // data parallel
  check_layout(gpt, {1, 1, n, {}, /*zero1=*/true});
  if (n % 2 == 0) {
    check_layout(gpt, {2, 1, n / 2});
    check_layout(gpt, {2, 1, n / 2, {}, /*zero1=*/true});
    check_layout(gpt, {2, 1, n / 2, {}, false, /*sequence_parallel=*/true});
    check_layout(gpt, {n / 2, 2, 1, dist::PipelineSchedule::GPipe});
  }
  if (n == 4) {
    check_layout(gpt, {2, 2, 1});
    check_layout(gpt, {1, 4, 1});
    check_layout(gpt, {1, 4, 1, dist::PipelineSchedule::GPipe});
    check_layout(gpt, {1, 2, 2, {}, /*zero1=*/true});
    check_layout(gpt, {4, 1, 1});
    check_layout(gpt, {2, 2, 1, dist::PipelineSchedule::OneForwardOneBackward, false, /*sequence_parallel=*/true});
    check_layout(gpt, {1, 2, 2, {}, false, false, /*recompute=*/true});
  }
}

TEST_CASE("every parallel layout trains Llama like one process") {
  const int n = world()->size();
  const nn::ModelSpec llama = tiny_llama();
  check_layout(llama, {1, 1, n});
  check_layout(llama, {1, 1, n, {}, false, false, /*recompute=*/true});
  if (n % 2 == 0) {
    check_layout(llama, {2, 1, n / 2});  // the two kv heads split across the tp ranks
    check_layout(llama, {2, 1, n / 2, {}, false, /*sequence_parallel=*/true});
    check_layout(llama, {1, 2, n / 2});
  }
  if (n == 4) {
    check_layout(llama, {2, 2, 1});
    check_layout(llama, {2, 2, 1, {}, false, false, /*recompute=*/true});
  }
}

TEST_CASE("LoRA adapters split with their layers: every layout trains like one process") {
  const int n = world()->size();
  // Parts of the fused q/k/v and SwiGLU layers (column parallel: B split) and
  // a row-parallel layer (A split), with dropout off so that layouts agree.
  const nn::LoraConfig lora{.rank = 4, .alpha = 8.0, .targets = {"q", "v", "up", "down"}};
  const nn::ModelSpec llama = tiny_llama();
  check_layout(llama, {.tp = 1, .pp = 1, .dp = n, .lora = lora});
  if (n % 2 == 0) {
    check_layout(llama, {.tp = 2, .pp = 1, .dp = n / 2, .lora = lora});
    check_layout(llama, {.tp = 2, .pp = 1, .dp = n / 2, .sequence_parallel = true, .lora = lora});
  }
  if (n == 4) check_layout(tiny_gpt(), {.tp = 2, .pp = 2, .dp = 1, .lora = nn::LoraConfig{.targets = {"qkv", "out"}}});
}

TEST_CASE("decoding at any layout draws the tokens of one process") {
  auto w = world();
  const int n = w->size();
  std::vector<std::array<int, 3>> layouts{{1, 1, n}};
  if (n % 2 == 0) layouts.push_back({1, 2, n / 2});
  if (n == 4) layouts.insert(layouts.end(), {{2, 2, 1}, {1, 4, 1}, {2, 1, 2}});
  for (const nn::ModelSpec& spec : {tiny_gpt(), tiny_llama()}) {
    Generator g1(31), g2(31);
    nn::TransformerLM whole(spec, g1, kFloat64);
    for (auto [tp, pp, dp] : layouts) {
      INFO(spec.family << ": tp " << tp << " pp " << pp << " dp " << dp);
      dist::ParallelState ps(w, tp, pp, dp);
      Generator g(31);
      nn::TransformerLM model(spec, g, kFloat64, kCPU, std::make_shared<dist::ModelParallel>(ps));
      for (double temperature : {0.0, 0.9}) {
        Generator s1(5), s2(5);
        const std::vector<int64_t> prompt{3, 14, 15, 92};
        auto want = nn::generate(whole, prompt, 10, {.temperature = temperature}, s1);
        auto got = dist::pipeline_generate(model, ps, prompt, 10, {.temperature = temperature}, s2);
        CHECK(got == want);
      }
    }
  }
}
