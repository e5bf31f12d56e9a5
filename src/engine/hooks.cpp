#include "engine/hooks.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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

MetricsHook::MetricsHook(MetricsFile& file, int log_every, const GradientAverager* averager)
    : file_(file), log_every_(log_every), averager_(averager) {}

void MetricsHook::before_train() {
  t0_ = std::chrono::steady_clock::now();
  window_.clear();
  window_n_ = 0;
}

void MetricsHook::after_step(const StepResult& step) {
  for (const auto& [name, value] : step.losses) window_[name] += value;
  window_["loss"] += step.total_loss;
  ++window_n_;
  if (step.grad_norm) window_["grad_norm"] += *step.grad_norm;

  const int64_t done = step.iteration + 1;
  if (done % log_every_ != 0 && done != trainer().max_iteration()) return;
  const double time = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  nlohmann::json rec{{"iteration", done}, {"lr", step.lr}, {"time", time}};
  for (const auto& [k, v] : window_) rec[k] = v / window_n_;
  if (averager_) {  // how many gradient buckets started their allreduce during backward
    rec["allreduce_buckets"] = averager_->num_buckets();
    rec["allreduce_buckets_overlapped"] = averager_->buckets_started_early();
  }
  file_.write(rec.dump());
  final_loss_ = window_["loss"] / window_n_;
  window_.clear();
  window_n_ = 0;
}

CheckpointHook::CheckpointHook(const MaskRCNN& model, const SGD& sgd, std::string checkpoint,
                               std::string final_weights, int64_t every, bool main_process)
    : model_(model), sgd_(sgd), checkpoint_(std::move(checkpoint)), final_weights_(std::move(final_weights)),
      every_(every), main_process_(main_process) {}

void CheckpointHook::save(int64_t next_iteration) {
  if (!main_process_) return;
  for (auto& [name, p] : sgd_.params())
    if (!at::isfinite(p).all().item<bool>())
      throw Error("train: parameter " + name + " is not finite; not saving. The last good checkpoint is " +
                  checkpoint_);
  save_training_checkpoint(checkpoint_, model_, sgd_, next_iteration);
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

TimeLimitHook::TimeLimitHook(double max_minutes, ProcessGroup* group, Clock now)
    : max_minutes_(max_minutes), group_(group), now_(std::move(now)) {}

void TimeLimitHook::before_train() { t0_ = now_(); }

void TimeLimitHook::before_step(int64_t iteration) {
  const double elapsed = std::chrono::duration<double>(now_() - t0_).count();
  bool out_of_time = elapsed > max_minutes_ * 60;
  if (group_) out_of_time = group_->allreduce_scalar(out_of_time ? 1 : 0) > 0;
  if (!out_of_time) return;
  std::fprintf(stderr, "\ntrain: --max-minutes %.1f reached at iteration %lld\n", max_minutes_,
               static_cast<long long>(iteration));
  request_stop();
}

ProgressHook::ProgressHook(bool enabled) : enabled_(enabled) {}

void ProgressHook::before_train() {
  bar_.emplace("train", static_cast<size_t>(trainer().max_iteration()), enabled_);
}

void ProgressHook::after_step(const StepResult& step) {
  char extra[128];
  std::snprintf(extra, sizeof extra, "loss %.3f lr %.2g", step.total_loss, step.lr);
  bar_->update(static_cast<size_t>(step.iteration + 1), extra);
}

void ProgressHook::after_train() {
  if (trainer().iteration() == trainer().max_iteration()) bar_->finish();
}

}  // namespace maskrcnn::engine
