// Parity with the real torchvision (fixture "parity": seeded random checkpoints
// and torchvision 0.14's outputs on real photos and odd-size synthetic images).
// A torchvision detection is matched when we have one with the same label, a
// box within 1e-3 relative, a score within 1e-4 and a mask IoU >= 0.99; at least
// 99% of torchvision's detections must match.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>
#include <map>

#include "maskrcnn/maskrcnn.h"
#include "modeling/generalized_rcnn.h"
#include "support/test_env.h"

using maskrcnn::testing::fixtures_dir;

namespace {

struct Case {
  std::string model, weights, image, ref;
  bool stages;
};

std::vector<Case> cases_for(const std::string& model) {
  std::ifstream f(fixtures_dir("parity") + "/manifest.json");
  EXPECT_TRUE(f.good()) << "parity fixture missing";
  auto j = nlohmann::json::parse(f);
  std::vector<Case> out;
  for (auto& c : j["cases"])
    if (c["model"] == model)
      out.push_back({c["model"], c["weights"], c["image"], c["ref"], c["stages"]});
  return out;
}

std::map<std::string, at::Tensor> load_ref(const std::string& path) {
  std::map<std::string, at::Tensor> m;
  for (auto& kv : maskrcnn::load_state_dict(path)) m[kv.first] = kv.second;
  return m;
}

// np.packbits rows (MSB first) -> [N, H, W] uint8.
at::Tensor unpack_masks(const at::Tensor& packed, int64_t h, int64_t w) {
  const int64_t n = packed.size(0);
  auto out = at::zeros({n, h, w}, at::kByte);
  auto p = packed.accessor<uint8_t, 2>();
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < h * w; ++k) o[i * h * w + k] = (p[i][k >> 3] >> (7 - (k & 7))) & 1;
  return out;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  auto denom = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / std::max(denom, 1e-12);
}

void check_case(const Case& c, const maskrcnn::MaskRCNN& model) {
  SCOPED_TRACE(c.model + " on " + c.image);
  const std::string dir = fixtures_dir("parity");
  auto ref = load_ref(dir + "/" + c.ref);
  auto rgb = maskrcnn::read_image(dir + "/" + c.image);
  auto image = maskrcnn::to_float_image(rgb);
  auto dets = model.predict({image}).at(0);

  const int64_t n_ref = ref["boxes"].size(0);
  const int64_t h = rgb.size(1), w = rgb.size(2);
  ASSERT_GT(n_ref, 0) << "reference has no detections: the fixture is not informative";
  auto ref_masks = unpack_masks(ref["masks_packed"], h, w);
  auto rb = ref["boxes"], rs = ref["scores"], rl = ref["labels"];
  std::vector<bool> used(dets.size(), false);
  int64_t matched = 0;
  double worst_box = 0, worst_score = 0, worst_iou = 1;
  for (int64_t j = 0; j < n_ref; ++j) {
    int64_t best = -1;
    double best_score_diff = 1e9;
    for (int64_t k = 0; k < dets.size(); ++k) {
      if (used[k] || dets.labels[k].item<int64_t>() != rl[j].item<int64_t>()) continue;
      const double sd = std::abs(dets.scores[k].item<double>() - rs[j].item<double>());
      auto tol = rb[j].abs().clamp_min(1.0) * 1e-3;
      const bool box_ok = (dets.boxes[k] - rb[j]).abs().le(tol).all().item<bool>();
      if (sd <= 1e-4 && box_ok && sd < best_score_diff) {
        best = k;
        best_score_diff = sd;
      }
    }
    if (best < 0) continue;
    auto ours = dets.binary_mask(best, 0.5);
    auto theirs = ref_masks[j];
    const double inter = (ours & theirs).sum().item<double>();
    const double uni = (ours | theirs).sum().item<double>();
    const double iou = uni == 0 ? 1.0 : inter / uni;
    if (iou < 0.99) continue;
    used[best] = true;
    ++matched;
    worst_box = std::max(worst_box, (dets.boxes[best] - rb[j]).abs().max().item<double>());
    worst_score = std::max(worst_score, best_score_diff);
    worst_iou = std::min(worst_iou, iou);
  }
  std::printf("[parity] %s %s: %ld/%ld matched (ours %ld), max |box diff| %.2e px, "
              "max |score diff| %.2e, min mask IoU %.5f\n",
              c.model.c_str(), c.image.c_str(), (long)matched, (long)n_ref, (long)dets.size(),
              worst_box, worst_score, worst_iou);
  EXPECT_GE(matched, static_cast<int64_t>(std::ceil(0.99 * n_ref)));
  EXPECT_NEAR(static_cast<double>(dets.size()), static_cast<double>(n_ref), 0.01 * n_ref + 0.5);

  if (!c.stages) return;
  // Stage-level: FPN features and RPN proposals.
  auto& net = model.module();
  c10::InferenceMode guard;
  auto batch = net.transform()({image});
  auto features = net.backbone->forward(batch.tensors);
  const char* names[] = {"0", "1", "2", "3", "pool"};
  for (int l = 0; l < 5; ++l) {
    auto rf = ref[std::string("feature_") + names[l]];
    ASSERT_EQ(features[l].sizes(), rf.sizes()) << "level " << names[l];
    const double d = max_rel_diff(features[l], rf);
    std::printf("[parity] %s %s: feature %s max rel diff %.2e\n", c.model.c_str(),
                c.image.c_str(), names[l], d);
    EXPECT_LT(d, 1e-4) << "level " << names[l];
  }
  auto proposals = net.rpn->forward(batch, features).boxes.at(0);
  auto rp = ref["proposals"];
  ASSERT_NEAR(proposals.size(0), rp.size(0), 0.01 * rp.size(0) + 0.5);
  const int64_t n = std::min(proposals.size(0), rp.size(0));
  auto close = (proposals.slice(0, 0, n) - rp.slice(0, 0, n)).abs().le(
      rp.slice(0, 0, n).abs().clamp_min(1.0) * 1e-3).all(1);
  const double frac = close.to(at::kDouble).mean().item<double>();
  // As a set: near-tied scores may swap or shift a few places (one proposal
  // more or less before a near-tie shifts the rest), the boxes stay.
  auto pair_close = (proposals.unsqueeze(1) - rp.unsqueeze(0)).abs().le(
      rp.unsqueeze(0).abs().clamp_min(1.0) * 1e-3).all(2);
  const double found = pair_close.any(0).to(at::kDouble).mean().item<double>();
  std::printf("[parity] %s %s: %ld proposals, %.4f equal in order, %.4f found\n", c.model.c_str(),
              c.image.c_str(), (long)rp.size(0), frac, found);
  EXPECT_GE(found, 0.99);
  EXPECT_GE(frac, 0.97);
}

void run_model(const std::string& kind) {
  auto cases = cases_for(kind);
  ASSERT_FALSE(cases.empty());
  auto model = maskrcnn::load_model(fixtures_dir("parity") + "/" + cases[0].weights);
  for (auto& c : cases) check_case(c, model);
}

}  // namespace

TEST(Parity, V1CocoStyleLegacyFormatFrozenBN) {
  at::set_num_threads(2);
  run_model("v1_coco");
}

TEST(Parity, V1BatchNorm) {
  at::set_num_threads(2);
  run_model("v1_bn");
}

TEST(Parity, V2SevenClasses) {
  at::set_num_threads(2);
  run_model("v2");
}

// torchvision's parts with GroupNorm(32) in ResNet-18, FPN and heads, a
// 128-wide FPN, two box convs, a 512-wide fc, a 2 x 128 mask head and anchors 16..256 (gn.json):
// what `maskrcnn train --norm gn` with smaller heads builds.
TEST(Parity, GroupNormResNet18SmallHeadsAndAnchors) {
  at::set_num_threads(2);
  run_model("gn");
}

TEST(Parity, InfersGroupNormAndHeadSizes) {
  const auto path = fixtures_dir("parity") + "/gn.pth";
  auto c = maskrcnn::infer_config(maskrcnn::load_state_dict(path), "gn");
  EXPECT_EQ(c.norm, maskrcnn::Norm::GroupNorm);
  EXPECT_EQ(c.arch, maskrcnn::Arch::V2);
  EXPECT_EQ(c.backbone_depth, 18);
  EXPECT_EQ(c.num_classes, 5);
  EXPECT_EQ(c.fpn_channels, 128);
  EXPECT_EQ(c.representation_size, 512);
  EXPECT_EQ(c.box_head_conv_layers, 2);
  EXPECT_EQ(c.mask_head_layers, 2);
  EXPECT_EQ(c.mask_head_channels, 128);
  // The anchors come from the sidecar.
  auto model = maskrcnn::load_model(path);
  EXPECT_EQ(model.config().anchor_sizes, (std::vector<double>{16, 32, 64, 128, 256}));
  EXPECT_EQ(model.config().min_size, 320);
}

TEST(Parity, InfersArchitectureFromCheckpoints) {
  const auto dir = fixtures_dir("parity");
  auto v1 = maskrcnn::infer_config(maskrcnn::load_state_dict(dir + "/v1_coco.pth"), "v1_coco");
  EXPECT_EQ(v1.arch, maskrcnn::Arch::V1);
  EXPECT_EQ(v1.num_classes, 91);
  EXPECT_EQ(v1.norm, maskrcnn::Norm::FrozenBatchNorm);
  EXPECT_EQ(v1.backbone_norm_eps, 0.0);
  auto bn = maskrcnn::infer_config(maskrcnn::load_state_dict(dir + "/v1_bn.pth"), "v1_bn");
  EXPECT_EQ(bn.norm, maskrcnn::Norm::BatchNorm);
  EXPECT_EQ(bn.backbone_norm_eps, 1e-5);
  auto v2 = maskrcnn::infer_config(maskrcnn::load_state_dict(dir + "/v2.pth"), "v2");
  EXPECT_EQ(v2.arch, maskrcnn::Arch::V2);
  EXPECT_EQ(v2.num_classes, 7);
  EXPECT_EQ(v2.backbone_depth, 50);
}

TEST(Parity, WrongArchOrClassCountIsAClearError) {
  const auto path = fixtures_dir("parity") + "/v2.pth";
  maskrcnn::ModelOverrides o;
  o.num_classes = 91;
  try {
    maskrcnn::load_model(path, o);
    FAIL() << "expected an error";
  } catch (const maskrcnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("7 classes"), std::string::npos) << e.what();
  }
  // Loading a v2 state dict into a v1 model lists the offending keys.
  maskrcnn::MaskRCNNConfig cfg;
  cfg.num_classes = 7;
  maskrcnn::MaskRCNN v1(cfg);
  try {
    v1.load_state_dict(maskrcnn::load_state_dict(path), path);
    FAIL() << "expected an error";
  } catch (const maskrcnn::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("missing keys"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
}

// --precision bf16 against torchvision's f32 outputs. Layer by layer bf16 is
// within ~3e-3 (tests/modeling/test_inference_conv.cpp); through the whole
// network it is checked here on the FPN features and the detections. These
// seeded random-weight models score their ~1000 candidates within a few
// hundredths of each other, so any rounding reorders their top 100 more than
// it would with trained weights. The bar on matched detections therefore
// comes from torchvision itself: the fixtures hold its outputs with the
// convolutions' and linear layers' inputs and weights rounded to bf16 (the
// rounding --precision bf16 does; make_parity_fixtures.py's bf16_rounded),
// and ours must keep about as many of the f32 detections as that does.
namespace {

// torchvision's detections (ref_boxes, ref_labels) that have a match in
// (boxes, labels): same label, box IoU >= 0.9, each match used once.
int64_t count_matched(const at::Tensor& ref_boxes, const at::Tensor& ref_labels, const at::Tensor& boxes,
                      const at::Tensor& labels) {
  auto iou = maskrcnn::ops::box_iou(ref_boxes, boxes).contiguous();  // [n_ref, n]
  std::vector<bool> used(boxes.size(0), false);
  int64_t matched = 0;
  for (int64_t j = 0; j < ref_boxes.size(0); ++j) {
    int64_t best = -1;
    double best_iou = 0.9;
    for (int64_t k = 0; k < boxes.size(0); ++k) {
      if (used[k] || labels[k].item<int64_t>() != ref_labels[j].item<int64_t>()) continue;
      const double v = iou.index({j, k}).item().toDouble();
      if (v >= best_iou) best = k, best_iou = v;
    }
    if (best >= 0) used[best] = true, ++matched;
  }
  return matched;
}

}  // namespace

TEST(Parity, Bf16StaysCloseToTorchvision) {
  at::set_num_threads(2);
  maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
  if (!maskrcnn::bf16_available()) {
    EXPECT_EQ(maskrcnn::inference_precision(), maskrcnn::Precision::F32) << "falls back where unavailable";
    return;
  }
  ASSERT_EQ(maskrcnn::inference_precision(), maskrcnn::Precision::BF16);
  auto cases = cases_for("v1_coco");
  auto model = maskrcnn::load_model(fixtures_dir("parity") + "/" + cases[0].weights);
  int checked = 0;
  int64_t total_matched = 0, total_rounded = 0;
  for (auto& c : cases) {
    if (c.image.find("syn_") != std::string::npos) continue;  // the photos only
    auto ref = load_ref(fixtures_dir("parity") + "/" + c.ref);
    auto image = maskrcnn::to_float_image(maskrcnn::read_image(fixtures_dir("parity") + "/" + c.image));
    if (c.stages) {
      c10::InferenceMode guard;
      auto& net = model.module();
      auto features = net.backbone->forward(net.transform()({image}).tensors);
      const char* names[] = {"0", "1", "2", "3", "pool"};
      for (int l = 0; l < 5; ++l) {
        const double d = max_rel_diff(features[l], ref[std::string("feature_") + names[l]]);
        std::printf("[parity] bf16 %s: feature %s max rel diff %.2e\n", c.image.c_str(), names[l], d);
        EXPECT_LT(d, 5e-2) << "level " << names[l];
      }
    }
    auto dets = model.predict({image}).at(0);
    const at::Tensor rb = ref["boxes"], rl = ref["labels"];
    ASSERT_TRUE(ref.count("bf16_rounded_boxes")) << c.ref << ": fixtures older than make_parity_fixtures.py";
    const int64_t n_ref = rb.size(0);
    const int64_t matched = count_matched(rb, rl, dets.boxes, dets.labels);
    const int64_t rounded = count_matched(rb, rl, ref["bf16_rounded_boxes"], ref["bf16_rounded_labels"]);
    std::printf("[parity] bf16 %s: %ld/%ld of torchvision's detections matched (same label, box IoU >= 0.9); "
                "torchvision with bf16-rounded layers: %ld\n",
                c.image.c_str(), (long)matched, (long)n_ref, (long)rounded);
    // One photo's count moves by ~5 with the rounding's luck (the rounded
    // torchvision gets 70-86 of 100 on these photos): per photo within 15 of
    // torchvision's own, and over the photos at least 85% of its total.
    EXPECT_GE(matched, rounded - 15) << c.image;
    EXPECT_GE(matched, static_cast<int64_t>(std::ceil(0.6 * n_ref))) << c.image;
    total_matched += matched, total_rounded += rounded;
    ++checked;
  }
  std::printf("[parity] bf16 over the photos: %ld matched, torchvision with bf16-rounded layers %ld\n",
              (long)total_matched, (long)total_rounded);
  EXPECT_GE(total_matched, static_cast<int64_t>(std::ceil(0.85 * total_rounded)));
  maskrcnn::set_inference_precision(maskrcnn::Precision::F32);
  EXPECT_GE(checked, 2);
}
