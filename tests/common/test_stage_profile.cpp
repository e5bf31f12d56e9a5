// StageProfiler: the stages of a forward pass, their exclusive times and the
// FLOPs the layers report (what `maskrcnn bench` prints).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <memory>
#include <thread>

#include "maskrcnn/maskrcnn.h"
#include "maskrcnn/profile.h"
#include "common/stage_profile.h"

namespace {

using maskrcnn::StageProfiler;
using maskrcnn::common::ScopedStage;
namespace common = maskrcnn::common;

const maskrcnn::StageTime* find(const std::vector<maskrcnn::StageTime>& stages, const std::string& name) {
  for (const auto& s : stages)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(StageProfiler, TimesAreExclusiveAndAddUp) {
  StageProfiler profiler;
  const auto t0 = std::chrono::steady_clock::now();
  {
    common::ScopedStage outer("outer");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    {
      common::ScopedStage inner("inner");
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      maskrcnn::common::add_stage_flops(2e9);
    }
    maskrcnn::common::add_stage_flops(1e9);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto stages = profiler.stages();
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0].name, "outer");  // first seen first
  EXPECT_EQ(stages[1].name, "inner");
  EXPECT_GE(stages[1].seconds, 0.030);
  EXPECT_GE(stages[0].seconds, 0.010);
  // The inner stage's time is not counted again in the outer one.
  EXPECT_LE(stages[0].seconds + stages[1].seconds, wall + 1e-9);
  EXPECT_DOUBLE_EQ(stages[1].gflop, 2.0);  // FLOPs go to the innermost running stage
  EXPECT_DOUBLE_EQ(stages[0].gflop, 1.0);
  EXPECT_EQ(stages[0].calls, 1);
  EXPECT_GT(stages[0].peak_rss_mb, 0.0);
  profiler.reset();
  EXPECT_TRUE(profiler.stages().empty());
}

TEST(StageProfiler, OnlyTheInnermostProfilerRecordsAndNoneOutsideOne) {
  { common::ScopedStage nobody("unrecorded"); }  // no profiler: nothing to record into, no crash
  StageProfiler outer;
  {
    StageProfiler inner;
    { common::ScopedStage s("a"); }
    ASSERT_EQ(inner.stages().size(), 1u);
  }
  { common::ScopedStage s("b"); }
  auto stages = outer.stages();
  ASSERT_EQ(stages.size(), 1u);
  EXPECT_EQ(stages[0].name, "b");
}

// Profilers ending out of order (not innermost first) unlink themselves: the
// survivor keeps recording and nothing points at a freed one.
TEST(StageProfiler, ProfilersMayEndInAnyOrder) {
  auto outer = std::make_unique<StageProfiler>();
  auto inner = std::make_unique<StageProfiler>();
  {
    common::ScopedStage s("while-both");
    outer.reset();  // the enclosing one ends first
  }
  ASSERT_EQ(inner->stages().size(), 1u);
  EXPECT_EQ(inner->stages()[0].calls, 1);
  inner.reset();
  { common::ScopedStage s("after-both"); }  // no profiler left: nothing recorded, nothing touched
  StageProfiler fresh;
  { common::ScopedStage s("fresh"); }
  ASSERT_EQ(fresh.stages().size(), 1u);
  EXPECT_EQ(fresh.stages()[0].name, "fresh");
}

// A whole forward pass: torchvision's stages in pipeline order, once each,
// adding up to no more than the pass; the mask head's FLOPs are those of its
// layers for the detections it got.
TEST(StageProfiler, ForwardPassStagesAndMaskHeadFlops) {
  at::manual_seed(3);
  at::set_num_threads(2);
  maskrcnn::MaskRCNNConfig cfg;
  cfg.backbone_depth = 18;
  cfg.min_size = 160;
  cfg.max_size = 200;
  cfg.box_score_thresh = 0.0;  // every image keeps box_detections_per_img detections
  cfg.box_detections_per_img = 20;
  maskrcnn::MaskRCNN model(cfg);
  model.train(false);
  auto image = at::rand({3, 150, 190});
  model.predict({image});  // warm-up: primitive caches, allocator
  StageProfiler profiler;
  const auto t0 = std::chrono::steady_clock::now();
  auto dets = model.predict({image}).at(0);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto stages = profiler.stages();
  const std::vector<std::string> expected{"transform",
                                          "backbone.body",
                                          "backbone.fpn",
                                          "rpn.head",
                                          "rpn.proposals",
                                          "roi_heads.box_roi_align",
                                          "roi_heads.box_head",
                                          "roi_heads.box_postprocess",
                                          "roi_heads.mask_roi_align",
                                          "roi_heads.mask_head",
                                          "roi_heads.mask_predictor",
                                          "paste"};
  ASSERT_EQ(stages.size(), expected.size());
  double sum = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(stages[i].name, expected[i]);
    EXPECT_EQ(stages[i].calls, 1) << stages[i].name;
    EXPECT_GT(stages[i].seconds, 0.0) << stages[i].name;
    sum += stages[i].seconds;
  }
  EXPECT_LE(sum, wall + 1e-9);
  EXPECT_EQ(dets.size(), 20);
  // Mask head: 4 convolutions 3x3 256->256 on 14x14; predictor: the 2x2
  // stride-2 transposed convolution 256->256 to 28x28 and the 1x1 logits of
  // one class (256 -> 1) per detection.
  const double n = static_cast<double>(dets.size());
  EXPECT_NEAR(find(stages, "roi_heads.mask_head")->gflop, n * 4 * 2.0 * 256 * 256 * 9 * 14 * 14 * 1e-9, 1e-9);
  EXPECT_NEAR(find(stages, "roi_heads.mask_predictor")->gflop,
              n * (2.0 * 256 * 256 * 4 * 14 * 14 + 2.0 * 256 * 28 * 28) * 1e-9, 1e-9);
  // Box head: fc6 (256*7*7 -> 1024), fc7, cls_score and bbox_pred, per proposal;
  // 1000 proposals at most.
  const double per_roi = 2.0 * (256 * 49 * 1024 + 1024 * 1024 + 1024 * 91 + 1024 * 364);
  const double box_gflop = find(stages, "roi_heads.box_head")->gflop;
  const double rois = box_gflop / (per_roi * 1e-9);
  EXPECT_NEAR(rois, std::round(rois), 1e-6);
  EXPECT_GE(rois, 20);
  EXPECT_LE(rois, 1000);
  EXPECT_GT(find(stages, "backbone.body")->gflop, 0.0);
  EXPECT_EQ(find(stages, "rpn.proposals")->gflop, 0.0);
}

}  // namespace
