// maskrcnn::Tracker on synthetic detection sequences: rectangles and discs
// with exact 0/1 masks stored over their boxes (as the model pastes them),
// moving, crossing, vanishing, changing class. Identity switches are counted
// against the ground-truth object ids that the scenes carry.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "maskrcnn/tracker.h"

using maskrcnn::Detections;
using maskrcnn::InstanceMask;
using maskrcnn::Tracker;
using maskrcnn::TrackerOptions;

namespace {

constexpr int64_t kH = 200, kW = 300;

// One object in one frame. gt is the test's identity, never shown to the tracker.
struct Obj {
  int gt = 0;
  int64_t label = 1;
  bool disc = false;
  int64_t x = 0, y = 0, w = 0, h = 0;  // rect: corner and size; disc: centre (x, y), radius w
  float score = 0.9f;
};
Obj rect(int gt, int64_t label, double x, double y, int64_t w, int64_t h, float score = 0.9f) {
  return {gt, label, false, std::lround(x), std::lround(y), w, h, score};
}
Obj disc(int gt, int64_t label, double cx, double cy, int64_t r, float score = 0.9f) {
  return {gt, label, true, std::lround(cx), std::lround(cy), r, r, score};
}

// The frame's detections, sorted by descending score as the model gives them;
// order[i] is the index in objs of detection i.
Detections make_frame(const std::vector<Obj>& objs, bool with_masks, std::vector<size_t>* order) {
  order->resize(objs.size());
  std::iota(order->begin(), order->end(), size_t{0});
  std::stable_sort(order->begin(), order->end(),
                   [&](size_t a, size_t b) { return objs[a].score > objs[b].score; });
  const auto n = static_cast<int64_t>(objs.size());
  Detections d;
  d.image_height = kH;
  d.image_width = kW;
  d.boxes = at::zeros({n, 4}, at::kFloat);
  d.scores = at::zeros({n}, at::kFloat);
  d.labels = at::zeros({n}, at::kLong);
  auto b = d.boxes.accessor<float, 2>();
  auto sc = d.scores.accessor<float, 1>();
  auto lb = d.labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    const Obj& o = objs[(*order)[i]];
    int64_t x1 = o.disc ? o.x - o.w : o.x, y1 = o.disc ? o.y - o.w : o.y;
    int64_t x2 = o.disc ? o.x + o.w : o.x + o.w, y2 = o.disc ? o.y + o.w : o.y + o.h;
    x1 = std::clamp<int64_t>(x1, 0, kW), x2 = std::clamp<int64_t>(x2, 0, kW);
    y1 = std::clamp<int64_t>(y1, 0, kH), y2 = std::clamp<int64_t>(y2, 0, kH);
    b[i][0] = x1, b[i][1] = y1, b[i][2] = x2, b[i][3] = y2;
    sc[i] = o.score;
    lb[i] = o.label;
    if (!with_masks) continue;
    at::Tensor probs = at::zeros({y2 - y1, x2 - x1}, at::kFloat);
    auto p = probs.accessor<float, 2>();
    for (int64_t yy = y1; yy < y2; ++yy)
      for (int64_t xx = x1; xx < x2; ++xx) {
        const double dx = xx + 0.5 - o.x, dy = yy + 0.5 - o.y;
        p[yy - y1][xx - x1] = !o.disc || dx * dx + dy * dy <= double(o.w * o.w) ? 1.f : 0.f;
      }
    d.masks.push_back(InstanceMask{x1, y1, probs});
  }
  return d;
}

// Feeds one frame; returns the track ids in objs' order (not detection order).
std::vector<int64_t> step(Tracker& tracker, const std::vector<Obj>& objs, bool with_masks = true) {
  std::vector<size_t> order;
  const Detections d = make_frame(objs, with_masks, &order);
  const std::vector<int64_t> ids = tracker.update(d);
  std::vector<int64_t> out(objs.size(), -1);
  EXPECT_EQ(ids.size(), objs.size());
  for (size_t i = 0; i < ids.size() && i < order.size(); ++i) out[order[i]] = ids[i];
  return out;
}

struct Score {
  int switches = 0;  // a gt object whose id differs from the one it had when last seen
  int shared = 0;    // frames' pairs of distinct gt objects with the same id
  std::set<int64_t> ids;
};

// Runs the tracker over the frames and scores it against the gt ids.
Score run(Tracker& tracker, const std::vector<std::vector<Obj>>& frames, bool with_masks = true) {
  Score s;
  std::map<int, int64_t> last;
  for (const auto& objs : frames) {
    const std::vector<int64_t> ids = step(tracker, objs, with_masks);
    std::map<int64_t, int> owner;
    for (size_t k = 0; k < objs.size(); ++k) {
      auto [it, fresh] = owner.emplace(ids[k], objs[k].gt);
      if (!fresh && it->second != objs[k].gt) ++s.shared;
      auto seen = last.find(objs[k].gt);
      if (seen != last.end() && seen->second != ids[k]) ++s.switches;
      last[objs[k].gt] = ids[k];
      s.ids.insert(ids[k]);
    }
  }
  return s;
}

TEST(Tracker, CrossingObjectsKeepTheirIds) {
  // Two discs (r 20) of one class cross, vertically offset by 8 px: their
  // masks overlap for ~10 frames, at the crossing with IoU 0.60 against the
  // other's last mask (above min_iou), but 0.78 against their own, so only
  // best-first matching keeps them apart. Scores alternate the detection order.
  std::vector<std::vector<Obj>> frames;
  for (int t = 0; t < 46; ++t)
    frames.push_back({disc(0, 3, 60 + 4 * t, 90, 20, t % 2 ? 0.9f : 0.7f),
                      disc(1, 3, 240 - 4 * t, 98, 20, 0.8f)});
  Tracker tracker;
  const Score s = run(tracker, frames);
  EXPECT_EQ(s.switches, 0);
  EXPECT_EQ(s.shared, 0);
  EXPECT_EQ(s.ids, (std::set<int64_t>{1, 2}));
}

// A rect visible 3 frames, then absent `gap` frames (a far disc of another
// class stays in view), then back in place. Returns {id before, id after,
// largest id handed out before the return}.
std::array<int64_t, 3> id_across_gap(int ttl, int gap) {
  TrackerOptions options;
  options.ttl = ttl;
  Tracker tracker(options);
  const Obj target = rect(0, 1, 40, 40, 50, 40), anchor = disc(1, 2, 230, 140, 25, 0.8f);
  int64_t before = 0, anchor_id = 0, largest = 0;
  for (int t = 0; t < 3 + gap; ++t) {
    std::vector<Obj> objs{anchor};
    if (t < 3) objs.push_back(target);
    const auto ids = step(tracker, objs);
    if (t == 0) anchor_id = ids[0];
    EXPECT_EQ(ids[0], anchor_id) << "the anchor never leaves, frame " << t;
    if (t < 3) before = ids[1];
    for (int64_t id : ids) largest = std::max(largest, id);
  }
  const auto ids = step(tracker, {anchor, target});
  EXPECT_EQ(ids[0], anchor_id);
  return {before, ids[1], largest};
}

TEST(Tracker, TrackOutlivesGapsUpToTtlFrames) {
  // {ttl, frames absent, id kept}: unmatched for MORE than ttl frames ends a track.
  struct Case { int ttl, gap; bool kept; };
  for (const Case c : {Case{8, 5, true}, Case{8, 10, false}, Case{8, 8, true}, Case{8, 9, false},
                       Case{3, 3, true}, Case{3, 4, false}, Case{0, 1, false}}) {
    SCOPED_TRACE(testing::Message() << "ttl " << c.ttl << ", absent " << c.gap);
    const auto [before, after, largest] = id_across_gap(c.ttl, c.gap);
    if (c.kept) {
      EXPECT_EQ(after, before);
    } else {
      EXPECT_NE(after, before);
      EXPECT_GT(after, largest);  // new ids count up, never reuse
    }
  }
}

TEST(Tracker, ClassChangeStartsANewTrack) {
  Tracker tracker;
  const int64_t a = step(tracker, {disc(0, 1, 100, 100, 30)})[0];
  const int64_t b = step(tracker, {disc(0, 2, 100, 100, 30)})[0];  // same mask, other class
  EXPECT_NE(b, a);
  EXPECT_GT(b, a);
  // Two identical masks of different classes in one frame are two tracks,
  // each continued by its own class in the next frame.
  Tracker two;
  const auto first = step(two, {rect(0, 5, 60, 60, 40, 40), rect(1, 6, 60, 60, 40, 40, 0.8f)});
  EXPECT_NE(first[0], first[1]);
  const auto second = step(two, {rect(1, 6, 62, 60, 40, 40), rect(0, 5, 62, 60, 40, 40, 0.8f)});
  EXPECT_EQ(second[0], first[1]);
  EXPECT_EQ(second[1], first[0]);
}

TEST(Tracker, EmptyFramesReturnNothingAndTracksSurvive) {
  Tracker tracker;  // ttl 8
  const int64_t id = step(tracker, {rect(0, 1, 100, 50, 40, 60)})[0];
  Detections empty;
  empty.image_height = kH, empty.image_width = kW;
  empty.boxes = at::zeros({0, 4}, at::kFloat);
  empty.scores = at::zeros({0}, at::kFloat);
  empty.labels = at::zeros({0}, at::kLong);
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(tracker.update(empty).empty());
  EXPECT_TRUE(tracker.update(Detections{}).empty());  // undefined tensors: 0 detections too
  EXPECT_EQ(tracker.live_tracks(), 1u);
  EXPECT_EQ(step(tracker, {rect(0, 1, 101, 50, 40, 60)})[0], id);
  // A tracker that has only seen empty frames starts ids at 1.
  Tracker fresh;
  EXPECT_TRUE(fresh.update(empty).empty());
  EXPECT_EQ(fresh.live_tracks(), 0u);
  EXPECT_EQ(step(fresh, {rect(0, 1, 10, 10, 20, 20)})[0], 1);
}

TEST(Tracker, BoxIouWithoutMasks) {
  // Two boxes of one class, one moving right and one down, no masks at all.
  std::vector<std::vector<Obj>> frames;
  for (int t = 0; t < 20; ++t)
    frames.push_back({rect(0, 1, 20 + 3 * t, 30, 40, 30), rect(1, 1, 200, 20 + 4 * t, 30, 50, 0.5f)});
  Tracker tracker;
  const Score s = run(tracker, frames, /*with_masks=*/false);
  EXPECT_EQ(s.switches, 0);
  EXPECT_EQ(s.shared, 0);
  EXPECT_EQ(s.ids, (std::set<int64_t>{1, 2}));
}

TEST(Tracker, MasksNotBoxesDecideWhenPresent) {
  // Same box twice, but the mask moves from its left half to its right half:
  // box IoU 1, mask IoU 0. With masks that is a new object; without, the same.
  auto frame = [](bool left, bool with_masks) {
    Detections d;
    d.image_height = kH, d.image_width = kW;
    d.boxes = at::tensor({100.f, 80.f, 140.f, 120.f}).view({1, 4});
    d.scores = at::tensor({0.9f});
    d.labels = at::tensor({int64_t{1}});
    at::Tensor probs = at::zeros({40, 40}, at::kFloat);
    probs.narrow(1, left ? 0 : 20, 20).fill_(1.f);
    if (with_masks) d.masks.push_back(InstanceMask{100, 80, probs});
    return d;
  };
  Tracker masked;
  const int64_t a = masked.update(frame(true, true)).at(0);
  EXPECT_NE(masked.update(frame(false, true)).at(0), a);
  Tracker boxes;
  const int64_t b = boxes.update(frame(true, false)).at(0);
  EXPECT_EQ(boxes.update(frame(false, false)).at(0), b);
}

TEST(Tracker, FarJumpStartsANewTrackAndOldOneLingers) {
  Tracker tracker;
  EXPECT_EQ(step(tracker, {rect(0, 1, 20, 20, 40, 40)})[0], 1);
  EXPECT_EQ(step(tracker, {rect(0, 1, 200, 140, 40, 40)})[0], 2);  // IoU 0 < min_iou
  EXPECT_EQ(tracker.live_tracks(), 2u);
  // Back where track 1 last was (within ttl): its last mask still matches.
  EXPECT_EQ(step(tracker, {rect(0, 1, 20, 20, 40, 40)})[0], 1);
  // A 40 px box shifted by 20 px: IoU 1/3, below the default 0.5 -> new id;
  // with min_iou 0.3 it continues.
  EXPECT_EQ(step(tracker, {rect(0, 1, 40, 20, 40, 40)})[0], 3);
  TrackerOptions loose;
  loose.min_iou = 0.3;
  Tracker lenient(loose);
  const int64_t id = step(lenient, {rect(0, 1, 20, 20, 40, 40)})[0];
  EXPECT_EQ(step(lenient, {rect(0, 1, 40, 20, 40, 40)})[0], id);
}

TEST(Tracker, IdsArePositiveUniqueAndNeverReused) {
  // Random clutter: whatever the matching, ids are >= 1, distinct within a
  // frame, new ones exceed every earlier one, and an id keeps its class.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> count(0, 5), cls(1, 3), px(0, 260), py(0, 160), size(10, 40);
  std::uniform_real_distribution<float> score(0.1f, 1.f);
  Tracker tracker;
  int64_t largest = 0;
  std::map<int64_t, int64_t> label_of;
  for (int t = 0; t < 60; ++t) {
    std::vector<Obj> objs;
    for (int k = count(rng); k > 0; --k)
      objs.push_back(t % 2 ? disc(k, cls(rng), px(rng) + 20, py(rng) + 20, size(rng) / 2, score(rng))
                           : rect(k, cls(rng), px(rng), py(rng), size(rng), size(rng), score(rng)));
    const auto ids = step(tracker, objs);
    std::set<int64_t> in_frame;
    int64_t frame_max = largest;
    for (size_t k = 0; k < ids.size(); ++k) {
      EXPECT_GE(ids[k], 1);
      EXPECT_TRUE(in_frame.insert(ids[k]).second) << "id " << ids[k] << " twice in frame " << t;
      auto [it, fresh] = label_of.emplace(ids[k], objs[k].label);
      if (fresh) {
        EXPECT_GT(ids[k], largest) << "id " << ids[k] << " reused in frame " << t;
      }
      EXPECT_EQ(it->second, objs[k].label) << "id " << ids[k] << " changed class";
      frame_max = std::max(frame_max, ids[k]);
    }
    largest = frame_max;
  }
  EXPECT_GT(largest, 20);  // the clutter did make many tracks
}

TEST(Tracker, ResetLiveTracksAndMove) {
  TrackerOptions options;
  options.ttl = 4;
  Tracker tracker(options);
  EXPECT_EQ(tracker.options().ttl, 4);
  EXPECT_EQ(tracker.live_tracks(), 0u);
  const std::vector<Obj> three{rect(0, 1, 10, 10, 30, 30), rect(1, 1, 100, 10, 30, 30),
                               disc(2, 2, 200, 120, 20)};
  const auto ids = step(tracker, three);
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()), (std::set<int64_t>{1, 2, 3}));
  EXPECT_EQ(tracker.live_tracks(), 3u);
  step(tracker, {three[0]});  // the other two miss one frame: still alive
  EXPECT_EQ(tracker.live_tracks(), 3u);
  for (int t = 0; t < 3; ++t) step(tracker, {three[0]});  // missed 4 = ttl
  EXPECT_EQ(tracker.live_tracks(), 3u);
  step(tracker, {three[0]});  // missed 5 > ttl: gone
  EXPECT_EQ(tracker.live_tracks(), 1u);

  tracker.reset();
  EXPECT_EQ(tracker.live_tracks(), 0u);
  const auto again = step(tracker, three);  // forgotten: all new, ids keep counting
  EXPECT_EQ(std::set<int64_t>(again.begin(), again.end()), (std::set<int64_t>{4, 5, 6}));
  EXPECT_EQ(tracker.live_tracks(), 3u);

  Tracker moved = std::move(tracker);  // a moved tracker keeps its tracks and counter
  EXPECT_EQ(moved.live_tracks(), 3u);
  EXPECT_EQ(step(moved, three), again);
  EXPECT_EQ(step(moved, {rect(3, 1, 200, 20, 30, 30)})[0], 7);
}

TEST(Tracker, ManyObjectsOnAGridNoSwitches) {
  // 6 objects (rects of class 1, discs of class 2) wander in small circles
  // (< 2 px a frame) around grid points; scores are shuffled every frame so
  // the detection order changes.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> score(0.05f, 1.f);
  std::vector<std::vector<Obj>> frames;
  for (int t = 0; t < 30; ++t) {
    std::vector<Obj> objs;
    for (int k = 0; k < 6; ++k) {
      const double cx = 55 + 95 * (k % 3) + 6 * std::sin(0.3 * t + k);
      const double cy = 55 + 90 * (k / 3) + 6 * std::cos(0.3 * t + 2 * k);
      objs.push_back(k % 2 ? disc(k, 2, cx, cy, 18, score(rng))
                           : rect(k, 1, cx - 20, cy - 15, 40, 30, score(rng)));
    }
    frames.push_back(objs);
  }
  Tracker tracker;
  const Score s = run(tracker, frames);
  EXPECT_EQ(s.switches, 0);
  EXPECT_EQ(s.shared, 0);
  EXPECT_EQ(s.ids, (std::set<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(tracker.live_tracks(), 6u);
}

}  // namespace
