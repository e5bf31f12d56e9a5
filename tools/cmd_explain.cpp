// `maskrcnn explain`: one photo through the model, every stage drawn in a
// self-contained HTML report (maskrcnn/explain.h).
#include <ATen/Parallel.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "commands.h"
#include "io/atomic_file.h"
#include "maskrcnn/explain.h"
#include "maskrcnn/maskrcnn.h"

namespace maskrcnn::cli {
namespace {

struct ExplainArgs {
  ModelFlags model;
  std::string image;
  std::string output;  // empty: <image stem>_explain.html in the current folder
  int detections = 3;
  int proposals = 40;
  double score_thresh = 0.05;
  double mask_thresh = 0.5;
  int64_t max_pixels = int64_t{1} << 28;
};

void run_explain(const ExplainArgs& a) {
  const std::string output = a.output.empty()
                                 ? std::filesystem::path(a.image).stem().string() + "_explain.html"
                                 : a.output;
  const auto t0 = std::chrono::steady_clock::now();
  ImageReadOptions ro;
  ro.max_pixels = a.max_pixels;
  auto rgb = read_image(a.image, ro);  // a bad photo fails before the weights load
  at::set_num_threads(a.model.threads > 0 ? a.model.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  apply_conv_options(a.model.conv);
  const at::Device device = parse_device(a.model.device);
  const std::string weights = model_weights_path(a.model);
  ModelOverrides o;
  apply_model_flags(a.model, o);
  o.box_score_thresh = a.score_thresh;
  auto model = load_model(weights, o);
  if (!a.model.labels_file.empty()) model.set_class_names(read_labels(a.model.labels_file));
  model.to(device);
  ExplainOptions eo;
  eo.detections = a.detections;
  eo.proposals_drawn = a.proposals;
  eo.mask_threshold = a.mask_thresh;
  eo.title = std::filesystem::path(a.image).filename().string();
  const std::string html = explain_html(model, rgb, eo);
  io::write_file_atomic(output, html);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "{}: wrote {} ({:.1f} MB, {:.1f} s)\n", a.image, output, html.size() / 1e6, secs);
}

}  // namespace

void add_explain_command(CLI::App& app) {
  auto args = std::make_shared<ExplainArgs>();
  auto* cmd = app.add_subcommand(
      "explain", "Draw every stage of Mask R-CNN for one photo into a self-contained HTML page");
  cmd->add_option("image", args->image, "The photo (JPEG, PNG or BMP)")->required();
  cmd->add_option("-o,--output", args->output, "The HTML report to write")
      ->default_str("<image stem>_explain.html");
  add_model_flags(cmd, args->model, "the sidecar's, or COCO names for 91 classes");
  cmd->add_option("--detections", args->detections,
                  "Follow this many detections through the box and mask heads")
      ->check(CLI::Range(0, 50))
      ->capture_default_str();
  cmd->add_option("--proposals", args->proposals, "Draw this many RPN boxes before and after NMS")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--score-thresh", args->score_thresh, "Minimum detection score (predict's default)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--mask-thresh", args->mask_thresh, "Mask probability threshold")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--max-pixels", args->max_pixels, "Refuse larger images, from their header")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([args] { run_explain(*args); });
}

}  // namespace maskrcnn::cli
