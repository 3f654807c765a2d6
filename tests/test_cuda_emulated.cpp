// kiln's CUDA kernel files run on the CPU (tests/emulated: the device code
// through cuda_emulation.h, under the namespace kiln::kernels::cuda_emulated)
// against their CPU twins and the float64 reference. Machines without a GPU
// thereby execute the kernels' indexing, tiling, masking, reductions and
// fragment layouts; the `gpu` label runs the same kernels on hardware.

#include <algorithm>
#include <cmath>
#include <numeric>

#include "helpers.h"
#include "kiln/kernels/cpu.h"

#define cuda cuda_emulated
#include "cudnn_sequence_tables.h"
#include "kiln/kernels/cuda.h"
#undef cuda

namespace kiln::kernels::cuda_emulated::planted {  // tests/emulated/planted.cpp
void copy_in_two_groups(const float* in, float* out, bool wait_one_too_few);
void barrier_from_two_sites(float* out, bool split);
void shift_left_in_shared(const float* in, float* out, bool barrier);
void shuffle_with_returned_lanes(float* out, bool early_return);
void launch_empty(unsigned blocks_x, unsigned blocks_y, unsigned threads, size_t dynamic_bytes, int reserved_bytes);
}  // namespace kiln::kernels::cuda_emulated::planted

using namespace kiln;
using kt::values;
namespace emu = kiln::kernels::cuda_emulated;
namespace cpu = kiln::kernels::cpu;

namespace {

double tolerance(DType t) {
  switch (t) {
    case kFloat64: return 1e-12;
    case kFloat32: return 2e-5;
    case kFloat16: return 4e-3;
    default: return 3e-2;
  }
}

// An output buffer per backend, compared after both have run.
struct Twin {
  Tensor cpu, emu;
  explicit Twin(const Shape& shape, DType dt = kFloat32) : cpu(zeros(shape, dt)), emu(zeros(shape, dt)) {}
  void check(double tol, const char* what) const {
    INFO(what);
    KT_CHECK_CLOSE(emu, values(cpu), tol);
  }
};

struct AttentionCase {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  std::vector<int64_t> prefix = {};  // per batch: a prefix-LM mask (causal); empty for none
  bool alibi = false;                // ALiBi slopes 2^-(h+1) per query head
};

// The emulated attention backward from the forward's out and lse against the
// gradients of the float64 reference `ref` (q, k, v leaves, backward done).
void check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& out,
                              const Tensor& lse, const AttentionGeometry& geometry, const std::vector<Tensor>& ref,
                              double tol) {
  Tensor dq = empty_like(q), dk = empty_like(k), dv = empty_like(v);
  emu::attention_backward(dq.buffer(), dk.buffer(), dv.buffer(), dout.buffer(), q.buffer(), k.buffer(), v.buffer(),
                          out.buffer(), lse.buffer(), geometry, 1.0 / std::sqrt(double(geometry.head_dim)));
  const Tensor grads[3] = {dq, dk, dv};
  for (int i = 0; i < 3; ++i) {
    INFO("gradient of " << "qkv"[i]);
    KT_CHECK_CLOSE(grads[i], values(ref[i].grad()), tol);
  }
}

// Forward and backward through the emulated CUDA attention (the tensor-core
// kernels for bf16/f16 with D 64 or 128, the general kernels otherwise),
// against the composed attention in float64 on the same rounded inputs.
void check_attention(const AttentionCase& c, DType dt, Generator& gen) {
  INFO(dtype_name(dt) << " D " << c.D << " B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " Tq " << c.Tq
                      << " Tk " << c.Tk << " causal " << c.causal << " prefix " << c.prefix.size() << " alibi "
                      << c.alibi);
  Tensor q = randn({c.B, c.Hq, c.Tq, c.D}, gen, dt), k = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt);
  Tensor v = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt), dout = randn({c.B, c.Hq, c.Tq, c.D}, gen, dt);
  const double scale = 1.0 / std::sqrt(double(c.D));
  Tensor out = empty(q.sizes(), dt), lse = empty({c.B, c.Hq, c.Tq});
  const Tensor prefix = c.prefix.empty() ? Tensor() : tensor(c.prefix);
  std::vector<float> slope_values;
  for (int64_t h = 0; h < c.Hq; ++h) slope_values.push_back(std::ldexp(1.0f, -static_cast<int>(h + 1)));
  const Tensor slopes = c.alibi ? tensor(slope_values) : Tensor();
  const AttentionGeometry geometry{.batch = c.B, .heads_q = c.Hq, .heads_kv = c.Hkv, .head_dim = c.D, .Tq = c.Tq,
                                   .Tk = c.Tk, .causal = c.causal,
                                   .prefix = prefix.defined() ? prefix.data_ptr<int64_t>() : nullptr,
                                   .slopes = slopes.defined() ? slopes.data_ptr<float>() : nullptr};
  emu::attention(out.buffer(), lse.buffer(), q.buffer(), k.buffer(), v.buffer(), geometry, scale);

  std::vector<Tensor> ref = {q.to(kFloat64).requires_grad_(), k.to(kFloat64).requires_grad_(),
                             v.to(kFloat64).requires_grad_()};
  SettingsGuard composed;  // the reference: the composed ops, whatever the kernels take
  settings().attention = AttentionBackend::Composed;
  AttentionOutput r = scaled_dot_product_attention_with_lse(
      ref[0], ref[1], ref[2], {.causal = c.causal, .prefix_lengths = prefix, .alibi_slopes = slopes});
  const double tol = dt == kFloat32 ? 1e-5 : tolerance(dt);
  KT_CHECK_CLOSE(out, values(r.out), tol);
  std::vector<double> lr = values(r.lse), le = values(lse);
  for (size_t i = 0; i < lr.size(); ++i) {
    if (std::isinf(lr[i])) CHECK((std::isinf(le[i]) && le[i] < 0));
    else CHECK(le[i] == Approx(lr[i]).margin(2e-2));
  }

  sum(r.out * dout.to(kFloat64)).backward();
  check_attention_backward(q, k, v, dout, out, lse, geometry, ref, 2 * tol);
}

// Packed sequences (lengths lq, lk) through one emulated launch, against the
// composed attention per sequence in float64.
void check_packed_attention(const std::vector<int64_t>& lq, const std::vector<int64_t>& lk, int64_t Hq, int64_t Hkv,
                            int64_t D, bool causal, DType dt, Generator& gen) {
  INFO(dtype_name(dt) << " D " << D << " Hq " << Hq << " Hkv " << Hkv << " causal " << causal);
  std::vector<int64_t> cq{0}, ck{0};
  for (size_t b = 0; b < lq.size(); ++b) {
    cq.push_back(cq.back() + lq[b]);
    ck.push_back(ck.back() + lk[b]);
  }
  Tensor q = randn({cq.back(), Hq, D}, gen, dt), k = randn({ck.back(), Hkv, D}, gen, dt);
  Tensor v = randn({ck.back(), Hkv, D}, gen, dt), dout = randn({cq.back(), Hq, D}, gen, dt);
  Tensor cu_q = tensor(cq), cu_k = tensor(ck);
  const AttentionGeometry geometry{.batch = int64_t(lq.size()), .heads_q = Hq, .heads_kv = Hkv, .head_dim = D,
                                   .Tq = *std::max_element(lq.begin(), lq.end()),
                                   .Tk = *std::max_element(lk.begin(), lk.end()), .cu_q = cu_q.data_ptr<int64_t>(),
                                   .cu_k = cu_k.data_ptr<int64_t>(), .causal = causal};
  const double scale = 1.0 / std::sqrt(double(D));
  Tensor out = empty(q.sizes(), dt), lse = empty({cq.back(), Hq});
  emu::attention(out.buffer(), lse.buffer(), q.buffer(), k.buffer(), v.buffer(), geometry, scale);
  std::vector<Tensor> ref = {q.to(kFloat64).requires_grad_(), k.to(kFloat64).requires_grad_(),
                             v.to(kFloat64).requires_grad_()};
  Tensor expect = scaled_dot_product_attention_varlen(ref[0], ref[1], ref[2], cu_q, cu_k, {.causal = causal});
  KT_CHECK_CLOSE(out, values(expect), tolerance(dt));

  sum(expect * dout.to(kFloat64)).backward();
  check_attention_backward(q, k, v, dout, out, lse, geometry, ref, 2 * tolerance(dt));
}

}  // namespace

TEST_CASE("emulated attention over packed sequences: one launch for sequences of every length") {
  Generator gen(35);
  // Sequences shorter than a tile, spanning two, empty on either side, and more queries than keys.
  const std::vector<int64_t> lq = {70, 5, 0, 3, 40}, lk = {90, 5, 4, 0, 20};
  for (bool causal : {false, true}) {
    check_packed_attention(lq, lk, 2, 1, 64, causal, kBFloat16, gen);  // the tensor-core kernels
    check_packed_attention(lq, lk, 2, 1, 24, causal, kFloat32, gen);   // the general kernels
  }
}

TEST_CASE("emulated attention: tensor-core and general kernels, ragged lengths, GQA, causal alignments") {
  Generator gen(31);
  for (bool causal : {false, true}) {
    check_attention({1, 2, 1, 70, 45, 64, causal}, kBFloat16, gen);   // Tq > Tk: causal rows that see no key
    check_attention({2, 1, 1, 20, 130, 64, causal}, kBFloat16, gen);  // few queries, many keys
    check_attention({1, 2, 1, 37, 50, 80, causal}, kFloat32, gen);    // the general kernels
  }
  check_attention({1, 4, 2, 64, 64, 64, true}, kBFloat16, gen);  // whole tiles, two query heads per kv head
  check_attention({1, 1, 1, 33, 65, 128, true}, kFloat16, gen);
  check_attention({1, 2, 2, 9, 17, 32, true}, kBFloat16, gen);  // a head dim the tensor-core kernels leave
}

TEST_CASE("emulated attention with a prefix-LM mask: prefixes inside a tile, across tiles, whole, and none") {
  Generator gen(37);
  check_attention({2, 2, 1, 70, 70, 64, true, {30, 0}}, kBFloat16, gen);    // the tensor-core kernels
  check_attention({2, 1, 1, 100, 100, 64, true, {90, 100}}, kBFloat16, gen);
  check_attention({1, 1, 1, 20, 130, 64, true, {110}}, kBFloat16, gen);     // decoding rows after a long prefix
  check_attention({2, 2, 1, 37, 50, 80, true, {45, 3}}, kFloat32, gen);     // the general kernels
}

TEST_CASE("emulated attention with ALiBi: the general kernels take the slopes, the tensor-core kernels leave them") {
  Generator gen(39);
  check_attention({2, 4, 2, 70, 70, 64, true, {}, true}, kBFloat16, gen);  // bf16, D 64: the general kernels still
  check_attention({1, 2, 1, 37, 50, 24, true, {}, true}, kFloat32, gen);
  check_attention({1, 2, 2, 30, 30, 32, false, {}, true}, kFloat32, gen);
  check_attention({2, 2, 1, 70, 70, 64, true, {30, 0}, true}, kBFloat16, gen);  // with a prefix-LM mask
}

TEST_CASE("emulated row kernels match their CPU twins: softmax (causal), norms with residual, cross-entropy") {
  Generator gen(32);
  for (DType dt : {kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    const double tol = tolerance(dt);
    for (int64_t C : {1, 7, 64, 300}) {  // 64 (and 300 in float32) take 16-byte packs
      INFO("C " << C);
      const int64_t rows = 6;
      Tensor x = randn({rows, C}, gen, dt) * 3.0, g = randn({rows, C}, gen, dt);
      for (int64_t tq : {int64_t(0), int64_t(3), int64_t(6)})
        for (bool log : {false, true}) {
          Twin y({rows, C}, dt), dx({rows, C}, dt);
          cpu::softmax(y.cpu.buffer(), x.buffer(), log, tq);
          emu::softmax(y.emu.buffer(), x.buffer(), log, tq);
          y.check(tol, "softmax");
          if (tq) continue;  // the backward has no mask: masked outputs are 0 already
          cpu::softmax_backward(dx.cpu.buffer(), g.buffer(), y.cpu.buffer(), log);
          emu::softmax_backward(dx.emu.buffer(), g.buffer(), y.cpu.buffer(), log);
          dx.check(tol, "softmax_backward");
        }
      // LayerNorm with the residual fused, and its backward with parameter gradients.
      Tensor res = randn({rows, C}, gen, dt), w = randn({C}, gen), b = randn({C}, gen);
      Twin y({rows, C}, dt), s({rows, C}, dt), mean({rows}), rstd({rows});
      cpu::layer_norm(y.cpu.buffer(), mean.cpu.buffer(), rstd.cpu.buffer(), x.buffer(), res.buffer(), s.cpu.buffer(),
                      w.buffer(), b.buffer(), 1e-5);
      emu::layer_norm(y.emu.buffer(), mean.emu.buffer(), rstd.emu.buffer(), x.buffer(), res.buffer(), s.emu.buffer(),
                      w.buffer(), b.buffer(), 1e-5);
      y.check(2 * tol, "layer_norm");
      s.check(tol, "layer_norm's residual sum");
      rstd.check(1e-5, "layer_norm rstd");
      Twin dx({rows, C}, dt), dw({C}), db({C});
      cpu::layer_norm_backward(dx.cpu.buffer(), dw.cpu.buffer(), db.cpu.buffer(), g.buffer(), s.cpu.buffer(),
                               w.buffer(), mean.cpu.buffer(), rstd.cpu.buffer());
      emu::layer_norm_backward(dx.emu.buffer(), dw.emu.buffer(), db.emu.buffer(), g.buffer(), s.cpu.buffer(),
                               w.buffer(), mean.cpu.buffer(), rstd.cpu.buffer());
      dx.check(4 * tol, "layer_norm_backward dx");
      dw.check(1e-4, "layer_norm_backward dw");
      db.check(1e-4, "layer_norm_backward db");
      Twin ry({rows, C}, dt), rrstd({rows}), rdx({rows, C}, dt), rdw({C});
      cpu::rms_norm(ry.cpu.buffer(), rrstd.cpu.buffer(), x.buffer(), Buffer{}, Buffer{}, w.buffer(), 1e-6);
      emu::rms_norm(ry.emu.buffer(), rrstd.emu.buffer(), x.buffer(), Buffer{}, Buffer{}, w.buffer(), 1e-6);
      ry.check(2 * tol, "rms_norm");
      cpu::rms_norm_backward(rdx.cpu.buffer(), rdw.cpu.buffer(), g.buffer(), x.buffer(), w.buffer(),
                             rrstd.cpu.buffer());
      emu::rms_norm_backward(rdx.emu.buffer(), rdw.emu.buffer(), g.buffer(), x.buffer(), w.buffer(),
                             rrstd.cpu.buffer());
      if (C > 1) rdx.check(4 * tol, "rms_norm_backward dx");  // C 1: zero up to eps, rounding noise either side
      rdw.check(1e-4, "rms_norm_backward dw");
      // Cross-entropy with an ignored row and a z-loss.
      Tensor target = randint(0, C, {rows}, gen);
      target.data_ptr<int64_t>()[2] = -100;
      Twin loss({rows}, dt), lse({rows}), dlogits({rows, C}, dt);
      cpu::cross_entropy(loss.cpu.buffer(), lse.cpu.buffer(), x.buffer(), target.buffer(), -100, 0.1);
      emu::cross_entropy(loss.emu.buffer(), lse.emu.buffer(), x.buffer(), target.buffer(), -100, 0.1);
      loss.check(tol, "cross_entropy");
      Tensor dloss = randn({rows}, gen, dt);
      cpu::cross_entropy_backward(dlogits.cpu.buffer(), dloss.buffer(), x.buffer(), target.buffer(), lse.cpu.buffer(),
                                  -100, 0.1);
      emu::cross_entropy_backward(dlogits.emu.buffer(), dloss.buffer(), x.buffer(), target.buffer(), lse.cpu.buffer(),
                                  -100, 0.1);
      dlogits.check(tol, "cross_entropy_backward");
    }
  }
}

TEST_CASE("emulated elementwise, reduction, indexing and optimizer kernels match their CPU twins") {
  Generator gen(33);
  for (DType dt : {kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    const double tol = tolerance(dt);
    // Contiguous operands take the vector kernel (and its remainder), a transposed one the strided kernel.
    Tensor a = randn({5, 203}, gen, dt), b = randn({5, 203}, gen, dt), bt = randn({203, 5}, gen, dt).t();
    for (const Tensor& rhs : {b, bt}) {
      Twin sum_ab({5, 203}, dt), unary({5, 203}, dt);
      cpu::binary(BinaryOp::Add, sum_ab.cpu.buffer(), a.buffer(), rhs.buffer());
      emu::binary(BinaryOp::Add, sum_ab.emu.buffer(), a.buffer(), rhs.buffer());
      sum_ab.check(tol, "add");
      for (UnaryOp op : {UnaryOp::GeluTanh, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Floor, UnaryOp::Ceil, UnaryOp::Round}) {
        cpu::unary(op, unary.cpu.buffer(), rhs.buffer(), 0, 0);
        emu::unary(op, unary.emu.buffer(), rhs.buffer(), 0, 0);
        unary.check(tol, fmt::format("unary op {}", static_cast<int>(op)).c_str());
      }
    }
    // Running sums over rows of 203: six chunks of a warp, the last one partial.
    for (bool reverse : {false, true}) {
      Twin scan({5, 203}, dt);
      cpu::cumsum(scan.cpu.buffer(), a.buffer(), reverse);
      emu::cumsum(scan.emu.buffer(), a.buffer(), reverse);
      scan.check(8 * tol, reverse ? "cumsum reversed" : "cumsum");
    }
    Tensor counts = randint(-9, 9, {3, 70}, gen);
    Twin int_scan({3, 70}, kInt64);
    cpu::cumsum(int_scan.cpu.buffer(), counts.buffer(), false);
    emu::cumsum(int_scan.emu.buffer(), counts.buffer(), false);
    int_scan.check(0, "cumsum int64");
    Twin cast({5, 203});
    cpu::copy(cast.cpu.buffer(), a.buffer());
    emu::copy(cast.emu.buffer(), a.buffer());
    cast.check(0, "cast to float32");
    // Sum over the rows' dim.
    Twin total({1, 203});
    cpu::reduce(ReduceOp::Sum, total.cpu.buffer(), a.to(kFloat32).buffer(), 1u, 0);
    emu::reduce(ReduceOp::Sum, total.emu.buffer(), a.to(kFloat32).buffer(), 1u, 0);
    total.check(1e-5, "sum over dim 0");
    // index_select along dim 0 and the general index_add (the sorted path needs CUB).
    Tensor idx = randint(0, 5, {11}, gen);
    Twin sel({11, 203}, dt), acc({5, 203}, dt);
    cpu::index_select(sel.cpu.buffer(), a.buffer(), 0, idx.buffer());
    emu::index_select(sel.emu.buffer(), a.buffer(), 0, idx.buffer());
    sel.check(0, "index_select");
    Tensor src = randn({11, 203}, gen, dt);
    cpu::index_add(acc.cpu.buffer(), 0, idx.buffer(), src.buffer());
    emu::index_add(acc.emu.buffer(), 0, idx.buffer(), src.buffer());
    acc.check(2 * tol, "index_add");
  }
  // Multi-tensor AdamW writing bfloat16 compute copies, across chunk boundaries.
  std::vector<Tensor> p_cpu, p_emu, g, m_cpu, m_emu, v_cpu, v_emu, c_cpu, c_emu;
  for (int64_t n : {int64_t(3), int64_t(70000)}) {
    Tensor p = randn({n}, gen), m = randn({n}, gen) * 0.1, v = rand({n}, gen);
    p_cpu.push_back(p.clone());
    p_emu.push_back(p.clone());
    m_cpu.push_back(m.clone());
    m_emu.push_back(m.clone());
    v_cpu.push_back(v.clone());
    v_emu.push_back(v.clone());
    c_cpu.push_back(zeros({n}, kBFloat16));
    c_emu.push_back(zeros({n}, kBFloat16));
    g.push_back(randn({n}, gen, kBFloat16));
  }
  auto buffers = [](const std::vector<Tensor>& ts) {
    std::vector<Buffer> out;
    for (const Tensor& t : ts) out.push_back(t.buffer());
    return out;
  };
  const AdamWStep step{1e-2, 0.9, 0.99, 1e-8, 0.1, 0.1, 0.01};
  cpu::adamw_update(buffers(p_cpu), buffers(g), buffers(m_cpu), buffers(v_cpu), buffers(c_cpu), step);
  emu::adamw_update(buffers(p_emu), buffers(g), buffers(m_emu), buffers(v_emu), buffers(c_emu), step);
  for (size_t i = 0; i < p_cpu.size(); ++i) {
    KT_CHECK_CLOSE(p_emu[i], values(p_cpu[i]), 1e-6);
    KT_CHECK_CLOSE(v_emu[i], values(v_cpu[i]), 1e-6);
    CHECK(values(c_emu[i]) == values(p_emu[i].to(kBFloat16)));
  }
}

TEST_CASE("emulated draws, fills, where, SwiGLU, RoPE, norms of many tensors, Lion, gather, scatter_add, scatter") {
  Generator gen(34);
  // Philox: the same numbers as the CPU for the same seed and offset.
  Twin u({1001}), n({1001}), r({1001}, kInt64), f({3, 7}, kBFloat16), ar({9});
  cpu::uniform(u.cpu.buffer(), 5, 17, -1, 2);
  emu::uniform(u.emu.buffer(), 5, 17, -1, 2);
  u.check(1e-7, "uniform");
  cpu::normal(n.cpu.buffer(), 5, 17, 0.5, 2);
  emu::normal(n.emu.buffer(), 5, 17, 0.5, 2);
  n.check(1e-6, "normal");
  cpu::randint(r.cpu.buffer(), 5, 17, -3, 40);
  emu::randint(r.emu.buffer(), 5, 17, -3, 40);
  r.check(0, "randint");
  cpu::fill(f.cpu.buffer(), 1.5);
  emu::fill(f.emu.buffer(), 1.5);
  f.check(0, "fill");
  cpu::arange(ar.cpu.buffer(), 2, 0.5);
  emu::arange(ar.emu.buffer(), 2, 0.5);
  ar.check(0, "arange");

  for (DType dt : {kFloat32, kBFloat16}) {
    INFO(dtype_name(dt));
    const double tol = tolerance(dt);
    Tensor cond = rand({4, 33}, gen) > 0.5, x = randn({4, 33}, gen, dt), y = randn({4, 33}, gen, dt);
    Twin w({4, 33}, dt);
    cpu::where(w.cpu.buffer(), cond.buffer(), x.buffer(), y.buffer());
    emu::where(w.emu.buffer(), cond.buffer(), x.buffer(), y.buffer());
    w.check(0, "where");
    // SwiGLU on aligned buffers (vector kernel) and on views one element in (scalar kernel).
    Tensor gate = randn({2, 401}, gen, dt), up = randn({2, 401}, gen, dt), dout = randn({2, 401}, gen, dt);
    for (int64_t at : {int64_t(0), int64_t(1)}) {
      const int64_t len = 801 - at;
      auto view = [&](const Tensor& t) { return t.reshape({-1}).narrow(0, at, len); };
      Twin out({len}, dt), dgate({len}, dt), dup({len}, dt);
      cpu::swiglu(out.cpu.buffer(), view(gate).buffer(), view(up).buffer());
      emu::swiglu(out.emu.buffer(), view(gate).buffer(), view(up).buffer());
      out.check(tol, "swiglu");
      cpu::swiglu_backward(dgate.cpu.buffer(), dup.cpu.buffer(), view(dout).buffer(), view(gate).buffer(),
                           view(up).buffer());
      emu::swiglu_backward(dgate.emu.buffer(), dup.emu.buffer(), view(dout).buffer(), view(gate).buffer(),
                           view(up).buffer());
      dgate.check(tol, "swiglu_backward dgate");
      dup.check(tol, "swiglu_backward dup");
    }
    // RoPE, forward and inverse, with float32 tables.
    Tensor xr = randn({2, 3, 5, 8}, gen, dt), cosines = rand({5, 4}, gen), sines = rand({5, 4}, gen);
    for (bool inverse : {false, true}) {
      Twin rot({2, 3, 5, 8}, dt);
      cpu::rope(rot.cpu.buffer(), xr.buffer(), cosines.buffer(), sines.buffer(), inverse);
      emu::rope(rot.emu.buffer(), xr.buffer(), cosines.buffer(), sines.buffer(), inverse);
      rot.check(tol, "rope");
    }
    // gather and scatter_add along dim 1.
    Tensor src = randn({4, 9}, gen, dt), index = randint(0, 9, {4, 6}, gen);
    Twin gathered({4, 6}, dt), scattered({4, 9}, dt);
    cpu::gather(gathered.cpu.buffer(), src.buffer(), 1, index.buffer());
    emu::gather(gathered.emu.buffer(), src.buffer(), 1, index.buffer());
    gathered.check(0, "gather");
    Tensor add = randn({4, 6}, gen, dt);
    cpu::scatter_add(scattered.cpu.buffer(), 1, index.buffer(), add.buffer());
    emu::scatter_add(scattered.emu.buffer(), 1, index.buffer(), add.buffer());
    scattered.check(2 * tol, "scatter_add");
    // scatter along dim 1, distinct positions in each row (a GPU lets any repeated write win).
    std::vector<int64_t> positions;
    for (int64_t r = 0; r < 4; ++r)
      for (int64_t c = 0; c < 6; ++c) positions.push_back((2 * c + r) % 9);
    Tensor distinct = tensor(positions).view({4, 6});
    Twin written({4, 9}, dt);
    cpu::scatter(written.cpu.buffer(), 1, distinct.buffer(), add.buffer());
    emu::scatter(written.emu.buffer(), 1, distinct.buffer(), add.buffer());
    written.check(0, "scatter");
    // Maximum and variance over the last dim.
    Twin mx({4, 1}, dt), var({4, 1}, dt);
    cpu::reduce(ReduceOp::Max, mx.cpu.buffer(), src.buffer(), 2u, 0);
    emu::reduce(ReduceOp::Max, mx.emu.buffer(), src.buffer(), 2u, 0);
    mx.check(0, "max");
    cpu::reduce(ReduceOp::Var, var.cpu.buffer(), src.buffer(), 2u, 1);
    emu::reduce(ReduceOp::Var, var.emu.buffer(), src.buffer(), 2u, 1);
    var.check(tol, "var");
  }

  // Squared norms of tensors of several dtypes and sizes (one spans two chunks).
  std::vector<Tensor> xs = {randn({70001}, gen), randn({3}, gen, kBFloat16), randn({0}, gen), randn({513}, gen)};
  std::vector<Buffer> xb;
  for (const Tensor& t : xs) xb.push_back(t.buffer());
  Twin norms({4}, kFloat64);
  cpu::squared_norms(norms.cpu.buffer(), xb);
  emu::squared_norms(norms.emu.buffer(), xb);
  norms.check(1e-12, "squared_norms");

  // Lion over two tensors (one spanning two chunks), with a float16 compute copy.
  Tensor p = randn({70001}, gen), m = randn({70001}, gen) * 0.1, g = randn({70001}, gen);
  Tensor p2 = p.clone(), m2 = m.clone(), c1 = zeros({70001}, kFloat16), c2 = zeros({70001}, kFloat16);
  const LionStep step{1e-2, 0.9, 0.99, 0.1};
  cpu::lion_update({p.buffer()}, {g.buffer()}, {m.buffer()}, {c1.buffer()}, step);
  emu::lion_update({p2.buffer()}, {g.buffer()}, {m2.buffer()}, {c2.buffer()}, step);
  KT_CHECK_CLOSE(p2, values(p), 1e-6);
  KT_CHECK_CLOSE(m2, values(m), 1e-6);
  CHECK(values(c2) == values(p2.to(kFloat16)));
}

TEST_CASE("emulated cuDNN sequence tables: each packed sequence's lengths and first elements, empty ones after") {
  // Four sequences with an empty one (queries 70, 1, 0, 79; keys 90, 1, 29, 150), then 3000 of rising lengths,
  // which take several blocks.
  for (std::vector<int64_t> cu_q : {std::vector<int64_t>{0, 70, 71, 71, 150}, std::vector<int64_t>(3001)}) {
    std::vector<int64_t> cu_k = {0, 90, 91, 120, 270};
    if (cu_q.size() > 5) {
      cu_k.assign(cu_q.size(), 0);
      for (size_t b = 1; b < cu_q.size(); ++b) {
        cu_q[b] = cu_q[b - 1] + int64_t(b % 7);
        cu_k[b] = cu_k[b - 1] + int64_t(b % 5) + 1;
      }
    }
    // Made up to B entries with empty sequences at the end.
    const int64_t n = static_cast<int64_t>(cu_q.size()) - 1, B = n + 3, Hq = 4, Hkv = 2, D = 128;
    INFO(n << " sequences");
    std::vector<std::byte> memory(emu::cudnn::sequence_tables_bytes(B) + 16);
    void* base = memory.data() + (16 - reinterpret_cast<uintptr_t>(memory.data()) % 16) % 16;
    const emu::cudnn::SequenceTables t =
        emu::cudnn::sequence_tables(base, cu_q.data(), cu_k.data(), n, B, Hq * D, Hkv * D, Hq);
    for (const int32_t* table : {t.length_q, t.length_k, t.start_q, t.start_k, t.start_stats}) {
      CHECK(reinterpret_cast<uintptr_t>(table) % 16 == 0);
      CHECK(reinterpret_cast<const std::byte*>(table + B + 1) <=
            static_cast<const std::byte*>(base) + emu::cudnn::sequence_tables_bytes(B));
    }
    bool all = true;
    for (int64_t b = 0; b <= B; ++b) {
      const int64_t s = std::min(b, n);
      all = all && t.start_q[b] == cu_q[s] * Hq * D && t.start_k[b] == cu_k[s] * Hkv * D &&
            t.start_stats[b] == cu_q[s] * Hq;
      if (b < B)
        all = all && t.length_q[b] == (b < n ? cu_q[b + 1] - cu_q[b] : 0) &&
              t.length_k[b] == (b < n ? cu_k[b + 1] - cu_k[b] : 0);
    }
    CHECK(all);
  }
}

TEST_CASE("emulated MoE dispatch kernels match their CPU twins: gather, combine with drops, the gates' gradient") {
  Generator gen(41);
  const int64_t N = 9, k = 2, C = 70;
  // Choices in a shuffled row order, three of them dropped.
  std::vector<int64_t> slot(N * k), row_choice;
  for (int64_t c = 0; c < N * k; ++c) slot[c] = c % 5 == 3 ? -1 : 0;
  for (int64_t c = N * k - 1; c >= 0; --c)
    if (slot[c] == 0) {
      slot[c] = int64_t(row_choice.size());
      row_choice.push_back(c);
    }
  const int64_t R = int64_t(row_choice.size());
  Tensor slots = tensor(slot).view({N, k}), choices = tensor(row_choice);
  for (DType dt : {kFloat32, kBFloat16, kFloat64}) {
    INFO(dtype_name(dt));
    const DType gate_dtype = dt == kFloat64 ? kFloat64 : kFloat32;
    Tensor x = randn({N, C}, gen, dt), rows = randn({R, C}, gen, dt), dout = randn({N, C}, gen, dt);
    Tensor gates = rand({N, k}, gen, gate_dtype);
    Twin gathered({R, C}, dt), weighted({R, C}, dt), combined({N, C}, dt), summed({N, C}, dt), dgates({N, k}, gate_dtype);
    cpu::moe_gather(gathered.cpu.buffer(), x.buffer(), choices.buffer(), Buffer{}, k);
    emu::moe_gather(gathered.emu.buffer(), x.buffer(), choices.buffer(), Buffer{}, k);
    gathered.check(0, "moe_gather");
    cpu::moe_gather(weighted.cpu.buffer(), x.buffer(), choices.buffer(), gates.buffer(), k);
    emu::moe_gather(weighted.emu.buffer(), x.buffer(), choices.buffer(), gates.buffer(), k);
    weighted.check(tolerance(dt), "moe_gather with gates");
    cpu::moe_combine(combined.cpu.buffer(), rows.buffer(), slots.buffer(), gates.buffer());
    emu::moe_combine(combined.emu.buffer(), rows.buffer(), slots.buffer(), gates.buffer());
    combined.check(tolerance(dt), "moe_combine");
    cpu::moe_combine(summed.cpu.buffer(), rows.buffer(), slots.buffer(), Buffer{});
    emu::moe_combine(summed.emu.buffer(), rows.buffer(), slots.buffer(), Buffer{});
    summed.check(tolerance(dt), "moe_combine without gates");
    cpu::moe_combine_weights_backward(dgates.cpu.buffer(), dout.buffer(), rows.buffer(), slots.buffer());
    emu::moe_combine_weights_backward(dgates.emu.buffer(), dout.buffer(), rows.buffer(), slots.buffer());
    dgates.check(dt == kFloat64 ? 1e-12 : 1e-4, "moe_combine_weights_backward");
    // A dropped choice's gate gets no gradient; a kept one its row's dot product with the token's gradient.
    const std::vector<double> dg = values(dgates.cpu), rv = values(rows), dv = values(dout);
    for (int64_t c = 0; c < N * k; ++c) {
      double dot = 0;
      if (slot[c] >= 0)
        for (int64_t i = 0; i < C; ++i) dot += rv[slot[c] * C + i] * dv[c / k * C + i];
      CHECK(dg[c] == Approx(dot).margin(1e-3));
    }
  }
}

TEST_CASE("the emulator catches planted bugs: a cp.async wait off by one, a split barrier, a removed barrier, "
          "a shuffle with returned lanes, launches past the limits") {
  namespace planted = emu::planted;
  std::vector<float> in(64), out(64);
  std::iota(in.begin(), in.end(), 1.f);
  planted::copy_in_two_groups(in.data(), out.data(), false);
  CHECK(out == in);
  // Waiting with one group still in flight: its half reads the poison, not stale or lucky values.
  std::fill(out.begin(), out.end(), 0.f);
  planted::copy_in_two_groups(in.data(), out.data(), true);
  CHECK(std::vector<float>(out.begin(), out.begin() + 32) == std::vector<float>(in.begin(), in.begin() + 32));
  CHECK(std::all_of(out.begin() + 32, out.end(), [](float v) { return std::isnan(v); }));

  std::vector<float> flags(64);
  planted::barrier_from_two_sites(flags.data(), false);
  CHECK_THROWS_WITH(planted::barrier_from_two_sites(flags.data(), true),
                    Catch::Matchers::Contains("some live threads skip a barrier"));

  // A removed barrier: ThreadSanitizer's race check fails the launch; without it the threads still run in a
  // drawn order, so some read a slot its owner already overwrote.
  std::vector<float> shifted(in.begin() + 1, in.end());
  shifted.push_back(0.f);
  planted::shift_left_in_shared(in.data(), out.data(), true);
  CHECK(out == shifted);
#ifdef KILN_EMULATION_RACECHECK
  CHECK_THROWS_WITH(planted::shift_left_in_shared(in.data(), out.data(), false),
                    Catch::Matchers::Contains("ThreadSanitizer reports a data race between threads of block (0, 0, 0)"));
#else
  planted::shift_left_in_shared(in.data(), out.data(), false);
  CHECK(out != shifted);
#endif

  std::vector<float> lanes(32);
  planted::shuffle_with_returned_lanes(lanes.data(), false);
  CHECK(lanes[0] == 1.f);
  CHECK(lanes[31] == 30.f);
  CHECK_THROWS_WITH(planted::shuffle_with_returned_lanes(lanes.data(), true),
                    Catch::Matchers::Contains("16 lanes wait at a warp exchange (shuffle, ldmatrix or mma) that 16 returned"));

  CHECK_NOTHROW(planted::launch_empty(4, 2, 1024, 48 << 10, 0));
  CHECK_THROWS_WITH(planted::launch_empty(1, 1, 2048, 0, 0), Catch::Matchers::Contains("threads per block"));
  CHECK_THROWS_WITH(planted::launch_empty(1, 70000, 32, 0, 0), Catch::Matchers::Contains("a grid of"));
  CHECK_THROWS_WITH(planted::launch_empty(1, 1, 32, 64 << 10, 0),
                    Catch::Matchers::Contains("cudaFuncAttributeMaxDynamicSharedMemorySize"));
  CHECK_NOTHROW(planted::launch_empty(1, 1, 32, 64 << 10, 64 << 10));
  CHECK_THROWS_WITH(planted::launch_empty(1, 1, 32, 228 << 10, 228 << 10), Catch::Matchers::Contains("227 KiB"));
}

TEST_CASE("emulated reductions in all three shapes match the CPU: a block per output, a thread per column, split sums") {
  Generator gen(34);
  const Tensor wide = randn({40, 1100}, gen);  // 1100 contiguous outputs over dim 0: a thread per column
  const Tensor deep = randn({3, 40000}, gen);  // 3 outputs of 40000: each split in chunks
  struct Case {
    const Tensor* x;
    uint32_t dims;
    ReduceOp op;
    const char* what;
  };
  const Case cases[] = {
      {&wide, 1u, ReduceOp::Sum, "column sums"},       {&wide, 1u, ReduceOp::Mean, "column means"},
      {&wide, 1u, ReduceOp::Max, "column maxima"},     {&wide, 1u, ReduceOp::ArgMin, "column argmins"},
      {&wide, 1u, ReduceOp::Var, "column variances"},  {&deep, 2u, ReduceOp::Sum, "split row sums"},
      {&deep, 2u, ReduceOp::Mean, "split row means"},  {&deep, 2u, ReduceOp::ArgMax, "long row argmaxes"},
      {&deep, 3u, ReduceOp::Sum, "a split full sum"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    Shape shape = c.x->sizes();
    for (int d = 0; d < 2; ++d)
      if (c.dims & (1u << d)) shape[d] = 1;
    const bool arg = c.op == ReduceOp::ArgMax || c.op == ReduceOp::ArgMin;
    Twin out(shape, arg ? kInt64 : kFloat32);
    cpu::reduce(c.op, out.cpu.buffer(), c.x->buffer(), c.dims, 1);
    emu::reduce(c.op, out.emu.buffer(), c.x->buffer(), c.dims, 1);
    out.check(arg ? 0.0 : 1e-4, c.what);
  }
}
