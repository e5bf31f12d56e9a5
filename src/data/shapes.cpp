// Synthetic shapes: rendering, visible-mask extraction and the COCO JSON.
//
// Each shape is drawn twice with the same geometry: in colour into the image
// and as its instance number into a label map. After all shapes are drawn the
// label map holds, per pixel, the topmost shape, so `labels == i` is exactly
// shape i's visible region (occlusion for free, and pixel-exact with the image
// because both use the same rasteriser, LINE_8, without anti-aliasing).
#include "data/shapes.h"

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "data/seeding.h"
#include "io/atomic_file.h"
#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"

namespace maskrcnn::data {
namespace {

namespace fs = std::filesystem;

constexpr int kShift = 4;  // OpenCV fixed-point bits: sub-pixel positions and sizes
constexpr double kFixed = 1 << kShift;
constexpr double kPi = 3.14159265358979323846;

struct Annotation {
  int category = 0;
  Rle rle;
};

struct RenderedImage {
  cv::Mat bgr;
  std::vector<Annotation> objects;  // visible ones, in drawing order
  int64_t dropped = 0;
};

cv::Point fixed_point(double x, double y) {
  return {static_cast<int>(std::lround(x * kFixed)), static_cast<int>(std::lround(y * kFixed))};
}

// L1 distance of two BGR colours (0..765).
double colour_distance(const cv::Scalar& a, const cv::Scalar& b) {
  return std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2]);
}

cv::Scalar random_colour(std::mt19937_64& rng) {
  return cv::Scalar(double(uniform_int(rng, 0, 255)), double(uniform_int(rng, 0, 255)),
                    double(uniform_int(rng, 0, 255)));
}

// A gradient between two related colours along a random direction: varied
// from image to image but mostly one hue, so that a shape's colour can be
// chosen to contrast with all of the background around it.
void draw_background(cv::Mat& img, std::mt19937_64& rng) {
  const cv::Scalar c0 = random_colour(rng);
  cv::Scalar c1;
  for (int k = 0; k < 3; ++k) c1[k] = std::clamp(c0[k] + double(uniform_int(rng, -70, 70)), 0.0, 255.0);
  const double angle = uniform(rng, 0, 2 * kPi), ca = std::cos(angle), sa = std::sin(angle);
  const double n = img.rows;
  for (int y = 0; y < img.rows; ++y) {
    auto* row = img.ptr<cv::Vec3b>(y);
    for (int x = 0; x < img.cols; ++x) {
      const double t = std::clamp(((x - n / 2) * ca + (y - n / 2) * sa) / n + 0.5, 0.0, 1.0);
      for (int k = 0; k < 3; ++k) row[x][k] = cv::saturate_cast<uchar>(c0[k] * (1 - t) + c1[k] * t);
    }
  }
}

// Per-pixel, per-channel uniform noise of a random amplitude, over everything.
void add_noise(cv::Mat& img, std::mt19937_64& rng) {
  const int amp = static_cast<int>(uniform_int(rng, 3, 18));
  uint64_t bits = 0;
  int left = 0;
  for (int y = 0; y < img.rows; ++y) {
    auto* p = img.ptr<uchar>(y);
    for (int i = 0; i < img.cols * 3; ++i) {
      if (left == 0) {
        bits = rng();
        left = 4;
      }
      const int r = static_cast<int>(bits & 0xFFFF) % (2 * amp + 1) - amp;
      bits >>= 16;
      --left;
      p[i] = cv::saturate_cast<uchar>(int(p[i]) + r);
    }
  }
}

// A colour far from the background under the shape and from the shapes drawn
// before (which it may touch or overlap), so every boundary is visible.
cv::Scalar pick_colour(std::mt19937_64& rng, const cv::Scalar& background,
                       const std::vector<cv::Scalar>& previous) {
  cv::Scalar best;
  double best_score = -1;
  for (int attempt = 0; attempt < 32; ++attempt) {
    const cv::Scalar c = random_colour(rng);
    double score = colour_distance(c, background) / 150.0;
    for (const auto& p : previous) score = std::min(score, colour_distance(c, p) / 90.0);
    if (score > best_score) {
      best = c;
      best_score = score;
    }
    if (score >= 1.0) break;
  }
  return best;
}

RenderedImage render_image(const ShapesOptions& o, int64_t k) {
  std::mt19937_64 rng(hash_values(SeedDomain::ShapesImage, {o.seed, static_cast<uint64_t>(k)}));
  const int n = o.size;
  RenderedImage out;
  out.bgr.create(n, n, CV_8UC3);
  draw_background(out.bgr, rng);
  const cv::Mat background = out.bgr.clone();
  cv::Mat labels = cv::Mat::zeros(n, n, CV_8UC1);

  const int count = static_cast<int>(uniform_int(rng, o.min_objects, o.max_objects));
  std::vector<int> categories;
  std::vector<cv::Scalar> colours;
  for (int i = 0; i < count; ++i) {
    const int category = static_cast<int>(uniform_int(rng, 1, 3));
    const double s = uniform(rng, 0.12, 0.45) * n;  // diameter / side length
    const double radius = category == 1 ? s / 2 : category == 2 ? s / std::sqrt(2.0) : s / std::sqrt(3.0);
    // Mostly inside the image; a little clipping at the border is allowed.
    const double margin = std::min(0.8 * radius, n / 2.0);
    const double cx = uniform(rng, margin, n - margin), cy = uniform(rng, margin, n - margin);
    const cv::Rect around = cv::Rect(cv::Point(int(cx - radius), int(cy - radius)),
                                     cv::Point(int(cx + radius) + 1, int(cy + radius) + 1)) &
                            cv::Rect(0, 0, n, n);
    const cv::Scalar colour = pick_colour(rng, cv::mean(background(around)), colours);
    const uchar id = static_cast<uchar>(i + 1);
    if (category == 1) {
      const cv::Point c = fixed_point(cx, cy);
      const int r = static_cast<int>(std::lround(radius * kFixed));
      cv::circle(out.bgr, c, r, colour, cv::FILLED, cv::LINE_8, kShift);
      cv::circle(labels, c, r, cv::Scalar(id), cv::FILLED, cv::LINE_8, kShift);
    } else {
      const int corners = category == 2 ? 4 : 3;
      const double rotation = uniform(rng, 0, 2 * kPi);
      std::vector<cv::Point> poly;
      for (int v = 0; v < corners; ++v) {
        // Triangles get jittered corners so they are not all equilateral.
        const double jitter = category == 3 ? uniform(rng, -0.12, 0.12) * s : 0.0;
        const double a = rotation + 2 * kPi * v / corners + (category == 3 ? uniform(rng, -0.2, 0.2) : 0.0);
        poly.push_back(fixed_point(cx + (radius + jitter) * std::cos(a), cy + (radius + jitter) * std::sin(a)));
      }
      const std::vector<std::vector<cv::Point>> polys{poly};
      cv::fillPoly(out.bgr, polys, colour, cv::LINE_8, kShift);
      cv::fillPoly(labels, polys, cv::Scalar(id), cv::LINE_8, kShift);
    }
    categories.push_back(category);
    colours.push_back(colour);
  }
  add_noise(out.bgr, rng);

  for (int i = 0; i < count; ++i) {
    const cv::Mat visible = labels == (i + 1);  // CV_8U 0/255, continuous
    if (cv::countNonZero(visible) < kShapesMinVisiblePixels) {
      ++out.dropped;
      continue;
    }
    out.objects.push_back({categories[i], rle_encode(visible.data, n, n)});
  }
  return out;
}

void check_options(const ShapesOptions& o) {
  auto bad = [](const std::string& what) { throw Error("make-shapes: " + what); };
  if (o.output_dir.empty()) bad("no output directory given");
  if (o.num_images < 1) bad("the number of images must be at least 1, not " + std::to_string(o.num_images));
  if (o.size < 32 || o.size > 4096) bad("the image size must be in [32, 4096], not " + std::to_string(o.size));
  if (o.min_objects < 0 || o.max_objects < o.min_objects || o.max_objects > 255)
    bad("need 0 <= min_objects <= max_objects <= 255, got " + std::to_string(o.min_objects) + " and " +
        std::to_string(o.max_objects));
}

}  // namespace

ShapesSummary make_shapes_dataset(const ShapesOptions& o) {
  check_options(o);
  const fs::path root(o.output_dir);
  const fs::path images_dir = root / "images";
  std::error_code ec;
  fs::create_directories(images_dir, ec);
  if (ec) throw Error(images_dir.string() + ": cannot create directory (" + ec.message() + ")");

  ShapesSummary summary;
  summary.images_dir = images_dir.string();
  summary.annotations_path = (root / "annotations.json").string();
  nlohmann::json images = nlohmann::json::array(), annotations = nlohmann::json::array();
  int64_t next_annotation_id = 1;
  for (int64_t k = 0; k < o.num_images; ++k) {
    RenderedImage r = render_image(o, k);
    char name[32];
    std::snprintf(name, sizeof name, "%06lld.png", static_cast<long long>(k));
    std::vector<uchar> png;
    if (!cv::imencode(".png", r.bgr, png)) throw Error((images_dir / name).string() + ": PNG encoding failed");
    io::write_file_atomic((images_dir / name).string(), png.data(), png.size());

    const int64_t image_id = k + 1;  // COCO ids conventionally start at 1
    images.push_back({{"id", image_id}, {"file_name", std::string(name)}, {"width", o.size}, {"height", o.size}});
    for (const Annotation& a : r.objects) {
      const BBox box = rle_to_bbox(a.rle);
      annotations.push_back({{"id", next_annotation_id++},
                             {"image_id", image_id},
                             {"category_id", a.category},
                             {"bbox", {box[0], box[1], box[2], box[3]}},
                             {"area", rle_area(a.rle)},
                             {"iscrowd", 0},
                             {"segmentation", {{"size", {a.rle.h, a.rle.w}}, {"counts", rle_to_string(a.rle)}}}});
      ++summary.per_category[a.category];
    }
    summary.objects += static_cast<int64_t>(r.objects.size());
    summary.dropped_objects += r.dropped;
  }
  summary.images = o.num_images;

  nlohmann::json categories = nlohmann::json::array();
  const auto names = shapes_category_names();
  for (int c = 1; c <= 3; ++c) categories.push_back({{"id", c}, {"name", names[c]}, {"supercategory", "shape"}});
  const nlohmann::json doc = {
      {"info",
       {{"description", "maskrcnn-cpp synthetic shapes"},
        {"seed", o.seed},
        {"size", o.size},
        {"min_objects", o.min_objects},
        {"max_objects", o.max_objects}}},
      {"images", std::move(images)},
      {"categories", std::move(categories)},
      {"annotations", std::move(annotations)}};
  io::write_file_atomic(summary.annotations_path, doc.dump());
  return summary;
}

}  // namespace maskrcnn::data
