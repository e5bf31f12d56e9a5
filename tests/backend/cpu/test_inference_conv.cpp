// cpu::InferenceConv: batch norm folded into the convolution, oneDNN Winograd for
// 3x3 stride-1 convolutions, and the modules' own path when training. Checked
// against LibTorch's modules computed in double precision.
#include <gtest/gtest.h>

#include <array>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/modules/conv.h>

#include "maskrcnn/model.h"
#include "ops/map_layout.h"
#include "backend/cpu/inference_conv.h"
#include "modeling/layers.h"

using maskrcnn::modeling::BatchNorm2d;
using maskrcnn::cpu::InferenceConv;
namespace ops = maskrcnn::ops;
namespace cpu = maskrcnn::cpu;

namespace {

struct Layer {
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
  Layer(int64_t in, int64_t out, int64_t k, int64_t stride, bool frozen, bool bias = false) {
    conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(bias));
    bn = BatchNorm2d(out, frozen, frozen ? 0.0 : 1e-5);
    torch::NoGradGuard ng;
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.uniform_(-0.5, 0.5);
    bn->running_mean.uniform_(-0.2, 0.2);
    bn->running_var.uniform_(0.5, 2.0);
    bn->eval();
  }
  // relu(bn(conv(x)) + residual) in double, from the modules' parameters.
  at::Tensor reference(const at::Tensor& x, bool relu, const at::Tensor& residual = {}) const {
    auto w = conv->weight.detach().to(at::kDouble);
    auto b = conv->options.bias() ? conv->bias.detach().to(at::kDouble) : at::Tensor();
    auto y = at::conv2d(x.to(at::kDouble), w, b, *conv->options.stride(), conv->options.kernel_size()->at(0) / 2);
    auto scale = bn->weight.to(at::kDouble) / (bn->running_var.to(at::kDouble) + bn->eps()).sqrt();
    auto shift = bn->bias.to(at::kDouble) - bn->running_mean.to(at::kDouble) * scale;
    y = y * scale.reshape({1, -1, 1, 1}) + shift.reshape({1, -1, 1, 1});
    if (residual.defined()) y = y + residual.to(at::kDouble);
    return relu ? y.relu() : y;
  }
};

double max_rel_diff(const at::Tensor& a, const at::Tensor& ref) {
  return (a.to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

class InferenceConvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::manual_seed(7);
    budget_ = maskrcnn::winograd_scratchpad_budget();
  }
  void TearDown() override {
    maskrcnn::set_conv_algorithm(maskrcnn::ConvAlgorithm::Winograd);
    maskrcnn::set_winograd_scratchpad_budget(budget_);
  }
  std::size_t budget_ = 0;
};

TEST_F(InferenceConvTest, Winograd3x3WithFoldedNormResidualAndReluMatchesTheModules) {
  Layer l(32, 48, 3, 1, /*frozen=*/true);
  cpu::InferenceConv run;
  auto x = at::randn({2, 32, 37, 29});
  auto r = at::randn({2, 48, 37, 29});
  c10::InferenceMode guard;
  auto y = run(*l.conv, l.bn.get(), x, true, r);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 48, 37, 29}));
  EXPECT_LT(max_rel_diff(y, l.reference(x, true, r)), 1e-5);
  EXPECT_EQ(run.onednn_calls(), maskrcnn::onednn_available() ? 1 : 0);
  // Without residual or ReLU, and a bias on the convolution.
  Layer b(16, 16, 3, 1, true, /*bias=*/true);
  auto x2 = at::randn({1, 16, 9, 40});
  cpu::InferenceConv run2;
  EXPECT_LT(max_rel_diff(run2(*b.conv, b.bn.get(), x2, false), b.reference(x2, false)), 1e-5);
}

// Over the scratchpad budget, Winograd runs in groups of images and bands of
// rows (each band reading the rows above and below it, padding only at the
// map's edges): the same outputs as one run, residual and ReLU included.
TEST_F(InferenceConvTest, WinogradInPartsMatchesOneRun) {
  const bool winograd = maskrcnn::winograd_available();  // else oneDNN's direct kernel, one part
  const int64_t one = maskrcnn::onednn_available() ? 1 : 0;  // else LibTorch's convolution
  Layer l(32, 48, 3, 1, /*frozen=*/true);
  for (auto shape : {std::vector<int64_t>{1, 32, 37, 29}, std::vector<int64_t>{5, 32, 9, 11}}) {
    auto x = at::randn(shape);
    auto r = at::randn({shape[0], 48, shape[2], shape[3]});
    c10::InferenceMode guard;
    maskrcnn::set_winograd_scratchpad_budget(0);  // never split
    cpu::InferenceConv whole;
    auto once = whole(*l.conv, l.bn.get(), x, true, r);
    EXPECT_EQ(whole.onednn_parts(), one);
    maskrcnn::set_winograd_scratchpad_budget(1);  // split as far as it goes: 1 image, 4-row bands
    cpu::InferenceConv split;
    auto parts = split(*l.conv, l.bn.get(), x, true, r);
    // 37 rows: 9 bands of 4 and one of 1; 5 images of 9 rows: 5 x (4 + 4 + 1).
    EXPECT_EQ(split.onednn_parts(), winograd ? (shape[0] == 1 ? 10 : 15) : one);
    EXPECT_EQ(split.onednn_calls(), one);
    EXPECT_LT(max_rel_diff(parts, l.reference(x, true, r)), 1e-5);
    EXPECT_LT((parts - once).abs().max().item<double>() / once.abs().max().item<double>(), 1e-5);
  }
}

TEST_F(InferenceConvTest, DirectAndOtherShapesRunFoldedDirectConvolutions) {
  // Where oneDNN is, its direct kernels serve these too, with the residual
  // add and ReLU fused.
  const int64_t onednn = maskrcnn::onednn_available() ? 1 : 0;
  maskrcnn::set_conv_algorithm(maskrcnn::ConvAlgorithm::Direct);
  Layer l(16, 32, 3, 1, true);
  cpu::InferenceConv run;
  auto x = at::randn({1, 16, 21, 18});
  c10::InferenceMode guard;
  EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, true), l.reference(x, true)), 1e-5);
  EXPECT_EQ(run.onednn_calls(), onednn);
  maskrcnn::set_conv_algorithm(maskrcnn::ConvAlgorithm::Winograd);
  // Stride 2 and 1x1 and 7x7: no Winograd, still folded.
  for (auto [k, s] : {std::pair<int64_t, int64_t>{3, 2}, {1, 1}, {7, 2}}) {
    Layer o(16, 32, k, s, true);
    cpu::InferenceConv r;
    auto y = o.reference(x, false);
    auto residual = at::randn(y.sizes());
    EXPECT_LT(max_rel_diff(r(*o.conv, o.bn.get(), x, true, residual), o.reference(x, true, residual)), 1e-5)
        << k << " " << s;
    EXPECT_EQ(r.onednn_calls(), onednn) << k << " " << s;
  }
  // Channel counts oneDNN's blocked kernels do not tile (3 in, 5 out): right
  // either way, on whichever implementation serves them.
  Layer odd(3, 5, 3, 2, true);
  cpu::InferenceConv r;
  auto x3 = at::randn({2, 3, 17, 13});
  EXPECT_LT(max_rel_diff(r(*odd.conv, odd.bn.get(), x3, false), odd.reference(x3, false)), 1e-5);
}

TEST_F(InferenceConvTest, EveryLayoutInAndOutWholeAndInParts) {
  using maskrcnn::ops::MapLayout;
  using maskrcnn::ops::to_4d;
  using maskrcnn::ops::to_layout;
  const ops::MapLayout layouts[] = {ops::MapLayout::NCHW, ops::MapLayout::ChannelsLast, ops::MapLayout::Blocked16};
  // 3x3 (Winograd, split into bands with budget 1), 1x1 and strided 3x3 (direct).
  for (auto [k, s] : {std::pair<int64_t, int64_t>{3, 1}, {1, 1}, {3, 2}}) {
    for (size_t budget : {size_t{128} << 20, size_t{1}}) {
      maskrcnn::set_winograd_scratchpad_budget(budget);
      Layer l(32, 48, k, s, true);
      cpu::InferenceConv run;
      auto x = at::randn({2, 32, 19, 23});
      auto r = at::randn(l.reference(x, false).sizes());
      const auto ref = l.reference(x, true, r);
      c10::InferenceMode guard;
      for (auto in : layouts)
        for (auto res : layouts)
          for (auto out : layouts) {
            auto y = run(*l.conv, l.bn.get(), ops::to_layout(x, in), true, ops::to_layout(r, res), out);
            // Where oneDNN runs it, the output is in the layout asked for.
            if (maskrcnn::onednn_available())
              EXPECT_EQ(maskrcnn::ops::layout_of(y), out);
            EXPECT_LT(max_rel_diff(ops::to_4d(y), ref), 1e-5)
                << k << "x" << k << "/" << s << " budget " << budget << " layouts " << int(in) << int(res)
                << int(out);
          }
    }
  }
  // A blocked map into a layer that needs a gradient: LibTorch's path, NCHW out.
  Layer l(32, 16, 3, 1, true);
  auto x = at::randn({1, 32, 9, 9});
  cpu::InferenceConv run;
  auto y = run(*l.conv, l.bn.get(), ops::to_layout(x, ops::MapLayout::Blocked16), true, {}, ops::MapLayout::Blocked16);
  ASSERT_TRUE(y.requires_grad());
  EXPECT_EQ(y.dim(), 4);
  EXPECT_LT(max_rel_diff(y.detach(), l.reference(x, true)), 1e-5);
}

TEST_F(InferenceConvTest, ChangedWeightsAndThreadCountsAreSeen) {
  Layer l(16, 16, 3, 1, true);
  cpu::InferenceConv run;
  auto x = at::randn({1, 16, 20, 20});
  {
    c10::InferenceMode guard;
    EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, true), l.reference(x, true)), 1e-5);
  }
  {
    torch::NoGradGuard ng;  // what load_state_dict and an optimizer step do
    l.conv->weight.mul_(-2.0);
    l.bn->running_var.mul_(3.0);
  }
  const int threads = at::get_num_threads();
  for (int t : {1, threads}) {
    at::set_num_threads(t);
    c10::InferenceMode guard;
    EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, true), l.reference(x, true)), 1e-5) << t << " threads";
  }
  at::set_num_threads(threads);
}

TEST_F(InferenceConvTest, RunningStatisticsUpdatedByTrainingAreSeen) {
  // A BatchNorm2d whose affine parameters are frozen (a frozen backbone stage
  // of a BatchNorm model) still updates its running statistics in training;
  // batch_norm does not bump their version, so the fold must notice otherwise.
  Layer l(8, 8, 3, 1, /*frozen=*/false);
  l.bn->weight.set_requires_grad(false);
  l.bn->bias.set_requires_grad(false);
  l.conv->weight.set_requires_grad(false);
  cpu::InferenceConv run;
  auto x = at::randn({1, 8, 12, 12});
  {
    c10::InferenceMode guard;
    EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, false), l.reference(x, false)), 1e-5);
  }
  l.bn->train();
  run(*l.conv, l.bn.get(), at::randn({4, 8, 12, 12}) * 3 + 1, false);  // moves the running statistics
  l.bn->eval();
  c10::InferenceMode guard;
  EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, false), l.reference(x, false)), 1e-5);
}

TEST_F(InferenceConvTest, ManyInputShapesAndEmptyBatches) {
  Layer l(16, 16, 3, 1, true);
  cpu::InferenceConv run;
  c10::InferenceMode guard;
  // More shapes than the per-layer cache holds, then the first again.
  for (int64_t w : {8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 8}) {
    auto x = at::randn({3, 16, 7, w});
    EXPECT_LT(max_rel_diff(run(*l.conv, l.bn.get(), x, true), l.reference(x, true)), 1e-5) << w;
  }
  auto empty = run(*l.conv, l.bn.get(), at::randn({0, 16, 14, 14}), true);
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 16, 14, 14}));
}

TEST_F(InferenceConvTest, Bf16ConvolutionsStayWithinBf16Rounding) {
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  const bool on = maskrcnn::bf16_available();
  EXPECT_EQ(maskrcnn::inference_precision(), on ? maskrcnn::Precision::BF16 : maskrcnn::Precision::F32);
  // 3x3 (no Winograd in bf16), strided and 1x1, with residual and ReLU.
  for (auto [k, s] : {std::pair<int64_t, int64_t>{3, 1}, {3, 2}, {1, 1}}) {
    Layer l(64, 32, k, s, true);
    cpu::InferenceConv run;
    auto x = at::randn({2, 64, 24, 19});
    c10::InferenceMode guard;
    auto ref = l.reference(x, false);
    auto r = at::randn(ref.sizes());
    ref = l.reference(x, true, r);
    const double d = max_rel_diff(run(*l.conv, l.bn.get(), x, true, r), ref);
    EXPECT_LT(d, on ? 2e-2 : 1e-5) << k << " " << s;
    if (on) EXPECT_GT(d, 1e-5) << "bf16 arithmetic was not used";  // f32 would be ~1e-7
    EXPECT_EQ(run.onednn_calls(), maskrcnn::onednn_available() ? 1 : 0);  // bf16 or f32 direct
  }
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
}

// Under bf16 precision a 3x3 stride-1 layer on a large float map (P2 and P3
// of the FPN and RPN head) runs f32 Winograd, which is faster there than
// bf16 direct: its output is exactly f32 precision's. Smaller maps, and maps
// already in bf16, take the bf16 kernels.
TEST_F(InferenceConvTest, Bf16LeavesLargeFloatMapsToWinograd) {
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  if (maskrcnn::inference_precision() != maskrcnn::Precision::BF16) return;  // no bf16 on this CPU
  Layer l(32, 32, 3, 1, true);
  c10::InferenceMode guard;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{100, 100}, {99, 100}, {40, 30}}) {
    auto x = at::randn({1, 32, h, w});
    cpu::InferenceConv bf16_mode, bf16_input;
    const auto y = bf16_mode(*l.conv, l.bn.get(), x, true);
    const auto y_from_bf16 = bf16_input(*l.conv, l.bn.get(), x.to(at::kBFloat16), true);
    maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
    cpu::InferenceConv f32_mode;
    const auto y32 = f32_mode(*l.conv, l.bn.get(), x, true);
    maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
    const bool large = h * w >= 100 * 100;
    EXPECT_EQ(at::equal(y, y32), large) << h << "x" << w;
    EXPECT_GT(max_rel_diff(y_from_bf16, y32.to(at::kDouble)), 1e-5) << h << "x" << w << ": bf16 input, bf16 kernels";
    EXPECT_LT(max_rel_diff(y, l.reference(x, true)), large ? 1e-5 : 2e-2) << h << "x" << w;
  }
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
}

// only_convs_read under bf16: the map is stored in bf16 with exactly the
// values the next bf16 convolution would round the f32 map to, and that
// convolution reads it as it reads the f32 one. Where the result is read by
// anything else (f32 precision, NCHW fallbacks) it stays or becomes float.
TEST_F(InferenceConvTest, Bf16InnerMapsHoldWhatTheNextConvolutionReads) {
  using maskrcnn::ops::MapLayout;
  Layer first(32, 48, 1, 1, true), second(48, 64, 3, 1, true), strided(48, 32, 3, 2, true);
  auto x = at::randn({2, 32, 23, 17});
  c10::InferenceMode guard;
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  if (maskrcnn::inference_precision() != maskrcnn::Precision::BF16) {
    // No bf16 here: the flag changes nothing.
    cpu::InferenceConv run;
    auto y = run(*first.conv, first.bn.get(), x, true, {}, ops::MapLayout::Blocked16, true);
    EXPECT_EQ(y.scalar_type(), at::kFloat);
    return;
  }
  cpu::InferenceConv run_f32, run_bf16, next, next_strided;
  for (auto layout : {ops::MapLayout::Blocked16, ops::MapLayout::ChannelsLast, ops::MapLayout::NCHW}) {
    auto y32 = run_f32(*first.conv, first.bn.get(), x, true, {}, layout);
    auto y16 = run_bf16(*first.conv, first.bn.get(), x, true, {}, layout, /*only_convs_read=*/true);
    ASSERT_EQ(y32.scalar_type(), at::kFloat);
    ASSERT_EQ(y16.scalar_type(), at::kBFloat16) << static_cast<int>(layout);
    ASSERT_EQ(y16.sizes(), y32.sizes());
    // Round to nearest even, as the reorder into the next convolution does.
    EXPECT_TRUE(at::equal(y16, y32.to(at::kBFloat16))) << static_cast<int>(layout);
    // The next convolutions (the same primitives for either input) give the same outputs.
    for (auto* l : {&second, &strided}) {
      auto& run_next = l == &second ? next : next_strided;
      auto from32 = run_next(*l->conv, l->bn.get(), y32, true, {}, ops::MapLayout::Blocked16);
      auto from16 = run_next(*l->conv, l->bn.get(), y16, true, {}, ops::MapLayout::Blocked16);
      EXPECT_EQ(from16.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(from16, from32)) << static_cast<int>(layout);
    }
  }
  // Back in f32, a bf16 map is read as floats (LibTorch or f32 oneDNN alike).
  auto y16 = run_bf16(*first.conv, first.bn.get(), x, true, {}, ops::MapLayout::Blocked16, true);
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
  cpu::InferenceConv later;
  auto z = later(*second.conv, second.bn.get(), y16, true, {}, ops::MapLayout::NCHW, true);
  EXPECT_EQ(z.scalar_type(), at::kFloat);
  auto ref = second.reference(maskrcnn::ops::to_4d(y16).to(at::kFloat), true);
  EXPECT_LT(max_rel_diff(z, ref), 1e-5);
}

// Under bf16 precision a convolution with a residual whose output only
// convolutions read (the ResNet body's blocks) stores it in bf16: the sum of
// the f32 accumulation and the residual, rounded once. The same values as the
// f32 output of the same arithmetic, rounded; a bf16 residual given up holds
// the output, a float one or one in another layout is left alone.
TEST_F(InferenceConvTest, Bf16OutputWithAResidualRoundsTheSumOnce) {
  using maskrcnn::ops::MapLayout;
  using maskrcnn::ops::to_layout;
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  if (maskrcnn::inference_precision() != maskrcnn::Precision::BF16) return;  // no bf16 on this CPU
  for (auto [k, s] : {std::pair<int64_t, int64_t>{1, 1}, {3, 1}, {1, 2}}) {
    Layer l(32, 48, k, s, true);
    auto x = at::randn({2, 32, 22, 18});
    c10::InferenceMode guard;
    const auto shape = l.reference(x, false).sizes().vec();
    for (auto layout : {ops::MapLayout::Blocked16, ops::MapLayout::ChannelsLast, ops::MapLayout::NCHW}) {
      const auto r16 = ops::to_layout(at::randn(shape).to(at::kBFloat16), layout);
      cpu::InferenceConv f32_out, bf16_out;
      const auto expected = f32_out(*l.conv, l.bn.get(), x, true, r16.to(at::kFloat), layout);
      ASSERT_EQ(expected.scalar_type(), at::kFloat);
      const auto before = r16.clone();
      auto y = bf16_out(*l.conv, l.bn.get(), x, true, r16, layout, /*only_convs_read=*/true);
      ASSERT_EQ(y.scalar_type(), at::kBFloat16) << k << " " << static_cast<int>(layout);
      EXPECT_TRUE(at::equal(y, expected.to(at::kBFloat16))) << k << " " << static_cast<int>(layout);
      EXPECT_TRUE(at::equal(r16, before)) << "a residual not given up is left alone";
      // Given up: the sum lands in the residual's memory.
      auto given = r16.clone();
      const void* memory = given.data_ptr();
      auto z = bf16_out(*l.conv, l.bn.get(), x, true, given, layout, true, /*residual_writable=*/true);
      EXPECT_TRUE(at::equal(z, y));
      if (layout == ops::MapLayout::Blocked16) EXPECT_EQ(z.data_ptr(), memory) << k;
      // A float residual is rounded into the bf16 output first.
      const auto r32 = ops::to_layout(at::randn(shape), layout);
      const auto r32_before = r32.clone();
      auto w = bf16_out(*l.conv, l.bn.get(), x, true, r32, layout, true, true);
      EXPECT_EQ(w.scalar_type(), at::kBFloat16);
      EXPECT_TRUE(at::equal(r32, r32_before));
      const auto w_expected =
          f32_out(*l.conv, l.bn.get(), x, true, r32.to(at::kBFloat16).to(at::kFloat), layout).to(at::kBFloat16);
      EXPECT_TRUE(at::equal(w, w_expected)) << k << " " << static_cast<int>(layout);
    }
  }
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
}

// Training under bf16 precision: frozen layers take the inference path and
// may store their outputs in bf16 (a ResNet body's block outputs); a layer
// with gradients reads such a map, and such a residual, as float.
TEST_F(InferenceConvTest, TrainingReadsBf16MapsOfFrozenLayersAsFloat) {
  using maskrcnn::ops::MapLayout;
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  if (maskrcnn::inference_precision() != maskrcnn::Precision::BF16) return;  // no bf16 on this CPU
  Layer frozen(32, 32, 1, 1, true), frozen_r(32, 48, 1, 1, true), trained(32, 48, 3, 1, true);
  frozen.conv->weight.requires_grad_(false);
  frozen_r.conv->weight.requires_grad_(false);
  auto x = at::randn({1, 32, 12, 10});
  cpu::InferenceConv run_frozen, run_frozen_r, run_trained;
  const auto y = run_frozen(*frozen.conv, frozen.bn.get(), x, true, {}, ops::MapLayout::Blocked16, true);
  const auto r = run_frozen_r(*frozen_r.conv, frozen_r.bn.get(), x, false, {}, ops::MapLayout::Blocked16, true);
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);
  ASSERT_EQ(r.scalar_type(), at::kBFloat16);
  auto z = run_trained(*trained.conv, trained.bn.get(), y, true, r);
  ASSERT_EQ(z.scalar_type(), at::kFloat);
  z.sum().backward();
  EXPECT_TRUE(trained.conv->weight.grad().defined());
  const auto y32 = maskrcnn::ops::to_4d(y).to(at::kFloat), r32 = maskrcnn::ops::to_4d(r).to(at::kFloat);
  EXPECT_LT(max_rel_diff(z.detach(), trained.reference(y32, true, r32)), 1e-5);
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
}

// residual_writable: the output is accumulated in the residual's memory (and
// returned) where the residual is a float map in the output's layout; the
// values are those of the run into a fresh output. Other layouts copy as before.
TEST_F(InferenceConvTest, ResidualGivenUpTakesTheOutput) {
  using maskrcnn::ops::MapLayout;
  using maskrcnn::ops::to_layout;
  Layer l(32, 48, 3, 1, true);
  auto x = at::randn({2, 32, 21, 18});
  c10::InferenceMode guard;
  cpu::InferenceConv run;
  for (auto layout : {ops::MapLayout::Blocked16, ops::MapLayout::ChannelsLast, ops::MapLayout::NCHW}) {
    const auto r4 = at::randn({2, 48, 21, 18});
    const auto expected = run(*l.conv, l.bn.get(), x, true, ops::to_layout(r4, layout), layout);
    auto residual = ops::to_layout(r4.clone(), layout);  // (ops::to_layout may return r4 itself)
    const void* memory = residual.data_ptr();
    auto y = run(*l.conv, l.bn.get(), x, true, residual, layout, false, /*residual_writable=*/true);
    EXPECT_TRUE(at::equal(y, expected)) << static_cast<int>(layout);
    EXPECT_LT(max_rel_diff(maskrcnn::ops::to_4d(y), l.reference(x, true, r4)), 1e-5);
    if (maskrcnn::winograd_available()) EXPECT_EQ(y.data_ptr(), memory) << static_cast<int>(layout);
    // A residual in another layout than the output's is copied, not written.
    auto other = ops::to_layout(r4.clone(), layout == ops::MapLayout::NCHW ? ops::MapLayout::ChannelsLast : ops::MapLayout::NCHW);
    const auto before = other.clone();
    auto z = run(*l.conv, l.bn.get(), x, true, other, layout, false, true);
    EXPECT_TRUE(at::equal(z, expected));
    EXPECT_TRUE(at::equal(other, before));
  }
}

TEST_F(InferenceConvTest, TrainingRunsTheModulesWithGradients) {
  Layer l(8, 8, 3, 1, /*frozen=*/false);
  l.bn->train();
  cpu::InferenceConv run;
  auto x = at::randn({2, 8, 10, 10});
  auto y = run(*l.conv, l.bn.get(), x, true);
  // Batch statistics, as the modules compute them in training mode.
  auto expected = at::relu(at::batch_norm(l.conv->forward(x), l.bn->weight, l.bn->bias, {}, {}, true, 0.1, 1e-5, false));
  EXPECT_LT((y - expected).abs().max().item<double>(), 1e-5);
  y.sum().backward();
  ASSERT_TRUE(l.conv->weight.grad().defined());
  EXPECT_GT(l.conv->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_EQ(run.onednn_calls(), 0);
}

// Training with frozen batch norm: the affine is folded into the weights inside
// the graph. Values equal the modules', and the gradients of the weight, the
// input and the residual equal those of conv -> bn -> + residual -> relu.
TEST_F(InferenceConvTest, TrainingWithFrozenNormFoldsItInTheGraph) {
  Layer l(16, 16, 3, 1, /*frozen=*/true);
  l.bn->train();  // frozen: train() changes nothing
  auto x = at::randn({2, 16, 12, 9}).requires_grad_(true);
  auto r = at::randn({2, 16, 12, 9}).requires_grad_(true);
  cpu::InferenceConv run;
  auto y = run(*l.conv, l.bn.get(), x, true, r);
  EXPECT_LT(max_rel_diff(y, l.reference(x.detach(), true, r.detach())), 1e-5);
  // 3x3 stride 1: oneDNN's Winograd, forward and backward, where the CPU has it.
  EXPECT_EQ(run.onednn_calls(), maskrcnn::winograd_available() ? 1 : 0);
  const auto g = at::randn_like(y);
  auto [gw, gx, gr] = [&] {
    y.backward(g);
    return std::make_tuple(l.conv->weight.grad().clone(), x.grad().clone(), r.grad().clone());
  }();
  l.conv->weight.mutable_grad().reset();
  x.mutable_grad().reset();
  r.mutable_grad().reset();
  auto expected = at::relu(l.bn->forward(l.conv->forward(x)) + r);
  expected.backward(g);
  EXPECT_LT((gw - l.conv->weight.grad()).abs().max().item<double>(),
            1e-4 * l.conv->weight.grad().abs().max().item<double>());
  EXPECT_LT((gx - x.grad()).abs().max().item<double>(), 1e-4 * x.grad().abs().max().item<double>());
  EXPECT_TRUE(at::equal(gr, r.grad()));
}

// Models with batch statistics (trainable BatchNorm2d in train mode) keep
// their training convolutions on LibTorch's direct algorithm.
TEST_F(InferenceConvTest, DirectTrainingConvsKeepsLibTorchsConvolution) {
  Layer l(16, 16, 3, 1, /*frozen=*/true);
  auto x = at::randn({2, 16, 12, 9}).requires_grad_(true);
  cpu::InferenceConv run;
  at::Tensor y;
  {
    maskrcnn::cpu::DirectTrainingConvs direct;
    {
      maskrcnn::cpu::DirectTrainingConvs inactive(false);  // nested: still direct
      y = run(*l.conv, l.bn.get(), x, true);
    }
    y = run(*l.conv, l.bn.get(), x, true);
  }
  EXPECT_EQ(run.onednn_calls(), 0);
  auto w = l.conv->weight * l.bn->affine().first.reshape({-1, 1, 1, 1});
  EXPECT_TRUE(at::equal(y, at::relu(at::conv2d(x, w, l.bn->affine().second, 1, 1))));
  y = run(*l.conv, l.bn.get(), x, true);  // guard gone: Winograd again where available
  EXPECT_EQ(run.onednn_calls(), maskrcnn::winograd_available() ? 1 : 0);
}

// Training 3x3 layers without norm (FPN outputs, RPN head, mask head): values
// and the gradients of input, weight and bias against LibTorch in double, in
// one run and with a scratchpad budget of 1 byte (one image per run, the
// weight gradient summed over the images).
TEST_F(InferenceConvTest, Training3x3GradientsMatchLibTorchInDouble) {
  const auto budget = maskrcnn::winograd_scratchpad_budget();
  struct Restore {
    std::size_t bytes;
    ~Restore() { maskrcnn::set_winograd_scratchpad_budget(bytes); }
  } restore{budget};
  for (auto [n, ic, oc, h, w, split] :
       {std::array<int64_t, 6>{2, 64, 32, 37, 29, 0}, std::array<int64_t, 6>{1, 256, 256, 13, 10, 0},
        std::array<int64_t, 6>{3, 16, 48, 4, 5, 0}, std::array<int64_t, 6>{3, 32, 16, 21, 18, 1}}) {
    SCOPED_TRACE(std::to_string(ic) + "->" + std::to_string(oc) + " at " + std::to_string(h) + "x" + std::to_string(w) +
                 (split ? ", one image per run" : ""));
    maskrcnn::set_winograd_scratchpad_budget(split ? 1 : 0);
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(ic, oc, 3).padding(1).bias(true));
    auto x = at::randn({n, ic, h, w}).requires_grad_(true);
    cpu::InferenceConv run;
    auto y = run(*conv, nullptr, x, true);
    const auto g = at::randn_like(y);
    y.backward(g);
    auto xd = x.detach().to(at::kDouble).requires_grad_(true);
    auto wd = conv->weight.detach().to(at::kDouble).requires_grad_(true);
    auto bd = conv->bias.detach().to(at::kDouble).requires_grad_(true);
    auto yd = at::relu(at::conv2d(xd, wd, bd, 1, 1));
    yd.backward(g.to(at::kDouble));
    EXPECT_LT(max_rel_diff(y, yd.detach()), 1e-5);
    EXPECT_LT(max_rel_diff(x.grad(), xd.grad()), 1e-5);
    EXPECT_LT(max_rel_diff(conv->weight.grad(), wd.grad()), 1e-5);
    EXPECT_LT(max_rel_diff(conv->bias.grad(), bd.grad()), 1e-5);
    EXPECT_EQ(run.onednn_calls(), maskrcnn::winograd_available() ? 1 : 0);
    EXPECT_EQ(run.onednn_parts(), maskrcnn::winograd_available() ? (split ? n : 1) : 0);
  }
}

// Frozen layers in training (nothing they read requires a gradient) take the
// inference path: oneDNN (Winograd where the CPU has it) with the folded
// weights, and no graph.
TEST_F(InferenceConvTest, FrozenLayersInTrainingTakeTheInferencePath) {
  Layer l(16, 16, 3, 1, /*frozen=*/true);
  l.conv->weight.requires_grad_(false);
  cpu::InferenceConv run;
  auto x = at::randn({1, 16, 20, 20});
  ASSERT_TRUE(at::GradMode::is_enabled());
  auto y = run(*l.conv, l.bn.get(), x, true);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_LT(max_rel_diff(y, l.reference(x, true)), 1e-5);
  EXPECT_EQ(run.onednn_calls(), maskrcnn::onednn_available() ? 1 : 0);
  // Once the input needs a gradient, the graph path again.
  auto y2 = run(*l.conv, l.bn.get(), x.clone().requires_grad_(true), true);
  EXPECT_TRUE(y2.requires_grad());
}

}  // namespace
