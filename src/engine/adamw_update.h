// One AdamW step of one parameter tensor (torch.optim.AdamW's single-tensor
// update, amsgrad off), fused into one pass over p, grad, m and v on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

namespace maskrcnn::engine {

struct AdamWScalars {
  double lr, weight_decay, beta1, beta2, eps;
  double bias_correction1, bias_correction2;  // 1 - beta^t
};

// p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). Returns false (and
// changes nothing) where the fused loop does not apply: not all four float or
// double contiguous CPU tensors of one size; the caller then runs tensor ops.
bool adamw_update_fused_cpu(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                            const AdamWScalars& s);

}  // namespace maskrcnn::engine
