// Training losses and gradients against the real torchvision (fixture "train",
// tests/python/make_train_fixtures.py): same seeded weights, images and
// targets; sampling takes every positive and negative, so both sides use the
// same samples. v1 with a frozen-BN backbone (the fine-tuning setup) and v2
// with trainable BatchNorm2d everywhere (batch statistics in train mode).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>
#include <map>

#include "maskrcnn/maskrcnn.h"
#include "support/test_env.h"

using namespace maskrcnn::testing;

namespace {

std::map<std::string, at::Tensor> load_dict(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (auto& kv : maskrcnn::load_state_dict(path)) out[kv.first] = kv.second;
  return out;
}

nlohmann::json cases() {
  std::ifstream f(fixtures_dir("train") + "/manifest.json");
  if (!f) return nlohmann::json::array();
  return nlohmann::json::parse(f)["cases"];
}

maskrcnn::MaskRCNNConfig config_of(const nlohmann::json& c) {
  maskrcnn::MaskRCNNConfig cfg;
  cfg.arch = maskrcnn::parse_arch(c["arch"]);
  cfg.num_classes = c["num_classes"];
  cfg.backbone_depth = c.value("backbone_depth", 50);
  cfg.norm = c["frozen_batch_norm"].get<bool>() ? maskrcnn::Norm::FrozenBatchNorm : maskrcnn::Norm::BatchNorm;
  cfg.backbone_norm_eps = c["backbone_norm_eps"];
  cfg.trainable_backbone_layers = c["trainable_backbone_layers"];
  cfg.min_size = c["min_size"];
  cfg.max_size = c["max_size"];
  cfg.rpn_batch_size_per_image = c["rpn_batch_size_per_image"];
  cfg.rpn_positive_fraction = c["rpn_positive_fraction"];
  cfg.box_batch_size_per_image = c["box_batch_size_per_image"];
  cfg.box_positive_fraction = c["box_positive_fraction"];
  cfg.rpn_pre_nms_top_n_train = c["rpn_pre_nms_top_n_train"];
  cfg.rpn_post_nms_top_n_train = c["rpn_post_nms_top_n_train"];
  return cfg;
}

class TrainingParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainingParity, LossesAndGradientsMatchTorchvision) {
  nlohmann::json c;
  for (auto& x : cases())
    if (x["name"] == GetParam()) c = x;
  ASSERT_FALSE(c.is_null()) << "fixture case " << GetParam() << " missing";
  const std::string base = fixtures_dir("train") + "/" + GetParam();
  // The fixture was made with 2 threads: v2's deep gradients pass through BN
  // backward with batch statistics, which cancels most of the gradient, so the
  // summation order shows (torchvision vs itself, 1 vs 2 threads: ~1e-2).
  at::set_num_threads(2);
  maskrcnn::MaskRCNN model(config_of(c));
  model.load_state_dict(maskrcnn::load_state_dict(base + ".pth"), base + ".pth");
  model.train(true);

  auto inputs = load_dict(base + "__inputs.pt");
  std::vector<at::Tensor> images;
  std::vector<maskrcnn::TrainingTarget> targets;
  for (int k = 0; k < c["num_images"].get<int>(); ++k) {
    const std::string s = std::to_string(k);
    images.push_back(inputs.at("image" + s));
    maskrcnn::TrainingTarget t;
    t.boxes = inputs.at("boxes" + s);
    t.labels = inputs.at("labels" + s);
    t.masks = inputs.at("masks" + s);
    t.sampling_seed = 1234 + k;  // irrelevant here: every sample is taken
    targets.push_back(t);
  }
  auto losses = model.losses(images, targets);
  auto ref = load_dict(base + "__losses.pt");
  ASSERT_EQ(losses.size(), 5u);
  const std::vector<std::string> order{"loss_classifier", "loss_box_reg", "loss_mask",
                                       "loss_objectness", "loss_rpn_box_reg"};
  at::Tensor total;
  for (size_t i = 0; i < losses.size(); ++i) {
    const auto& [name, value] = losses[i];
    EXPECT_EQ(name, order[i]);
    const double ours = value.item<double>(), theirs = ref.at(name).item<double>();
    EXPECT_NEAR(ours, theirs, 1e-4) << name;
    EXPECT_NEAR(ours, theirs, 1e-3 * std::abs(theirs) + 1e-8) << name << " (relative)";
    std::printf("  %-18s ours %.8f torchvision %.8f\n", name.c_str(), ours, theirs);
    total = total.defined() ? total + value : value;
  }
  total.backward();

  auto grads = load_dict(base + "__grads.pt");
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model.trainable_parameters()) params[name] = p;
  for (auto& name : c["grads"]) {
    const std::string n = name;
    ASSERT_TRUE(params.count(n)) << n << " is not trainable in our model";
    auto g = params[n].grad();
    ASSERT_TRUE(g.defined()) << n << " got no gradient";
    const auto& r = grads.at(n);
    const double rel = (g - r).norm().item<double>() / (r.norm().item<double>() + 1e-12);
    std::printf("  grad %-48s relative difference %.2e\n", n.c_str(), rel);
    EXPECT_LT(rel, 1e-3) << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TrainingParity, ::testing::Values("v1_frozen", "v2_bn", "r18_bn"));

}  // namespace

namespace {

// Images without objects are allowed in training (torchvision: all anchors and
// proposals are background; no mask loss).
TEST(TrainingLosses, ImagesWithoutObjectsTrain) {
  torch::manual_seed(0);
  maskrcnn::MaskRCNNConfig cfg;
  cfg.backbone_depth = 18;
  cfg.num_classes = 3;
  cfg.norm = maskrcnn::Norm::BatchNorm;
  cfg.backbone_norm_eps = 1e-5;
  cfg.min_size = cfg.max_size = 96;
  maskrcnn::MaskRCNN model(cfg);
  model.train(true);
  auto empty = [](int64_t h, int64_t w) {
    return maskrcnn::TrainingTarget{at::zeros({0, 4}), at::zeros({0}, at::kLong),
                                    at::zeros({0, h, w}, at::kByte), 7};
  };
  auto masks = at::zeros({1, 80, 90}, at::kByte);
  masks.slice(1, 10, 40).slice(2, 20, 60).fill_(1);
  maskrcnn::TrainingTarget one{torch::tensor({{20.f, 10.f, 60.f, 40.f}}), torch::tensor({int64_t{2}}), masks, 8};

  // A batch mixing an empty image with one object, then a batch of empty images only.
  auto losses = model.losses({at::rand({3, 80, 90}), at::rand({3, 70, 100})}, {one, empty(70, 100)});
  at::Tensor total;
  for (auto& [name, v] : losses) {
    EXPECT_TRUE(std::isfinite(v.item<double>())) << name;
    total = total.defined() ? total + v : v;
  }
  total.backward();
  losses = model.losses({at::rand({3, 60, 60})}, {empty(60, 60)});
  for (auto& [name, v] : losses) {
    EXPECT_TRUE(std::isfinite(v.item<double>())) << name;
    if (name == "loss_mask" || name == "loss_box_reg" || name == "loss_rpn_box_reg")
      EXPECT_EQ(v.item<double>(), 0.0) << name << " without objects";
  }
  // Wrong shapes are errors, not crashes.
  maskrcnn::TrainingTarget bad = one;
  bad.masks = at::zeros({1, 10, 10}, at::kByte);
  EXPECT_ANY_THROW(model.losses({at::rand({3, 80, 90})}, {bad}));
  bad = one;
  bad.boxes = torch::tensor({{60.f, 10.f, 20.f, 40.f}});
  EXPECT_ANY_THROW(model.losses({at::rand({3, 80, 90})}, {bad}));
}

}  // namespace
