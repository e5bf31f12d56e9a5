// `maskrcnn train`: the training loop. Data (TrainLoader) -> losses (MaskRCNN)
// -> SGD, with warm-up and step decay, a progress bar, metrics.jsonl,
// periodic atomic checkpoints, validation AP, and a stop on non-finite losses.
#include "maskrcnn/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "data/coco_detection.h"
#include "data/loader.h"
#include "engine/distributed.h"
#include "io/atomic_file.h"
#include "engine/progress.h"
#include "engine/sgd.h"
#include "engine/train_setup.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/error.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/model_info.h"

namespace maskrcnn {
namespace fs = std::filesystem;
namespace {

void check_options(const TrainOptions& o) {
  if (o.train_annotations.empty() || o.train_images.empty())
    throw Error("train: --train-annotations and --train-images are required");
  if (o.val_annotations.empty() != o.val_images.empty())
    throw Error("train: give both --val-annotations and --val-images, or neither");
  if (o.batch_size < 1) throw Error("train: --batch-size must be >= 1");
  if (o.rois_per_image < 1 || o.proposals_per_image < 1)
    throw Error("train: --rois-per-image and --proposals-per-image must be >= 1");
  if (o.lr <= 0 || !std::isfinite(o.lr)) throw Error("train: --lr must be > 0");
  if (o.iterations <= 0 && o.epochs <= 0) throw Error("train: give --iterations N or --epochs E > 0");
  if (o.min_size < 1 || o.max_size < o.min_size) throw Error("train: need 1 <= --min-size <= --max-size");
  for (int d : {18, 34, 50, 101})
    if (o.backbone_depth == d) return;
  throw Error("train: --backbone resnet" + std::to_string(o.backbone_depth) +
              " is not one of resnet18, resnet34, resnet50, resnet101");
}

struct Validation {
  double bbox_ap = 0, segm_ap = 0;
};

// Every process runs the model on its shard of the validation images and
// writes its results file; rank 0 merges them and evaluates. The files live
// in the output folder, which a multi-node run must share (as it shares the
// checkpoints).
Validation validate(const MaskRCNN& model, const TrainOptions& o, int threads,
                    engine::ProcessGroup* pg) {
  const int rank = pg ? pg->rank() : 0, world = pg ? pg->world_size() : 1;
  auto part = [&](int r) {
    return (fs::path(o.output_dir) / ("val_results.part" + std::to_string(r) + ".json")).string();
  };
  DatasetInferenceOptions io;
  io.progress = o.progress && rank == 0;
  io.shard = rank;
  io.num_shards = world;
  auto report = run_model_on_coco(model, o.val_annotations, o.val_images, part(rank), io);
  for (auto& f : report.failures) std::fprintf(stderr, "maskrcnn: warning: %s\n", f.c_str());
  if (pg) pg->barrier();
  Validation v;
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
      eo.threads = threads;
      for (auto& s : evaluate_coco_files(o.val_annotations, results, eo))
        (s.iou_type == IouType::Bbox ? v.bbox_ap : v.segm_ap) = std::max(0.0, s.stats[0]);
    }
  }
  if (pg) pg->barrier();  // the others wait while rank 0 scores
  return v;
}

}  // namespace

TrainReport train(const TrainOptions& o) {
  check_options(o);
  // Default: the cores shared among the processes of this machine.
  const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
  const int local_procs = local_world ? std::max(1, std::atoi(local_world)) : 1;
  const int threads = o.threads > 0 ? o.threads
                                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_procs);
  at::set_num_threads(threads);
  std::optional<engine::ProcessGroup> pg;
  try {
    pg = engine::ProcessGroup::from_env(
        std::chrono::milliseconds(static_cast<int64_t>(o.dist_timeout_s * 1000)));
  } catch (const engine::DistError& e) {
    throw Error(std::string("train: ") + e.what());
  }
  const int rank = pg ? pg->rank() : 0, world = pg ? pg->world_size() : 1;
  const bool main_process = rank == 0;
  fs::create_directories(o.output_dir);

  data::CocoDetectionDataset dataset(o.train_annotations, o.train_images);
  if (dataset.size() == 0) throw Error(o.train_annotations + ": no images to train on");
  const int num_classes = o.num_classes > 0 ? o.num_classes
                                            : static_cast<int>(dataset.max_category_id()) + 1;
  if (num_classes < 2) throw Error(o.train_annotations + ": no categories to learn");
  if (dataset.max_category_id() >= num_classes)
    throw Error(o.train_annotations + ": category id " + std::to_string(dataset.max_category_id()) +
                " does not fit --num-classes " + std::to_string(num_classes));
  auto class_names = dataset.category_names();
  class_names.resize(num_classes);

  const std::string ckpt = engine::checkpoint_path(o.output_dir);
  // A run killed during a save leaves its temporary (checkpoint.pth.tmp.PID).
  if (main_process) io::remove_stale_temporaries(ckpt);
  std::optional<MaskRCNN> model;
  int64_t start = 0;
  std::vector<std::pair<std::string, at::Tensor>> momentum;
  if (o.resume && fs::exists(ckpt)) {
    auto r = engine::load_training_checkpoint(ckpt, o);
    if (r.model.config().num_classes != num_classes)
      throw Error(ckpt + ": has " + std::to_string(r.model.config().num_classes) +
                  " classes, this run wants " + std::to_string(num_classes));
    model.emplace(std::move(r.model));
    start = r.next_iteration;
    momentum = std::move(r.momentum);
    if (main_process)
      std::fprintf(stderr, "train: resuming from %s at iteration %lld\n", ckpt.c_str(),
                   static_cast<long long>(start));
  } else {
    model.emplace(engine::build_training_model(o, num_classes));
  }
  model->train(true);
  if (pg) {
    // Identical weights everywhere from the start: rank 0's.
    std::vector<at::Tensor> state;
    for (auto& [k, v] : model->state_dict())
      if (v.is_floating_point()) state.push_back(v);
    pg->broadcast(state, 0);
  }
  engine::SGD sgd(model->trainable_parameters(), o.momentum, o.weight_decay);
  for (auto& [name, buf] : momentum) sgd.set_momentum_buffer(name, buf);
  // Gradients are averaged bucket by bucket while backward still runs.
  std::optional<engine::GradientAverager> averager;
  if (pg) {
    std::vector<at::Tensor> params;
    for (auto& [name, p] : sgd.params()) params.push_back(p);
    averager.emplace(*pg, std::move(params));
  }

  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.seed = o.seed;
  lo.num_workers = o.workers;
  lo.hflip_prob = o.hflip_prob;
  lo.rank = rank;
  lo.world_size = world;
  data::TrainLoader loader(dataset, lo);
  const int64_t total = o.iterations > 0
                            ? o.iterations
                            : std::max<int64_t>(1, std::llround(o.epochs * loader.iterations_per_epoch()));

  const std::string metrics_path = (fs::path(o.output_dir) / "metrics.jsonl").string();
  std::ofstream metrics;
  if (main_process) {
    metrics.open(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
    if (!metrics) throw Error(metrics_path + ": cannot write");
  }

  TrainReport report;
  report.start_iteration = start;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  engine::ProgressBar bar("train", static_cast<size_t>(total), o.progress && main_process);
  std::map<std::string, double> window;
  int window_n = 0;
  int64_t it = start;
  auto save = [&](int64_t next) {
    if (!main_process) return;
    for (auto& [name, p] : sgd.params())
      if (!at::isfinite(p).all().item<bool>())
        throw Error("train: parameter " + name + " is not finite; not saving. The last good checkpoint is " + ckpt);
    engine::save_training_checkpoint(ckpt, *model, sgd, next, class_names);
  };
  auto log_validation = [&](int64_t at_iteration) {
    auto v = validate(*model, o, threads, pg ? &*pg : nullptr);
    if (!main_process) return;
    report.bbox_ap = v.bbox_ap;
    report.segm_ap = v.segm_ap;
    metrics << nlohmann::json{{"iteration", at_iteration}, {"val_bbox_AP", v.bbox_ap}, {"val_segm_AP", v.segm_ap}}.dump()
            << "\n" << std::flush;
    std::fprintf(stderr, "train: iteration %lld: validation bbox AP %.4f, segm AP %.4f\n",
                 static_cast<long long>(at_iteration), v.bbox_ap, v.segm_ap);
  };

  for (; it < total; ++it) {
    bool out_of_time = o.max_minutes > 0 && elapsed() > o.max_minutes * 60;
    if (pg && o.max_minutes > 0) out_of_time = pg->allreduce_scalar(out_of_time ? 1 : 0) > 0;
    if (out_of_time) {
      std::fprintf(stderr, "\ntrain: --max-minutes %.1f reached at iteration %lld\n", o.max_minutes,
                   static_cast<long long>(it));
      break;
    }
    const double lr = engine::learning_rate(o, it, total);
    auto batch = loader.batch(it);
    std::vector<at::Tensor> images;
    std::vector<TrainingTarget> targets;
    for (auto& s : batch) {
      images.push_back(s.image);
      targets.push_back(s.target);
    }
    auto losses = model->losses(images, targets);
    at::Tensor total_loss;
    std::string bad_term;
    double bad_value = 0;
    for (auto& [name, value] : losses) {
      if (it == o.inject_nan_at && name == "loss_mask") value = value * std::nan("");
      const double v = value.item<double>();
      if (!std::isfinite(v) && bad_term.empty()) {
        bad_term = name;
        bad_value = v;
      }
      total_loss = total_loss.defined() ? total_loss + value : value;
    }
    // A NaN on any rank stops every rank at the same iteration.
    const bool all_finite =
        pg ? std::isfinite(pg->allreduce_scalar(bad_term.empty() ? 0.0 : std::nan(""))) : bad_term.empty();
    if (!all_finite) {
      if (o.progress && main_process) std::fputc('\n', stderr);
      const std::string what = bad_term.empty()
                                   ? std::string("the loss of another process")
                                   : bad_term + " is " + (std::isnan(bad_value) ? "NaN" : "infinite");
      throw Error("train: iteration " + std::to_string(it) + ": " + what +
                  "; stopped. The last good checkpoint is " +
                  (fs::exists(ckpt) ? ckpt : std::string("(none yet)")));
    }
    for (auto& [name, value] : losses) window[name] += value.item<double>();
    sgd.zero_grad();
    if (averager) averager->prepare();
    total_loss.backward();
    if (averager) averager->finish();
    window["loss"] += total_loss.item<double>();
    ++window_n;
    if (o.clip_grad_norm > 0) window["grad_norm"] += sgd.clip_grad_norm(o.clip_grad_norm);
    sgd.step(lr);

    const int64_t done = it + 1;
    if (done % o.log_every == 0 || done == total) {
      nlohmann::json rec{{"iteration", done}, {"lr", lr}, {"time", elapsed()}};
      for (auto& [k, v] : window) rec[k] = v / window_n;
      if (averager) {  // how many gradient buckets started their allreduce during backward
        rec["allreduce_buckets"] = averager->num_buckets();
        rec["allreduce_buckets_overlapped"] = averager->buckets_started_early();
      }
      if (main_process) metrics << rec.dump() << "\n" << std::flush;
      report.final_loss = window["loss"] / window_n;
      window.clear();
      window_n = 0;
    }
    char extra[128];
    std::snprintf(extra, sizeof extra, "loss %.3f lr %.2g", total_loss.item<double>(), lr);
    bar.update(static_cast<size_t>(done), extra);
    if (o.checkpoint_every > 0 && done % o.checkpoint_every == 0 && done < total) save(done);
    if (!o.val_annotations.empty() && o.eval_every > 0 && done % o.eval_every == 0 && done < total) {
      log_validation(done);
      model->train(true);
    }
  }
  if (it == total) bar.finish();
  save(it);
  report.iterations = it;
  report.final_weights = (fs::path(o.output_dir) / "model_final.pth").string();
  if (main_process) {
    save_state_dict(model->state_dict(), report.final_weights);
    write_model_info(report.final_weights, ModelInfo{model->config(), class_names});
  }
  if (!o.val_annotations.empty()) log_validation(it);
  if (pg) pg->barrier();  // nobody leaves (closing its sockets) before rank 0 is done
  report.seconds = elapsed();
  return report;
}

}  // namespace maskrcnn
