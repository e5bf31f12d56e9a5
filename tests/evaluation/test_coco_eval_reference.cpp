// COCOeval against pycocotools' numbers for shared/coco_eval/case*/.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "maskrcnn/coco.h"
#include "maskrcnn/coco_eval.h"

using namespace maskrcnn;

namespace {

std::string shared_dir() {
  if (const char* s = std::getenv("MASKRCNN_SHARED")) return s;
  if (const char* s = std::getenv("MASKRCNN_SOURCE_DIR")) return std::string(s) + "/../shared";
  return "/work/shared";
}

std::string case_dir(const std::string& name) { return shared_dir() + "/coco_eval/" + name; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

std::array<double, 12> run(const CocoDataset& gt, const std::vector<CocoAnnotation>& dt, IouType t,
                           int threads, std::string* text = nullptr) {
  CocoEval ev(gt, dt, t);
  ev.evaluate(threads);
  ev.accumulate(threads);
  auto s = ev.summarize();
  if (text) *text = ev.summary_text();
  return s;
}

class Reference : public ::testing::TestWithParam<std::string> {};

TEST_P(Reference, MatchesPycocotools) {
  const std::string dir = case_dir(GetParam());
  const CocoDataset gt = load_coco_instances(dir + "/gt.json");
  const std::vector<CocoAnnotation> dt = load_coco_results(dir + "/dt.json", gt);
  const nlohmann::json expected = read_json(dir + "/expected.json");
  for (IouType t : {IouType::Bbox, IouType::Segm}) {
    SCOPED_TRACE(iou_type_name(t));
    std::string text;
    const auto stats = run(gt, dt, t, 1, &text);
    const auto& exp = expected[iou_type_name(t)];
    ASSERT_EQ(exp.size(), 12u);
    for (size_t i = 0; i < 12; ++i) EXPECT_NEAR(stats[i], exp[i].get<double>(), 1e-9) << "stat " << i;
    // results do not depend on the thread count
    for (int threads : {2, 3, 8}) EXPECT_EQ(run(gt, dt, t, threads), stats) << threads << " threads";
    // the printed summary: 12 lines in pycocotools' format
    std::istringstream lines(text);
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%0.3f", stats[static_cast<size_t>(n)]);
      EXPECT_NE(line.find(std::string("] = ") + buf), std::string::npos) << line;
      ++n;
    }
    EXPECT_EQ(n, 12);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Reference, ::testing::Values("case1", "case2", "case4", "case8"));

TEST(Reference, SummaryTextIsPycocotoolsFormat) {
  const std::string dir = case_dir("case4");
  const CocoDataset gt = load_coco_instances(dir + "/gt.json");
  const auto dt = load_coco_results(dir + "/dt.json", gt);
  std::string text;
  run(gt, dt, IouType::Bbox, 1, &text);
  const std::string expected =
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.502\n"
      " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.878\n"
      " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ] = 0.442\n"
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = 0.900\n"
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 0.488\n"
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = -1.000\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.117\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ] = 0.383\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.650\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = 0.900\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 0.600\n"
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = -1.000\n";
  EXPECT_EQ(text, expected);
}

TEST(Reference, PerfectSegmentationIsPycocotoolsRasterisation) {
  // case1's detection mask is pycocotools' rasterisation of the gt polygon:
  // our frPoly must give the same string.
  const std::string dir = case_dir("case1");
  const CocoDataset gt = load_coco_instances(dir + "/gt.json");
  const auto dt = load_coco_results(dir + "/dt.json", gt);
  ASSERT_EQ(dt.size(), 1u);
  const Rle mine = annotation_to_rle(gt.annotations[0], gt.images[0]);
  EXPECT_EQ(rle_to_string(mine), dt[0].segmentation.rle_string);
}

}  // namespace
