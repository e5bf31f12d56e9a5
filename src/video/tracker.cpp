// Tracker: greedy IoU matching of each frame's detections to live tracks.
#include "maskrcnn/tracker.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <tuple>

namespace maskrcnn {
namespace {

using Box = std::array<float, 4>;

// A binary mask kept only over its box: uint8 [h, w] on the CPU at (x0, y0).
struct CroppedMask {
  int64_t x0 = 0, y0 = 0, area = 0;
  at::Tensor bits;
};

struct Track {
  int64_t id = 0, label = 0;
  Box box{};
  CroppedMask mask;
  bool has_mask = false;
  int missed = 0;  // frames in a row without a match
};

double box_iou(const Box& a, const Box& b) {
  const double iw = std::min(a[2], b[2]) - std::max(a[0], b[0]);
  const double ih = std::min(a[3], b[3]) - std::max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0.0;
  const double inter = iw * ih;
  const double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return uni > 0 ? inter / uni : 0.0;
}

int64_t intersection(const CroppedMask& a, const CroppedMask& b) {
  const int64_t ah = a.bits.size(0), aw = a.bits.size(1);
  const int64_t bh = b.bits.size(0), bw = b.bits.size(1);
  const int64_t x0 = std::max(a.x0, b.x0), x1 = std::min(a.x0 + aw, b.x0 + bw);
  const int64_t y0 = std::max(a.y0, b.y0), y1 = std::min(a.y0 + ah, b.y0 + bh);
  int64_t count = 0;
  const uint8_t* pa = a.bits.data_ptr<uint8_t>();
  const uint8_t* pb = b.bits.data_ptr<uint8_t>();
  for (int64_t y = y0; y < y1; ++y) {
    const uint8_t* ra = pa + (y - a.y0) * aw - a.x0;
    const uint8_t* rb = pb + (y - b.y0) * bw - b.x0;
    for (int64_t x = x0; x < x1; ++x) count += ra[x] & rb[x];
  }
  return count;
}

// Mask IoU where both masks are non-empty, else box IoU. Pairs whose areas
// differ too much for IoU >= min_iou (IoU <= smaller / larger) are not counted.
double track_iou(const Track& t, const Box& box, const CroppedMask* mask, double min_iou) {
  if (t.has_mask && mask != nullptr && t.mask.area > 0 && mask->area > 0) {
    const double bound = static_cast<double>(std::min(t.mask.area, mask->area)) /
                         static_cast<double>(std::max(t.mask.area, mask->area));
    if (bound < min_iou) return bound;
    const int64_t inter = intersection(t.mask, *mask);
    return static_cast<double>(inter) / static_cast<double>(t.mask.area + mask->area - inter);
  }
  return box_iou(t.box, box);
}

}  // namespace

struct Tracker::State {
  TrackerOptions options;
  std::vector<Track> tracks;
  int64_t next_id = 1;
};

Tracker::Tracker(TrackerOptions options) : state_(std::make_unique<State>()) {
  state_->options = options;
}
Tracker::~Tracker() = default;
Tracker::Tracker(Tracker&&) noexcept = default;
Tracker& Tracker::operator=(Tracker&&) noexcept = default;

size_t Tracker::live_tracks() const { return state_->tracks.size(); }
void Tracker::reset() { state_->tracks.clear(); }
const TrackerOptions& Tracker::options() const { return state_->options; }

std::vector<int64_t> Tracker::update(const Detections& dets) {
  State& s = *state_;
  const int64_t n = dets.size();
  std::vector<Box> boxes(n);
  std::vector<int64_t> labels(n);
  std::vector<CroppedMask> masks;
  if (n > 0) {
    auto b = dets.boxes.to(at::kFloat).cpu().contiguous();
    auto l = dets.labels.to(at::kLong).cpu().contiguous();
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(b.data_ptr<float>() + 4 * i, 4, boxes[i].begin());
      labels[i] = l.data_ptr<int64_t>()[i];
    }
  }
  const bool with_masks = n > 0 && static_cast<int64_t>(dets.masks.size()) == n;
  if (with_masks) {
    masks.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const InstanceMask& m = dets.masks[i];
      masks[i].x0 = m.x0;
      masks[i].y0 = m.y0;
      masks[i].bits = m.probs.defined() && m.probs.numel() > 0
                          ? m.probs.ge(s.options.mask_threshold).to(at::kByte).cpu().contiguous()
                          : at::zeros({0, 0}, at::kByte);
      masks[i].area = masks[i].bits.sum().item<int64_t>();
    }
  }

  // Every same-class (detection, track) pair at IoU >= min_iou, best first.
  std::vector<std::tuple<double, int64_t, size_t>> pairs;
  for (int64_t i = 0; i < n; ++i) {
    for (size_t t = 0; t < s.tracks.size(); ++t) {
      const Track& track = s.tracks[t];
      if (track.label != labels[i]) continue;
      if (box_iou(track.box, boxes[i]) <= 0 && !(track.has_mask && with_masks)) continue;
      const double iou = track_iou(track, boxes[i], with_masks ? &masks[i] : nullptr, s.options.min_iou);
      if (iou >= s.options.min_iou) pairs.emplace_back(iou, i, t);
    }
  }
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });

  std::vector<int64_t> ids(n, 0);
  std::vector<bool> track_taken(s.tracks.size(), false);
  for (const auto& [iou, i, t] : pairs) {
    if (ids[i] != 0 || track_taken[t]) continue;
    ids[i] = s.tracks[t].id;
    track_taken[t] = true;
  }

  // Matched tracks take the new box and mask; the rest age, and end past ttl.
  std::vector<Track> next;
  next.reserve(s.tracks.size() + n);
  for (size_t t = 0; t < s.tracks.size(); ++t) {
    if (track_taken[t]) continue;
    Track track = std::move(s.tracks[t]);
    if (++track.missed <= s.options.ttl) next.push_back(std::move(track));
  }
  for (int64_t i = 0; i < n; ++i) {
    Track track;
    track.id = ids[i] != 0 ? ids[i] : (ids[i] = s.next_id++);
    track.label = labels[i];
    track.box = boxes[i];
    track.has_mask = with_masks;
    if (with_masks) track.mask = std::move(masks[i]);
    next.push_back(std::move(track));
  }
  s.tracks = std::move(next);
  return ids;
}

}  // namespace maskrcnn
