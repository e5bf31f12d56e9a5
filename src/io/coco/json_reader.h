// Small helpers over simdjson's ondemand API for the COCO readers: typed getters
// that turn every simdjson error into a one-line maskrcnn::Error naming the file,
// the record and the key.
#pragma once
#include <cmath>
#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"

namespace maskrcnn::coco_detail {

namespace od = simdjson::ondemand;

// Where we are: "gt.json: annotations[17] (id 42)".
class Ctx {
 public:
  // record = name + "[" + index + "]", built only when an error is reported
  Ctx(const std::string& source, const char* name, size_t index) : source_(source), name_(name), index_(index) {}
  void set_id(int64_t id) {
    id_ = id;
    has_id_ = true;
  }
  std::string where() const {
    std::string s = source_ + ": " + name_ + "[" + std::to_string(index_) + "]";
    if (has_id_) s += " (id " + std::to_string(id_) + ")";
    return s;
  }
  [[noreturn]] void fail(const std::string& what) const { throw Error(where() + ": " + what); }
  [[noreturn]] void json_fail(simdjson::error_code e, std::string_view key, const char* expected) const {
    if (e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_OUT_OF_RANGE ||
        e == simdjson::NUMBER_ERROR)
      fail("\"" + std::string(key) + "\" is not " + expected);
    fail(std::string("malformed JSON (") + simdjson::error_message(e) + ")");
  }

 private:
  const std::string& source_;
  const char* name_;
  size_t index_;
  int64_t id_ = 0;
  bool has_id_ = false;
};

inline double get_number(od::value& v, const Ctx& c, std::string_view key) {
  double d = 0;
  auto e = v.get_double().get(d);
  if (e) c.json_fail(e, key, "a number");
  return d;
}

inline int64_t get_integer(od::value& v, const Ctx& c, std::string_view key) {
  int64_t i = 0;
  auto e = v.get_int64().get(i);
  if (e) c.json_fail(e, key, "an integer");
  return i;
}

// 0/1 (any number, nonzero = true) or true/false.
inline bool get_flag(od::value& v, const Ctx& c, std::string_view key) {
  od::json_type t;
  auto e = v.type().get(t);
  if (e) c.json_fail(e, key, "a flag");
  if (t == od::json_type::boolean) {
    bool b = false;
    if ((e = v.get_bool().get(b))) c.json_fail(e, key, "a flag");
    return b;
  }
  if (t != od::json_type::number) c.fail("\"" + std::string(key) + "\" is not 0/1 or a boolean");
  return get_number(v, c, key) != 0;
}

inline std::string get_text(od::value& v, const Ctx& c, std::string_view key) {
  std::string_view s;
  auto e = v.get_string().get(s);
  if (e) c.json_fail(e, key, "a string");
  return std::string(s);
}

inline std::vector<double> get_numbers(od::value& v, const Ctx& c, std::string_view key) {
  od::array arr;
  auto e = v.get_array().get(arr);
  if (e) c.json_fail(e, key, "an array of numbers");
  std::vector<double> out;
  for (auto el : arr) {
    od::value x;
    if ((e = el.get(x))) c.json_fail(e, key, "an array of numbers");
    double d = 0;
    if ((e = x.get_double().get(d))) c.json_fail(e, key, "an array of numbers");
    out.push_back(d);
  }
  return out;
}

// [x, y, w, h]; an empty array gives has = false.
inline BBox get_bbox(od::value& v, const Ctx& c, std::string_view key, bool& has) {
  std::vector<double> b = get_numbers(v, c, key);
  has = !b.empty();
  if (b.empty()) return {0, 0, 0, 0};
  if (b.size() != 4) c.fail("\"" + std::string(key) + "\" must hold 4 numbers [x, y, w, h]");
  return {b[0], b[1], b[2], b[3]};
}

// A COCO segmentation: polygons [[x,y,...],...] or an RLE {"counts", "size"}.
inline CocoSegmentation get_segmentation(od::value& v, const Ctx& c) {
  CocoSegmentation s;
  od::json_type t;
  auto e = v.type().get(t);
  if (e) c.json_fail(e, "segmentation", "a segmentation");
  if (t == od::json_type::null) return s;
  if (t == od::json_type::array) {
    s.kind = CocoSegmentation::Kind::Polygons;
    od::array arr;
    if ((e = v.get_array().get(arr))) c.json_fail(e, "segmentation", "a polygon list");
    for (auto el : arr) {
      od::value p;
      if ((e = el.get(p))) c.json_fail(e, "segmentation", "a polygon list");
      s.polygons.push_back(get_numbers(p, c, "segmentation"));
    }
    return s;
  }
  if (t != od::json_type::object) c.fail("\"segmentation\" is neither polygons nor an RLE object");
  od::object obj;
  if ((e = v.get_object().get(obj))) c.json_fail(e, "segmentation", "an RLE object");
  bool has_counts = false, has_size = false;
  for (auto f : obj) {
    std::string_view key;
    if ((e = f.unescaped_key().get(key))) c.json_fail(e, "segmentation", "an RLE object");
    od::value fv;
    if ((e = f.value().get(fv))) c.json_fail(e, "segmentation", "an RLE object");
    if (key == "counts") {
      has_counts = true;
      if ((e = fv.type().get(t))) c.json_fail(e, "counts", "a string or a list");
      if (t == od::json_type::string) {
        s.kind = CocoSegmentation::Kind::String;
        s.rle_string = get_text(fv, c, "segmentation.counts");
      } else {
        s.kind = CocoSegmentation::Kind::Counts;
        od::array arr;
        if ((e = fv.get_array().get(arr))) c.json_fail(e, "segmentation.counts", "a string or a list");
        for (auto el : arr) {
          od::value x;
          uint64_t n = 0;
          if ((e = el.get(x)) || (e = x.get_uint64().get(n)) || n > UINT32_MAX)
            c.fail("\"segmentation.counts\" must hold non-negative 32-bit integers");
          s.counts.push_back(static_cast<uint32_t>(n));
        }
      }
    } else if (key == "size") {
      has_size = true;
      std::vector<double> hw = get_numbers(fv, c, "segmentation.size");
      // Range first: casting a double beyond uint32 is undefined.
      auto is_u32 = [](double v) { return v >= 0 && v <= 4294967295.0 && v == std::floor(v); };
      if (hw.size() != 2 || !is_u32(hw[0]) || !is_u32(hw[1]))
        c.fail("\"segmentation.size\" must be [height, width]");
      s.h = static_cast<uint32_t>(hw[0]);
      s.w = static_cast<uint32_t>(hw[1]);
    }
  }
  if (!has_counts) c.fail("segmentation RLE without \"counts\"");
  if (!has_size) c.fail("segmentation RLE without \"size\"");
  return s;
}

}  // namespace maskrcnn::coco_detail
