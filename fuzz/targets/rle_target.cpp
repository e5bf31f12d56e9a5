#include <cstdlib>
#include <cstring>
#include <string_view>

#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"
#include "targets/fuzz_targets.h"

namespace maskrcnn::fuzz {
namespace {

// Properties every RLE has; a violation aborts (the fuzzer's "crash").
void check(const Rle& r) {
  const uint64_t pixels = uint64_t(r.h) * r.w;
  if (rle_total(r) != pixels) {  // counts that do not cover the image: decoding must refuse
    try {
      (void)rle_decode(r);
    } catch (const Error&) {
      return;
    }
    std::abort();
  }
  const auto dense = rle_decode(r);
  if (dense.size() != pixels) std::abort();
  uint64_t on = 0;
  for (uint8_t v : dense) on += v;
  if (on != rle_area(r)) std::abort();
  if (rle_decode(rle_encode(dense.data(), int(r.h), int(r.w))) != dense) std::abort();
  const Rle again = rle_from_string(rle_to_string(r), r.h, r.w);
  if (rle_decode(again) != dense) std::abort();
  const BBox box = rle_to_bbox(r);
  if (on > 0 && (box[2] <= 0 || box[3] <= 0 || box[0] + box[2] > r.w || box[1] + box[3] > r.h)) std::abort();
  if (rle_area(rle_merge({r, again}, false)) != on || rle_area(rle_merge({r, again}, true)) != on) std::abort();
}

}  // namespace

void rle(const uint8_t* data, size_t size) {
  if (size < 3) return;
  const uint8_t mode = data[0] % 3;
  const uint32_t h = data[1], w = data[2];  // up to 255 x 255: dense decodes stay small
  data += 3;
  size -= 3;
  try {
    if (mode == 0) {
      check(rle_from_string(std::string_view(reinterpret_cast<const char*>(data), size), h, w));
    } else {
      std::vector<double> xy(size / sizeof(double));
      if (!xy.empty()) std::memcpy(xy.data(), data, xy.size() * sizeof(double));
      if (mode == 1) {
        check(rle_from_polygon(xy, h, w));
      } else {
        std::vector<std::vector<double>> polys;
        for (size_t i = 0; i < xy.size(); i += 8)
          polys.emplace_back(xy.begin() + i, xy.begin() + std::min(xy.size(), i + 8));
        if (!polys.empty()) check(rle_from_polygons(polys, h, w));
      }
    }
  } catch (const Error&) {
  }
}

}  // namespace maskrcnn::fuzz
