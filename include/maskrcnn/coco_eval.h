// COCO detection evaluation with the exact semantics (and floating point) of
// pycocotools' COCOeval for iouType "bbox" and "segm":
//   CocoEval ev(gt, dt, IouType::Bbox); ev.evaluate(threads); ev.accumulate();
//   ev.summarize();  // ev.stats(), ev.summary_text()
// Results do not depend on the number of threads.
#pragma once
#include <array>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "maskrcnn/coco.h"

namespace maskrcnn {

enum class IouType { Bbox, Segm };
const char* iou_type_name(IouType t);  // "bbox" / "segm"

// numpy.linspace(start, stop, num) bit for bit: start + i*step, last = stop.
std::vector<double> numpy_linspace(double start, double stop, int num);
// numpy.mean of a contiguous float64 array (pairwise summation, then / n).
double numpy_mean(const double* v, size_t n);

struct CocoEvalParams {
  std::vector<int64_t> img_ids;  // default: every ground-truth image id, sorted
  std::vector<int64_t> cat_ids;  // default: every ground-truth category id, sorted
  std::vector<double> iou_thrs = numpy_linspace(.5, .95, 10);
  std::vector<double> rec_thrs = numpy_linspace(0., 1., 101);
  std::vector<int> max_dets{1, 10, 100};
  std::vector<std::array<double, 2>> area_rng{{0., 1e10}, {0., 1024.}, {1024., 9216.}, {9216., 1e10}};
  std::vector<std::string> area_rng_lbl{"all", "small", "medium", "large"};
  bool use_cats = true;
  IouType iou_type = IouType::Segm;
};

// evaluateImg's output for one (image, category) with ground truth or detections,
// for every area range at once.
struct CocoEvalImage {
  int32_t image = 0;     // index into params.img_ids
  int32_t category = 0;  // index into params.cat_ids (0 when use_cats is false)
  int32_t num_dt = 0;    // D: detections kept, best score first, at most max_dets.back()
  std::vector<double> dt_scores;             // [D]
  std::vector<int32_t> num_gt_not_ignored;   // [A]: count of gtIgnore == 0
  std::vector<uint8_t> dt_flags;             // [A][T][D]: bit 0 dtMatches != 0, bit 1 dtIgnore
};

class CocoEval {
 public:
  // gt and dt must outlive the evaluator. dt: load_coco_results(...) output.
  CocoEval(const CocoDataset& gt, const std::vector<CocoAnnotation>& dt, IouType iou_type);

  CocoEvalParams params;  // may be edited before evaluate()

  // num_threads <= 0: all hardware threads.
  void evaluate(int num_threads = 1);
  void accumulate(int num_threads = 1);
  // Computes the 12 stats (and the text of the 12 summary lines).
  const std::array<double, 12>& summarize();

  const std::array<double, 12>& stats() const { return stats_; }
  // The 12 lines pycocotools' summarize() prints, each ending in '\n'.
  const std::string& summary_text() const { return summary_; }

  // accumulate() output in numpy's C order: precision/scores [T][R][K][A][M],
  // recall [T][K][A][M]; -1 where a setting has no ground truth.
  const std::vector<double>& precision() const { return precision_; }
  const std::vector<double>& recall() const { return recall_; }
  const std::vector<double>& scores() const { return scores_; }
  double precision_at(size_t t, size_t r, size_t k, size_t a, size_t m) const;
  double recall_at(size_t t, size_t k, size_t a, size_t m) const;

  // AP per category (in params.cat_ids order), as detectron2 reports it: the mean
  // of precision[:, :, k, area "all", last maxDets] over entries > -1, or -1.
  std::vector<double> per_category_ap() const;

  // One pycocotools _summarize() value: ap = true for precision; iou_thr < 0 for
  // the mean over all thresholds. Fills *line (without '\n') if given.
  double summarize_one(bool ap, double iou_thr, const std::string& area_lbl, int max_dets,
                       std::string* line = nullptr) const;

  // evaluate() output, per category index in image order (introspection, tests).
  const std::vector<std::vector<CocoEvalImage>>& eval_imgs() const { return eval_imgs_; }

 private:
  void evaluate_image(size_t img_idx, std::vector<CocoEvalImage>& out) const;

  const CocoDataset& gt_;
  const std::vector<CocoAnnotation>& dt_;
  CocoEvalParams p_;  // params as evaluate() used them
  bool evaluated_ = false, accumulated_ = false;
  // grouped (image, category) ground truths and detections, as indices
  std::vector<uint32_t> gt_order_, dt_order_;     // indices into gt_.annotations / dt_
  std::vector<int32_t> gt_group_k_, dt_group_k_;  // category index of each entry
  std::vector<size_t> gt_img_begin_, dt_img_begin_;  // per image index, into *_order_
  std::vector<std::vector<CocoEvalImage>> eval_imgs_;
  std::vector<double> precision_, recall_, scores_;
  std::array<double, 12> stats_{};
  std::string summary_;
};

// --- The `maskrcnn eval` step: files in, summaries and STATS.json out. ---

struct CocoEvalRunOptions {
  std::vector<IouType> iou_types{IouType::Bbox, IouType::Segm};
  std::string output_json;   // STATS.json path; empty: none written
  int threads = 1;           // <= 0: all hardware threads
  std::ostream* log = nullptr;  // pycocotools-style progress and summaries; null: silent
};

struct CocoEvalSummary {
  IouType iou_type = IouType::Bbox;
  std::array<double, 12> stats{};
  std::vector<std::pair<std::string, double>> per_category;  // category name -> AP
};

// Loads gt and dt, evaluates each iou type, prints, writes output_json if set.
std::vector<CocoEvalSummary> evaluate_coco_files(const std::string& gt_path, const std::string& dt_path,
                                                 const CocoEvalRunOptions& options);
// {"bbox": {"stats": [...], "AP": .., ..., "per_category": {...}}, "segm": {...}}
std::string coco_eval_stats_json(const std::vector<CocoEvalSummary>& summaries);
// evaluate_coco_files with the summary to `log` (std::cout if null); returns 0.
int run_coco_eval(const std::string& gt_path, const std::string& dt_path, CocoEvalRunOptions options);

}  // namespace maskrcnn
