// The hooks of `maskrcnn train` (see engine/trainer_loop.h). Registered in
// this order, they reproduce the run's side effects in the order it has
// always had them: time limit (before a step); after a step: metrics line,
// progress bar, checkpoint, validation; after the last: progress bar, final
// checkpoint and weights, final validation.
#pragma once
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/progress.h"
#include "engine/trainer_loop.h"
#include "maskrcnn/trainer.h"

namespace maskrcnn::engine {

// OUTPUT/metrics.jsonl, one JSON record a line, written by one process (rank
// 0); on the others (enabled = false) writes do nothing.
class MetricsFile {
 public:
  // Truncates the file, or appends to it (a resumed run). Throws
  // maskrcnn::Error when it cannot be opened.
  MetricsFile(const std::string& path, bool append, bool enabled);
  void write(const std::string& json_record);  // one line, flushed
  bool enabled() const { return enabled_; }

 private:
  std::string path_;
  bool enabled_;
  std::ofstream out_;
};

// Every log_every steps and after the last one: the means over the window of
// every loss term, "loss" (the total) and "grad_norm" (with clipping), with
// "iteration" (steps done), "lr" (of the window's last step) and "time"
// (seconds since before_train); with gradient averaging, how many buckets
// there were and how many started during backward.
class MetricsHook : public HookBase {
 public:
  // images_per_step: over all processes, for the images/s of each line.
  MetricsHook(MetricsFile& file, int log_every, const GradientAverager* averager = nullptr,
              int images_per_step = 0);
  void before_train() override;
  void after_step(const StepResult& step) override;
  void after_train() override;
  // The total loss, mean of the last window written (0 before any).
  double final_loss() const { return final_loss_; }

 private:
  MetricsFile& file_;
  int log_every_;
  const GradientAverager* averager_;
  int images_per_step_;
  std::chrono::steady_clock::time_point t0_, window_start_;
  std::map<std::string, double> window_;
  int window_n_ = 0;
  double final_loss_ = 0, last_lr_ = 0;

  void write_window(int64_t done);
};

// Rank 0 writes the training checkpoint every `every` steps (not after the
// last, which after_train covers) and at the end, then the final weights and
// their model info. A non-finite parameter stops the run instead of being
// saved.
class CheckpointHook : public HookBase {
 public:
  CheckpointHook(const MaskRCNN& model, const Optimizer& optimizer, std::string checkpoint, std::string final_weights,
                 int64_t every, bool main_process);
  void after_step(const StepResult& step) override;
  void after_train() override;

 private:
  void save(int64_t next_iteration);

  const MaskRCNN& model_;
  const Optimizer& optimizer_;
  std::string checkpoint_, final_weights_;
  int64_t every_;
  bool main_process_;
};

// Validation AP every `every` steps (0: none; not after the last) and at the
// end. Every rank runs the model on its shard of the validation images; rank
// 0 merges the results into OUTPUT/val_results.json, scores them, writes a
// metrics record and a line on stderr.
class ValidationHook : public HookBase {
 public:
  ValidationHook(MaskRCNN& model, const TrainOptions& options, int threads, ProcessGroup* group,
                 MetricsFile& metrics);
  void after_step(const StepResult& step) override;
  void after_train() override;
  // The last validation's scores (rank 0 only).
  std::optional<double> bbox_ap() const { return bbox_ap_; }
  std::optional<double> segm_ap() const { return segm_ap_; }

 private:
  void validate(int64_t at_iteration);

  MaskRCNN& model_;
  const TrainOptions& options_;
  int threads_;
  ProcessGroup* group_;
  MetricsFile& metrics_;
  std::optional<double> bbox_ap_, segm_ap_;
};

// --max-minutes (> 0): before each step, stops the run once that long has
// passed since before_train; with a process group every rank stops at the
// same step as soon as any one is out of time. It also plans the run's length
// (the lr schedule's): from the speed measured after the first steps it sets
// the trainer's max_iteration to the iterations that fit in the budget (at
// most the length the run started with), and re-plans every 10 steps, so the
// schedule ends within the budget instead of being cut off. Every rank takes
// rank 0's plan.
class TimeLimitHook : public HookBase {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // plan_schedule: also lay the run's length over the budget (see above).
  TimeLimitHook(double max_minutes, ProcessGroup* group, bool plan_schedule = true,
                Clock now = std::chrono::steady_clock::now);
  void before_train() override;
  void before_step(int64_t iteration) override;
  void after_step(const StepResult& step) override;
  // The planned length's ceiling: the run's max_iteration when it started.
  int64_t ceiling() const { return ceiling_; }

 private:
  void plan(int64_t done);

  double max_minutes_;
  ProcessGroup* group_;
  bool plan_schedule_;
  Clock now_;
  std::chrono::steady_clock::time_point t0_, t_ref_;
  int64_t ceiling_ = 0, ref_done_ = -1;
};


// The progress bar on stderr, with the step's total loss and learning rate.
class ProgressHook : public HookBase {
 public:
  explicit ProgressHook(bool enabled);
  void before_train() override;
  void after_step(const StepResult& step) override;
  void after_train() override;

 private:
  bool enabled_;
  std::optional<ProgressBar> bar_;
};

}  // namespace maskrcnn::engine
