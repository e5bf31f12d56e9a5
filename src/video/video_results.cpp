// The per-frame results of a tracked video: JSON Lines and MOTS text files,
// streamed to a temporary and renamed into place when complete.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "maskrcnn/error.h"
#include "maskrcnn/results.h"
#include "maskrcnn/rle.h"
#include "maskrcnn/video.h"

namespace maskrcnn {
namespace {

// A text file written line by line under path.tmp.PID (the temporaries that
// io::remove_stale_temporaries knows), then fsynced and renamed by close().
class StreamedFile {
 public:
  explicit StreamedFile(const std::string& path)
      : path_(path), temp_(path + ".tmp." + std::to_string(::getpid())) {
    file_ = std::fopen(temp_.c_str(), "wb");
    if (!file_) throw Error(path + ": cannot write there (missing folder or no permission)");
  }
  ~StreamedFile() {
    try {
      close();
    } catch (...) {  // close() reports errors when called directly
    }
  }
  void write_line(const std::string& line) {
    if (!file_) throw Error(path_ + ": the file is already closed");
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fputc('\n', file_) == EOF)
      throw Error(path_ + ": write failed (disk full?)");
  }
  void close() {
    if (!file_) return;
    const bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
    std::fclose(file_);
    file_ = nullptr;
    std::error_code ec;
    if (ok) std::filesystem::rename(temp_, path_, ec);
    if (!ok || ec) {
      std::filesystem::remove(temp_, ec);
      throw Error(path_ + ": cannot finish writing the file");
    }
  }

 private:
  std::string path_, temp_;
  std::FILE* file_ = nullptr;
};

void check_ids(const Detections& dets, const std::vector<int64_t>& track_ids) {
  if (static_cast<int64_t>(track_ids.size()) != dets.size())
    throw Error("video results: " + std::to_string(track_ids.size()) + " track ids for " +
                std::to_string(dets.size()) + " detections");
}

}  // namespace

struct VideoJsonLinesWriter::State {
  StreamedFile file;
  std::vector<std::string> names;
  double mask_threshold;
  State(const std::string& path, std::vector<std::string> n, double t)
      : file(path), names(std::move(n)), mask_threshold(t) {}
};

VideoJsonLinesWriter::VideoJsonLinesWriter(const std::string& path, std::vector<std::string> class_names,
                                           double mask_threshold)
    : state_(std::make_unique<State>(path, std::move(class_names), mask_threshold)) {}
VideoJsonLinesWriter::~VideoJsonLinesWriter() = default;

void VideoJsonLinesWriter::add_frame(const VideoFrame& frame, const Detections& dets,
                                     const std::vector<int64_t>& track_ids) {
  check_ids(dets, track_ids);
  // The image results' records, so a frame reads exactly like `predict` on it.
  CocoResultsWriter records;
  records.set_category_names(state_->names);
  records.add(frame.index, "", dets, state_->mask_threshold);
  nlohmann::json list = nlohmann::json::parse(records.to_string());
  nlohmann::json detections = nlohmann::json::array();
  for (size_t i = 0; i < list.size(); ++i) {
    nlohmann::json d;
    d["track_id"] = track_ids[i];
    for (auto& [key, value] : list[i].items())
      if (key != "image_id") d[key] = std::move(value);
    detections.push_back(std::move(d));
  }
  nlohmann::json line = {{"frame", frame.index},
                         {"time_s", frame.time_s},
                         {"width", frame.rgb.size(2)},
                         {"height", frame.rgb.size(1)},
                         {"detections", std::move(detections)}};
  state_->file.write_line(line.dump());
}

void VideoJsonLinesWriter::close() { state_->file.close(); }

struct MotsWriter::State {
  StreamedFile file;
  double mask_threshold;
  State(const std::string& path, double t) : file(path), mask_threshold(t) {}
};

MotsWriter::MotsWriter(const std::string& path, double mask_threshold)
    : state_(std::make_unique<State>(path, mask_threshold)) {}
MotsWriter::~MotsWriter() = default;

void MotsWriter::add_frame(const VideoFrame& frame, const Detections& dets,
                           const std::vector<int64_t>& track_ids) {
  check_ids(dets, track_ids);
  const int64_t h = dets.image_height, w = dets.image_width;
  auto labels = dets.labels.defined() ? dets.labels.cpu().contiguous() : at::Tensor();
  // Detections come best first: each takes the pixels no better one holds.
  std::vector<uint8_t> taken(static_cast<size_t>(h * w), 0), mine(static_cast<size_t>(h * w));
  for (int64_t i = 0; i < dets.size(); ++i) {
    std::fill(mine.begin(), mine.end(), 0);
    const InstanceMask& m = dets.masks.at(i);
    int64_t area = 0;
    if (m.probs.numel() > 0) {
      auto bin = m.probs.ge(state_->mask_threshold).to(at::kByte).cpu().contiguous();
      const uint8_t* src = bin.data_ptr<uint8_t>();
      const int64_t mh = bin.size(0), mw = bin.size(1);
      for (int64_t y = 0; y < mh; ++y) {
        for (int64_t x = 0; x < mw; ++x) {
          const size_t at_ = static_cast<size_t>((m.y0 + y) * w + m.x0 + x);
          if (src[y * mw + x] && !taken[at_]) {
            mine[at_] = taken[at_] = 1;
            ++area;
          }
        }
      }
    }
    if (area == 0) continue;
    const int64_t class_id = labels.data_ptr<int64_t>()[i];
    const int64_t object_id = class_id * 1000 + track_ids[i] % 1000;
    const Rle rle = rle_encode(mine.data(), static_cast<int>(h), static_cast<int>(w));
    state_->file.write_line(std::to_string(frame.index) + " " + std::to_string(object_id) + " " +
                            std::to_string(class_id) + " " + std::to_string(h) + " " +
                            std::to_string(w) + " " + rle_to_string(rle));
  }
}

void MotsWriter::close() { state_->file.close(); }

}  // namespace maskrcnn
