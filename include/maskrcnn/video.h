// Video input and output (OpenCV's FFmpeg backend underneath, not exposed),
// and the per-frame results files of a tracked video.
//
//   maskrcnn::VideoReader video = maskrcnn::VideoReader::open_file("street.mp4");
//   maskrcnn::VideoWriter out("annotated.mp4", video.width(), video.height(), video.fps());
//   maskrcnn::Tracker tracker;
//   maskrcnn::VideoFrame frame;
//   while (video.next(frame)) {
//     auto dets = model.predict({frame.rgb})[0];
//     auto ids = tracker.update(dets);
//     maskrcnn::DrawOptions draw;
//     draw.track_ids = ids;
//     out.write(maskrcnn::draw_detections(frame.rgb, dets, draw));
//   }
//   out.close();   // renames the finished file into place
//
// Cameras: VideoReader::open_camera("0") (or "/dev/video2", or a stream URL)
// reads frames on a thread of its own and next() returns the newest one,
// dropping those that arrived while the caller was busy.
#pragma once
#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

struct VideoFrame {
  int64_t index = 0;   // frame number in the source (0 = first frame of the file)
  double time_s = 0;   // index / fps for files; seconds since opening for cameras
  at::Tensor rgb;      // uint8 [3, H, W]
};

struct VideoReadOptions {
  double start_s = 0;         // files: begin at this time
  int every = 1;              // files: every K-th frame from the start
  int64_t max_frames = 0;     // frames to return at most (0: all)
  int64_t max_pixels = int64_t{1} << 28;  // refuse larger frames
  // Set (e.g. by a SIGINT handler) to make next() return false promptly.
  const std::atomic<bool>* interrupt = nullptr;
};

class VideoReader {
 public:
  // Throws maskrcnn::Error naming the file when it is missing or not a video.
  static VideoReader open_file(const std::string& path, const VideoReadOptions& options = {});
  // A camera index ("0"), a device path or a stream URL, read live (see above).
  static VideoReader open_camera(const std::string& device, const VideoReadOptions& options = {});
  ~VideoReader();
  VideoReader(VideoReader&&) noexcept;
  VideoReader& operator=(VideoReader&&) noexcept;

  // The next frame to process; false at the end, on interrupt, or when the
  // stream breaks (see truncated()).
  bool next(VideoFrame& frame);

  const std::string& name() const;
  bool is_camera() const;
  int64_t width() const;
  int64_t height() const;
  double fps() const;               // the source's frame rate (cameras: as reported, else 30)
  int64_t frame_count() const;      // frames the file says it holds (-1: unknown, cameras)
  int64_t frames_to_return() const; // what next() will return given the options (-1: unknown)
  int64_t frames_returned() const;
  int64_t frames_dropped() const;   // cameras: frames replaced by newer ones before next() took them
  // Files: the stream ended before the frame count its header gives (a
  // truncated or damaged file). Meaningful once next() has returned false.
  bool truncated() const;
  int64_t end_index() const;        // the index of the frame the stream broke at

 private:
  struct State;
  explicit VideoReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Writes RGB frames to a video file (codec chosen by extension: .mp4/.m4v/.mov
// MPEG-4, .avi Motion JPEG, .mkv MPEG-4, .webm VP8). Frames go to a temporary
// name beside the target; close() (or the destructor, e.g. while an exception
// unwinds) finalises the container and renames it into place, so the target is
// always a complete, playable file. The encoders' 4:2:0 pictures have even
// sizes: an odd width or height loses its last column or row in the file.
class VideoWriter {
 public:
  // Throws maskrcnn::Error naming the path when no encoder can write it.
  VideoWriter(const std::string& path, int64_t width, int64_t height, double fps);
  ~VideoWriter();
  VideoWriter(VideoWriter&&) noexcept;
  VideoWriter& operator=(VideoWriter&&) noexcept;

  void write(const at::Tensor& rgb_u8);  // uint8 [3, H, W] of the writer's size
  void close();                          // idempotent
  int64_t frames_written() const;
  const std::string& path() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// --output-json for videos: JSON Lines, one object per processed frame:
//   {"frame": 12, "time_s": 0.4, "width": 640, "height": 360,
//    "detections": [{"track_id": 3, "category_id": 1, "category_name": "person",
//                    "score": 0.98, "bbox": [x, y, w, h],
//                    "segmentation": {"size": [h, w], "counts": "..."}}]}
// The detections are what CocoResultsWriter writes for an image, plus track_id.
// Written to a temporary and renamed by close() (or the destructor).
class VideoJsonLinesWriter {
 public:
  VideoJsonLinesWriter(const std::string& path, std::vector<std::string> class_names,
                       double mask_threshold = 0.5);
  ~VideoJsonLinesWriter();
  void add_frame(const VideoFrame& frame, const Detections& dets,
                 const std::vector<int64_t>& track_ids);
  void close();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// --output-mots: the MOTS challenge's text format, a line per instance:
//   <frame> <object id> <class id> <height> <width> <COCO RLE counts>
// with object id = class id * 1000 + track id % 1000 (MOTS tools take the class
// from id // 1000). MOTS allows no overlap: a pixel belongs to the highest-
// scoring detection that covers it; instances left empty are not written.
class MotsWriter {
 public:
  MotsWriter(const std::string& path, double mask_threshold = 0.5);
  ~MotsWriter();
  void add_frame(const VideoFrame& frame, const Detections& dets,
                 const std::vector<int64_t>& track_ids);
  void close();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// True for the file names `maskrcnn predict` treats as videos (by extension:
// mp4 m4v mov mkv avi webm mpg mpeg wmv flv ts 3gp ogv y4m).
bool is_video_path(const std::string& path);

}  // namespace maskrcnn
