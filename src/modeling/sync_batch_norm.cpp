#include "modeling/sync_batch_norm.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>

namespace maskrcnn::modeling {
namespace {

// y = sum over processes of x; dL/dx = sum over processes of dL/dy (every
// process's loss reaches x through the shared statistics).
class AllReduceSum : public torch::autograd::Function<AllReduceSum> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t sync) {
    ctx->saved_data["sync"] = sync;
    auto y = x.clone();
    reinterpret_cast<BatchNormSync*>(sync)->sum_in_place(y);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* sync = reinterpret_cast<BatchNormSync*>(ctx->saved_data["sync"].toInt());
    auto g = grads[0].contiguous().clone();
    sync->sum_in_place(g);
    return {g, at::Tensor()};
  }
};

}  // namespace

at::Tensor sync_batch_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& running_mean, const at::Tensor& running_var, double momentum,
                           double eps, BatchNormSync& sync) {
  const int64_t c = x.size(1);
  const double local_count = static_cast<double>(x.numel() / c);
  auto local = at::cat({x.sum({0, 2, 3}), (x * x).sum({0, 2, 3}), at::full({1}, local_count, x.options())});
  auto total = AllReduceSum::apply(local, reinterpret_cast<int64_t>(&sync));
  const double n = total[2 * c].item<double>();
  auto mean = total.slice(0, 0, c) / n;
  auto var = (total.slice(0, c, 2 * c) / n - mean * mean).clamp_min(0);  // biased
  {
    at::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum).add_(mean.detach() * momentum);
    running_var.mul_(1 - momentum).add_(var.detach() * (n / std::max(n - 1, 1.0)) * momentum);
  }
  auto scale = weight * (var + eps).rsqrt();
  auto shift = bias - mean * scale;
  return x * scale.view({1, -1, 1, 1}) + shift.view({1, -1, 1, 1});
}

}  // namespace maskrcnn::modeling
