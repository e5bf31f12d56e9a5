#include "modeling/heads.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/version.h>

#include "common/stage_profile.h"

namespace maskrcnn::modeling {

BoxHeadImpl::BoxHeadImpl(int64_t in_channels, int64_t resolution, int64_t representation,
                         bool conv_fc, int conv_layers, Norm norm)
    : conv_fc_(conv_fc) {
  if (!conv_fc) {
    fc6 = register_module("fc6", torch::nn::Linear(in_channels * resolution * resolution,
                                                   representation));
    fc7 = register_module("fc7", torch::nn::Linear(representation, representation));
    return;
  }
  for (int i = 0; i < conv_layers; ++i) {
    ConvNormActImpl::Options o{in_channels, in_channels, 3};
    o.norm = true;
    o.norm_kind = norm;
    convs_.push_back(register_module(std::to_string(i), ConvNormAct(o)));
  }
  // "k" is nn.Flatten (no parameters), "k+1" the Linear, "k+2" its ReLU.
  fc = register_module(std::to_string(conv_layers + 1),
                       torch::nn::Linear(in_channels * resolution * resolution, representation));
  for (auto& c : convs_) init_kaiming_fan_out(*c);
}

at::Tensor BoxHeadImpl::forward(const at::Tensor& x) {
  if (!conv_fc_) {
    auto y = fc6_run_(*fc6, x.flatten(1), /*relu=*/true);
    common::add_linear_flops(y, fc6->weight);
    auto z = fc7_run_(*fc7, y, /*relu=*/true);
    common::add_linear_flops(z, fc7->weight);
    return z;
  }
  auto y = x;
  for (auto& c : convs_) y = c->forward(y);
  auto z = fc_run_(*fc, y.flatten(1), /*relu=*/true);
  common::add_linear_flops(z, fc->weight);
  return z;
}

FastRCNNPredictorImpl::FastRCNNPredictorImpl(int64_t in_channels, int64_t num_classes) {
  cls_score = register_module("cls_score", torch::nn::Linear(in_channels, num_classes));
  bbox_pred = register_module("bbox_pred", torch::nn::Linear(in_channels, num_classes * 4));
}

std::pair<at::Tensor, at::Tensor> FastRCNNPredictorImpl::forward(const at::Tensor& x) {
  auto f = x.flatten(1);
  auto scores = cls_score_run_(*cls_score, f, false), deltas = bbox_pred_run_(*bbox_pred, f, false);
  common::add_linear_flops(scores, cls_score->weight);
  common::add_linear_flops(deltas, bbox_pred->weight);
  return {scores, deltas};
}

MaskHeadImpl::MaskHeadImpl(int64_t in_channels, int layers, int64_t channels, std::optional<Norm> norm) {
  int64_t c = in_channels;
  for (int i = 0; i < layers; ++i) {
    ConvNormActImpl::Options o{c, channels, 3, 1, 1, 1};
    o.norm = norm.has_value();
    o.norm_kind = norm.value_or(Norm::BatchNorm);
    convs_.push_back(register_module(std::to_string(i), ConvNormAct(o)));
    // Blocked between the layers; the last channels-last, so that
    // forward_selected's rows [(n, i, j), c] are a view, not a copy.
    const bool last = i == layers - 1;
    convs_.back()->set_output_layout(last ? ops::MapLayout::ChannelsLast : ops::MapLayout::Blocked16);
    convs_.back()->set_only_convs_read(!last);
    c = channels;
  }
  init_kaiming_fan_out(*this);
}

at::Tensor MaskHeadImpl::forward(const at::Tensor& x) {
  auto y = x;
  for (auto& c : convs_) y = c->forward(y);
  return y;
}

MaskRCNNPredictorImpl::MaskRCNNPredictorImpl(int64_t in_channels, int64_t dim_reduced,
                                             int64_t num_classes) {
  conv5_mask = register_module(
      "conv5_mask", torch::nn::ConvTranspose2d(
                        torch::nn::ConvTranspose2dOptions(in_channels, dim_reduced, 2).stride(2)));
  mask_fcn_logits = register_module(
      "mask_fcn_logits", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim_reduced, num_classes, 1)));
  init_kaiming_fan_out(*this);
}

at::Tensor MaskRCNNPredictorImpl::forward(const at::Tensor& x) {
  auto up = conv5_mask->forward(x);
  common::add_conv_transpose_flops(x, conv5_mask->weight);
  auto logits = mask_fcn_logits->forward(up.relu_());
  common::add_conv_flops(logits, mask_fcn_logits->weight);
  return logits;
}

// The 2x2 stride-2 transposed convolution writes each output pixel from one
// input pixel, so it is one GEMM: [N*h*w, IC] x [IC, 4*OC], columns ordered
// (ky, kx, oc). The 1x1 logits of one class per RoI are then a batched
// matrix-vector product over OC. torchvision (and forward()) instead run
// LibTorch's transposed convolution and all num_classes logit channels at
// 28x28, ~10x the time for the same values.
at::Tensor MaskRCNNPredictorImpl::forward_selected(const at::Tensor& x, const at::Tensor& labels) {
  const int64_t n = x.size(0), ic = x.size(1), h = x.size(2), w = x.size(3);
  const auto& weight = conv5_mask->weight;  // [IC, OC, 2, 2]
  const int64_t oc = weight.size(1);
  const auto& o = conv5_mask->options;
  // LibTorch 1.x options hold a c10::variant, 2.x a std::variant.
#if TORCH_VERSION_MAJOR >= 2
  const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding());
#else
  const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
#endif
  TORCH_CHECK(weight.size(2) == 2 && weight.size(3) == 2 && o.stride()->at(0) == 2 && o.stride()->at(1) == 2 &&
                  pad && (*pad)->at(0) == 0 && (*pad)->at(1) == 0 && o.output_padding()->at(0) == 0 &&
                  o.output_padding()->at(1) == 0 && o.dilation()->at(0) == 1 && o.dilation()->at(1) == 1 &&
                  o.groups() == 1 && conv5_mask->bias.defined() && mask_fcn_logits->bias.defined() &&
                  labels.numel() == n,
              "MaskRCNNPredictor::forward_selected: torchvision's conv5_mask (2x2, stride 2, no padding) "
              "and one label per RoI");
  if (n == 0) return at::empty({0, 1, 2 * h, 2 * w}, x.options());
  auto rows = x.permute({0, 2, 3, 1}).reshape({n * h * w, ic});
  // [(n,i,j), (ky,kx,o)]
  const auto gemm_weights = [&] {
    return std::make_pair(weight.detach().permute({0, 2, 3, 1}).reshape({ic, 4 * oc}),
                          conv5_mask->bias.detach().repeat({4}));
  };
  auto up = conv5_mask_run_.try_forward(rows, {weight, conv5_mask->bias}, gemm_weights, /*relu=*/true);
  if (!up.defined())
    up = at::mm(rows, weight.permute({0, 2, 3, 1}).reshape({ic, 4 * oc})).add_(conv5_mask->bias.repeat({4})).relu_();
  common::add_stage_flops(2.0 * static_cast<double>(n * h * w) * static_cast<double>(ic * 4 * oc));
  const auto& lw = mask_fcn_logits->weight;  // [classes, OC, 1, 1]
  auto w_sel = lw.reshape({lw.size(0), oc}).index_select(0, labels).unsqueeze(2);  // [N, OC, 1]
  auto logits = at::bmm(up.view({n, h * w * 4, oc}), w_sel);                          // [N, (i,j,ky,kx), 1]
  common::add_stage_flops(2.0 * static_cast<double>(n * h * w * 4) * static_cast<double>(oc));
  logits = logits.view({n, h, w, 2, 2}).permute({0, 1, 3, 2, 4}).reshape({n, 1, 2 * h, 2 * w});
  return logits + mask_fcn_logits->bias.index_select(0, labels).view({n, 1, 1, 1});
}

}  // namespace maskrcnn::modeling
