// The CUDA entry points of a build without CUDA: each raises "built without CUDA"
// (compiled only when KILN_WITH_CUDA is off).

#include "kiln/base/error.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {
[[noreturn]] void missing(const char* op) {
  KILN_FAIL("[{}] kiln was built without CUDA (configure with -DKILN_CUDA=ON on a machine with nvcc)", op);
}
}  // namespace

bool is_available() { return false; }
int device_count() { return 0; }
DeviceScope::DeviceScope(int) {}
DeviceScope::~DeviceScope() = default;
void* allocate(size_t, int, void*) { missing("cuda allocate"); }
void deallocate(void*, int, void*) {}
void* allocate_host(size_t) { missing("pinned allocate"); }
void deallocate_host(void*) {}
void memcpy(void*, Device, const void*, Device, size_t, bool) { missing("copy to or from a CUDA device"); }
void* default_stream() { missing("cuda stream"); }
void* pool_stream(int, bool) { missing("cuda stream"); }
void* get_current_stream(int) { missing("cuda current_stream"); }
void set_current_stream(int, void*) { missing("cuda set_current_stream"); }
void stream_synchronize(int, void*) { missing("cuda stream synchronize"); }
bool stream_query(int, void*) { missing("cuda stream query"); }
void stream_wait_streams(int, void*, const std::vector<void*>&) { missing("cuda stream wait"); }
void stream_wait_stream(int, void*, int, void*) { missing("cuda stream wait"); }
void* stream_for_other_thread(void* stream) { return stream; }
void* event_create(int, bool) { missing("cuda event"); }
void event_destroy(void*) {}
void event_record(int, void*, void*) { missing("cuda event record"); }
void stream_wait_event(int, void*, void*) { missing("cuda stream wait"); }
void event_synchronize(void*) { missing("cuda event synchronize"); }
bool event_query(void*) { missing("cuda event query"); }
float event_elapsed_ms(void*, void*) { missing("cuda event elapsed_ms"); }
void synchronize(int) { missing("cuda synchronize"); }
void memory_stats(int, uint64_t*) { missing("cuda memory_stats"); }
void reset_peak_memory(int) { missing("cuda reset_peak_memory"); }
void fill(const Buffer&, double) { missing("fill"); }

void arange(const Buffer&, double, double) { missing("arange"); }
void copy(const Buffer&, const Buffer&) { missing("copy"); }
void uniform(const Buffer&, uint64_t, uint64_t, double, double) { missing("rand"); }
void normal(const Buffer&, uint64_t, uint64_t, double, double) { missing("randn"); }
void randint(const Buffer&, uint64_t, uint64_t, int64_t, int64_t) { missing("randint"); }
void unary(UnaryOp, const Buffer&, const Buffer&, double, double) { missing("unary"); }
void binary(BinaryOp, const Buffer&, const Buffer&, const Buffer&) { missing("binary"); }
void where(const Buffer&, const Buffer&, const Buffer&, const Buffer&) { missing("where"); }
void swiglu(const Buffer&, const Buffer&, const Buffer&) { missing("swiglu"); }
void swiglu_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&) {
  missing("swiglu_backward");
}
void squared_norms(const Buffer&, const std::vector<Buffer>&) { missing("squared_norms"); }
void reduce(ReduceOp, const Buffer&, const Buffer&, uint32_t, int64_t) { missing("reduce"); }
void matmul(const Buffer&, const Buffer&, const Buffer&, const GemmOptions&) { missing("matmul"); }
void grouped_matmul(const std::vector<Buffer>&, const std::vector<Buffer>&, const std::vector<Buffer>&,
                    const GemmOptions&, bool) {
  missing("grouped_matmul");
}
void softmax(const Buffer&, const Buffer&, bool, int64_t) { missing("softmax"); }
void softmax_backward(const Buffer&, const Buffer&, const Buffer&, bool) { missing("softmax_backward"); }
void cumsum(const Buffer&, const Buffer&, bool) { missing("cumsum"); }
void argsort(const Buffer&, const Buffer&, bool) { missing("sort"); }
void layer_norm(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                const Buffer&, double) {
  missing("layer_norm");
}
void layer_norm_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                         const Buffer&, const Buffer&) {
  missing("layer_norm_backward");
}
void rms_norm(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, double) {
  missing("rms_norm");
}
void rms_norm_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&) {
  missing("rms_norm_backward");
}
void cross_entropy(const Buffer&, const Buffer&, const Buffer&, const Buffer&, int64_t, double) {
  missing("cross_entropy");
}
void cross_entropy_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, int64_t,
                            double) {
  missing("cross_entropy_backward");
}
void rope(const Buffer&, const Buffer&, const Buffer&, const Buffer&, bool) { missing("rope"); }
void attention(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const AttentionGeometry&,
               double) {
  missing("attention");
}
void attention_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                        const Buffer&, const Buffer&, const Buffer&, const AttentionGeometry&, double) {
  missing("attention_backward");
}
void index_select(const Buffer&, const Buffer&, int, const Buffer&) { missing("index_select"); }
void index_add(const Buffer&, int, const Buffer&, const Buffer&) { missing("index_add"); }
void gather(const Buffer&, const Buffer&, int, const Buffer&) { missing("gather"); }
void scatter_add(const Buffer&, int, const Buffer&, const Buffer&) { missing("scatter_add"); }
void scatter(const Buffer&, int, const Buffer&, const Buffer&) { missing("scatter"); }
void moe_gather(const Buffer&, const Buffer&, const Buffer&, const Buffer&, int64_t) { missing("moe_gather"); }
void moe_combine(const Buffer&, const Buffer&, const Buffer&, const Buffer&) { missing("moe_combine"); }
void moe_combine_weights_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&) {
  missing("moe_combine_weights_backward");
}

void adamw_update(const std::vector<Buffer>&, const std::vector<Buffer>&, const std::vector<Buffer>&,
                  const std::vector<Buffer>&, const std::vector<Buffer>&, const AdamWStep&) {
  missing("adamw_update");
}
void lion_update(const std::vector<Buffer>&, const std::vector<Buffer>&, const std::vector<Buffer>&,
                 const std::vector<Buffer>&, const LionStep&) {
  missing("lion_update");
}

}  // namespace kiln::kernels::cuda
