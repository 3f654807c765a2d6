// Bad input raises kiln::Error naming the op and the offending shapes, dtypes
// and devices; nothing aborts.

#include "helpers.h"

using namespace kiln;
using Catch::Contains;

TEST_CASE("shape mismatches name the op and the shapes") {
  Tensor a = zeros({2, 3}), b = zeros({4, 5});
  CHECK_THROWS_AS(a + b, Error);
  CHECK_THROWS_WITH(a + b, Contains("[add] shapes [2, 3] and [4, 5] cannot be broadcast together"));
  CHECK_THROWS_WITH(matmul(a, b), Contains("[matmul] shapes [2, 3] and [4, 5] cannot be multiplied"));
  CHECK_THROWS_WITH(matmul(zeros({}), a), Contains("[matmul] both arguments need at least 1 dim"));
  CHECK_THROWS_WITH(a.view({4, 2}), Contains("[view] shape [4, 2] is invalid for input of shape [2, 3]"));
  CHECK_THROWS_WITH(a.reshape({-1, -1}), Contains("only one dimension can be -1"));
  CHECK_THROWS_WITH(a.expand({3, 3}), Contains("[expand] cannot expand shape [2, 3] to [3, 3]"));
  CHECK_THROWS_WITH(cat({a, b}, 0), Contains("[cat] tensor 1 has shape [4, 5], expected [2, 3] except in dim 0"));
  CHECK_THROWS_WITH(cat({}, 0), Contains("[cat] expects a non-empty list"));
  CHECK_THROWS_WITH(stack({a, b}), Contains("[stack] tensor 1 has shape [4, 5]"));
  CHECK_THROWS_WITH(split(a, std::vector<int64_t>{1, 1}, 1), Contains("[split] sizes [1, 1] sum to 2 but dim 1 has size 3"));
  CHECK_THROWS_WITH(layer_norm(a, {4}), Contains("[layer_norm] normalized_shape [4] does not match"));
  CHECK_THROWS_WITH(layer_norm(a, {3}, zeros({2})), Contains("weight/bias float32[2] on cpu"));
  CHECK_THROWS_WITH(masked_fill(zeros({3}), zeros({2, 3}, kBool), 1.0), Contains("[masked_fill] mask of shape [2, 3]"));
}

TEST_CASE("dims and indices out of range") {
  Tensor a = zeros({2, 3});
  CHECK_THROWS_WITH(a.transpose(0, 2), Contains("[transpose] dim 2 is out of range for a tensor of 2 dims"));
  CHECK_THROWS_WITH(sum(a, {-3}), Contains("[sum] dim -3 is out of range"));
  CHECK_THROWS_WITH(sum(a, {1, -1}), Contains("[sum] dim 1 appears twice"));
  CHECK_THROWS_WITH(a.select(1, 3), Contains("[select] index 3 is out of range for dim 1 of size 3"));
  CHECK_THROWS_WITH(a.narrow(1, 2, 2), Contains("[narrow] start 2 and length 2 are out of range"));
  CHECK_THROWS_WITH(a.permute({0, 0}), Contains("[permute] dim 0 repeated"));
  CHECK_THROWS_WITH(a.permute({0}), Contains("[permute] got 1 dims for a tensor of shape [2, 3]"));
  CHECK_THROWS_WITH(softmax(a, 2), Contains("[softmax] dim 2 is out of range"));
  Tensor idx = tensor(std::vector<int64_t>{0, 5});
  CHECK_THROWS_WITH(index_select(a, 1, idx), Contains("[index_select] index 5 is out of range for a dimension of size 3"));
  CHECK_THROWS_WITH(embedding(zeros({4, 2}), tensor(std::vector<int64_t>{-1})),
                    Contains("[embedding] indices int64[1] on cpu into weight float32[4, 2] on cpu: [index_select] "
                             "index -1 is out of range"));
  CHECK_THROWS_WITH(gather(a, 1, full({2, 1}, 7, kInt64)),
                    Contains("[gather] index 7 is out of range for a dimension of size 3"));
  CHECK_THROWS_WITH(cross_entropy(zeros({2, 3}), tensor(std::vector<int64_t>{1, 3})),
                    Contains("[cross_entropy] target 3 at row 1 is out of range for 3 classes"));
  CHECK_THROWS_WITH(max(zeros({0, 2}), 0), Contains("[max] cannot reduce over an empty dimension"));
  CHECK_THROWS_WITH(zeros({-1}), Contains("[empty] negative size"));
  CHECK_THROWS_WITH(zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}), Contains("kiln supports up to 8"));
}

TEST_CASE("wrong dtypes are named") {
  Tensor f = zeros({2, 3}), i = zeros({2, 3}, kInt64), b = zeros({2, 3}, kBool);
  CHECK_THROWS_WITH(matmul(f, zeros({3, 2}, kFloat64)),
                    Contains("[matmul] expects one dtype, got float32[2, 3] on cpu and float64[3, 2] on cpu"));
  CHECK_THROWS_WITH(mean(i), Contains("[mean] expects a floating tensor, got int64[2, 3] on cpu"));
  CHECK_THROWS_WITH(softmax(i, 0), Contains("[softmax] expects a floating tensor"));
  CHECK_THROWS_WITH(where(f, f, f), Contains("[where] condition must be a bool tensor, got float32[2, 3]"));
  CHECK_THROWS_WITH(index_select(f, 0, zeros({1})), Contains("[index_select] index must be int32 or int64, got float32"));
  CHECK_THROWS_WITH(cross_entropy(f, zeros({2})), Contains("[cross_entropy] target must hold int32/int64"));
  CHECK_THROWS_WITH(cross_entropy(f, zeros({3}, kInt64)), Contains("[cross_entropy] target int64[3] on cpu does not match"));
  CHECK_THROWS_WITH(-b, Contains("[neg] negation of a bool tensor"));
  CHECK_THROWS_WITH(b - b, Contains("[sub] subtraction of bool tensors"));
  CHECK_THROWS_WITH(f.data_ptr<double>(), Contains("[data_ptr] tensor has dtype float32, asked for float64"));
  CHECK_THROWS_WITH(gelu(f, "fast"), Contains("[gelu] approximate must be 'none' or 'tanh', got 'fast'"));
  CHECK_THROWS_WITH(dropout(f, 1.5), Contains("[dropout] probability must be in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(randint(3, 3, {2}), Contains("[randint] empty range [3, 3)"));
  CHECK_THROWS_WITH(rand({2}, kInt32), Contains("[rand] needs a floating dtype, got int32"));
  CHECK_THROWS_WITH(arange(0, 5, 0), Contains("[arange] step must be nonzero"));
}

TEST_CASE("devices: nothing moves implicitly; CUDA without a GPU raises") {
  bool has_gpu = kiln::cuda::is_available();
  if (has_gpu) {
    Tensor c = zeros({2}, Device(kCUDA, 0));
    CHECK_THROWS_WITH(zeros({2}) + c, Contains("[add] expects all tensors on one device, got float32[2] on cpu, "
                                                 "float32[2] on cuda:0"));
  } else {
    CHECK_THROWS_AS(zeros({2}, Device(kCUDA, 0)), Error);
    CHECK_THROWS_WITH(ones({2}).to(Device(kCUDA, 0)), Contains("cuda"));
    CHECK_THROWS_WITH(empty({4}, TensorOptions().pinned_memory()), Contains("[pinned allocate]"));
    CHECK_THROWS_WITH(ones({4}).pin_memory(), Contains("[pinned allocate]"));
    CHECK_THROWS_WITH(kiln::cuda::Stream::default_stream(0), Contains("cuda:0 does not exist"));
  }
  CHECK_THROWS_WITH(empty({4}, TensorOptions().device(Device(kCUDA, 0)).pinned_memory()),
                    Contains("[allocate] pinned memory is host memory; asked for it on cuda:0"));
  CHECK_THROWS_WITH(kiln::cuda::Event().elapsed_ms(kiln::cuda::Event()),
                    Contains("[event elapsed_ms] both events must have been recorded"));
}

TEST_CASE("attention checks its shapes") {
  Tensor q = zeros({1, 4, 3, 8}), k = zeros({1, 3, 5, 8}), v = zeros({1, 3, 5, 8});
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, v),
                    Contains("query heads (4) must be a multiple of key/value heads (3)"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(zeros({4, 3, 8}), k, v), Contains("expects (B, H, T, D)"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, zeros({1, 2, 5, 4}), zeros({1, 2, 5, 4})),
                    Contains("do not match query"));
  SettingsGuard guard;
  settings().attention = AttentionBackend::Cudnn;
  Tensor kv = zeros({1, 2, 5, 8});
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, kv, kv),
                    Contains("[scaled_dot_product_attention] the cuDNN backend runs on CUDA tensors, got"));
  CHECK_THROWS_WITH(scaled_dot_product_attention_varlen(zeros({3, 2, 8}), zeros({3, 2, 8}), zeros({3, 2, 8}),
                                                        tensor(std::vector<int64_t>{0, 3}),
                                                        tensor(std::vector<int64_t>{0, 3})),
                    Contains("the cuDNN backend runs on CUDA tensors"));
}

TEST_CASE("undefined tensors are reported, not dereferenced") {
  Tensor u;
  CHECK_THROWS_WITH(u.sizes(), Contains("[sizes] called on an undefined tensor"));
  CHECK_THROWS_WITH(u + ones({1}), Contains("[add] argument 'self' is an undefined tensor"));
  CHECK_THROWS_WITH(exp(u), Contains("[exp] argument 'self' is an undefined tensor"));
  CHECK(u.str() == "tensor(undefined)");
  CHECK(!u.requires_grad());
}

TEST_CASE("integer division by zero raises instead of trapping") {
  Tensor a = tensor(std::vector<int64_t>{1, 2}), z = tensor(std::vector<int64_t>{1, 0});
  // true division promotes to float: inf, like PyTorch
  CHECK(std::isinf((a / z)[1].item<double>()));
}
