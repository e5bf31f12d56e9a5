// Stage-level parity of ops::roi_align (forward and backward) with torchvision.ops.roi_align,
// on the seeded cases of tests/python/make_ops_fixtures.py (roi_align.pth): float32 and
// float64, batch 2, several map shapes, pathological boxes (zero/negative extent,
// outside, partially outside, huge, tiny, last row/column), spatial_scale 1, 1/4, 1/32,
// sampling_ratio 2, 0, -1, 1, aligned false/true, outputs 7x7, 14x14, 3x5.
// Plus a finite-difference gradient check in float64 and thread-count determinism.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/ops.h"
#include "ops/roi_align/roi_align_kernel.h"
#include "support/test_env.h"

namespace {

using TensorMap = std::map<std::string, at::Tensor>;

const TensorMap& fixture() {
  static const TensorMap m = [] {
    TensorMap out;
    for (auto& [k, v] : maskrcnn::load_state_dict(maskrcnn::testing::fixtures_dir("ops") +
                                                  "/roi_align.pth"))
      out.emplace(k, v);
    return out;
  }();
  return m;
}

// Case names ("c000", ...) in the fixture, in order.
std::vector<std::string> cases() {
  std::set<std::string> names;
  for (const auto& [k, v] : fixture()) names.insert(k.substr(0, k.find('.')));
  return {names.begin(), names.end()};
}

const at::Tensor& get(const std::string& c, const std::string& field) {
  auto it = fixture().find(c + "." + field);
  if (it == fixture().end()) throw std::runtime_error("fixture lacks " + c + "." + field);
  return it->second;
}

struct Params {
  double scale;
  int64_t ph, pw, sr;
  bool aligned;
};

Params params_of(const std::string& c) {
  auto p = get(c, "params");
  auto a = p.accessor<double, 1>();
  return {a[0], static_cast<int64_t>(a[1]), static_cast<int64_t>(a[2]),
          static_cast<int64_t>(a[3]), a[4] != 0};
}

std::string describe(const std::string& c, const Params& p, const at::Tensor& input) {
  std::ostringstream os;
  os << c << " [" << input.scalar_type() << " input " << input.sizes() << " scale " << p.scale
     << " out " << p.ph << "x" << p.pw << " sampling_ratio " << p.sr
     << " aligned " << p.aligned << "]";
  return os.str();
}

// |a - b| <= rtol * (|b| + 1) element-wise; returns "" or a description of the worst miss.
std::string compare(const at::Tensor& actual, const at::Tensor& expected, double rtol) {
  if (actual.scalar_type() != expected.scalar_type()) {
    std::ostringstream os;
    os << "dtype " << actual.scalar_type() << " != " << expected.scalar_type();
    return os.str();
  }
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream os;
    os << "shape " << actual.sizes() << " != " << expected.sizes();
    return os.str();
  }
  if (actual.numel() == 0) return "";
  auto a = actual.to(at::kDouble).reshape(-1);
  auto e = expected.to(at::kDouble).reshape(-1);
  auto err = (a - e).abs() / (e.abs() + 1.0);
  auto worst = err.argmax().item<int64_t>();
  const double w = err[worst].item<double>();
  if (w <= rtol) return "";
  std::ostringstream os;
  os << (err > rtol).sum().item<int64_t>() << " of " << a.numel()
     << " elements off; worst at flat index " << worst << ": " << a[worst].item<double>()
     << " vs torchvision " << e[worst].item<double>() << " (scaled error " << w << ")";
  return os.str();
}

double rtol_for(const at::Tensor& t) { return t.scalar_type() == at::kFloat ? 1e-5 : 1e-12; }

at::Tensor run(const at::Tensor& input, const at::Tensor& rois, const Params& p) {
  return maskrcnn::ops::roi_align(input, rois, p.scale, p.ph, p.pw, p.sr, p.aligned);
}

TEST(RoiAlignParity, FixtureCoversTheGrid) {
  auto all = cases();
  ASSERT_EQ(all.size(), 144u);  // 2 dtypes x 3 scales x 4 ratios x 2 aligned x 3 sizes
  std::set<double> scales;
  std::set<int64_t> ratios, heights;
  std::set<bool> aligned;
  std::set<at::ScalarType> dtypes;
  for (const auto& c : all) {
    auto p = params_of(c);
    scales.insert(p.scale);
    ratios.insert(p.sr);
    heights.insert(p.ph);
    aligned.insert(p.aligned);
    dtypes.insert(get(c, "input").scalar_type());
    EXPECT_EQ(get(c, "input").size(0), 2);
  }
  EXPECT_EQ(scales.size(), 3u);
  EXPECT_EQ(ratios, (std::set<int64_t>{-1, 0, 1, 2}));
  EXPECT_EQ(heights, (std::set<int64_t>{3, 7, 14}));
  EXPECT_EQ(aligned.size(), 2u);
  EXPECT_EQ(dtypes, (std::set<at::ScalarType>{at::kFloat, at::kDouble}));
}

TEST(RoiAlignParity, ForwardMatchesTorchvision) {
  at::NoGradGuard no_grad;
  int checked = 0;
  int64_t exact = 0, total = 0;
  for (const auto& c : cases()) {
    const auto p = params_of(c);
    const auto& input = get(c, "input");
    auto out = run(input, get(c, "rois"), p);
    const auto& ref = get(c, "out");
    auto msg = compare(out, ref, rtol_for(input));
    EXPECT_EQ(msg, "") << describe(c, p, input);
    if (msg.empty()) {
      exact += out.eq(ref).sum().item<int64_t>();
      total += out.numel();
    }
    ++checked;
  }
  EXPECT_EQ(checked, 144);
  std::cout << "[roi_align forward] " << exact << " of " << total
            << " elements bit-identical to torchvision\n";
}

// Inference pools from channels-last maps (a kernel vectorised over channels):
// it must match torchvision as the NCHW kernel does, on every case.
TEST(RoiAlignParity, ChannelsLastForwardMatchesTorchvision) {
  at::NoGradGuard no_grad;
  int vectorised = 0;
  for (const auto& c : cases()) {
    const auto p = params_of(c);
    const auto& input = get(c, "input");
    auto nhwc = input.contiguous(at::MemoryFormat::ChannelsLast);
    if (!nhwc.is_contiguous()) ++vectorised;  // a layout of its own: the channels-last kernel runs
    auto out = run(nhwc, get(c, "rois"), p);
    EXPECT_TRUE(out.is_contiguous());
    EXPECT_EQ(compare(out, get(c, "out"), rtol_for(input)), "") << describe(c, p, input);
    // Same sample order and sums per channel as the NCHW kernel.
    EXPECT_EQ(compare(out, run(input, get(c, "rois"), p), rtol_for(input) / 10), "") << describe(c, p, input);
  }
  EXPECT_EQ(vectorised, 108);  // one map in four has C = 1, where both layouts are the same
}

TEST(RoiAlignParity, BackwardMatchesTorchvision) {
  int64_t exact = 0, total = 0;
  for (const auto& c : cases()) {
    const auto p = params_of(c);
    auto input = get(c, "input").clone().requires_grad_(true);
    auto out = run(input, get(c, "rois"), p);
    ASSERT_TRUE(out.requires_grad()) << describe(c, p, input);
    (out * get(c, "weights")).sum().backward();
    ASSERT_TRUE(input.grad().defined()) << describe(c, p, input);
    const auto& ref = get(c, "grad");
    auto msg = compare(input.grad(), ref, rtol_for(ref));
    EXPECT_EQ(msg, "") << describe(c, p, input);
    if (msg.empty()) {
      exact += input.grad().eq(ref).sum().item<int64_t>();
      total += ref.numel();
    }
  }
  std::cout << "[roi_align backward] " << exact << " of " << total
            << " gradient elements bit-identical to torchvision\n";
}

// torchvision raises (std::length_error sizing its sample buffer) for an aligned RoI of
// negative extent whose adaptive grid gets one negative dimension; we do the same.
TEST(RoiAlignParity, RaisesWhereTorchvisionRaises) {
  at::NoGradGuard no_grad;
  int n = 0;
  for (const auto& c : cases()) {
    auto it = fixture().find(c + ".bad_rois");
    if (it == fixture().end()) continue;
    const auto p = params_of(c);
    ASSERT_TRUE(p.aligned && p.sr <= 0) << describe(c, p, get(c, "input"));
    for (int64_t r = 0; r < it->second.size(0); ++r, ++n)
      EXPECT_ANY_THROW(run(get(c, "input"), it->second.slice(0, r, r + 1), p))
          << describe(c, p, get(c, "input")) << " roi " << it->second[r];
  }
  EXPECT_GT(n, 0);
}

// The CPU kernels are parallel (forward over RoIs, backward over channels); the result
// must not depend on the thread count.
TEST(RoiAlignParity, ThreadCountDoesNotChangeResults) {
  const int saved = at::get_num_threads();
  for (const char* c : {"c000", "c013", "c050", "c101", "c143"}) {
    const auto p = params_of(c);
    std::vector<at::Tensor> outs, grads;
    for (int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      auto input = get(c, "input").clone().requires_grad_(true);
      auto out = run(input, get(c, "rois"), p);
      (out * get(c, "weights")).sum().backward();
      outs.push_back(out.detach());
      grads.push_back(input.grad());
    }
    for (size_t i = 1; i < outs.size(); ++i) {
      EXPECT_TRUE(outs[i].equal(outs[0])) << c;
      EXPECT_TRUE(grads[i].equal(grads[0])) << c;
    }
  }
  at::set_num_threads(saved);
}

// Upstream gradients that are not contiguous (expanded by sum(), transposed) give the
// same input gradient as their contiguous copies.
TEST(RoiAlignParity, NonContiguousUpstreamGradient) {
  const std::string c = "c001";
  const auto p = params_of(c);
  auto a = get(c, "input").clone().requires_grad_(true);
  run(a, get(c, "rois"), p).sum().backward();  // grad of sum() is an expanded (stride-0) ones
  auto b = get(c, "input").clone().requires_grad_(true);
  auto out = run(b, get(c, "rois"), p);
  out.backward(at::ones_like(out));
  EXPECT_TRUE(a.grad().allclose(b.grad(), 1e-6, 1e-6));

  auto d = get(c, "input").clone().requires_grad_(true);
  auto out_d = run(d, get(c, "rois"), p);
  auto w = get(c, "weights");
  auto gt = w.transpose(2, 3).contiguous().transpose(2, 3);  // same values, other strides
  ASSERT_FALSE(gt.is_contiguous());
  out_d.backward(gt);
  EXPECT_EQ(compare(d.grad(), get(c, "grad"), rtol_for(w)), "");
}

TEST(RoiAlignParity, EmptyRois) {
  auto input = at::randn({2, 3, 8, 9});
  auto out = maskrcnn::ops::roi_align(input, at::zeros({0, 5}), 1.0, 7, 7, 2, false);
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{0, 3, 7, 7}));
  auto x = input.clone().requires_grad_(true);
  auto y = maskrcnn::ops::roi_align(x, at::zeros({0, 5}), 1.0, 7, 7, 2, true);
  y.sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().abs().sum().item<double>(), 0.0);
}

// Finite differences in float64. RoIAlign is linear in its input, so central
// differences are exact up to rounding: the analytic gradient must match to ~1e-9.
TEST(RoiAlignGradcheck, FiniteDifferencesFloat64) {
  auto opts = at::TensorOptions().dtype(at::kDouble);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12345);
  auto x0 = at::randn({2, 2, 6, 7}, gen, opts);
  // batch, x1, y1, x2, y2: inside, partially outside, degenerate, negative, sub-pixel
  auto rois = at::tensor({0.0, 0.5, 0.7, 4.2, 5.1,    //
                          1.0, -1.5, 2.0, 3.3, 8.0,   //
                          0.0, 3.0, 3.0, 3.0, 3.0,    //
                          1.0, 5.5, 4.5, 2.0, 1.0,    //
                          1.0, 2.25, 1.75, 2.5, 2.0,  //
                          0.0, 5.2, 0.1, 7.4, 6.3},
                         opts)
                  .reshape({6, 5});
  struct Cfg {
    double scale;
    int64_t ph, pw, sr;
    bool aligned;
  };
  for (const Cfg& cfg : {Cfg{1.0, 2, 3, 2, false}, Cfg{1.0, 2, 3, 2, true},
                         Cfg{1.0, 3, 2, 0, false}, Cfg{0.5, 2, 2, 1, true},
                         Cfg{1.0, 3, 3, -1, true}}) {
    SCOPED_TRACE(::testing::Message() << "scale " << cfg.scale << " out " << cfg.ph << "x"
                                      << cfg.pw << " sr " << cfg.sr << " aligned "
                                      << cfg.aligned);
    auto w = at::randn({rois.size(0), 2, cfg.ph, cfg.pw}, gen, opts);
    auto f = [&](const at::Tensor& x) {
      return (maskrcnn::ops::roi_align(x, rois, cfg.scale, cfg.ph, cfg.pw, cfg.sr, cfg.aligned) *
              w)
          .sum()
          .item<double>();
    };
    auto x = x0.clone().requires_grad_(true);
    (maskrcnn::ops::roi_align(x, rois, cfg.scale, cfg.ph, cfg.pw, cfg.sr, cfg.aligned) * w)
        .sum()
        .backward();
    auto analytic = x.grad().reshape(-1);
    at::NoGradGuard no_grad;
    const double eps = 1e-6;
    auto flat = x0.clone();
    auto fa = flat.view(-1);
    double worst = 0;
    for (int64_t i = 0; i < fa.numel(); ++i) {
      const double v = fa[i].item<double>();
      fa[i] = v + eps;
      const double up = f(flat);
      fa[i] = v - eps;
      const double down = f(flat);
      fa[i] = v;
      const double numeric = (up - down) / (2 * eps);
      const double a = analytic[i].item<double>();
      worst = std::max(worst, std::abs(numeric - a));
      EXPECT_NEAR(a, numeric, 1e-7 * (1 + std::abs(numeric))) << "input element " << i;
    }
    EXPECT_GT(analytic.abs().sum().item<double>(), 0.0);
  }
}



// MultiScaleRoIAlign's one-pass CPU forward (each RoI from its own level,
// pooled in an order of its own for locality, written to its own row)
// against ops::roi_align level by level, which the parity tests above hold to
// torchvision: the same arithmetic, so equal to float rounding.
TEST(RoiAlignLevels, EachRoiPooledFromItsLevelAsRoiAlignDoes) {
  at::manual_seed(21);
  std::vector<at::Tensor> maps;
  std::vector<double> scales;
  for (int64_t l = 0; l < 4; ++l) {
    auto f = at::randn({2, 32, 64 >> l, 48 >> l});
    maps.push_back(l % 2 ? f : f.contiguous(at::MemoryFormat::ChannelsLast));  // either layout in
    scales.push_back(1.0 / (4 << l));
  }
  const int64_t k = 300;
  auto xy = at::rand({k, 2}) * 200 - 10;  // some partly outside the image
  auto wh = at::rand({k, 2}) * 120;
  auto rois = at::cat({at::randint(0, 2, {k, 1}).to(at::kFloat), xy, xy + wh}, 1);
  rois.index_put_({0, at::indexing::Slice(1, 5)}, at::tensor({5.f, 5.f, 5.f, 5.f}));  // zero extent
  // Far outside the map both ways: the pooling order's tile key must not overflow.
  rois.index_put_({1, at::indexing::Slice(1, 5)}, at::tensor({-3e9f, -3e9f, -1e9f, -1e9f}));
  rois.index_put_({2, at::indexing::Slice(1, 5)}, at::tensor({1e9f, 1e9f, 3e9f, 3e9f}));
  auto levels = at::randint(0, 4, {k}, at::kLong);
  auto out = maskrcnn::ops::detail::roi_align_levels_forward_cpu(maps, rois, levels, scales, 7, 7, 2, false);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{k, 32, 7, 7}));
  for (int64_t l = 0; l < 4; ++l) {
    auto idx = at::where(levels == l)[0];
    auto ref = maskrcnn::ops::roi_align(maps[l].contiguous(), rois.index_select(0, idx), scales[l], 7, 7, 2, false);
    EXPECT_LT((out.index_select(0, idx) - ref).abs().max().item<double>(), 1e-5) << "level " << l;
  }
  auto none = maskrcnn::ops::detail::roi_align_levels_forward_cpu(maps, rois.slice(0, 0, 0), levels.slice(0, 0, 0),
                                                                  scales, 7, 7, 2, false);
  EXPECT_EQ(none.size(0), 0);
  EXPECT_THROW(maskrcnn::ops::detail::roi_align_levels_forward_cpu(maps, rois, levels + 4, scales, 7, 7, 2, false),
               c10::Error);
}

// Blocked levels (oneDNN's nChw16c as 5-D [N, C/16, H, W, 16], what the FPN's
// convolutions write) pooled block by block: the same taps and sums as from
// the channels-last maps, with either sampling grid and alignment, and mixed
// with channels-last levels.
TEST(RoiAlignLevels, BlockedMapsPoolAsChannelsLastOnes) {
  at::manual_seed(22);
  std::vector<at::Tensor> last, blocked, mixed;
  std::vector<double> scales;
  for (int64_t l = 0; l < 4; ++l) {
    auto f = at::randn({2, 48, 64 >> l, 40 >> l});
    last.push_back(f.contiguous(at::MemoryFormat::ChannelsLast));
    blocked.push_back(f.view({2, 3, 16, 64 >> l, 40 >> l}).permute({0, 1, 3, 4, 2}).contiguous());
    mixed.push_back(l % 2 ? blocked.back() : last.back());
    scales.push_back(1.0 / (4 << l));
  }
  const int64_t k = 200;
  auto xy = at::rand({k, 2}) * 180 - 10;  // some partly outside the image
  auto wh = at::rand({k, 2}) * 100;
  auto rois = at::cat({at::randint(0, 2, {k, 1}).to(at::kFloat), xy, xy + wh}, 1);
  auto levels = at::randint(0, 4, {k}, at::kLong);
  for (int64_t sampling : {2, 0})
    for (bool aligned : {false, true}) {
      using maskrcnn::ops::detail::roi_align_levels_forward_cpu;
      auto ref = roi_align_levels_forward_cpu(last, rois, levels, scales, 7, 7, sampling, aligned);
      auto out = roi_align_levels_forward_cpu(blocked, rois, levels, scales, 7, 7, sampling, aligned);
      auto out_mixed = roi_align_levels_forward_cpu(mixed, rois, levels, scales, 14, 14, sampling, aligned);
      auto ref14 = roi_align_levels_forward_cpu(last, rois, levels, scales, 14, 14, sampling, aligned);
      ASSERT_EQ(out.sizes(), ref.sizes());
      EXPECT_GT(ref.abs().sum().item<double>(), 0);
      EXPECT_LT((out - ref).abs().max().item<double>(), 1e-6) << "sampling " << sampling << " aligned " << aligned;
      EXPECT_LT((out_mixed - ref14).abs().max().item<double>(), 1e-6) << "sampling " << sampling;
    }
  // A 5-D map whose last dimension is not 16 is no blocked map.
  std::vector<at::Tensor> bad{at::zeros({2, 6, 16, 10, 8}), last[1], last[2], last[3]};
  EXPECT_THROW(maskrcnn::ops::detail::roi_align_levels_forward_cpu(bad, rois, levels, scales, 7, 7, 2, false),
               c10::Error);
}

}  // namespace
