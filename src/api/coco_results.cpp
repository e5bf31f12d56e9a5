#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "maskrcnn/results.h"
#include "maskrcnn/rle.h"

namespace maskrcnn {

struct CocoResultsWriter::State {
  std::vector<std::string> names;
  nlohmann::json records = nlohmann::json::array();
};

CocoResultsWriter::CocoResultsWriter() : state_(std::make_unique<State>()) {}
CocoResultsWriter::~CocoResultsWriter() = default;

void CocoResultsWriter::set_category_names(std::vector<std::string> names) {
  state_->names = std::move(names);
}

void CocoResultsWriter::add(int64_t image_id, const std::string& file_name,
                            const Detections& dets, double mask_threshold) {
  auto boxes = dets.boxes.to(at::kFloat).cpu().contiguous();
  auto scores = dets.scores.to(at::kFloat).cpu().contiguous();
  auto labels = dets.labels.cpu().contiguous();
  const int64_t h = dets.image_height, w = dets.image_width;
  for (int64_t i = 0; i < dets.size(); ++i) {
    const float* b = boxes[i].data_ptr<float>();
    const int64_t label = labels[i].item<int64_t>();
    nlohmann::json r;
    if (!file_name.empty()) r["file_name"] = file_name;
    r["image_id"] = image_id;
    r["category_id"] = label;
    if (label >= 0 && static_cast<size_t>(label) < state_->names.size())
      r["category_name"] = state_->names[label];
    r["score"] = scores[i].item<float>();
    r["bbox"] = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
    // The mask's window in the image, RLE-encoded without a full-image buffer.
    const auto& m = dets.masks.at(i);
    Rle rle;
    if (m.probs.numel() > 0) {
      auto bin = m.probs.ge(mask_threshold).to(at::kByte).cpu().contiguous();
      rle = rle_encode_window(bin.data_ptr<uint8_t>(), static_cast<int>(bin.size(0)), static_cast<int>(bin.size(1)),
                              static_cast<int>(m.y0), static_cast<int>(m.x0), static_cast<int>(h), static_cast<int>(w));
    } else {
      rle = rle_encode_window(nullptr, 0, 0, 0, 0, static_cast<int>(h), static_cast<int>(w));
    }
    r["segmentation"] = {{"size", {h, w}}, {"counts", rle_to_string(rle)}};
    state_->records.push_back(std::move(r));
  }
}

size_t CocoResultsWriter::size() const { return state_->records.size(); }

std::string CocoResultsWriter::to_string() const { return state_->records.dump(); }

void CocoResultsWriter::write(const std::string& path) const {
  io::write_file_atomic(path, to_string());
}

}  // namespace maskrcnn
