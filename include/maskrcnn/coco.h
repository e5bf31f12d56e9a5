// COCO instances files (ground truth) and results files (detections), read into
// compact structs with simdjson. Results follow pycocotools' COCO.loadRes.
//
// Errors (unreadable file, malformed JSON, a missing key, a wrong type, an
// annotation pointing at an unknown image or category, a mask whose size is not
// its image's) throw maskrcnn::Error with one line naming the file and the
// record, e.g. "gt.json: annotations[17] (id 42): image_id 9 not in images".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "maskrcnn/rle.h"

namespace maskrcnn {

struct CocoImage {
  int64_t id = 0;
  int32_t width = 0;
  int32_t height = 0;
  std::string file_name;
};

struct CocoCategory {
  int64_t id = 0;
  std::string name;
  std::string supercategory;
};

// An annotation's segmentation as stored in the file; polygons are rasterised
// only when needed (annotation_to_rle).
struct CocoSegmentation {
  enum class Kind : uint8_t { None, Polygons, Counts, String };
  Kind kind = Kind::None;
  std::vector<std::vector<double>> polygons;  // Kind::Polygons: [[x0,y0,x1,y1,...], ...]
  std::vector<uint32_t> counts;               // Kind::Counts: uncompressed RLE
  std::string rle_string;                     // Kind::String: compressed RLE
  uint32_t h = 0, w = 0;                      // "size" of an RLE (Counts / String)
};

struct CocoAnnotation {
  int64_t id = 0;
  int64_t image_id = 0;
  int64_t category_id = 0;
  BBox bbox{0, 0, 0, 0};
  bool has_bbox = false;
  double area = 0;
  bool iscrowd = false;
  bool ignore = false;  // the file's "ignore" flag (read, but pycocotools' COCOeval overrides it with iscrowd)
  double score = 0;     // results only
  CocoSegmentation segmentation;
};

struct CocoDataset {
  std::string source;  // file name used in error messages
  std::vector<CocoImage> images;
  std::vector<CocoCategory> categories;
  std::vector<CocoAnnotation> annotations;
  std::unordered_map<int64_t, size_t> image_index;     // image id -> index in images
  std::unordered_map<int64_t, size_t> category_index;  // category id -> index in categories

  const CocoImage* find_image(int64_t id) const;
  const CocoCategory* find_category(int64_t id) const;
};

// The largest annotation or results file the load_* functions read (bytes;
// default 2 GiB, COCO's train2017 instances file is 0.45 GB). A bigger file is
// refused with an error naming it before anything is read. Process-wide; the
// CLI sets it from --max-annotation-mb.
void set_max_annotation_file_bytes(uint64_t bytes);
uint64_t max_annotation_file_bytes();

// Ground truth: an instances file ({"images", "categories", "annotations"}).
CocoDataset load_coco_instances(const std::string& path);
// The same from memory; source names the data in error messages.
CocoDataset parse_coco_instances(std::string_view json, const std::string& source = "<memory>");

// Detections: a results file (a list of {image_id, category_id, score, bbox
// and/or segmentation}), with pycocotools' loadRes semantics: if the first result
// has a non-empty bbox, every result needs one and area = w*h (a result without
// segmentation gets its box as a polygon); otherwise every result needs a
// segmentation, area = its mask area and bbox = its toBbox unless given.
// ids are 1..N in file order; iscrowd = 0. A result whose image_id is not in gt
// throws. Results of categories not in gt are kept (COCOeval never looks at them).
// An empty list is accepted (no detections).
std::vector<CocoAnnotation> load_coco_results(const std::string& path, const CocoDataset& gt);
std::vector<CocoAnnotation> parse_coco_results(std::string_view json, const CocoDataset& gt,
                                               const std::string& source = "<memory>");

// pycocotools COCO.annToRLE: polygons are rasterised at the image's size and
// merged; RLEs are taken as they are. Throws maskrcnn::Error for an annotation
// without segmentation or with an unusable one.
Rle annotation_to_rle(const CocoAnnotation& ann, const CocoImage& image);

// Reads a whole file; throws maskrcnn::Error naming the path if it cannot.
std::string read_text_file(const std::string& path);

}  // namespace maskrcnn
