// A synthetic COCO-format instance segmentation set: circles, squares and
// triangles on noisy gradient backgrounds. Small and quick to learn, so that
// training can be tested end to end (loss goes down, masks come out right)
// without downloading COCO.
//
//   OUTPUT/images/000000.png, 000001.png, ...
//   OUTPUT/annotations.json   COCO instances: categories 1 circle, 2 square,
//                             3 triangle; segmentation = compressed RLE of the
//                             object's visible pixels (later shapes occlude
//                             earlier ones); bbox/area from that mask.
//
// Image k (file k, image id k + 1) depends only on (seed, k, size, object
// counts), not on num_images, so a larger set extends a smaller one.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace maskrcnn::data {

struct ShapesOptions {
  std::string output_dir;
  int num_images = 200;
  int size = 128;  // images are size x size
  uint64_t seed = 0;
  int min_objects = 1, max_objects = 4;  // shapes drawn per image (before dropping hidden ones)
};

// Objects left with fewer visible pixels than this are not annotated.
constexpr int kShapesMinVisiblePixels = 30;

struct ShapesSummary {
  int64_t images = 0;
  int64_t objects = 0;          // annotations written
  int64_t dropped_objects = 0;  // drawn but (almost) hidden by later shapes
  std::array<int64_t, 4> per_category{};  // [category id]; [0] unused
  std::string annotations_path;
  std::string images_dir;
};

// Writes the data set; throws maskrcnn::Error for bad options or unwritable files.
ShapesSummary make_shapes_dataset(const ShapesOptions& options);

// The category names of the set, index = category id ([0] = "__background__").
inline std::array<const char*, 4> shapes_category_names() {
  return {"__background__", "circle", "square", "triangle"};
}

}  // namespace maskrcnn::data
