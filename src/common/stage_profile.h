// The model's side of maskrcnn::StageProfiler (include/maskrcnn/profile.h):
// pipeline stages mark themselves with a ScopedStage, layers report their
// FLOPs. Both cost one thread-local load when no profiler is installed.
#pragma once
#include <ATen/core/Tensor.h>

#include "maskrcnn/profile.h"

namespace maskrcnn::common {

class ScopedStage {
 public:
  explicit ScopedStage(const char* name);  // a string literal: kept by pointer
  ~ScopedStage();
  ScopedStage(const ScopedStage&) = delete;
  ScopedStage& operator=(const ScopedStage&) = delete;

 private:
  StageProfiler::State* state_ = nullptr;  // the profiler it was pushed on
};

// FLOPs to the innermost running stage, if a profiler records.
void add_stage_flops(double flops);
bool stage_profiling();
// 2 x multiply-adds of a convolution from its output and weight [OC, IC/g, KH, KW].
void add_conv_flops(const at::Tensor& output, const at::Tensor& weight);
// ... of a transposed convolution from its input and weight [IC, OC/g, KH, KW].
void add_conv_transpose_flops(const at::Tensor& input, const at::Tensor& weight);
// ... of a linear layer from its output and weight [out, in].
void add_linear_flops(const at::Tensor& output, const at::Tensor& weight);

}  // namespace maskrcnn::common
