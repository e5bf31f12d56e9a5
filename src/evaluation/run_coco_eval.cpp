// The `maskrcnn eval` step: load, evaluate each iou type, print, write STATS.json.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "maskrcnn/coco.h"
#include "io/atomic_file.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"

namespace maskrcnn {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt_done(double s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "DONE (t=%0.2fs).\n", s);
  return buf;
}

// Category names as JSON keys: the name, made unique (and non-empty) with the id.
std::vector<std::string> category_keys(const CocoDataset& gt, const std::vector<int64_t>& cat_ids) {
  std::map<std::string, int> uses;
  for (const auto& c : gt.categories) uses[c.name]++;
  std::vector<std::string> keys;
  for (int64_t id : cat_ids) {
    const CocoCategory* c = gt.find_category(id);
    std::string name = c ? c->name : std::string();
    if (name.empty() || uses[name] > 1) name += (name.empty() ? "" : " ") + std::string("(id ") + std::to_string(id) + ")";
    keys.push_back(name);
  }
  return keys;
}

}  // namespace

std::string coco_eval_stats_json(const std::vector<CocoEvalSummary>& summaries) {
  static const char* kNames[12] = {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  for (const auto& s : summaries) {
    nlohmann::ordered_json j;
    j["stats"] = nlohmann::ordered_json::array();
    for (double v : s.stats) j["stats"].push_back(v);
    for (int i = 0; i < 12; ++i) j[kNames[i]] = s.stats[static_cast<size_t>(i)];
    nlohmann::ordered_json pc = nlohmann::ordered_json::object();
    for (const auto& [name, ap] : s.per_category) pc[name] = ap;
    j["per_category"] = std::move(pc);
    root[iou_type_name(s.iou_type)] = std::move(j);
  }
  return root.dump(1) + "\n";
}

std::vector<CocoEvalSummary> evaluate_coco_files(const std::string& gt_path, const std::string& dt_path,
                                                 const CocoEvalRunOptions& options) {
  std::ostream* log = options.log;
  auto t0 = Clock::now();
  if (log) *log << "loading annotations into memory...\n" << std::flush;
  const CocoDataset gt = load_coco_instances(gt_path);
  if (log) *log << fmt_done(seconds_since(t0)) << "index created!\n";
  t0 = Clock::now();
  if (log) *log << "Loading and preparing results...\n" << std::flush;
  const std::vector<CocoAnnotation> dt = load_coco_results(dt_path, gt);
  if (log) *log << fmt_done(seconds_since(t0)) << "creating index...\nindex created!\n";

  std::vector<CocoEvalSummary> out;
  std::set<IouType> done;
  for (IouType type : options.iou_types) {
    if (!done.insert(type).second) continue;
    CocoEval ev(gt, dt, type);
    t0 = Clock::now();
    if (log)
      *log << "Running per image evaluation...\nEvaluate annotation type *" << iou_type_name(type) << "*\n"
           << std::flush;
    ev.evaluate(options.threads);
    if (log) *log << fmt_done(seconds_since(t0)) << "Accumulating evaluation results...\n" << std::flush;
    t0 = Clock::now();
    ev.accumulate(options.threads);
    if (log) *log << fmt_done(seconds_since(t0));
    CocoEvalSummary s;
    s.iou_type = type;
    s.stats = ev.summarize();
    if (log) *log << ev.summary_text() << std::flush;
    const std::vector<double> ap = ev.per_category_ap();
    const std::vector<std::string> keys = category_keys(gt, ev.params.cat_ids);
    for (size_t k = 0; k < ap.size() && k < keys.size(); ++k) s.per_category.emplace_back(keys[k], ap[k]);
    out.push_back(std::move(s));
  }
  if (!options.output_json.empty()) {
    io::write_file_atomic(options.output_json, coco_eval_stats_json(out));
    if (log) *log << "wrote " << options.output_json << "\n";
  }
  return out;
}

int run_coco_eval(const std::string& gt_path, const std::string& dt_path, CocoEvalRunOptions options) {
  if (!options.log) options.log = &std::cout;
  evaluate_coco_files(gt_path, dt_path, options);
  return 0;
}

}  // namespace maskrcnn
