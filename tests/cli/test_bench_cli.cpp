// `maskrcnn bench`: the stage table and its JSON, and bad input.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "support/cli.h"

namespace fs = std::filesystem;
using namespace maskrcnn::testing;

namespace {

class BenchCli : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = fresh_test_dir("maskrcnn_bench"); }
  void TearDown() override { fs::remove_all(dir_); }
  CmdResult run(const std::string& args) { return run_maskrcnn(args, dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(BenchCli, SyntheticImageStagesAndJson) {
  auto r = run("bench --threads 2 --reps 2 --warmup 1 --synthetic 120x150 --output-json " + path("b.json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("sgemm peak"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("roi_heads.mask_head"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(slurp(path("b.json")));
  EXPECT_EQ(j["threads"], 2);
  EXPECT_GT(j["sgemm_gflops"].get<double>(), 0.0);
  EXPECT_EQ(j["detections_per_image"].get<double>(), 100.0);  // random weights, score threshold 0
  ASSERT_EQ(j["stages"].size(), 12u);
  double sum = 0;
  for (const auto& s : j["stages"]) {
    EXPECT_GT(s["ms"].get<double>(), 0.0) << s;
    EXPECT_GT(s["peak_rss_mb"].get<double>(), 0.0) << s;
    sum += s["ms"].get<double>();
  }
  EXPECT_LE(sum, j["ms_per_image"].get<double>() * 1.000001);
  EXPECT_EQ(j["stages"][1]["name"], "backbone.body");
  EXPECT_GT(j["stages"][1]["gflop"].get<double>(), 1.0);
  EXPECT_GE(j["peak_rss_mb"].get<double>(), j["stages"][1]["peak_rss_mb"].get<double>());
}

TEST_F(BenchCli, HelpShowsDefaults) {
  auto r = run("bench --help");
  ASSERT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("--reps INT:POSITIVE=3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--synthetic TEXT=600x900"), std::string::npos) << r.out;
}

TEST_F(BenchCli, BadInputIsOneLineError) {
  auto r = run("bench --synthetic 12by40");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--synthetic: expected HEIGHTxWIDTH"), std::string::npos) << r.err;
  r = run("bench --weights " + path("missing.pth"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.pth"), std::string::npos) << r.err;
  r = run("bench " + path("missing.jpg"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.jpg"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("b.json")));
}

}  // namespace
