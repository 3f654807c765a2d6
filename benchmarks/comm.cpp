// Communication of GPT training steps under a parallel layout: the bytes each
// rank puts on the wire per step (ring-algorithm volumes, by kind of
// collective), printed per step and set beside the Megatron-LM formulas
// (Narayanan et al. 2021, section 3): with activations A = b T C (micro-batch
// b, sequence T, width C) and M micro-batches per step,
//   tensor parallel   M (4 L_s + e) 2 (t-1)/t A   (two all-reduces per layer
//                     forward, two backward; e: the embedding's forward and
//                     the head's backward all-reduce on the end stages;
//                     sequence parallelism moves the same in all-gathers and
//                     reduce-scatters)
//   pipeline          M A forward to the next stage, M A backward to the previous
//                     (A / t with sequence parallelism)
//   data parallel     2 (d-1)/d G for the stage's gradient bytes G (DDP's
//                     all-reduce, or ZeRO-1's reduce-scatter + all-gather)
//   gradient sync     2 (2-1)/2 E for the tied embedding's copies on the first
//                     and last stage when pp > 1; with sequence parallelism
//                     2 (t-1)/t R for the replicated weights' gradients
// On one process it also times the step with and without DDP (whose buckets
// then have nothing to exchange) to show what the DDP path costs.
//
//   mpirun -np 8 bench_comm --tp 2 --pp 2 --layers 12 --channels 768 --heads 12 --seq 1024 --batch 4 --microbatches 4
//   bench_comm --device cuda --layers 12 --channels 768 --heads 12 --seq 1024 --batch 16 --dtype bfloat16

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace {

using kiln::Tensor;

struct Args {
  int tp = 1, pp = 1;
  int64_t layers = 4, channels = 256, heads = 8, vocab = 8192, seq = 256, batch = 4, microbatches = 2;
  int64_t steps = 3;
  bool sequence_parallel = false, zero1 = false;
  std::string device = "cpu", dtype = "float32", schedule = "1f1b", json = "comm.json";
};

struct Formula {
  double tensor = 0, pipeline = 0, data = 0, sync = 0;
  double total() const { return tensor + pipeline + data + sync; }
};

Formula megatron(const Args& a, const kiln::nn::TransformerLM& model, const kiln::dist::ParallelState& ps) {
  const double t = ps.tp(), d = ps.dp(), M = static_cast<double>(a.microbatches);
  const double act_bytes = a.dtype == "float32" ? 4 : 2;
  const double b = static_cast<double>(a.batch / a.microbatches);
  const double A = b * static_cast<double>(a.seq * a.channels) * act_bytes;
  const auto [first, last] = model.layer_range();
  Formula f;
  const double ends = (model.is_first_stage() ? 1 : 0) + (model.is_last_stage() ? 1 : 0);
  f.tensor = M * (4.0 * static_cast<double>(last - first) + ends) * 2 * (t - 1) / t * A;
  // With sequence parallelism a stage passes on its slice of the sequence.
  const double passed = a.sequence_parallel ? A / t : A;
  f.pipeline = M * passed * ((model.is_last_stage() ? 0 : 1) + (model.is_first_stage() ? 0 : 1));
  double grads = 0, replicated = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    grads += static_cast<double>(p.numel()) * 4;
    if (model.shard_spec(name).replicated()) replicated += static_cast<double>(p.numel()) * 4;
  }
  f.data = 2 * (d - 1) / d * grads;
  if (ps.pp() > 1 && (model.is_first_stage() || model.is_last_stage()))
    f.sync = static_cast<double>(model.embed_tokens->weight.numel()) * 4;
  if (a.sequence_parallel) f.sync += 2 * (t - 1) / t * replicated;
  return f;
}

double mb(double bytes) { return bytes / 1e6; }

int run(const Args& a) {
  auto mpi = kiln::dist::mpi_world();
  const int ranks = mpi->size(), rank = mpi->rank();
  kiln::Device device(a.device);
  if (device.is_cuda() && a.device == "cuda") device.index = rank % kiln::cuda::device_count();
  // CUDA tensors over NCCL, CPU tensors over MPI.
  auto counting = std::make_shared<kiln::dist::CountingProcessGroup>(
      device.is_cuda() && ranks > 1 ? kiln::dist::nccl_world(device.index) : mpi);
  KILN_CHECK(ranks % (a.tp * a.pp) == 0, "[bench_comm] {} ranks do not split into tp {} x pp {}", ranks, a.tp, a.pp);
  kiln::dist::ParallelState ps(counting, a.tp, a.pp, ranks / (a.tp * a.pp));
  kiln::nn::GPTConfig config{.vocab_size = a.vocab, .block_size = a.seq, .n_layer = a.layers, .n_head = a.heads,
                             .n_embd = a.channels};
  if (a.dtype != "float32") config.compute_dtype = a.dtype == "bfloat16" ? kiln::kBFloat16 : kiln::kFloat16;
  kiln::Generator gen(0);
  kiln::nn::GPT model(config, gen, kiln::kFloat32, device, std::make_shared<kiln::dist::ModelParallel>(ps, a.sequence_parallel));
  auto groups = kiln::optim::decay_groups(model.named_parameters(), 0.1);
  auto adamw = [](std::vector<kiln::optim::ParamGroup> g) {
    return std::make_unique<kiln::optim::AdamW>(std::move(g), kiln::optim::AdamWOptions{.lr = 1e-4});
  };
  std::unique_ptr<kiln::optim::Optimizer> opt;
  std::unique_ptr<kiln::dist::ZeroRedundancyOptimizer> zero;
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (a.zero1) {
    zero = std::make_unique<kiln::dist::ZeroRedundancyOptimizer>(groups, ps.dp_group(), adamw);
  } else {
    opt = adamw(groups);
    if (ps.dp() > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, ps.dp_group());
  }
  const kiln::dist::PipelineOptions pipeline{kiln::dist::parse_pipeline_schedule(a.schedule), a.microbatches};
  kiln::Generator data(1 + static_cast<uint64_t>(ps.dp_rank()));
  const auto ids = kiln::TensorOptions(kiln::kInt64).device(device);

  auto step = [&](kiln::dist::DistributedDataParallel* with_ddp) {
    Tensor x = kiln::randint(0, a.vocab, {a.batch, a.seq}, data, ids);
    Tensor y = kiln::randint(0, a.vocab, {a.batch, a.seq}, data, ids);
    zero ? zero->zero_grad() : opt->zero_grad();
    double loss = kiln::dist::pipeline_train_step(model, ps, x, y, pipeline, with_ddp);
    if (with_ddp) with_ddp->finish();
    kiln::dist::sync_gradients(model, ps);
    if (zero) {
      zero->reduce_gradients();
      zero->clip_grad_norm(1.0, kiln::dist::norm_parameters(model, ps), {ps.tp_group().get(), ps.pp_group().get()});
      zero->step();
    } else {
      kiln::dist::clip_grad_norm(model, ps, 1.0);
      opt->step();
    }
    if (device.is_cuda()) kiln::cuda::synchronize(device.index);
    return loss;
  };

  step(ddp.get());  // warm up
  const Formula f = megatron(a, model, ps);
  double seconds = 0;
  for (int64_t s = 1; s <= a.steps; ++s) {
    counting->reset();
    auto t0 = std::chrono::steady_clock::now();
    double loss = step(ddp.get());
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rank == 0) {
      std::string kinds;
      for (const auto& [op, bytes] : counting->counts().bytes)
        kinds += fmt::format(" {} {:.2f} MB ({} calls)", op, mb(bytes), counting->counts().calls.at(op));
      fmt::print("step {} | loss {:.4f} | rank 0 moved {:.2f} MB, formula {:.2f} MB |{}\n", s, loss,
                 mb(counting->counts().total_bytes()), mb(f.total()), kinds);
    }
  }
  // Every rank's last step beside its formula.
  Tensor mine = kiln::tensor(std::vector<double>{counting->counts().total_bytes(), f.tensor, f.pipeline, f.data, f.sync},
                             kiln::kFloat64);
  Tensor all = kiln::empty({ranks, 5}, kiln::kFloat64);
  mpi->all_gather(all, mine);
  nlohmann::json out = {{"tp", a.tp}, {"pp", a.pp}, {"dp", ps.dp()}, {"sequence_parallel", a.sequence_parallel},
                        {"zero1", a.zero1}, {"ms_per_step", 1e3 * seconds / static_cast<double>(a.steps)}};
  if (rank == 0) {
    fmt::print("\nlayout tp {} x pp {} x dp {}{}{}, micro-batch {} x {} x {}, {} micro-batches; per step:\n", a.tp, a.pp,
               ps.dp(), a.sequence_parallel ? " (sequence parallel)" : "", a.zero1 ? " (ZeRO-1)" : "",
               a.batch / a.microbatches, a.seq, a.channels, a.microbatches);
    fmt::print("{:>5} {:>10} {:>10} {:>6} | {:>10} {:>10} {:>10} {:>10}\n", "rank", "moved MB", "formula", "ratio",
               "tensor", "pipeline", "data", "sync");
    for (int r = 0; r < ranks; ++r) {
      double v[5];
      for (int64_t i = 0; i < 5; ++i) v[i] = all[r][i].item<double>();
      const double formula = v[1] + v[2] + v[3] + v[4];
      fmt::print("{:>5} {:>10.3f} {:>10.3f} {:>6.3f} | {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}\n", r, mb(v[0]),
                 mb(formula), formula > 0 ? v[0] / formula : 0.0, mb(v[1]), mb(v[2]), mb(v[3]), mb(v[4]));
      out["ranks"].push_back({{"measured_bytes", v[0]}, {"formula_bytes", formula}, {"tensor", v[1]},
                              {"pipeline", v[2]}, {"data", v[3]}, {"sync", v[4]}});
    }
  }
  if (ranks == 1) {
    // No DDP, then DDP over a world of one (its hooks stay on the parameters).
    auto time = [&](kiln::dist::DistributedDataParallel* d) {
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t s = 0; s < a.steps; ++s) step(d);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(a.steps);
    };
    const double plain = time(nullptr);
    kiln::dist::DistributedDataParallel single(model, kiln::dist::single_process_group());
    const double with_ddp = time(&single);
    fmt::print("one process: {:.2f} ms/step without DDP, {:.2f} ms/step with DDP ({:+.2f}%)\n", 1e3 * plain,
               1e3 * with_ddp, 100 * (with_ddp / plain - 1));
    out["ddp_world_1"] = {{"ms_without", 1e3 * plain}, {"ms_with", 1e3 * with_ddp}};
  }
  if (rank == 0) std::ofstream(a.json) << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Bytes moved per training step under a parallel layout, against the Megatron-LM formulas"};
  Args a;
  app.add_option("--tp", a.tp, "tensor-parallel ranks")->capture_default_str();
  app.add_option("--pp", a.pp, "pipeline stages")->capture_default_str();
  app.add_flag("--sequence-parallel", a.sequence_parallel, "sequence parallelism with --tp");
  app.add_flag("--zero1", a.zero1, "ZeRO-1 instead of DDP");
  app.add_option("--layers", a.layers, "layers")->capture_default_str();
  app.add_option("--channels", a.channels, "width")->capture_default_str();
  app.add_option("--heads", a.heads, "heads")->capture_default_str();
  app.add_option("--vocab", a.vocab, "vocabulary")->capture_default_str();
  app.add_option("--seq", a.seq, "T")->capture_default_str();
  app.add_option("--batch", a.batch, "sequences per step and replica")->capture_default_str();
  app.add_option("--microbatches", a.microbatches, "micro-batches per step")->capture_default_str();
  app.add_option("--schedule", a.schedule, "gpipe | 1f1b")->capture_default_str();
  app.add_option("--steps", a.steps, "measured steps")->capture_default_str();
  app.add_option("--device", a.device, "cpu | cuda")->capture_default_str();
  app.add_option("--dtype", a.dtype, "activations: float32 | bfloat16 | float16")->capture_default_str();
  app.add_option("--json", a.json, "write the per-rank results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    if (kiln::dist::mpi_world()->size() > 1) kiln::dist::abort_all(e);
    fmt::print(stderr, "bench_comm: {}\n", e.what());
    return 1;
  }
}
