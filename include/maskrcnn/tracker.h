// Instance tracking across video frames: each detection gets a track id that
// stays the same while the object stays in view.
//
//   maskrcnn::Tracker tracker;                    // ttl 8, IoU >= 0.5
//   for (each frame) {
//     auto dets = model.predict({frame})[0];
//     std::vector<int64_t> ids = tracker.update(dets);   // ids[i] for dets i, >= 1
//   }
//
// A detection is matched to a live track of the same class by mask IoU with
// the track's last mask (box IoU when the detections have no masks), greedily,
// highest IoU first, at IoU >= min_iou. Unmatched detections start new tracks;
// a track unmatched for more than `ttl` frames in a row ends (detectron2's
// VideoVisualizer keeps 8). Ids count up from 1 and are never reused.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

struct TrackerOptions {
  int ttl = 8;                  // frames a track lives on without a match
  double min_iou = 0.5;         // the least IoU that continues a track
  double mask_threshold = 0.5;  // mask probabilities >= this are the object
};

class Tracker {
 public:
  explicit Tracker(TrackerOptions options = {});
  ~Tracker();
  Tracker(Tracker&&) noexcept;
  Tracker& operator=(Tracker&&) noexcept;

  // The next frame's detections (any device; masks may be absent): one track
  // id per detection, in the detections' order.
  std::vector<int64_t> update(const Detections& dets);
  // Tracks alive now (matched within the last `ttl` frames).
  size_t live_tracks() const;
  // Forgets every track; ids keep counting up.
  void reset();
  const TrackerOptions& options() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace maskrcnn
