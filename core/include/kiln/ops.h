#pragma once
// kiln's ops: free functions on Tensors. Each checks its arguments, dispatches
// to the device's kernel and, in grad mode, records its backward.

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/base/optimizer_step.h"
#include "kiln/random.h"
#include "kiln/tensor.h"

namespace kiln {

// --- factories ----------------------------------------------------------------
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, Scalar value, TensorOptions options = {});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, Scalar value);
// [start, end) by step; int64 when all three are integers, unless options say otherwise.
Tensor arange(Scalar start, Scalar end, Scalar step = 1, std::optional<TensorOptions> options = {});
Tensor arange(Scalar end, std::optional<TensorOptions> options = {});
// A 1-D tensor holding a copy of values (reshape for more dims).
template <typename T>
Tensor tensor(const std::vector<T>& values, TensorOptions options = TensorOptions(dtype_of<T>()));
Tensor tensor(std::initializer_list<double> values, TensorOptions options = {});  // float32 unless options say
// A 0-dim tensor.
Tensor scalar_tensor(Scalar value, TensorOptions options = {});
// Wraps caller-owned memory without copying; deleter (optional) runs when the
// last view dies. Strides default to contiguous.
Tensor from_blob(void* data, const Shape& shape, TensorOptions options = {}, Storage::Deleter deleter = {});
// The same with strides in elements.
Tensor from_blob(void* data, const Shape& shape, const Shape& strides, TensorOptions options = {},
                 Storage::Deleter deleter = {});

// Uniform [0, 1), standard normal, and integers in [low, high), from gen (or the default).
Tensor rand(const Shape& shape, Generator& gen, TensorOptions options = {});
Tensor rand(const Shape& shape, TensorOptions options = {});
Tensor randn(const Shape& shape, Generator& gen, TensorOptions options = {});
Tensor randn(const Shape& shape, TensorOptions options = {});
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, TensorOptions options = kInt64);
Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions options = kInt64);
// 0 .. n-1 in an order drawn from gen: the same for a seed on every device.
Tensor randperm(int64_t n, Generator& gen, TensorOptions options = kInt64);
Tensor randperm(int64_t n, TensorOptions options = kInt64);

// --- type promotion (PyTorch's rules) ----------------------------------------
DType promote_types(DType a, DType b);
// Tensors with dims outrank 0-dim tensors, which outrank Scalars, within a category
// (bool < integer < floating); a higher category always wins.
DType result_type(const Tensor& a, const Tensor& b);
DType result_type(const Tensor& a, Scalar b);
// The shape a and b broadcast to; raises naming op.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op = "broadcast");

// --- elementwise ------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b, Scalar alpha = 1);  // a + alpha * b
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);  // true division: integers give float32
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, Scalar exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);

// Elementwise functions as PyTorch's, in x's dtype (the transcendental ones on
// floating dtypes), each with its gradient.
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
// To whole numbers, in x's dtype (integers come back as they are); round
// takes halves to the even neighbour, as PyTorch does. The gradient is zero.
Tensor floor(const Tensor& x);
Tensor ceil(const Tensor& x);
Tensor round(const Tensor& x);
Tensor relu(const Tensor& x);
// approximate: "none" (erf) or "tanh".
Tensor gelu(const Tensor& x, std::string_view approximate = "none");
Tensor silu(const Tensor& x);
// min(max(x, min), max), as PyTorch: min > max gives max everywhere; NaN
// stays NaN. The gradient passes where min <= x <= max, bounds included
// (PyTorch's), so it is zero everywhere when min > max.
Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max);

// Comparisons give bool tensors.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& x);
// cond ? a : b, broadcasting all three.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, Scalar b);
Tensor where(const Tensor& cond, Scalar a, const Tensor& b);
// x with value wherever mask (broadcast) is true.
Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value);

// --- reductions -----------------------------------------------------------------
// Over all elements, or over `dims` (empty = all). Integer sums give int64.
Tensor sum(const Tensor& x);
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const Shape& dims, bool keepdim = false);
Tensor max(const Tensor& x);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);  // values; grad split among ties
Tensor min(const Tensor& x);
Tensor min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x);  // index into the flattened tensor
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);
// Variance dividing by n - correction (1: unbiased, as PyTorch's default).
Tensor var(const Tensor& x, const Shape& dims, int64_t correction = 1, bool keepdim = false);
// The running sum along dim (torch.cumsum): floating inputs keep their
// dtype, integer and bool ones give int64. The gradient is the running sum
// of the incoming one from the end.
Tensor cumsum(const Tensor& x, int64_t dim);
// x sorted along dim, stably (equal values keep their order): the values,
// which carry the gradient, and their int64 indices. 16-bit floats sort as
// float32. NaN: the largest value on the CPU; on CUDA by its sign bit.
std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim = -1, bool descending = false);
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);
// log(sum(exp(x))) over dim, stable.
Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums x down to shape (the reverse of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);
// The sum of squares of each tensor (float64, shape (n,)), all tensors on one
// device, in one pass: the pieces of a global norm. Not differentiable.
Tensor squared_norms(const std::vector<Tensor>& tensors);

// --- linear algebra ----------------------------------------------------------------
// torch.matmul semantics: 1-D vectors, 2-D matrices, batched with broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);
// What linear applies to its result in the same pass.
enum class Activation { None, GeluTanh };
// y = act(x weight^T + bias) with x (..., in), weight (out, in), bias (out) or
// undefined, one dtype: one GEMM with the bias and the activation in its
// epilogue (GeluTanh: gelu(., "tanh"), GPT-2's MLP; the pre-activation is kept
// for backward only when a gradient is needed).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, Activation activation = Activation::None);

// --- joining, splitting, indexing ------------------------------------------------
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Views of size split_size along dim (the last may be smaller).
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
// index: 1-D int32/int64.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j] = x[index[i][j]][j] (dim 0), etc.; index has the output's shape.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// Rows of weight (num, dim) at indices of any shape: (*indices, dim).
Tensor embedding(const Tensor& weight, const Tensor& indices);
// x with src added at index along dim: out[index[i][j]][j] += src[i][j] (dim
// 0), etc.; index has src's shape, at most x's. Gradients flow to x and src.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// x with src written at index along dim: out[index[i][j]][j] = src[i][j] (dim
// 0), etc.; shapes as scatter_add's. Where an index repeats, one of its writes
// wins (on the CPU the last; on a GPU any one), as PyTorch's scatter. Gradients:
// x's where nothing was written over it, src's from where each element went.
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// (*indices, num_classes) int64 with a 1 at each index (num_classes -1: the largest index + 1).
Tensor one_hot(const Tensor& indices, int64_t num_classes = -1);
// The lower (upper) triangle of the last two dims: entries on and below
// (above) the diagonal-th diagonal kept (0: the main one, > 0 above it), the rest zero.
Tensor tril(const Tensor& x, int64_t diagonal = 0);
Tensor triu(const Tensor& x, int64_t diagonal = 0);

// --- neural-network functions ------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Softmax over the last dim of attention scores (..., Tq, Tk) under a causal
// mask aligned bottom-right: query i attends to keys j <= i + Tk - Tq, the
// others get 0, and a query that sees no key gets a row of zeros. One pass of
// the row kernel: the mask is never materialized.
Tensor causal_softmax(const Tensor& scores);
// Normalizes over the trailing dims given by normalized_shape; weight and bias
// (of that shape) are optional.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                  const Tensor& bias = {}, double eps = 1e-5);
// x / sqrt(mean(x^2) + eps) over the trailing dims, times weight when given.
Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {}, double eps = 1e-6);
// The pre-norm residual stream fused into one kernel: returns {x + residual,
// norm(x + residual)} (the sum rounded to x's dtype before it is normalized,
// as the two ops would do).
std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Shape& normalized_shape,
                                         const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);
// add_layer_norm's RMSNorm twin.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Shape& normalized_shape,
                                       const Tensor& weight = {}, double eps = 1e-6);

// A loss per element (None), or its mean or sum.
enum class Reduction { None, Mean, Sum };
// logits (N, C) or (C,) or (N, C, d1, ...); target int64/int32 class indices of
// the matching shape. Mean divides by the number of targets not ignored.
// z_loss adds z_loss * logsumexp(logits)^2 to each target's loss (PaLM's
// z-loss, which keeps the softmax normalizer near 1), fused in the kernels.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::Mean, double z_loss = 0.0);
// The mean cross-entropy of the logits x weight^T (a classifier head) against
// target, without ever holding all (N, V) logits: rows go through in chunks
// whose logits turn into their gradient in place, and dx, dweight are formed
// during the forward pass (llm.c's fused classifier), so the peak extra memory
// is one chunk of logits. x (N, C), weight (V, C) of x's dtype, target (N)
// int32/int64; ignore_index rows count for nothing. chunk_rows 0 picks chunks
// of about 2^25 logits. The loss is float32 (float64 for float64 inputs).
// z_loss as cross_entropy's.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& target, int64_t ignore_index = -100,
                            int64_t chunk_rows = 0, double z_loss = 0.0);
// SwiGLU's gate (Shazeer 2020, the LLaMA MLP): silu(gate) * up, one fused
// kernel forward and one backward. gate and up share shape, dtype and device.
Tensor swiglu(const Tensor& gate, const Tensor& up);
// Zeroes elements with probability p and scales the rest by 1 / (1 - p).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
Tensor dropout(const Tensor& x, double p, bool training = true);

// Rotary position embedding (Su et al.) on x (B, H, T, D), D even, for positions
// offset .. offset + T - 1, pairing element i with i + D/2 (the "rotate half"
// layout of GPT-NeoX and LLaMA in Hugging Face).
Tensor rope(const Tensor& x, int64_t offset = 0, double theta = 10000.0);
// The same rotation with its tables given: cos and sin (T, D/2) of each of
// x's positions and frequencies, in x's statistics dtype (float32, or
// float64 for float64) on x's device. A model computes them once and keeps
// them (nn::rope_tables), with whatever frequency scaling it uses.
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);

// Which keys each query sees, and what is added to its scores. Every mask is
// aligned BOTTOM-RIGHT when there are fewer queries than keys (decoding with a
// KV cache): query i stands at key position i + Tk - Tq. PyTorch's
// is_causal=True is top-left (query i sees keys j <= i) and differs whenever
// Tq < Tk; for its behaviour, pass a bias of -inf above the top-left diagonal
// instead. A query that sees no key gets a row of zeros (and a logsumexp of -inf).
struct AttentionOptions {
  bool causal = false;          // key j seen by query i when j <= i + Tk - Tq
  std::optional<double> scale;  // default 1 / sqrt(head_dim)
  // Prefix-LM (UniLM, GLM, T5's prefix LM), with causal: batch b's first
  // prefix_lengths[b] keys are seen by every query, the rest causally.
  // (B) int32/int64, on any device.
  Tensor prefix_lengths;
  // Key padding: batch b's keys from key_lengths[b] on are never seen. (B) int32/int64.
  Tensor key_lengths;
  // Any mask: bool, broadcastable to (B, Hq, Tq, Tk), true where the query
  // sees the key (PyTorch's boolean attn_mask); it narrows the masks above.
  // An additive mask is a bias of 0 and -inf.
  Tensor mask;
  // Added to the scaled scores, broadcastable to (B, Hq, Tq, Tk), in the
  // query's dtype: T5's relative position bias. It receives a gradient.
  Tensor bias;
  // ALiBi (Press et al. 2022; BLOOM): (Hq) float32 slopes, one per query
  // head; the scaled score of query i and key j gains slope (j - i - (Tk -
  // Tq)), the key's distance behind the query aligned bottom-right as the
  // causal mask (BLOOM's slope j differs by a constant per query, which
  // softmax ignores). The fused kernels compute it per score, never the
  // (Tq, Tk) bias; no gradient.
  Tensor alibi_slopes;
};
// The attention's output and its rows' logsumexp (scaled_dot_product_attention_with_lse).
struct AttentionOutput {
  Tensor out;  // (B, Hq, Tq, D)
  Tensor lse;  // (B, Hq, Tq) float32 logsumexp of each row of scaled scores
};
// q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D) with Hq a multiple of Hkv (grouped
// queries); masks and bias as AttentionOptions says. The fused kernels take
// causal, prefix-LM or bidirectional attention and ALiBi (cuDNN's backend
// leaves the prefix-LM mask and ALiBi to kiln's kernels); key lengths, a mask
// or a bias run on the composed path.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});
// Attention over a packed batch of sequences of different lengths (packed
// fine-tuning data), FlashAttention's varlen layout: q (total_q, Hq, D), k and v
// (total_k, Hkv, D); sequence b holds query rows cu_seqlens_q[b] ..
// cu_seqlens_q[b + 1] and key rows cu_seqlens_k[b] .. cu_seqlens_k[b + 1]
// (int32 or int64 offsets of length B + 1, starting at 0, on any device); the
// causal mask is bottom-right within each sequence. Returns (total_q, Hq, D).
// The fused kernels take every sequence in one launch (as FlashAttention's
// varlen kernels); the composed path runs a call per sequence. The offsets
// are read on the host to be checked: given there (as a data loader has
// them), nothing is read back from the GPU and the call need not wait for it.
Tensor scaled_dot_product_attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens_q, const Tensor& cu_seqlens_k,
                                           const AttentionOptions& options = {});
// The attention (padded batch) with each row's logsumexp, as ring and
// split-KV schemes combine partial results.
AttentionOutput scaled_dot_product_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v,
                                                      const AttentionOptions& options = {});

// --- mixture of experts ---------------------------------------------------------
// The k largest entries along the last dim, largest first (of equal values,
// the lower index first): values (..., k), which carry the gradient, and
// their int64 indices.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k);

// Where N tokens' k choices of experts go (choice c = t k + j is token t's
// j-th): R rows in the experts' order, one per choice kept. nn::route builds it.
struct MoePermutation {
  Tensor row_choice;  // (R) int64: the choice each row holds
  Tensor slot;        // (N, k) int64: the row of each choice, -1 where it was dropped
};
// The experts' rows (R, C) from the tokens x (N, C): row r is token row_choice[r] / k.
Tensor moe_permute(const Tensor& x, const MoePermutation& p);
// Back to the tokens, (N, C): token t is the sum over its kept choices j of
// gates[t, j] * rows[slot[t, j]] (zero when all were dropped). gates (N, k)
// are float32 (float64 beside float64 rows); both rows and gates get gradients.
Tensor moe_unpermute(const Tensor& rows, const Tensor& gates, const MoePermutation& p);
// The experts' GEMM: x (R, in) holds consecutive groups of group_rows[e] rows
// (summing to R), and group e goes through weight[e] (groups, out, in):
// (R, out) with rows x_e weight[e]^T. One GEMM per group with rows.
Tensor grouped_linear(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& group_rows);

// --- mixed precision -----------------------------------------------------------------
// param.to(dtype), differentiable, with the cast kept beside the parameter (a
// leaf) and redone only after the parameter changes: a float32 master weight
// is cast once per optimizer step, not once per forward. The fused optimizer
// updates write the copy in the same pass as the weight, so it is never
// redone at all. Non-leaf tensors are simply cast.
Tensor cast_cached(const Tensor& param, DType dtype);

// --- fused optimizer updates (in place, not recorded) -----------------------------
// p, m, v: contiguous float32 or float64 master weights and state; g: a gradient
// of p's shape in any floating dtype. One pass over memory (kernel_api.inc has
// the update rules), which also refreshes p's cast_cached copy when it has one.
void adamw_update_(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& step);
void lion_update_(Tensor& p, const Tensor& g, Tensor& m, const LionStep& step);
// The same updates of many tensors at once (one launch on CUDA): lists of one
// length, every parameter of one dtype and device, every gradient of one dtype.
void adamw_update_(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                   const std::vector<Tensor>& v, const AdamWStep& step);
// (Lion's, of many tensors.)
void lion_update_(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                  const LionStep& step);

// --- operators ---------------------------------------------------------------------
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, Scalar b);
Tensor operator-(const Tensor& a, Scalar b);
Tensor operator*(const Tensor& a, Scalar b);
Tensor operator/(const Tensor& a, Scalar b);
Tensor operator+(Scalar a, const Tensor& b);
Tensor operator-(Scalar a, const Tensor& b);
Tensor operator*(Scalar a, const Tensor& b);
Tensor operator/(Scalar a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator==(const Tensor& a, const Tensor& b);
Tensor operator!=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator==(const Tensor& a, Scalar b);
Tensor operator<(const Tensor& a, Scalar b);
Tensor operator>(const Tensor& a, Scalar b);
Tensor operator>=(const Tensor& a, Scalar b);
Tensor operator<=(const Tensor& a, Scalar b);
Tensor operator!=(const Tensor& a, Scalar b);

// True when a and b have one shape and all elements are within atol + rtol * |b|.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

template <typename T>
Tensor tensor(const std::vector<T>& values, TensorOptions options) {
  Tensor host = from_blob(const_cast<T*>(values.data()), {static_cast<int64_t>(values.size())},
                          TensorOptions(dtype_of<T>()));
  return host.to(options.device_, options.dtype_).clone().requires_grad_(options.requires_grad_);
}

}  // namespace kiln
