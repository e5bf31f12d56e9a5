// `maskrcnn eval`: COCO evaluation identical to pycocotools (bbox and/or segm).
//
//   maskrcnn eval --annotations GT.json --results DT.json [--iou-type both]
//                 [--output-json STATS.json] [--threads N]
//   maskrcnn eval --annotations GT.json --weights W --images DIR [--results-out DT.json]
//
// The second form (run the model, then evaluate) is declared but not wired yet.
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"

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
};

std::vector<IouType> parse_iou_types(const std::string& s) {
  if (s == "bbox") return {IouType::Bbox};
  if (s == "segm") return {IouType::Segm};
  if (s == "both") return {IouType::Bbox, IouType::Segm};
  throw Error("eval: --iou-type must be bbox, segm or both, not '" + s + "'");
}

void run_eval_command(const EvalOptions& o) {
  CocoEvalRunOptions run;
  run.iou_types = parse_iou_types(o.iou_type);
  run.output_json = o.output_json;
  run.threads = o.threads;
  run.log = &std::cout;
  std::string results = o.results;
  if (!o.weights.empty()) {
    if (o.images.empty()) throw Error("eval: --weights needs --images DIR");
    // ---- call point: run the model over --images, write COCO results JSON to
    // ---- o.results_out (or a temporary file), then set `results` to that path.
    throw Error("eval --weights: running the model before evaluation is not yet wired; "
                "run `maskrcnn predict` and pass its results with --results");
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
  cmd->add_option("--weights", opts->weights, "Model weights: run the model on --images first (not yet wired); default: none")
      ->type_name("W")
      ->capture_default_str();
  cmd->add_option("--images", opts->images, "Image folder for --weights; default: none")
      ->type_name("DIR")
      ->capture_default_str();
  cmd->add_option("--results-out", opts->results_out, "With --weights: where to write the model's results JSON; default: none (temporary)")
      ->type_name("DT.json")
      ->capture_default_str();
  cmd->callback([opts] { run_eval_command(*opts); });
}

}  // namespace maskrcnn::cli
