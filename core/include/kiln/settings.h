#pragma once
// Runtime settings: one process-wide object the ops read when they run, so
// nothing about precision is decided at compile time. Set it before the work
// starts, or for a scope with SettingsGuard:
//
//   kiln::SettingsGuard guard;
//   kiln::settings().allow_tf32 = true;   // until guard leaves scope

namespace kiln {

// Which implementation scaled_dot_product_attention runs.
enum class AttentionBackend {
  Auto,      // the fused kernel on CUDA (float32/16-bit, head dim <= 256), the composed ops elsewhere
  Fused,     // the fused kernel wherever it applies, the CPU's too
  Composed,  // matmul + softmax + matmul (the reference)
  Cudnn,     // cuDNN's fused attention (CUDA, bfloat16/float16, padded or packed; the benchmark baseline)
};

// The process-wide choices of implementation, which settings() gives.
struct Settings {
  // float32 matmuls on CUDA may use TF32 tensor cores (inputs rounded to a
  // 10-bit mantissa, float32 accumulation): several times the float32 rate,
  // at about 1e-3 relative error. Off by default, as in PyTorch.
  bool allow_tf32 = false;
  // Which implementation scaled_dot_product_attention runs.
  AttentionBackend attention = AttentionBackend::Auto;
  // CUDA: the experts' GEMMs of a mixture-of-experts layer (grouped_linear) as
  // one cuBLAS grouped launch (float32, bfloat16, float16) instead of one
  // cuBLASLt launch per expert. Off until a GPU run shows where it pays;
  // bench_moe times both.
  bool grouped_gemm_one_launch = false;
};

Settings& settings();  // the process's, for reading and writing

// Restores the settings it found when it leaves scope.
class SettingsGuard {
 public:
  SettingsGuard() : saved_(settings()) {}
  ~SettingsGuard() { settings() = saved_; }
  SettingsGuard(const SettingsGuard&) = delete;
  SettingsGuard& operator=(const SettingsGuard&) = delete;

 private:
  Settings saved_;
};

}  // namespace kiln
