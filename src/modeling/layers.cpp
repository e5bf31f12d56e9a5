#include "modeling/layers.h"

#include <torch/nn/init.h>

#include "backend/cpu/inference_conv.h"
#include "modeling/sync_batch_norm.h"

namespace maskrcnn::modeling {

BatchNorm2dImpl::BatchNorm2dImpl(int64_t channels, bool frozen, double eps)
    : frozen_(frozen), eps_(eps) {
  if (frozen) {  // FrozenBatchNorm2d registers all four as buffers
    weight = register_buffer("weight", torch::ones({channels}));
    bias = register_buffer("bias", torch::zeros({channels}));
  } else {
    weight = register_parameter("weight", torch::ones({channels}));
    bias = register_parameter("bias", torch::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
  if (!frozen)
    num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

std::pair<at::Tensor, at::Tensor> BatchNorm2dImpl::affine() const {
  // FrozenBatchNorm2d.forward's arithmetic, in this order, for bit-parity.
  auto scale = weight * (running_var + eps_).rsqrt();
  auto shift = bias - running_mean * scale;
  return {scale, shift};
}

at::Tensor BatchNorm2dImpl::normalize(const at::Tensor& x) const {
  if (frozen_) {
    auto [scale, shift] = affine();
    return x * scale.reshape({1, -1, 1, 1}) + shift.reshape({1, -1, 1, 1});
  }
  if (is_training()) {
    num_batches_tracked.add_(1);
    if (sync_) return sync_batch_norm(x, weight, bias, running_mean, running_var, momentum_, eps_, *sync_);
  }
  return at::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_,
                        eps_, /*cudnn_enabled=*/true);
}

GroupNormImpl::GroupNormImpl(int64_t channels, double eps) : eps_(eps) {
  TORCH_CHECK(channels % kGroups == 0, "GroupNorm: ", channels, " channels do not split into ", kGroups, " groups");
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

at::Tensor GroupNormImpl::normalize(const at::Tensor& x) const {
  return at::group_norm(x, kGroups, weight, bias, eps_, /*cudnn_enabled=*/true);
}

std::pair<at::Tensor, at::Tensor> GroupNormImpl::affine() const {
  TORCH_CHECK(false, "GroupNorm has no fixed affine form (its statistics are per image)");
}

std::shared_ptr<NormLayer> make_norm(Norm kind, int64_t channels, double eps) {
  switch (kind) {
    case Norm::FrozenBatchNorm: return std::make_shared<BatchNorm2dImpl>(channels, true, eps);
    case Norm::BatchNorm: return std::make_shared<BatchNorm2dImpl>(channels, false, eps);
    case Norm::GroupNorm: return std::make_shared<GroupNormImpl>(channels);
  }
  return nullptr;
}

ConvNormActImpl::ConvNormActImpl(const Options& o)
    : relu_(o.relu), run_(std::make_unique<cpu::InferenceConv>()) {
  const int64_t pad = o.padding >= 0 ? o.padding : (o.kernel - 1) / 2 * o.dilation;
  conv = register_module("0", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in, o.out, o.kernel)
                                                    .stride(o.stride)
                                                    .padding(pad)
                                                    .dilation(o.dilation)
                                                    .bias(!o.norm)));
  if (o.norm) norm = register_module("1", make_norm(o.norm_kind, o.out, o.norm_eps));
}

ConvNormActImpl::~ConvNormActImpl() = default;

at::Tensor ConvNormActImpl::forward(const at::Tensor& x) { return forward_add(x, {}); }

at::Tensor ConvNormActImpl::forward_add(const at::Tensor& x, const at::Tensor& residual, bool residual_writable) {
  return (*run_)(*conv, norm ? norm.get() : nullptr, x, relu_, residual, layout_, only_convs_read_,
                 residual_writable);
}

void init_kaiming_fan_out(torch::nn::Module& m) {
  torch::NoGradGuard ng;
  for (auto& p : m.named_parameters(/*recurse=*/true)) {
    if (p.value().dim() == 4) {
      torch::nn::init::kaiming_normal_(p.value(), 0, torch::kFanOut, torch::kReLU);
    } else if (p.key().size() >= 4 && p.key().substr(p.key().size() - 4) == "bias" &&
               p.value().dim() == 1) {
      // Conv biases only; norm biases are already zero.
      p.value().zero_();
    }
  }
}

}  // namespace maskrcnn::modeling
