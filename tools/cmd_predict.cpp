// `maskrcnn predict`: segment images with a torchvision Mask R-CNN checkpoint.
#include <ATen/Parallel.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "commands.h"
#include "maskrcnn/maskrcnn.h"
#include "maskrcnn/model_info.h"

namespace maskrcnn::cli {
namespace {

struct PredictArgs {
  ModelFlags model;
  double score_thresh = 0.05;
  double mask_thresh = 0.5;
  int64_t max_pixels = int64_t{1} << 28;
  int max_detections = 100;
  std::string output_json;
  std::string output_dir;
  std::vector<std::string> images;
  VideoFlags video;
};

// A video run (one video file, or --camera) or an image run; flags that belong
// to the other kind are refused before the model loads.
bool check_video_inputs(const PredictArgs& a) {
  const bool any_video = std::any_of(a.images.begin(), a.images.end(), is_video_path);
  if (!a.video.camera.empty() && !a.images.empty())
    throw Error("--camera reads the camera alone; give no image or video files with it");
  if (a.video.camera.empty() && a.images.empty()) throw Error("give images, a video file, or --camera");
  if (any_video && a.images.size() > 1)
    throw Error("give one video at a time (its outputs: --output-video, --output-json, --output-mots)");
  const bool video = any_video || !a.video.camera.empty();
  if (video && !a.output_dir.empty()) throw Error("--output-dir is for images; for a video use --output-video");
  if (!video && (!a.video.output_video.empty() || !a.video.output_mots.empty()))
    throw Error("--output-video and --output-mots need a video file or --camera");
  return video;
}

int run_predict(const PredictArgs& a) {
  const bool video = check_video_inputs(a);
  at::set_num_threads(a.model.threads > 0 ? a.model.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  apply_conv_options(a.model.conv);
  const at::Device device = parse_device(a.model.device);  // before the weights are read
  const std::string weights = model_weights_path(a.model);
  ModelOverrides o;
  apply_model_flags(a.model, o);
  o.box_score_thresh = a.score_thresh;
  o.box_detections_per_img = a.max_detections;
  auto model = load_model(weights, o);  // + model_final.json's sizes and names
  const std::vector<std::string> names =
      a.model.labels_file.empty() ? model.class_names() : read_labels(a.model.labels_file);
  model.to(device);

  if (video) {
    VideoJob job;
    job.camera = !a.video.camera.empty();
    job.source = job.camera ? a.video.camera : a.images.front();
    job.flags = a.video;
    job.output_json = a.output_json;
    job.mask_thresh = a.mask_thresh;
    job.max_pixels = a.max_pixels;
    job.class_names = names;
    return predict_video(model, job);
  }
  if (!a.output_dir.empty()) std::filesystem::create_directories(a.output_dir);
  CocoResultsWriter results;
  results.set_category_names(names);
  DrawOptions draw;
  draw.mask_threshold = a.mask_thresh;
  draw.class_names = names;

  int failures = 0;
  std::set<std::string> used_names;
  for (size_t i = 0; i < a.images.size(); ++i) {
    const std::string& path = a.images[i];
    const auto t0 = std::chrono::steady_clock::now();
    try {
      ImageReadOptions ro;
      ro.max_pixels = a.max_pixels;
      auto rgb = read_image(path, ro);
      auto dets = model.predict({rgb}).at(0);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string file_name = std::filesystem::path(path).filename().string();
      results.add(static_cast<int64_t>(i), file_name, dets, a.mask_thresh);
      if (!a.output_dir.empty()) {
        std::string stem = std::filesystem::path(path).stem().string();
        std::string out_name = stem + ".png";
        for (int k = 1; used_names.count(out_name); ++k) out_name = fmt::format("{}_{}.png", stem, k);
        used_names.insert(out_name);
        write_png((std::filesystem::path(a.output_dir) / out_name).string(),
                  draw_detections(rgb, dets, draw));
      }
      fmt::print(stderr, "[{}/{}] {}: {} detections ({:.2f} s)\n", i + 1, a.images.size(), path,
                 dets.size(), secs);
      if (a.output_json.empty() && a.output_dir.empty()) {
        for (int64_t k = 0; k < dets.size(); ++k) {
          const int64_t label = dets.labels[k].item<int64_t>();
          auto b = dets.boxes[k];
          fmt::print("{}\t{}\t{:.4f}\t{:.1f}\t{:.1f}\t{:.1f}\t{:.1f}\n", file_name,
                     label >= 0 && static_cast<size_t>(label) < names.size() ? names[label]
                                                                            : std::to_string(label),
                     dets.scores[k].item<float>(), b[0].item<float>(), b[1].item<float>(),
                     b[2].item<float>(), b[3].item<float>());
        }
      }
    } catch (const Error& e) {
      ++failures;
      fmt::print(stderr, "maskrcnn: error: {}\n", e.what());
    }
  }
  if (!a.output_json.empty()) results.write(a.output_json);
  if (failures > 0) {
    fmt::print(stderr, "maskrcnn: {} of {} images failed\n", failures, a.images.size());
    return 1;
  }
  return 0;
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto args = std::make_shared<PredictArgs>();
  auto* cmd = app.add_subcommand("predict", "Segment images, a video or a camera with a Mask R-CNN checkpoint");
  add_model_flags(cmd, args->model, "COCO names for 91 classes");
  cmd->add_option("--score-thresh", args->score_thresh, "Minimum detection score")->capture_default_str();
  cmd->add_option("--mask-thresh", args->mask_thresh, "Mask probability threshold")->capture_default_str();
  cmd->add_option("--max-pixels", args->max_pixels, "Refuse larger images")->capture_default_str();
  cmd->add_option("--max-detections", args->max_detections, "At most this many detections per image")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--output-json", args->output_json,
                  "Write a COCO results JSON here (videos: JSON Lines, a line per frame, with track ids)");
  cmd->add_option("--output-dir", args->output_dir, "Write one annotated PNG per image here");
  add_video_flags(cmd, args->video);
  cmd->add_option("images", args->images, "Images (JPEG, PNG, ...), or one video (MP4, MKV, AVI, ...)");
  cmd->callback([args] {
    int rc = run_predict(*args);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace maskrcnn::cli
