#pragma once
// AttentionGeometry: where the rows of a fused attention call lie and which
// keys each query sees. Shared by the CPU and CUDA attention kernels.
//
// Two layouts, one indexing. A padded batch: q, out (B, Hq, Tq, D), k, v
// (B, Hkv, Tk, D), lse (B, Hq, Tq). Packed sequences (FlashAttention's varlen
// layout, cu_q and cu_k set): q, out (total_q, Hq, D), k, v (total_k, Hkv, D),
// lse (total_q, Hq), sequence b owning query rows cu_q[b] .. cu_q[b + 1] and
// key rows cu_k[b] .. cu_k[b + 1]. Either way row r of a tensor starts at
// element r * D and its statistics (lse, rowsum(dO * O)) sit at index r; query
// i of (sequence b, head h) is row base + i * step.

#include <cstdint>

#include "kiln/base/macros.h"

namespace kiln {

// One sequence and head: its query and key rows, and the causal mask.
struct AttentionSequence {
  int64_t q_base, q_step, Tq;  // query i is row q_base + i * q_step
  int64_t k_base, k_step, Tk;  // key j is row k_base + j * k_step
  bool causal;         // query i sees keys j <= i + Tk - Tq only
  int64_t prefix = 0;  // causal only: every query also sees keys j < prefix (a prefix LM)
  float slope = 0;     // ALiBi: the score of query i and key j gains slope (j - i - (Tk - Tq))

  // ALiBi's term of the (scaled) score of query i and key j: the key's
  // distance behind the query, aligned bottom-right as the causal mask.
  KILN_HOST_DEVICE float bias(int64_t i, int64_t j) const {
    return slope == 0 ? 0.f : slope * static_cast<float>(j - i - (Tk - Tq));
  }

  // The rows of query i and key j.
  KILN_HOST_DEVICE int64_t query(int64_t i) const { return q_base + i * q_step; }
  KILN_HOST_DEVICE int64_t key(int64_t j) const { return k_base + j * k_step; }
  // The last key query i sees (-1: none). Causal is aligned bottom-right: query
  // i sees keys j <= i + Tk - Tq, and the prefix's. Never falls as i grows.
  KILN_HOST_DEVICE int64_t last_key(int64_t i) const {
    int64_t last = Tk - 1;
    if (causal) {
      last = i + Tk - Tq;
      if (last < prefix - 1) last = prefix - 1;
    }
    return last < Tk - 1 ? last : Tk - 1;
  }
  // The last key any of queries first .. first + n - 1 sees (-1: none is a query).
  KILN_HOST_DEVICE int64_t last_key_of(int64_t first, int64_t n) const {
    if (first >= Tq) return -1;
    return last_key(first + n - 1 < Tq - 1 ? first + n - 1 : Tq - 1);
  }
  // The first query that sees key j (its inverse: every query for a prefix
  // key, else i >= j - (Tk - Tq) when causal). Never falls as j grows.
  KILN_HOST_DEVICE int64_t first_query(int64_t j) const {
    const int64_t first = causal && j >= prefix ? j - (Tk - Tq) : 0;
    return first > 0 ? first : 0;
  }
};

// A whole attention call: its sizes, layout and masks, from which each
// (sequence, head) pair's AttentionSequence follows.
struct AttentionGeometry {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, head_dim = 0;  // B, Hq, Hkv, D
  int64_t Tq = 0, Tk = 0;  // the padded lengths; packed, the longest sequence's
  // Packed sequences' row offsets (batch + 1 each, in the memory of the op's
  // device); null for a padded batch.
  const int64_t* cu_q = nullptr;
  const int64_t* cu_k = nullptr;
  bool causal = false;  // every sequence's mask (AttentionSequence::causal)
  // Causal only: per sequence (batch), in the memory of the op's device, the
  // keys j < prefix[b] every query sees besides its causal ones (a prefix LM,
  // GLM's part A); null for none. Padded batches only.
  const int64_t* prefix = nullptr;
  // ALiBi (BLOOM): per query head, in the memory of the op's device, the
  // slope of the linear bias on its scores (AttentionSequence::bias); null for none.
  const float* slopes = nullptr;

  KILN_HOST_DEVICE int64_t group() const { return heads_q / heads_kv; }  // query heads per kv head
  // Query head h of sequence b (its kv head is h / group()).
  KILN_HOST_DEVICE AttentionSequence sequence(int64_t b, int64_t h) const {
    const int64_t hk = h / group();
    const float slope = slopes ? slopes[h] : 0.f;
    if (cu_q)
      return {cu_q[b] * heads_q + h, heads_q, cu_q[b + 1] - cu_q[b],
              cu_k[b] * heads_kv + hk, heads_kv, cu_k[b + 1] - cu_k[b], causal, 0, slope};
    return {(b * heads_q + h) * Tq, 1, Tq, (b * heads_kv + hk) * Tk, 1, Tk, causal, prefix ? prefix[b] : 0, slope};
  }
};

}  // namespace kiln
