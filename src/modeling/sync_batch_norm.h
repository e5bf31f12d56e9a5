// Synchronised batch norm (torch.nn.SyncBatchNorm): BatchNorm2d in training
// normalises with the statistics of the whole data-parallel batch, summed over
// the processes, instead of each process's own images. Modeling does the
// arithmetic and its autograd; whoever owns the process group (the engine)
// supplies the sum.
#pragma once
#include <ATen/core/Tensor.h>

namespace maskrcnn::modeling {

class BatchNormSync {
 public:
  virtual ~BatchNormSync() = default;
  // In place: `t` becomes its sum over all processes. Every process calls it
  // the same number of times in the same order.
  virtual void sum_in_place(at::Tensor& t) = 0;
};

// The batch-norm forward of x [N, C, H, W] with the statistics of every
// process's x: per-channel sums of x and x^2 and the count are summed over
// the processes (differentiably: the backward sums their gradients likewise,
// as SyncBatchNorm's does), then x is normalised with the biased variance.
// The running averages take the unbiased one, as at::batch_norm's do.
at::Tensor sync_batch_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& running_mean, const at::Tensor& running_var, double momentum,
                           double eps, BatchNormSync& sync);

}  // namespace maskrcnn::modeling
