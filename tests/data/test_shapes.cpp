// The synthetic shapes set: it round-trips through our COCO reader (images of
// the JSON's sizes, RLEs decoding to their areas, tight boxes, disjoint
// visible masks that cover exactly one shape's pixels), it is reproducible,
// image k does not depend on the number of images, and it is varied.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "data/shapes.h"
#include "support/temp_dir.h"
#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"
#include "maskrcnn/image.h"
#include "maskrcnn/rle.h"

namespace fs = std::filesystem;
using maskrcnn::testing::TempDir;
using namespace maskrcnn;

namespace {

data::ShapesSummary make(const std::string& dir, int n, int size, uint64_t seed, int min_objects = 1,
                         int max_objects = 4) {
  data::ShapesOptions o;
  o.output_dir = dir;
  o.num_images = n;
  o.size = size;
  o.seed = seed;
  o.min_objects = min_objects;
  o.max_objects = max_objects;
  return data::make_shapes_dataset(o);
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::map<int64_t, std::vector<const CocoAnnotation*>> by_image(const CocoDataset& ds) {
  std::map<int64_t, std::vector<const CocoAnnotation*>> out;
  for (const auto& a : ds.annotations) out[a.image_id].push_back(&a);
  return out;
}

}  // namespace

TEST(Shapes, RoundTripsThroughTheCocoReader) {
  TempDir dir("shapes");
  const auto summary = make(dir / "set", 16, 96, 7);
  EXPECT_EQ(summary.images, 16);
  const CocoDataset ds = load_coco_instances(summary.annotations_path);
  ASSERT_EQ(ds.images.size(), 16u);
  ASSERT_EQ(ds.categories.size(), 3u);
  EXPECT_EQ(ds.find_category(1)->name, "circle");
  EXPECT_EQ(ds.find_category(2)->name, "square");
  EXPECT_EQ(ds.find_category(3)->name, "triangle");
  EXPECT_EQ(static_cast<int64_t>(ds.annotations.size()), summary.objects);
  std::array<int64_t, 4> per_category{};
  for (const auto& a : ds.annotations) ++per_category.at(static_cast<size_t>(a.category_id));
  EXPECT_EQ(per_category, summary.per_category);

  const auto anns = by_image(ds);
  for (size_t k = 0; k < ds.images.size(); ++k) {
    const CocoImage& img = ds.images[k];
    SCOPED_TRACE(img.file_name);
    EXPECT_EQ(img.id, static_cast<int64_t>(k) + 1);
    char name[16];
    std::snprintf(name, sizeof name, "%06zu.png", k);
    EXPECT_EQ(img.file_name, name);
    const at::Tensor rgb = read_image(summary.images_dir + "/" + img.file_name);
    ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{3, img.height, img.width}));
    EXPECT_EQ(img.width, 96);
    ASSERT_TRUE(anns.count(img.id)) << "every image keeps at least its topmost shape";
    const auto& list = anns.at(img.id);
    EXPECT_LE(list.size(), 4u);

    std::vector<int> coverage(static_cast<size_t>(img.width * img.height), 0);
    for (const CocoAnnotation* a : list) {
      SCOPED_TRACE("annotation " + std::to_string(a->id));
      EXPECT_FALSE(a->iscrowd);
      EXPECT_GE(a->category_id, 1);
      EXPECT_LE(a->category_id, 3);
      ASSERT_EQ(a->segmentation.kind, CocoSegmentation::Kind::String);
      const Rle rle = annotation_to_rle(*a, img);
      ASSERT_EQ(rle.h, 96u);
      ASSERT_EQ(rle.w, 96u);
      EXPECT_EQ(static_cast<double>(rle_area(rle)), a->area);
      EXPECT_GE(a->area, data::kShapesMinVisiblePixels);
      EXPECT_EQ(rle_to_bbox(rle), a->bbox) << "bbox is the visible mask's tight box";
      const auto mask = rle_decode(rle);
      int64_t inside = 0, total = 0;
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x) {
          if (!mask[static_cast<size_t>(y * img.width + x)]) continue;
          ++total;
          ++coverage[static_cast<size_t>(y * img.width + x)];
          inside += x >= a->bbox[0] && x < a->bbox[0] + a->bbox[2] && y >= a->bbox[1] &&
                    y < a->bbox[1] + a->bbox[3];
        }
      EXPECT_EQ(inside, total) << "box encloses the mask";
      EXPECT_EQ(static_cast<double>(total), a->area);
    }
    EXPECT_LE(*std::max_element(coverage.begin(), coverage.end()), 1) << "visible masks overlap";
  }
}

TEST(Shapes, EachMaskCoversExactlyOneShapesPixels) {
  // A shape is one flat colour plus noise of at most +-18 per channel, so a
  // mask that is off by even a pixel row would include background pixels and
  // widen the colour range beyond 37 on some channel.
  TempDir dir("shapes");
  const auto summary = make(dir / "set", 10, 128, 11);
  const CocoDataset ds = load_coco_instances(summary.annotations_path);
  int contrasting = 0;
  for (const auto& a : ds.annotations) {
    const CocoImage& img = *ds.find_image(a.image_id);
    cv::Mat bgr = cv::imread(summary.images_dir + "/" + img.file_name, cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty());
    const auto mask = rle_decode(annotation_to_rle(a, img));
    int lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
    double in_sum[3] = {0, 0, 0}, ring_sum[3] = {0, 0, 0};
    int64_t in_n = 0, ring_n = 0;
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) {
        const auto& p = bgr.at<cv::Vec3b>(y, x);
        if (mask[static_cast<size_t>(y * img.width + x)]) {
          for (int c = 0; c < 3; ++c) {
            lo[c] = std::min(lo[c], int(p[c]));
            hi[c] = std::max(hi[c], int(p[c]));
            in_sum[c] += p[c];
          }
          ++in_n;
        } else if (x >= a.bbox[0] - 2 && x < a.bbox[0] + a.bbox[2] + 2 && y >= a.bbox[1] - 2 &&
                   y < a.bbox[1] + a.bbox[3] + 2) {
          for (int c = 0; c < 3; ++c) ring_sum[c] += p[c];
          ++ring_n;
        }
      }
    for (int c = 0; c < 3; ++c) EXPECT_LE(hi[c] - lo[c], 37) << "annotation " << a.id << " channel " << c;
    if (ring_n > 0) {
      double d = 0;
      for (int c = 0; c < 3; ++c) d += std::abs(in_sum[c] / in_n - ring_sum[c] / ring_n);
      contrasting += d >= 60;
    }
  }
  EXPECT_GE(contrasting, static_cast<int>(0.9 * ds.annotations.size())) << "shapes stand out from their surroundings";
}

TEST(Shapes, ReproducibleForASeed) {
  TempDir dir("shapes");
  const auto a = make(dir / "a", 6, 64, 5), b = make(dir / "b", 6, 64, 5), c = make(dir / "c", 6, 64, 6);
  EXPECT_EQ(slurp(a.annotations_path), slurp(b.annotations_path));
  EXPECT_NE(slurp(a.annotations_path), slurp(c.annotations_path));
  for (const auto& entry : fs::directory_iterator(a.images_dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(slurp(entry.path().string()), slurp(b.images_dir + "/" + name)) << name;
    EXPECT_NE(slurp(entry.path().string()), slurp(c.images_dir + "/" + name)) << name;
  }
}

TEST(Shapes, ImageKDoesNotDependOnTheNumberOfImages) {
  TempDir dir("shapes");
  const auto small = make(dir / "small", 3, 64, 42), large = make(dir / "large", 8, 64, 42);
  for (const char* name : {"000000.png", "000001.png", "000002.png"})
    EXPECT_EQ(slurp(small.images_dir + "/" + name), slurp(large.images_dir + "/" + name)) << name;
  const auto js = nlohmann::json::parse(slurp(small.annotations_path));
  const auto jl = nlohmann::json::parse(slurp(large.annotations_path));
  nlohmann::json first_three = nlohmann::json::array();
  for (const auto& a : jl["annotations"])
    if (a["image_id"].get<int64_t>() <= 3) first_three.push_back(a);
  EXPECT_EQ(js["annotations"], first_three);
  EXPECT_GT(jl["annotations"].size(), js["annotations"].size());
}

TEST(Shapes, VariedEnoughToLearnFrom) {
  TempDir dir("shapes");
  const auto summary = make(dir / "set", 40, 128, 3);
  const CocoDataset ds = load_coco_instances(summary.annotations_path);
  for (int c = 1; c <= 3; ++c) EXPECT_GE(summary.per_category[c], summary.objects / 6) << "category " << c;
  double min_area = 1e9, max_area = 0;
  for (const auto& a : ds.annotations) {
    min_area = std::min(min_area, a.area);
    max_area = std::max(max_area, a.area);
  }
  EXPECT_GT(max_area, 5 * min_area);
  EXPECT_GT(max_area, 0.1 * 128 * 128);
  std::set<size_t> counts;
  for (const auto& [id, list] : by_image(ds)) counts.insert(list.size());
  EXPECT_GE(counts.size(), 3u) << "objects per image vary";
  // Backgrounds differ from image to image.
  std::vector<double> means;
  for (const auto& img : ds.images)
    means.push_back(cv::mean(cv::imread(summary.images_dir + "/" + img.file_name))[1]);
  EXPECT_GT(*std::max_element(means.begin(), means.end()) - *std::min_element(means.begin(), means.end()), 60);
}

TEST(Shapes, ImagesWithoutObjectsAreAllowed) {
  TempDir dir("shapes");
  const auto summary = make(dir / "set", 3, 32, 1, 0, 0);
  EXPECT_EQ(summary.objects, 0);
  const CocoDataset ds = load_coco_instances(summary.annotations_path);
  EXPECT_EQ(ds.images.size(), 3u);
  EXPECT_TRUE(ds.annotations.empty());
  EXPECT_TRUE(fs::exists(summary.images_dir + "/000002.png"));
}

TEST(Shapes, BadOptionsThrowMaskrcnnError) {
  TempDir dir("shapes");
  EXPECT_THROW(make("", 2, 64, 0), Error);
  EXPECT_THROW(make(dir / "x", 0, 64, 0), Error);
  EXPECT_THROW(make(dir / "x", 2, 8, 0), Error);
  EXPECT_THROW(make(dir / "x", 2, 64, 0, 3, 2), Error);
  EXPECT_THROW(make(dir / "x", 2, 64, 0, -1, 2), Error);
  std::ofstream(dir / "file") << "not a directory";
  try {
    make(dir / "file", 2, 64, 0);
    ADD_FAILURE() << "writing under a regular file should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir / "file"), std::string::npos) << e.what();
  }
}
