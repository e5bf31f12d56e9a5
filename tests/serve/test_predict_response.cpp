// POST /v1/predict's parts without HTTP: query parameters, the detections a
// request keeps, and one image's JSON (the records of `predict --output-json`).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "maskrcnn/error.h"
#include "maskrcnn/results.h"
#include "maskrcnn/rle.h"
#include "serve/predict_response.h"

using maskrcnn::Detections;
using namespace maskrcnn::serve;

namespace {

const PredictParams kServer{0.05, 0.5, 100};

std::string error_of(const std::multimap<std::string, std::string>& query) {
  try {
    parse_predict_params(query, kServer);
  } catch (const maskrcnn::Error& e) {
    return e.what();
  }
  return "";
}

// Four detections in a 6 x 8 image, scores descending; mask i covers a 2x2 square.
Detections four() {
  Detections d;
  d.image_height = 6;
  d.image_width = 8;
  d.boxes = at::tensor({1.f, 1.f, 3.f, 3.f, 2.f, 2.f, 4.f, 4.f, 0.f, 0.f, 2.f, 2.f, 4.f, 3.f, 6.f, 5.f}).view({4, 4});
  d.scores = at::tensor({0.9f, 0.6f, 0.3f, 0.1f});
  d.labels = at::tensor({int64_t{1}, int64_t{2}, int64_t{1}, int64_t{3}});
  for (int i = 0; i < 4; ++i) {
    maskrcnn::InstanceMask m;
    m.x0 = d.boxes[i][0].item<int64_t>();
    m.y0 = d.boxes[i][1].item<int64_t>();
    m.probs = at::full({2, 2}, 0.75f);
    d.masks.push_back(m);
  }
  return d;
}

TEST(PredictParams, DefaultsAreTheServers) {
  const PredictParams p = parse_predict_params({}, kServer);
  EXPECT_EQ(p.score_thresh, 0.05);
  EXPECT_EQ(p.mask_thresh, 0.5);
  EXPECT_EQ(p.max_detections, 100);
}

TEST(PredictParams, ValuesWithinTheServersLimits) {
  const PredictParams p = parse_predict_params(
      {{"score_thresh", "0.7"}, {"mask_thresh", "0.25"}, {"max_detections", "5"}}, kServer);
  EXPECT_EQ(p.score_thresh, 0.7);
  EXPECT_EQ(p.mask_thresh, 0.25);
  EXPECT_EQ(p.max_detections, 5);
}

TEST(PredictParams, BadValuesNameTheParameter) {
  EXPECT_NE(error_of({{"score_thresh", "abc"}}).find("score_thresh: expected a number"), std::string::npos);
  EXPECT_NE(error_of({{"score_thresh", ""}}).find("score_thresh"), std::string::npos);
  EXPECT_NE(error_of({{"score_thresh", "nan"}}).find("score_thresh"), std::string::npos);
  EXPECT_NE(error_of({{"score_thresh", "0.5x"}}).find("score_thresh"), std::string::npos);
  EXPECT_NE(error_of({{"score_thresh", "0.01"}}).find("below the server's --score-thresh 0.05"), std::string::npos);
  EXPECT_NE(error_of({{"mask_thresh", "2"}}).find("mask_thresh: must be between 0 and 1"), std::string::npos);
  EXPECT_NE(error_of({{"max_detections", "0"}}).find("max_detections: must be at least 1"), std::string::npos);
  EXPECT_NE(error_of({{"max_detections", "2.5"}}).find("max_detections: expected a whole number"), std::string::npos);
  EXPECT_NE(error_of({{"max_detections", "101"}}).find("above the server's --max-detections 100"), std::string::npos);
  EXPECT_NE(error_of({{"score_thresh", "0.5"}, {"score_thresh", "0.6"}}).find("more than once"), std::string::npos);
  EXPECT_NE(error_of({{"threshold", "0.5"}}).find("unknown query parameter 'threshold'"), std::string::npos);
}

TEST(SelectDetections, KeepsTheLeadingOnesAboveTheThreshold) {
  const Detections d = four();
  EXPECT_EQ(select_detections(d, 0.05, 100).size(), 4);
  const Detections above = select_detections(d, 0.5, 100);
  ASSERT_EQ(above.size(), 2);
  EXPECT_EQ(above.masks.size(), 2u);
  EXPECT_EQ(above.labels[1].item<int64_t>(), 2);
  EXPECT_EQ(above.image_width, 8);
  // Strictly above, compared in float as the model compares: 0.3f is not kept at 0.3.
  EXPECT_EQ(select_detections(d, 0.3, 100).size(), 2);
  const Detections top1 = select_detections(d, 0.05, 1);
  ASSERT_EQ(top1.size(), 1);
  EXPECT_FLOAT_EQ(top1.scores[0].item<float>(), 0.9f);
  EXPECT_EQ(select_detections(d, 0.95, 100).size(), 0);
}

TEST(ImageJson, IsWhatPredictWritesWithoutFileAndImage) {
  const Detections d = four();
  const std::vector<std::string> names{"__background__", "circle", "square", "triangle"};
  const nlohmann::json image = image_json(d, names, 0.5);
  EXPECT_EQ(image["width"], 8);
  EXPECT_EQ(image["height"], 6);
  const auto& dets = image["detections"];
  ASSERT_EQ(dets.size(), 4u);

  maskrcnn::CocoResultsWriter writer;
  writer.set_category_names(names);
  writer.add(3, "photo.png", d, 0.5);
  const auto records = nlohmann::json::parse(writer.to_string());
  for (size_t i = 0; i < 4; ++i) {
    auto expected = records[i];
    expected.erase("image_id");
    expected.erase("file_name");
    EXPECT_EQ(dets[i], expected) << i;
  }
  EXPECT_EQ(dets[1]["category_name"], "square");
  // The mask of detection 0: pixels (x 1..2, y 1..2) of the 6 x 8 image.
  std::vector<uint8_t> full(6 * 8, 0);
  for (int y = 1; y < 3; ++y)
    for (int x = 1; x < 3; ++x) full[y * 8 + x] = 1;
  EXPECT_EQ(dets[0]["segmentation"]["counts"], maskrcnn::rle_to_string(maskrcnn::rle_encode(full.data(), 6, 8)));
  EXPECT_EQ(dets[0]["segmentation"]["size"], nlohmann::json({6, 8}));
  // Below the mask threshold: an empty mask, still one record.
  const auto empty = image_json(d, names, 0.8)["detections"][0]["segmentation"]["counts"];
  EXPECT_EQ(empty, maskrcnn::rle_to_string(maskrcnn::rle_encode(std::vector<uint8_t>(48, 0).data(), 6, 8)));
}

}  // namespace
