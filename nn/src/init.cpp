#include "kiln/nn/init.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn::init {

namespace {
// Writes value (drawn in float32 or float64) into t without recording.
void assign(Tensor& t, const Tensor& value) {
  NoGradGuard no_grad;
  t.copy_(value);
}
TensorOptions draw_options(const Tensor& t) {
  return TensorOptions(t.dtype() == kFloat64 ? kFloat64 : kFloat32).device(t.device());
}
}  // namespace

void normal_(Tensor& t, double mean, double std, Generator& gen) {
  assign(t, randn(t.sizes(), gen, draw_options(t)) * std + mean);
}

void uniform_(Tensor& t, double low, double high, Generator& gen) {
  assign(t, rand(t.sizes(), gen, draw_options(t)) * (high - low) + low);
}

void zeros_(Tensor& t) {
  NoGradGuard no_grad;
  t.zero_();
}

void ones_(Tensor& t) {
  NoGradGuard no_grad;
  t.fill_(1);
}

}  // namespace kiln::nn::init
