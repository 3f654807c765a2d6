#pragma once
// ParallelState: the world split into tensor-, data- and pipeline-parallel
// groups in Megatron-LM's rank order (tensor-parallel ranks adjacent, then
// data-parallel, then pipeline stages):
//   rank = (pp_rank * dp + dp_rank) * tp + tp_rank

#include <memory>

#include "kiln/dist/process_group.h"

namespace kiln::dist {

class ParallelState {
 public:
  // Raises kiln::Error when tp * pp * dp != world size.
  ParallelState(std::shared_ptr<ProcessGroup> world, int tp, int pp, int dp);

  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int tp_rank() const { return tp_rank_; }
  int pp_rank() const { return pp_rank_; }
  int dp_rank() const { return dp_rank_; }
  const std::shared_ptr<ProcessGroup>& world() const { return world_; }
  const std::shared_ptr<ProcessGroup>& tp_group() const { return tp_group_; }
  const std::shared_ptr<ProcessGroup>& pp_group() const { return pp_group_; }
  const std::shared_ptr<ProcessGroup>& dp_group() const { return dp_group_; }
  // The first and the last pipeline stage of this rank's tensor- and
  // data-parallel coordinates (they hold a tied embedding's two copies);
  // null on the other stages and with one stage.
  const std::shared_ptr<ProcessGroup>& embedding_group() const { return embedding_group_; }

 private:
  std::shared_ptr<ProcessGroup> world_, tp_group_, pp_group_, dp_group_, embedding_group_;
  int tp_, pp_, dp_, tp_rank_, pp_rank_, dp_rank_;
};

}  // namespace kiln::dist
