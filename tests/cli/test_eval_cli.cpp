// `maskrcnn eval --weights W --images DIR` end to end: the model runs over a
// COCO data set, writes a results file keyed by the data set's image ids, and
// the evaluation scores it. The ground truth is torchvision's own detections
// (score >= 0.3) on the parity images, so a model that reproduces torchvision
// must score AP 1.0 in bbox and segm: every ground-truth object is found by
// its own detection, and the leftover low-score detections rank last.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "maskrcnn/maskrcnn.h"
#include "support/cli.h"

namespace fs = std::filesystem;
using namespace maskrcnn::testing;
using nlohmann::json;

namespace {

const std::vector<std::string> kImages = {"syn_301x77", "syn_123x457", "syn_64x1000"};

class EvalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_test_dir("maskrcnn_eval_cli");
    fs::create_directories(dir_ / "images");
    weights_ = fixtures_dir("parity") + "/v1_coco.pth";
  }
  void TearDown() override { fs::remove_all(dir_); }

  CmdResult run(const std::string& args) { return run_maskrcnn(args, dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Ground truth from torchvision's reference outputs. Image ids are sparse and
  // not in file order, so a results file keyed by position would score 0.
  // Returns the number of torchvision detections (score >= 0.05) in all.
  int64_t write_ground_truth(const std::vector<std::string>& extra_files = {}) {
    json gt = {{"images", json::array()}, {"annotations", json::array()}, {"categories", json::array()}};
    std::set<int64_t> cats;
    int64_t ann_id = 1, total = 0;
    for (size_t i = 0; i < kImages.size(); ++i) {
      const std::string name = kImages[i] + ".png";
      fs::copy_file(fixtures_dir("parity") + "/images/" + name, dir_ / "images" / name);
      std::map<std::string, at::Tensor> ref;
      for (auto& kv : maskrcnn::load_state_dict(fixtures_dir("parity") + "/ref/v1_coco__" + kImages[i] + ".pt"))
        ref[kv.first] = kv.second;
      int64_t h = 0, w = 0;
      std::sscanf(kImages[i].c_str(), "syn_%ldx%ld", &h, &w);
      const int64_t image_id = 1000 - 37 * static_cast<int64_t>(i);
      gt["images"].push_back({{"id", image_id}, {"file_name", name}, {"height", h}, {"width", w}});
      const int64_t n = ref["boxes"].size(0);
      total += n;
      auto packed = ref["masks_packed"].contiguous();
      const uint8_t* bits = packed.data_ptr<uint8_t>();
      const int64_t row = packed.size(1);
      for (int64_t d = 0; d < n; ++d) {
        if (ref["scores"][d].item<double>() < 0.3) continue;
        std::vector<uint8_t> mask(h * w);
        for (int64_t k = 0; k < h * w; ++k) mask[k] = (bits[d * row + (k >> 3)] >> (7 - (k & 7))) & 1;
        auto rle = maskrcnn::rle_encode(mask.data(), static_cast<int>(h), static_cast<int>(w));
        auto b = ref["boxes"][d];
        const double x1 = b[0].item<double>(), y1 = b[1].item<double>();
        const int64_t label = ref["labels"][d].item<int64_t>();
        cats.insert(label);
        gt["annotations"].push_back(
            {{"id", ann_id++}, {"image_id", image_id}, {"category_id", label}, {"iscrowd", 0},
             {"area", maskrcnn::rle_area(rle)},
             {"bbox", {x1, y1, b[2].item<double>() - x1, b[3].item<double>() - y1}},
             {"segmentation", {{"size", {h, w}}, {"counts", maskrcnn::rle_to_string(rle)}}}});
      }
    }
    int64_t next_id = 1;
    for (const auto& f : extra_files) {
      gt["images"].push_back({{"id", 5000 + next_id++}, {"file_name", f}, {"height", 50}, {"width", 60}});
    }
    for (int64_t c : cats)
      gt["categories"].push_back({{"id", c}, {"name", maskrcnn::coco_category_names()[c]}});
    num_gt_ = ann_id - 1;
    std::ofstream(path("gt.json")) << gt.dump();
    return total;
  }

  fs::path dir_;
  std::string weights_;
  int64_t num_gt_ = 0;
};

TEST_F(EvalCli, ModelOnDatasetReproducesTorchvisionAndScoresPerfectAp) {
  const int64_t tv_detections = write_ground_truth();
  ASSERT_GT(num_gt_, 10) << "too few reference detections above 0.3 to test anything";
  auto r = run("eval --threads 2 --annotations " + path("gt.json") + " --weights " + weights_ +
               " --images " + path("images") + " --results-out " + path("dt.json") +
               " --output-json " + path("stats.json"));
  ASSERT_EQ(r.rc, 0) << r.err;

  // The results file: every detection of torchvision's, keyed by the data set's ids.
  auto dt = json::parse(slurp(path("dt.json")));
  ASSERT_TRUE(dt.is_array());
  EXPECT_EQ(static_cast<int64_t>(dt.size()), tv_detections);
  std::set<int64_t> ids;
  for (auto& rec : dt) ids.insert(rec["image_id"].get<int64_t>());
  for (size_t i = 0; i < kImages.size(); ++i) EXPECT_TRUE(ids.count(1000 - 37 * static_cast<int64_t>(i)));
  EXPECT_EQ(ids.size(), kImages.size());

  auto stats = json::parse(slurp(path("stats.json")));
  for (const char* type : {"bbox", "segm"}) {
    ASSERT_TRUE(stats.contains(type)) << stats.dump();
    auto s = stats[type]["stats"];
    ASSERT_EQ(s.size(), 12u);
    EXPECT_GE(s[0].get<double>(), 0.99) << type << ": AP@[.5:.95] " << stats[type].dump();
    EXPECT_GE(s[1].get<double>(), 0.99) << type << ": AP50";
    EXPECT_GE(s[8].get<double>(), 0.99) << type << ": AR@100";
  }
  // The progress bar and the summary table were printed.
  EXPECT_NE(r.err.find("images/s"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"),
            std::string::npos)
      << r.out;
}

TEST_F(EvalCli, BrokenImagesAreReportedAndTheRestIsScored) {
  write_ground_truth({"broken.png", "absent.jpg"});
  std::ofstream(path("images/broken.png")) << "not a png";
  auto r = run("eval --threads 2 --iou-type bbox --annotations " + path("gt.json") + " --weights " +
               weights_ + " --images " + path("images") + " --output-json " + path("stats.json"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("images/broken.png")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path("images/absent.jpg")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("2 of 5 images"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
  // The readable images were still evaluated (the broken ones have no objects,
  // so the score is unchanged).
  auto stats = json::parse(slurp(path("stats.json")));
  EXPECT_GE(stats["bbox"]["stats"][0].get<double>(), 0.99);
  EXPECT_FALSE(stats.contains("segm"));
}

TEST_F(EvalCli, WeightsWithoutImagesAndBadFilesAreOneLineErrors) {
  write_ground_truth();
  auto r = run("eval --annotations " + path("gt.json") + " --weights " + weights_);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--images"), std::string::npos) << r.err;
  r = run("eval --annotations " + path("gt.json") + " --weights " + path("nope.pth") + " --images " +
          path("images"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("nope.pth")), std::string::npos) << r.err;
  std::ofstream(path("bad_gt.json")) << "{\"images\": [";
  r = run("eval --annotations " + path("bad_gt.json") + " --weights " + weights_ + " --images " +
          path("images"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("bad_gt.json")), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(EvalCli, AnnotationFilesOverTheSizeLimitAreRefusedUpFront) {
  write_ground_truth();
  const auto bytes = fs::file_size(path("gt.json"));
  ASSERT_GT(bytes, 1024u);
  // 0.001 MB = 1 KB: the ground truth is bigger, so nothing is evaluated.
  auto r = run("eval --annotations " + path("gt.json") + " --results " + path("gt.json") +
               " --max-annotation-mb 0.001");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("gt.json")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--max-annotation-mb"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.out.find("Average Precision"), std::string::npos) << r.out;
  // train reads its annotations under the same limit.
  r = run("train --train-annotations " + path("gt.json") + " --train-images " + path("images") +
          " --output-dir " + path("t") + " --max-annotation-mb 0.001");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("over the limit"), std::string::npos) << r.err;
}

TEST_F(EvalCli, HelpShowsDefaults) {
  auto r = run("eval --help");
  EXPECT_EQ(r.rc, 0);
  for (std::string s : {"--annotations", "--results", "--weights", "--images", "--iou-type", "both",
                        "--score-thresh", "0.05", "--results-out", "--output-json", "--threads",
                        "--max-annotation-mb", "2048"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

}  // namespace
