// `maskrcnn predict` on a video file or a camera: every processed frame is
// segmented, its instances tracked, and the annotated video, JSON Lines and
// MOTS outputs streamed to temporaries that are finalised at the end, on
// SIGINT/SIGTERM, or where a damaged file breaks off.
#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <optional>

#include "commands.h"
#include "engine/progress.h"
#include "maskrcnn/maskrcnn.h"

namespace maskrcnn::cli {
namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted.store(true); }

// SIGINT/SIGTERM set g_interrupted while a video runs: the frame in flight
// finishes and the outputs are finalised. The previous handlers come back after.
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

void print_detections(const VideoFrame& frame, const Detections& dets, const std::vector<int64_t>& ids,
                      const std::vector<std::string>& names) {
  auto boxes = dets.boxes.to(at::kFloat).cpu().contiguous();
  auto scores = dets.scores.to(at::kFloat).cpu().contiguous();
  auto labels = dets.labels.cpu().contiguous();
  for (int64_t k = 0; k < dets.size(); ++k) {
    const int64_t label = labels.data_ptr<int64_t>()[k];
    const float* b = boxes.data_ptr<float>() + 4 * k;
    fmt::print("{}\t{}\t{}\t{:.4f}\t{:.1f}\t{:.1f}\t{:.1f}\t{:.1f}\n", frame.index, ids[k],
               label >= 0 && static_cast<size_t>(label) < names.size() ? names[label] : std::to_string(label),
               scores.data_ptr<float>()[k], b[0], b[1], b[2], b[3]);
  }
}

}  // namespace

int predict_video(const MaskRCNN& model, const VideoJob& job) {
  InterruptScope interrupt_scope;
  VideoReadOptions ro;
  ro.start_s = job.flags.start_s;
  ro.every = job.flags.every;
  ro.max_frames = job.flags.max_frames;
  ro.max_pixels = job.max_pixels;
  ro.interrupt = &g_interrupted;
  VideoReader video = job.camera ? VideoReader::open_camera(job.source, ro) : VideoReader::open_file(job.source, ro);

  // Cameras: frames are written as often as the camera's rate asks, so the
  // recording plays in real time however many frames the model dropped.
  const double out_fps = job.camera ? video.fps() : video.fps() / job.flags.every;
  std::optional<VideoWriter> out_video;
  std::optional<VideoJsonLinesWriter> out_json;
  std::optional<MotsWriter> out_mots;
  if (!job.flags.output_video.empty())
    out_video.emplace(job.flags.output_video, video.width(), video.height(), out_fps);
  if (!job.output_json.empty()) out_json.emplace(job.output_json, job.class_names, job.mask_thresh);
  if (!job.flags.output_mots.empty()) out_mots.emplace(job.flags.output_mots, job.mask_thresh);

  TrackerOptions to;
  to.ttl = job.flags.track_ttl;
  to.min_iou = job.flags.track_iou;
  to.mask_threshold = job.mask_thresh;
  Tracker tracker(to);
  DrawOptions draw;
  draw.mask_threshold = job.mask_thresh;
  draw.class_names = job.class_names;

  const int64_t total = video.frames_to_return();
  engine::ProgressBar progress(video.name(), total > 0 ? static_cast<size_t>(total) : 0);
  progress.set_unit("frames/s");
  VideoFrame frame;
  int64_t done = 0, tracks_seen = 0;
  while (video.next(frame)) {
    const auto dets = model.predict({frame.rgb}).at(0);
    const auto ids = tracker.update(dets);
    for (int64_t id : ids) tracks_seen = std::max(tracks_seen, id);
    if (out_video) {
      if (frame.rgb.size(1) != video.height() || frame.rgb.size(2) != video.width())
        throw Error(video.name() + ": the frame size changes at frame " + std::to_string(frame.index) +
                    "; the output video keeps the frames before it");
      draw.track_ids = ids;
      const auto annotated = draw_detections(frame.rgb, dets, draw);
      const int64_t due = job.camera ? static_cast<int64_t>(frame.time_s * out_fps) + 1 : out_video->frames_written() + 1;
      do out_video->write(annotated);
      while (out_video->frames_written() < due);
    }
    if (out_json) out_json->add_frame(frame, dets, ids);
    if (out_mots) out_mots->add_frame(frame, dets, ids);
    if (!out_video && !out_json && !out_mots) print_detections(frame, dets, ids, job.class_names);
    progress.update(static_cast<size_t>(++done), fmt::format("frame {}, {} tracks", frame.index, tracker.live_tracks()));
  }
  if (out_video) out_video->close();
  if (out_json) out_json->close();
  if (out_mots) out_mots->close();
  progress.finish(fmt::format("{} tracks", tracks_seen));
  if (video.frames_dropped() > 0)
    fmt::print(stderr, "{}: {} frames arrived while the model was busy and were skipped\n", video.name(),
               video.frames_dropped());

  if (video.truncated()) {
    fmt::print(stderr,
               "maskrcnn: error: {}: the video breaks off at frame {} of {} (truncated or damaged); "
               "the outputs hold the {} frames processed before it\n",
               video.name(), video.end_index(), video.frame_count(), done);
    return 1;
  }
  if (done == 0 && !g_interrupted.load()) {
    fmt::print(stderr, "maskrcnn: error: {}: no frames could be decoded\n", video.name());
    return 1;
  }
  if (g_interrupted.load()) {
    fmt::print(stderr, "{}: interrupted after {} frames; the outputs are complete up to there\n", video.name(), done);
    return job.camera ? 0 : 130;
  }
  return 0;
}

}  // namespace maskrcnn::cli

namespace maskrcnn::cli {

void add_video_flags(CLI::App* cmd, VideoFlags& f) {
  cmd->add_option("--camera", f.camera, "Read a camera live instead of files: an index (0 = /dev/video0), "
                                        "a device path or a stream URL; stop with Ctrl-C");
  cmd->add_option("--every", f.every, "Videos: process every K-th frame")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-frames", f.max_frames, "Videos: stop after this many processed frames (0: all)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--start-s", f.start_s, "Videos: start at this time in seconds")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--output-video", f.output_video,
                  "Videos: write the annotated video here (.mp4 H.264, .mkv, .avi MJPEG, .webm VP8)");
  cmd->add_option("--output-mots", f.output_mots, "Videos: write the tracks in the MOTS text format here");
  cmd->add_option("--track-ttl", f.track_ttl, "Videos: frames a track lives on without a match")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--track-iou", f.track_iou, "Videos: the least mask IoU that continues a track")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
}

}  // namespace maskrcnn::cli
