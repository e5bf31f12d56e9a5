// `maskrcnn predict` end to end: outputs (COCO results JSON checked against
// torchvision's reference, PNGs), image formats, and bad input: one-line
// errors, non-zero exit, the good images of a batch still processed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "maskrcnn/maskrcnn.h"
#include "support/cli.h"

namespace fs = std::filesystem;
using namespace maskrcnn::testing;

namespace {

class PredictCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_test_dir("maskrcnn_cli");
    weights_ = fixtures_dir("parity") + "/v1_coco.pth";
  }
  void TearDown() override { fs::remove_all(dir_); }

  CmdResult run(const std::string& args, const std::string& env = "") {
    return run_maskrcnn(args, dir_.string(), env);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& bytes) {
    std::ofstream(path(name), std::ios::binary) << bytes;
  }
  static void expect_clean_errors(const CmdResult& r) {
    EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
  }

  fs::path dir_;
  std::string weights_;
};

TEST_F(PredictCli, JsonMatchesTorchvisionReference) {
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  auto r = run("predict --threads 2 --weights " + weights_ + " --output-json " + path("out.json") +
               " " + image);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto results = nlohmann::json::parse(slurp(path("out.json")));
  ASSERT_TRUE(results.is_array());
  std::map<std::string, at::Tensor> ref;
  for (auto& kv : maskrcnn::load_state_dict(fixtures_dir("parity") + "/ref/v1_coco__syn_301x77.pt"))
    ref[kv.first] = kv.second;
  const int64_t n = ref["boxes"].size(0);
  ASSERT_EQ(static_cast<int64_t>(results.size()), n);
  const int64_t h = 301, w = 77;
  auto packed = ref["masks_packed"];
  for (int64_t i = 0; i < n; ++i) {
    const auto& rec = results[i];
    EXPECT_EQ(rec["image_id"], 0);
    EXPECT_EQ(rec["file_name"], "syn_301x77.png");
    EXPECT_EQ(rec["category_id"].get<int64_t>(), ref["labels"][i].item<int64_t>());
    EXPECT_EQ(rec["category_name"], maskrcnn::coco_category_names()[rec["category_id"].get<int>()]);
    EXPECT_NEAR(rec["score"].get<double>(), ref["scores"][i].item<double>(), 1e-4);
    auto b = ref["boxes"][i];
    EXPECT_NEAR(rec["bbox"][0].get<double>(), b[0].item<double>(), 1e-2);
    EXPECT_NEAR(rec["bbox"][2].get<double>(), (b[2] - b[0]).item<double>(), 1e-2);
    ASSERT_EQ(rec["segmentation"]["size"], nlohmann::json({h, w}));
    auto rle = maskrcnn::rle_from_string(rec["segmentation"]["counts"].get<std::string>(), h, w);
    auto mask = maskrcnn::rle_decode(rle);
    int64_t inter = 0, uni = 0;
    for (int64_t k = 0; k < h * w; ++k) {
      const bool theirs = (packed[i][k >> 3].item<uint8_t>() >> (7 - (k & 7))) & 1;
      inter += theirs && mask[k];
      uni += theirs || mask[k];
    }
    EXPECT_GE(uni == 0 ? 1.0 : double(inter) / uni, 0.99) << "detection " << i;
  }
}

TEST_F(PredictCli, FormatsSizesAndPngOutput) {
  // Grayscale, RGBA, 16-bit PNGs and a JPEG of different sizes, in one call.
  cv::Mat gray(90, 130, CV_8UC1), rgba(70, 50, CV_8UC4), deep(64, 64, CV_16UC3);
  cv::randu(gray, 0, 255);
  cv::randu(rgba, 0, 255);
  cv::randu(deep, 0, 65535);
  cv::imwrite(path("gray.png"), gray);
  cv::imwrite(path("rgba.png"), rgba);
  cv::imwrite(path("deep.png"), deep);
  const std::string jpg = shared_dir() + "/images/person_dog_horse.jpg";
  auto r = run("predict --threads 2 --min-size 320 --max-size 512 --weights " + weights_ +
               " --output-dir " + path("vis") + " --output-json " + path("o.json") + " " +
               path("gray.png") + " " + path("rgba.png") + " " + path("deep.png") + " " + jpg);
  ASSERT_EQ(r.rc, 0) << r.err;
  for (auto [name, h, w] : {std::tuple{"gray", 90, 130}, {"rgba", 70, 50}, {"deep", 64, 64},
                            {"person_dog_horse", 424, 640}}) {
    auto png = cv::imread(path(std::string("vis/") + name + ".png"), cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(png.empty()) << name;
    EXPECT_EQ(png.rows, h);
    EXPECT_EQ(png.cols, w);
    EXPECT_EQ(png.channels(), 3);
  }
  auto results = nlohmann::json::parse(slurp(path("o.json")));
  std::set<int> ids;
  for (auto& rec : results) ids.insert(rec["image_id"].get<int>());
  EXPECT_TRUE(ids.count(3)) << "the JPEG (4th image) should have detections";
  // The annotated photo differs from the input where something was drawn.
  auto vis = cv::imread(path("vis/person_dog_horse.png"));
  auto orig = cv::imread(jpg);
  EXPECT_GT(cv::norm(vis, orig, cv::NORM_L1), 0.0);
}

TEST_F(PredictCli, BadImagesFailCleanlyAndGoodOnesStillProduceOutput) {
  const std::string good = shared_dir() + "/images/giraffe_zebra.jpg";
  std::string jpeg = slurp(good);
  write("truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
  write("text.jpg", "this is not an image\n");
  write("empty.png", "");
  // A PNG header that claims 0x0 pixels, and one that claims 100000 x 100000.
  std::string png = slurp(fixtures_dir("parity") + "/images/syn_301x77.png");
  std::string zero = png, huge = png;
  for (int k = 16; k < 24; ++k) zero[k] = 0;
  huge.replace(16, 8, std::string("\x00\x01\x86\xa0\x00\x01\x86\xa0", 8));
  write("zero.png", zero);
  write("huge.png", huge);
  auto r = run("predict --threads 2 --min-size 320 --max-size 512 --weights " + weights_ +
               " --output-json " + path("o.json") + " " + path("missing.jpg") + " " +
               path("truncated.jpg") + " " + path("text.jpg") + " " + path("empty.png") + " " +
               path("zero.png") + " " + path("huge.png") + " " + good);
  EXPECT_EQ(r.rc, 1);
  expect_clean_errors(r);
  for (std::string name : {"missing.jpg", "truncated.jpg", "text.jpg", "empty.png", "zero.png", "huge.png"}) {
    auto pos = r.err.find("error: " + path(name) + ": ");
    EXPECT_NE(pos, std::string::npos) << name << " not reported in:\n" << r.err;
  }
  EXPECT_NE(r.err.find("truncated"), std::string::npos);
  EXPECT_NE(r.err.find("6 of 7 images failed"), std::string::npos) << r.err;
  auto results = nlohmann::json::parse(slurp(path("o.json")));
  ASSERT_FALSE(results.empty());
  for (auto& rec : results) EXPECT_EQ(rec["image_id"], 6);
}

TEST_F(PredictCli, BadWeightsFailWithOneLine) {
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  write("notes.pth", "not a checkpoint at all");
  auto r = run("predict --weights " + path("notes.pth") + " " + image);
  EXPECT_EQ(r.rc, 1);
  expect_clean_errors(r);
  EXPECT_NE(r.err.find(path("notes.pth")), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  // A checkpoint of another architecture than asked for.
  r = run("predict --arch maskrcnn_resnet50_fpn_v2 --weights " + weights_ + " " + image);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("maskrcnn_resnet50_fpn model, not maskrcnn_resnet50_fpn_v2"), std::string::npos)
      << r.err;

  // No default weights in torchvision's cache: say where to put them.
  r = run("predict " + image, "TORCH_HOME=" + path("torch_home"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("torch_home") + "/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--weights"), std::string::npos);
  EXPECT_FALSE(fs::exists(path("out.json")));
}

TEST_F(PredictCli, FullDiskLeavesNoHalfWrittenOutput) {
  // A file-size limit (ulimit -f, in KiB) stands in for a full disk: the
  // results file of 100 detections does not fit in 8 KiB.
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  auto r = run("predict --threads 2 --weights " + weights_ + " --output-json " + path("out.json") +
                   " " + image,
               "ulimit -f 8;");
  EXPECT_EQ(r.rc, 1) << r.err;
  expect_clean_errors(r);
  EXPECT_NE(r.err.find(path("out.json")), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("out.json")));
  for (auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename().string().find("out.json"), std::string::npos)
        << "left behind: " << entry.path();
}

TEST_F(PredictCli, RealFullDiskLeavesNoHalfWrittenOutput) {
  // ENOSPC from a 8 KiB tmpfs, where the results of 100 detections do not fit.
  const std::string full = path("full"), listing = path("listing.txt");
  const std::string prefix = full_disk_prefix(full, 8, listing);
  if (prefix.empty()) GTEST_SKIP() << "no private tmpfs here (unshare -rm); the ulimit -f drill covers the path";
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  auto r = run("predict --threads 2 --weights " + weights_ + " --output-json " + full + "/out.json " + image,
               prefix);
  EXPECT_EQ(r.rc, 1) << r.err;
  expect_clean_errors(r);
  EXPECT_NE(r.err.find(full + "/out.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  // One error line (the progress line for the image comes before it).
  EXPECT_EQ(r.err.find("error:"), r.err.rfind("error:")) << r.err;
  EXPECT_EQ(slurp(listing), "") << "the full disk was left holding files";
}

TEST_F(PredictCli, MaxDetectionsLimitsTheOutput) {
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  auto r = run("predict --threads 2 --max-detections 7 --weights " + weights_ + " --output-json " +
               path("o.json") + " " + image);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto results = nlohmann::json::parse(slurp(path("o.json")));
  EXPECT_EQ(results.size(), 7u);  // the reference model finds 100 here
  r = run("predict --max-detections 0 --weights " + weights_ + " " + image);
  EXPECT_NE(r.rc, 0);
}

TEST_F(PredictCli, DeviceFlag) {
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  auto r = run("predict --device cpu --max-detections 3 --weights " + weights_ + " " + image);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
  // Not a device: one line naming it, before the weights are read.
  for (std::string bad : {"tpu", "cuda:", "cuda:x", "cuda:-1", "CPU"}) {
    r = run("predict --device " + bad + " --weights " + path("missing.pth") + " " + image);
    EXPECT_EQ(r.rc, 1) << bad;
    expect_clean_errors(r);
    EXPECT_NE(r.err.find("device " + bad + ": not a device"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // CUDA from a build without the CUDA kernels, or with no such GPU.
  r = run("predict --device cuda:7 --weights " + weights_ + " " + image);
  EXPECT_EQ(r.rc, 1);
  expect_clean_errors(r);
  EXPECT_NE(r.err.find(maskrcnn::cuda_kernels_built() ? "CUDA GPU" : "-DMASKRCNN_WITH_CUDA=ON"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run("eval --device gpu --annotations " + path("a.json") + " --weights " + weights_ +
          " --images " + path("."));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("device gpu: not a device"), std::string::npos) << r.err;
}

TEST_F(PredictCli, HelpShowsDefaults) {
  auto r = run("predict --help");
  EXPECT_EQ(r.rc, 0);
  for (std::string s : {"--score-thresh", "0.05", "--mask-thresh", "0.5", "--min-size", "800",
                        "--max-size", "1333", "--output-json", "--output-dir", "--threads",
                        "--max-detections", "100", "--max-pixels", "--device", "cpu"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

}  // namespace
