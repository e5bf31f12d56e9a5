// `maskrcnn explain`: the report for a COCO-layout checkpoint and a small
// model, and bad input answered by one line and no report.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "maskrcnn/maskrcnn.h"
#include "support/cli.h"
#include "support/tiny_model.h"

using namespace maskrcnn::testing;
namespace fs = std::filesystem;

namespace {

const char* kSections[] = {"transform", "backbone", "anchors", "rpn", "box-head", "roi-align", "mask-head", "result"};

void expect_report(const std::string& html, int64_t detections) {
  size_t at = 0;
  for (const char* id : kSections) {
    const size_t pos = html.find(std::string("<section class=\"stage\" id=\"") + id + "\"");
    ASSERT_NE(pos, std::string::npos) << id;
    EXPECT_GT(pos, at) << id << " out of order";
    at = pos;
  }
  EXPECT_NE(html.find(" " + std::to_string(detections) + " detections &middot;"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos) << "the report must not reach the network";
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

// Nothing but `keep` in the folder: no report, no temporary.
void expect_only(const fs::path& dir, const std::set<std::string>& keep) {
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_TRUE(keep.count(e.path().filename().string())) << "left behind: " << e.path();
}

int64_t predicted(const std::string& weights, const std::string& image) {
  maskrcnn::ModelOverrides o;
  o.box_score_thresh = 0.05;
  return maskrcnn::load_model(weights, o).predict({maskrcnn::read_image(image)}).at(0).size();
}

TEST(ExplainCli, CocoLayoutCheckpointReportHasEverySectionAndPredictsDetections) {
  const auto dir = fresh_test_dir("explain_cli");
  const std::string weights = fixtures_dir("parity") + "/v1_coco.pth";
  const std::string image = fixtures_dir("parity") + "/images/syn_301x77.png";
  const std::string out = (dir / "report.html").string();
  auto r = run_maskrcnn("explain --weights " + weights + " --threads 2 " + image + " --output " + out,
                        dir.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("wrote " + out), std::string::npos) << r.err;
  expect_report(slurp(out), predicted(weights, image));
}

TEST(ExplainCli, RealPhotoWithASmallModelAndItsClassNames) {
  const auto dir = fresh_test_dir("explain_cli");
  const std::string weights = write_tiny_model(dir.string());
  const std::string photo = shared_dir() + "/images/dog_bicycle.jpg";
  const std::string out = (dir / "dog.html").string();
  auto r = run_maskrcnn("explain --weights " + weights + " " + photo + " -o " + out + " --detections 2", dir.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string html = slurp(out);
  expect_report(html, predicted(weights, photo));
  EXPECT_NE(html.find("Detection 2: "), std::string::npos) << "two detections followed";
  EXPECT_EQ(html.find("Detection 3: "), std::string::npos);
  for (const char* name : {"circle", "square", "triangle"}) EXPECT_NE(html.find(name), std::string::npos) << name;
  EXPECT_LT(html.size(), 15u << 20);
}

TEST(ExplainCli, BrokenImageOrCheckpointIsOneLineAndNoReport) {
  const auto dir = fresh_test_dir("explain_cli");
  const std::string weights = write_tiny_model(dir.string());
  const std::string text = (dir / "notes.jpg").string();
  { std::ofstream(text) << "this is not a photo\n"; }
  const std::string truncated = (dir / "truncated.pth").string();
  {
    const std::string bytes = slurp(weights);
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const std::string photo = shared_dir() + "/images/dog_bicycle.jpg";
  const std::string out = (dir / "report.html").string();
  struct Case {
    std::string args, names;
  } cases[] = {{"--weights " + weights + " " + text, text},
               {"--weights " + truncated + " " + photo, truncated},
               {"--weights " + (dir / "missing.pth").string() + " " + photo, "missing.pth"}};
  for (const auto& c : cases) {
    auto r = run_maskrcnn("explain " + c.args + " --output " + out, dir.string());
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.err.find(c.names), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
  // A flag out of range: CLI11's message (and its --help hint), no report.
  auto bad_flag = run_maskrcnn("explain --weights " + weights + " " + photo + " --detections -1 --output " + out,
                               dir.string());
  EXPECT_NE(bad_flag.rc, 0);
  EXPECT_NE(bad_flag.err.find("--detections"), std::string::npos) << bad_flag.err;
  EXPECT_FALSE(fs::exists(out));
  // An output folder that does not exist: named, and nothing written.
  auto r = run_maskrcnn("explain --weights " + weights + " " + photo + " --output " + (dir / "no/such/r.html").string(),
                        dir.string());
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("no/such/r.html"), std::string::npos) << r.err;
  expect_only(dir, {"tiny.pth", "tiny.json", "notes.jpg", "truncated.pth", "stdout", "stderr"});
}

TEST(ExplainCli, HelpShowsDefaults) {
  const auto dir = fresh_test_dir("explain_cli");
  auto r = run_maskrcnn("explain --help", dir.string());
  ASSERT_EQ(r.rc, 0);
  for (const char* s : {"--detections", "=3", "--proposals", "=40", "--score-thresh", "=0.05", "--output",
                        "<image stem>_explain.html", "--weights"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

}  // namespace
