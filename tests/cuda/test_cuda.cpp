// The CUDA path (built only with MASKRCNN_WITH_CUDA; needs a GPU):
// - the CUDA RoIAlign and NMS kernels against the CPU ones (which the ops tests
//   hold to torchvision), forward and backward;
// - inference on the GPU against torchvision's own on the same GPU (fixture
//   "cuda"), TF32 off on both sides so that fp32 means fp32;
// - a training step on the GPU against the same step on the CPU: losses and
//   gradients (RPN and RoI sampling draw on the CPU from the images' seeds, so
//   both devices train on the same samples).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/model.h"
#include "maskrcnn/ops.h"
#include "support/test_env.h"

namespace {

const at::Device kCuda(at::kCUDA, 0);

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(torch::cuda::is_available()) << "built with MASKRCNN_WITH_CUDA but no GPU is visible";
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
};

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return a.numel() == 0 ? 0.0 : (a.cpu() - b.cpu()).abs().max().item<double>();
}

// Boxes inside and around a w x h map, some tiny, some degenerate, some outside.
at::Tensor random_rois(int64_t k, int64_t batch, double w, double h, at::ScalarType dtype) {
  auto idx = at::randint(0, batch, {k, 1}).to(dtype);
  auto x1 = at::rand({k, 1}, dtype) * (w + 10) - 5;
  auto y1 = at::rand({k, 1}, dtype) * (h + 10) - 5;
  auto bw = at::rand({k, 1}, dtype) * w * 0.6;
  auto bh = at::rand({k, 1}, dtype) * h * 0.6;
  bw.narrow(0, 0, 3).fill_(0);  // degenerate RoIs
  return at::cat({idx, x1, y1, x1 + bw, y1 + bh}, 1);
}

TEST_F(Cuda, RoiAlignForwardAndBackwardMatchCpu) {
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const double tol = dtype == at::kFloat ? 2e-5 : 1e-12;
    for (bool aligned : {false, true}) {
      for (int64_t sr : {0, 2}) {
        for (double scale : {1.0, 0.25}) {
          SCOPED_TRACE(std::string(c10::toString(dtype)) + " aligned " + std::to_string(aligned) +
                       " sampling " + std::to_string(sr) + " scale " + std::to_string(scale));
          auto input = at::randn({2, 6, 23, 37}, dtype);
          auto rois = random_rois(50, 2, 37 / scale, 23 / scale, dtype);
          auto x_cpu = input.clone().requires_grad_(true);
          auto x_gpu = input.to(kCuda).requires_grad_(true);
          auto y_cpu = maskrcnn::ops::roi_align(x_cpu, rois, scale, 7, 5, sr, aligned);
          auto y_gpu = maskrcnn::ops::roi_align(x_gpu, rois.to(kCuda), scale, 7, 5, sr, aligned);
          ASSERT_TRUE(y_gpu.is_cuda());
          ASSERT_EQ(y_gpu.sizes(), y_cpu.sizes());
          EXPECT_LE(max_abs(y_gpu, y_cpu), tol);
          ASSERT_GT(y_cpu.abs().sum().item<double>(), 0.0);
          auto g = at::randn(y_cpu.sizes(), dtype);
          y_cpu.backward(g);
          y_gpu.backward(g.to(kCuda));
          ASSERT_GT(x_cpu.grad().abs().sum().item<double>(), 0.0);
          EXPECT_LE(max_abs(x_gpu.grad(), x_cpu.grad()), 10 * tol);
        }
      }
    }
  }
}

TEST_F(Cuda, RoiAlignEmptyAndNonContiguous) {
  auto input = at::randn({1, 4, 16, 16}, at::TensorOptions().device(kCuda));
  auto none = maskrcnn::ops::roi_align(input, at::zeros({0, 5}, input.options()), 1.0, 7, 7, 2, true);
  EXPECT_EQ(none.sizes(), at::IntArrayRef({0, 4, 7, 7}));
  auto nhwc = input.contiguous(at::MemoryFormat::ChannelsLast);
  auto rois = at::tensor({0.0f, 1.5f, 2.0f, 11.0f, 9.5f}, input.options()).view({1, 5});
  EXPECT_LE(max_abs(maskrcnn::ops::roi_align(nhwc, rois, 1.0, 7, 7, 2, true),
                    maskrcnn::ops::roi_align(input.cpu(), rois.cpu(), 1.0, 7, 7, 2, true)),
            1e-5);
}

TEST_F(Cuda, NmsMatchesCpu) {
  at::manual_seed(1);
  for (int64_t n : {1, 63, 64, 65, 1000, 5000}) {
    auto xy = at::rand({n, 2}) * 400;
    auto wh = at::rand({n, 2}) * 80 + 1;
    auto boxes = at::cat({xy, xy + wh}, 1);
    auto scores = at::randperm(n).to(at::kFloat) / n;  // distinct
    auto idxs = at::randint(0, 5, {n});
    for (double thr : {0.3, 0.5, 0.7}) {
      SCOPED_TRACE("n " + std::to_string(n) + " iou " + std::to_string(thr));
      auto cpu = maskrcnn::ops::nms(boxes, scores, thr);
      auto gpu = maskrcnn::ops::nms(boxes.to(kCuda), scores.to(kCuda), thr);
      ASSERT_TRUE(gpu.is_cuda());
      ASSERT_TRUE(at::equal(gpu.cpu(), cpu)) << cpu.numel() << " kept on the CPU, " << gpu.numel()
                                             << " on the GPU";
      auto bcpu = maskrcnn::ops::batched_nms(boxes, scores, idxs, thr);
      auto bgpu = maskrcnn::ops::batched_nms(boxes.to(kCuda), scores.to(kCuda), idxs.to(kCuda), thr);
      ASSERT_TRUE(at::equal(bgpu.cpu(), bcpu));
      if (n >= 1000) {  // crowded enough that some boxes must go
        EXPECT_LT(cpu.numel(), n);
      }
    }
  }
  EXPECT_EQ(maskrcnn::ops::nms(at::zeros({0, 4}, at::TensorOptions().device(kCuda)),
                               at::zeros({0}, at::TensorOptions().device(kCuda)), 0.5)
                .numel(),
            0);
}

// np.packbits rows (MSB first) -> [N, H, W] uint8.
at::Tensor unpack_masks(const at::Tensor& packed, int64_t h, int64_t w) {
  const int64_t n = packed.size(0);
  auto bits = at::arange(7, -1, -1, at::kByte);
  auto unpacked = packed.unsqueeze(-1).bitwise_right_shift(bits).bitwise_and(1).view({n, -1});
  return unpacked.narrow(1, 0, h * w).reshape({n, h, w}).contiguous();
}

TEST_F(Cuda, InferenceMatchesTorchvisionOnTheGpu) {
  const std::string dir = maskrcnn::testing::fixtures_dir("cuda");
  std::vector<std::string> refs;
  for (auto& e : std::filesystem::directory_iterator(dir + "/ref")) refs.push_back(e.path());
  std::sort(refs.begin(), refs.end());
  ASSERT_GE(refs.size(), 3u) << "fixture 'cuda' missing in " << dir;
  for (const auto& path : refs) {
    const std::string kind = std::filesystem::path(path).filename().string().substr(
        0, std::filesystem::path(path).filename().string().find("__"));
    SCOPED_TRACE(path);
    std::map<std::string, at::Tensor> ref;
    for (auto& kv : maskrcnn::load_state_dict(path)) ref[kv.first] = kv.second;
    auto model = maskrcnn::load_model(maskrcnn::load_state_dict(dir + "/" + kind + ".pth"), {}, kind);
    model.to(kCuda);
    ASSERT_TRUE(model.device().is_cuda());
    auto image = ref["image"].to(at::kFloat).div(255).to(kCuda);
    auto dets = model.predict({image}).at(0);
    ASSERT_TRUE(dets.boxes.is_cuda());

    const int64_t n_ref = ref["boxes"].size(0), h = image.size(1), w = image.size(2);
    ASSERT_GT(n_ref, 0) << "reference has no detections: the fixture is not informative";
    auto ref_masks = unpack_masks(ref["masks_packed"], h, w);
    auto boxes = dets.boxes.cpu(), scores = dets.scores.cpu(), labels = dets.labels.cpu();
    auto rb = ref["boxes"], rs = ref["scores"], rl = ref["labels"];
    std::vector<bool> used(dets.size(), false);
    int64_t matched = 0;
    double worst_box = 0, worst_score = 0, worst_iou = 1;
    for (int64_t j = 0; j < n_ref; ++j) {
      int64_t best = -1;
      double best_diff = 1e9;
      for (int64_t k = 0; k < dets.size(); ++k) {
        if (used[k] || labels[k].item<int64_t>() != rl[j].item<int64_t>()) continue;
        const double sd = std::abs(scores[k].item<double>() - rs[j].item<double>());
        const bool box_ok = (boxes[k] - rb[j]).abs().le(rb[j].abs().clamp_min(1.0) * 1e-3).all().item<bool>();
        if (sd <= 1e-4 && box_ok && sd < best_diff) {
          best = k;
          best_diff = sd;
        }
      }
      if (best < 0) continue;
      auto ours = dets.binary_mask(best, 0.5).cpu();
      auto theirs = ref_masks[j];
      const double inter = (ours & theirs).sum().item<double>();
      const double uni = (ours | theirs).sum().item<double>();
      const double iou = uni == 0 ? 1.0 : inter / uni;
      if (iou < 0.99) continue;
      used[best] = true;
      ++matched;
      worst_box = std::max(worst_box, (boxes[best] - rb[j]).abs().max().item<double>());
      worst_score = std::max(worst_score, best_diff);
      worst_iou = std::min(worst_iou, iou);
    }
    std::printf("[cuda parity] %s: %ld/%ld matched (ours %ld), max |box diff| %.2e px, "
                "max |score diff| %.2e, min mask IoU %.5f\n",
                std::filesystem::path(path).filename().c_str(), (long)matched, (long)n_ref,
                (long)dets.size(), worst_box, worst_score, worst_iou);
    EXPECT_GE(matched, static_cast<int64_t>(std::ceil(0.99 * n_ref)));
    EXPECT_NEAR(static_cast<double>(dets.size()), static_cast<double>(n_ref), 0.01 * n_ref + 0.5);
  }
}

// A smooth random image and a few boxes with fractional corners (no IoU ties
// between anchors, which the two devices could break differently).
void make_batch(std::vector<at::Tensor>& images, std::vector<maskrcnn::TrainingTarget>& targets) {
  at::manual_seed(3);
  const std::vector<std::pair<int64_t, int64_t>> sizes{{200, 264}, {176, 240}};
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto [h, w] = sizes[i];
    auto low = at::rand({1, 3, h / 8, w / 8});
    images.push_back(at::upsample_bilinear2d(low, {h, w}, false)[0].contiguous());
    maskrcnn::TrainingTarget t;
    const int64_t n = 3;
    auto xy = at::rand({n, 2}) * at::tensor({w * 0.5f, h * 0.5f});
    auto wh = at::rand({n, 2}) * at::tensor({w * 0.4f, h * 0.4f}) + 12.3f;
    t.boxes = at::cat({xy, xy + wh}, 1);
    t.labels = at::randint(1, 91, {n});
    t.masks = at::zeros({n, h, w}, at::kByte);
    for (int64_t k = 0; k < n; ++k) {
      auto b = t.boxes[k].to(at::kLong);
      t.masks[k]
          .slice(0, b[1].item<int64_t>(), b[3].item<int64_t>())
          .slice(1, b[0].item<int64_t>(), b[2].item<int64_t>())
          .fill_(1);
    }
    t.sampling_seed = 100 + i;
    targets.push_back(t);
  }
}

TEST_F(Cuda, TrainingStepMatchesCpu) {
  maskrcnn::MaskRCNNConfig cfg;
  cfg.min_size = 320;
  cfg.max_size = 512;
  at::manual_seed(5);
  maskrcnn::MaskRCNN cpu_model(cfg);
  maskrcnn::MaskRCNN gpu_model(cfg);
  gpu_model.load_state_dict(cpu_model.state_dict(), "the CPU model");
  gpu_model.to(kCuda);
  cpu_model.train(true);
  gpu_model.train(true);
  std::vector<at::Tensor> images;
  std::vector<maskrcnn::TrainingTarget> targets;
  make_batch(images, targets);

  auto run = [&](const maskrcnn::MaskRCNN& model) {
    auto losses = model.losses(images, targets);
    at::Tensor total;
    std::map<std::string, double> values;
    for (auto& [name, v] : losses) {
      values[name] = v.item<double>();
      total = total.defined() ? total + v : v;
    }
    total.backward();
    return values;
  };
  auto cpu_losses = run(cpu_model);
  auto gpu_losses = run(gpu_model);
  ASSERT_EQ(cpu_losses.size(), 5u);
  for (auto& [name, v] : cpu_losses) {
    std::printf("[cuda train] %s: cpu %.6f gpu %.6f\n", name.c_str(), v, gpu_losses[name]);
    EXPECT_TRUE(std::isfinite(gpu_losses[name])) << name;
    EXPECT_NEAR(gpu_losses[name], v, 5e-3 * std::max(1.0, std::abs(v))) << name;
  }
  auto cpu_params = cpu_model.trainable_parameters();
  auto gpu_params = gpu_model.trainable_parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  int compared = 0;
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const auto& name = cpu_params[i].first;
    ASSERT_EQ(name, gpu_params[i].first);
    auto gc = cpu_params[i].second.grad(), gg = gpu_params[i].second.grad();
    ASSERT_EQ(gc.defined(), gg.defined()) << name;
    if (!gc.defined() || gc.norm().item<double>() == 0) continue;
    ASSERT_TRUE(gg.is_cuda()) << name;
    auto a = gc.flatten().to(at::kDouble), b = gg.cpu().flatten().to(at::kDouble);
    const double cosine = (a * b).sum().item<double>() / (a.norm() * b.norm()).item<double>();
    const double ratio = b.norm().item<double>() / a.norm().item<double>();
    EXPECT_GT(cosine, 0.999) << name;
    EXPECT_NEAR(ratio, 1.0, 1e-2) << name;
    ++compared;
  }
  EXPECT_GT(compared, 50);
}

}  // namespace
