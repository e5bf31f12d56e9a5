// COCOeval (pycocotools cocoeval.py) for bbox and segm: evaluate, accumulate, summarize.
#include "maskrcnn/coco_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "evaluation/parallel.h"
#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace maskrcnn {

const char* iou_type_name(IouType t) { return t == IouType::Bbox ? "bbox" : "segm"; }

std::vector<double> numpy_linspace(double start, double stop, int num) {
  std::vector<double> y;
  if (num <= 0) return y;
  y.resize(static_cast<size_t>(num));
  const int div = num - 1;
  const double delta = stop - start;
  if (div == 0) {
    y[0] = start;
    return y;
  }
  const double step = delta / div;
  for (int i = 0; i < num; ++i) {
    const double v = step == 0 ? (static_cast<double>(i) / div) * delta : static_cast<double>(i) * step;
    y[static_cast<size_t>(i)] = v + start;
  }
  y.back() = stop;
  return y;
}

namespace {

// numpy's pairwise_sum for float64 (8 accumulators, blocks of 128).
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = -0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// numpy argsort(-x, kind='mergesort') order: descending, stable, NaN last.
bool score_before(double x, double y) {
  if (std::isnan(x)) return false;
  if (std::isnan(y)) return true;
  return x > y;
}

}  // namespace

double numpy_mean(const double* v, size_t n) {
  return (0.0 + pairwise_sum(v, n)) / static_cast<double>(n);
}

CocoEval::CocoEval(const CocoDataset& gt, const std::vector<CocoAnnotation>& dt, IouType iou_type)
    : gt_(gt), dt_(dt) {
  params.iou_type = iou_type;
  for (const auto& im : gt.images) params.img_ids.push_back(im.id);
  for (const auto& c : gt.categories) params.cat_ids.push_back(c.id);
  std::sort(params.img_ids.begin(), params.img_ids.end());
  std::sort(params.cat_ids.begin(), params.cat_ids.end());
}

namespace {

template <class T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

struct GroupMaps {
  std::unordered_map<int64_t, int32_t> img_pos, cat_pos;
  bool use_cats = true;
};

// pycocotools _prepare: loadAnns(getAnnIds(imgIds, catIds)) walks images in
// params order and each image's annotations in file order, then looks every id
// up in the id -> annotation dict (so a duplicated id yields its last annotation),
// and appends to _gts[image_id, category_id]. Output: indices grouped by
// (image position, category position), each group in that append order.
void group_annotations(const std::vector<CocoAnnotation>& anns, const GroupMaps& g,
                       std::vector<uint32_t>& order, std::vector<int32_t>& group_k,
                       std::vector<size_t>& img_begin, size_t num_images) {
  std::unordered_map<int64_t, uint32_t> last_of_id;
  last_of_id.reserve(anns.size());
  for (uint32_t i = 0; i < anns.size(); ++i) last_of_id[anns[i].id] = i;
  struct Entry {
    int32_t img, cat;
    uint32_t idx;
  };
  std::vector<Entry> walk;
  walk.reserve(anns.size());
  for (uint32_t i = 0; i < anns.size(); ++i) {
    auto ii = g.img_pos.find(anns[i].image_id);
    if (ii == g.img_pos.end()) continue;
    if (g.use_cats && !g.cat_pos.count(anns[i].category_id)) continue;
    walk.push_back({ii->second, 0, i});
  }
  std::stable_sort(walk.begin(), walk.end(), [](const Entry& a, const Entry& b) { return a.img < b.img; });
  std::vector<Entry> entries;
  entries.reserve(walk.size());
  for (const Entry& w : walk) {
    const uint32_t sub = last_of_id[anns[w.idx].id];
    auto ii = g.img_pos.find(anns[sub].image_id);
    auto kk = g.cat_pos.find(anns[sub].category_id);
    if (ii == g.img_pos.end() || kk == g.cat_pos.end()) continue;  // never looked up
    entries.push_back({ii->second, kk->second, sub});
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.img != b.img ? a.img < b.img : a.cat < b.cat;
  });
  order.resize(entries.size());
  group_k.resize(entries.size());
  img_begin.assign(num_images + 1, 0);
  for (size_t j = 0; j < entries.size(); ++j) {
    order[j] = entries[j].idx;
    group_k[j] = g.use_cats ? entries[j].cat : 0;
    img_begin[static_cast<size_t>(entries[j].img) + 1]++;
  }
  for (size_t i = 0; i < num_images; ++i) img_begin[i + 1] += img_begin[i];
}

}  // namespace

void CocoEval::evaluate(int num_threads) {
  CocoEvalParams p = params;
  sort_unique(p.img_ids);
  if (p.use_cats) sort_unique(p.cat_ids);
  std::sort(p.max_dets.begin(), p.max_dets.end());
  if (p.max_dets.empty()) throw Error("COCOeval: params.max_dets is empty");
  if (p.area_rng.size() != p.area_rng_lbl.size())
    throw Error("COCOeval: area_rng and area_rng_lbl differ in length");
  p_ = p;
  GroupMaps g;
  g.use_cats = p.use_cats;
  for (size_t i = 0; i < p.img_ids.size(); ++i) g.img_pos[p.img_ids[i]] = static_cast<int32_t>(i);
  for (size_t k = 0; k < p.cat_ids.size(); ++k) g.cat_pos.emplace(p.cat_ids[k], static_cast<int32_t>(k));
  const size_t I = p.img_ids.size();
  group_annotations(gt_.annotations, g, gt_order_, gt_group_k_, gt_img_begin_, I);
  group_annotations(dt_, g, dt_order_, dt_group_k_, dt_img_begin_, I);

  std::vector<std::vector<CocoEvalImage>> per_image(I);
  parallel_for(I, num_threads, [&](size_t i) { evaluate_image(i, per_image[i]); });

  const size_t K = p.use_cats ? p.cat_ids.size() : 1;
  eval_imgs_.assign(K, {});
  for (auto& v : per_image)
    for (auto& e : v) eval_imgs_[static_cast<size_t>(e.category)].push_back(std::move(e));
  evaluated_ = true;
  accumulated_ = false;
}

void CocoEval::evaluate_image(size_t i, std::vector<CocoEvalImage>& out) const {
  const CocoEvalParams& p = p_;
  const size_t T = p.iou_thrs.size(), A = p.area_rng.size();
  const size_t max_det = static_cast<size_t>(std::max(0, p.max_dets.back()));
  size_t g0 = gt_img_begin_[i], g1 = gt_img_begin_[i + 1];
  size_t d0 = dt_img_begin_[i], d1 = dt_img_begin_[i + 1];
  std::vector<uint32_t> gts, dts;
  std::vector<double> ious, ious_sorted;
  while (g0 < g1 || d0 < d1) {
    int32_t k = std::numeric_limits<int32_t>::max();
    if (g0 < g1) k = std::min(k, gt_group_k_[g0]);
    if (d0 < d1) k = std::min(k, dt_group_k_[d0]);
    gts.clear();
    dts.clear();
    while (g0 < g1 && gt_group_k_[g0] == k) gts.push_back(gt_order_[g0++]);
    while (d0 < d1 && dt_group_k_[d0] == k) dts.push_back(dt_order_[d0++]);

    // computeIoU: detections best score first (stable), at most maxDets[-1]
    std::stable_sort(dts.begin(), dts.end(),
                     [&](uint32_t a, uint32_t b) { return score_before(dt_[a].score, dt_[b].score); });
    if (dts.size() > max_det) dts.resize(max_det);
    const size_t D = dts.size(), G = gts.size();
    std::vector<uint8_t> crowd(G);
    for (size_t j = 0; j < G; ++j) crowd[j] = gt_.annotations[gts[j]].iscrowd ? 1 : 0;
    ious.assign(D * G, 0.0);
    if (D > 0 && G > 0) {
      if (p.iou_type == IouType::Bbox) {
        std::vector<BBox> db(D), gb(G);
        for (size_t j = 0; j < G; ++j) {
          const CocoAnnotation& a = gt_.annotations[gts[j]];
          if (!a.has_bbox) throw Error(gt_.source + ": annotation id " + std::to_string(a.id) + ": no bbox");
          gb[j] = a.bbox;
        }
        for (size_t j = 0; j < D; ++j) db[j] = dt_[dts[j]].bbox;
        bbox_iou(db.data(), D, gb.data(), G, crowd.data(), ious.data());
      } else {
        std::vector<Rle> dr(D), gr(G);
        auto to_rle = [&](const CocoAnnotation& a, const char* what) {
          const CocoImage* img = gt_.find_image(a.image_id);
          try {
            if (!img) throw Error("image_id " + std::to_string(a.image_id) + " not in the ground truth");
            return annotation_to_rle(a, *img);
          } catch (const Error& e) {
            throw Error(std::string(what) + " annotation id " + std::to_string(a.id) + ": " + e.what());
          }
        };
        for (size_t j = 0; j < G; ++j) gr[j] = to_rle(gt_.annotations[gts[j]], (gt_.source + ":").c_str());
        for (size_t j = 0; j < D; ++j) dr[j] = to_rle(dt_[dts[j]], "results:");
        rle_iou(dr.data(), D, gr.data(), G, crowd.data(), ious.data());
      }
    }

    CocoEvalImage e;
    e.image = static_cast<int32_t>(i);
    e.category = k;
    e.num_dt = static_cast<int32_t>(D);
    e.dt_scores.resize(D);
    for (size_t j = 0; j < D; ++j) e.dt_scores[j] = dt_[dts[j]].score;
    e.num_gt_not_ignored.assign(A, 0);
    e.dt_flags.assign(A * T * D, 0);

    std::vector<size_t> gtind(G);
    std::vector<uint8_t> gt_ig(G), crowd_s(G);
    std::vector<int64_t> gtm(T * G), dtm(T * D);
    std::vector<uint8_t> dt_ig(T * D);
    ious_sorted.resize(D * G);
    for (size_t a = 0; a < A; ++a) {
      const double lo = p.area_rng[a][0], hi = p.area_rng[a][1];
      // gt['_ignore'] = ignore (= iscrowd in pycocotools) or area outside the range
      std::vector<uint8_t> ig(G);
      for (size_t j = 0; j < G; ++j) {
        const CocoAnnotation& gt = gt_.annotations[gts[j]];
        ig[j] = (gt.iscrowd || gt.area < lo || gt.area > hi) ? 1 : 0;
      }
      size_t n = 0;
      for (size_t j = 0; j < G; ++j)
        if (!ig[j]) gtind[n++] = j;
      e.num_gt_not_ignored[a] = static_cast<int32_t>(n);
      for (size_t j = 0; j < G; ++j)
        if (ig[j]) gtind[n++] = j;
      for (size_t j = 0; j < G; ++j) {
        gt_ig[j] = ig[gtind[j]];
        crowd_s[j] = crowd[gtind[j]];
      }
      for (size_t d = 0; d < D; ++d)
        for (size_t j = 0; j < G; ++j) ious_sorted[d * G + j] = ious[d * G + gtind[j]];
      std::fill(gtm.begin(), gtm.end(), 0);
      std::fill(dtm.begin(), dtm.end(), 0);
      std::fill(dt_ig.begin(), dt_ig.end(), 0);
      if (D > 0 && G > 0) {
        for (size_t t = 0; t < T; ++t) {
          for (size_t d = 0; d < D; ++d) {
            double iou = std::min(p.iou_thrs[t], 1 - 1e-10);
            long m = -1;
            for (size_t j = 0; j < G; ++j) {
              if (gtm[t * G + j] > 0 && !crowd_s[j]) continue;
              if (m > -1 && gt_ig[static_cast<size_t>(m)] == 0 && gt_ig[j] == 1) break;
              if (ious_sorted[d * G + j] < iou) continue;
              iou = ious_sorted[d * G + j];
              m = static_cast<long>(j);
            }
            if (m == -1) continue;
            dt_ig[t * D + d] = gt_ig[static_cast<size_t>(m)];
            dtm[t * D + d] = gt_.annotations[gts[gtind[static_cast<size_t>(m)]]].id;
            gtm[t * G + static_cast<size_t>(m)] = dt_[dts[d]].id;
          }
        }
      }
      for (size_t d = 0; d < D; ++d) {
        const double area = dt_[dts[d]].area;
        const bool out_of_range = area < lo || area > hi;
        for (size_t t = 0; t < T; ++t) {
          const bool matched = dtm[t * D + d] != 0;
          const bool ignored = dt_ig[t * D + d] || (!matched && out_of_range);
          e.dt_flags[(a * T + t) * D + d] = static_cast<uint8_t>((matched ? 1 : 0) | (ignored ? 2 : 0));
        }
      }
    }
    out.push_back(std::move(e));
  }
}

}  // namespace maskrcnn
