// COCOeval.accumulate() and summarize() (pycocotools cocoeval.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "evaluation/parallel.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"

namespace maskrcnn {

namespace {

bool score_before(double x, double y) {
  if (std::isnan(x)) return false;
  if (std::isnan(y)) return true;
  return x > y;
}

}  // namespace

void CocoEval::accumulate(int num_threads) {
  if (!evaluated_) throw Error("COCOeval: run evaluate() before accumulate()");
  const CocoEvalParams& p = p_;
  const size_t T = p.iou_thrs.size(), R = p.rec_thrs.size(), A = p.area_rng.size(),
               M = p.max_dets.size();
  const size_t K = p.use_cats ? p.cat_ids.size() : 1;
  precision_.assign(T * R * K * A * M, -1.0);
  scores_.assign(T * R * K * A * M, -1.0);
  recall_.assign(T * K * A * M, -1.0);
  const double eps = std::nextafter(1.0, 2.0) - 1.0;  // np.spacing(1)

  parallel_for(K, num_threads, [&](size_t k) {
    const std::vector<CocoEvalImage>& E = eval_imgs_[k];
    if (E.empty()) return;
    std::vector<double> sc, pr, rc;
    std::vector<uint32_t> src_e, src_d;
    std::vector<size_t> inds;
    std::vector<uint8_t> flags;
    for (size_t m = 0; m < M; ++m) {
      const size_t max_det = static_cast<size_t>(std::max(0, p.max_dets[m]));
      // dtScores = concatenate(e['dtScores'][0:maxDet]); stable argsort of -dtScores
      sc.clear();
      src_e.clear();
      src_d.clear();
      for (uint32_t ei = 0; ei < E.size(); ++ei) {
        const size_t n = std::min(static_cast<size_t>(E[ei].num_dt), max_det);
        for (uint32_t d = 0; d < n; ++d) {
          sc.push_back(E[ei].dt_scores[d]);
          src_e.push_back(ei);
          src_d.push_back(d);
        }
      }
      const size_t nd = sc.size();
      inds.resize(nd);
      std::iota(inds.begin(), inds.end(), size_t{0});
      std::stable_sort(inds.begin(), inds.end(), [&](size_t a, size_t b) { return score_before(sc[a], sc[b]); });
      pr.resize(nd);
      rc.resize(nd);
      // flags of the sorted detections, contiguous per (area, threshold)
      flags.resize(A * T * nd);
      for (size_t j = 0; j < nd; ++j) {
        const CocoEvalImage& e = E[src_e[inds[j]]];
        const size_t D = static_cast<size_t>(e.num_dt), d = src_d[inds[j]];
        for (size_t at = 0; at < A * T; ++at) flags[at * nd + j] = e.dt_flags[at * D + d];
      }
      for (size_t a = 0; a < A; ++a) {
        int64_t npig = 0;
        for (const auto& e : E) npig += e.num_gt_not_ignored[a];
        if (npig == 0) continue;
        for (size_t t = 0; t < T; ++t) {
          // tp/fp cumsums; pr = tp / (fp + tp + eps), rc = tp / npig. An ignored
          // detection repeats the previous values, so no division is needed there.
          double tp = 0, fp = 0, last_pr = 0;
          const uint8_t* f = flags.data() + (a * T + t) * nd;
          for (size_t j = 0; j < nd; ++j) {
            const uint8_t fj = f[j];
            if (!(fj & 2)) {
              if (fj & 1)
                tp += 1;
              else
                fp += 1;
              last_pr = tp / (fp + tp + eps);
            }
            pr[j] = last_pr;
            rc[j] = tp;  // the count; divided by npig on demand below
          }
          const double np = static_cast<double>(npig);
          recall_[((t * K + k) * A + a) * M + m] = nd ? rc[nd - 1] / np : 0.0;
          for (size_t j = nd; j-- > 1;)
            if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
          // inds = np.searchsorted(rc, recThrs, side='left'); q[ri] = pr[pi] until pi runs out
          double cur_tp = -1, cur_rc = 0;
          auto rc_at = [&](size_t j) {
            if (rc[j] != cur_tp) {
              cur_tp = rc[j];
              cur_rc = cur_tp / np;
            }
            return cur_rc;
          };
          size_t pi = 0;
          for (size_t r = 0; r < R; ++r) {
            const size_t at = (((t * R + r) * K + k) * A + a) * M + m;
            while (pi < nd && rc_at(pi) < p.rec_thrs[r]) ++pi;
            if (pi >= nd) {
              for (size_t r2 = r; r2 < R; ++r2) {
                const size_t at2 = (((t * R + r2) * K + k) * A + a) * M + m;
                precision_[at2] = 0.0;
                scores_[at2] = 0.0;
              }
              break;
            }
            precision_[at] = pr[pi];
            scores_[at] = sc[inds[pi]];
          }
        }
      }
    }
  });
  accumulated_ = true;
}

double CocoEval::precision_at(size_t t, size_t r, size_t k, size_t a, size_t m) const {
  const size_t R = p_.rec_thrs.size(), K = p_.use_cats ? p_.cat_ids.size() : 1,
               A = p_.area_rng.size(), M = p_.max_dets.size();
  return precision_.at((((t * R + r) * K + k) * A + a) * M + m);
}

double CocoEval::recall_at(size_t t, size_t k, size_t a, size_t m) const {
  const size_t K = p_.use_cats ? p_.cat_ids.size() : 1, A = p_.area_rng.size(),
               M = p_.max_dets.size();
  return recall_.at(((t * K + k) * A + a) * M + m);
}

double CocoEval::summarize_one(bool ap, double iou_thr, const std::string& area_lbl, int max_dets,
                               std::string* line) const {
  if (!accumulated_) throw Error("COCOeval: run accumulate() before summarize()");
  const CocoEvalParams& p = p_;
  const size_t T = p.iou_thrs.size(), R = p.rec_thrs.size(), A = p.area_rng.size(),
               M = p.max_dets.size();
  const size_t K = p.use_cats ? p.cat_ids.size() : 1;
  const size_t npos = static_cast<size_t>(-1);
  size_t aind = npos, mind = npos;
  for (size_t a = 0; a < A; ++a)
    if (p.area_rng_lbl[a] == area_lbl) {
      aind = a;
      break;
    }
  for (size_t m = 0; m < M; ++m)
    if (p.max_dets[m] == max_dets) {
      mind = m;
      break;
    }
  std::vector<double> s;
  if (aind != npos && mind != npos) {
    for (size_t t = 0; t < T; ++t) {
      if (iou_thr >= 0 && !(p.iou_thrs[t] == iou_thr)) continue;
      if (ap) {
        for (size_t r = 0; r < R; ++r)
          for (size_t k = 0; k < K; ++k) {
            const double v = precision_[(((t * R + r) * K + k) * A + aind) * M + mind];
            if (v > -1) s.push_back(v);
          }
      } else {
        for (size_t k = 0; k < K; ++k) {
          const double v = recall_[((t * K + k) * A + aind) * M + mind];
          if (v > -1) s.push_back(v);
        }
      }
    }
  }
  const double mean = s.empty() ? -1.0 : numpy_mean(s.data(), s.size());
  if (line) {
    char iou_str[64];
    if (iou_thr < 0)
      std::snprintf(iou_str, sizeof iou_str, "%0.2f:%0.2f", p.iou_thrs.front(), p.iou_thrs.back());
    else
      std::snprintf(iou_str, sizeof iou_str, "%0.2f", iou_thr);
    char buf[256];
    std::snprintf(buf, sizeof buf, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f",
                  ap ? "Average Precision" : "Average Recall", ap ? "(AP)" : "(AR)", iou_str,
                  area_lbl.c_str(), max_dets, mean);
    *line = buf;
  }
  return mean;
}

const std::array<double, 12>& CocoEval::summarize() {
  const auto& md = p_.max_dets;
  auto det = [&](size_t i) { return md[std::min(i, md.size() - 1)]; };
  struct Row {
    bool ap;
    double iou;
    const char* area;
    int max_dets;
  };
  const Row rows[12] = {{true, -1, "all", det(2)},      {true, .5, "all", det(2)},
                        {true, .75, "all", det(2)},     {true, -1, "small", det(2)},
                        {true, -1, "medium", det(2)},   {true, -1, "large", det(2)},
                        {false, -1, "all", det(0)},     {false, -1, "all", det(1)},
                        {false, -1, "all", det(2)},     {false, -1, "small", det(2)},
                        {false, -1, "medium", det(2)},  {false, -1, "large", det(2)}};
  summary_.clear();
  for (size_t i = 0; i < 12; ++i) {
    std::string line;
    stats_[i] = summarize_one(rows[i].ap, rows[i].iou, rows[i].area, rows[i].max_dets, &line);
    summary_ += line;
    summary_ += '\n';
  }
  return stats_;
}

std::vector<double> CocoEval::per_category_ap() const {
  if (!accumulated_) throw Error("COCOeval: run accumulate() before per_category_ap()");
  const size_t T = p_.iou_thrs.size(), R = p_.rec_thrs.size(), A = p_.area_rng.size(),
               M = p_.max_dets.size();
  const size_t K = p_.use_cats ? p_.cat_ids.size() : 1;
  std::vector<double> out(K, -1.0);
  if (A == 0 || M == 0) return out;
  std::vector<double> s;
  for (size_t k = 0; k < K; ++k) {
    s.clear();
    for (size_t t = 0; t < T; ++t)
      for (size_t r = 0; r < R; ++r) {
        const double v = precision_[(((t * R + r) * K + k) * A + 0) * M + (M - 1)];
        if (v > -1) s.push_back(v);
      }
    if (!s.empty()) out[k] = numpy_mean(s.data(), s.size());
  }
  return out;
}

}  // namespace maskrcnn
