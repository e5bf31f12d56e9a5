// CocoDetectionDataset: targets as torchvision's ConvertCocoPolysToMask makes
// them (polygon, compressed and uncompressed RLE masks; crowd, empty and
// off-image boxes dropped; boxes clamped), images without annotations, image
// formats, horizontal flips, and one-line errors naming the file.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/coco_detection.h"
#include "data/shapes.h"
#include "support/temp_dir.h"
#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"

namespace fs = std::filesystem;
using maskrcnn::testing::TempDir;
using namespace maskrcnn;
using data::CocoDetectionDataset;
using nlohmann::json;

namespace {

// A 30 x 40 mask (h x w) with ones in the given rectangles [x0, x1) x [y0, y1).
std::vector<uint8_t> rect_mask(int h, int w, std::vector<std::array<int, 4>> rects) {
  std::vector<uint8_t> m(static_cast<size_t>(h * w), 0);
  for (auto [x0, y0, x1, y1] : rects)
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) m[static_cast<size_t>(y * w + x)] = 1;
  return m;
}

at::Tensor as_tensor(const std::vector<uint8_t>& m, int h, int w) {
  return at::from_blob(const_cast<uint8_t*>(m.data()), {h, w}, at::kByte).clone();
}

at::Tensor decoded(const Rle& r) { return as_tensor(rle_decode(r), int(r.h), int(r.w)); }

// Tight box of a mask in torchvision's pixel-edge convention [x1, y1, x2 + 1, y2 + 1].
std::array<float, 4> mask_box(const at::Tensor& mask) {
  auto ys = mask.any(1).nonzero().flatten(), xs = mask.any(0).nonzero().flatten();
  return {xs.min().item<float>(), ys.min().item<float>(), xs.max().item<float>() + 1,
          ys.max().item<float>() + 1};
}

std::array<float, 4> row(const at::Tensor& boxes, int64_t i) {
  auto b = boxes[i];
  return {b[0].item<float>(), b[1].item<float>(), b[2].item<float>(), b[3].item<float>()};
}

class CocoDetection : public ::testing::Test {
 protected:
  static constexpr int kH = 30, kW = 40;

  void SetUp() override {
    // a.png: 40 x 30 colour noise; b.png: 20 x 10, no annotations; c.png: grayscale.
    cv::Mat a(kH, kW, CV_8UC3), b(10, 20, CV_8UC3), c(12, 16, CV_8UC1);
    cv::theRNG().state = 1234;
    cv::randu(a, 0, 255);
    cv::randu(b, 0, 255);
    cv::randu(c, 0, 255);
    fs::create_directories(dir_.path() / "img");
    cv::imwrite(dir_ / "img/a.png", a);
    cv::imwrite(dir_ / "img/b.png", b);
    cv::imwrite(dir_ / "img/c.png", c);
    a_bgr_ = a;

    rle_mask_ = rect_mask(kH, kW, {{10, 12, 15, 28}, {20, 25, 21, 26}});
    counts_mask_ = rect_mask(kH, kW, {{30, 0, 36, 6}});
    const Rle rle = rle_encode(rle_mask_.data(), kH, kW);
    const Rle counts = rle_encode(counts_mask_.data(), kH, kW);
    const BBox rb = rle_to_bbox(rle);
    doc_ = {
        {"images",
         {{{"id", 7}, {"file_name", "a.png"}, {"width", kW}, {"height", kH}},
          {{"id", 3}, {"file_name", "b.png"}, {"width", 20}, {"height", 10}},
          {{"id", 5}, {"file_name", "c.png"}, {"width", 16}, {"height", 12}}}},
        {"categories", {{{"id", 1}, {"name", "one"}}, {{"id", 2}, {"name", "two"}}, {{"id", 5}, {"name", "five"}}}},
        {"annotations",
         {// polygon
          {{"id", 1}, {"image_id", 7}, {"category_id", 2}, {"iscrowd", 0}, {"area", 320},
           {"bbox", {5, 4, 20, 16}}, {"segmentation", {{5, 4, 25, 4, 25, 20, 5, 20}}}},
          // compressed RLE
          {{"id", 2}, {"image_id", 7}, {"category_id", 5}, {"iscrowd", 0}, {"area", rle_area(rle)},
           {"bbox", {rb[0], rb[1], rb[2], rb[3]}},
           {"segmentation", {{"size", {kH, kW}}, {"counts", rle_to_string(rle)}}}},
          // uncompressed RLE, box partly above and right of the image: clamped
          {{"id", 3}, {"image_id", 7}, {"category_id", 1}, {"iscrowd", 0}, {"area", 36},
           {"bbox", {28.5, -3, 20, 10}}, {"segmentation", {{"size", {kH, kW}}, {"counts", counts.counts}}}},
          // crowd: skipped
          {{"id", 4}, {"image_id", 7}, {"category_id", 1}, {"iscrowd", 1}, {"area", 36},
           {"bbox", {30, 0, 6, 6}}, {"segmentation", {{"size", {kH, kW}}, {"counts", counts.counts}}}},
          // zero-width box: dropped
          {{"id", 5}, {"image_id", 7}, {"category_id", 2}, {"iscrowd", 0}, {"area", 0},
           {"bbox", {3, 3, 0, 5}}, {"segmentation", {{3, 3, 3, 8, 4, 8}}}},
          // box right of the image: clamps to nothing, dropped
          {{"id", 6}, {"image_id", 7}, {"category_id", 2}, {"iscrowd", 0}, {"area", 50},
           {"bbox", {50, 2, 10, 5}}, {"segmentation", {{50, 2, 60, 2, 60, 7}}}},
          // two polygons: one mask
          {{"id", 8}, {"image_id", 7}, {"category_id", 2}, {"iscrowd", 0}, {"area", 40},
           {"bbox", {1, 22, 36, 6}},
           {"segmentation", {{1, 22, 6, 22, 6, 27, 1, 27}, {30, 23, 37, 23, 37, 28}}}},
          // grayscale image's annotation
          {{"id", 9}, {"image_id", 5}, {"category_id", 1}, {"iscrowd", 0}, {"area", 20},
           {"bbox", {2, 2, 5, 4}}, {"segmentation", {{2, 2, 7, 2, 7, 6, 2, 6}}}}}}};
    write_json();
  }

  void write_json() { std::ofstream(dir_ / "ann.json") << doc_.dump(); }
  CocoDetectionDataset dataset() const { return CocoDetectionDataset(dir_ / "ann.json", dir_ / "img"); }

  TempDir dir_{"cocodet"};
  json doc_;
  cv::Mat a_bgr_;
  std::vector<uint8_t> rle_mask_, counts_mask_;
};

}  // namespace

TEST_F(CocoDetection, IndexOrderNamesAndSizes) {
  const auto ds = dataset();
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.image_info(0).id, 3) << "sorted by image id, as torchvision does";
  EXPECT_EQ(ds.image_info(1).id, 5);
  EXPECT_EQ(ds.image_info(2).id, 7);
  EXPECT_EQ(ds.image_path(2), (dir_.path() / "img" / "a.png").string());
  EXPECT_EQ(ds.max_category_id(), 5);
  EXPECT_EQ(ds.category_names(), (std::vector<std::string>{"__background__", "one", "two", "", "", "five"}));
  EXPECT_EQ(ds.coco().annotations.size(), 8u);
  EXPECT_THROW(ds.get(3), Error);
}

TEST_F(CocoDetection, TargetsMatchTheJson) {
  const auto s = dataset().get(2);
  EXPECT_EQ(s.image_id, 7);
  EXPECT_EQ(s.file_name, "a.png");
  ASSERT_EQ(s.image.sizes(), (std::vector<int64_t>{3, kH, kW}));
  ASSERT_EQ(s.image.scalar_type(), at::kFloat);
  // RGB in [0, 1] from the BGR file.
  for (auto [y, x] : {std::pair{0, 0}, {13, 27}, {29, 39}})
    for (int c = 0; c < 3; ++c)
      EXPECT_FLOAT_EQ(s.image[c][y][x].item<float>(), a_bgr_.at<cv::Vec3b>(y, x)[2 - c] / 255.0f);

  ASSERT_EQ(s.target.labels.scalar_type(), at::kLong);
  ASSERT_EQ(s.target.boxes.scalar_type(), at::kFloat);
  ASSERT_EQ(s.target.masks.scalar_type(), at::kByte);
  // Annotations 1, 2, 3, 8 in file order; 4 (crowd), 5 and 6 (empty boxes) dropped.
  ASSERT_EQ(s.target.labels.size(0), 4);
  EXPECT_EQ(s.target.boxes.sizes(), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(s.target.masks.sizes(), (std::vector<int64_t>{4, kH, kW}));
  EXPECT_TRUE(at::equal(s.target.labels, at::tensor(std::vector<int64_t>{2, 5, 1, 2})));
  const BBox rb = rle_to_bbox(rle_encode(rle_mask_.data(), kH, kW));
  const std::vector<std::array<float, 4>> boxes{
      {5, 4, 25, 20},
      {float(rb[0]), float(rb[1]), float(rb[0] + rb[2]), float(rb[1] + rb[3])},
      {28.5f, 0, 40, 7},  // [28.5, -3, 48.5, 7] clamped to the 40 x 30 image
      {1, 22, 37, 28}};
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(row(s.target.boxes, i), boxes[i]) << "box " << i;

  const auto& polys1 = doc_["annotations"][0]["segmentation"].get<std::vector<std::vector<double>>>();
  const auto& polys8 = doc_["annotations"][6]["segmentation"].get<std::vector<std::vector<double>>>();
  EXPECT_TRUE(at::equal(s.target.masks[0], decoded(rle_from_polygons(polys1, kH, kW))));
  EXPECT_TRUE(at::equal(s.target.masks[1], as_tensor(rle_mask_, kH, kW)));
  EXPECT_TRUE(at::equal(s.target.masks[2], as_tensor(counts_mask_, kH, kW)));
  EXPECT_TRUE(at::equal(s.target.masks[3], decoded(rle_from_polygons(polys8, kH, kW))));
  EXPECT_GT(s.target.masks[0].sum().item<int64_t>(), 250);  // pycocotools' 20 x 16 rectangle
  EXPECT_EQ(s.target.masks.max().item<int>(), 1);
}

TEST_F(CocoDetection, ImageWithoutAnnotationsAndGrayscale) {
  const auto ds = dataset();
  const auto empty = ds.get(0, true);
  EXPECT_EQ(empty.image_id, 3);
  EXPECT_EQ(empty.image.sizes(), (std::vector<int64_t>{3, 10, 20}));
  EXPECT_EQ(empty.target.boxes.sizes(), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(empty.target.boxes.scalar_type(), at::kFloat);
  EXPECT_EQ(empty.target.labels.sizes(), (std::vector<int64_t>{0}));
  EXPECT_EQ(empty.target.labels.scalar_type(), at::kLong);
  EXPECT_EQ(empty.target.masks.sizes(), (std::vector<int64_t>{0, 10, 20}));
  EXPECT_EQ(empty.target.masks.scalar_type(), at::kByte);

  const auto gray = ds.get(1);
  ASSERT_EQ(gray.image.sizes(), (std::vector<int64_t>{3, 12, 16}));
  EXPECT_TRUE(at::equal(gray.image[0], gray.image[1]));
  EXPECT_TRUE(at::equal(gray.image[0], gray.image[2]));
  ASSERT_EQ(gray.target.labels.size(0), 1);
  EXPECT_EQ(row(gray.target.boxes, 0), (std::array<float, 4>{2, 2, 7, 6}));
}

TEST_F(CocoDetection, HorizontalFlip) {
  const auto ds = dataset();
  const auto s = ds.get(2, false), f = ds.get(2, true);
  EXPECT_TRUE(at::equal(f.image, s.image.flip({2})));
  EXPECT_TRUE(at::equal(f.target.masks, s.target.masks.flip({2})));
  EXPECT_TRUE(at::equal(f.target.labels, s.target.labels));
  for (int64_t i = 0; i < s.target.boxes.size(0); ++i) {
    const auto b = row(s.target.boxes, i), fb = row(f.target.boxes, i);
    EXPECT_EQ(fb, (std::array<float, 4>{kW - b[2], b[1], kW - b[0], b[3]})) << "box " << i;
    // Flipping twice is the identity.
    EXPECT_EQ((std::array<float, 4>{kW - fb[2], fb[1], kW - fb[0], fb[3]}), b);
  }
  EXPECT_TRUE(at::equal(f.image.flip({2}), s.image));
  EXPECT_TRUE(at::equal(f.target.masks.flip({2}), s.target.masks));
}

TEST(CocoDetectionShapes, TargetsMatchShapesJsonAndFlipsStayConsistent) {
  TempDir dir("cocodet");
  data::ShapesOptions o;
  o.output_dir = dir / "set";
  o.num_images = 6;
  o.size = 64;
  o.seed = 9;
  const auto summary = data::make_shapes_dataset(o);
  const CocoDetectionDataset ds(summary.annotations_path, summary.images_dir);
  EXPECT_EQ(ds.max_category_id(), 3);
  int64_t objects = 0;
  for (size_t i = 0; i < ds.size(); ++i) {
    const auto s = ds.get(i, false), f = ds.get(i, true);
    std::vector<const CocoAnnotation*> anns;
    for (const auto& a : ds.coco().annotations)
      if (a.image_id == s.image_id) anns.push_back(&a);
    ASSERT_EQ(s.target.labels.size(0), static_cast<int64_t>(anns.size()));
    objects += s.target.labels.size(0);
    for (size_t k = 0; k < anns.size(); ++k) {
      const auto& a = *anns[k];
      const int64_t j = static_cast<int64_t>(k);
      SCOPED_TRACE("annotation " + std::to_string(a.id));
      EXPECT_EQ(s.target.labels[j].item<int64_t>(), a.category_id);
      EXPECT_EQ(s.target.masks[j].sum().item<int64_t>(), static_cast<int64_t>(a.area));
      const std::array<float, 4> box{float(a.bbox[0]), float(a.bbox[1]), float(a.bbox[0] + a.bbox[2]),
                                     float(a.bbox[1] + a.bbox[3])};
      EXPECT_EQ(row(s.target.boxes, j), box);
      EXPECT_EQ(mask_box(s.target.masks[j]), box) << "shapes boxes are their masks' boxes";
      EXPECT_EQ(mask_box(f.target.masks[j]), row(f.target.boxes, j)) << "flipped mask's box = flipped box";
    }
  }
  EXPECT_EQ(objects, summary.objects);
}

TEST_F(CocoDetection, MissingImageNamesThePath) {
  fs::remove(dir_.path() / "img" / "b.png");
  const auto ds = dataset();
  try {
    ds.get(0);
    FAIL() << "expected maskrcnn::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir_.path() / "img" / "b.png").string()), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(ds.get(2));
}

TEST_F(CocoDetection, ImageOfTheWrongSizeNamesTheFile) {
  cv::Mat wrong(kH, kW + 1, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite(dir_ / "img/a.png", wrong);
  try {
    dataset().get(2);
    FAIL() << "expected maskrcnn::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("a.png"), std::string::npos) << msg;
    EXPECT_NE(msg.find("41x30"), std::string::npos) << msg;
    EXPECT_NE(msg.find("40x30"), std::string::npos) << msg;
  }
}

TEST_F(CocoDetection, BadAnnotationFilesThrow) {
  EXPECT_THROW(CocoDetectionDataset(dir_ / "missing.json", dir_ / "img"), Error);
  doc_["categories"].push_back({{"id", 0}, {"name", "zero"}});
  write_json();
  try {
    dataset();
    FAIL() << "category id 0 collides with the background label";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ann.json"), std::string::npos) << e.what();
  }
}
