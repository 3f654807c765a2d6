// Training memory of full fine-tuning against LoRA for one Llama and batch:
// the bytes of the parameters, of their gradients and of AdamW's state,
// counted from the tensors after a step, and the step's peak: the CUDA
// allocator's peak in use, or on the CPU the process's peak resident set
// (so run each configuration in a process of its own).
//
//   bench_lora_memory --lora-rank 0                 # full fine-tuning
//   bench_lora_memory --lora-rank 16                # LoRA on every projection
//   bench_lora_memory --lora-rank 16 --dtype bfloat16 --lora-base-dtype bfloat16 --device cuda

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace {

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

int64_t bytes_of(const std::vector<kiln::Tensor>& tensors) {
  int64_t total = 0;
  for (const kiln::Tensor& t : tensors)
    if (t.defined()) total += t.numel() * static_cast<int64_t>(t.element_size());
  return total;
}

int64_t peak_resident_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Training memory of full fine-tuning and of LoRA"};
  int64_t layers = 8, channels = 512, heads = 8, vocab = 32000, batch = 4, seq = 256, rank = 0;
  std::string device_name = "cpu", dtype = "float32", base_dtype, json_path = "lora_memory.json";
  app.add_option("--layers", layers)->capture_default_str();
  app.add_option("--channels", channels)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--vocab", vocab)->capture_default_str();
  app.add_option("--batch", batch, "B")->capture_default_str();
  app.add_option("--seq", seq, "T")->capture_default_str();
  app.add_option("--lora-rank", rank, "0: full fine-tuning")->capture_default_str();
  app.add_option("--lora-base-dtype", base_dtype, "the frozen weights' dtype (bfloat16)");
  app.add_option("--device", device_name, "cpu | cuda")->capture_default_str();
  app.add_option("--dtype", dtype, "activations: float32 | bfloat16")->capture_default_str();
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const kiln::Device device(device_name);
    kiln::Generator gen(0);
    kiln::nn::LlamaConfig config{.vocab_size = vocab, .hidden_size = channels,
                                 .intermediate_size = kiln::nn::MlpSpec::swiglu_hidden(channels),
                                 .num_hidden_layers = layers, .num_attention_heads = heads,
                                 .max_position_embeddings = seq};
    kiln::nn::ModelSpec spec = config.spec();
    if (dtype == "bfloat16") spec.compute_dtype = kiln::kBFloat16;
    kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device);
    if (rank > 0)
      kiln::nn::add_lora(model, {.rank = rank, .alpha = 2.0 * static_cast<double>(rank),
                                 .targets = {"q", "k", "v", "out", "gate", "up", "down"},
                                 .base_dtype = base_dtype.empty() ? std::nullopt : std::optional(kiln::kBFloat16)});
    kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), 0.0), {.lr = 1e-4});
    if (device.is_cuda()) kiln::cuda::reset_peak_memory_stats(device.index);
    double loss = 0;
    for (int step = 0; step < 2; ++step) {  // the second step has the optimizer state allocated
      kiln::Tensor x = kiln::randint(0, vocab, {batch, seq}, gen, kiln::TensorOptions(kiln::kInt64).device(device));
      opt.zero_grad();
      kiln::Tensor l = model.loss(x, x);
      l.backward();
      opt.step();
      loss = l.item<double>();
    }
    std::vector<kiln::Tensor> params = model.parameters(), grads, state;
    int64_t trainable = 0;
    for (const kiln::Tensor& p : params) {
      grads.push_back(p.grad());
      trainable += p.requires_grad() ? p.numel() : 0;
    }
    for (auto& [name, t] : opt.state_dict()) state.push_back(t);
    const int64_t peak = device.is_cuda() ? static_cast<int64_t>(kiln::cuda::memory_stats(device.index).peak_in_use)
                                          : peak_resident_bytes();
    const char* what = device.is_cuda() ? "peak allocated" : "peak resident (process)";
    fmt::print("Llama {} x {} ({:.1f}M parameters, {:.2f}M trainable), B={} T={}, {} activations on {}, {}: "
               "parameters {:.1f} MiB, gradients {:.1f} MiB, AdamW state {:.1f} MiB, {} {:.1f} MiB (loss {:.3f})\n",
               layers, channels, static_cast<double>(model.num_parameters()) / 1e6,
               static_cast<double>(trainable) / 1e6, batch, seq, dtype, device,
               rank > 0 ? fmt::format("LoRA rank {}{}", rank, base_dtype.empty() ? "" : ", base in " + base_dtype)
                        : std::string("full fine-tuning"),
               mib(bytes_of(params)), mib(bytes_of(grads)), mib(bytes_of(state)), what, mib(peak), loss);
    nlohmann::json j = {{"layers", layers},          {"channels", channels},
                        {"batch", batch},            {"seq", seq},
                        {"dtype", dtype},            {"device", device.str()},
                        {"lora_rank", rank},         {"base_dtype", base_dtype},
                        {"trainable", trainable},    {"parameter_bytes", bytes_of(params)},
                        {"gradient_bytes", bytes_of(grads)}, {"optimizer_bytes", bytes_of(state)},
                        {"peak_bytes", peak},        {"peak_kind", what}};
    std::ofstream(json_path) << j.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_lora_memory: {}\n", e.what());
    return 1;
  }
}
