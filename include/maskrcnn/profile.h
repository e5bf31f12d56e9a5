// Per-stage timing of the model's forward pass: what `maskrcnn bench` prints.
//
//   maskrcnn::StageProfiler profiler;            // records this thread's forward passes
//   model.predict({image});
//   for (const auto& s : profiler.stages())
//     std::printf("%s %.3f s %.1f GFLOP\n", s.name.c_str(), s.seconds, s.gflop);
//
// Stages are torchvision's pipeline steps ("transform", "backbone.body",
// "backbone.fpn", "rpn.head", "rpn.proposals", "roi_heads.box_roi_align",
// "roi_heads.box_head", "roi_heads.box_postprocess", "roi_heads.mask_roi_align",
// "roi_heads.mask_head", "roi_heads.mask_predictor", "paste"; in training,
// "roi_heads.train" for the RoI heads and their losses). Times are exclusive wall times on the calling
// thread (a stage inside another counts only once), so they add up to the
// forward pass. GFLOP counts 2 x the multiply-adds of the stage's convolutions
// and linear layers. With the model on a GPU, times are those of the host
// (kernel launches are asynchronous).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace maskrcnn {

struct StageTime {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;      // summed over calls
  double gflop = 0;        // summed over calls
  double peak_rss_mb = 0;  // the process's peak RSS when the stage first ended
};

class StageProfiler {
 public:
  // Records the stages run on this thread while it lives; profilers nest
  // (the innermost records) and may end in any order, on the thread that
  // made them.
  StageProfiler();
  ~StageProfiler();
  StageProfiler(const StageProfiler&) = delete;
  StageProfiler& operator=(const StageProfiler&) = delete;

  std::vector<StageTime> stages() const;  // in the order first seen
  void reset();

  struct State;

 private:
  std::unique_ptr<State> state_;  // chained to the enclosing profiler's
};

// This process's peak resident set size so far, in MB (getrusage).
double peak_rss_mb();

}  // namespace maskrcnn
