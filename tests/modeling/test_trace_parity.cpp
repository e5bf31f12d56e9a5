// MaskRCNN::predict_traced (maskrcnn/trace.h) against the real torchvision
// (fixture "trace", tests/python/make_trace_fixtures.py: a seeded random
// maskrcnn_resnet50_fpn with 11 classes, one photo at min_size 320, and
// torchvision's intermediates captured with forward hooks or re-derived with
// its own functions). Every stage the trace records is compared with
// torchvision's, with the tolerances of test_parity.cpp; then the trace is
// checked against itself and against predict: the same detections, the masks
// predict pastes, the source proposals and scores, monotone counts.
//
// Boxes in the trace are in the resized image's pixels; Detections (and the
// reference's boxes/scores/labels) are in the original image's.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "maskrcnn/maskrcnn.h"
#include "maskrcnn/trace.h"
#include "modeling/generalized_rcnn.h"
#include "support/test_env.h"

using maskrcnn::testing::fixtures_dir;

namespace {

struct Traced {
  nlohmann::json manifest;
  std::map<std::string, at::Tensor> refs;
  at::Tensor rgb;  // uint8 [3, H, W]
  std::optional<maskrcnn::MaskRCNN> model;
  maskrcnn::ForwardTrace trace;
  maskrcnn::Detections dets;  // what predict_traced returned

  const at::Tensor& ref(const std::string& key) const {
    auto it = refs.find(key);
    if (it == refs.end()) throw std::runtime_error("trace fixture's ref.pt has no '" + key + "'");
    return it->second;
  }
  int64_t ref_int(const std::string& key, int64_t i) const { return ref(key)[i].item<int64_t>(); }
};

// The model, the image and one traced pass, loaded once per process (ctest
// runs each test in its own process; a direct run shares them).
const Traced& traced() {
  static std::unique_ptr<Traced> cached;
  if (cached) return *cached;
  at::set_num_threads(2);
  auto t = std::make_unique<Traced>();
  const std::string dir = fixtures_dir("trace");
  std::ifstream f(dir + "/manifest.json");
  if (!f) throw std::runtime_error("trace fixture missing: " + dir + "/manifest.json");
  t->manifest = nlohmann::json::parse(f);
  for (auto& kv : maskrcnn::load_state_dict(dir + "/" + t->manifest["ref"].get<std::string>()))
    t->refs[kv.first] = kv.second;
  maskrcnn::ModelOverrides o;
  o.min_size = t->manifest["min_size"].get<int>();
  o.max_size = t->manifest["max_size"].get<int>();
  o.box_score_thresh = t->manifest["box_score_thresh"].get<double>();
  t->model.emplace(maskrcnn::load_model(dir + "/" + t->manifest["weights"].get<std::string>(), o));
  t->rgb = maskrcnn::read_image(dir + "/" + t->manifest["image"].get<std::string>());
  t->dets = t->model->predict_traced(t->rgb, t->trace);
  cached = std::move(t);
  return *cached;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0) return 0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// As test_parity.cpp: max |a - b| over max |b|.
double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const double denom = b.abs().max().item<double>();
  return max_abs_diff(a, b) / std::max(denom, 1e-12);
}

// Rows [min(n_a, n_b)] of two box lists equal in order: every coordinate
// within `rel` of |b| (at least 1 px), as test_parity.cpp compares proposals.
at::Tensor boxes_close_in_order(const at::Tensor& a, const at::Tensor& b, double rel = 1e-3) {
  const int64_t n = std::min(a.size(0), b.size(0));
  auto as = a.slice(0, 0, n), bs = b.slice(0, 0, n);
  return (as - bs).abs().le(bs.abs().clamp_min(1.0) * rel).all(1);
}

bool box_close(const at::Tensor& a, const at::Tensor& b, double rel = 1e-3) {
  return (a - b).abs().le(b.abs().clamp_min(1.0) * rel).all().item<bool>();
}

double fraction(const at::Tensor& mask) {
  return mask.numel() == 0 ? 0.0 : mask.to(at::kDouble).mean().item<double>();
}

// The fraction of torchvision's boxes that one of ours equals, in any place:
// near-tied scores may swap or shift a few places on another CPU's rounding
// (test_parity.cpp checks proposals the same way).
double fraction_found(const at::Tensor& ours, const at::Tensor& ref, double rel = 1e-3) {
  if (ref.size(0) == 0) return 1.0;
  double found = 0;
  for (int64_t start = 0; start < ref.size(0); start += 1024) {  // [ours, 1024, 4] at a time
    auto r = ref.slice(0, start, start + 1024);
    auto close = (ours.unsqueeze(1) - r.unsqueeze(0)).abs().le(r.unsqueeze(0).abs().clamp_min(1.0) * rel).all(2);
    found += close.any(0).to(at::kDouble).sum().item<double>();
  }
  return found / static_cast<double>(ref.size(0));
}

// torchvision's detections matched to ours as test_parity.cpp matches them
// (same label, box within 1e-3 relative, score within 1e-4, each used once),
// without the masks: pairs (torchvision's index, ours).
std::vector<std::pair<int64_t, int64_t>> match_detections(const Traced& t) {
  const auto& rb = t.ref("boxes");
  const auto& rs = t.ref("scores");
  const auto& rl = t.ref("labels");
  const auto& d = t.dets;
  std::vector<bool> used(d.size(), false);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t j = 0; j < rb.size(0); ++j) {
    int64_t best = -1;
    double best_sd = 1e9;
    for (int64_t k = 0; k < d.size(); ++k) {
      if (used[k] || d.labels[k].item<int64_t>() != rl[j].item<int64_t>()) continue;
      const double sd = std::abs(d.scores[k].item<double>() - rs[j].item<double>());
      if (sd <= 1e-4 && box_close(d.boxes[k], rb[j]) && sd < best_sd) best = k, best_sd = sd;
    }
    if (best < 0) continue;
    used[best] = true;
    out.emplace_back(j, best);
  }
  return out;
}

const char* kLevelNames[] = {"P2", "P3", "P4", "P5", "P6"};

}  // namespace

TEST(TraceParity, TransformMatchesTorchvision) {
  const auto& t = traced();
  const auto& tr = t.trace;
  EXPECT_EQ(tr.original_height, t.rgb.size(1));
  EXPECT_EQ(tr.original_width, t.rgb.size(2));
  EXPECT_EQ(tr.original_height, t.ref_int("image_size", 0));
  EXPECT_EQ(tr.original_width, t.ref_int("image_size", 1));
  EXPECT_EQ(tr.resized_height, t.ref_int("resized_size", 0));
  EXPECT_EQ(tr.resized_width, t.ref_int("resized_size", 1));
  EXPECT_EQ(std::min(tr.resized_height, tr.resized_width), t.manifest.at("min_size").get<int64_t>());
  EXPECT_NEAR(tr.scale, static_cast<double>(tr.resized_height) / tr.original_height, 1e-12);
  const std::vector<double> mean{0.485, 0.456, 0.406}, stdev{0.229, 0.224, 0.225};
  ASSERT_EQ(tr.image_mean.size(), 3u);
  ASSERT_EQ(tr.image_std.size(), 3u);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(tr.image_mean[c], mean[c], 1e-6);
    EXPECT_NEAR(tr.image_std[c], stdev[c], 1e-6);
  }
  const auto& rb = t.ref("batch");
  ASSERT_TRUE(tr.batch.defined());
  ASSERT_EQ(tr.batch.sizes(), rb.sizes());
  EXPECT_EQ(tr.batch.size(1) % 32, 0);
  EXPECT_EQ(tr.batch.size(2) % 32, 0);
  const double d = max_abs_diff(tr.batch, rb);
  std::printf("[trace] batch %ldx%ld: max |diff| %.2e\n", (long)rb.size(1), (long)rb.size(2), d);
  EXPECT_LT(d, 1e-4);
}

TEST(TraceParity, BackboneBodyAndFpnMatchTorchvision) {
  const auto& t = traced();
  const auto& tr = t.trace;
  ASSERT_EQ(tr.body.size(), 4u);
  const int64_t body_channels[] = {256, 512, 1024, 2048};
  for (int l = 0; l < 4; ++l) {
    const auto& m = tr.body[l];
    const std::string name = "C" + std::to_string(l + 2);
    SCOPED_TRACE(name);
    EXPECT_EQ(m.name, name);
    EXPECT_EQ(m.stride, int64_t{4} << l);
    const auto& r = t.ref("body_" + name);  // the first channels only (fixture size)
    ASSERT_EQ(m.map.dim(), 3);
    EXPECT_EQ(m.map.size(0), body_channels[l]);
    ASSERT_GE(m.map.size(0), r.size(0));
    ASSERT_EQ(m.map.size(1), r.size(1));
    ASSERT_EQ(m.map.size(2), r.size(2));
    const double d = max_rel_diff(m.map.slice(0, 0, r.size(0)), r);
    std::printf("[trace] body %s: max rel diff %.2e\n", name.c_str(), d);
    EXPECT_LT(d, 1e-4);
  }
  ASSERT_EQ(tr.fpn.size(), 5u);
  for (int l = 0; l < 5; ++l) {
    const auto& m = tr.fpn[l];
    SCOPED_TRACE(kLevelNames[l]);
    EXPECT_EQ(m.name, kLevelNames[l]);
    EXPECT_EQ(m.stride, int64_t{4} << l);
    const auto& r = t.ref(std::string("fpn_") + kLevelNames[l]);
    ASSERT_EQ(m.map.sizes(), r.sizes());
    EXPECT_EQ(m.map.size(1) * m.stride, tr.batch.size(1));
    const double d = max_rel_diff(m.map, r);
    std::printf("[trace] fpn %s: max rel diff %.2e\n", kLevelNames[l], d);
    EXPECT_LT(d, 1e-4);
  }
}

TEST(TraceParity, RpnObjectnessAndAnchorsMatchTorchvision) {
  const auto& t = traced();
  const auto& tr = t.trace;
  ASSERT_EQ(tr.rpn.objectness.size(), 5u);
  ASSERT_EQ(tr.anchors.size(), 5u);
  int64_t total = 0;
  for (int l = 0; l < 5; ++l) {
    SCOPED_TRACE(kLevelNames[l]);
    const auto& ob = tr.rpn.objectness[l];
    const auto& r = t.ref(std::string("objectness_") + kLevelNames[l]);
    ASSERT_EQ(ob.sizes(), r.sizes());  // [A, H, W]
    const double d = max_rel_diff(ob, r);
    std::printf("[trace] objectness %s: max rel diff %.2e, max |diff| %.2e\n", kLevelNames[l], d,
                max_abs_diff(ob, r));
    EXPECT_LT(d, 1e-4);

    const auto& a = tr.anchors[l];
    EXPECT_EQ(a.feature, kLevelNames[l]);
    EXPECT_EQ(a.stride, int64_t{4} << l);
    EXPECT_EQ(a.height, ob.size(1));
    EXPECT_EQ(a.width, ob.size(2));
    EXPECT_EQ(a.height, tr.fpn.at(l).map.size(1));
    EXPECT_EQ(a.width, tr.fpn.at(l).map.size(2));
    EXPECT_EQ(a.sizes, (std::vector<double>{32.0 * (1 << l)}));  // torchvision's 32..512
    EXPECT_EQ(a.aspect_ratios, (std::vector<double>{0.5, 1.0, 2.0}));
    const auto& rc = t.ref(std::string("cell_anchors_") + kLevelNames[l]);
    ASSERT_EQ(a.cell_anchors.sizes(), rc.sizes());
    EXPECT_LT(max_abs_diff(a.cell_anchors, rc), 1e-5);
    EXPECT_EQ(a.count(), ob.numel());
    total += a.count();
  }
  int64_t anchors_per_level_sum = 0;
  for (int l = 0; l < 5; ++l) anchors_per_level_sum += t.ref(std::string("objectness_") + kLevelNames[l]).numel();
  EXPECT_EQ(total, anchors_per_level_sum);
}

TEST(TraceParity, RpnCandidatesAndProposalsMatchTorchvision) {
  const auto& t = traced();
  const auto& rpn = t.trace.rpn;
  // Per-level top-n and their sum.
  const auto& rtop = t.ref("rpn_pre_nms_top_n");
  ASSERT_EQ(static_cast<int64_t>(rpn.pre_nms_top_n.size()), rtop.size(0));
  for (int64_t l = 0; l < rtop.size(0); ++l) EXPECT_EQ(rpn.pre_nms_top_n[l], rtop[l].item<int64_t>()) << l;
  EXPECT_EQ(rpn.after_top_n, t.ref_int("rpn_counts", 0));

  // NMS's input: clipped, not small, above the score threshold.
  const auto& rb = t.ref("pre_nms_boxes");
  const auto& rs = t.ref("pre_nms_scores");
  const auto& rl = t.ref("pre_nms_levels");
  const int64_t m_ref = t.ref_int("rpn_counts", 1);
  ASSERT_EQ(rb.size(0), m_ref);
  ASSERT_TRUE(rpn.pre_nms_boxes.defined() && rpn.pre_nms_scores.defined() && rpn.pre_nms_levels.defined());
  const int64_t m = rpn.pre_nms_boxes.size(0);
  ASSERT_EQ(rpn.pre_nms_boxes.dim(), 2);
  ASSERT_EQ(rpn.pre_nms_boxes.size(1), 4);
  ASSERT_EQ(rpn.pre_nms_scores.size(0), m);
  ASSERT_EQ(rpn.pre_nms_levels.size(0), m);
  EXPECT_EQ(rpn.pre_nms_levels.scalar_type(), at::kLong);
  EXPECT_NEAR(static_cast<double>(m), static_cast<double>(m_ref), 0.001 * m_ref + 0.5);
  // Per level, the same number of candidates.
  auto lv = at::bincount(rpn.pre_nms_levels, {}, 5), rlv = at::bincount(rl, {}, 5);
  ASSERT_EQ(lv.size(0), 5);
  for (int l = 0; l < 5; ++l)
    EXPECT_NEAR(lv[l].item<double>(), rlv[l].item<double>(), 0.002 * rlv[l].item<double>() + 0.5) << kLevelNames[l];
  // In order (per-level top-k, then level after level): near-ties may swap.
  auto close = boxes_close_in_order(rpn.pre_nms_boxes, rb);
  const double frac = close.to(at::kDouble).sum().item<double>() / std::max<int64_t>(m_ref, 1);
  const int64_t n = close.size(0);
  auto idx = close.nonzero().flatten();
  const double score_diff = max_abs_diff(rpn.pre_nms_scores.slice(0, 0, n).index_select(0, idx),
                                         rs.slice(0, 0, n).index_select(0, idx));
  const double found = fraction_found(rpn.pre_nms_boxes, rb);
  std::printf("[trace] RPN candidates: %ld (torchvision %ld), %.4f equal in order, %.4f found, "
              "max |score diff| %.2e\n", (long)m, (long)m_ref, frac, found, score_diff);
  EXPECT_GE(found, 0.99);
  EXPECT_GE(frac, 0.97);
  EXPECT_LT(score_diff, 1e-4);
  EXPECT_TRUE(at::equal(rpn.pre_nms_levels.slice(0, 0, n).index_select(0, idx), rl.slice(0, 0, n).index_select(0, idx)))
      << "candidates with equal boxes come from different levels";
  // The scores as a set, whatever the order.
  const int64_t ns = std::min(m, m_ref);
  auto ours_sorted = std::get<0>(rpn.pre_nms_scores.sort(0, true)).slice(0, 0, ns);
  auto ref_sorted = std::get<0>(rs.sort(0, true)).slice(0, 0, ns);
  EXPECT_LT(max_abs_diff(ours_sorted, ref_sorted), 1e-4);

  // NMS and the post-NMS top-n.
  const int64_t after_nms_ref = t.ref_int("rpn_counts", 2);
  EXPECT_NEAR(static_cast<double>(rpn.after_nms), static_cast<double>(after_nms_ref), 0.01 * after_nms_ref + 0.5);
  const auto& rp = t.ref("proposals");
  const auto& rps = t.ref("proposal_scores");
  ASSERT_TRUE(rpn.proposals.defined() && rpn.proposal_scores.defined());
  ASSERT_NEAR(rpn.proposals.size(0), rp.size(0), 0.01 * rp.size(0) + 0.5);
  auto pclose = boxes_close_in_order(rpn.proposals, rp);
  const double pfrac = fraction(pclose);
  auto pidx = pclose.nonzero().flatten();
  const int64_t np = pclose.size(0);
  const double pscore = max_abs_diff(rpn.proposal_scores.slice(0, 0, np).index_select(0, pidx),
                                     rps.slice(0, 0, np).index_select(0, pidx));
  const double pfound = fraction_found(rpn.proposals, rp);
  std::printf("[trace] RPN after NMS %ld (torchvision %ld); %ld proposals, %.4f equal in order, %.4f found, "
              "max |score diff| %.2e\n", (long)rpn.after_nms, (long)after_nms_ref, (long)rp.size(0), pfrac, pfound,
              pscore);
  EXPECT_GE(pfound, 0.99);
  EXPECT_GE(pfrac, 0.97);
  EXPECT_LT(pscore, 1e-4);
}

TEST(TraceParity, BoxHeadMatchesTorchvision) {
  const auto& t = traced();
  const auto& box = t.trace.box;
  const auto& proposals = t.trace.rpn.proposals;
  const int64_t r = proposals.size(0);
  const int64_t c = t.model->config().num_classes;
  EXPECT_EQ(c, t.manifest.at("num_classes").get<int64_t>());
  ASSERT_EQ(box.class_probs.sizes(), (std::vector<int64_t>{r, c}));
  ASSERT_EQ(box.refined_boxes.sizes(), (std::vector<int64_t>{r, c, 4}));
  EXPECT_DOUBLE_EQ(box.score_thresh, t.manifest.at("box_score_thresh").get<double>());
  EXPECT_DOUBLE_EQ(box.nms_thresh, t.manifest.at("box_nms_thresh").get<double>());

  // Per proposal, where the proposals agree in order.
  const auto& rp = t.ref("proposals");
  const auto& rprobs = t.ref("class_probs");
  const auto& rrefined = t.ref("refined_boxes");
  auto close = boxes_close_in_order(proposals, rp);
  auto rows = close.nonzero().flatten();
  ASSERT_GT(rows.size(0), 0);
  auto prob_diff = std::get<0>((box.class_probs.index_select(0, rows) - rprobs.index_select(0, rows)).abs().max(1));
  const double prob_frac = fraction(prob_diff.le(1e-4));
  auto ours_refined = box.refined_boxes.index_select(0, rows).reshape({-1, 4});
  auto ref_refined = rrefined.index_select(0, rows).reshape({-1, 4});
  const double refined_frac = fraction(boxes_close_in_order(ours_refined, ref_refined));
  std::printf("[trace] box head on %ld matching proposals: class probs max |diff| %.2e (%.4f within 1e-4), "
              "refined boxes %.4f equal\n", (long)rows.size(0), prob_diff.max().item<double>(), prob_frac,
              refined_frac);
  EXPECT_GE(prob_frac, 0.99);
  EXPECT_GE(refined_frac, 0.99);

  // The postprocessing's counts.
  const auto& rc = t.ref("box_counts");
  const int64_t ours[] = {box.candidates, box.above_score, box.not_small, box.after_nms, box.kept};
  const char* names[] = {"candidates", "above_score", "not_small", "after_nms", "kept"};
  for (int i = 0; i < 5; ++i) {
    const double theirs = rc[i].item<double>();
    std::printf("[trace] box %s: %ld (torchvision %.0f)\n", names[i], (long)ours[i], theirs);
    EXPECT_NEAR(static_cast<double>(ours[i]), theirs, 0.01 * theirs + 0.5) << names[i];
  }

  // Per detection: its source proposal and pooled features.
  auto matched = match_detections(t);
  ASSERT_FALSE(matched.empty());
  const auto& rsrc = t.ref("source_proposal");
  const auto& rpooled = t.ref("box_pooled");  // the first K torchvision detections
  ASSERT_EQ(box.source_proposal.size(0), t.dets.size());
  ASSERT_EQ(box.box_pooled.dim(), 4);
  ASSERT_EQ(box.box_pooled.size(0), t.dets.size());
  ASSERT_EQ(box.box_pooled.sizes().slice(1), rpooled.sizes().slice(1));
  int64_t same_source = 0, pooled_compared = 0, pooled_ok = 0;
  double worst_pooled = 0;
  for (auto [j, k] : matched) {
    const int64_t ours_src = box.source_proposal[k].item<int64_t>();
    const int64_t ref_src = rsrc[j].item<int64_t>();
    ASSERT_LT(ours_src, r);
    if (!box_close(proposals[ours_src], rp[ref_src])) continue;
    ++same_source;
    if (j >= rpooled.size(0)) continue;
    ++pooled_compared;
    const double d = max_rel_diff(box.box_pooled[k], rpooled[j]);
    worst_pooled = std::max(worst_pooled, d);
    pooled_ok += d < 1e-3;
  }
  std::printf("[trace] %zu detections matched, %ld from the same proposal; box_pooled of %ld: "
              "max rel diff %.2e\n", matched.size(), (long)same_source, (long)pooled_compared, worst_pooled);
  EXPECT_GE(same_source, static_cast<int64_t>(std::ceil(0.98 * matched.size())));
  EXPECT_GE(pooled_compared, rpooled.size(0) / 2);
  EXPECT_GE(pooled_ok, static_cast<int64_t>(std::ceil(0.9 * pooled_compared)));
}

TEST(TraceParity, MaskHeadAndDetectionsMatchTorchvision) {
  const auto& t = traced();
  const auto& mask = t.trace.mask;
  const int64_t n = t.dets.size();
  const int64_t c = t.model->config().num_classes;
  const int64_t n_ref = t.ref("boxes").size(0);
  ASSERT_GT(n_ref, 0) << "reference has no detections: the fixture is not informative";
  auto matched = match_detections(t);
  std::printf("[trace] detections: %zu/%ld matched (ours %ld)\n", matched.size(), (long)n_ref, (long)n);
  EXPECT_GE(static_cast<int64_t>(matched.size()), static_cast<int64_t>(std::ceil(0.99 * n_ref)));
  EXPECT_NEAR(static_cast<double>(n), static_cast<double>(n_ref), 0.01 * n_ref + 0.5);

  ASSERT_EQ(mask.boxes.sizes(), (std::vector<int64_t>{n, 4}));
  ASSERT_EQ(mask.class_probs.sizes(), (std::vector<int64_t>{n, c, 28, 28}));
  ASSERT_EQ(mask.mask_pooled.dim(), 4);
  ASSERT_EQ(mask.mask_pooled.size(0), n);
  const auto& rboxes = t.ref("mask_boxes");
  const auto& rprobs = t.ref("mask_class_probs");
  const auto& rpooled = t.ref("mask_pooled");  // the first K torchvision detections
  ASSERT_EQ(rprobs.size(1), c);
  ASSERT_EQ(mask.mask_pooled.sizes().slice(1), rpooled.sizes().slice(1));
  int64_t boxes_ok = 0, probs_ok = 0, pooled_compared = 0, pooled_ok = 0;
  double worst_probs = 0, worst_pooled = 0;
  for (auto [j, k] : matched) {
    boxes_ok += box_close(mask.boxes[k], rboxes[j]);
    const double d = max_abs_diff(mask.class_probs[k], rprobs[j]);  // all classes' 28x28
    worst_probs = std::max(worst_probs, d);
    probs_ok += d <= 1e-3;
    if (j < rpooled.size(0)) {
      ++pooled_compared;
      const double dp = max_rel_diff(mask.mask_pooled[k], rpooled[j]);
      worst_pooled = std::max(worst_pooled, dp);
      pooled_ok += dp < 1e-3;
    }
  }
  std::printf("[trace] masks of %zu matched detections: boxes %ld equal, all-class 28x28 probs max |diff| %.2e "
              "(%ld within 1e-3); mask_pooled of %ld: max rel diff %.2e\n", matched.size(), (long)boxes_ok,
              worst_probs, (long)probs_ok, (long)pooled_compared, worst_pooled);
  EXPECT_EQ(boxes_ok, static_cast<int64_t>(matched.size()));
  EXPECT_GE(probs_ok, static_cast<int64_t>(std::ceil(0.98 * matched.size())));
  EXPECT_GE(pooled_compared, rpooled.size(0) / 2);
  EXPECT_GE(pooled_ok, static_cast<int64_t>(std::ceil(0.9 * pooled_compared)));
}

// The trace against itself and against predict.
TEST(TraceParity, TraceIsWhatPredictComputes) {
  const auto& t = traced();
  const auto& tr = t.trace;
  const auto& d = t.dets;
  const int64_t n = d.size();
  ASSERT_GT(n, 0);

  // trace.detections is what predict_traced returned, and what predict returns.
  EXPECT_TRUE(at::equal(tr.detections.boxes, d.boxes));
  EXPECT_TRUE(at::equal(tr.detections.scores, d.scores));
  EXPECT_TRUE(at::equal(tr.detections.labels, d.labels));
  EXPECT_EQ(tr.detections.masks.size(), d.masks.size());
  auto plain = t.model->predict({t.rgb}).at(0);
  ASSERT_EQ(plain.size(), n);
  EXPECT_TRUE(at::equal(plain.labels, d.labels));
  EXPECT_TRUE(at::allclose(plain.boxes, d.boxes, 1e-6, 1e-6)) << max_abs_diff(plain.boxes, d.boxes);
  EXPECT_TRUE(at::allclose(plain.scores, d.scores, 1e-6, 1e-6)) << max_abs_diff(plain.scores, d.scores);
  ASSERT_EQ(plain.masks.size(), d.masks.size());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(plain.masks[i].x0, d.masks[i].x0) << i;
    EXPECT_EQ(plain.masks[i].y0, d.masks[i].y0) << i;
    ASSERT_EQ(plain.masks[i].probs.sizes(), d.masks[i].probs.sizes()) << i;
    EXPECT_LE(max_abs_diff(plain.masks[i].probs, d.masks[i].probs), 1e-5) << i;
  }

  // The detections' boxes are trace.mask.boxes in original pixels (torchvision's
  // resize_boxes: a ratio per axis, original / resized).
  ASSERT_EQ(tr.mask.boxes.size(0), n);
  const double rx = static_cast<double>(tr.original_width) / tr.resized_width;
  const double ry = static_cast<double>(tr.original_height) / tr.resized_height;
  auto ratio = at::tensor({rx, ry, rx, ry}, at::kDouble);
  auto rescaled = tr.mask.boxes.to(at::kDouble) * ratio;
  EXPECT_TRUE(at::allclose(rescaled, d.boxes.to(at::kDouble), 1e-5, 1e-3)) << max_abs_diff(rescaled, d.boxes);

  // Each detection: its label's map of all classes' 28x28 is the one predict
  // pasted; its score is its source proposal's probability of its label; its
  // box is that proposal's refined box for its label.
  const int64_t c = tr.mask.class_probs.size(1);
  const int64_t r = tr.rpn.proposals.size(0);
  auto rows = at::arange(n, at::kLong);
  auto selected = tr.mask.class_probs.index({rows, d.labels}).unsqueeze(1);  // [N, 1, 28, 28]
  auto pasted = maskrcnn::modeling::paste_masks(selected, d.boxes, d.image_height, d.image_width);
  ASSERT_EQ(static_cast<int64_t>(pasted.size()), n);
  double worst_paste = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(pasted[i].x0, d.masks[i].x0) << i;
    EXPECT_EQ(pasted[i].y0, d.masks[i].y0) << i;
    ASSERT_EQ(pasted[i].probs.sizes(), d.masks[i].probs.sizes()) << i;
    worst_paste = std::max(worst_paste, max_abs_diff(pasted[i].probs, d.masks[i].probs));
  }
  std::printf("[trace] the label's 28x28 of every class map, pasted: max |diff| %.2e from predict's\n", worst_paste);
  EXPECT_LE(worst_paste, 1e-4);
  // Another class's map is not the one pasted (the check above can tell).
  EXPECT_GT(max_abs_diff(tr.mask.class_probs.index({rows, (d.labels % (c - 1)) + 1}).unsqueeze(1), selected), 1e-2);

  const auto& src = tr.box.source_proposal;
  ASSERT_EQ(src.scalar_type(), at::kLong);
  ASSERT_EQ(src.size(0), n);
  EXPECT_GE(src.min().item<int64_t>(), 0);
  EXPECT_LT(src.max().item<int64_t>(), r);
  auto src_probs = tr.box.class_probs.index({src, d.labels});
  EXPECT_LE(max_abs_diff(src_probs, d.scores), 1e-5);
  auto src_boxes = tr.box.refined_boxes.index({src, d.labels});
  EXPECT_TRUE(at::allclose(src_boxes, tr.mask.boxes, 1e-6, 1e-5)) << max_abs_diff(src_boxes, tr.mask.boxes);
  EXPECT_LE(max_abs_diff(tr.box.class_probs.sum(1), at::ones({r})), 1e-4);

  // Counts, monotone down the postprocessing.
  const auto& b = tr.box;
  EXPECT_EQ(b.candidates, r * (c - 1));
  EXPECT_GE(b.candidates, b.above_score);
  EXPECT_GE(b.above_score, b.not_small);
  EXPECT_GE(b.not_small, b.after_nms);
  EXPECT_GE(b.after_nms, b.kept);
  EXPECT_EQ(b.kept, n);
  EXPECT_EQ(b.kept, std::min<int64_t>(b.after_nms, t.manifest.at("box_detections_per_img").get<int64_t>()));
  EXPECT_GT(d.scores.min().item<double>(), b.score_thresh);

  // The RPN's: top-n per level, NMS's input, NMS, post-NMS top-n.
  const auto& rpn = tr.rpn;
  int64_t top_n_sum = 0;
  for (auto k : rpn.pre_nms_top_n) top_n_sum += k;
  EXPECT_EQ(rpn.after_top_n, top_n_sum);
  const int64_t m = rpn.pre_nms_boxes.size(0);
  EXPECT_GE(rpn.after_top_n, m);
  EXPECT_GE(m, rpn.after_nms);
  EXPECT_EQ(r, std::min<int64_t>(rpn.after_nms, t.manifest.at("rpn_post_nms_top_n").get<int64_t>()));
  EXPECT_GE(rpn.pre_nms_levels.min().item<int64_t>(), 0);
  EXPECT_LT(rpn.pre_nms_levels.max().item<int64_t>(), 5);
  EXPECT_GE(rpn.pre_nms_scores.min().item<double>(), 0.0);
  EXPECT_LE(rpn.pre_nms_scores.max().item<double>(), 1.0);
  ASSERT_EQ(rpn.proposal_scores.size(0), r);
  EXPECT_TRUE(rpn.proposal_scores.slice(0, 1).le(rpn.proposal_scores.slice(0, 0, r - 1)).all().item<bool>())
      << "proposals are in NMS's order: descending score";
  // Every proposal is one of NMS's candidates, with its score.
  auto same_box = rpn.proposals.unsqueeze(1).eq(rpn.pre_nms_boxes.unsqueeze(0)).all(2);  // [R, M]
  auto same_score = rpn.proposal_scores.unsqueeze(1).eq(rpn.pre_nms_scores.unsqueeze(0));
  EXPECT_TRUE(same_box.logical_and(same_score).any(1).all().item<bool>());
  // The proposal boxes lie in the resized image.
  EXPECT_GE(rpn.proposals.min().item<double>(), 0.0);
  EXPECT_LE(rpn.proposals.select(1, 2).max().item<double>(), static_cast<double>(tr.resized_width));
  EXPECT_LE(rpn.proposals.select(1, 3).max().item<double>(), static_cast<double>(tr.resized_height));

  // Stage times of this pass.
  ASSERT_FALSE(tr.stage_times.empty());
  std::vector<std::string> names;
  for (const auto& s : tr.stage_times) {
    EXPECT_FALSE(s.name.empty());
    EXPECT_GE(s.calls, 1) << s.name;
    EXPECT_GE(s.seconds, 0.0) << s.name;
    names.push_back(s.name);
  }
  for (const char* stage : {"transform", "backbone.body", "rpn.head", "roi_heads.mask_predictor", "paste"})
    EXPECT_NE(std::find(names.begin(), names.end(), stage), names.end()) << stage;
}

TEST(TraceParity, ReusedTraceIsReplacedNotAppended) {
  const auto& t = traced();
  maskrcnn::ForwardTrace trace = t.trace;  // a trace already filled
  auto dets = t.model->predict_traced(t.rgb, trace);
  EXPECT_EQ(trace.body.size(), 4u);
  EXPECT_EQ(trace.fpn.size(), 5u);
  EXPECT_EQ(trace.anchors.size(), 5u);
  EXPECT_EQ(trace.rpn.objectness.size(), 5u);
  EXPECT_EQ(trace.rpn.pre_nms_top_n, t.trace.rpn.pre_nms_top_n);
  EXPECT_FALSE(trace.stage_times.empty());
  EXPECT_TRUE(at::equal(dets.labels, t.dets.labels));
  EXPECT_TRUE(at::allclose(dets.scores, t.dets.scores, 1e-6, 1e-6));
  EXPECT_EQ(trace.box.kept, t.trace.box.kept);
}
