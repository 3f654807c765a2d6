#pragma once
// Everything in kiln: tensors, ops, autograd, layers and optimizers.

#include "kiln/autograd.h"
#include "kiln/cuda.h"
#include "kiln/nn/gpt.h"
#include "kiln/nn/init.h"
#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/module.h"
#include "kiln/nn/transformer.h"
#include "kiln/ops.h"
#include "kiln/optim/optimizers.h"
#include "kiln/optim/schedule.h"
#include "kiln/random.h"
#include "kiln/serialize.h"
#include "kiln/tensor.h"
