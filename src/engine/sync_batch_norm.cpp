#include "engine/sync_batch_norm.h"

#include <memory>

#include "modeling/generalized_rcnn.h"
#include "modeling/layers.h"
#include "modeling/sync_batch_norm.h"

namespace maskrcnn::engine {
namespace {

class GroupSum : public modeling::BatchNormSync {
 public:
  explicit GroupSum(ProcessGroup& group) : group_(group) {}
  void sum_in_place(at::Tensor& t) override { group_.allreduce_sum(t); }

 private:
  ProcessGroup& group_;
};

}  // namespace

int enable_sync_batch_norm(MaskRCNN& model, ProcessGroup& group) {
  auto sync = std::make_shared<GroupSum>(group);
  int layers = 0;
  for (auto& m : model.module().backbone->modules(/*include_self=*/false))
    if (auto* bn = dynamic_cast<modeling::BatchNorm2dImpl*>(m.get()); bn && !bn->frozen()) {
      bn->set_sync(sync);
      ++layers;
    }
  return layers;
}

}  // namespace maskrcnn::engine
