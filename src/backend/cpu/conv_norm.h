// The interface between modeling's batch norm and the CPU convolution path
// (InferenceConv), so that the backend needs nothing from modeling.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace maskrcnn::cpu {

// The batch norm after a convolution, as InferenceConv needs it: modeling's
// BatchNorm2d (torchvision's BatchNorm2d and FrozenBatchNorm2d) implements it.
class ConvNorm {
 public:
  virtual ~ConvNorm() = default;
  // FrozenBatchNorm2d: buffers only, never batch statistics.
  virtual bool frozen() const = 0;
  // Normalises with the batch's statistics (BatchNorm2d in training mode).
  virtual bool batch_statistics() const = 0;
  // Per-channel (scale, shift): normalize(y) == y * scale + shift without
  // batch statistics.
  virtual std::pair<at::Tensor, at::Tensor> affine() const = 0;
  // The module's own forward (with batch statistics: running averages updated).
  virtual at::Tensor normalize(const at::Tensor& y) const = 0;
  // weight, bias, running_mean, running_var, num_batches_tracked (undefined
  // where the norm has none): what the folded weights derive from.
  virtual std::vector<at::Tensor> state() const = 0;
};

}  // namespace maskrcnn::cpu
