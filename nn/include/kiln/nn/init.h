#pragma once
// In-place initializers for parameters (no autograd), drawing from a Generator.

#include "kiln/random.h"
#include "kiln/tensor.h"

namespace kiln::nn::init {

// t ~ N(mean, std^2)
void normal_(Tensor& t, double mean, double std, Generator& gen);
// t ~ U(low, high)
void uniform_(Tensor& t, double low, double high, Generator& gen);
void zeros_(Tensor& t);
void ones_(Tensor& t);

}  // namespace kiln::nn::init
