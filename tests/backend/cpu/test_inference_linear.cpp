// InferenceLinear: fully connected layers at inference on oneDNN's matmul
// (weights packed once, bias and ReLU fused), LibTorch's Linear where a
// gradient is needed. Checked against the arithmetic in double precision.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/modules/linear.h>

#include "maskrcnn/model.h"
#include "backend/cpu/inference_linear.h"

using maskrcnn::cpu::InferenceLinear;

namespace {

at::Tensor reference(const torch::nn::Linear& fc, const at::Tensor& x, bool relu) {
  auto y = at::linear(x.to(at::kDouble), fc->weight.detach().to(at::kDouble), fc->bias.detach().to(at::kDouble));
  return relu ? y.relu() : y;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& ref) {
  return (a.to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

class InferenceLinearTest : public ::testing::Test {
 protected:
  void SetUp() override { at::manual_seed(5); }
  void TearDown() override { maskrcnn::set_inference_precision(maskrcnn::Precision::F32); }
};

TEST_F(InferenceLinearTest, MatchesLinearAndReluForManyRowCounts) {
  torch::nn::Linear fc(300, 70);
  InferenceLinear run;
  c10::InferenceMode guard;
  // More row counts than the cache holds, then the first again.
  int64_t calls = 0;
  for (int64_t rows : {1, 2, 3, 5, 8, 13, 21, 34, 55, 1000, 1}) {
    auto x = at::randn({rows, 300});
    for (bool relu : {false, true}) {
      auto y = run(*fc, x, relu);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, 70}));
      EXPECT_LT(max_rel_diff(y, reference(fc, x, relu)), 1e-5) << rows << " rows, relu " << relu;
      if (relu) EXPECT_GE(y.min().item<float>(), 0.f);
      ++calls;
    }
  }
  // oneDNN serves every call where it is built (it is where Winograd is).
  if (maskrcnn::winograd_available()) EXPECT_EQ(run.onednn_calls(), calls);
  // A strided input (a column slice) is read correctly.
  auto wide = at::randn({9, 600});
  auto x = wide.narrow(1, 100, 300);
  EXPECT_LT(max_rel_diff(run(*fc, x, false), reference(fc, x.contiguous(), false)), 1e-5);
}

TEST_F(InferenceLinearTest, ChangedWeightsAndThreadCountsAreSeen) {
  torch::nn::Linear fc(64, 32);
  InferenceLinear run;
  auto x = at::randn({10, 64});
  {
    c10::InferenceMode guard;
    EXPECT_LT(max_rel_diff(run(*fc, x, true), reference(fc, x, true)), 1e-5);
  }
  {
    torch::NoGradGuard ng;  // what load_state_dict and an optimizer step do
    fc->weight.mul_(-2.0);
    fc->bias.add_(1.0);
  }
  const int threads = at::get_num_threads();
  for (int t : {1, threads}) {
    at::set_num_threads(t);
    c10::InferenceMode guard;
    EXPECT_LT(max_rel_diff(run(*fc, x, true), reference(fc, x, true)), 1e-5) << t << " threads";
  }
  at::set_num_threads(threads);
}

TEST_F(InferenceLinearTest, GradientsTakeLibTorchsLinear) {
  torch::nn::Linear fc(48, 16);
  InferenceLinear run;
  auto x = at::randn({6, 48}).requires_grad_(true);
  auto y = run(*fc, x, true);
  EXPECT_EQ(run.onednn_calls(), 0);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  ASSERT_TRUE(fc->weight.grad().defined());
  auto w_grad = fc->weight.grad().clone();
  auto x2 = x.detach().clone().requires_grad_(true);
  fc->zero_grad();
  at::relu(fc->forward(x2)).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), x2.grad()));
  EXPECT_TRUE(at::allclose(w_grad, fc->weight.grad()));
  // No gradient wanted (NoGradGuard, not InferenceMode): oneDNN.
  torch::NoGradGuard ng;
  EXPECT_LT(max_rel_diff(run(*fc, x.detach(), false), reference(fc, x.detach(), false)), 1e-5);
  if (maskrcnn::winograd_available()) EXPECT_EQ(run.onednn_calls(), 1);
}

TEST_F(InferenceLinearTest, Bf16StaysWithinBf16Rounding) {
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  const bool on = maskrcnn::bf16_available();
  torch::nn::Linear fc(512, 128);
  InferenceLinear run;
  auto x = at::randn({40, 512});
  c10::InferenceMode guard;
  const double d = max_rel_diff(run(*fc, x, false), reference(fc, x, false));
  EXPECT_LT(d, on ? 2e-2 : 1e-5);
  if (on) EXPECT_GT(d, 1e-5) << "bf16 arithmetic was not used";  // f32 would be ~1e-7
  // Back to f32: the same layer, f32 again.
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
  EXPECT_LT(max_rel_diff(run(*fc, x, false), reference(fc, x, false)), 1e-5);
}

}  // namespace
