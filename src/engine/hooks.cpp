#include "engine/hooks.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/train_setup.h"
#include "io/atomic_file.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/model_info.h"

namespace maskrcnn::engine {
namespace fs = std::filesystem;

MetricsFile::MetricsFile(const std::string& path, bool append, bool enabled) : path_(path), enabled_(enabled) {
  if (!enabled_) return;
  out_.open(path_, append ? std::ios::app : std::ios::trunc);
  if (!out_) throw Error(path_ + ": cannot write");
}

void MetricsFile::write(const std::string& json_record) {
  if (enabled_) out_ << json_record << "\n" << std::flush;
}

MetricsHook::MetricsHook(MetricsFile& file, int log_every, const GradientAverager* averager, int images_per_step)
    : file_(file), log_every_(log_every), averager_(averager), images_per_step_(images_per_step) {}

void MetricsHook::before_train() {
  t0_ = window_start_ = std::chrono::steady_clock::now();
  window_.clear();
  window_n_ = 0;
}

void MetricsHook::after_step(const StepResult& step) {
  for (const auto& [name, value] : step.losses) window_[name] += value;
  window_["loss"] += step.total_loss;
  ++window_n_;
  if (step.grad_norm) window_["grad_norm"] += *step.grad_norm;

  last_lr_ = step.lr;
  const int64_t done = step.iteration + 1;
  if (done % log_every_ == 0 || done == trainer().max_iteration()) write_window(done);
}

// A run stopped by its time limit between two lines still logs its last steps.
void MetricsHook::after_train() {
  if (window_n_ > 0) write_window(trainer().iteration());
}

void MetricsHook::write_window(int64_t done) {
  const auto now = std::chrono::steady_clock::now();
  const double time = std::chrono::duration<double>(now - t0_).count();
  const double window_s = std::chrono::duration<double>(now - window_start_).count();
  nlohmann::json rec{{"iteration", done}, {"lr", last_lr_}, {"time", time}};
  if (trainer().max_iteration() < kUnknownLength) rec["planned_iterations"] = trainer().max_iteration();
  for (const auto& [k, v] : window_) rec[k] = v / window_n_;
  if (window_s > 0) {
    rec["iter_per_s"] = window_n_ / window_s;
    if (images_per_step_ > 0) rec["images_per_s"] = window_n_ * images_per_step_ / window_s;
  }
  window_start_ = now;
  if (averager_) {  // how many gradient buckets started their allreduce during backward
    rec["allreduce_buckets"] = averager_->num_buckets();
    rec["allreduce_buckets_overlapped"] = averager_->buckets_started_early();
  }
  file_.write(rec.dump());
  final_loss_ = window_["loss"] / window_n_;
  window_.clear();
  window_n_ = 0;
}

CheckpointHook::CheckpointHook(const MaskRCNN& model, const Optimizer& optimizer, std::string checkpoint,
                               std::string final_weights, int64_t every, bool main_process)
    : model_(model), optimizer_(optimizer), checkpoint_(std::move(checkpoint)), final_weights_(std::move(final_weights)),
      every_(every), main_process_(main_process) {}

void CheckpointHook::save(int64_t next_iteration) {
  if (!main_process_) return;
  for (auto& [name, p] : optimizer_.params())
    if (!at::isfinite(p).all().item<bool>())
      throw Error("train: parameter " + name + " is not finite; not saving. The last good checkpoint is " +
                  checkpoint_);
  save_training_checkpoint(checkpoint_, model_, optimizer_, next_iteration);
}

void CheckpointHook::after_step(const StepResult& step) {
  const int64_t done = step.iteration + 1;
  if (every_ > 0 && done % every_ == 0 && done < trainer().max_iteration()) save(done);
}

void CheckpointHook::after_train() {
  save(trainer().iteration());
  if (!main_process_) return;
  save_state_dict(model_.state_dict(), final_weights_);
  write_model_info(final_weights_, ModelInfo{model_.config(), model_.class_names()});
}

ValidationHook::ValidationHook(MaskRCNN& model, const TrainOptions& options, int threads, ProcessGroup* group,
                               MetricsFile& metrics)
    : model_(model), options_(options), threads_(threads), group_(group), metrics_(metrics) {}

void ValidationHook::after_step(const StepResult& step) {
  const int64_t done = step.iteration + 1, every = options_.eval_every;
  if (every <= 0 || done % every != 0 || done >= trainer().max_iteration()) return;
  validate(done);
  model_.train(true);
}

void ValidationHook::after_train() { validate(trainer().iteration()); }

// The results files live in the output folder, which a multi-node run must
// share (as it shares the checkpoints).
void ValidationHook::validate(int64_t at_iteration) {
  const TrainOptions& o = options_;
  const int rank = group_ ? group_->rank() : 0, world = group_ ? group_->world_size() : 1;
  auto part = [&](int r) {
    return (fs::path(o.output_dir) / ("val_results.part" + std::to_string(r) + ".json")).string();
  };
  DatasetInferenceOptions io;
  io.progress = o.progress && rank == 0;
  io.shard = rank;
  io.num_shards = world;
  auto report = run_model_on_coco(model_, o.val_annotations, o.val_images, part(rank), io);
  for (auto& f : report.failures) std::fprintf(stderr, "maskrcnn: warning: %s\n", f.c_str());
  if (group_) group_->barrier();
  double bbox_ap = 0, segm_ap = 0;
  if (rank == 0) {
    nlohmann::json all = nlohmann::json::array();
    for (int r = 0; r < world; ++r) {
      std::ifstream f(part(r));
      auto one = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
      if (!one.is_array()) throw Error(part(r) + ": not a results file");
      for (auto& d : one) all.push_back(std::move(d));
      fs::remove(part(r));
    }
    const std::string results = (fs::path(o.output_dir) / "val_results.json").string();
    io::write_file_atomic(results, all.dump());
    if (!all.empty()) {
      CocoEvalRunOptions eo;
      eo.threads = threads_;
      for (auto& s : evaluate_coco_files(o.val_annotations, results, eo))
        (s.iou_type == IouType::Bbox ? bbox_ap : segm_ap) = std::max(0.0, s.stats[0]);
    }
  }
  if (group_) group_->barrier();  // the others wait while rank 0 scores
  if (rank != 0) return;
  bbox_ap_ = bbox_ap;
  segm_ap_ = segm_ap;
  metrics_.write(
      nlohmann::json{{"iteration", at_iteration}, {"val_bbox_AP", bbox_ap}, {"val_segm_AP", segm_ap}}.dump());
  std::fprintf(stderr, "train: iteration %lld: validation bbox AP %.4f, segm AP %.4f\n",
               static_cast<long long>(at_iteration), bbox_ap, segm_ap);
}

TimeLimitHook::TimeLimitHook(double max_minutes, ProcessGroup* group, bool plan_schedule, Clock now)
    : max_minutes_(max_minutes), group_(group), plan_schedule_(plan_schedule), now_(std::move(now)) {}

void TimeLimitHook::before_train() {
  t0_ = now_();
  ceiling_ = trainer().max_iteration();
  ref_done_ = -1;
}

void TimeLimitHook::before_step(int64_t iteration) {
  const double elapsed = std::chrono::duration<double>(now_() - t0_).count();
  bool out_of_time = elapsed > max_minutes_ * 60;
  if (group_) out_of_time = group_->allreduce_scalar(out_of_time ? 1 : 0) > 0;
  if (!out_of_time) return;
  std::fprintf(stderr, "\ntrain: --max-minutes %.1f reached at iteration %lld\n", max_minutes_,
               static_cast<long long>(iteration));
  request_stop();
}

void TimeLimitHook::after_step(const StepResult& step) {
  if (!plan_schedule_) return;
  const int64_t done = step.iteration + 1, steps = done - trainer().start_iteration();
  // The first steps are slow (memory, oneDNN primitives): measure from the 3rd.
  constexpr int64_t kSkip = 3, kMeasure = 5, kReplanEvery = 10;
  if (steps == kSkip) {
    t_ref_ = now_();
    ref_done_ = done;
  }
  if (ref_done_ < 0 || steps < kSkip + kMeasure || (steps - kSkip) % kReplanEvery != kMeasure % kReplanEvery)
    return;
  plan(done);
}

void TimeLimitHook::plan(int64_t done) {
  const auto now = now_();
  const double per_step = std::chrono::duration<double>(now - t_ref_).count() / static_cast<double>(done - ref_done_);
  const double left = max_minutes_ * 60 - std::chrono::duration<double>(now - t0_).count();
  // 1% of the budget in reserve: the speed drifts, and a step begun just
  // before the limit would end after it.
  const double usable = left - 0.01 * max_minutes_ * 60 - per_step;
  double planned = static_cast<double>(done) + std::max(1.0, std::floor(usable / std::max(per_step, 1e-9)));
  planned = std::min(planned, static_cast<double>(ceiling_));
  if (group_) planned = group_->allreduce_scalar(group_->rank() == 0 ? planned : 0.0);
  trainer().set_max_iteration(static_cast<int64_t>(planned));
}

ProgressHook::ProgressHook(bool enabled) : enabled_(enabled) {}

void ProgressHook::before_train() {
  const int64_t planned = trainer().max_iteration();
  bar_.emplace("train", planned >= kUnknownLength ? 0 : static_cast<size_t>(planned), enabled_);
}

void ProgressHook::after_step(const StepResult& step) {
  // A time budget re-plans the length; before its first plan it is unknown (0).
  const int64_t planned = trainer().max_iteration();
  bar_->set_total(planned >= kUnknownLength ? 0 : static_cast<size_t>(planned));
  char extra[128];
  std::snprintf(extra, sizeof extra, "loss %.3f lr %.2g", step.total_loss, step.lr);
  bar_->update(static_cast<size_t>(step.iteration + 1), extra);
}

void ProgressHook::after_train() {
  if (trainer().iteration() == trainer().max_iteration()) bar_->finish();
}

}  // namespace maskrcnn::engine
