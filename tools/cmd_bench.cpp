// `maskrcnn bench`: where the time and memory of a forward pass go, stage by
// stage, with the GFLOP/s each stage reaches against this machine's sgemm.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "io/atomic_file.h"
#include "maskrcnn/maskrcnn.h"
#include "maskrcnn/profile.h"

namespace maskrcnn::cli {
namespace {

struct BenchArgs {
  std::string weights;
  std::string arch = "maskrcnn_resnet50_fpn";
  int threads = 0;
  int reps = 3;
  int warmup = 1;
  double score_thresh = -1;  // < 0: 0.05 with --weights, 0 without
  std::string synthetic = "600x900";
  ConvFlags conv;
  std::string output_json;
  std::vector<std::string> images;
};

// Best of a few 2048^3 single-precision matrix products: the machine's
// practical peak for the dense arithmetic convolutions reduce to.
double sgemm_gflops() {
  const int64_t n = 2048;
  auto a = at::rand({n, n}), b = at::rand({n, n});
  auto c = at::mm(a, b);  // warm-up
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s * 1e-9);
  }
  return best;
}

at::Tensor synthetic_image(const std::string& size) {
  int h = 0, w = 0, end = 0;
  char x = 0;
  if (std::sscanf(size.c_str(), "%d%c%d%n", &h, &x, &w, &end) != 3 || x != 'x' ||
      static_cast<size_t>(end) != size.size() || h <= 0 || w <= 0 || h > 20000 || w > 20000)
    throw Error("--synthetic: expected HEIGHTxWIDTH (e.g. 600x900), got '" + size + "'");
  auto gen = at::detail::createCPUGenerator(0);
  // Smooth noise: a few octaves of upsampled random fields, so the image has
  // structure at every scale, as photos do.
  auto img = at::zeros({1, 3, h, w});
  for (int k = 1; k <= 6; ++k) {
    const int64_t gh = std::max<int64_t>(2, h >> (8 - k)), gw = std::max<int64_t>(2, w >> (8 - k));
    auto field = at::rand({1, 3, gh, gw}, gen);
    img += at::upsample_bilinear2d(field, {h, w}, false) / 6.0;
  }
  return img.squeeze(0).clamp(0, 1);
}

int run_bench(const BenchArgs& a) {
  const int threads =
      a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  apply_conv_options(a.conv);
  // Inputs first: a bad one fails before the model is built.
  std::vector<at::Tensor> images;
  std::vector<std::string> names;
  for (const auto& path : a.images) {
    images.push_back(to_float_image(read_image(path)));
    names.push_back(std::filesystem::path(path).filename().string());
  }
  if (images.empty()) {
    images.push_back(synthetic_image(a.synthetic));
    names.push_back("synthetic " + a.synthetic);
  }
  const Arch arch = parse_arch(a.arch);
  ModelOverrides o;  // a checkpoint brings its own arch
  const double thresh = a.score_thresh >= 0 ? a.score_thresh : (a.weights.empty() ? 0.0 : 0.05);
  o.box_score_thresh = thresh;
  std::optional<MaskRCNN> model;
  if (a.weights.empty()) {
    MaskRCNNConfig cfg;
    cfg.arch = arch;
    cfg.box_score_thresh = thresh;
    if (cfg.arch == Arch::V2) cfg.backbone_norm_eps = 1e-5;
    model.emplace(cfg);
  } else {
    if (!std::filesystem::exists(a.weights)) throw Error("no weights at " + a.weights);
    model.emplace(load_model(a.weights, o));
  }
  model->train(false);

  const double peak_before = peak_rss_mb();
  fmt::print(stderr, "maskrcnn bench: {} image(s), {} warm-up + {} timed pass(es), {} thread(s), {} weights\n",
             images.size(), a.warmup, a.reps, threads, a.weights.empty() ? "random" : a.weights);

  std::vector<std::string> order;                      // stage names, first seen
  std::vector<std::map<std::string, double>> seconds;  // per timed pass, all images
  std::map<std::string, double> gflop, rss_first;      // per pass; peak RSS when it first ended
  std::vector<double> totals;                          // per timed pass
  int64_t detections = 0;
  for (int pass = 0; pass < a.warmup + a.reps; ++pass) {
    StageProfiler profiler;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t dets = 0;
    for (const auto& im : images) dets += model->predict({im}).at(0).size();
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass >= a.warmup) seconds.emplace_back();
    for (const auto& s : profiler.stages()) {
      if (!rss_first.count(s.name)) {
        order.push_back(s.name);
        rss_first[s.name] = s.peak_rss_mb;
      }
      if (pass >= a.warmup) {
        seconds.back()[s.name] = s.seconds;
        gflop[s.name] = s.gflop;
      }
    }
    if (pass >= a.warmup) totals.push_back(total);
    detections = dets;
    fmt::print(stderr, "[{}/{}] {} pass: {:.3f} s\n", pass + 1, a.warmup + a.reps,
               pass < a.warmup ? "warm-up" : "timed", total);
  }
  const double peak = sgemm_gflops();
  const double n = static_cast<double>(images.size());
  // The stages of the median pass, so that they add up to its total.
  std::vector<size_t> by_time(totals.size());
  for (size_t i = 0; i < by_time.size(); ++i) by_time[i] = i;
  std::sort(by_time.begin(), by_time.end(), [&](size_t x, size_t y) { return totals[x] < totals[y]; });
  const size_t mid = by_time[(by_time.size() - 1) / 2];
  const double total = totals[mid] / n;

  fmt::print("machine: {} thread(s); sgemm peak {:.0f} GFLOP/s (at::mm 2048^3, best of 3)\n", threads, peak);
  fmt::print("model: {}, {} weights, score threshold {}, {:.1f} detections per image\n", a.arch,
             a.weights.empty() ? "random" : "checkpoint", thresh, detections / n);
  fmt::print("per image, the median of {} pass(es) over {} image(s); GFLOP counts direct-convolution\n"
             "arithmetic, so Winograd stages pass the sgemm peak by doing less:\n",
             a.reps, images.size());
  fmt::print("{:<26} {:>9} {:>6} {:>9} {:>9} {:>7} {:>10}\n", "stage", "ms", "share", "GFLOP", "GFLOP/s",
             "% peak", "peak RSS");
  nlohmann::json stages = nlohmann::json::array();
  double accounted = 0;
  for (const auto& name : order) {
    const double ms = seconds[mid][name] / n * 1e3;
    const double gf = gflop[name] / n;
    const double rate = ms > 0 ? gf / (ms * 1e-3) : 0;
    accounted += ms;
    fmt::print("{:<26} {:>9.1f} {:>5.1f}% {:>9.2f} {:>9.1f} {:>6.1f}% {:>8.0f}MB\n", name, ms,
               100 * ms / (total * 1e3), gf, rate, gf > 0 ? 100 * rate / peak : 0.0, rss_first[name]);
    stages.push_back({{"name", name}, {"ms", ms}, {"gflop", gf}, {"gflops", rate}, {"peak_rss_mb", rss_first[name]}});
  }
  const double other = total * 1e3 - accounted;
  fmt::print("{:<26} {:>9.1f} {:>5.1f}%\n", "(between stages)", other, 100 * other / (total * 1e3));
  fmt::print("{:<26} {:>9.1f} {:>6} {:>9} {:>9} {:>7} {:>8.0f}MB\n", "total", total * 1e3, "", "", "", "",
             peak_rss_mb());
  fmt::print("peak RSS before the first pass (model and images loaded): {:.0f} MB\n", peak_before);
  if (!a.output_json.empty()) {
    nlohmann::json j{{"threads", threads},
                     {"sgemm_gflops", peak},
                     {"arch", a.arch},
                     {"weights", a.weights},
                     {"images", names},
                     {"detections_per_image", detections / n},
                     {"ms_per_image", total * 1e3},
                     {"peak_rss_mb", peak_rss_mb()},
                     {"stages", stages}};
    io::write_file_atomic(a.output_json, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Time the model stage by stage (ms, GFLOP/s, peak RSS)");
  cmd->add_option("--weights", args->weights,
                  "Checkpoint (.pth); default: a randomly initialised model (same compute)");
  cmd->add_option("--arch", args->arch, "maskrcnn_resnet50_fpn | maskrcnn_resnet50_fpn_v2 (without --weights)")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads (default: all cores)");
  cmd->add_option("--reps", args->reps, "Timed passes over the images (the median is shown)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "Untimed passes first (they show where peak RSS grows)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--score-thresh", args->score_thresh,
                  "Detection score threshold (default: 0.05 with --weights; 0 without, so that 100 "
                  "detections per image reach the mask head and paste)");
  cmd->add_option("--synthetic", args->synthetic, "Without images: one synthetic image of HEIGHTxWIDTH")
      ->capture_default_str();
  add_conv_options(cmd, args->conv);
  cmd->add_option("--output-json", args->output_json, "Also write the table as JSON here");
  cmd->add_option("images", args->images, "Images (JPEG, PNG, BMP); default: one synthetic image");
  cmd->callback([args] {
    int rc = run_bench(*args);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace maskrcnn::cli
