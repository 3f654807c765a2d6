// ProcessGroup::all_to_all over the backends' send_recv: one batch of
// transfers, each rank's own block copied in place.

#include "kiln/autograd.h"
#include "kiln/dist/process_group.h"

namespace kiln::dist {

namespace {

std::vector<int64_t> splits_or_equal(std::vector<int64_t> splits, const Tensor& t, int ranks, const char* which) {
  if (splits.empty()) {
    KILN_CHECK(t.dim() > 0 && t.size(0) % ranks == 0, "[all_to_all] {} of {} rows does not divide among {} ranks",
               which, t.dim() > 0 ? t.size(0) : 0, ranks);
    return std::vector<int64_t>(static_cast<size_t>(ranks), t.size(0) / ranks);
  }
  int64_t total = 0;
  for (int64_t n : splits) total += n;
  KILN_CHECK(static_cast<int>(splits.size()) == ranks && t.dim() > 0 && total == t.size(0),
             "[all_to_all] {} splits summing to {} for {} ranks and {} rows", splits.size(), total, ranks,
             t.dim() > 0 ? t.size(0) : 0);
  return splits;
}

}  // namespace

void ProcessGroup::all_to_all(Tensor& out, const Tensor& in, std::vector<int64_t> out_splits,
                              std::vector<int64_t> in_splits) {
  KILN_CHECK(in.defined() && out.defined() && in.is_contiguous() && out.is_contiguous() &&
                 in.dtype() == out.dtype() && in.device() == out.device(),
             "[all_to_all] expects contiguous tensors of one dtype and device");
  const int n = size(), me = rank();
  out_splits = splits_or_equal(std::move(out_splits), out, n, "out");
  in_splits = splits_or_equal(std::move(in_splits), in, n, "in");
  std::vector<P2POp> ops;
  int64_t in_at = 0, out_at = 0;
  for (int peer = 0; peer < n; ++peer) {
    const int64_t send = in_splits[static_cast<size_t>(peer)], receive = out_splits[static_cast<size_t>(peer)];
    if (peer == me) {
      KILN_CHECK(send == receive, "[all_to_all] rank {} sends itself {} rows but expects {}", me, send, receive);
      NoGradGuard no_grad;
      if (send > 0) out.narrow(0, out_at, receive).copy_(in.narrow(0, in_at, send));
    } else {
      if (send > 0) ops.push_back({P2POp::Send, in.narrow(0, in_at, send), peer});
      if (receive > 0) ops.push_back({P2POp::Recv, out.narrow(0, out_at, receive), peer});
    }
    in_at += send;
    out_at += receive;
  }
  if (!ops.empty()) send_recv(ops);
}

}  // namespace kiln::dist
