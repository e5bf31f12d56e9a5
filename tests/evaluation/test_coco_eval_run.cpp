// The `maskrcnn eval` step as a library call: files in, summary text and STATS.json out.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"

using namespace maskrcnn;

namespace {

std::string case_dir(const std::string& name) {
  std::string shared = "/work/shared";
  if (const char* s = std::getenv("MASKRCNN_SHARED"))
    shared = s;
  else if (const char* s2 = std::getenv("MASKRCNN_SOURCE_DIR"))
    shared = std::string(s2) + "/../shared";
  return shared + "/coco_eval/" + name;
}

bool exists(const std::string& p) { return std::ifstream(p).good(); }

}  // namespace

TEST(CocoEvalRun, WritesStatsJsonAndPrintsSummaries) {
  const std::string dir = case_dir("case4");
  const std::string out = ::testing::TempDir() + "/maskrcnn_eval_stats.json";
  std::remove(out.c_str());
  std::ostringstream log;
  CocoEvalRunOptions o;
  o.output_json = out;
  o.threads = 2;
  o.log = &log;
  const auto summaries = evaluate_coco_files(dir + "/gt.json", dir + "/dt.json", o);
  ASSERT_EQ(summaries.size(), 2u);
  EXPECT_FALSE(exists(out + ".tmp"));
  std::ifstream in(out);
  ASSERT_TRUE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  std::ifstream ein(dir + "/expected.json");
  const nlohmann::json expected = nlohmann::json::parse(ein);
  static const char* kNames[12] = {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
  for (const char* t : {"bbox", "segm"}) {
    ASSERT_TRUE(j.contains(t)) << t;
    ASSERT_EQ(j[t]["stats"].size(), 12u);
    for (size_t i = 0; i < 12; ++i) {
      // full precision survives the round trip
      EXPECT_EQ(j[t]["stats"][i].get<double>(), expected[t][i].get<double>()) << t << " " << i;
      EXPECT_EQ(j[t][kNames[i]].get<double>(), expected[t][i].get<double>()) << t << " " << kNames[i];
    }
    ASSERT_TRUE(j[t]["per_category"].contains("person"));
    EXPECT_EQ(j[t]["per_category"]["flock"].get<double>(), -1.0);  // only crowd ground truth
  }
  const std::string text = log.str();
  EXPECT_NE(text.find("Evaluate annotation type *bbox*"), std::string::npos);
  EXPECT_NE(text.find("Evaluate annotation type *segm*"), std::string::npos);
  EXPECT_NE(text.find(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.502"),
            std::string::npos);
  std::remove(out.c_str());
}

TEST(CocoEvalRun, SingleIouTypeAndErrors) {
  const std::string dir = case_dir("case2");
  CocoEvalRunOptions o;
  o.iou_types = {IouType::Segm};
  const auto s = evaluate_coco_files(dir + "/gt.json", dir + "/dt.json", o);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].iou_type, IouType::Segm);
  EXPECT_EQ(s[0].per_category.size(), 3u);
  EXPECT_THROW(evaluate_coco_files(dir + "/missing.json", dir + "/dt.json", o), Error);
  EXPECT_THROW(evaluate_coco_files(dir + "/gt.json", dir + "/missing.json", o), Error);
  // results that do not belong to the ground truth (case8's images differ in size/ids)
  EXPECT_THROW(evaluate_coco_files(case_dir("case1") + "/gt.json", dir + "/dt.json", o), Error);
  // an unwritable output path
  o.output_json = "/nonexistent-dir/stats.json";
  EXPECT_THROW(evaluate_coco_files(dir + "/gt.json", dir + "/dt.json", o), Error);
}

TEST(CocoEvalRun, StatsJsonLayout) {
  CocoEvalSummary s;
  s.iou_type = IouType::Bbox;
  for (size_t i = 0; i < 12; ++i) s.stats[i] = 0.1 * static_cast<double>(i) + 1e-17;
  s.per_category = {{"a", 0.25}, {"b", -1}};
  const nlohmann::json j = nlohmann::json::parse(coco_eval_stats_json({s}));
  EXPECT_EQ(j.size(), 1u);
  EXPECT_EQ(j["bbox"]["stats"][3].get<double>(), s.stats[3]);
  EXPECT_EQ(j["bbox"]["ARl"].get<double>(), s.stats[11]);
  EXPECT_EQ(j["bbox"]["per_category"]["b"].get<double>(), -1.0);
}
