// Process groups, parallel state and data parallelism under mpirun (label
// mpi, 4 ranks); also runs as one process, a world of one.

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {
std::shared_ptr<dist::ProcessGroup> world() { return dist::mpi_world(); }
}  // namespace

TEST_CASE("collectives give the hand-computed results") {
  auto w = world();
  const int r = w->rank(), n = w->size();
  Tensor t = full({3}, r + 1.0);
  w->all_reduce(t);
  CHECK(values(t) == std::vector<double>(3, n * (n + 1) / 2.0));
  Tensor a = full({2}, r + 1.0, kFloat64);
  w->all_reduce(a, dist::ReduceOp::Avg);
  CHECK(values(a) == std::vector<double>(2, (n + 1) / 2.0));
  Tensor m = tensor({double(r), -double(r)});
  w->all_reduce(m, dist::ReduceOp::Max);
  CHECK(values(m) == std::vector<double>{double(n - 1), 0.0});
  Tensor h = full({4}, r + 1.0, kBFloat16);
  w->all_reduce(h);
  CHECK(values(h) == std::vector<double>(4, n * (n + 1) / 2.0));
  Tensor i = full({2}, int64_t(r), kInt64);
  auto work = w->all_reduce_async(i);
  work->wait();
  CHECK(values(i) == std::vector<double>(2, n * (n - 1) / 2.0));

  Tensor b = full({5}, double(r));
  w->broadcast(b, n - 1);
  CHECK(values(b) == std::vector<double>(5, double(n - 1)));

  Tensor mine = tensor({double(r), double(10 * r)});
  Tensor gathered = empty({2 * n});
  w->all_gather(gathered, mine);
  for (int k = 0; k < n; ++k) {
    CHECK(gathered[2 * k].item<double>() == k);
    CHECK(gathered[2 * k + 1].item<double>() == 10 * k);
  }
  Tensor chunks = arange(0.0, 2.0 * n, 1.0, kFloat32) + r;  // rank r holds k + r at position k
  Tensor piece = empty({2});
  w->reduce_scatter(piece, chunks);
  // sum over ranks of (2 rank_me + j + r) = n (2 me + j) + n (n - 1) / 2
  for (int j = 0; j < 2; ++j) CHECK(piece[j].item<double>() == n * (2.0 * r + j) + n * (n - 1) / 2.0);

  if (n > 1) {
    Tensor msg = full({3}, double(r), kInt32);
    Tensor got = empty({3}, kInt32);
    if (r % 2 == 0) {
      w->send(msg, (r + 1) % n);
      w->recv(got, (r + n - 1) % n);
    } else {
      w->recv(got, (r + n - 1) % n);
      w->send(msg, (r + 1) % n);
    }
    CHECK(values(got) == std::vector<double>(3, double((r + n - 1) % n)));
  }
  w->barrier();
  Tensor strided = zeros({2, 3}).t();
  CHECK_THROWS_WITH(w->all_reduce(strided), Catch::Contains("[all_reduce] expects a contiguous tensor"));
}

TEST_CASE("parallel state builds Megatron's groups") {
  auto w = world();
  const int n = w->size();
  CHECK_THROWS_WITH(dist::ParallelState(w, 3, 1, n), Catch::Contains("does not match the world size"));
  int tp = n % 2 == 0 ? 2 : 1, dp = n / tp;
  dist::ParallelState ps(w, tp, 1, dp);
  CHECK(ps.tp_group()->size() == tp);
  CHECK(ps.dp_group()->size() == dp);
  CHECK(ps.pp_group()->size() == 1);
  CHECK(w->rank() == (ps.pp_rank() * dp + ps.dp_rank()) * tp + ps.tp_rank());
  // The tensor-parallel group holds adjacent ranks.
  Tensor me = full({1}, double(w->rank()));
  Tensor members = empty({tp});
  ps.tp_group()->all_gather(members, me);
  for (int k = 0; k < tp; ++k) CHECK(members[k].item<double>() == w->rank() - ps.tp_rank() + k);
  Tensor dp_members = empty({dp});
  ps.dp_group()->all_gather(dp_members, me);
  for (int k = 0; k < dp; ++k) CHECK(dp_members[k].item<double>() == ps.tp_rank() + k * tp);
}

TEST_CASE("all_to_all: equal and variable blocks of rows, and its autograd pair") {
  auto w = world();
  const int r = w->rank(), n = w->size();
  // Equal: rank r sends rank j the row [100 r + j, -(100 r + j)].
  Tensor in = empty({n, 2}), out = empty({n, 2});
  for (int j = 0; j < n; ++j) {
    in[j][0].fill_(100.0 * r + j);
    in[j][1].fill_(-(100.0 * r + j));
  }
  w->all_to_all(out, in);
  for (int i = 0; i < n; ++i) {
    CHECK(out[i][0].item<double>() == 100.0 * i + r);
    CHECK(out[i][1].item<double>() == -(100.0 * i + r));
  }
  // Variable: rank r sends rank j (r + j) % 3 rows holding 1000 r + 10 j + row.
  std::vector<int64_t> in_splits, out_splits;
  for (int j = 0; j < n; ++j) {
    in_splits.push_back((r + j) % 3);
    out_splits.push_back((j + r) % 3);
  }
  std::vector<double> sent;
  for (int j = 0; j < n; ++j)
    for (int64_t k = 0; k < in_splits[j]; ++k) sent.push_back(1000.0 * r + 10 * j + k);
  std::vector<double> expect;
  for (int i = 0; i < n; ++i)
    for (int64_t k = 0; k < out_splits[i]; ++k) expect.push_back(1000.0 * i + 10 * r + k);
  Tensor vin = tensor(sent, kFloat64).view({-1, 1}), vout = empty({int64_t(expect.size()), 1}, kFloat64);
  w->all_to_all(vout, vin.contiguous(), out_splits, in_splits);
  CHECK(values(vout) == expect);
  // exchange_rows backward sends each row's gradient back to where the row came from.
  Tensor x = vin.clone().requires_grad_();
  Tensor y = dist::exchange_rows(x, *w, out_splits, in_splits);
  sum(y * y).backward();  // d/dx = 2 x, wherever x went
  CHECK(values(x.grad()) == values(vin * 2.0));
  Tensor wrong = empty({1, 2});
  CHECK_THROWS_WITH(w->all_to_all(wrong, in, {5}, {}), Catch::Contains("[all_to_all]"));
}

TEST_CASE("expert parallelism carves its groups out of the data-parallel ranks") {
  auto w = world();
  const int n = w->size();
  CHECK_THROWS_WITH(dist::ParallelState(w, 1, 1, n, n + 1), Catch::Contains("must divide the"));
  const int ep = n % 2 == 0 ? 2 : 1;
  dist::ParallelState ps(w, 1, 1, n, ep);
  CHECK(ps.ep_group()->size() == ep);
  CHECK(ps.expert_dp_group()->size() == n / ep);
  CHECK(ps.ep_rank() == ps.dp_rank() % ep);
  Tensor me = full({1}, double(w->rank()));
  Tensor members = empty({ep});
  ps.ep_group()->all_gather(members, me);  // consecutive replicas
  for (int k = 0; k < ep; ++k) CHECK(members[k].item<double>() == w->rank() - ps.ep_rank() + k);
  Tensor holders = empty({n / ep});
  ps.expert_dp_group()->all_gather(holders, me);  // the same experts' holders
  for (int k = 0; k < n / ep; ++k) CHECK(holders[k].item<double>() == ps.ep_rank() + k * ep);
}

namespace {
struct Net : nn::Module {
  explicit Net(Generator& gen)
      : fc1(register_module("fc1", std::make_shared<nn::Linear>(nn::LinearOptions{8, 16}, gen))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(nn::LinearOptions{16, 4}, gen))) {}
  Tensor forward(const Tensor& x) const { return fc2->forward(gelu(fc1->forward(x))); }
  std::shared_ptr<nn::Linear> fc1, fc2;
};
}  // namespace

TEST_CASE("DDP over dp ranks equals one process on the whole batch") {
  auto w = world();
  const int r = w->size() > 0 ? w->rank() : 0, n = w->size();
  const int64_t local = 4;
  Generator init(r + 1);  // replicas start different; DDP broadcasts rank 0's weights
  Net model(init);
  Generator same(1);
  Net reference(same);
  dist::DistributedDataParallel ddp(model, w, /*bucket_bytes=*/256);  // several buckets
  CHECK(ddp.buckets() > 1);
  for (auto& [name, p] : reference.state_dict()) CHECK(values(model.state_dict().at(name)) == values(p));
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  optim::AdamW ref_opt(optim::decay_groups(reference.named_parameters(), 0.1), {.lr = 1e-2});
  Generator data(42);
  for (int step = 0; step < 4; ++step) {
    Tensor x = randn({n * local, 8}, data), y = randint(0, 4, {n * local}, data);
    // Step 2 accumulates two half-batches, the first without communication.
    opt.zero_grad();
    if (step == 2) {
      {
        auto guard = ddp.no_sync();
        (cross_entropy(model.forward(x.narrow(0, r * local, 2)), y.narrow(0, r * local, 2)) * 0.5).backward();
      }
      (cross_entropy(model.forward(x.narrow(0, r * local + 2, 2)), y.narrow(0, r * local + 2, 2)) * 0.5).backward();
    } else {
      cross_entropy(model.forward(x.narrow(0, r * local, local)), y.narrow(0, r * local, local)).backward();
    }
    ddp.finish();
    opt.step();
    ref_opt.zero_grad();
    if (step == 2) {
      Tensor xs = x.view({n, local, 8}), ys = y.view({n, local});
      (cross_entropy(reference.forward(xs.narrow(1, 0, 2).reshape({-1, 8})), ys.narrow(1, 0, 2).reshape({-1})) * 0.5 +
       cross_entropy(reference.forward(xs.narrow(1, 2, 2).reshape({-1, 8})), ys.narrow(1, 2, 2).reshape({-1})) * 0.5)
          .backward();
    } else {
      cross_entropy(reference.forward(x), y).backward();
    }
    ref_opt.step();
  }
  for (auto& [name, p] : reference.named_parameters()) {
    INFO(name);
    KT_CHECK_CLOSE(model.state_dict().at(name), values(p), 1e-5);
  }
}

TEST_CASE("ZeRO-1 equals one process with AdamW on the whole batch") {
  auto w = world();
  const int r = w->rank(), n = w->size();
  const int64_t local = 4;
  Generator same1(3), same2(3);
  Net model(same1), reference(same2);
  auto adamw = [](std::vector<optim::ParamGroup> groups) {
    return std::make_unique<optim::AdamW>(std::move(groups), optim::AdamWOptions{.lr = 1e-2});
  };
  dist::ZeroRedundancyOptimizer zero(optim::decay_groups(model.named_parameters(), 0.1), w, adamw);
  optim::AdamW ref_opt(optim::decay_groups(reference.named_parameters(), 0.1), {.lr = 1e-2});
  // Each rank holds about 1/n of the optimizer state.
  int64_t state = 0;
  for (auto& [name, t] : zero.inner().state_dict()) state += name == "step" ? 0 : t.numel();
  CHECK(state <= 2 * (reference.num_parameters() / n + 2));
  Generator data(7);
  for (int step = 0; step < 3; ++step) {
    Tensor x = randn({n * local, 8}, data), y = randint(0, 4, {n * local}, data);
    zero.zero_grad();
    cross_entropy(model.forward(x.narrow(0, r * local, local)), y.narrow(0, r * local, local)).backward();
    zero.step();
    ref_opt.zero_grad();
    cross_entropy(reference.forward(x), y).backward();
    ref_opt.step();
  }
  for (auto& [name, p] : reference.named_parameters()) {
    INFO(name);
    KT_CHECK_CLOSE(model.state_dict().at(name), values(p), 1e-5);
  }
}
