// COCO instances and results files -> CocoDataset / CocoAnnotation (simdjson ondemand).
#include <cstdio>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "io/coco/json_reader.h"
#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"

namespace maskrcnn {

using coco_detail::Ctx;
namespace od = simdjson::ondemand;

const CocoImage* CocoDataset::find_image(int64_t id) const {
  auto it = image_index.find(id);
  return it == image_index.end() ? nullptr : &images[it->second];
}

const CocoCategory* CocoDataset::find_category(int64_t id) const {
  auto it = category_index.find(id);
  return it == category_index.end() ? nullptr : &categories[it->second];
}

namespace {
std::atomic<uint64_t> g_max_file_bytes{uint64_t{2} << 30};
}  // namespace

void set_max_annotation_file_bytes(uint64_t bytes) { g_max_file_bytes = bytes; }
uint64_t max_annotation_file_bytes() { return g_max_file_bytes.load(); }

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path + ": read error");
  return ss.str();
}

namespace {

simdjson::padded_string load_padded(const std::string& path) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  const uint64_t limit = g_max_file_bytes.load();
  if (!ec && bytes > limit)
    throw Error(path + ": " + std::to_string(bytes >> 20) + " MB, over the limit of " + std::to_string(limit >> 20) +
                " MB for annotation files (--max-annotation-mb)");
  simdjson::padded_string s;
  auto e = simdjson::padded_string::load(path).get(s);
  if (e) throw Error(path + ": cannot read file (" + simdjson::error_message(e) + ")");
  return s;
}

[[noreturn]] void top_fail(const std::string& source, simdjson::error_code e, const char* what) {
  throw Error(source + ": " + what + " (" + simdjson::error_message(e) + ")");
}

// Checks a mask's size and counts against its image; decodes a compressed string.
void check_rle(const CocoSegmentation& s, const CocoImage* img, const Ctx& c) {
  using K = CocoSegmentation::Kind;
  if (s.kind != K::Counts && s.kind != K::String) return;
  if (img && (img->height > 0 || img->width > 0) &&
      (s.h != static_cast<uint32_t>(img->height) || s.w != static_cast<uint32_t>(img->width)))
    c.fail("segmentation size [" + std::to_string(s.h) + ", " + std::to_string(s.w) +
           "] does not match image " + std::to_string(img->id) + " size [" +
           std::to_string(img->height) + ", " + std::to_string(img->width) + "]");
  uint64_t total = 0;
  if (s.kind == K::Counts) {
    for (uint32_t v : s.counts) total += v;
  } else {
    try {
      total = rle_total(rle_from_string(s.rle_string, s.h, s.w));
    } catch (const Error& e) {
      c.fail(std::string("segmentation: ") + e.what());
    }
  }
  if (total != static_cast<uint64_t>(s.h) * s.w)
    c.fail("segmentation RLE counts sum to " + std::to_string(total) + ", not height*width = " +
           std::to_string(static_cast<uint64_t>(s.h) * s.w));
}

void parse_image(od::value& v, CocoDataset& ds, size_t index) {
  Ctx c(ds.source, "images", index);
  od::object obj;
  if (auto e = v.get_object().get(obj)) c.json_fail(e, "images[]", "an object");
  CocoImage img;
  bool has_id = false;
  for (auto f : obj) {
    std::string_view key;
    od::value fv;
    if (auto e = f.unescaped_key().get(key)) c.json_fail(e, "", "");
    if (auto e = f.value().get(fv)) c.json_fail(e, key, "a value");
    if (key == "id") {
      img.id = coco_detail::get_integer(fv, c, key);
      has_id = true;
      c.set_id(img.id);
    } else if (key == "width" || key == "height") {
      const int64_t x = coco_detail::get_integer(fv, c, key);
      if (x < 0 || x > INT32_MAX) c.fail("\"" + std::string(key) + "\" out of range");
      (key == "width" ? img.width : img.height) = static_cast<int32_t>(x);
    } else if (key == "file_name") {
      img.file_name = coco_detail::get_text(fv, c, key);
    }
  }
  if (!has_id) c.fail("missing key \"id\"");
  if (!ds.image_index.emplace(img.id, ds.images.size()).second) c.fail("duplicate image id");
  ds.images.push_back(std::move(img));
}

void parse_category(od::value& v, CocoDataset& ds, size_t index) {
  Ctx c(ds.source, "categories", index);
  od::object obj;
  if (auto e = v.get_object().get(obj)) c.json_fail(e, "categories[]", "an object");
  CocoCategory cat;
  bool has_id = false;
  for (auto f : obj) {
    std::string_view key;
    od::value fv;
    if (auto e = f.unescaped_key().get(key)) c.json_fail(e, "", "");
    if (auto e = f.value().get(fv)) c.json_fail(e, key, "a value");
    if (key == "id") {
      cat.id = coco_detail::get_integer(fv, c, key);
      has_id = true;
      c.set_id(cat.id);
    } else if (key == "name") {
      cat.name = coco_detail::get_text(fv, c, key);
    } else if (key == "supercategory") {
      cat.supercategory = coco_detail::get_text(fv, c, key);
    }
  }
  if (!has_id) c.fail("missing key \"id\"");
  if (!ds.category_index.emplace(cat.id, ds.categories.size()).second) c.fail("duplicate category id");
  ds.categories.push_back(std::move(cat));
}

// Fields common to annotations and results. Returns a bit mask of keys seen.
enum Seen : unsigned { kId = 1, kImage = 2, kCat = 4, kBbox = 8, kArea = 16, kSegm = 32, kScore = 64 };

unsigned parse_annotation(od::value& v, CocoAnnotation& a, Ctx& c, bool results) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) c.json_fail(e, results ? "[]" : "annotations[]", "an object");
  unsigned seen = 0;
  for (auto f : obj) {
    std::string_view key;
    od::value fv;
    if (auto e = f.unescaped_key().get(key)) c.json_fail(e, "", "");
    if (auto e = f.value().get(fv)) c.json_fail(e, key, "a value");
    if (key == "id" && !results) {
      a.id = coco_detail::get_integer(fv, c, key);
      c.set_id(a.id);
      seen |= kId;
    } else if (key == "image_id") {
      a.image_id = coco_detail::get_integer(fv, c, key);
      seen |= kImage;
    } else if (key == "category_id") {
      a.category_id = coco_detail::get_integer(fv, c, key);
      seen |= kCat;
    } else if (key == "bbox") {
      a.bbox = coco_detail::get_bbox(fv, c, key, a.has_bbox);
      seen |= kBbox;
    } else if (key == "area" && !results) {
      a.area = coco_detail::get_number(fv, c, key);
      seen |= kArea;
    } else if (key == "iscrowd" && !results) {
      a.iscrowd = coco_detail::get_flag(fv, c, key);
    } else if (key == "ignore" && !results) {
      a.ignore = coco_detail::get_flag(fv, c, key);
    } else if (key == "score" && results) {
      a.score = coco_detail::get_number(fv, c, key);
      seen |= kScore;
    } else if (key == "segmentation") {
      a.segmentation = coco_detail::get_segmentation(fv, c);
      seen |= kSegm;
    }
  }
  return seen;
}

template <class F, class Reserve>
void for_each_element(od::value& v, const std::string& source, const char* name, Reserve&& reserve, F&& fn) {
  od::array arr;
  if (auto e = v.get_array().get(arr)) {
    if (e == simdjson::INCORRECT_TYPE) throw Error(source + ": \"" + name + "\" is not an array");
    top_fail(source, e, "malformed JSON");
  }
  size_t count = 0;
  if (auto e = arr.count_elements().get(count)) top_fail(source, e, "malformed JSON");
  reserve(count);
  size_t i = 0;
  for (auto el : arr) {
    od::value x;
    if (auto e = el.get(x))
      throw Error(source + ": " + name + "[" + std::to_string(i) + "]: malformed JSON (" +
                  simdjson::error_message(e) + ")");
    fn(x, i++);
  }
}

}  // namespace

namespace {

CocoDataset parse_instances(const simdjson::padded_string& padded, const std::string& source) {
  CocoDataset ds;
  ds.source = source;
  od::parser parser;
  od::document doc;
  if (auto e = parser.iterate(padded).get(doc)) top_fail(source, e, "malformed JSON");
  od::object root;
  if (auto e = doc.get_object().get(root)) {
    if (e == simdjson::INCORRECT_TYPE) throw Error(source + ": not a COCO instances file (top level is not an object)");
    top_fail(source, e, "malformed JSON");
  }
  bool has_images = false, has_categories = false;
  for (auto f : root) {
    std::string_view key;
    od::value v;
    if (auto e = f.unescaped_key().get(key)) top_fail(source, e, "malformed JSON");
    if (auto e = f.value().get(v)) top_fail(source, e, "malformed JSON");
    if (key == "images") {
      has_images = true;
      for_each_element(v, source, "images", [&](size_t n) { ds.images.reserve(n); }, [&](od::value& x, size_t i) { parse_image(x, ds, i); });
    } else if (key == "categories") {
      has_categories = true;
      for_each_element(v, source, "categories", [&](size_t n) { ds.categories.reserve(n); }, [&](od::value& x, size_t i) { parse_category(x, ds, i); });
    } else if (key == "annotations") {
      for_each_element(v, source, "annotations", [&](size_t n) { ds.annotations.reserve(n); }, [&](od::value& x, size_t i) {
        Ctx c(ds.source, "annotations", i);
        CocoAnnotation a;
        const unsigned seen = parse_annotation(x, a, c, false);
        if (!(seen & kId)) c.fail("missing key \"id\"");
        if (!(seen & kImage)) c.fail("missing key \"image_id\"");
        if (!(seen & kCat)) c.fail("missing key \"category_id\"");
        if (!(seen & kArea)) c.fail("missing key \"area\"");
        ds.annotations.push_back(std::move(a));
      });
    }
  }
  if (!has_images) throw Error(source + ": missing key \"images\"");
  if (!has_categories) throw Error(source + ": missing key \"categories\"");
  for (size_t i = 0; i < ds.annotations.size(); ++i) {
    const CocoAnnotation& a = ds.annotations[i];
    Ctx c(ds.source, "annotations", i);
    c.set_id(a.id);
    const CocoImage* img = ds.find_image(a.image_id);
    if (!img) c.fail("image_id " + std::to_string(a.image_id) + " not in images");
    if (!ds.find_category(a.category_id))
      c.fail("category_id " + std::to_string(a.category_id) + " not in categories");
    check_rle(a.segmentation, img, c);
  }
  return ds;
}

std::vector<CocoAnnotation> parse_results(const simdjson::padded_string& padded, const CocoDataset& gt,
                                          const std::string& source) {
  od::parser parser;
  od::document doc;
  if (auto e = parser.iterate(padded).get(doc)) top_fail(source, e, "malformed JSON");
  od::array root;
  if (auto e = doc.get_array().get(root)) {
    if (e == simdjson::INCORRECT_TYPE) throw Error(source + ": results must be a JSON array of objects");
    top_fail(source, e, "malformed JSON");
  }
  std::vector<CocoAnnotation> out;
  size_t count = 0;
  if (auto e = root.count_elements().get(count)) top_fail(source, e, "malformed JSON");
  out.reserve(count);
  bool bbox_mode = false;
  size_t i = 0;
  for (auto el : root) {
    od::value x;
    if (auto e = el.get(x)) top_fail(source, e, "malformed JSON");
    Ctx c(source, "", i);
    CocoAnnotation a;
    const unsigned seen = parse_annotation(x, a, c, true);
    if (!(seen & kImage)) c.fail("missing key \"image_id\"");
    if (!(seen & kCat)) c.fail("missing key \"category_id\"");
    if (!(seen & kScore)) c.fail("missing key \"score\"");
    if (i == 0) bbox_mode = a.has_bbox;  // loadRes decides on the first result
    const CocoImage* img = gt.find_image(a.image_id);
    if (!img) c.fail("image_id " + std::to_string(a.image_id) + " not in the ground truth images");
    using K = CocoSegmentation::Kind;
    if (bbox_mode) {
      if (!a.has_bbox) c.fail("missing key \"bbox\" (the first result has a bbox)");
      check_rle(a.segmentation, img, c);
      a.area = a.bbox[2] * a.bbox[3];
      if (a.segmentation.kind == K::None) {
        const double x1 = a.bbox[0], x2 = a.bbox[0] + a.bbox[2];
        const double y1 = a.bbox[1], y2 = a.bbox[1] + a.bbox[3];
        a.segmentation.kind = K::Polygons;
        a.segmentation.polygons = {{x1, y1, x1, y2, x2, y2, x2, y1}};
      }
    } else {
      if (a.segmentation.kind == K::None)
        c.fail("missing key \"segmentation\" (the first result has no bbox)");
      check_rle(a.segmentation, img, c);
      Rle rle;
      try {
        rle = annotation_to_rle(a, *img);
      } catch (const Error& e) {
        c.fail(e.what());
      }
      a.area = static_cast<double>(rle_area(rle));
      if (!a.has_bbox) {
        a.bbox = rle_to_bbox(rle);
        a.has_bbox = true;
      }
    }
    a.id = static_cast<int64_t>(i) + 1;
    a.iscrowd = false;
    out.push_back(std::move(a));
    ++i;
  }
  return out;
}

}  // namespace

CocoDataset parse_coco_instances(std::string_view json, const std::string& source) {
  return parse_instances(simdjson::padded_string(json), source);
}

CocoDataset load_coco_instances(const std::string& path) { return parse_instances(load_padded(path), path); }

std::vector<CocoAnnotation> parse_coco_results(std::string_view json, const CocoDataset& gt,
                                               const std::string& source) {
  return parse_results(simdjson::padded_string(json), gt, source);
}

std::vector<CocoAnnotation> load_coco_results(const std::string& path, const CocoDataset& gt) {
  return parse_results(load_padded(path), gt, path);
}

namespace {
// Runs that do not cover the mask exactly would make areas and IoUs read
// past it (pycocotools takes them as they are and computes garbage).
Rle checked_rle(Rle r, int64_t ann_id) {
  const uint64_t total = rle_total(r);
  if (total != uint64_t{r.h} * r.w)
    throw Error("annotation " + std::to_string(ann_id) + ": RLE counts sum to " + std::to_string(total) +
                ", not " + std::to_string(r.h) + "x" + std::to_string(r.w) + " = " +
                std::to_string(uint64_t{r.h} * r.w));
  return r;
}
}  // namespace

Rle annotation_to_rle(const CocoAnnotation& a, const CocoImage& img) {
  using K = CocoSegmentation::Kind;
  const CocoSegmentation& s = a.segmentation;
  switch (s.kind) {
    case K::Polygons:
      if (img.height <= 0 || img.width <= 0)
        throw Error("image " + std::to_string(img.id) + " has no width/height to rasterise polygons");
      return rle_from_polygons(s.polygons, static_cast<uint32_t>(img.height), static_cast<uint32_t>(img.width));
    case K::Counts: {
      Rle r;
      r.h = s.h;
      r.w = s.w;
      r.counts = s.counts;
      return checked_rle(std::move(r), a.id);
    }
    case K::String:
      return checked_rle(rle_from_string(s.rle_string, s.h, s.w), a.id);
    case K::None:
    default:
      throw Error("annotation " + std::to_string(a.id) + " has no segmentation");
  }
}

}  // namespace maskrcnn
