// kiln's cuDNN attention graphs, checked without a GPU: cuDNN plans them for
// an H100 and an A100 described by device properties (tests/cudnn/*.json,
// cuDNN's DEVICEPROP JSON) instead of a live device. cuDNN's fused-attention
// engines compile their kernels at run time and need a libcuda to load them;
// here the CUDA toolkit's stub library stands in, so planning ends at the
// final module load, after cuDNN has recognised the graph as attention
// (SDPA_FWD / SDPA_BWD in its API log), an engine has accepted it and its
// kernels are compiled. Each graph's bound tensors must also be exactly the
// uids kiln binds when it runs the graph (attention_uids). A graph no engine takes ends earlier, with "no cuDNN
// engine runs" (the control case below). Which engine cuDNN would pick on the
// real device, and its numbers, only the `gpu` tests and the benchmark tell.

#include <fstream>
#include <sstream>

#include "cudnn_attention.h"
#include "helpers.h"

using namespace kiln::kernels::cuda::cudnn;

namespace {

Descriptor device(const std::string& name) {
  std::ifstream file(std::string(KILN_CUDNN_DEVICES) + "/" + name + ".json");
  REQUIRE(file.good());
  std::stringstream json;
  json << file.rdbuf();
  return device_properties(json.str());
}

// Plans p's graph on `dev`: an engine must take it and compile its kernels
// (the stub driver then fails the load; where the toolkit has no stub and a
// real driver answers, the plan is complete).
void check_planned(const AttentionProblem& p, bool backward, const Descriptor& dev) {
  INFO("B " << p.B << " Hq " << p.Hq << " Hkv " << p.Hkv << " Tq " << p.Tq << " Tk " << p.Tk << " D " << p.D
            << " causal " << p.causal << (p.packed ? " packed" : "") << (backward ? " backward" : " forward"));
  const Graph graph = backward ? attention_backward_graph(p) : attention_forward_graph(p);
  // What kiln binds at execution is exactly what the graph reads.
  CHECK(graph.bound_uids() == attention_uids(p, backward));
  try {
    const Plan plan(graph.finalize(), dev, "attention");
    CHECK(plan.workspace_bytes() >= 0);
  } catch (const kiln::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER"));
  }
}

}  // namespace

TEST_CASE("cuDNN's fused attention engines take kiln's forward and backward graphs on an H100 and an A100") {
  for (const char* name : {"h100", "a100"}) {
    INFO(name);
    const Descriptor dev = device(name);
    // Multi-head, bfloat16, D 128; grouped queries, float16, D 64, bottom-right causal with Tq < Tk.
    for (const AttentionProblem& p : {AttentionProblem{2, 8, 8, 256, 256, 128, false, CUDNN_DATA_BFLOAT16},
                                      AttentionProblem{2, 8, 2, 128, 256, 64, true, CUDNN_DATA_HALF}})
      for (bool backward : {false, true}) check_planned(p, backward, dev);
  }
}

TEST_CASE("packed sequences (ragged offsets, padding mask, per-sequence causal) on an H100 and an A100") {
  for (const char* name : {"h100", "a100"}) {
    INFO(name);
    const Descriptor dev = device(name);
    for (const AttentionProblem& p : {AttentionProblem{3, 8, 8, 256, 256, 128, false, CUDNN_DATA_BFLOAT16, true},
                                      AttentionProblem{5, 8, 2, 128, 256, 64, true, CUDNN_DATA_HALF, true}})
      for (bool backward : {false, true}) check_planned(p, backward, dev);
  }
}

TEST_CASE("head dim 256: forward and backward on an H100, forward only on an A100 (cuDNN's support matrix)") {
  const AttentionProblem wide{1, 4, 4, 128, 128, 256, true, CUDNN_DATA_BFLOAT16};
  for (bool backward : {false, true}) check_planned(wide, backward, device("h100"));
  const Descriptor a100 = device("a100");
  check_planned(wide, false, a100);
  CHECK_THROWS_WITH(Plan(attention_backward_graph(wide).finalize(), a100, "attention backward"),
                    Catch::Contains("no cuDNN engine runs attention backward"));
}

TEST_CASE("a graph no cuDNN engine takes is refused before any compilation") {
  const AttentionProblem float64{1, 2, 2, 128, 128, 64, false, CUDNN_DATA_DOUBLE};  // no attention engine computes in float64
  CHECK_THROWS_WITH(Plan(attention_forward_graph(float64).finalize(), device("h100"), "attention"),
                    Catch::Contains("no cuDNN engine runs attention"));
}
