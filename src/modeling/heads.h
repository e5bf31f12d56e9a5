// The RoI heads' layers, with torchvision's names:
//   box_head       v1 TwoMLPHead (fc6, fc7) | v2 FastRCNNConvFCHead ("0".."k-1" conv+norm,
//                  "k" Flatten, "k+1" fc; torchvision's k = 4)
//   box_predictor  FastRCNNPredictor (cls_score, bbox_pred)
//   mask_head      MaskRCNNHeads ("0".."L-1" conv [+norm for v2], ReLU; torchvision's L = 4)
//   mask_predictor MaskRCNNPredictor (conv5_mask transposed conv, mask_fcn_logits)
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <optional>
#include <utility>
#include <vector>

#include "backend/cpu/inference_linear.h"
#include "modeling/layers.h"

namespace maskrcnn::modeling {

class BoxHeadImpl : public torch::nn::Module {
 public:
  // conv_fc: v2's FastRCNNConvFCHead, conv_layers 3x3 conv+norm layers of
  // in_channels before a single fc layer; else v1's TwoMLPHead.
  BoxHeadImpl(int64_t in_channels, int64_t resolution, int64_t representation, bool conv_fc,
              int conv_layers = 4, Norm norm = Norm::BatchNorm);
  at::Tensor forward(const at::Tensor& x);

 private:
  bool conv_fc_;
  torch::nn::Linear fc6{nullptr}, fc7{nullptr}, fc{nullptr};
  std::vector<ConvNormAct> convs_;
  cpu::InferenceLinear fc6_run_, fc7_run_, fc_run_;  // bf16 with --precision bf16
};
TORCH_MODULE(BoxHead);

class FastRCNNPredictorImpl : public torch::nn::Module {
 public:
  FastRCNNPredictorImpl(int64_t in_channels, int64_t num_classes);
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x);  // scores, deltas
  torch::nn::Linear cls_score{nullptr}, bbox_pred{nullptr};

 private:
  // f32 even with --precision bf16: the class scores decide which detections
  // are kept, and these layers are 3% of the box head's arithmetic.
  cpu::InferenceLinear cls_score_run_{false}, bbox_pred_run_{false};
};
TORCH_MODULE(FastRCNNPredictor);

class MaskHeadImpl : public torch::nn::Module {
 public:
  // layers 3x3 convs of `channels`, each with a norm layer of kind `norm` if any.
  MaskHeadImpl(int64_t in_channels, int layers, int64_t channels, std::optional<Norm> norm);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::vector<ConvNormAct> convs_;
};
TORCH_MODULE(MaskHead);

class MaskRCNNPredictorImpl : public torch::nn::Module {
 public:
  MaskRCNNPredictorImpl(int64_t in_channels, int64_t dim_reduced, int64_t num_classes);
  at::Tensor forward(const at::Tensor& x);
  // Inference: only the logits of each RoI's own label, [N, 1, 28, 28]; the
  // same values as forward(x)[i, labels[i]] up to float rounding, without the
  // other num_classes - 1 channels (see heads.cpp).
  at::Tensor forward_selected(const at::Tensor& x, const at::Tensor& labels);
  torch::nn::ConvTranspose2d conv5_mask{nullptr};
  torch::nn::Conv2d mask_fcn_logits{nullptr};

 private:
  cpu::InferenceLinear conv5_mask_run_;  // the transposed convolution as one GEMM
};
TORCH_MODULE(MaskRCNNPredictor);

}  // namespace maskrcnn::modeling
