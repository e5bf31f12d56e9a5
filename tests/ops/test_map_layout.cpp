// Feature maps in NCHW, channels-last and oneDNN's blocked nChw16c layout
// (modeling/feature_layout.h): conversions, and pooling and upsampling on
// blocked maps against LibTorch's NCHW kernels.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <torch/torch.h>

#include "maskrcnn/model.h"
#include "modeling/anchor_generator.h"
#include "modeling/backbone/fpn.h"
#include "modeling/backbone/resnet.h"
#include "ops/map_layout.h"
#include "modeling/poolers.h"

using namespace maskrcnn;
using namespace maskrcnn::modeling;

namespace {

TEST(MapLayout, ConversionsRoundTripExactly) {
  at::manual_seed(3);
  auto x = at::randn({2, 48, 7, 9});
  EXPECT_EQ(ops::layout_of(x), ops::MapLayout::NCHW);
  auto blocked = ops::to_layout(x, ops::MapLayout::Blocked16);
  EXPECT_EQ(ops::layout_of(blocked), ops::MapLayout::Blocked16);
  ASSERT_EQ(blocked.sizes(), (std::vector<int64_t>{2, 3, 7, 9, 16}));
  // Channel c of pixel (y, x) sits at [n, c / 16, y, x, c % 16].
  EXPECT_EQ(blocked[1][2][3][4][5].item<float>(), x[1][2 * 16 + 5][3][4].item<float>());
  EXPECT_EQ(ops::map_channels(blocked), 48);
  EXPECT_EQ(ops::map_size(blocked), (std::pair<int64_t, int64_t>{7, 9}));
  auto cl = ops::to_layout(blocked, ops::MapLayout::ChannelsLast);
  EXPECT_EQ(ops::layout_of(cl), ops::MapLayout::ChannelsLast);
  EXPECT_TRUE(at::equal(cl, x));
  EXPECT_TRUE(at::equal(ops::to_4d(blocked), x));
  EXPECT_TRUE(ops::to_4d(blocked).is_contiguous());
  EXPECT_TRUE(at::equal(ops::to_layout(cl, ops::MapLayout::Blocked16), blocked));
  EXPECT_TRUE(at::equal(ops::to_layout(cl, ops::MapLayout::NCHW), x));
  EXPECT_TRUE(ops::to_layout(cl, ops::MapLayout::NCHW).is_contiguous());
  EXPECT_THROW(ops::to_layout(at::randn({1, 20, 3, 3}), ops::MapLayout::Blocked16), c10::Error);
}

TEST(MapLayout, PoolingAndUpsamplingBlockedMapsMatchNchw) {
  at::manual_seed(4);
  auto x = at::randn({2, 32, 13, 10});
  auto blocked = ops::to_layout(x, ops::MapLayout::Blocked16);
  // The stem's 3x3/2 max pool (padding 1) and the FPN's 1x1/2 LastLevelMaxPool.
  for (auto [k, s, p] : {std::tuple<int64_t, int64_t, int64_t>{3, 2, 1}, {1, 2, 0}}) {
    auto ref = at::max_pool2d(x, {k, k}, {s, s}, {p, p});
    auto y = ops::max_pool2d_any(blocked, k, s, p);
    EXPECT_EQ(ops::layout_of(y), ops::MapLayout::Blocked16);
    EXPECT_TRUE(at::equal(ops::to_4d(y), ref)) << k;
    EXPECT_TRUE(at::equal(ops::max_pool2d_any(x, k, s, p), ref));
  }
  // The FPN's top-down nearest upsampling, to an exact double and to an odd size.
  for (auto [h, w] : {std::pair<int64_t, int64_t>{26, 20}, {25, 21}}) {
    auto ref = at::upsample_nearest2d(x, {h, w}, c10::nullopt, c10::nullopt);
    auto y = ops::upsample_nearest_any(blocked, h, w);
    EXPECT_EQ(ops::layout_of(y), ops::MapLayout::Blocked16);
    EXPECT_TRUE(at::equal(ops::to_4d(y), ref)) << h << "x" << w;
  }
}

// The backbone's blocked maps (what inference hands the RPN head and
// RoIAlign) hold the values forward()'s 4-D maps hold, and the anchors and
// RoI pooling read them as they read the 4-D ones.
TEST(MapLayout, BlockedBackboneFeaturesServeAnchorsAndPoolingAsFourDOnes) {
  at::manual_seed(3);
  torch::NoGradGuard no_grad;
  BackboneWithFPN backbone(50, NormSpec{maskrcnn::Norm::FrozenBatchNorm, 1e-5}, std::nullopt);
  backbone->eval();
  const auto images = at::randn({1, 3, 96, 128});
  const auto blocked = backbone->features(images);
  const auto four_d = backbone->forward(images);
  ASSERT_EQ(blocked.size(), 5u);
  ASSERT_EQ(four_d.size(), 5u);
  for (size_t l = 0; l < blocked.size(); ++l) {
    EXPECT_EQ(four_d[l].dim(), 4);
    EXPECT_TRUE(at::equal(ops::to_4d(blocked[l]), four_d[l].contiguous())) << "level " << l;
  }
  // Where oneDNN ran the FPN, its maps come out blocked.
  if (maskrcnn::winograd_available()) EXPECT_TRUE(ops::is_blocked(blocked[0]));

  AnchorGenerator anchors;
  EXPECT_TRUE(at::equal(anchors.anchors(96, 128, blocked), anchors.anchors(96, 128, four_d)));

  MultiScaleRoIAlign pool(7, 2);
  const auto boxes = at::tensor({0.f, 0.f, 60.f, 40.f, 10.f, 20.f, 120.f, 90.f, 30.f, 5.f, 34.f, 9.f}).view({3, 4});
  const std::vector<std::pair<int64_t, int64_t>> sizes{{96, 128}};
  const auto from_blocked = pool(blocked, {boxes}, sizes);
  const auto from_4d = pool(four_d, {boxes}, sizes);
  ASSERT_EQ(from_blocked.sizes(), from_4d.sizes());
  EXPECT_LT((from_blocked - from_4d).abs().max().item<double>(), 1e-6);
  EXPECT_GT(from_4d.abs().sum().item<double>(), 0);
}

// Inference over the body gives each block's input up, so the residual add
// accumulates in the input's (or the downsample's) memory; a block's public
// forward() leaves its input alone, and both give the same maps.
TEST(MapLayout, BlocksGivenTheirInputLeaveOtherMapsAlone) {
  at::manual_seed(4);
  torch::NoGradGuard no_grad;
  ResNetBody body(50, NormSpec{maskrcnn::Norm::FrozenBatchNorm, 1e-5});
  body->eval();
  const auto images = at::randn({1, 3, 64, 96});
  const auto images_before = images.clone();
  const auto outs = body->features(images);
  EXPECT_TRUE(at::equal(images, images_before));
  // The same maps block by block through forward(), whose inputs stay as they were.
  auto y = body->features(images);  // deterministic: the same again
  for (size_t l = 0; l < outs.size(); ++l) EXPECT_TRUE(at::equal(outs[l], y[l])) << "layer " << l;
  const auto& layer2 = *body->named_children()["layer2"]->as<torch::nn::SequentialImpl>();
  auto x = outs[0].clone();
  const auto x_before = x.clone();
  at::Tensor out = x;
  for (const auto& block : layer2) out = block.ptr()->as<ResNetBlockImpl>()->forward(out);
  EXPECT_TRUE(at::equal(x, x_before)) << "forward() wrote into its input";
  EXPECT_TRUE(at::equal(ops::to_4d(out), ops::to_4d(outs[1])));
  // forward_consuming on an input someone else still holds does not write it either.
  auto held = outs[1].clone();
  const auto held_before = held.clone();
  const auto& layer3 = *body->named_children()["layer3"]->as<torch::nn::SequentialImpl>();
  auto second = layer3[1]->as<ResNetBlockImpl>();
  auto third_in = layer3[0]->as<ResNetBlockImpl>()->forward(held);
  const auto third_before = third_in.clone();
  auto a = second->forward_consuming(third_in);  // third_in still held here
  EXPECT_TRUE(at::equal(third_in, third_before));
  auto b = second->forward_consuming(std::move(third_in));  // given up: may be written
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_TRUE(at::equal(held, held_before));
}

}  // namespace
