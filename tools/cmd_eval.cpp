// `maskrcnn eval`: COCO evaluation identical to pycocotools (bbox and/or segm).
//
//   maskrcnn eval --annotations GT.json --results DT.json [--iou-type both]
//                 [--output-json STATS.json] [--threads N]
//   maskrcnn eval --annotations GT.json --weights W --images DIR [--results-out DT.json]
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/model.h"
#include "maskrcnn/model_info.h"

namespace maskrcnn::cli {

namespace {

struct EvalOptions {
  std::string annotations;
  std::string results;
  std::string iou_type = "both";
  std::string output_json;
  int threads = 0;
  std::string weights;
  std::string images;
  std::string results_out;
  double score_thresh = 0.05;
  double max_annotation_mb = 2048;
  ConvFlags conv;
  std::string device = "cpu";
};

std::vector<IouType> parse_iou_types(const std::string& s) {
  if (s == "bbox") return {IouType::Bbox};
  if (s == "segm") return {IouType::Segm};
  if (s == "both") return {IouType::Bbox, IouType::Segm};
  throw Error("eval: --iou-type must be bbox, segm or both, not '" + s + "'");
}

void run_eval_command(const EvalOptions& o) {
  apply_annotation_size_limit(o.max_annotation_mb);
  CocoEvalRunOptions run;
  run.iou_types = parse_iou_types(o.iou_type);
  run.output_json = o.output_json;
  run.threads = o.threads;
  run.log = &std::cout;
  std::string results = o.results;
  if (!o.weights.empty()) {
    if (o.images.empty()) throw Error("eval: --weights needs --images DIR");
    if (!std::filesystem::exists(o.weights)) throw Error(o.weights + ": no such weights file");
    at::set_num_threads(o.threads);
    apply_conv_options(o.conv);
    const at::Device device = parse_device(o.device);
    ModelOverrides mo;
    mo.box_score_thresh = o.score_thresh;
    auto model = load_model(o.weights, mo);  // + model_final.json's input sizes
    model.to(device);
    results = o.results_out.empty()
                  ? (std::filesystem::temp_directory_path() /
                     ("maskrcnn_eval_results." + std::to_string(::getpid()) + ".json"))
                        .string()
                  : o.results_out;
    auto report = run_model_on_coco(model, o.annotations, o.images, results);
    for (auto& f : report.failures) std::fprintf(stderr, "maskrcnn: error: %s\n", f.c_str());
    std::fprintf(stderr, "eval: %zu images, %zu detections in %.1f s (%.2f images/s)%s\n",
                 report.images, report.detections, report.seconds,
                 report.seconds > 0 ? report.images / report.seconds : 0.0,
                 report.failures.empty()
                     ? ""
                     : (", " + std::to_string(report.failures.size()) + " images failed").c_str());
    run_coco_eval(o.annotations, results, run);
    if (o.results_out.empty()) std::filesystem::remove(results);
    if (!report.failures.empty())
      throw Error(std::to_string(report.failures.size()) + " of " +
                  std::to_string(report.images) + " images could not be read (listed above)");
    return;
  }
  if (results.empty()) throw Error("eval: give --results DT.json (or --weights W --images DIR)");
  run_coco_eval(o.annotations, results, run);
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto opts = std::make_shared<EvalOptions>();
  opts->threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CLI::App* cmd = app.add_subcommand(
      "eval", "Evaluate detections against COCO ground truth (pycocotools COCOeval, bbox and segm)");
  cmd->add_option("--annotations", opts->annotations, "Ground truth: COCO instances JSON")
      ->required()
      ->type_name("GT.json");
  cmd->add_option("--results", opts->results, "Detections: COCO results JSON (a list of results); default: none, needed unless --weights")
      ->type_name("DT.json");
  cmd->add_option("--iou-type", opts->iou_type, "Which evaluation: bbox, segm or both")
      ->check(CLI::IsMember({"bbox", "segm", "both"}))
      ->capture_default_str();
  cmd->add_option("--output-json", opts->output_json,
                  "Write the stats (12 per iou type, named, and AP per category) to this JSON file; default: none (not written)")
      ->type_name("STATS.json")
      ->capture_default_str();
  cmd->add_option("--threads", opts->threads, "Threads for evaluation (default: all cores); results do not depend on it")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--weights", opts->weights, "Model weights: run the model on --images first; default: none")
      ->type_name("W")
      ->capture_default_str();
  cmd->add_option("--images", opts->images, "Image folder for --weights; default: none")
      ->type_name("DIR")
      ->capture_default_str();
  cmd->add_option("--results-out", opts->results_out, "With --weights: where to write the model's results JSON; default: none (temporary)")
      ->type_name("DT.json")
      ->capture_default_str();
  cmd->add_option("--score-thresh", opts->score_thresh, "With --weights: minimum detection score")
      ->capture_default_str();
  add_conv_options(cmd, opts->conv);
  add_device_option(cmd, opts->device);
  add_annotation_size_limit(cmd, opts->max_annotation_mb);
  cmd->callback([opts] { run_eval_command(*opts); });
}

}  // namespace maskrcnn::cli
