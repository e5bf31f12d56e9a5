// load_model, the one builder: a checkpoint (file or state dict) + overrides
// -> a model with its config and class names; and predict's image types.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "maskrcnn/maskrcnn.h"
#include "support/temp_dir.h"
#include "support/test_env.h"

using maskrcnn::testing::fixtures_dir;
using maskrcnn::testing::TempDir;

namespace {

std::string v2_path() { return fixtures_dir("parity") + "/v2.pth"; }  // 7 classes

bool same_tensor(const maskrcnn::StateDict& state, const std::string& key, const at::Tensor& t) {
  for (const auto& [k, v] : state)
    if (k == key) return v.sizes() == t.sizes() && at::equal(v, t);
  return false;
}

}  // namespace

TEST(ModelBuilder, ClassNamesComeWithTheModel) {
  auto coco = maskrcnn::load_model(fixtures_dir("parity") + "/v1_coco.pth");
  EXPECT_EQ(coco.class_names(), maskrcnn::coco_category_names());
  auto v2 = maskrcnn::load_model(v2_path());
  ASSERT_EQ(v2.class_names().size(), 7u);
  EXPECT_EQ(v2.class_names()[0], "__background__");
  EXPECT_EQ(v2.class_names()[6], "6");
  maskrcnn::ModelOverrides o;
  o.class_names = {"__background__", "a", "b"};
  try {
    maskrcnn::load_model(v2_path(), o);
    FAIL() << "3 names for 7 classes must be an error";
  } catch (const maskrcnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("7 classes"), std::string::npos) << e.what();
  }
}

TEST(ModelBuilder, FileAndStateDictGiveTheSameModel) {
  const auto state = maskrcnn::load_state_dict(v2_path());
  auto from_state = maskrcnn::load_model(state, {}, "v2");
  auto from_file = maskrcnn::load_model(v2_path());
  EXPECT_EQ(from_state.config().arch, maskrcnn::Arch::V2);
  const auto a = from_state.state_dict(), b = from_file.state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  }
}

// As torchvision's fine-tuning tutorial: fresh FastRCNNPredictor and
// MaskRCNNPredictor (conv5_mask too), every other weight from the checkpoint.
TEST(ModelBuilder, NewPredictorsReplaceOnlyThePredictors) {
  const auto state = maskrcnn::load_state_dict(v2_path());
  maskrcnn::ModelOverrides o;
  o.num_classes = 3;
  o.new_predictors = true;
  o.class_names = {"__background__", "circle", "square"};
  auto model = maskrcnn::load_model(state, o, "v2");
  EXPECT_EQ(model.config().num_classes, 3);
  EXPECT_EQ(model.class_names(), o.class_names);
  const auto mine = model.state_dict();
  for (const auto& [k, v] : mine) {
    if (k.rfind("roi_heads.box_predictor", 0) == 0 || k.rfind("roi_heads.mask_predictor.mask_fcn_logits", 0) == 0)
      EXPECT_EQ(v.size(0), k.find("bbox_pred") != std::string::npos ? 12 : 3) << k;
    else if (k == "roi_heads.mask_predictor.conv5_mask.weight")
      EXPECT_FALSE(same_tensor(state, k, v)) << k << " kept";
    else if (k.rfind("roi_heads.mask_predictor.conv5_mask", 0) != 0)
      EXPECT_TRUE(same_tensor(state, k, v)) << k << " changed";
  }
}

TEST(ModelBuilder, SidecarBringsSizesAndNamesAndIsChecked) {
  TempDir dir("builder");
  const auto weights = dir / "model_final.pth";
  std::filesystem::copy_file(v2_path(), weights);
  maskrcnn::ModelInfo info;
  info.config = maskrcnn::infer_config(maskrcnn::load_state_dict(weights), weights);
  info.config.min_size = 320;
  info.config.max_size = 480;
  info.class_names = {"__background__", "a", "b", "c", "d", "e", "f"};
  maskrcnn::write_model_info(weights, info);
  auto model = maskrcnn::load_model(weights);
  EXPECT_EQ(model.config().min_size, 320);
  EXPECT_EQ(model.config().max_size, 480);
  EXPECT_EQ(model.class_names(), info.class_names);
  maskrcnn::ModelOverrides o;
  o.min_size = 256;  // flags win over the sidecar
  EXPECT_EQ(maskrcnn::load_model(weights, o).config().min_size, 256);

  info.class_names.pop_back();
  maskrcnn::write_model_info(weights, info);
  try {
    maskrcnn::load_model(weights);
    FAIL() << "6 names for 7 classes must be an error";
  } catch (const maskrcnn::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model_final.json"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(ModelBuilder, PredictTakesUint8AsWellAsFloat) {
  maskrcnn::ModelOverrides o;
  o.min_size = 320;
  o.max_size = 480;
  o.box_score_thresh = 0.0;
  auto model = maskrcnn::load_model(v2_path(), o);
  const auto rgb = maskrcnn::read_image(maskrcnn::testing::shared_dir() + "/images/stop_sign.jpg");
  ASSERT_EQ(rgb.scalar_type(), at::kByte);
  const auto from_u8 = model.predict({rgb}).at(0);
  const auto from_float = model.predict({maskrcnn::to_float_image(rgb)}).at(0);
  ASSERT_GT(from_float.size(), 0);
  ASSERT_EQ(from_u8.size(), from_float.size());
  EXPECT_TRUE(at::equal(from_u8.boxes, from_float.boxes));
  EXPECT_TRUE(at::equal(from_u8.scores, from_float.scores));
  EXPECT_TRUE(at::equal(from_u8.labels, from_float.labels));
}
