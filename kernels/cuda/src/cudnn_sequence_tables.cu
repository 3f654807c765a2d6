// Packed sequences' int32 tables for cuDNN's attention graphs (cudnn_sequence_tables.h).

#include "common.cuh"
#include "cudnn_sequence_tables.h"

namespace kiln::kernels::cuda::cudnn {

namespace {

// Entries per table, rounded up to 16 bytes.
size_t table_entries(int64_t batch) { return (static_cast<size_t>(batch) + 1 + 3) / 4 * 4; }

__global__ void fill_sequence_tables(SequenceTables t, const int64_t* cu_q, const int64_t* cu_k, int64_t sequences,
                                     int64_t batch, int64_t q_row, int64_t k_row, int64_t stats_row) {
  KILN_GRID_STRIDE(b, batch + 1) {
    const int64_t s = b < sequences ? b : sequences;  // past the last sequence: empty ones at the end
    t.start_q[b] = static_cast<int32_t>(cu_q[s] * q_row);
    t.start_k[b] = static_cast<int32_t>(cu_k[s] * k_row);
    t.start_stats[b] = static_cast<int32_t>(cu_q[s] * stats_row);
    if (b < batch) {
      t.length_q[b] = b < sequences ? static_cast<int32_t>(cu_q[b + 1] - cu_q[b]) : 0;
      t.length_k[b] = b < sequences ? static_cast<int32_t>(cu_k[b + 1] - cu_k[b]) : 0;
    }
  }
}

}  // namespace

size_t sequence_tables_bytes(int64_t batch) { return 5 * table_entries(batch) * sizeof(int32_t); }

SequenceTables sequence_tables(void* memory, const int64_t* cu_q, const int64_t* cu_k, int64_t sequences,
                               int64_t batch, int64_t q_row, int64_t k_row, int64_t stats_row) {
  const size_t n = table_entries(batch);
  int32_t* base = static_cast<int32_t*>(memory);
  const SequenceTables t{base, base + n, base + 2 * n, base + 3 * n, base + 4 * n};
  launch("fill_sequence_tables", fill_sequence_tables, blocks_for(batch + 1), kThreads, 0, t, cu_q, cu_k, sequences,
         batch, q_row, k_row, stats_row);
  return t;
}

}  // namespace kiln::kernels::cuda::cudnn
