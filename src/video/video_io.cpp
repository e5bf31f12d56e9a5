// VideoReader and VideoWriter on OpenCV's FFmpeg backend.
#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "maskrcnn/error.h"
#include "maskrcnn/video.h"

namespace fs = std::filesystem;

namespace maskrcnn {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

at::Tensor bgr_to_rgb_tensor(const cv::Mat& bgr) {
  auto out = at::empty({bgr.rows, bgr.cols, 3}, at::kByte);
  cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, out.data_ptr());
  if (bgr.channels() == 1) {
    cv::cvtColor(bgr, rgb, cv::COLOR_GRAY2RGB);
  } else if (bgr.channels() == 4) {
    cv::cvtColor(bgr, rgb, cv::COLOR_BGRA2RGB);
  } else {
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  }
  return out.permute({2, 0, 1}).contiguous();
}

// A camera's frames, read on a thread of its own: only the newest is kept.
struct LiveGrabber {
  std::mutex mu;
  std::condition_variable cv;
  cv::Mat latest;
  int64_t sequence = 0, taken = 0, dropped = 0;
  bool ended = false, stop = false;
  std::thread thread;

  void run(cv::VideoCapture& cap) {
    cv::Mat frame;
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) break;
      }
      if (!cap.read(frame) || frame.empty()) break;
      std::lock_guard<std::mutex> lock(mu);
      if (sequence > taken) ++dropped;  // the previous frame was never taken
      frame.copyTo(latest);
      ++sequence;
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu);
    ended = true;
    cv.notify_all();
  }
};

}  // namespace

bool is_video_path(const std::string& path) {
  static const char* const kVideo[] = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg",
                                       ".mpeg", ".wmv", ".flv", ".ts", ".3gp", ".ogv", ".y4m"};
  const std::string ext = lower_extension(path);
  return std::any_of(std::begin(kVideo), std::end(kVideo), [&](const char* e) { return ext == e; });
}

struct VideoReader::State {
  std::string name;
  VideoReadOptions options;
  cv::VideoCapture cap;
  bool camera = false;
  int64_t width = 0, height = 0, frame_count = -1;
  double fps = 0;
  int64_t next_index = 0;  // files: the index the next read returns
  int64_t returned = 0;
  bool ended = false, truncated = false;
  std::chrono::steady_clock::time_point opened_at;
  std::unique_ptr<LiveGrabber> grabber;

  ~State() {
    if (grabber) {
      {
        std::lock_guard<std::mutex> lock(grabber->mu);
        grabber->stop = true;
      }
      if (grabber->thread.joinable()) grabber->thread.join();
    }
  }
  bool interrupted() const { return options.interrupt && options.interrupt->load(); }
  bool reached_max() const { return options.max_frames > 0 && returned >= options.max_frames; }
};

VideoReader::VideoReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
VideoReader::~VideoReader() = default;
VideoReader::VideoReader(VideoReader&&) noexcept = default;
VideoReader& VideoReader::operator=(VideoReader&&) noexcept = default;

VideoReader VideoReader::open_file(const std::string& path, const VideoReadOptions& options) {
  if (options.every < 1) throw Error(path + ": every must be >= 1");
  if (options.start_s < 0) throw Error(path + ": the start time must be >= 0");
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, not a video");
  auto s = std::make_unique<State>();
  s->name = path;
  s->options = options;
  if (!s->cap.open(path, cv::CAP_FFMPEG) || !s->cap.isOpened())
    throw Error(path + ": not a video that FFmpeg can read (unknown format or damaged header)");
  s->width = static_cast<int64_t>(s->cap.get(cv::CAP_PROP_FRAME_WIDTH));
  s->height = static_cast<int64_t>(s->cap.get(cv::CAP_PROP_FRAME_HEIGHT));
  s->fps = s->cap.get(cv::CAP_PROP_FPS);
  if (!(s->fps > 0 && s->fps < 1000)) s->fps = 30;
  const double count = s->cap.get(cv::CAP_PROP_FRAME_COUNT);
  s->frame_count = count > 0 ? static_cast<int64_t>(std::llround(count)) : -1;
  if (s->width <= 0 || s->height <= 0) throw Error(path + ": the video has no picture stream");
  if (s->width * s->height > options.max_pixels)
    throw Error(path + ": frames of " + std::to_string(s->width) + "x" + std::to_string(s->height) +
                " are over the limit of " + std::to_string(options.max_pixels) + " pixels");
  const int64_t start = static_cast<int64_t>(std::llround(options.start_s * s->fps));
  if (start > 0) {
    if (s->frame_count >= 0 && start >= s->frame_count)
      throw Error(path + ": the start time " + std::to_string(options.start_s) +
                  " s is past the end of the video");
    s->cap.set(cv::CAP_PROP_POS_FRAMES, static_cast<double>(start));
    s->next_index = start;
  }
  return VideoReader(std::move(s));
}

VideoReader VideoReader::open_camera(const std::string& device, const VideoReadOptions& options) {
  auto s = std::make_unique<State>();
  s->options = options;
  s->camera = true;
  const bool numeric = !device.empty() && std::all_of(device.begin(), device.end(), ::isdigit);
  s->name = numeric ? "camera " + device : device;
  bool opened = false;
  try {
    opened = numeric ? s->cap.open(std::stoi(device), cv::CAP_ANY) : s->cap.open(device, cv::CAP_ANY);
  } catch (const std::exception&) {
    opened = false;
  }
  if (!opened || !s->cap.isOpened())
    throw Error(s->name + ": cannot open" + (numeric ? " /dev/video" + device : std::string()) +
                " (no such camera, or it is busy)");
  s->width = static_cast<int64_t>(s->cap.get(cv::CAP_PROP_FRAME_WIDTH));
  s->height = static_cast<int64_t>(s->cap.get(cv::CAP_PROP_FRAME_HEIGHT));
  s->fps = s->cap.get(cv::CAP_PROP_FPS);
  if (!(s->fps > 0 && s->fps < 1000)) s->fps = 30;
  if (s->width * s->height > options.max_pixels)
    throw Error(s->name + ": frames of " + std::to_string(s->width) + "x" + std::to_string(s->height) +
                " are over the limit of " + std::to_string(options.max_pixels) + " pixels");
  s->opened_at = std::chrono::steady_clock::now();
  s->grabber = std::make_unique<LiveGrabber>();
  LiveGrabber* g = s->grabber.get();
  cv::VideoCapture* cap = &s->cap;
  g->thread = std::thread([g, cap] { g->run(*cap); });
  return VideoReader(std::move(s));
}

bool VideoReader::next(VideoFrame& frame) {
  State& s = *state_;
  if (s.ended || s.reached_max() || s.interrupted()) return false;
  cv::Mat bgr;
  if (s.camera) {
    LiveGrabber& g = *s.grabber;
    std::unique_lock<std::mutex> lock(g.mu);
    // Wake now and then to notice an interrupt while the camera is quiet.
    while (g.sequence == g.taken && !g.ended) {
      if (s.interrupted()) return false;
      g.cv.wait_for(lock, std::chrono::milliseconds(100));
    }
    if (g.sequence == g.taken) {
      s.ended = true;
      return false;
    }
    g.latest.copyTo(bgr);
    frame.index = g.sequence - 1;
    g.taken = g.sequence;
    frame.time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.opened_at).count();
  } else {
    // Skip to the next frame of the --every stride (decoding only what it must).
    const int64_t start = static_cast<int64_t>(std::llround(s.options.start_s * s.fps));
    while ((s.next_index - start) % s.options.every != 0) {
      if (!s.cap.grab()) break;
      ++s.next_index;
    }
    if (!s.cap.read(bgr) || bgr.empty()) {
      s.ended = true;
      s.truncated = s.frame_count > 0 && s.next_index + 1 < s.frame_count;
      return false;
    }
    frame.index = s.next_index++;
    frame.time_s = static_cast<double>(frame.index) / s.fps;
  }
  if (bgr.cols != s.width || bgr.rows != s.height) {
    s.width = bgr.cols;  // a stream may change size; the caller sees it in the frame
    s.height = bgr.rows;
  }
  frame.rgb = bgr_to_rgb_tensor(bgr);
  ++s.returned;
  return true;
}

const std::string& VideoReader::name() const { return state_->name; }
bool VideoReader::is_camera() const { return state_->camera; }
int64_t VideoReader::width() const { return state_->width; }
int64_t VideoReader::height() const { return state_->height; }
double VideoReader::fps() const { return state_->fps; }
int64_t VideoReader::frame_count() const { return state_->camera ? -1 : state_->frame_count; }
int64_t VideoReader::frames_returned() const { return state_->returned; }
bool VideoReader::truncated() const { return state_->truncated; }
int64_t VideoReader::end_index() const { return state_->next_index; }

int64_t VideoReader::frames_dropped() const {
  if (!state_->grabber) return 0;
  std::lock_guard<std::mutex> lock(state_->grabber->mu);
  return state_->grabber->dropped;
}

int64_t VideoReader::frames_to_return() const {
  const State& s = *state_;
  if (s.camera || s.frame_count < 0) return s.options.max_frames > 0 ? s.options.max_frames : -1;
  const int64_t start = static_cast<int64_t>(std::llround(s.options.start_s * s.fps));
  const int64_t left = std::max<int64_t>(0, s.frame_count - start);
  const int64_t n = (left + s.options.every - 1) / s.options.every;
  return s.options.max_frames > 0 ? std::min(n, s.options.max_frames) : n;
}

// ---------------------------------------------------------------------------

struct VideoWriter::State {
  std::string path, temp;
  int64_t width = 0, height = 0, written = 0;
  cv::VideoWriter writer;
  bool closed = false;
};

namespace {

// Encoders by container, best first: H.264 plays in browsers; MPEG-4 part 2
// and Motion JPEG are the fallbacks FFmpeg always has.
std::vector<std::string> codecs_for(const std::string& ext) {
  if (ext == ".avi") return {"MJPG"};
  if (ext == ".webm") return {"VP80"};
  if (ext == ".mp4" || ext == ".m4v" || ext == ".mov" || ext == ".mkv") return {"avc1", "mp4v"};
  return {};
}

}  // namespace

VideoWriter::VideoWriter(const std::string& path, int64_t width, int64_t height, double fps)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.path = path;
  s.width = width;
  s.height = height;
  const std::string ext = lower_extension(path);
  const auto codecs = codecs_for(ext);
  if (codecs.empty())
    throw Error(path + ": unknown video extension '" + ext + "' (use .mp4, .mkv, .avi or .webm)");
  if (width <= 0 || height <= 0) throw Error(path + ": the video size must be positive");
  // The container is chosen by extension, so the temporary keeps it.
  const fs::path p(path);
  s.temp = (p.parent_path() / (p.stem().string() + ".tmp" + std::to_string(::getpid()) + ext)).string();
  for (const auto& c : codecs) {
    const int fourcc = cv::VideoWriter::fourcc(c[0], c[1], c[2], c[3]);
    if (s.writer.open(s.temp, cv::CAP_FFMPEG, fourcc, fps > 0 ? fps : 30,
                      cv::Size(static_cast<int>(width), static_cast<int>(height))))
      break;
  }
  if (!s.writer.isOpened()) {
    std::error_code ec;
    fs::remove(s.temp, ec);
    throw Error(path + ": cannot write a video there (no encoder for '" + ext +
                "', or the folder is missing or read-only)");
  }
}

VideoWriter::~VideoWriter() {
  if (!state_) return;
  try {
    close();
  } catch (...) {  // a destructor must not throw; close() reports errors when called
  }
}
VideoWriter::VideoWriter(VideoWriter&&) noexcept = default;
VideoWriter& VideoWriter::operator=(VideoWriter&&) noexcept = default;

void VideoWriter::write(const at::Tensor& rgb_u8) {
  State& s = *state_;
  if (s.closed) throw Error(s.path + ": the video is already closed");
  if (rgb_u8.dim() != 3 || rgb_u8.size(0) != 3 || rgb_u8.size(1) != s.height ||
      rgb_u8.size(2) != s.width || rgb_u8.scalar_type() != at::kByte)
    throw Error(s.path + ": a frame must be uint8 [3, " + std::to_string(s.height) + ", " +
                std::to_string(s.width) + "]");
  auto hwc = rgb_u8.cpu().permute({1, 2, 0}).contiguous();
  cv::Mat rgb(static_cast<int>(s.height), static_cast<int>(s.width), CV_8UC3, hwc.data_ptr());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  s.writer.write(bgr);
  ++s.written;
}

void VideoWriter::close() {
  State& s = *state_;
  if (s.closed) return;
  s.closed = true;
  s.writer.release();  // writes the container's trailer
  std::error_code ec;
  fs::rename(s.temp, s.path, ec);
  if (ec) {
    fs::remove(s.temp, ec);
    throw Error(s.path + ": cannot move the finished video into place");
  }
}

int64_t VideoWriter::frames_written() const { return state_->written; }
const std::string& VideoWriter::path() const { return state_->path; }

}  // namespace maskrcnn
