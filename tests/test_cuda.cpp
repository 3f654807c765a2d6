// CUDA ops against their CPU twins. Label `gpu`: skipped without a device.

#include "helpers.h"

using namespace kiln;
using kt::values;

TEST_CASE("fill and host<->device copies round-trip every dtype") {
  Device gpu(kCUDA, 0);
  for (DType dt : {kFloat32, kFloat64, kBFloat16, kFloat16, kInt32, kInt64, kBool}) {
    INFO(dtype_name(dt));
    Tensor d = full({3, 5, 7}, 1.5, TensorOptions(dt).device(gpu));
    CHECK(d.device() == gpu);
    CHECK(values(d.to(kCPU)) == values(full({3, 5, 7}, 1.5, dt)));
    Generator gen(1);
    Tensor host = randn({257}, gen).to(dt);
    CHECK(values(host.to(gpu).to(kCPU)) == values(host));
  }
}

TEST_CASE("fill through a strided view writes only the view") {
  Device gpu(kCUDA, 0);
  Tensor d = zeros({4, 6}, gpu);
  d.slice(1, 1, 6, 2).fill_(3);
  Tensor ref = zeros({4, 6});
  ref.slice(1, 1, 6, 2).fill_(3);
  CHECK(values(d.to(kCPU)) == values(ref));
}
