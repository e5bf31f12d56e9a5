// Parity of ops::nms and ops::batched_nms with torchvision.ops on the seeded cases of
// tests/python/make_ops_fixtures.py (nms.pth, batched_nms.pth): clustered random boxes,
// thresholds 0.3/0.5/0.7, exact score ties (the stable order must match), empty input,
// single box, identical boxes, zero-area boxes, IoU exactly at the threshold; batched NMS
// on both of torchvision's code paths (<= 1000 boxes: coordinate-offset trick, > 1000:
// per-class loop). Kept index lists must be identical, in order.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/ops.h"
#include "support/test_env.h"

namespace {

using TensorMap = std::map<std::string, at::Tensor>;

TensorMap load(const std::string& file) {
  TensorMap out;
  for (auto& [k, v] :
       maskrcnn::load_state_dict(maskrcnn::testing::fixtures_dir("ops") + "/" + file))
    out.emplace(k, v);
  return out;
}

const TensorMap& nms_fixture() {
  static const TensorMap m = load("nms.pth");
  return m;
}
const TensorMap& batched_fixture() {
  static const TensorMap m = load("batched_nms.pth");
  return m;
}

std::vector<std::string> cases(const TensorMap& m) {
  std::set<std::string> names;
  for (const auto& [k, v] : m) names.insert(k.substr(0, k.find('.')));
  return {names.begin(), names.end()};
}

const at::Tensor& get(const TensorMap& m, const std::string& c, const std::string& field) {
  auto it = m.find(c + "." + field);
  if (it == m.end()) throw std::runtime_error("fixture lacks " + c + "." + field);
  return it->second;
}

std::string to_string(const at::Tensor& keep) {
  std::ostringstream os;
  os << "[";
  auto k = keep.to(at::kLong).contiguous();
  for (int64_t i = 0; i < k.numel(); ++i) os << (i ? "," : "") << k.data_ptr<int64_t>()[i];
  os << "]";
  return os.str();
}

// Identical index lists (dtype int64, same length, same order); "" when they agree.
std::string same_keep(const at::Tensor& actual, const at::Tensor& expected) {
  std::ostringstream os;
  if (actual.scalar_type() != at::kLong) os << "dtype " << actual.scalar_type() << "; ";
  if (actual.dim() != 1) os << "shape " << actual.sizes() << "; ";
  if (actual.numel() != expected.numel() || !actual.to(at::kLong).equal(expected)) {
    os << "kept " << actual.numel() << " vs torchvision " << expected.numel();
    if (expected.numel() <= 60) os << ": " << to_string(actual) << " vs " << to_string(expected);
    else {
      const int64_t n = std::min(actual.numel(), expected.numel());
      auto a = actual.to(at::kLong);
      int64_t first = n;
      for (int64_t i = 0; i < n; ++i)
        if (a[i].item<int64_t>() != expected[i].item<int64_t>()) {
          first = i;
          break;
        }
      os << ", first difference at position " << first;
    }
  }
  return os.str();
}

TEST(NmsParity, MatchesTorchvision) {
  const auto& m = nms_fixture();
  int n = 0, nonempty = 0;
  std::set<std::string> kinds;
  for (const auto& c : cases(m)) {
    const double thr = get(m, c, "params")[0].item<double>();
    auto keep = maskrcnn::ops::nms(get(m, c, "boxes"), get(m, c, "scores"), thr);
    EXPECT_EQ(same_keep(keep, get(m, c, "keep")), "") << c << " iou_threshold " << thr;
    ++n;
    nonempty += get(m, c, "keep").numel() > 0;
    kinds.insert(c.substr(0, c.find('_')));
  }
  EXPECT_EQ(n, 54);
  EXPECT_GT(nonempty, 40);
  EXPECT_EQ(kinds, (std::set<std::string>{"allties", "at", "degenerate", "empty", "identical",
                                          "random", "single", "ties"}));
}

// Suppression is IoU > threshold, stable for ties: spot checks that do not rely on the
// fixture, so a failure here tells which rule broke.
TEST(NmsParity, HandPickedRules) {
  auto boxes = at::tensor({0.f, 0.f, 10.f, 10.f, 0.f, 0.f, 10.f, 5.f, 0.f, 0.f, 10.f, 10.f})
                   .reshape({3, 4});
  // IoU(0,1) = 0.5 exactly: kept at 0.5, suppressed at 0.49
  auto keep = maskrcnn::ops::nms(boxes, at::tensor({0.9f, 0.8f, 0.1f}), 0.5);
  EXPECT_EQ(to_string(keep), "[0,1]");
  keep = maskrcnn::ops::nms(boxes, at::tensor({0.9f, 0.8f, 0.1f}), 0.49);
  EXPECT_EQ(to_string(keep), "[0]");
  // ties: the lower index wins (stable descending sort)
  keep = maskrcnn::ops::nms(boxes, at::tensor({0.5f, 0.5f, 0.5f}), 0.7);
  EXPECT_EQ(to_string(keep), "[0,1]");
  keep = maskrcnn::ops::nms(boxes, at::tensor({0.4f, 0.5f, 0.5f}), 0.7);
  EXPECT_EQ(to_string(keep), "[1,2]");
  // empty and single
  keep = maskrcnn::ops::nms(at::zeros({0, 4}), at::zeros({0}), 0.5);
  EXPECT_EQ(keep.numel(), 0);
  EXPECT_EQ(keep.scalar_type(), at::kLong);
  keep = maskrcnn::ops::nms(boxes.slice(0, 0, 1), at::tensor({0.2f}), 0.5);
  EXPECT_EQ(to_string(keep), "[0]");
  // non-contiguous boxes give the same answer
  auto wide = at::zeros({3, 8});
  wide.slice(1, 0, 8, 2).copy_(boxes);
  keep = maskrcnn::ops::nms(wide.slice(1, 0, 8, 2), at::tensor({0.9f, 0.8f, 0.1f}), 0.5);
  EXPECT_EQ(to_string(keep), "[0,1]");
}

TEST(BatchedNmsParity, MatchesTorchvisionOnBothPaths) {
  const auto& m = batched_fixture();
  int n = 0, trick = 0, vanilla = 0;
  for (const auto& c : cases(m)) {
    const auto& boxes = get(m, c, "boxes");
    const double thr = get(m, c, "params")[0].item<double>();
    auto keep = maskrcnn::ops::batched_nms(boxes, get(m, c, "scores"), get(m, c, "idxs"), thr);
    const bool is_vanilla = boxes.numel() > 4000;  // torchvision's CPU switch
    EXPECT_EQ(same_keep(keep, get(m, c, "keep")), "")
        << c << " (" << boxes.size(0) << " boxes, " << (is_vanilla ? "per-class loop" : "offset trick")
        << ") iou_threshold " << thr;
    ++n;
    (is_vanilla ? vanilla : trick) += 1;
  }
  EXPECT_EQ(n, 66);
  EXPECT_GE(trick, 30);
  EXPECT_GE(vanilla, 20);  // 1001 and 2500 boxes, float32/64, 3 thresholds, 2 score kinds
}

// The per-class result must not depend on the strategy: on the >1000-box cases, running
// classes one by one (trick path, each call small) keeps the same set.
TEST(BatchedNmsParity, PathsKeepTheSameSet) {
  const auto& m = batched_fixture();
  int n = 0;
  for (const auto& c : cases(m)) {
    const auto& boxes = get(m, c, "boxes");
    if (boxes.numel() <= 4000) continue;
    const auto& scores = get(m, c, "scores");
    const auto& idxs = get(m, c, "idxs");
    const double thr = get(m, c, "params")[0].item<double>();
    std::set<int64_t> split;
    auto classes = std::get<0>(at::_unique(idxs, true));
    for (int64_t k = 0; k < classes.size(0); ++k) {
      auto curr = at::where(idxs == classes[k])[0];
      auto kk = maskrcnn::ops::batched_nms(boxes.index_select(0, curr),
                                           scores.index_select(0, curr),
                                           idxs.index_select(0, curr), thr);
      auto kept = curr.index_select(0, kk);
      for (int64_t i = 0; i < kept.numel(); ++i) split.insert(kept[i].item<int64_t>());
    }
    auto ref = get(m, c, "keep");
    std::set<int64_t> expected;
    for (int64_t i = 0; i < ref.numel(); ++i) expected.insert(ref[i].item<int64_t>());
    EXPECT_EQ(split, expected) << c;
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
