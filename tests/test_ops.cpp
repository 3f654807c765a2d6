// Every op's forward against a naive float64 reference, on random shapes with
// odd sizes, size-1 dims, non-contiguous and broadcast inputs.

#include <numeric>

#include "helpers.h"
#include "kiln/base/gemm_layout.h"
#include "kiln/base/strided.h"

using namespace kiln;
using kt::for_each_index;
using kt::random_shape;
using kt::random_tensor;
using kt::Ref;
using kt::values;

namespace {

// Reference of an elementwise function of broadcast inputs.
std::vector<double> ref_map(const std::vector<Tensor>& ins, const std::function<double(const std::vector<double>&)>& f) {
  Shape shape = ins[0].sizes();
  for (const Tensor& t : ins) shape = broadcast_shapes(shape, t.sizes());
  std::vector<Ref> refs;
  for (const Tensor& t : ins) refs.emplace_back(t);
  std::vector<double> out;
  for_each_index(shape, [&](const Shape& idx) {
    std::vector<double> args;
    for (const Ref& r : refs) args.push_back(r.at(idx));
    out.push_back(f(args));
  });
  return out;
}

// A shape that broadcasts against s: some dims set to 1, maybe fewer dims.
Shape broadcastable(const Shape& s, std::mt19937& rng) {
  Shape b = s;
  for (auto& d : b)
    if (rng() % 3 == 0) d = 1;
  if (!b.empty() && rng() % 2) b.erase(b.begin());
  return b;
}

constexpr int kTrials = 12;

}  // namespace

TEST_CASE("binary arithmetic broadcasts and matches float64") {
  std::mt19937 rng(1);
  Generator gen(1);
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&, const Tensor&)> op;
    std::function<double(double, double)> ref;
  };
  std::vector<Case> cases = {
      {"add", [](auto& a, auto& b) { return a + b; }, [](double a, double b) { return a + b; }},
      {"sub", [](auto& a, auto& b) { return a - b; }, [](double a, double b) { return a - b; }},
      {"mul", [](auto& a, auto& b) { return a * b; }, [](double a, double b) { return a * b; }},
      {"div", [](auto& a, auto& b) { return a / b; }, [](double a, double b) { return a / b; }},
      {"maximum", [](auto& a, auto& b) { return maximum(a, b); }, [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](auto& a, auto& b) { return minimum(a, b); }, [](double a, double b) { return std::min(a, b); }},
      {"pow", [](auto& a, auto& b) { return pow(abs(a) + 0.5, b); },
       [](double a, double b) { return std::pow(std::abs(a) + 0.5, b); }},
      {"add alpha", [](auto& a, auto& b) { return add(a, b, 2.5); }, [](double a, double b) { return a + 2.5 * b; }},
  };
  for (const auto& c : cases) {
    for (DType dt : {kFloat64, kFloat32, kBFloat16, kFloat16}) {
      for (int trial = 0; trial < kTrials; ++trial) {
        Shape s = random_shape(rng);
        Tensor a = random_tensor(s, gen, dt, trial % 2 == 0);
        Tensor b = random_tensor(broadcastable(s, rng), gen, dt);
        if (trial % 3 == 0) std::swap(a, b);
        INFO(c.name << " " << dtype_name(dt) << " " << a.str() << " " << b.str());
        Tensor out = c.op(a, b);
        CHECK(out.dtype() == dt);
        // The reference sees the inputs as rounded to dt.
        KT_CHECK_CLOSE(out, ref_map({a, b}, [&](auto& v) { return c.ref(v[0], v[1]); }), 4 * kt::tolerance(dt));
      }
    }
  }
}

TEST_CASE("integer arithmetic and true division") {
  Tensor a = tensor(std::vector<int64_t>{7, -7, 8, 0});
  Tensor b = tensor(std::vector<int64_t>{2, 2, -3, 5});
  CHECK(values(a + b) == std::vector<double>{9, -5, 5, 5});
  CHECK((a + b).dtype() == kInt64);
  CHECK(values(a * b) == std::vector<double>{14, -14, -24, 0});
  Tensor q = a / b;
  CHECK(q.dtype() == kFloat32);
  CHECK(values(q) == std::vector<double>{3.5, -3.5, static_cast<double>(-8.0f / 3.0f), 0});
  CHECK(values(maximum(a, b)) == std::vector<double>{7, 2, 8, 5});
}

TEST_CASE("type promotion follows PyTorch") {
  Tensor i32 = ones({2}, kInt32), i64 = ones({2}, kInt64), f16 = ones({2}, kFloat16), bf16 = ones({2}, kBFloat16);
  Tensor f32 = ones({2}), f64 = ones({2}, kFloat64), b = ones({2}, kBool);
  CHECK(result_type(i32, i64) == kInt64);
  CHECK(result_type(i32, f16) == kFloat16);
  CHECK(result_type(f16, bf16) == kFloat32);
  CHECK(result_type(f32, f64) == kFloat64);
  CHECK(result_type(b, i32) == kInt32);
  CHECK(result_type(i32, 2.5) == kFloat32);
  CHECK(result_type(f16, 2.5) == kFloat16);
  CHECK(result_type(i32, int64_t{2}) == kInt32);
  CHECK(result_type(b, 2) == kInt64);
  CHECK(result_type(b, true) == kBool);
  // zero-dim tensors do not raise the type of a dimensioned one in the same category
  CHECK(result_type(f16, scalar_tensor(1.0, kFloat64)) == kFloat16);
  CHECK(result_type(i32, scalar_tensor(1.0, kFloat64)) == kFloat64);
  CHECK(result_type(scalar_tensor(1, kInt32), scalar_tensor(1, kInt64)) == kInt64);
  CHECK((f16 * 3.0).dtype() == kFloat16);
  CHECK((i32 * 3).dtype() == kInt32);
  CHECK((i32 * 0.5).dtype() == kFloat32);
  CHECK((f16 + f32).dtype() == kFloat32);
  CHECK(values(i32 * 0.5) == std::vector<double>{0.5, 0.5});
}

TEST_CASE("unary ops and activations match float64") {
  std::mt19937 rng(2);
  Generator gen(2);
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&)> op;
    std::function<double(double)> ref;
  };
  auto gelu_ref = [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); };
  auto gelu_tanh_ref = [](double x) {
    return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  };
  std::vector<Case> cases = {
      {"neg", [](auto& x) { return -x; }, [](double x) { return -x; }},
      {"abs", [](auto& x) { return abs(x); }, [](double x) { return std::abs(x); }},
      {"sign", [](auto& x) { return sign(x); }, [](double x) { return double((x > 0) - (x < 0)); }},
      {"exp", [](auto& x) { return exp(x); }, [](double x) { return std::exp(x); }},
      {"log", [](auto& x) { return log(abs(x) + 0.1); }, [](double x) { return std::log(std::abs(x) + 0.1); }},
      {"sqrt", [](auto& x) { return sqrt(abs(x)); }, [](double x) { return std::sqrt(std::abs(x)); }},
      {"rsqrt", [](auto& x) { return rsqrt(abs(x) + 0.5); }, [](double x) { return 1 / std::sqrt(std::abs(x) + 0.5); }},
      {"tanh", [](auto& x) { return tanh(x); }, [](double x) { return std::tanh(x); }},
      {"sigmoid", [](auto& x) { return sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }},
      {"relu", [](auto& x) { return relu(x); }, [](double x) { return std::max(x, 0.0); }},
      {"gelu", [](auto& x) { return gelu(x); }, gelu_ref},
      {"gelu tanh", [](auto& x) { return gelu(x, "tanh"); }, gelu_tanh_ref},
      {"silu", [](auto& x) { return silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }},
      {"pow 3", [](auto& x) { return pow(x, 3); }, [](double x) { return x * x * x; }},
      {"pow 0.5", [](auto& x) { return pow(abs(x), 0.5); }, [](double x) { return std::sqrt(std::abs(x)); }},
      {"clamp", [](auto& x) { return clamp(x, -0.5, 0.7); }, [](double x) { return std::clamp(x, -0.5, 0.7); }},
      {"clamp min", [](auto& x) { return clamp(x, 0.1, std::nullopt); }, [](double x) { return std::max(x, 0.1); }},
      {"sin", [](auto& x) { return sin(x * 3.0); }, [](double x) { return std::sin(x * 3); }},
      {"cos", [](auto& x) { return cos(x * 3.0); }, [](double x) { return std::cos(x * 3); }},
      {"floor", [](auto& x) { return floor(x * 4.0); }, [](double x) { return std::floor(x * 4); }},
      {"ceil", [](auto& x) { return ceil(x * 4.0); }, [](double x) { return std::ceil(x * 4); }},
      {"round", [](auto& x) { return round(x * 4.0); }, [](double x) { return std::nearbyint(x * 4); }},
  };
  for (const auto& c : cases) {
    for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
      for (int trial = 0; trial < kTrials / 2; ++trial) {
        Tensor x = random_tensor(random_shape(rng), gen, dt, trial % 2 == 0);
        INFO(c.name << " " << dtype_name(dt) << " " << x.str());
        Tensor y = c.op(x);
        CHECK(y.dtype() == dt);
        KT_CHECK_CLOSE(y, ref_map({x}, [&](auto& v) { return c.ref(v[0]); }), 4 * kt::tolerance(dt));
      }
    }
  }
  CHECK(exp(ones({2}, kInt32)).dtype() == kFloat32);
  CHECK(values(relu(tensor(std::vector<int64_t>{-2, 3}))) == std::vector<double>{0, 3});
  CHECK(values(clamp(tensor(std::vector<int32_t>{-5, 0, 5}), -1, 2)) == std::vector<double>{-1, 0, 2});
  Tensor x = tensor({-1.0, 0.0, 1.0, 3.0}, kFloat64).requires_grad_();
  CHECK(values(clamp(x, 2, 1)) == std::vector<double>{1, 1, 1, 1});  // min > max: max everywhere, as PyTorch
  sum(clamp(x, 0, 1) + clamp(x, 2, 1)).backward();
  CHECK(values(x.grad()) == std::vector<double>{0, 1, 1, 0});  // bounds included; nothing passes min > max
}

TEST_CASE("rounding takes halves to even and leaves integers; its gradient is zero") {
  Tensor x = tensor({-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.7, -2.7}).requires_grad_();
  CHECK(values(round(x)) == std::vector<double>{-2, -2, -0, 0, 2, 2, 3, -3});
  CHECK(values(floor(x)) == std::vector<double>{-3, -2, -1, 0, 1, 2, 2, -3});
  CHECK(values(ceil(x)) == std::vector<double>{-2, -1, -0, 1, 2, 3, 3, -2});
  sum(round(x) + floor(x) + ceil(x)).backward();
  CHECK(values(x.grad()) == std::vector<double>(8, 0.0));
  Tensor whole = tensor(std::vector<int64_t>{-3, 4});
  CHECK(round(whole).dtype() == kInt64);
  CHECK(values(floor(whole)) == values(whole));
}

TEST_CASE("tril, triu and one_hot against loops; randperm is a permutation fixed by the seed") {
  Generator gen(12);
  Tensor x = randn({2, 4, 5}, gen, kFloat64);
  Ref r(x);
  for (int64_t k : {-2, -1, 0, 1, 3}) {
    INFO("diagonal " << k);
    std::vector<double> lower, upper;
    for_each_index(x.sizes(), [&](const Shape& i) {
      lower.push_back(i[2] - i[1] <= k ? r.at(i) : 0.0);
      upper.push_back(i[2] - i[1] >= k ? r.at(i) : 0.0);
    });
    CHECK(values(tril(x, k)) == lower);
    CHECK(values(triu(x, k)) == upper);
  }
  CHECK_THROWS_WITH(tril(ones({3})), Catch::Contains("[tril] needs at least 2 dims"));

  Tensor hot = one_hot(tensor(std::vector<int64_t>{2, 0, 3, 2}).view({2, 2}));
  CHECK(hot.sizes() == Shape{2, 2, 4});
  CHECK(hot.dtype() == kInt64);
  CHECK(values(hot) == std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0});
  CHECK(one_hot(tensor(std::vector<int64_t>{1}), 5).sizes() == Shape{1, 5});
  CHECK_THROWS_WITH(one_hot(tensor(std::vector<int64_t>{4}), 3), Catch::Contains("index 4 is out of range for 3 classes"));
  CHECK_THROWS_WITH(one_hot(tensor(std::vector<int64_t>{-1})), Catch::Contains("indices must be >= 0, found -1"));

  Generator a(5), b(5), c(6);
  Tensor p = randperm(50, a);
  std::vector<double> sorted = values(p);
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == values(arange(50)));
  CHECK(values(p) != values(arange(50)));
  CHECK(values(randperm(50, b)) == values(p));
  CHECK(values(randperm(50, c)) != values(p));
  CHECK(randperm(0, a).numel() == 0);
  CHECK(randperm(7, a, kInt32).dtype() == kInt32);
}

TEST_CASE("cumsum along any dim against a loop; integers sum in int64") {
  std::mt19937 rng(14);
  Generator gen(14);
  for (DType dt : {kFloat64, kFloat32, kBFloat16, kInt32}) {
    for (int trial = 0; trial < kTrials / 2; ++trial) {
      Shape s = random_shape(rng, 1, 3);
      const int64_t dim = rng() % s.size();
      Tensor x = dt == kInt32 ? randint(-50, 50, s, gen, kInt32) : random_tensor(s, gen, dt, trial % 2 == 0);
      INFO(dtype_name(dt) << " " << x.str() << " dim " << dim);
      Ref r(x);
      std::vector<double> ref;
      for_each_index(s, [&](const Shape& i) {
        Shape j = i;
        double total = 0;
        for (j[dim] = 0; j[dim] <= i[dim]; ++j[dim]) total += r.at(j);
        ref.push_back(total);
      });
      Tensor y = cumsum(x, dim - static_cast<int64_t>(s.size()));  // a negative dim
      CHECK(y.dtype() == (dt == kInt32 ? kInt64 : dt));
      KT_CHECK_CLOSE(y, ref, dt == kInt32 ? 0.0 : 8 * kt::tolerance(dt));
    }
  }
  CHECK(values(cumsum(tensor(std::vector<int64_t>{3, 1, 4}).to(kBool), 0)) == std::vector<double>{1, 2, 3});
  CHECK(cumsum(scalar_tensor(2.5), 0).item<double>() == 2.5);
}

TEST_CASE("sort is stable along any dim, either way, NaN largest; its values carry the gradient") {
  std::mt19937 rng(15);
  Generator gen(15);
  for (DType dt : {kFloat64, kFloat32, kBFloat16, kInt64}) {
    for (int trial = 0; trial < kTrials / 2; ++trial) {
      Shape s = random_shape(rng, 1, 3);
      const int64_t dim = rng() % s.size();
      const bool descending = trial % 2;
      // Few distinct values, so that ties are many.
      Tensor x = dt == kInt64 ? randint(-3, 3, s, gen) : round(randn(s, gen, kFloat64) * 2.0).to(dt);
      INFO(dtype_name(dt) << " " << x.str() << " dim " << dim << (descending ? " descending" : ""));
      auto [v, i] = sort(x, dim, descending);
      Ref r(x);
      std::vector<double> ref_v, ref_i;
      for_each_index(s, [&](const Shape& at) {
        // The rank of at[dim] in its line: a stable sort's position, computed by counting.
        std::vector<std::pair<double, int64_t>> line;
        Shape j = at;
        for (j[dim] = 0; j[dim] < s[dim]; ++j[dim]) line.emplace_back(r.at(j), j[dim]);
        std::stable_sort(line.begin(), line.end(), [&](auto& a, auto& b) {
          return descending ? a.first > b.first : a.first < b.first;
        });
        ref_v.push_back(line[at[dim]].first);
        ref_i.push_back(static_cast<double>(line[at[dim]].second));
      });
      CHECK(values(v) == ref_v);
      CHECK(values(i) == ref_i);
      CHECK(values(argsort(x, dim, descending)) == ref_i);
    }
  }
  const double nan = std::nan("");
  auto [up, order] = sort(tensor({2.0, nan, -1.0, 5.0}));
  CHECK(values(order) == std::vector<double>{2, 0, 3, 1});
  CHECK(values(sort(tensor({2.0, nan, -1.0}), 0, true).second) == std::vector<double>{1, 0, 2});
  Tensor x = kt::leaf({3, 4}, gen);
  kt::check_grad([](const std::vector<Tensor>& v) { return sort(v[0], 1, true).first * v[0]; }, {x});
}

namespace {

// scatter (add false) or scatter_add against a loop over src's elements in
// order, on random shapes, dims and (repeating) positions.
void check_scatter_values(bool add, uint32_t seed) {
  std::mt19937 rng(seed);
  Generator gen(seed);
  for (int trial = 0; trial < kTrials; ++trial) {
    Shape s = random_shape(rng, 1, 3);
    const int64_t dim = rng() % s.size();
    Shape ss = s;
    for (auto& d : ss) d = 1 + rng() % d;
    ss[dim] = 1 + rng() % 6;
    Tensor x = randn(s, gen, kFloat64), src = randn(ss, gen, kFloat64), index = randint(0, s[dim], ss, gen);
    std::vector<double> ref = values(x), sv = values(src), iv = values(index);
    const Shape strides = contiguous_strides(s);
    int64_t k = 0;
    for_each_index(ss, [&](const Shape& i) {
      int64_t at = 0;
      for (size_t d = 0; d < s.size(); ++d) at += (d == size_t(dim) ? int64_t(iv[k]) : i[d]) * strides[d];
      ref[at] = add ? ref[at] + sv[k] : sv[k];
      ++k;
    });
    KT_CHECK_CLOSE(add ? scatter_add(x, dim, index, src) : scatter(x, dim, index, src), ref, 1e-12);
  }
}

}  // namespace

TEST_CASE("scatter writes src at index along dim (the last write wins), and its gradients reach input and src") {
  check_scatter_values(false, 17);
  // Distinct rows in each column: each of src's elements lands once.
  Generator gen(17);
  Tensor x = kt::leaf({3, 4}, gen), src = kt::leaf({2, 4}, gen);
  Tensor index = tensor(std::vector<int64_t>{0, 2, 1, 0, 2, 1, 0, 1}).view({2, 4});
  kt::check_grad([&](const std::vector<Tensor>& v) { return scatter(v[0], 0, index, v[1]) * v[0]; }, {x, src});
  CHECK_THROWS_WITH(scatter(x, 0, index, ones({2, 4}, kFloat32)), Catch::Contains("[scatter] src"));
}

TEST_CASE("scatter_add adds src at index along dim, and its gradients reach input and src") {
  check_scatter_values(true, 13);
  Generator gen(13);
  Tensor x = kt::leaf({3, 4}, gen), src = kt::leaf({2, 4}, gen);
  Tensor index = tensor(std::vector<int64_t>{0, 2, 2, 1, 1, 1, 0, 2}).view({2, 4});
  kt::check_grad([&](const std::vector<Tensor>& v) { return scatter_add(v[0], 0, index, v[1]) * v[0]; }, {x, src});
  CHECK_THROWS_WITH(scatter_add(x, 0, index, ones({2, 3}, kFloat64)), Catch::Contains("must have src's shape"));
}

TEST_CASE("comparisons, where and masked_fill") {
  std::mt19937 rng(3);
  Generator gen(3);
  for (int trial = 0; trial < kTrials; ++trial) {
    Shape s = random_shape(rng);
    Tensor a = random_tensor(s, gen, kFloat32, trial % 2 == 0);
    Tensor b = random_tensor(broadcastable(s, rng), gen, kFloat32);
    Tensor m = a > b;
    CHECK(m.dtype() == kBool);
    CHECK(values(m) == ref_map({a, b}, [](auto& v) { return double(v[0] > v[1]); }));
    CHECK(values(a <= b) == ref_map({a, b}, [](auto& v) { return double(v[0] <= v[1]); }));
    CHECK(values(a == a) == std::vector<double>(static_cast<size_t>(a.numel()), 1.0));
    CHECK(values(where(m, a, b)) == ref_map({m, a, b}, [](auto& v) { return v[0] ? v[1] : v[2]; }));
    CHECK(values(masked_fill(a, a < 0, -7.0)) == ref_map({a}, [](auto& v) { return v[0] < 0 ? -7.0 : v[0]; }));
    CHECK(values(logical_not(m)) == ref_map({m}, [](auto& v) { return double(!v[0]); }));
    CHECK(values(logical_and(m, a > 0)) == ref_map({a, b}, [](auto& v) { return double(v[0] > v[1] && v[0] > 0); }));
    CHECK(values(logical_or(m, a > 0)) == ref_map({a, b}, [](auto& v) { return double(v[0] > v[1] || v[0] > 0); }));
  }
  CHECK(values(where(tensor({1.0, 0.0}) > 0.5, 1.0, tensor({5.0, 6.0}))) == std::vector<double>{1, 6});
}

TEST_CASE("reductions over dims with keepdim") {
  std::mt19937 rng(4);
  Generator gen(4);
  for (int trial = 0; trial < 3 * kTrials; ++trial) {
    DType dt = trial % 3 == 0 ? kBFloat16 : trial % 3 == 1 ? kFloat32 : kFloat64;
    Shape s = random_shape(rng, 1, 4);
    Tensor x = random_tensor(s, gen, dt, trial % 2 == 0);
    // a random non-empty subset of dims
    Shape dims;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (rng() % 2) dims.push_back(d - (rng() % 2 ? x.dim() : 0));
    if (dims.empty()) dims.push_back(0);
    bool keepdim = rng() % 2;
    std::vector<bool> reduced(x.dim(), false);
    for (int64_t d : dims) reduced[d < 0 ? d + x.dim() : d] = true;
    Shape out_keep;
    for (int64_t d = 0; d < x.dim(); ++d) out_keep.push_back(reduced[d] ? 1 : x.size(d));
    // Reference: accumulate per output index.
    Ref r(x);
    int64_t n_out = shape_numel(out_keep);
    std::vector<double> sum_ref(n_out, 0), max_ref(n_out, -INFINITY), min_ref(n_out, INFINITY), sq(n_out, 0);
    int64_t count = shape_numel(s) / n_out;
    Shape ostrides = contiguous_strides(out_keep);
    auto out_index = [&](const Shape& idx) {
      int64_t o = 0;
      for (int64_t d = 0; d < x.dim(); ++d) o += (reduced[d] ? 0 : idx[d]) * ostrides[d];
      return o;
    };
    for_each_index(s, [&](const Shape& idx) {
      double v = r.at(idx);
      int64_t o = out_index(idx);
      sum_ref[o] += v;
      max_ref[o] = std::max(max_ref[o], v);
      min_ref[o] = std::min(min_ref[o], v);
    });
    std::vector<double> mean_ref(n_out), var_ref(n_out, 0);
    for (int64_t o = 0; o < n_out; ++o) mean_ref[o] = sum_ref[o] / count;
    for_each_index(s, [&](const Shape& idx) {
      int64_t o = out_index(idx);
      var_ref[o] += (r.at(idx) - mean_ref[o]) * (r.at(idx) - mean_ref[o]);
    });
    for (double& v : var_ref) v = count > 1 ? v / (count - 1) : NAN;
    INFO("x " << x.str() << " dims " << fmt::format("{}", fmt::join(dims, ",")) << " keepdim " << keepdim);
    Tensor su = sum(x, dims, keepdim);
    Shape expect_shape;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (!reduced[d]) expect_shape.push_back(x.size(d));
      else if (keepdim) expect_shape.push_back(1);
    CHECK(su.sizes() == expect_shape);
    double tol = 8 * kt::tolerance(dt);
    KT_CHECK_CLOSE(su, sum_ref, tol);
    KT_CHECK_CLOSE(mean(x, dims, keepdim), mean_ref, tol);
    KT_CHECK_CLOSE(var(x, dims, 1, keepdim), var_ref, 4 * tol);
    if (dims.size() == 1) {
      KT_CHECK_CLOSE(max(x, dims[0], keepdim), max_ref, 0.0);
      KT_CHECK_CLOSE(min(x, dims[0], keepdim), min_ref, 0.0);
      // argmax points at a maximal element
      Tensor am = argmax(x, dims[0], true);
      CHECK(am.dtype() == kInt64);
      Tensor picked = gather(x, dims[0], am);
      KT_CHECK_CLOSE(picked.reshape({-1}), max_ref, 0.0);
    }
  }
  Tensor t = tensor({3.0, 9.0, -1.0, 9.0});
  CHECK(argmax(t).item<int64_t>() == 1);  // the first of equal maxima
  CHECK(argmin(t, 0).item<int64_t>() == 2);
  CHECK(max(t).item<double>() == 9.0);
  CHECK(sum(ones({3}, kInt32)).dtype() == kInt64);
  CHECK(sum(ones({3}, kBool)).item<int64_t>() == 3);
  CHECK(sum(zeros({0})).item<double>() == 0.0);
  CHECK(sum(zeros({3, 0, 4}), {0}).sizes() == Shape{0, 4});  // nothing to write
  CHECK(values(sum(zeros({0, 4}), {0})) == std::vector<double>(4, 0.0));  // sums of nothing
  CHECK(values(sum(arange(6, kFloat32).view({2, 3}), {-1})) == std::vector<double>{3, 12});
  // Large float32 sums accumulate in float64: exact for integers below 2^24
  CHECK(sum(ones({1 << 25})).item<double>() == double(1 << 25));
}

TEST_CASE("logsumexp is stable") {
  Tensor x = tensor({1000.0, 1000.0, -INFINITY}, kFloat64);
  CHECK(logsumexp(x, 0).item<double>() == Approx(1000.0 + std::log(2.0)));
  Tensor all_inf = full({2}, -INFINITY, kFloat32);
  CHECK(std::isinf(logsumexp(all_inf, 0).item<double>()));
}

TEST_CASE("matmul: vectors, matrices, batches, broadcasting, transposed inputs") {
  std::mt19937 rng(5);
  Generator gen(5);
  auto ref = [](const Tensor& a, const Tensor& b) {
    // naive (..., m, k) @ (..., k, n) on 2+-dim inputs with broadcasting
    Shape batch = broadcast_shapes(Shape(a.sizes().begin(), a.sizes().end() - 2),
                                   Shape(b.sizes().begin(), b.sizes().end() - 2));
    int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
    Ref ra(a), rb(b);
    std::vector<double> out;
    for_each_index(batch, [&](const Shape& bi) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t q = 0; q < k; ++q) {
            Shape ia = bi, ib = bi;
            ia.push_back(i), ia.push_back(q);
            ib.push_back(q), ib.push_back(j);
            s += ra.at(ia) * rb.at(ib);
          }
          out.push_back(s);
        }
    });
    return out;
  };
  for (DType dt : {kFloat64, kFloat32, kBFloat16, kFloat16, kInt64}) {
    for (int trial = 0; trial < kTrials; ++trial) {
      int64_t m = 1 + rng() % 9, k = 1 + rng() % 9, n = 1 + rng() % 9;
      Shape batch_a, batch_b;
      int nb = rng() % 3;
      for (int i = 0; i < nb; ++i) {
        int64_t s = 1 + rng() % 3;
        batch_a.push_back(s);
        batch_b.push_back(rng() % 2 ? s : 1);
      }
      if (rng() % 2) batch_b.erase(batch_b.begin(), batch_b.begin() + std::min<int>(1, batch_b.size()));
      Shape sa = batch_a, sb = batch_b;
      sa.push_back(m), sa.push_back(k);
      sb.push_back(k), sb.push_back(n);
      Tensor a = dt == kInt64 ? randint(-5, 5, sa, gen) : random_tensor(sa, gen, dt);
      Tensor b = dt == kInt64 ? randint(-5, 5, sb, gen) : random_tensor(sb, gen, dt);
      if (trial % 3 == 1) a = a.transpose(-1, -2).contiguous().transpose(-1, -2);  // column-major operand
      if (trial % 3 == 2) b = b.transpose(-1, -2).contiguous().transpose(-1, -2);
      INFO(dtype_name(dt) << " " << a.str() << " @ " << b.str());
      Tensor c = matmul(a, b);
      KT_CHECK_CLOSE(c, ref(a, b), dt == kInt64 ? 0.0 : 8 * kt::tolerance(dt));
    }
  }
  Tensor m = arange(6, kFloat64).view({2, 3});
  Tensor v = tensor({1.0, 0.0, -1.0}, kFloat64);
  CHECK(values(matmul(m, v)) == std::vector<double>{-2, -2});
  CHECK(matmul(m, v).sizes() == Shape{2});
  CHECK(values(matmul(tensor({1.0, 1.0}, kFloat64), m)) == std::vector<double>{3, 5, 7});
  CHECK(matmul(v, v).dim() == 0);
  CHECK(matmul(v, v).item<double>() == 2.0);
  // a strided (non-BLAS-layout) operand is copied, not misread
  Tensor big = arange(48, kFloat64).view({4, 12});
  Tensor strided = big.slice(1, 0, 12, 3);  // (4, 4) with column stride 3
  KT_CHECK_CLOSE(matmul(strided, strided), ref(strided.contiguous(), strided.contiguous()), 1e-12);
}

TEST_CASE("cat, stack, split, chunk") {
  Generator gen(6);
  Tensor a = randn({2, 3, 4}, gen), b = randn({2, 1, 4}, gen), c = randn({2, 5, 4}, gen);
  Tensor cat1 = cat({a, b, c}, 1);
  CHECK(cat1.sizes() == Shape{2, 9, 4});
  CHECK(values(cat1.narrow(1, 0, 3)) == values(a));
  CHECK(values(cat1.narrow(1, 3, 1)) == values(b));
  CHECK(values(cat1.narrow(1, 4, 5)) == values(c));
  CHECK(values(cat({a.transpose(0, 2), a.transpose(0, 2)}, -1).narrow(2, 2, 2)) == values(a.transpose(0, 2)));
  CHECK(cat({ones({2}, kInt32), ones({1}, kFloat64)}).dtype() == kFloat64);
  Tensor s = stack({a, a * 2}, 1);
  CHECK(s.sizes() == Shape{2, 2, 3, 4});
  CHECK(values(s.select(1, 1)) == values(a * 2));
  auto parts = split(cat1, 4, 1);
  REQUIRE(parts.size() == 3);
  CHECK(parts[2].size(1) == 1);
  CHECK(values(parts[0].narrow(1, 0, 3)) == values(a));
  CHECK(parts[1].storage() == cat1.storage());
  auto sized = split(cat1, std::vector<int64_t>{3, 1, 5}, 1);
  CHECK(values(sized[2]) == values(c));
  auto chunks = chunk(arange(10), 3);
  REQUIRE(chunks.size() == 3);
  CHECK(values(chunks[2]) == std::vector<double>{8, 9});
  CHECK(chunk(arange(10), 4).size() == 4);
}

TEST_CASE("index_select, gather, embedding") {
  std::mt19937 rng(7);
  Generator gen(7);
  for (int trial = 0; trial < kTrials; ++trial) {
    Shape s = random_shape(rng, 1, 3);
    Tensor x = random_tensor(s, gen, kFloat32, trial % 2 == 0);
    int64_t dim = rng() % x.dim();
    Tensor idx = randint(0, x.size(dim), {int64_t(1 + rng() % 6)}, gen, trial % 2 ? kInt32 : kInt64);
    Tensor out = index_select(x, dim, idx);
    Shape os = s;
    os[dim] = idx.numel();
    CHECK(out.sizes() == os);
    Ref r(x);
    std::vector<double> iv = values(idx), ref;
    for_each_index(os, [&](const Shape& i) {
      Shape j = i;
      j[dim] = static_cast<int64_t>(iv[i[dim]]);
      ref.push_back(r.at(j));
    });
    CHECK(values(out) == ref);
    // gather with an index of the output's shape
    Shape gs = s;
    for (auto& d : gs) d = 1 + rng() % d;
    gs[dim] = 1 + rng() % 5;
    Tensor gi = randint(0, x.size(dim), gs, gen);
    Tensor g = gather(x, dim, gi);
    std::vector<double> giv = values(gi), gref;
    int64_t k = 0;
    for_each_index(gs, [&](const Shape& i) {
      Shape j = i;
      j[dim] = static_cast<int64_t>(giv[k++]);
      gref.push_back(r.at(j));
    });
    CHECK(values(g) == gref);
  }
  Tensor w = arange(12, kFloat32).view({4, 3});
  Tensor e = embedding(w, tensor(std::vector<int64_t>{3, 0, 3, 1}).view({2, 2}));
  CHECK(e.sizes() == Shape{2, 2, 3});
  CHECK(values(e[0][0]) == std::vector<double>{9, 10, 11});
  CHECK(values(e[1][1]) == std::vector<double>{3, 4, 5});
}

TEST_CASE("causal_softmax masks keys after each query's last, bottom-right") {
  Generator gen(81);
  for (DType dt : {kFloat64, kFloat32, kBFloat16})
    for (auto [Tq, Tk] : {std::pair<int64_t, int64_t>{5, 5}, {3, 7}, {7, 3}, {1, 9}}) {
      INFO(dtype_name(dt) << " Tq " << Tq << " Tk " << Tk);
      Tensor x = randn({2, 3, Tq, Tk}, gen, dt) * 3.0;
      std::vector<double> xv = values(x), expect;
      for (int64_t row = 0; row < 2 * 3 * Tq; ++row) {
        const int64_t i = row % Tq, last = i + Tk - Tq;  // query i sees keys j <= last
        double mx = -INFINITY, tot = 0;
        for (int64_t j = 0; j <= std::min(last, Tk - 1); ++j) mx = std::max(mx, xv[row * Tk + j]);
        for (int64_t j = 0; j <= std::min(last, Tk - 1); ++j) tot += std::exp(xv[row * Tk + j] - mx);
        for (int64_t j = 0; j < Tk; ++j) expect.push_back(j <= last ? std::exp(xv[row * Tk + j] - mx) / tot : 0.0);
      }
      KT_CHECK_CLOSE(causal_softmax(x), expect, 4 * kt::tolerance(dt));
    }
  CHECK_THROWS_WITH(causal_softmax(zeros({4})), Catch::Contains("[causal_softmax] expects scores (..., Tq, Tk)"));
}

TEST_CASE("softmax and log_softmax along any dim") {
  std::mt19937 rng(8);
  Generator gen(8);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    for (int trial = 0; trial < kTrials; ++trial) {
      Shape s = random_shape(rng, 1, 4);
      Tensor x = random_tensor(s, gen, dt, trial % 2 == 0) * 3.0;
      int64_t dim = static_cast<int64_t>(rng() % s.size());
      Ref r(x);
      std::vector<double> sm, lsm;
      for_each_index(s, [&](const Shape& idx) {
        double mx = -INFINITY, tot = 0;
        Shape j = idx;
        for (j[dim] = 0; j[dim] < s[dim]; ++j[dim]) mx = std::max(mx, r.at(j));
        for (j[dim] = 0; j[dim] < s[dim]; ++j[dim]) tot += std::exp(r.at(j) - mx);
        sm.push_back(std::exp(r.at(idx) - mx) / tot);
        lsm.push_back(r.at(idx) - mx - std::log(tot));
      });
      INFO(dtype_name(dt) << " dim " << dim << " " << x.str());
      KT_CHECK_CLOSE(softmax(x, dim), sm, 4 * kt::tolerance(dt));
      KT_CHECK_CLOSE(log_softmax(x, dim), lsm, 4 * kt::tolerance(dt));
    }
  }
  // a row of -inf gives nan, as PyTorch
  Tensor r = softmax(full({1, 3}, -INFINITY), 1);
  CHECK(std::isnan(r[0][0].item<double>()));
}

TEST_CASE("layer_norm and rms_norm over trailing dims") {
  std::mt19937 rng(9);
  Generator gen(9);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    for (int trial = 0; trial < kTrials; ++trial) {
      Shape s = random_shape(rng, 1, 4, 9);
      int64_t nd = 1 + rng() % s.size();
      Shape ns(s.end() - nd, s.end());
      Tensor x = random_tensor(s, gen, dt, trial % 2 == 0) * 2.0 + 0.5;
      Tensor w = trial % 3 ? random_tensor(ns, gen, dt) : Tensor();
      Tensor b = trial % 3 == 1 ? random_tensor(ns, gen, dt) : Tensor();
      int64_t C = shape_numel(ns), rows = shape_numel(s) / C;
      std::vector<double> xv = values(x), wv = w.defined() ? values(w) : std::vector<double>(C, 1.0),
                          bv = b.defined() ? values(b) : std::vector<double>(C, 0.0), ln, rn;
      for (int64_t row = 0; row < rows; ++row) {
        double m = 0, v = 0, ss = 0;
        for (int64_t c = 0; c < C; ++c) m += xv[row * C + c] / C;
        for (int64_t c = 0; c < C; ++c) v += (xv[row * C + c] - m) * (xv[row * C + c] - m) / C;
        for (int64_t c = 0; c < C; ++c) ss += xv[row * C + c] * xv[row * C + c] / C;
        for (int64_t c = 0; c < C; ++c) {
          ln.push_back((xv[row * C + c] - m) / std::sqrt(v + 1e-5) * wv[c] + bv[c]);
          rn.push_back(xv[row * C + c] / std::sqrt(ss + 1e-6) * wv[c]);
        }
      }
      INFO(dtype_name(dt) << " " << x.str());
      KT_CHECK_CLOSE(layer_norm(x, ns, w, b), ln, 8 * kt::tolerance(dt));
      KT_CHECK_CLOSE(rms_norm(x, ns, w), rn, 8 * kt::tolerance(dt));
    }
  }
}

TEST_CASE("cross_entropy with ignore_index, reductions and a z-loss") {
  std::mt19937 rng(10);
  Generator gen(10);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    for (int trial = 0; trial < kTrials; ++trial) {
      int64_t N = 1 + rng() % 9, C = 1 + rng() % 11;
      Tensor logits = random_tensor({N, C}, gen, dt, trial % 2 == 0) * 2.0;
      Tensor target = randint(0, C, {N}, gen);
      if (trial % 2) target = masked_fill(target, rand({N}, gen) < 0.3, -100);
      const double z = trial % 3 == 0 ? 0.3 : 0.0;  // PaLM's z-loss: z lse^2 per counted row
      std::vector<double> lv = values(logits), tv = values(target), per_row;
      double total = 0;
      int64_t counted = 0;
      for (int64_t n = 0; n < N; ++n) {
        if (tv[n] == -100) {
          per_row.push_back(0);
          continue;
        }
        double mx = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; ++c) mx = std::max(mx, lv[n * C + c]);
        for (int64_t c = 0; c < C; ++c) s += std::exp(lv[n * C + c] - mx);
        const double lse = mx + std::log(s);
        double l = lse - lv[n * C + static_cast<int64_t>(tv[n])] + z * lse * lse;
        per_row.push_back(l);
        total += l;
        ++counted;
      }
      double tol = 8 * kt::tolerance(dt);
      INFO(dtype_name(dt) << " z " << z << " " << logits.str() << " " << target.str());
      KT_CHECK_CLOSE(cross_entropy(logits, target, -100, Reduction::None, z), per_row, tol);
      KT_CHECK_CLOSE(cross_entropy(logits, target, -100, Reduction::Sum, z), std::vector<double>{total}, tol);
      Tensor m = cross_entropy(logits, target, -100, Reduction::Mean, z);
      if (counted) KT_CHECK_CLOSE(m, std::vector<double>{total / counted}, tol);
      else CHECK(std::isnan(m.item<double>()));
    }
  }
  // (N, C, d) layout: class dim 1, as PyTorch
  Generator g2(11);
  Tensor l3 = randn({2, 5, 3}, g2, kFloat64);
  Tensor t3 = randint(0, 5, {2, 3}, g2);
  KT_CHECK_CLOSE(cross_entropy(l3, t3, -100, Reduction::None),
                 values(cross_entropy(l3.movedim(1, 2).reshape({6, 5}), t3.reshape({6}), -100, Reduction::None)),
                 1e-15);
  // unbatched (C,) input
  Tensor l1 = tensor({1.0, 2.0, 3.0}, kFloat64);
  CHECK(cross_entropy(l1, full({}, 2, kInt64)).item<double>() ==
        Approx(std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0));
}

TEST_CASE("linear_cross_entropy equals cross_entropy of the full logits, chunk by chunk") {
  Generator gen(31);
  for (DType dt : {kFloat64, kFloat32}) {
    Tensor x = randn({13, 7}, gen, dt), w = randn({11, 7}, gen, dt) * 0.5;
    Tensor target = randint(0, 11, {13}, gen);
    Tensor every_fifth = tensor(std::vector<int64_t>{0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0}) == int64_t(1);
    target = where(every_fifth, full({13}, int64_t(-100), kInt64), target);
    for (double z : {0.0, 0.2}) {
      Tensor xr = x.detach().requires_grad_(), wr = w.detach().requires_grad_();
      Tensor want = cross_entropy(matmul(xr, wr.t()), target, -100, Reduction::Mean, z);
      (want * 3.0).backward();
      for (int64_t chunk : {0, 1, 4, 13, 40}) {
        INFO("dtype " << dtype_name(dt) << " chunk " << chunk << " z " << z);
        Tensor xf = x.detach().requires_grad_(), wf = w.detach().requires_grad_();
        Tensor got = linear_cross_entropy(xf, wf, target, -100, chunk, z);
        CHECK(got.dtype() == dt);
        const double tol = dt == kFloat64 ? 1e-12 : 1e-5;
        KT_CHECK_CLOSE(got, values(want), tol);
        (got * 3.0).backward();
        KT_CHECK_CLOSE(xf.grad(), values(xr.grad()), tol);
        KT_CHECK_CLOSE(wf.grad(), values(wr.grad()), tol);
      }
    }
  }
  // Without gradients it only computes the loss; every row ignored gives 0.
  Tensor x = randn({4, 3}, gen), w = randn({5, 3}, gen);
  CHECK(linear_cross_entropy(x, w, full({4}, int64_t(-100), kInt64)).item<double>() == 0.0);
  CHECK_THROWS_WITH(linear_cross_entropy(x, randn({5, 4}, gen), randint(0, 5, {4}, gen)),
                    Catch::Contains("expects x (N, C) and weight (V, C) of one dtype"));
  CHECK_THROWS_WITH(linear_cross_entropy(x, w, full({4}, int64_t(7), kInt64)), Catch::Contains("out of range"));
}

TEST_CASE("the fused attention kernel equals the composed reference, values, lse and gradients") {
  Generator gen(53);
  struct Case {
    int64_t B, Hq, Hkv, Tq, Tk, D;
    bool causal;
    std::vector<int64_t> prefix = {};  // a prefix-LM mask's lengths per batch; empty for none
    bool alibi = false;                // ALiBi slopes 2^-(h+1)
  };
  for (const Case& c : {Case{2, 4, 2, 5, 7, 8, true}, Case{1, 3, 3, 9, 9, 16, false}, Case{1, 2, 1, 6, 3, 4, true},
                        Case{2, 2, 2, 1, 11, 5, true}, Case{1, 1, 1, 4, 4, 3, false},
                        Case{3, 2, 1, 9, 9, 8, true, {4, 0, 9}}, Case{2, 2, 2, 3, 10, 5, true, {8, 2}},
                        Case{2, 4, 2, 5, 7, 8, true, {}, true}, Case{1, 3, 3, 6, 6, 4, false, {}, true},
                        Case{2, 2, 1, 7, 7, 8, true, {3, 5}, true}})
    for (DType dt : {kFloat64, kFloat32}) {
      INFO("B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " Tq " << c.Tq << " Tk " << c.Tk << " D " << c.D
                << " causal " << c.causal << " prefix " << c.prefix.size() << " alibi " << c.alibi << " "
                << dtype_name(dt));
      Tensor q = randn({c.B, c.Hq, c.Tq, c.D}, gen, dt), k = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt),
             v = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt), w = randn({c.B, c.Hq, c.Tq, c.D}, gen, dt);
      std::vector<double> slope_values, bias_values;  // ALiBi's slopes, and its bias built by hand
      for (int64_t h = 0; h < c.Hq; ++h) slope_values.push_back(std::pow(2.0, -static_cast<double>(h + 1)));
      for (int64_t h = 0; h < c.Hq; ++h)
        for (int64_t i = 0; i < c.Tq; ++i)
          for (int64_t j = 0; j < c.Tk; ++j)
            bias_values.push_back(slope_values[h] * static_cast<double>(j - i - (c.Tk - c.Tq)));
      const Tensor slopes = c.alibi ? tensor(slope_values).to(kFloat32) : Tensor();
      auto run = [&](AttentionBackend backend, bool explicit_bias = false) {
        SettingsGuard guard;
        settings().attention = backend;
        Tensor qr = q.detach().requires_grad_(), kr = k.detach().requires_grad_(), vr = v.detach().requires_grad_();
        AttentionOptions options{.causal = c.causal,
                                 .prefix_lengths = c.prefix.empty() ? Tensor() : tensor(c.prefix)};
        if (explicit_bias) options.bias = tensor(bias_values, dt).view({1, c.Hq, c.Tq, c.Tk});
        else options.alibi_slopes = slopes;
        AttentionOutput o = scaled_dot_product_attention_with_lse(qr, kr, vr, options);
        sum(o.out * w).backward();
        return std::vector<Tensor>{o.out, o.lse, qr.grad(), kr.grad(), vr.grad()};
      };
      std::vector<Tensor> fused = run(AttentionBackend::Fused), composed = run(AttentionBackend::Composed);
      if (c.alibi) {  // the slopes' bias as an explicit one gives the same
        const std::vector<Tensor> by_hand = run(AttentionBackend::Composed, true);
        for (size_t i : {0, 2, 3, 4}) KT_CHECK_CLOSE(by_hand[i], values(composed[i]), dt == kFloat64 ? 1e-12 : 2e-5);
      }
      const double tol = dt == kFloat64 ? 1e-12 : 2e-5;
      KT_CHECK_CLOSE(fused[0], values(composed[0]), tol);
      for (size_t i = 2; i < 5; ++i) {
        INFO("gradient " << i - 2);
        KT_CHECK_CLOSE(fused[i], values(composed[i]), tol);
      }
      // lse: -inf for rows that see no key, equal elsewhere.
      std::vector<double> lf = values(fused[1]), lc = values(composed[1]);
      for (size_t i = 0; i < lf.size(); ++i) {
        if (std::isinf(lc[i])) CHECK((std::isinf(lf[i]) && lf[i] < 0));
        else CHECK(lf[i] == Approx(lc[i]).epsilon(1e-5));
      }
    }
}

TEST_CASE("a GEMM operand's alignment is the largest power of two up to 256 dividing its address, ld and batch stride") {
  CHECK(gemm_alignment(0x1000, 1024, 0, 1, 2) == 256);      // aligned everywhere: capped at 256
  CHECK(gemm_alignment(0x1002, 1024, 0, 1, 2) == 2);        // a bfloat16 view one element in
  CHECK(gemm_alignment(0x1000, 3, 0, 1, 4) == 4);           // rows of 3 floats
  CHECK(gemm_alignment(0x1000, 64, 5, 2, 4) == 4);          // batches 5 floats apart
  CHECK(gemm_alignment(0x1000, 64, 5, 1, 4) == 256);        // one batch: its stride does not matter
  CHECK(gemm_alignment(0x1040, 64, 4096, 8, 4) == 64);      // the address decides
  CHECK(gemm_alignment(0x1000, 1, 0, 1, 8) == 8);           // a float64 column
}

TEST_CASE("strided loops divide in 32 bits when every index fits, in 64 bits otherwise, to the same offsets") {
  auto buffer = [](std::vector<int64_t> sizes, std::vector<int64_t> strides) {
    Buffer b;
    b.ndim = static_cast<int>(sizes.size());
    for (int d = 0; d < b.ndim; ++d) {
      b.sizes[d] = sizes[static_cast<size_t>(d)];
      b.strides[d] = strides[static_cast<size_t>(d)];
    }
    return b;
  };
  for (int64_t outer : {int64_t(5), int64_t(1) << 29}) {  // offsets up to 4 << 29 + ...: past 2^31 for the second
    const Buffer a = buffer({5, 6, 7}, {outer, 7, 1}), b = buffer({5, 6, 7}, {1, 5, 30});
    const Buffer* bufs[2] = {&a, &b};
    const auto it = StridedIndex<2>::make(bufs);
    CHECK(it.narrow == (outer == 5));
    for (int64_t linear = 0; linear < 5 * 6 * 7; ++linear) {
      int64_t off[2];
      it.offsets(linear, off);
      const int64_t i = linear / 42, j = linear / 7 % 6, k = linear % 7;
      CHECK(off[0] == i * outer + j * 7 + k);
      CHECK(off[1] == i + j * 5 + k * 30);
    }
  }
}

TEST_CASE("linear is x weight^T + bias in one GEMM") {
  Generator gen(47);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    Tensor x = randn({2, 3, 5}, gen, dt), w = randn({7, 5}, gen, dt), b = randn({7}, gen, dt);
    const double tol = dt == kBFloat16 ? 1e-2 : 1e-6;
    KT_CHECK_CLOSE(linear(x, w, b), values(matmul(x.to(kFloat64), w.to(kFloat64).t()) + b.to(kFloat64)), tol);
    KT_CHECK_CLOSE(linear(x, w), values(matmul(x.to(kFloat64), w.to(kFloat64).t())), tol);
    KT_CHECK_CLOSE(linear(x.transpose(0, 1), w, b), values(linear(x.transpose(0, 1).contiguous(), w, b)), 0);
    // The GELU epilogue (tanh approximation), with and without the saved pre-activation.
    std::vector<double> z = values(matmul(x.to(kFloat64), w.to(kFloat64).t()) + b.to(kFloat64));
    for (double& v : z) v = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    KT_CHECK_CLOSE(linear(x, w, b, Activation::GeluTanh), z, tol);
    Tensor xg = x.detach().clone().requires_grad_();
    KT_CHECK_CLOSE(linear(xg, w, b, Activation::GeluTanh), z, tol);
  }
  // No input features: the output is the bias.
  Tensor b = randn({4}, gen);
  CHECK(values(linear(zeros({3, 0}), zeros({4, 0}), b)[2]) == values(b));
  CHECK_THROWS_WITH(linear(randn({2, 5}, gen), randn({7, 4}, gen)), Catch::Contains("expects input (..., in)"));
  CHECK_THROWS_WITH(linear(randn({2, 5}, gen), randn({7, 5}, gen), randn({6}, gen)), Catch::Contains("bias must be"));
  // TF32 is a CUDA setting: float32 CPU results do not change; the guard restores it.
  Tensor x = randn({4, 9}, gen), w = randn({3, 9}, gen);
  std::vector<double> exact = values(linear(x, w));
  {
    SettingsGuard guard;
    settings().allow_tf32 = true;
    CHECK(values(linear(x, w)) == exact);
  }
  CHECK_FALSE(settings().allow_tf32);
}

TEST_CASE("add_layer_norm and add_rms_norm equal the add then the norm") {
  Generator gen(43);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    Tensor x = randn({3, 5, 33}, gen, dt), r = randn({3, 5, 33}, gen, dt), w = randn({33}, gen, dt),
           b = randn({33}, gen, dt);
    Tensor s = x + r;
    auto [sum1, y1] = add_layer_norm(x, r, {33}, w, b);
    CHECK(values(sum1) == values(s));
    CHECK(values(y1) == values(layer_norm(s, {33}, w, b)));  // the same kernel on the same sum
    auto [sum2, y2] = add_rms_norm(x, r.transpose(0, 1).transpose(0, 1), {33}, w);
    CHECK(values(sum2) == values(s));
    CHECK(values(y2) == values(rms_norm(s, {33}, w)));
  }
  Tensor x = randn({2, 4}, gen);
  CHECK_THROWS_WITH(add_layer_norm(x, randn({4, 2}, gen), {4}), Catch::Contains("the residual"));
}

TEST_CASE("swiglu is silu(gate) * up, and squared_norms sums squares per tensor") {
  Generator gen(41);
  for (DType dt : {kFloat64, kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    Tensor g = randn({3, 37}, gen, dt), u = randn({3, 37}, gen, dt);
    std::vector<double> gv = values(g), uv = values(u), want(gv.size());
    for (size_t i = 0; i < gv.size(); ++i) want[i] = gv[i] / (1 + std::exp(-gv[i])) * uv[i];
    KT_CHECK_CLOSE(swiglu(g, u), want, dt == kBFloat16 ? 1e-2 : 1e-6);
  }
  Tensor strided = randn({8, 6}, gen).t();
  KT_CHECK_CLOSE(swiglu(strided, strided), values(silu(strided) * strided), 1e-6);
  CHECK_THROWS_WITH(swiglu(randn({2, 3}, gen), randn({3, 2}, gen)), Catch::Contains("must share shape and dtype"));

  std::vector<Tensor> ts = {randn({5, 7}, gen), randn({300001}, gen, kFloat64), randn({4}, gen, kBFloat16).t(),
                            randn({3, 4}, gen).t()};
  std::vector<double> got = values(squared_norms(ts));
  REQUIRE(got.size() == ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    double want = 0;
    for (double v : values(ts[i])) want += v * v;
    CHECK(got[i] == Approx(want).epsilon(1e-12));
  }
}

TEST_CASE("dropout keeps the expected fraction and scales the rest") {
  Generator gen(12);
  Tensor x = ones({100000});
  Tensor y = dropout(x, 0.3, true, gen);
  std::vector<double> v = values(y);
  int64_t kept = std::count_if(v.begin(), v.end(), [](double e) { return e != 0; });
  CHECK(double(kept) / v.size() == Approx(0.7).margin(0.01));
  for (double e : v) CHECK((e == 0 || std::abs(e - 1 / 0.7) < 1e-6));
  CHECK(dropout(x, 0.3, false).is_same(x));
  CHECK(sum(dropout(x, 1.0, true, gen)).item<double>() == 0.0);
  // The mask is the Philox draw at the generator's offset: replayable.
  Generator a(5), b(5);
  CHECK(values(dropout(x, 0.5, true, a)) == values(dropout(x, 0.5, true, b)));
}

TEST_CASE("varlen attention over packed sequences matches a naive loop per sequence") {
  Generator gen(14);
  // Queries and keys per sequence; the last has more queries than keys (causal rows that see none give 0).
  const std::vector<int64_t> lq = {3, 1, 5, 4}, lk = {4, 1, 5, 2};
  const int64_t Hq = 4, Hkv = 2, D = 6, group = Hq / Hkv;
  std::vector<int64_t> cq{0}, ck{0};
  for (size_t b = 0; b < lq.size(); ++b) {
    cq.push_back(cq.back() + lq[b]);
    ck.push_back(ck.back() + lk[b]);
  }
  Tensor q = randn({cq.back(), Hq, D}, gen, kFloat64), k = randn({ck.back(), Hkv, D}, gen, kFloat64),
         v = randn({ck.back(), Hkv, D}, gen, kFloat64);
  std::vector<double> qv = values(q), kv = values(k), vv = values(v);
  for (bool causal : {false, true}) {
    INFO("causal " << causal);
    std::vector<double> expect(qv.size());
    for (size_t b = 0; b < lq.size(); ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < lq[b]; ++i) {
          const int64_t qi = cq[b] + i, last = causal ? i + lk[b] - lq[b] : lk[b] - 1;
          std::vector<double> s;
          double mx = -INFINITY, tot = 0;
          for (int64_t j = 0; j <= last; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qv[(qi * Hq + h) * D + d] * kv[((ck[b] + j) * Hkv + h / group) * D + d];
            s.push_back(dot / std::sqrt(double(D)));
            mx = std::max(mx, s.back());
          }
          for (double x : s) tot += std::exp(x - mx);
          for (int64_t d = 0; d < D; ++d) {
            double acc = 0;
            for (size_t j = 0; j < s.size(); ++j)
              acc += std::exp(s[j] - mx) / tot * vv[((ck[b] + int64_t(j)) * Hkv + h / group) * D + d];
            expect[(qi * Hq + h) * D + d] = acc;
          }
        }
    Tensor cu_q = tensor(cq).to(kInt32), cu_k = tensor(ck);
    for (AttentionBackend backend : {AttentionBackend::Composed, AttentionBackend::Fused}) {
      INFO("fused " << (backend == AttentionBackend::Fused));  // the fused kernel: every sequence in one call
      SettingsGuard guard;
      settings().attention = backend;
      KT_CHECK_CLOSE(scaled_dot_product_attention_varlen(q, k, v, cu_q, cu_k, {.causal = causal}), expect, 1e-12);
    }
  }
  CHECK_THROWS_WITH(scaled_dot_product_attention_varlen(q, k, v, tensor(std::vector<int64_t>{0, 4, 3, 13}),
                                                        tensor(ck)),
                    Catch::Contains("cu_seqlens_q must rise from 0 to the 13 packed rows, got [0, 4, 3, 13]"));
  CHECK_THROWS_WITH(scaled_dot_product_attention_varlen(q, k, v, tensor(cq), tensor(std::vector<int64_t>{0, 12})),
                    Catch::Contains("cu_seqlens_q has 4 sequences, cu_seqlens_k 1"));
}

TEST_CASE("scaled_dot_product_attention matches a naive loop") {
  std::mt19937 rng(13);
  Generator gen(13);
  for (int trial = 0; trial < 2 * kTrials; ++trial) {
    int64_t B = 1 + rng() % 2, Hkv = 1 + rng() % 2, group = 1 + rng() % 3, Hq = Hkv * group;
    int64_t Tk = 1 + rng() % 9, Tq = trial % 3 == 0 ? 1 + rng() % Tk : Tk, D = 1 + rng() % 8;
    bool causal = trial % 2;
    Tensor q = randn({B, Hq, Tq, D}, gen, kFloat64), k = randn({B, Hkv, Tk, D}, gen, kFloat64),
           v = randn({B, Hkv, Tk, D}, gen, kFloat64);
    std::vector<double> qv = values(q), kv = values(k), vv = values(v), out, lse;
    double scale = 1 / std::sqrt(double(D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          int64_t hk = h / group;
          std::vector<double> s(Tk, -INFINITY);
          double mx = -INFINITY;
          for (int64_t j = 0; j < Tk; ++j) {
            if (causal && j > i + Tk - Tq) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += qv[((b * Hq + h) * Tq + i) * D + d] * kv[((b * Hkv + hk) * Tk + j) * D + d];
            s[j] = dot * scale;
            mx = std::max(mx, s[j]);
          }
          double tot = 0;
          for (int64_t j = 0; j < Tk; ++j) tot += std::exp(s[j] - mx);
          lse.push_back(mx + std::log(tot));
          for (int64_t d = 0; d < D; ++d) {
            double acc = 0;
            for (int64_t j = 0; j < Tk; ++j) acc += std::exp(s[j] - mx) / tot * vv[((b * Hkv + hk) * Tk + j) * D + d];
            out.push_back(acc);
          }
        }
    INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " Tq " << Tq << " Tk " << Tk << " D " << D << " causal "
              << causal);
    auto res = scaled_dot_product_attention_with_lse(q, k, v, {.causal = causal});
    KT_CHECK_CLOSE(res.out, out, 1e-12);
    CHECK(res.lse.dtype() == kFloat32);
    KT_CHECK_CLOSE(res.lse, lse, 1e-6);
  }
  // A query that sees no key (causal, Tq > Tk) gives zeros, not NaN.
  Tensor q = ones({1, 1, 3, 2}), k = ones({1, 1, 2, 2}), v = ones({1, 1, 2, 2});
  auto res = scaled_dot_product_attention_with_lse(q, k, v, {.causal = true});
  CHECK(values(res.out[0][0][0]) == std::vector<double>{0, 0});
  CHECK(std::isinf(res.lse[0][0][0].item<double>()));
  KT_CHECK_CLOSE(res.out[0][0][2], (std::vector<double>{1, 1}), 1e-6);
}

TEST_CASE("attention masks (prefix-LM, key padding, any bool mask) and an additive bias match a naive loop, gradients included") {
  std::mt19937 rng(17);
  Generator gen(17);
  for (int trial = 0; trial < 2 * kTrials; ++trial) {
    const int64_t B = 2, Hkv = 1 + rng() % 2, group = 1 + rng() % 2, Hq = Hkv * group;
    const int64_t Tk = 2 + rng() % 7, Tq = trial % 3 == 0 ? 1 + rng() % Tk : Tk, D = 1 + rng() % 6;
    const int kind = trial % 4;  // prefix-LM; key padding; bidirectional with a bias; all of them
    AttentionOptions o{.causal = kind != 2, .scale = 0.7};
    std::vector<int64_t> prefix(B, 0), keys(B, Tk);
    for (int64_t b = 0; b < B; ++b) {
      prefix[b] = rng() % (Tk + 1);
      keys[b] = trial == 1 && b == 0 ? 0 : rng() % (Tk + 1);  // once, a batch that sees no key
    }
    if (kind == 0 || kind == 3) o.prefix_lengths = tensor(prefix);
    if (kind == 1 || kind == 3) o.key_lengths = tensor(keys).to(kInt32);
    Shape bias_shape = trial % 2 ? Shape{1, Hq, Tq, Tk} : Shape{B, 1, 1, Tk};  // relative bias; per-key bias
    if (kind >= 2) o.bias = randn(bias_shape, gen, kFloat64);
    if (kind == 3) o.mask = rand(trial % 2 ? Shape{B, 1, Tq, Tk} : Shape{1, Hq, Tq, Tk}, gen) > 0.3;
    Tensor q = randn({B, Hq, Tq, D}, gen, kFloat64), k = randn({B, Hkv, Tk, D}, gen, kFloat64),
           v = randn({B, Hkv, Tk, D}, gen, kFloat64);
    std::vector<double> qv = values(q), kv = values(k), vv = values(v), out, lse;
    std::vector<double> bv = o.bias.defined() ? values(o.bias.expand({B, Hq, Tq, Tk}).contiguous()) : std::vector<double>{};
    std::vector<double> mv = o.mask.defined() ? values(o.mask.expand({B, Hq, Tq, Tk}).contiguous()) : std::vector<double>{};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t hk = h / group;
          std::vector<double> s(Tk, -INFINITY);
          double mx = -INFINITY;
          for (int64_t j = 0; j < Tk; ++j) {
            bool seen = !o.causal || j <= i + Tk - Tq || (o.prefix_lengths.defined() && j < prefix[b]);
            if (o.key_lengths.defined() && j >= keys[b]) seen = false;
            if (!mv.empty() && mv[((b * Hq + h) * Tq + i) * Tk + j] == 0) seen = false;
            if (!seen) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += qv[((b * Hq + h) * Tq + i) * D + d] * kv[((b * Hkv + hk) * Tk + j) * D + d];
            s[j] = dot * 0.7 + (bv.empty() ? 0.0 : bv[((b * Hq + h) * Tq + i) * Tk + j]);
            mx = std::max(mx, s[j]);
          }
          double tot = 0;
          for (int64_t j = 0; j < Tk; ++j) tot += mx == -INFINITY ? 0 : std::exp(s[j] - mx);
          lse.push_back(mx == -INFINITY ? -INFINITY : mx + std::log(tot));
          for (int64_t d = 0; d < D; ++d) {
            double acc = 0;
            for (int64_t j = 0; j < Tk && tot > 0; ++j) acc += std::exp(s[j] - mx) / tot * vv[((b * Hkv + hk) * Tk + j) * D + d];
            out.push_back(acc);
          }
        }
    INFO("kind " << kind << " Hq " << Hq << " Hkv " << Hkv << " Tq " << Tq << " Tk " << Tk << " D " << D);
    for (AttentionBackend backend : {AttentionBackend::Auto, AttentionBackend::Fused}) {  // the fused one falls back
      SettingsGuard guard;
      settings().attention = backend;
      auto res = scaled_dot_product_attention_with_lse(q, k, v, o);
      KT_CHECK_CLOSE(res.out, out, 1e-12);
      KT_CHECK_CLOSE(res.lse, lse, 1e-6);
    }
    if (trial < 4) {
      AttentionOptions g = o;
      g.bias = o.bias.defined() ? o.bias.detach().contiguous().requires_grad_() : Tensor();
      std::vector<Tensor> inputs{q.requires_grad_(), k.requires_grad_(), v.requires_grad_()};
      if (g.bias.defined()) inputs.push_back(g.bias);
      kt::check_grad([&](const std::vector<Tensor>& x) {
        AttentionOptions with = g;
        if (x.size() > 3) with.bias = x[3];
        return scaled_dot_product_attention(x[0], x[1], x[2], with);
      }, inputs);
    }
  }
  Tensor q = randn({2, 2, 3, 4}, gen), k = randn({2, 2, 5, 4}, gen);
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.prefix_lengths = tensor(std::vector<int64_t>{1, 2})}),
                    Catch::Contains("prefix-LM mask, which needs causal = true"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.key_lengths = tensor(std::vector<int64_t>{1, 6})}),
                    Catch::Contains("key_lengths[1] = 6 is outside [0, 5]"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.alibi_slopes = ones({3})}),
                    Catch::Contains("alibi_slopes must be (Hq) = (2) float32"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.key_lengths = tensor(std::vector<int64_t>{1})}),
                    Catch::Contains("key_lengths must be (B) = (2) integers"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.bias = randn({2, 2, 3, 5}, gen, kFloat64)}),
                    Catch::Contains("bias must be in the query's dtype"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.mask = ones({1, 1, 3, 5})}),
                    Catch::Contains("mask must be bool (true: seen)"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, k, {.bias = randn({3, 5}, gen).view({1, 1, 3, 5}).expand({1, 1, 3, 5}).narrow(3, 0, 4)}),
                    Catch::Contains("broadcast"));
  CHECK_THROWS_WITH(scaled_dot_product_attention_varlen(q[0].transpose(0, 1), k[0].transpose(0, 1), k[0].transpose(0, 1),
                                                        tensor(std::vector<int64_t>{0, 3}), tensor(std::vector<int64_t>{0, 5}),
                                                        {.bias = randn({1, 2, 3, 5}, gen)}),
                    Catch::Contains("takes causal and scale"));
}

TEST_CASE("the CPU thread count changes no result: GEMMs split by rows, columns and batch, row loops, norms") {
  Generator gen(71);
  const int before = get_num_threads();
  CHECK_THROWS_WITH(set_num_threads(0), Catch::Contains("at least one thread"));
  Tensor tall_a = randn({300, 96}, gen), tall_b = randn({96, 80}, gen);    // rows split
  Tensor wide_a = randn({20, 300}, gen), wide_b = randn({300, 700}, gen);  // columns split
  Tensor many_a = randn({64, 32, 48}, gen), many_b = randn({64, 48, 32}, gen);  // small products over the batch
  Tensor strided = randn({96, 300}, gen).t();  // a transposed operand, split by rows
  Tensor rows = randn({512, 130}, gen), big = randn({200000}, gen);
  auto results = [&] {
    return std::vector<Tensor>{matmul(tall_a, tall_b), matmul(wide_a, wide_b), matmul(many_a, many_b),
                               matmul(strided, tall_b), layer_norm(rows, {130}), softmax(rows, -1),
                               squared_norms({big, rows}), sum(big)};
  };
  set_num_threads(1);
  REQUIRE(get_num_threads() == 1);
  const std::vector<Tensor> one = results();
  set_num_threads(3);
  REQUIRE(get_num_threads() == 3);
  const std::vector<Tensor> three = results();
  set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("result " << i);
    // GEMM parts may round alike or not (BLAS's edge kernels); everything else is bitwise the same.
    if (i < 4) KT_CHECK_CLOSE(three[i], values(one[i]), 1e-6);
    else CHECK(values(three[i]) == values(one[i]));
  }
  // Each matches float64.
  KT_CHECK_CLOSE(three[0], values(matmul(tall_a.to(kFloat64), tall_b.to(kFloat64))), 1e-4);
  KT_CHECK_CLOSE(three[1], values(matmul(wide_a.to(kFloat64), wide_b.to(kFloat64))), 1e-4);
  KT_CHECK_CLOSE(three[2], values(matmul(many_a.to(kFloat64), many_b.to(kFloat64))), 1e-4);
  KT_CHECK_CLOSE(three[3], values(matmul(strided.to(kFloat64), tall_b.to(kFloat64))), 1e-4);
}
