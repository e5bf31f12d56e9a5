// MaskRCNNPredictor::forward_selected (inference: one GEMM for the transposed
// convolution, logits of each RoI's own label only) against forward(), which
// runs torchvision's modules, ConvTranspose2d and the 1x1 Conv2d over all classes.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <c10/core/InferenceMode.h>

#include "maskrcnn/model.h"
#include "modeling/heads.h"
#include "modeling/layers.h"
#include "modeling/rpn.h"

using maskrcnn::modeling::MaskRCNNPredictor;

namespace {

TEST(MaskPredictor, SelectedLogitsEqualTheModulesOutput) {
  at::manual_seed(11);
  for (int64_t classes : {91, 7}) {
    MaskRCNNPredictor head(256, 256, classes);
    {
      at::NoGradGuard ng;  // non-zero biases: they must land on the right channels
      head->conv5_mask->bias.uniform_(-0.5, 0.5);
      head->mask_fcn_logits->bias.uniform_(-0.5, 0.5);
    }
    auto x = at::randn({13, 256, 14, 14});
    auto labels = at::randint(0, classes, {13}, at::kLong);
    at::Tensor full, selected;
    {
      at::NoGradGuard ng;
      full = head->forward(x);
      selected = head->forward_selected(x, labels);
    }
    ASSERT_EQ(selected.sizes(), (std::vector<int64_t>{13, 1, 28, 28}));
    auto expected = full.index({at::arange(13), labels}).unsqueeze(1);
    const double scale = expected.abs().max().item<double>();
    EXPECT_LT((selected - expected).abs().max().item<double>(), 2e-6 * scale) << classes << " classes";
  }
}

TEST(MaskPredictor, NoRoisAndGradientsFlow) {
  MaskRCNNPredictor head(256, 256, 5);
  auto none = head->forward_selected(at::zeros({0, 256, 14, 14}), at::zeros({0}, at::kLong));
  EXPECT_EQ(none.sizes(), (std::vector<int64_t>{0, 1, 28, 28}));
  // Plain LibTorch ops: differentiable like forward().
  auto x = at::randn({2, 256, 14, 14}).requires_grad_(true);
  head->forward_selected(x, at::tensor({1, 4}, at::kLong)).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}


// RPNHead at CPU inference: the two 1x1 predictors run as one 16-output
// convolution on the 3x3 layer's blocked map. Its logits and deltas are the
// modules' own (checked against LibTorch's convolutions in double), also after
// the predictors' weights change, and training still runs the modules.
TEST(RpnHead, MergedPredictorsEqualTheModules) {
  at::manual_seed(5);
  maskrcnn::modeling::RPNHead head(32, 3, 1);
  {
    at::NoGradGuard ng;
    for (auto& p : head->parameters()) p.uniform_(-0.3, 0.3);
  }
  const std::vector<at::Tensor> features{at::randn({1, 32, 40, 24}), at::randn({1, 32, 9, 13})};
  auto reference = [&](const at::Tensor& f) {
    auto& c = head->conv[0]->as<maskrcnn::modeling::ConvNormAct>()->conv;
    auto t = at::conv2d(f.to(at::kDouble), c->weight.to(at::kDouble), c->bias.to(at::kDouble), 1, 1).relu();
    return std::make_pair(
        at::conv2d(t, head->cls_logits->weight.to(at::kDouble), head->cls_logits->bias.to(at::kDouble)),
        at::conv2d(t, head->bbox_pred->weight.to(at::kDouble), head->bbox_pred->bias.to(at::kDouble)));
  };
  auto rel = [](const at::Tensor& a, const at::Tensor& ref) {
    return (a.to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
  };
  for (int round = 0; round < 2; ++round) {
    {
      c10::InferenceMode guard;
      auto [logits, deltas] = head->forward(features);
      for (size_t l = 0; l < features.size(); ++l) {
        auto [ref_logits, ref_deltas] = reference(features[l]);
        ASSERT_EQ(logits[l].sizes(), ref_logits.sizes());
        ASSERT_EQ(deltas[l].sizes(), ref_deltas.sizes());
        EXPECT_LT(rel(logits[l], ref_logits), 1e-5) << "round " << round << " level " << l;
        // The merged convolution's [H, W, 16] block, viewed per channel.
        if (maskrcnn::winograd_available()) EXPECT_EQ(logits[l].stride(1), 1) << "the merged convolution ran";
        EXPECT_LT(rel(deltas[l], ref_deltas), 1e-5) << "round " << round << " level " << l;
      }
    }
    at::NoGradGuard ng;  // new weights: the merged convolution follows
    head->cls_logits->weight.mul_(-2.0);
    head->bbox_pred->bias.add_(1.0);
  }
  // Training: the modules' graph, gradients reach both predictors, also
  // where the 3x3 layer is frozen (its map then comes from the fast path).
  head->train();
  for (bool frozen_conv : {false, true}) {
    for (auto& p : head->conv->parameters()) p.requires_grad_(!frozen_conv);
    for (auto* p : {&head->cls_logits->weight, &head->bbox_pred->weight}) p->mutable_grad() = at::Tensor();
    auto [logits, deltas] = head->forward(features);
    (logits[0].sum() + deltas[1].sum()).backward();
    EXPECT_TRUE(head->cls_logits->weight.grad().defined()) << frozen_conv;
    EXPECT_TRUE(head->bbox_pred->weight.grad().defined()) << frozen_conv;
  }
}

}  // namespace
