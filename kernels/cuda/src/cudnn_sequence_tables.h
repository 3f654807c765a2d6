#pragma once
// Packed sequences as cuDNN's attention graphs read them (cudnn_attention.h):
// int32 tables in device memory, built on the current stream from kiln's int64 row
// offsets (AttentionGeometry::cu_q, cu_k), so no offset visits the host.

#include <cstddef>
#include <cstdint>

namespace kiln::kernels::cuda::cudnn {

struct SequenceTables {
  int32_t* length_q;     // (B) each sequence's queries
  int32_t* length_k;     // (B) and keys
  int32_t* start_q;      // (B + 1) each sequence's first element in q, out and their gradients
  int32_t* start_k;      // (B + 1) in k, v and their gradients
  int32_t* start_stats;  // (B + 1) in lse
};

// The bytes sequence_tables needs for `batch` entries (each table 16-byte aligned).
size_t sequence_tables_bytes(int64_t batch);

// Lays the tables out in `memory` (16-byte aligned) and fills them on the
// current stream for `sequences` sequences, then empty ones up to `batch`
// entries (batch >= sequences). A query row holds q_row elements (Hq * D), a
// key row k_row (Hkv * D), a statistics row stats_row (Hq). Every start must
// fit in int32 (the caller checks).
SequenceTables sequence_tables(void* memory, const int64_t* cu_q, const int64_t* cu_k, int64_t sequences,
                               int64_t batch, int64_t q_row, int64_t k_row, int64_t stats_row);

}  // namespace kiln::kernels::cuda::cudnn
