// COCO instances/results reading: contents, loadRes semantics and error messages.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"

using namespace maskrcnn;

namespace {

const char* kGt = R"({
 "info": {"x": [1, 2, {"y": null}]},
 "images": [{"id": 7, "width": 80, "height": 60, "file_name": "a.png"},
            {"id": 3, "width": 40, "height": 30}],
 "categories": [{"id": 5, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog"}],
 "annotations": [
  {"id": 42, "image_id": 7, "category_id": 5, "bbox": [1, 2.5, 3, 4], "area": 12.5, "iscrowd": 0,
   "segmentation": [[1, 2, 10, 2, 10, 20], [30, 30, 40, 30, 40, 40]]},
  {"id": 43, "image_id": 3, "category_id": 2, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 1, "ignore": 1,
   "segmentation": {"size": [30, 40], "counts": [0, 4, 1196]}},
  {"image_id": 3, "id": 44, "category_id": 2, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": false,
   "segmentation": {"counts": "04\\U1", "size": [30, 40]}, "extra": {"nested": [1]}}
 ]})";

std::string with(std::string s, const std::string& from, const std::string& to) {
  const auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

std::string error_of_gt(const std::string& json) {
  try {
    parse_coco_instances(json, "gt.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string error_of_dt(const std::string& json) {
  const CocoDataset gt = parse_coco_instances(kGt, "gt.json");
  try {
    parse_coco_results(json, gt, "dt.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(CocoJson, ReadsInstances) {
  const CocoDataset ds = parse_coco_instances(kGt, "gt.json");
  ASSERT_EQ(ds.images.size(), 2u);
  EXPECT_EQ(ds.images[0].id, 7);
  EXPECT_EQ(ds.images[0].width, 80);
  EXPECT_EQ(ds.images[0].height, 60);
  EXPECT_EQ(ds.images[0].file_name, "a.png");
  ASSERT_EQ(ds.categories.size(), 2u);
  EXPECT_EQ(ds.categories[0].name, "cat");
  EXPECT_EQ(ds.categories[0].supercategory, "animal");
  EXPECT_EQ(ds.find_category(2)->name, "dog");
  EXPECT_EQ(ds.find_image(3)->width, 40);
  EXPECT_EQ(ds.find_image(99), nullptr);
  ASSERT_EQ(ds.annotations.size(), 3u);
  const auto& a = ds.annotations[0];
  EXPECT_EQ(a.id, 42);
  EXPECT_EQ(a.bbox, (BBox{1, 2.5, 3, 4}));
  EXPECT_EQ(a.area, 12.5);
  EXPECT_FALSE(a.iscrowd);
  ASSERT_EQ(a.segmentation.kind, CocoSegmentation::Kind::Polygons);
  ASSERT_EQ(a.segmentation.polygons.size(), 2u);
  EXPECT_EQ(a.segmentation.polygons[1][4], 40.0);
  const auto& b = ds.annotations[1];
  EXPECT_TRUE(b.iscrowd);
  EXPECT_TRUE(b.ignore);
  EXPECT_EQ(b.segmentation.kind, CocoSegmentation::Kind::Counts);
  EXPECT_EQ(b.segmentation.h, 30u);
  EXPECT_EQ(b.segmentation.w, 40u);
  const auto& c = ds.annotations[2];
  EXPECT_EQ(c.id, 44);
  EXPECT_EQ(c.segmentation.kind, CocoSegmentation::Kind::String);
  // the string "04\\U1" and the counts [0, 4, 1196] are the same mask
  EXPECT_EQ(annotation_to_rle(c, ds.images[1]), annotation_to_rle(b, ds.images[1]));
  EXPECT_EQ(rle_area(annotation_to_rle(b, ds.images[1])), 4u);
  // polygons are rasterised at the image's size and merged
  const Rle pa = annotation_to_rle(a, ds.images[0]);
  EXPECT_EQ(pa.h, 60u);
  EXPECT_EQ(pa.w, 80u);
  EXPECT_GT(rle_area(pa), 100u);
}

TEST(CocoJson, ResultsFollowLoadRes) {
  const CocoDataset gt = parse_coco_instances(kGt, "gt.json");
  // bbox mode (first result has a bbox): area = w*h, ids 1..N, segmentation kept
  auto r = parse_coco_results(
      R"([{"image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 5], "score": 0.5},
          {"image_id": 3, "category_id": 2, "bbox": [0, 0, 2, 3], "score": 0.25,
           "segmentation": {"size": [30, 40], "counts": "04\\U1"}},
          {"image_id": 3, "category_id": 77, "bbox": [0, 0, 1, 1], "score": 1}])",
      gt, "dt.json");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].id, 1);
  EXPECT_EQ(r[2].id, 3);
  EXPECT_EQ(r[0].area, 20.0);
  EXPECT_EQ(r[1].area, 6.0);  // w*h, not the mask area
  EXPECT_FALSE(r[0].iscrowd);
  // no segmentation: the box becomes a polygon (x1,y1, x1,y2, x2,y2, x2,y1)
  ASSERT_EQ(r[0].segmentation.kind, CocoSegmentation::Kind::Polygons);
  EXPECT_EQ(r[0].segmentation.polygons[0], (std::vector<double>{1, 1, 1, 6, 5, 6, 5, 1}));
  EXPECT_EQ(r[1].segmentation.kind, CocoSegmentation::Kind::String);
  // segm mode: area from the mask, bbox from toBbox unless given
  auto s = parse_coco_results(
      R"([{"image_id": 3, "category_id": 2, "score": 0.5, "segmentation": {"size": [30, 40], "counts": "04\\U1"}},
          {"image_id": 3, "category_id": 2, "score": 0.5, "bbox": [9, 9, 9, 9],
           "segmentation": {"size": [30, 40], "counts": "04\\U1"}}])",
      gt, "dt.json");
  EXPECT_EQ(s[0].area, 4.0);
  EXPECT_EQ(s[0].bbox, (BBox{0, 0, 1, 4}));  // column-major: 4 pixels down column 0
  EXPECT_EQ(s[1].area, 4.0);
  EXPECT_EQ(s[1].bbox, (BBox{9, 9, 9, 9}));
  EXPECT_TRUE(parse_coco_results("[]", gt, "dt.json").empty());
}

TEST(CocoJson, ErrorsNameFileAndRecord) {
  EXPECT_EQ(error_of_gt(with(kGt, R"("image_id": 3, "id": 44)", R"("image_id": 9, "id": 44)")),
            "gt.json: annotations[2] (id 44): image_id 9 not in images");
  EXPECT_EQ(error_of_gt(with(kGt, R"("id": 42, "image_id": 7, "category_id": 5)",
                             R"("id": 42, "image_id": 7, "category_id": 6)")),
            "gt.json: annotations[0] (id 42): category_id 6 not in categories");
  EXPECT_EQ(error_of_gt(with(kGt, R"("area": 12.5, )", "")), "gt.json: annotations[0] (id 42): missing key \"area\"");
  EXPECT_EQ(error_of_gt(with(kGt, R"("area": 12.5)", R"("area": "big")")),
            "gt.json: annotations[0] (id 42): \"area\" is not a number");
  EXPECT_EQ(error_of_gt(with(kGt, R"("id": 43)", R"("id": 4.5)")),
            "gt.json: annotations[1]: \"id\" is not an integer");
  EXPECT_EQ(error_of_gt(with(kGt, R"("size": [30, 40], "counts": [0, 4, 1196])",
                             R"("size": [30, 41], "counts": [0, 4, 1226])")),
            "gt.json: annotations[1] (id 43): segmentation size [30, 41] does not match image 3 size [30, 40]");
  EXPECT_EQ(error_of_gt(with(kGt, "[0, 4, 1196]", "[0, 4, 1195]")),
            "gt.json: annotations[1] (id 43): segmentation RLE counts sum to 1199, not height*width = 1200");
  EXPECT_EQ(error_of_gt(with(kGt, "\"04\\\\U1\"", "\"04~1\"")),
            "gt.json: annotations[2] (id 44): segmentation: RLE string: invalid character");
  EXPECT_EQ(error_of_gt(with(kGt, R"({"id": 3, "width": 40)", R"({"id": 7, "width": 40)")),
            "gt.json: images[1] (id 7): duplicate image id");
  EXPECT_EQ(error_of_gt(with(kGt, R"("bbox": [1, 2.5, 3, 4])", R"("bbox": [1, 2.5, 3])")),
            "gt.json: annotations[0] (id 42): \"bbox\" must hold 4 numbers [x, y, w, h]");
  EXPECT_EQ(error_of_gt("[1, 2]"), "gt.json: not a COCO instances file (top level is not an object)");
  EXPECT_EQ(error_of_gt(R"({"images": [], "annotations": []})"), "gt.json: missing key \"categories\"");
  EXPECT_EQ(error_of_gt(R"({"images": {}, "categories": []})"), "gt.json: \"images\" is not an array");
  EXPECT_NE(error_of_gt(with(kGt, R"("area": 4, "iscrowd": 1)", R"("area": 4, "iscrowd": 1,,)")).find("gt.json: "),
            std::string::npos);
  EXPECT_NE(error_of_gt("{\"images\": [").find("gt.json: "), std::string::npos);
  EXPECT_NE(error_of_gt("").find("gt.json: "), std::string::npos);

  EXPECT_EQ(error_of_dt(R"([{"image_id": 9, "category_id": 5, "bbox": [1, 1, 4, 5], "score": 0.5}])"),
            "dt.json: [0]: image_id 9 not in the ground truth images");
  EXPECT_EQ(error_of_dt(R"([{"image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 5]}])"),
            "dt.json: [0]: missing key \"score\"");
  EXPECT_EQ(error_of_dt(R"([{"image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 5], "score": 1},
                           {"image_id": 7, "category_id": 5, "score": 1,
                            "segmentation": {"size": [60, 80], "counts": "0`e0"}}])"),
            "dt.json: [1]: missing key \"bbox\" (the first result has a bbox)");
  EXPECT_EQ(error_of_dt(R"([{"image_id": 7, "category_id": 5, "score": 1}])"),
            "dt.json: [0]: missing key \"segmentation\" (the first result has no bbox)");
  EXPECT_EQ(error_of_dt(R"([{"image_id": 7, "category_id": 5, "score": 1,
                            "segmentation": {"size": [30, 40], "counts": "04\\U1"}}])"),
            "dt.json: [0]: segmentation size [30, 40] does not match image 7 size [60, 80]");
  EXPECT_EQ(error_of_dt(R"({"image_id": 7})"), "dt.json: results must be a JSON array of objects");
}

TEST(CocoJson, Files) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/maskrcnn_coco_json_gt.json";
  {
    std::ofstream out(path);
    out << kGt;
  }
  const CocoDataset ds = load_coco_instances(path);
  EXPECT_EQ(ds.source, path);
  EXPECT_EQ(ds.annotations.size(), 3u);
  std::remove(path.c_str());
  try {
    load_coco_instances(dir + "/does_not_exist.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir + "/does_not_exist.json: cannot read file", 0), 0u) << e.what();
  }
}

// Found by fuzzing (fuzz/regressions/coco_*): malformed masks are errors.
TEST(CocoJson, MalformedMasksAreErrors) {
  const std::string head = R"({"images": [{"id": 1, "width": 6, "height": 4, "file_name": "a.jpg"},
                                           {"id": 2, "height": 4, "file_name": "b.jpg"}],
    "categories": [{"id": 1, "name": "x"}], "annotations": [)";
  // A size beyond 32 bits (was undefined behaviour in the range check).
  EXPECT_THROW(parse_coco_instances(head + R"({"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
      "area": 1, "segmentation": {"size": [4e104, 6], "counts": [24]}}]})"), Error);
  // Counts that do not sum to h*w: refused when the file is read...
  EXPECT_THROW(parse_coco_instances(head + R"({"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
      "area": 1, "iscrowd": 1, "segmentation": {"size": [4, 6], "counts": [3, 4]}}]})"), Error);
  // ...and by annotation_to_rle for annotations built in code.
  CocoImage img;
  img.id = 1;
  img.width = 6;
  img.height = 4;
  CocoAnnotation ann;
  ann.id = 5;
  ann.image_id = 1;
  ann.segmentation.kind = CocoSegmentation::Kind::Counts;
  ann.segmentation.h = 4;
  ann.segmentation.w = 6;
  ann.segmentation.counts = {3, 4};
  try {
    annotation_to_rle(ann, img);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("annotation 5: RLE counts sum to 7, not 4x6"), std::string::npos) << e.what();
  }
  ann.segmentation.counts = {3, 21};
  EXPECT_EQ(rle_area(annotation_to_rle(ann, img)), 21u);
  // A polygon on an image without a width cannot be rasterised.
  auto gt = parse_coco_instances(head + R"({"id": 6, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1],
      "area": 1, "segmentation": [[0, 0, 2, 0, 2, 2]]}]})");
  EXPECT_THROW(annotation_to_rle(gt.annotations[0], *gt.find_image(2)), Error);
}
