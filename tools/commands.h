// Each `maskrcnn` sub-command lives in its own cmd_<name>.cpp and registers
// itself on the top-level CLI11 app. A command's callback throws maskrcnn::Error
// for bad input; main() turns that into a one-line message and exit code 1.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace maskrcnn {
struct ModelOverrides;
class MaskRCNN;
}

namespace maskrcnn::cli {

void add_predict_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_make_shapes_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_explain_command(CLI::App& app);

// --max-annotation-mb on commands that read COCO files: sets the process-wide
// limit of maskrcnn::set_max_annotation_file_bytes when the command runs.
void add_annotation_size_limit(CLI::App* cmd, double& megabytes);
void apply_annotation_size_limit(double megabytes);

// --conv winograd|direct and --precision f32|bf16 on commands that run the
// model (set_conv_algorithm, set_inference_precision).
struct ConvFlags {
  std::string algorithm = "winograd";
  std::string precision = "f32";
  CLI::Option* algorithm_option = nullptr;  // to tell a given --conv from the default
};
void add_conv_options(CLI::App* cmd, ConvFlags& flags);
// --device cpu|cuda|cuda:N on commands that run the model (parse_device).
void add_device_option(CLI::App* cmd, std::string& device);
void apply_conv_options(const ConvFlags& flags);

// The flags that choose and load a model, alike on `predict` and `serve`:
// --weights --arch --num-classes --labels --min-size --max-size --threads
// --conv --precision --device. Each command adds its own thresholds.
struct ModelFlags {
  std::string weights;  // empty: torchvision's cache (default_weights_path)
  std::string arch;
  int num_classes = 0;
  std::string labels_file;
  int min_size = 800, max_size = 1333;
  bool min_size_given = false, max_size_given = false;  // else the sidecar's or the defaults
  int threads = 0;
  ConvFlags conv;
  std::string device = "cpu";
};
void add_model_flags(CLI::App* cmd, ModelFlags& flags, const std::string& labels_default);
// The weights' path (throws missing_weights_message when absent) and the overrides
// the flags give (arch, classes, sizes; thresholds are the command's).
std::string model_weights_path(const ModelFlags& flags);
void apply_model_flags(const ModelFlags& flags, ModelOverrides& overrides);

// `predict` on a video file or camera (predict_video.cpp).
struct VideoFlags {
  std::string camera;  // --camera: an index, a device path or a stream URL
  int every = 1;
  int64_t max_frames = 0;
  double start_s = 0;
  std::string output_video, output_mots;
  int track_ttl = 8;
  double track_iou = 0.5;
};
void add_video_flags(CLI::App* cmd, VideoFlags& flags);
struct VideoJob {
  std::string source;  // the file, or the camera
  bool camera = false;
  VideoFlags flags;
  std::string output_json;  // JSON Lines
  double mask_thresh = 0.5;
  int64_t max_pixels = 0;
  std::vector<std::string> class_names;
};
// Returns the exit code: 0, 1 for a truncated or undecodable video, 130 for a
// file interrupted by SIGINT/SIGTERM (a camera stopped so exits 0).
int predict_video(const MaskRCNN& model, const VideoJob& job);

// --labels FILE: one class name per line, line i = label i. Throws
// maskrcnn::Error for a missing or empty file.
std::vector<std::string> read_labels(const std::string& path);
// The error for --weights (or the default checkpoint) not being there: where
// to put torchvision's COCO checkpoint.
std::string missing_weights_message(const std::string& path);

}  // namespace maskrcnn::cli
