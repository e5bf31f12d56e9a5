// Parity of the box utilities (ops::box_iou, box_area, clip_boxes_to_image,
// remove_small_boxes) with torchvision.ops on the seeded cases of
// tests/python/make_ops_fixtures.py (boxes.pth): float32/64/16 and int64/32/16 boxes with
// zero-width, negative-height and negative-coordinate boxes; clipping to ordinary,
// one-pixel and empty images and of [B, N, 4] boxes; min sizes at the exact limits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/ops.h"
#include "support/test_env.h"

namespace {

using TensorMap = std::map<std::string, at::Tensor>;

const TensorMap& fixture() {
  static const TensorMap m = [] {
    TensorMap out;
    for (auto& [k, v] :
         maskrcnn::load_state_dict(maskrcnn::testing::fixtures_dir("ops") + "/boxes.pth"))
      out.emplace(k, v);
    return out;
  }();
  return m;
}

std::set<std::string> cases(const std::string& prefix) {
  std::set<std::string> names;
  for (const auto& [k, v] : fixture())
    if (k.rfind(prefix, 0) == 0) names.insert(k.substr(0, k.find('.')));
  return names;
}

const at::Tensor& get(const std::string& c, const std::string& field) {
  auto it = fixture().find(c + "." + field);
  if (it == fixture().end()) throw std::runtime_error("fixture lacks " + c + "." + field);
  return it->second;
}

// Same dtype and shape, values equal to rounding (NaN where torchvision has NaN).
std::string compare(const at::Tensor& actual, const at::Tensor& expected) {
  std::ostringstream os;
  if (actual.scalar_type() != expected.scalar_type())
    os << "dtype " << actual.scalar_type() << " vs torchvision " << expected.scalar_type()
       << "; ";
  if (actual.sizes() != expected.sizes()) {
    os << "shape " << actual.sizes() << " vs " << expected.sizes();
    return os.str();
  }
  if (actual.numel() == 0) return os.str();
  auto a = actual.to(at::kDouble);
  auto e = expected.to(at::kDouble);
  const double rtol = expected.scalar_type() == at::kDouble ? 1e-12 : 1e-6;
  auto bad = ((a - e).abs() > rtol * (e.abs() + 1)) & ~(a.isnan() & e.isnan());
  bad |= a.isnan() ^ e.isnan();
  const int64_t n_bad = bad.sum().item<int64_t>();
  if (n_bad) {
    auto i = at::where(bad.reshape(-1))[0][0].item<int64_t>();
    os << n_bad << " of " << a.numel() << " values differ; first at flat index " << i << ": "
       << a.reshape(-1)[i].item<double>() << " vs torchvision " << e.reshape(-1)[i].item<double>();
  }
  return os.str();
}

TEST(BoxesParity, BoxIou) {
  auto names = cases("iou_");
  EXPECT_EQ(names.size(), 7u);  // 6 dtypes + special
  for (const auto& c : names) {
    auto iou = maskrcnn::ops::box_iou(get(c, "a"), get(c, "b"));
    EXPECT_EQ(compare(iou, get(c, "iou")), "") << c;
  }
}

TEST(BoxesParity, BoxArea) {
  auto names = cases("area_");
  EXPECT_EQ(names.size(), 6u);
  for (const auto& c : names) {
    auto area = maskrcnn::ops::box_area(get(c, "boxes"));
    EXPECT_EQ(compare(area, get(c, "area")), "") << c;
  }
}

TEST(BoxesParity, ClipBoxesToImage) {
  auto names = cases("clip_");
  EXPECT_EQ(names.size(), 10u);
  for (const auto& c : names) {
    auto p = get(c, "params");
    auto out = maskrcnn::ops::clip_boxes_to_image(get(c, "boxes"), p[0].item<int64_t>(),
                                                  p[1].item<int64_t>());
    EXPECT_EQ(compare(out, get(c, "out")), "") << c;
  }
}

TEST(BoxesParity, RemoveSmallBoxes) {
  auto names = cases("small_");
  EXPECT_EQ(names.size(), 10u);
  for (const auto& c : names) {
    auto keep =
        maskrcnn::ops::remove_small_boxes(get(c, "boxes"), get(c, "params")[0].item<double>());
    const auto& ref = get(c, "keep");
    EXPECT_EQ(keep.scalar_type(), at::kLong) << c;
    EXPECT_TRUE(keep.sizes() == ref.sizes() && keep.equal(ref))
        << c << ": kept " << keep.numel() << " vs torchvision " << ref.numel();
  }
}

}  // namespace
