// Tensor basics: dtypes, factories, views sharing storage, conversions,
// from_blob, the host cache, item, printing and the Philox generator.

#include <cstring>

#include "helpers.h"

using namespace kiln;
using kt::values;

TEST_CASE("dtype sizes and names") {
  CHECK(element_size(kBool) == 1);
  CHECK(element_size(kBFloat16) == 2);
  CHECK(element_size(kFloat16) == 2);
  CHECK(element_size(kInt32) == 4);
  CHECK(element_size(kFloat64) == 8);
  CHECK(dtype_name(kBFloat16) == "bfloat16");
  CHECK(Device("cuda:3") == Device(kCUDA, 3));
  CHECK(Device("cpu") == kCPU);
  CHECK_THROWS_WITH(Device("tpu"), Catch::Contains("unknown device 'tpu'"));
  CHECK_THROWS_WITH(Device("cuda:x"), Catch::Contains("unknown device"));
}

TEST_CASE("factories fill, count and keep options") {
  Tensor z = zeros({2, 3});
  CHECK(z.sizes() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.dtype() == kFloat32);
  CHECK(values(z) == std::vector<double>(6, 0.0));
  CHECK(values(ones({4}, kInt32)) == std::vector<double>(4, 1.0));
  CHECK(values(full({2}, 2.5, kFloat64)) == std::vector<double>{2.5, 2.5});
  CHECK(values(arange(5)) == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(arange(5).dtype() == kInt64);
  CHECK(values(arange(1.0, 2.0, 0.25)) == std::vector<double>{1.0, 1.25, 1.5, 1.75});
  CHECK(arange(1.0, 2.0, 0.25).dtype() == kFloat32);
  CHECK(values(arange(5, 0, -2)) == std::vector<double>{5, 3, 1});
  CHECK(zeros({0, 3}).numel() == 0);
  CHECK(ones({2}, TensorOptions(kFloat64).requires_grad()).requires_grad());
  Tensor s = scalar_tensor(3.5);
  CHECK(s.dim() == 0);
  CHECK(s.item<double>() == 3.5);
}

TEST_CASE("views share storage and compute strides") {
  Tensor t = arange(24, kFloat32).view({2, 3, 4});
  SECTION("transpose and permute") {
    Tensor u = t.transpose(0, 2);
    CHECK(u.sizes() == Shape{4, 3, 2});
    CHECK(u.strides() == Shape{1, 4, 12});
    CHECK(!u.is_contiguous());
    CHECK(u.storage() == t.storage());
    CHECK(u[3][2][1].item<float>() == 1 * 12 + 2 * 4 + 3);
    Tensor p = t.permute({1, 2, 0});
    CHECK(p.sizes() == Shape{3, 4, 2});
    CHECK(p[1][2][1].item<float>() == 12 + 4 + 2);
  }
  SECTION("writes through a view are seen by the base") {
    Tensor row = t.select(1, 2);  // (2, 4)
    row.fill_(-1);
    CHECK(t[0][2][0].item<float>() == -1);
    CHECK(t[1][2][3].item<float>() == -1);
    CHECK(t[1][1][3].item<float>() == 1 * 12 + 1 * 4 + 3);
  }
  SECTION("slice with step, narrow, negative indices") {
    Tensor s = t.slice(2, 1, 4, 2);  // elements 1 and 3 of the last dim
    CHECK(s.sizes() == Shape{2, 3, 2});
    CHECK(values(s[0][0]) == std::vector<double>{1, 3});
    CHECK(s.storage_offset() == 1);
    CHECK(values(t.narrow(1, 1, 2)[1][1]) == std::vector<double>{20, 21, 22, 23});
    CHECK(t.select(-1, -1)[1][2].item<float>() == 23);
    CHECK(t.slice(0, -1, 2).size(0) == 1);
  }
  SECTION("expand has zero strides; squeeze and unsqueeze") {
    Tensor c = arange(3, kFloat32).view({3, 1});
    Tensor e = c.expand({2, 3, 4});
    CHECK(e.strides() == Shape{0, 1, 0});
    CHECK(e[1][2][3].item<float>() == 2);
    CHECK(c.unsqueeze(0).sizes() == Shape{1, 3, 1});
    CHECK(c.squeeze().sizes() == Shape{3});
    CHECK(c.squeeze(0).sizes() == Shape{3, 1});
    CHECK(c.unsqueeze(-1).sizes() == Shape{3, 1, 1});
  }
  SECTION("reshape views when it can and copies when it must") {
    Tensor r = t.reshape({6, 4});
    CHECK(r.storage() == t.storage());
    Tensor tt = t.transpose(1, 2);
    Tensor r2 = tt.reshape({2, 12});
    CHECK(r2.storage() != t.storage());
    CHECK(values(r2) == values(tt.contiguous()));
    CHECK_THROWS_WITH(tt.view({2, 12}), Catch::Contains("use reshape()"));
    CHECK(t.reshape({-1, 4}).sizes() == Shape{6, 4});
    CHECK(t.flatten(1).sizes() == Shape{2, 12});
    CHECK(t.flatten().sizes() == Shape{24});
    // a view of a transposed tensor that keeps the runs contiguous
    Tensor v = t.permute({1, 0, 2}).view({3, 2, 2, 2});
    CHECK(v.storage() == t.storage());
    CHECK(v[2][1][1][0].item<float>() == t[1][2][2].item<float>());
  }
  SECTION("contiguous copies only when needed") {
    CHECK(t.contiguous().is_same(t));
    Tensor c = t.transpose(0, 1).contiguous();
    CHECK(c.is_contiguous());
    CHECK(c.storage() != t.storage());
    CHECK(c[2][1][3].item<float>() == t[1][2][3].item<float>());
  }
  SECTION("movedim") {
    Tensor m = t.movedim(0, 2);
    CHECK(m.sizes() == Shape{3, 4, 2});
    CHECK(m[2][3][1].item<float>() == t[1][2][3].item<float>());
  }
}

TEST_CASE("dtype conversion rounds as PyTorch") {
  Tensor x = tensor({1.0, -2.5, 3.14159265, 1e-8, 65504.0, 70000.0, 0.1});
  std::vector<double> h = values(x.to(kFloat16));
  // float16: 3.140625 is the nearest, 1e-8 underflows to 0 (below 2^-24 / 2), 70000 overflows
  CHECK(h[0] == 1.0);
  CHECK(h[1] == -2.5);
  CHECK(h[2] == 3.140625);
  CHECK(h[3] == 0.0);
  CHECK(h[4] == 65504.0);
  CHECK(std::isinf(h[5]));
  CHECK(h[6] == Approx(0.0999755859375).margin(0));
  std::vector<double> b = values(x.to(kBFloat16));
  CHECK(b[2] == 3.140625);
  CHECK(b[6] == 0.10009765625);
  CHECK(b[5] == 70144.0);
  // float16 subnormals round to nearest even
  CHECK(values(tensor({6.0e-8, 3.0e-5}).to(kFloat16)) ==
        std::vector<double>{5.9604644775390625e-08, 2.9981136322021484e-05});
  std::vector<double> i = values(tensor({2.7, -2.7}).to(kInt32));
  CHECK(i == std::vector<double>{2, -2});
  CHECK(values(tensor({0.0, 0.5}).to(kBool)) == std::vector<double>{0, 1});
  CHECK(x.to(kFloat64).dtype() == kFloat64);
  CHECK(x.to(kFloat32).is_same(x));
}

TEST_CASE("float16 conversion matches a bit-exact reference on every half value") {
  // Every finite half converts to float and back unchanged.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    Half h;
    h.bits = static_cast<uint16_t>(bits);
    float f = h;
    if (std::isnan(f)) continue;
    REQUIRE(Half(f).bits == h.bits);
  }
  // Halfway cases between neighbours round to even.
  Half one(1.0f);
  float next = std::nextafter(1.0f + 1.0f / 2048, 2.0f);  // just above the halfway point
  CHECK(Half(1.0f + 1.0f / 2048).bits == one.bits);      // exact tie: even (1.0)
  CHECK(Half(next).bits == one.bits + 1);
}

TEST_CASE("from_blob wraps caller memory without copying") {
  std::vector<float> data = {1, 2, 3, 4, 5, 6};
  bool freed = false;
  {
    Tensor t = from_blob(data.data(), {2, 3}, kFloat32, [&](void*) { freed = true; });
    CHECK(t.data_ptr() == data.data());
    t[1][2].fill_(60);
    CHECK(data[5] == 60);
    Tensor col = from_blob(data.data(), {3}, {2}, kFloat32);
    CHECK(values(col) == std::vector<double>{1, 3, 5});
  }
  CHECK(freed);
}

TEST_CASE("the host cache reuses large blocks within its bound and gives them back") {
  const bool cache_on = host_cache_enabled();  // not under AddressSanitizer, which must see every free
  constexpr uint64_t kMiB = 1 << 20;
  empty_host_cache();
  REQUIRE(host_cache_bytes() == 0);
  const void* first = nullptr;
  {
    Tensor a = full({512, 512}, 3.0);  // 1 MiB
    first = a.data_ptr();
  }
  CHECK(host_cache_bytes() == (cache_on ? kMiB : 0));
  {
    Tensor b = zeros({500, 512});  // within 1/8 of the cached block: takes it, and is still zeros
    CHECK((b.data_ptr() == first) == cache_on);
    CHECK(host_cache_bytes() == 0);
    CHECK(sum(b).item<double>() == 0);
    Tensor c = zeros({400, 512});  // more than 1/8 smaller than any cached block: a block of its own
    CHECK(c.data_ptr() != first);
  }
  CHECK(host_cache_bytes() == (cache_on ? kMiB + 800 * 1024 : 0));  // c was freed first, then b
  { Tensor small = ones({1000}); }  // below 256 KiB: never cached
  CHECK(host_cache_bytes() == (cache_on ? kMiB + 800 * 1024 : 0));
  set_host_cache_limit(kMiB);  // frees the longest unused first: c's block
  CHECK(host_cache_bytes() == (cache_on ? kMiB : 0));
  { Tensor big = ones({1024, 1024}); }  // 4 MiB: over the bound alone, freed
  CHECK(host_cache_bytes() == (cache_on ? kMiB : 0));
  set_host_cache_limit(2 * kMiB);
  { Tensor d = ones({384, 1024}); }  // 1.5 MiB more would pass the bound: b's older block is freed for it
  CHECK(host_cache_bytes() == (cache_on ? 3 * kMiB / 2 : 0));
  empty_host_cache();
  CHECK(host_cache_bytes() == 0);
  set_host_cache_limit(uint64_t{1} << 30);
}

TEST_CASE("item reads one element of any dtype") {
  CHECK(tensor({7.25}).item<double>() == 7.25);
  CHECK(full({1, 1}, 3, kInt64).item<int64_t>() == 3);
  CHECK(full({}, true, kBool).item<bool>());
  CHECK(full({}, 1.5, kBFloat16).item<float>() == 1.5f);
  CHECK_THROWS_WITH(zeros({2}).item(), Catch::Contains("one element"));
}

TEST_CASE("printing follows PyTorch") {
  CHECK(tensor({1.0, 2.5, -3.0}, kFloat32).str() == "tensor([ 1.0000,  2.5000, -3.0000])");
  CHECK(arange(6).view({2, 3}).str() == "tensor([[0, 1, 2],\n        [3, 4, 5]])");
  CHECK(tensor({1.0, 2.0}, kFloat64).str() == "tensor([1., 2.], dtype=float64)");
  CHECK(full({}, true, kBool).str() == "tensor(True)");
  CHECK(zeros({0, 3}).str() == "tensor([], size=[0, 3])");
  CHECK(ones({2}).requires_grad_().str() == "tensor([1., 1.], requires_grad=True)");
  CHECK(tensor({1e-6, 1.0}, kFloat32).str() == "tensor([1.0000e-06, 1.0000e+00])");
  Tensor big = arange(2000, kFloat32).view({2, 1000});
  CHECK(big.str().find("...") != std::string::npos);
  CHECK(big.str().find("1999.") != std::string::npos);
  Tensor x = ones({2}).requires_grad_();
  CHECK((x * 2).str() == "tensor([2., 2.], grad_fn=<mulBackward>)");
}

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  using philox::Block;
  auto check = [](Block ctr, uint32_t k0, uint32_t k1, Block expected) {
    Block got = philox::philox4x32_10(ctr, k0, k1);
    for (int i = 0; i < 4; ++i) CHECK(got.v[i] == expected.v[i]);
  };
  check({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  check({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
        {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  check({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
        {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST_CASE("random draws follow kiln's Philox layout") {
  Generator g(42);
  Tensor a = rand({10}, g);
  CHECK(g.offset() == 3);  // ceil(10 / 4) blocks
  for (int64_t i = 0; i < 10; ++i)
    CHECK(a[i].item<float>() == philox::uniform(42, 0, static_cast<uint64_t>(i)));
  // The same seed and offset replay; a split of the tensor draws the same numbers.
  Generator g2(42);
  CHECK(values(rand({10}, g2)) == values(a));
  Generator g3(42);
  g3.set_offset(1);
  Tensor tail = rand({6}, g3);
  CHECK(values(tail) == values(a.narrow(0, 4, 6)));
  SECTION("normal moments") {
    Generator gn(7);
    Tensor n = randn({200000}, gn, kFloat64);
    CHECK(mean(n).item<double>() == Approx(0.0).margin(0.01));
    CHECK(var(n, {}).item<double>() == Approx(1.0).margin(0.02));
  }
  SECTION("uniform and randint ranges") {
    Generator gu(3);
    std::vector<double> u = values(rand({10000}, gu));
    CHECK(*std::min_element(u.begin(), u.end()) >= 0.0);
    CHECK(*std::max_element(u.begin(), u.end()) < 1.0);
    std::vector<double> r = values(randint(-3, 4, {10000}, gu));
    CHECK(*std::min_element(r.begin(), r.end()) == -3);
    CHECK(*std::max_element(r.begin(), r.end()) == 3);
  }
}

TEST_CASE("index and index_put_ as libtorch writes them") {
  using namespace kiln::indexing;
  Tensor x = arange(24, kFloat64).view({2, 3, 4});
  CHECK(values(x.index({1})) == values(x[1]));
  CHECK(values(x.index({Ellipsis, -1})) == values(x.select(2, 3)));
  CHECK(values(x.index({Slice(), Slice(None, None, 2), 1})) == std::vector<double>{1, 9, 13, 21});
  CHECK(values(x.index({0, Slice(1, None), Slice(-2, None)})) == std::vector<double>{6, 7, 10, 11});
  CHECK(x.index({None, Ellipsis, None}).sizes() == Shape{1, 2, 3, 4, 1});
  CHECK(x.index({1, None, 2}).sizes() == Shape{1, 4});
  CHECK(x.index({0}).storage() == x.storage());  // a view
  Tensor picked = x.index({Slice(), tensor(std::vector<int64_t>{2, 0})});
  CHECK(picked.sizes() == Shape{2, 2, 4});
  CHECK(values(picked[1][0]) == values(x[1][2]));
  CHECK_THROWS_WITH(x.index({0, 0, 0, 0}), Catch::Contains("[index] 4 indices for a tensor of 3 dims"));
  CHECK_THROWS_WITH(x.index({Ellipsis, Ellipsis}), Catch::Contains("at most one Ellipsis"));
  CHECK_THROWS_WITH(x.index({5}), Catch::Contains("index 5 is out of range for dim 0 of size 2"));
  CHECK_THROWS_WITH(x.index({x > 3.0}), Catch::Contains("index_put_ takes one as its last index"));

  Tensor y = zeros({3, 4}, kFloat64);
  y.index_put_({Slice(1, None), 0}, 7.0);
  y.index_put_({0}, arange(4, kFloat64));
  CHECK(values(y) == std::vector<double>{0, 1, 2, 3, 7, 0, 0, 0, 7, 0, 0, 0});
  y.index_put_({y > 2.0}, -1.0);  // a mask over every dim
  CHECK(values(y) == std::vector<double>{0, 1, 2, -1, -1, 0, 0, 0, -1, 0, 0, 0});
  y.index_put_({Slice(), tensor(std::vector<double>{1, 0, 1, 0}) > 0.5}, ones({3, 4}, kFloat64) * 5.0);
  CHECK(values(y) == std::vector<double>{5, 1, 5, -1, 5, 0, 5, 0, 5, 0, 5, 0});
  CHECK_THROWS_WITH(y.index_put_({ones({2}, kBool)}, 0.0), Catch::Contains("must match the trailing dims"));
  // Integer positions along a dim, as the last index.
  Tensor cols = tensor(std::vector<int64_t>{3, 1});
  y.index_put_({Slice(), cols}, tensor(std::vector<double>{8, 9}));  // y[:, [3, 1]] = [8, 9], broadcast
  CHECK(values(y) == std::vector<double>{5, 9, 5, 8, 5, 9, 5, 8, 5, 9, 5, 8});
  y.index_put_({tensor(std::vector<int32_t>{2, 0})}, arange(8, kFloat64).view({2, 4}));  // rows 2 and 0
  CHECK(values(y) == std::vector<double>{4, 5, 6, 7, 5, 9, 5, 8, 0, 1, 2, 3});
  Tensor z = zeros({2, 3, 2}, kFloat64);
  z.index_put_({1, Ellipsis, tensor(std::vector<int64_t>{1})}, 4.0);  // z[1, ..., [1]] = 4
  CHECK(values(z) == std::vector<double>{0, 0, 0, 0, 0, 0, 0, 4, 0, 4, 0, 4});
  CHECK_THROWS_WITH(y.index_put_({tensor(std::vector<int64_t>{0}), 0}, 0.0), Catch::Contains("would write into a copy"));
  CHECK_THROWS_WITH(y.index_put_({tensor(std::vector<int64_t>{5})}, 0.0), Catch::Contains("out of range"));
}

TEST_CASE("op methods are the free functions") {
  Generator gen(4);
  Tensor x = randn({3, 4}, gen, kFloat64), w = randn({4, 2}, gen, kFloat64);
  CHECK(values(x.sum({1})) == values(sum(x, {1})));
  CHECK(values(x.mean({0}, true)) == values(mean(x, {0}, true)));
  CHECK(values(x.exp().log()) == values(log(exp(x))));
  CHECK(values(x.matmul(w)) == values(matmul(x, w)));
  CHECK(values(x.softmax(-1)) == values(softmax(x, -1)));
  CHECK(values(x.clamp(-0.5, std::nullopt)) == values(clamp(x, -0.5, std::nullopt)));
  CHECK(values(x.abs().pow(0.5)) == values(pow(abs(x), 0.5)));
  CHECK(values(x.argmax(1)) == values(argmax(x, 1)));
  CHECK(values(x.tril(-1)) == values(tril(x, -1)));
  CHECK(x.max().item<double>() == max(x).item<double>());
}
