// COCOeval on small hand-made cases whose answers follow from pycocotools' rules.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "maskrcnn/coco.h"
#include "maskrcnn/coco_eval.h"

using namespace maskrcnn;
using nlohmann::json;

namespace {

// pycocotools' precision for one true positive with no false positive before it.
const double kOne = 1.0 / (1.0 + (std::nextafter(1.0, 2.0) - 1.0));

json image(int64_t id, int w = 640, int h = 480) { return {{"id", id}, {"width", w}, {"height", h}}; }
json cat(int64_t id, const std::string& name) { return {{"id", id}, {"name", name}}; }
json gt_box(int64_t id, int64_t img, int64_t c, BBox b, int crowd = 0) {
  return {{"id", id}, {"image_id", img}, {"category_id", c}, {"bbox", {b[0], b[1], b[2], b[3]}},
          {"area", b[2] * b[3]}, {"iscrowd", crowd}};
}
json det(int64_t img, int64_t c, BBox b, double score) {
  return {{"image_id", img}, {"category_id", c}, {"bbox", {b[0], b[1], b[2], b[3]}}, {"score", score}};
}

struct Run {
  CocoDataset gt;
  std::vector<CocoAnnotation> dt;
  std::array<double, 12> stats{};
  std::vector<double> per_cat;
};

Run evaluate(const json& gt_json, const json& dt_json, IouType t = IouType::Bbox, bool use_cats = true) {
  Run r;
  r.gt = parse_coco_instances(gt_json.dump(), "gt.json");
  r.dt = parse_coco_results(dt_json.dump(), r.gt, "dt.json");
  CocoEval ev(r.gt, r.dt, t);
  ev.params.use_cats = use_cats;
  ev.evaluate(2);
  ev.accumulate(2);
  r.stats = ev.summarize();
  r.per_cat = ev.per_category_ap();
  return r;
}

json gt_file(json images, json cats, json anns) {
  return {{"images", images}, {"categories", cats}, {"annotations", anns}};
}

enum { AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl };

}  // namespace

TEST(CocoEvalCases, NumpyLinspace) {
  const auto iou = numpy_linspace(.5, .95, 10);
  ASSERT_EQ(iou.size(), 10u);
  EXPECT_EQ(iou[0], 0.5);
  EXPECT_EQ(iou[5], 0.75);
  EXPECT_EQ(iou[9], 0.95);  // numpy sets the last value to stop
  const auto rec = numpy_linspace(0, 1, 101);
  EXPECT_EQ(rec[35], 0.35000000000000003);  // 35 * 0.01 in float64, as numpy gives
  EXPECT_EQ(iou[8], 0.8999999999999999);    // 8 * (0.45 / 9) + 0.5
  EXPECT_EQ(rec[100], 1.0);
  EXPECT_EQ(numpy_linspace(2, 3, 1), std::vector<double>{2});
}

TEST(CocoEvalCases, PerfectDetection) {
  auto r = evaluate(gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {10, 10, 20, 20})}),
                    json::array({det(1, 1, {10, 10, 20, 20}, 0.9)}));
  EXPECT_DOUBLE_EQ(r.stats[AP], kOne);
  EXPECT_DOUBLE_EQ(r.stats[AP50], kOne);
  EXPECT_DOUBLE_EQ(r.stats[APs], kOne);  // 400 px: small
  EXPECT_EQ(r.stats[APm], -1);
  EXPECT_EQ(r.stats[APl], -1);
  EXPECT_EQ(r.stats[AR1], 1.0);
  EXPECT_EQ(r.stats[ARs], 1.0);
  EXPECT_EQ(r.stats[ARm], -1);
}

TEST(CocoEvalCases, ShiftedBoxMatchesThreeThresholds) {
  // IoU 62/100 = 0.62 passes 0.50, 0.55, 0.60 and fails 0.65..0.95.
  auto r = evaluate(gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {0, 0, 10, 10})}),
                    json::array({det(1, 1, {0, 0, 10, 6.2}, 0.5)}));
  EXPECT_NEAR(r.stats[AP], 0.3, 1e-12);
  EXPECT_NEAR(r.stats[AP50], 1.0, 1e-12);
  EXPECT_EQ(r.stats[AP75], 0.0);
  EXPECT_NEAR(r.stats[AR100], 0.3, 1e-12);
}

TEST(CocoEvalCases, HigherScoredFalsePositiveHalvesPrecision) {
  // The FP on an image without ground truth ranks first: pr = [0, 1/2] -> 1/2 everywhere.
  auto r = evaluate(gt_file({image(1), image(2)}, {cat(1, "a")}, {gt_box(1, 1, 1, {0, 0, 50, 50})}),
                    {det(2, 1, {0, 0, 50, 50}, 0.9), det(1, 1, {0, 0, 50, 50}, 0.8)});
  EXPECT_NEAR(r.stats[AP], 0.5, 1e-12);
  EXPECT_EQ(r.stats[AR100], 1.0);
  // a lower-scored duplicate is a FP after the TP and does not lower AP
  auto d = evaluate(gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {0, 0, 50, 50})}),
                    {det(1, 1, {0, 0, 50, 50}, 0.9), det(1, 1, {0, 0, 50, 50}, 0.8)});
  EXPECT_DOUBLE_EQ(d.stats[AP], kOne);
}

TEST(CocoEvalCases, CrowdAbsorbsDetections) {
  json gt = gt_file({image(1)}, {cat(1, "a")},
                    {gt_box(1, 1, 1, {0, 0, 10, 10}), gt_box(2, 1, 1, {50, 50, 40, 40}, 1)});
  // two detections inside the crowd (IoU = 1 over their own area), both ignored
  auto r = evaluate(gt, {det(1, 1, {55, 55, 10, 10}, 0.95), det(1, 1, {60, 60, 5, 5}, 0.9),
                         det(1, 1, {0, 0, 10, 10}, 0.5)});
  EXPECT_DOUBLE_EQ(r.stats[AP], kOne);
  EXPECT_EQ(r.stats[AR100], 1.0);
  // a class whose only ground truth is a crowd has no AP (-1)
  json gt2 = gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {50, 50, 40, 40}, 1)});
  auto r2 = evaluate(gt2, json::array({det(1, 1, {55, 55, 10, 10}, 0.95)}));
  EXPECT_EQ(r2.stats[AP], -1);
  EXPECT_EQ(r2.stats[AR100], -1);
}

TEST(CocoEvalCases, MaxDetsTruncation) {
  // 150 detections on one image; the only true positive ranks 100th.
  json dts = json::array();
  for (int i = 0; i < 149; ++i) dts.push_back(det(1, 1, {300, 300, 10, 10}, 0.9 - i * 0.001));
  dts.push_back(det(1, 1, {0, 0, 40, 40}, 0.9 - 98.5 * 0.001));  // between #99 and #100
  auto r = evaluate(gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {0, 0, 40, 40})}), dts);
  EXPECT_NEAR(r.stats[AP], 1.0 / 100.0, 1e-12);  // TP at rank 100: precision 1/100 for every recall
  EXPECT_EQ(r.stats[AR1], 0.0);
  EXPECT_EQ(r.stats[AR10], 0.0);
  EXPECT_EQ(r.stats[AR100], 1.0);
  // ranked 101st it is cut: AP 0, AR 0
  dts.back()["score"] = 0.0;
  auto r2 = evaluate(gt_file({image(1)}, {cat(1, "a")}, {gt_box(1, 1, 1, {0, 0, 40, 40})}), dts);
  EXPECT_EQ(r2.stats[AP], 0.0);
  EXPECT_EQ(r2.stats[AR100], 0.0);
}

TEST(CocoEvalCases, CategoriesWithoutDetectionsOrGroundTruth) {
  // a: perfect; b: ground truth but no detection (AP 0); c: detections only (-1, left out)
  json gt = gt_file({image(1), image(2)}, {cat(1, "a"), cat(2, "b"), cat(3, "c"), cat(4, "d")},
                    {gt_box(1, 1, 1, {0, 0, 50, 50}), gt_box(2, 2, 2, {0, 0, 50, 50})});
  auto r = evaluate(gt, {det(1, 1, {0, 0, 50, 50}, 0.9), det(2, 3, {0, 0, 50, 50}, 0.9)});
  EXPECT_NEAR(r.stats[AP], 0.5, 1e-12);
  EXPECT_NEAR(r.stats[AR100], 0.5, 1e-12);
  ASSERT_EQ(r.per_cat.size(), 4u);
  EXPECT_DOUBLE_EQ(r.per_cat[0], kOne);
  EXPECT_EQ(r.per_cat[1], 0.0);
  EXPECT_EQ(r.per_cat[2], -1.0);
  EXPECT_EQ(r.per_cat[3], -1.0);
  // no detections at all: 0 where there is ground truth
  auto e = evaluate(gt, json::array());
  EXPECT_EQ(e.stats[AP], 0.0);
  EXPECT_EQ(e.stats[APl], -1.0);
}

TEST(CocoEvalCases, AreaRangesAndIgnoredDetections) {
  // small (20x20), medium (40x40), large (100x100) objects, all found; plus a
  // large unmatched FP with the best score: it counts in "all" and "large" but
  // is ignored in "small" and "medium" (outside their area range).
  json gt = gt_file({image(1)}, {cat(1, "a")},
                    {gt_box(1, 1, 1, {0, 0, 20, 20}), gt_box(2, 1, 1, {100, 100, 40, 40}),
                     gt_box(3, 1, 1, {300, 300, 100, 100})});
  auto r = evaluate(gt, {det(1, 1, {500, 0, 100, 100}, 0.99), det(1, 1, {0, 0, 20, 20}, 0.9),
                         det(1, 1, {100, 100, 40, 40}, 0.8), det(1, 1, {300, 300, 100, 100}, 0.7)});
  EXPECT_DOUBLE_EQ(r.stats[APs], kOne);
  EXPECT_DOUBLE_EQ(r.stats[APm], kOne);
  // large: FP then TP -> 1/2; all: pr = [0, 1/2, 2/3, 3/4] -> monotone max 3/4 everywhere
  EXPECT_NEAR(r.stats[APl], 0.5, 1e-12);
  EXPECT_NEAR(r.stats[AP], 0.75, 1e-12);
  EXPECT_EQ(r.stats[AR1], 0.0);
  EXPECT_EQ(r.stats[AR100], 1.0);
}

TEST(CocoEvalCases, IgnoreFlagIsOverriddenByIscrowd) {
  json a = gt_box(1, 1, 1, {0, 0, 50, 50});
  json b = a;
  b["ignore"] = 1;  // pycocotools' _prepare sets ignore = iscrowd, dropping this
  auto ra = evaluate(gt_file({image(1)}, {cat(1, "a")}, {a}), json::array({det(1, 1, {0, 0, 50, 50}, 0.9)}));
  auto rb = evaluate(gt_file({image(1)}, {cat(1, "a")}, {b}), json::array({det(1, 1, {0, 0, 50, 50}, 0.9)}));
  EXPECT_EQ(ra.stats, rb.stats);
  EXPECT_TRUE(rb.gt.annotations[0].ignore);
}

TEST(CocoEvalCases, UseCatsOffIgnoresLabels) {
  json gt = gt_file({image(1)}, {cat(1, "a"), cat(2, "b")}, {gt_box(1, 1, 1, {0, 0, 50, 50})});
  json dts = {det(1, 2, {0, 0, 50, 50}, 0.9)};  // right box, wrong label
  EXPECT_EQ(evaluate(gt, dts).stats[AP], 0.0);
  EXPECT_DOUBLE_EQ(evaluate(gt, dts, IouType::Bbox, false).stats[AP], kOne);
}

TEST(CocoEvalCases, SegmentationFormatsAgree) {
  // The same 20x20 square as a polygon, as uncompressed counts and as a string.
  std::vector<uint8_t> m(64 * 48, 0);
  for (int y = 10; y < 30; ++y)
    for (int x = 10; x < 30; ++x) m[static_cast<size_t>(y * 64 + x)] = 1;
  const Rle rle = rle_encode(m.data(), 48, 64);
  json poly = {{"id", 1}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 0}, {"area", 400},
               {"bbox", {10, 10, 20, 20}}, {"segmentation", {{10, 10, 30, 10, 30, 30, 10, 30}}}};
  json counts = poly;
  counts["id"] = 2;
  counts["image_id"] = 2;
  counts["segmentation"] = {{"size", {48, 64}}, {"counts", rle.counts}};
  json gt = gt_file({image(1, 64, 48), image(2, 64, 48)}, {cat(1, "a")}, {poly, counts});
  json seg = {{"size", {48, 64}}, {"counts", rle_to_string(rle)}};
  json dts = {{{"image_id", 1}, {"category_id", 1}, {"score", 0.9}, {"segmentation", seg}},
              {{"image_id", 2}, {"category_id", 1}, {"score", 0.8}, {"segmentation", seg}}};
  auto r = evaluate(gt, dts, IouType::Segm);
  EXPECT_DOUBLE_EQ(r.stats[AP], kOne);
  EXPECT_EQ(r.stats[AR100], 1.0);
  // loadRes without bbox: area = mask area, bbox = toBbox
  EXPECT_EQ(r.dt[0].area, 400.0);
  EXPECT_EQ(r.dt[0].bbox, (BBox{10, 10, 20, 20}));
  EXPECT_EQ(r.dt[1].id, 2);
  // and the bbox evaluation of the same results uses those boxes
  EXPECT_DOUBLE_EQ(evaluate(gt, dts, IouType::Bbox).stats[AP], kOne);
}

TEST(CocoEvalCases, BoxResultsInSegmModeUseTheBoxAsMask) {
  json gt = gt_file({image(1, 64, 48)}, {cat(1, "a")},
                    {{{"id", 1}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 0}, {"area", 400},
                      {"bbox", {10, 10, 20, 20}}, {"segmentation", {{10, 10, 30, 10, 30, 30, 10, 30}}}}});
  auto r = evaluate(gt, json::array({det(1, 1, {10, 10, 20, 20}, 0.9)}), IouType::Segm);
  EXPECT_DOUBLE_EQ(r.stats[AP], kOne);
  EXPECT_EQ(r.dt[0].area, 400.0);
}

TEST(CocoEvalCases, EmptyGroundTruthAndResults) {
  auto r = evaluate(gt_file({image(1)}, {cat(1, "a")}, json::array()), json::array());
  for (double s : r.stats) EXPECT_EQ(s, -1.0);
}
