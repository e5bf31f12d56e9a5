// MaskRCNNPredictor::forward_selected (inference: one GEMM for the transposed
// convolution, logits of each RoI's own label only) against forward(), which
// runs torchvision's modules, ConvTranspose2d and the 1x1 Conv2d over all classes.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include "modeling/heads.h"

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

}  // namespace
