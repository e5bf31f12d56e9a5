// RLE: bit-exactness against pycocotools (shared/coco_eval/mask_cases.json) and
// hand-checked properties of encode/decode/merge/frPoly/strings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"

using namespace maskrcnn;

namespace {

std::string shared_dir() {
  if (const char* s = std::getenv("MASKRCNN_SHARED")) return s;
  if (const char* s = std::getenv("MASKRCNN_SOURCE_DIR")) return std::string(s) + "/../shared";
  return "/work/shared";
}

nlohmann::json load_cases() {
  const std::string path = shared_dir() + "/coco_eval/mask_cases.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

struct Case {
  std::string name;
  int h, w;
  std::vector<uint8_t> row_major;
  std::string counts;
  std::vector<uint32_t> uncompressed;
  uint64_t area;
  BBox bbox;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  const nlohmann::json all = load_cases();
  for (const auto& m : all["masks"]) {
    Case c;
    c.name = m["name"];
    c.h = m["size"][0];
    c.w = m["size"][1];
    for (const auto& row : m["mask"])
      for (const auto& v : row) c.row_major.push_back(static_cast<uint8_t>(v.get<int>()));
    c.counts = m["counts"];
    c.uncompressed = m["uncompressed_counts"].get<std::vector<uint32_t>>();
    c.area = m["area"];
    for (int i = 0; i < 4; ++i) c.bbox[i] = m["bbox"][i];
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

TEST(Rle, MatchesPycocotoolsEncodeStringAreaBbox) {
  auto cs = cases();
  ASSERT_EQ(cs.size(), 20u);
  for (const auto& c : cs) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.row_major.size(), static_cast<size_t>(c.h * c.w));
    Rle r = rle_encode(c.row_major.data(), c.h, c.w);
    EXPECT_EQ(r.h, static_cast<uint32_t>(c.h));
    EXPECT_EQ(r.w, static_cast<uint32_t>(c.w));
    EXPECT_EQ(r.counts, c.uncompressed);
    EXPECT_EQ(rle_to_string(r), c.counts);
    EXPECT_EQ(rle_area(r), c.area);
    EXPECT_EQ(rle_to_bbox(r), c.bbox);
    // column-major variant and round trips
    std::vector<uint8_t> col(c.row_major.size());
    for (int y = 0; y < c.h; ++y)
      for (int x = 0; x < c.w; ++x) col[static_cast<size_t>(x * c.h + y)] = c.row_major[static_cast<size_t>(y * c.w + x)];
    EXPECT_EQ(rle_encode_column_major(col.data(), c.h, c.w), r);
    EXPECT_EQ(rle_decode(r), c.row_major);
    EXPECT_EQ(rle_decode_column_major(r), col);
    Rle back = rle_from_string(c.counts, static_cast<uint32_t>(c.h), static_cast<uint32_t>(c.w));
    EXPECT_EQ(back, r);
  }
}

TEST(Rle, IouMatchesPycocotools) {
  auto cs = cases();
  std::vector<Rle> rles;
  for (const auto& c : cs) rles.push_back(rle_encode(c.row_major.data(), c.h, c.w));
  const auto j = load_cases();
  int groups = 0;
  for (const auto& g : j["iou"]) {
    std::vector<Rle> dt, gt;
    for (int i : g["dt"]) dt.push_back(rles[static_cast<size_t>(i)]);
    for (int i : g["gt"]) gt.push_back(rles[static_cast<size_t>(i)]);
    std::vector<uint8_t> crowd;
    for (int v : g["iscrowd"]) crowd.push_back(static_cast<uint8_t>(v));
    auto iou = rle_iou(dt, gt, crowd);
    ASSERT_EQ(iou.size(), dt.size() * gt.size());
    for (size_t d = 0; d < dt.size(); ++d)
      for (size_t k = 0; k < gt.size(); ++k)
        EXPECT_NEAR(iou[d * gt.size() + k], g["iou"][d][k].get<double>(), 1e-12) << "group " << groups << " d" << d << " g" << k;
    ++groups;
  }
  EXPECT_EQ(groups, 8);
  int bgroups = 0;
  for (const auto& g : j["bbox_iou"]) {
    std::vector<BBox> dt, gt;
    for (const auto& b : g["dt"]) dt.push_back({b[0], b[1], b[2], b[3]});
    for (const auto& b : g["gt"]) gt.push_back({b[0], b[1], b[2], b[3]});
    std::vector<uint8_t> crowd;
    for (int v : g["iscrowd"]) crowd.push_back(static_cast<uint8_t>(v));
    auto iou = bbox_iou(dt, gt, crowd);
    for (size_t d = 0; d < dt.size(); ++d)
      for (size_t k = 0; k < gt.size(); ++k)
        EXPECT_NEAR(iou[d * gt.size() + k], g["iou"][d][k].get<double>(), 1e-12);
    ++bgroups;
  }
  EXPECT_EQ(bgroups, 2);
}

TEST(Rle, StringRoundTripOnRandomMasks) {
  std::mt19937 rng(7);
  for (int it = 0; it < 200; ++it) {
    const int h = 1 + static_cast<int>(rng() % 40), w = 1 + static_cast<int>(rng() % 40);
    std::vector<uint8_t> m(static_cast<size_t>(h * w));
    const unsigned p = rng() % 100;
    for (auto& v : m) v = (rng() % 100) < p;
    Rle r = rle_encode(m.data(), h, w);
    EXPECT_EQ(rle_total(r), static_cast<uint64_t>(h * w));
    EXPECT_EQ(rle_from_string(rle_to_string(r), r.h, r.w), r);
    EXPECT_EQ(rle_decode(r), m);
  }
  // large counts and negative deltas survive the 5-bit coding
  Rle big{1000, 1000, {123456, 1, 5, 1000000 - 123456 - 1 - 5}};
  EXPECT_EQ(rle_from_string(rle_to_string(big), 1000, 1000), big);
}

TEST(Rle, MergeUnionAndIntersection) {
  const uint8_t a[] = {1, 1, 0, 0, 0, 1};  // 2x3 row-major
  const uint8_t b[] = {0, 1, 1, 0, 0, 1};
  Rle ra = rle_encode(a, 2, 3), rb = rle_encode(b, 2, 3);
  std::vector<uint8_t> u(6), i(6);
  for (int k = 0; k < 6; ++k) {
    u[k] = a[k] | b[k];
    i[k] = a[k] & b[k];
  }
  EXPECT_EQ(rle_merge({ra, rb}, false), rle_encode(u.data(), 2, 3));
  EXPECT_EQ(rle_merge({ra, rb}, true), rle_encode(i.data(), 2, 3));
  EXPECT_EQ(rle_merge({ra}), ra);
  EXPECT_EQ(rle_merge({}).counts.size(), 0u);
  Rle other = rle_encode(a, 3, 2);
  Rle bad = rle_merge({ra, other});
  EXPECT_EQ(bad.h, 0u);
  EXPECT_EQ(bad.w, 0u);
}

TEST(Rle, PolygonRasterisation) {
  // An axis-aligned rectangle with integer corners covers exactly its pixels.
  std::vector<double> rect = {2, 3, 7, 3, 7, 5, 2, 5};  // x in [2,7), y in [3,5)
  Rle r = rle_from_polygon(rect, 8, 8);
  EXPECT_EQ(rle_to_bbox(r), (BBox{2, 3, 5, 2}));
  EXPECT_EQ(rle_area(r), 10u);
  // pycocotools' string for this mask (mask_cases.json "8x8 rect": rows 3-4, cols 2-6)
  EXPECT_EQ(rle_to_string(r), "c02600000005");
  // frBbox is the same polygon
  EXPECT_EQ(rle_from_bbox({2, 3, 5, 2}, 8, 8), r);
  // degenerate polygons: a point and an empty list
  std::vector<double> pt = {3.2, 3.2, 3.2, 3.2, 3.2, 3.2};
  EXPECT_EQ(rle_area(rle_from_polygon(pt, 8, 8)), 0u);
  EXPECT_EQ(rle_from_polygon(nullptr, 0, 4, 4).counts, std::vector<uint32_t>{16});
  // polygons beyond the image are clipped
  std::vector<double> huge = {-10, -10, 100, -10, 100, 100, -10, 100};
  EXPECT_EQ(rle_area(rle_from_polygon(huge, 6, 5)), 30u);
  // union of two polygons
  std::vector<std::vector<double>> two = {{0, 0, 2, 0, 2, 2, 0, 2}, {4, 4, 6, 4, 6, 6, 4, 6}};
  EXPECT_EQ(rle_area(rle_from_polygons(two, 8, 8)), 8u);
  EXPECT_THROW(rle_from_polygons({}, 8, 8), Error);
  EXPECT_THROW(rle_from_polygons({{1, 2}}, 8, 8), Error);
}

TEST(Rle, BadStringsThrow) {
  EXPECT_THROW(rle_from_string("ab~", 4, 4), Error);   // '~' > 'o'
  EXPECT_THROW(rle_from_string("0P", 4, 4), Error);    // 'P' has the continuation bit, then ends
  EXPECT_THROW(rle_decode(Rle{2, 2, {1, 2}}), Error);  // sums to 3, not 4
}

TEST(Rle, IouEdgeCases) {
  const uint8_t a[] = {1, 1, 1, 1};
  const uint8_t z[] = {0, 0, 0, 0};
  Rle ra = rle_encode(a, 2, 2), rz = rle_encode(z, 2, 2);
  EXPECT_EQ(rle_iou({ra}, {rz}, {0})[0], 0.0);
  EXPECT_EQ(rle_iou({rz}, {rz}, {0})[0], 0.0);
  EXPECT_EQ(rle_iou({ra}, {ra}, {1})[0], 1.0);
  Rle other = rle_encode(a, 4, 1);
  EXPECT_EQ(rle_iou({ra}, {other}, {0})[0], -1.0);  // sizes differ, boxes overlap
  EXPECT_TRUE(rle_iou({}, {ra}, {0}).empty());
  EXPECT_THROW(rle_iou({ra}, {ra}, {0, 1}), Error);
}

// Found by fuzzing (fuzz/regressions/rle, coco_results): bounds on untrusted input.
TEST(RleLimits, HostileInputIsAnErrorNotAHangOrUndefinedBehaviour) {
  // A box 15.5 million px tall on a 48x64 image: the edge walk would visit
  // 77 million points to draw 48 rows.
  const std::vector<double> tall{2.5, 3, 2.5, 15555553, 21.5, 15555553, 21.5, 3};
  try {
    rle_from_polygon(tall, 48, 64);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("perimeter"), std::string::npos) << e.what();
  }
  // The same box clipped to sane sizes still rasterises.
  const std::vector<double> sane{2.5, 3, 2.5, 200, 21.5, 200, 21.5, 3};
  EXPECT_EQ(rle_area(rle_from_polygon(sane, 48, 64)), rle_area(rle_from_polygon(sane, 48, 64)));
  EXPECT_GT(rle_area(rle_from_polygon(sane, 48, 64)), 0u);
  // 7 characters hold any 32-bit count difference; an 8th is refused (it
  // would shift past 64 bits), and so are characters outside 48..111.
  EXPECT_THROW(rle_from_string("oooooooO", 10, 10), Error);
  EXPECT_THROW(rle_from_string("\x7f", 10, 10), Error);
  const Rle big{100000, 100000, {1u << 31, 100000u * 100000u - (1u << 31)}};
  EXPECT_EQ(rle_from_string(rle_to_string(big), big.h, big.w), big);
  // An empty mask encodes without touching its (null) buffer.
  EXPECT_EQ(rle_encode(nullptr, 0, 5).counts, std::vector<uint32_t>{0});
  EXPECT_EQ(rle_encode(nullptr, 7, 0).counts, std::vector<uint32_t>{0});
}

// Empty runs after the first (never written by pycocotools, possible in a
// hand-made or foreign RLE) describe the same mask as their canonical form; the
// box, merge and IoU must not read them as pixels or stop at them.
TEST(Rle, EmptyRunsInsideTheCountsAreTheSameMask) {
  const Rle odd{1, 5, {0, 0, 0, 5}};  // five foreground pixels, two empty runs first
  const Rle canon{1, 5, {0, 5}};
  ASSERT_EQ(rle_decode(odd), rle_decode(canon));
  EXPECT_EQ(rle_to_bbox(odd), rle_to_bbox(canon));
  EXPECT_EQ(rle_to_bbox(odd), (BBox{0, 0, 5, 1}));
  EXPECT_EQ(rle_merge({odd, odd}, false), canon);
  EXPECT_EQ(rle_merge({odd, odd}, true), canon);
  EXPECT_EQ(rle_iou({odd}, {canon}, {0})[0], 1.0);

  const Rle gaps{4, 2, {1, 2, 0, 0, 3, 0, 0, 2}};  // runs 1 bg, 2 fg, 3 bg, 2 fg once joined
  const Rle joined{4, 2, {1, 2, 3, 2}};
  ASSERT_EQ(rle_decode(gaps), rle_decode(joined));
  EXPECT_EQ(rle_to_bbox(gaps), rle_to_bbox(joined));
  EXPECT_EQ(rle_merge({gaps, joined}, false), joined);
  EXPECT_EQ(rle_iou({gaps}, {joined}, {0})[0], 1.0);

  const Rle none{2, 3, {4, 0, 2}};  // no foreground at all
  EXPECT_EQ(rle_to_bbox(none), (BBox{0, 0, 0, 0}));
  EXPECT_EQ(rle_area(rle_merge({none, none}, false)), 0u);
}

TEST(Rle, WindowEncodeEqualsEncodeOfThePastedImage) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const int h = 1 + static_cast<int>(rng() % 40), w = 1 + static_cast<int>(rng() % 40);
    const int wh = static_cast<int>(rng() % (h + 1)), ww = static_cast<int>(rng() % (w + 1));
    const int y0 = static_cast<int>(rng() % (h - wh + 1)), x0 = static_cast<int>(rng() % (w - ww + 1));
    // Sparse, dense, all-on and all-off windows; ones touching every edge.
    const unsigned density = rng() % 4;
    std::vector<uint8_t> window(static_cast<size_t>(wh) * ww), full(static_cast<size_t>(h) * w, 0);
    for (auto& v : window) v = density == 0 ? 0 : density == 3 ? 1 : static_cast<uint8_t>(rng() % (density + 1) != 0);
    for (int y = 0; y < wh; ++y)
      for (int x = 0; x < ww; ++x) full[static_cast<size_t>(y0 + y) * w + x0 + x] = window[static_cast<size_t>(y) * ww + x];
    const Rle expected = rle_encode(full.data(), h, w);
    EXPECT_EQ(rle_encode_window(window.data(), wh, ww, y0, x0, h, w), expected)
        << "trial " << trial << ": " << h << "x" << w << " window " << wh << "x" << ww << " at " << y0 << "," << x0;
  }
  uint8_t one = 1;
  EXPECT_THROW(rle_encode_window(&one, 1, 1, 3, 0, 3, 3), Error);  // below the image
}
