#pragma once
// Everything in kiln: tensors, ops, autograd, layers and optimizers.

#include "kiln/autograd.h"
#include "kiln/cuda.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/module.h"
#include "kiln/ops.h"
#include "kiln/optim/sgd.h"
#include "kiln/random.h"
#include "kiln/tensor.h"
