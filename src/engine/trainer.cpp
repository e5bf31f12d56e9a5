// `maskrcnn train`: sets up a run (process group, data, model, optimizer,
// loader) and hands it to engine::Trainer with the hooks that do the rest:
// SGD with warm-up and step decay, a progress bar, metrics.jsonl, periodic
// atomic checkpoints, validation AP, a time limit, and a stop on non-finite
// losses.
#include "maskrcnn/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "data/coco_detection.h"
#include "data/loader.h"
#include "engine/distributed.h"
#include "engine/hooks.h"
#include "engine/sgd.h"
#include "engine/train_setup.h"
#include "engine/trainer_loop.h"
#include "engine/training.h"
#include "io/atomic_file.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace fs = std::filesystem;

namespace engine {
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
  if (o.log_every < 1) throw Error("train: --log-every must be >= 1");
  if (o.min_size < 1 || o.max_size < o.min_size) throw Error("train: need 1 <= --min-size <= --max-size");
  for (int d : {18, 34, 50, 101})
    if (o.backbone_depth == d) return;
  throw Error("train: --backbone resnet" + std::to_string(o.backbone_depth) +
              " is not one of resnet18, resnet34, resnet50, resnet101");
}

// Sets and returns the intra-op threads. Default: the cores shared among the
// processes of this machine.
int set_threads(const TrainOptions& o) {
  const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
  const int local_procs = local_world ? std::max(1, std::atoi(local_world)) : 1;
  const int threads = o.threads > 0 ? o.threads
                                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_procs);
  at::set_num_threads(threads);
  return threads;
}

std::optional<ProcessGroup> open_process_group(const TrainOptions& o) {
  try {
    return ProcessGroup::from_env(std::chrono::milliseconds(static_cast<int64_t>(o.dist_timeout_s * 1000)));
  } catch (const DistError& e) {
    throw Error(std::string("train: ") + e.what());
  }
}

int num_classes_of(const data::CocoDetectionDataset& dataset, const TrainOptions& o) {
  if (dataset.size() == 0) throw Error(o.train_annotations + ": no images to train on");
  const int num_classes = o.num_classes > 0 ? o.num_classes : static_cast<int>(dataset.max_category_id()) + 1;
  if (num_classes < 2) throw Error(o.train_annotations + ": no categories to learn");
  if (dataset.max_category_id() >= num_classes)
    throw Error(o.train_annotations + ": category id " + std::to_string(dataset.max_category_id()) +
                " does not fit --num-classes " + std::to_string(num_classes));
  return num_classes;
}

struct StartingPoint {
  std::optional<MaskRCNN> model;
  int64_t iteration = 0;
  std::vector<std::pair<std::string, at::Tensor>> momentum;
};

// The checkpoint's model, iteration and momentum with --resume (when there is
// one), else a fresh model from the options.
StartingPoint starting_point(const TrainOptions& o, int num_classes, std::vector<std::string> class_names,
                             const std::string& ckpt, bool main_process) {
  StartingPoint s;
  if (!o.resume || !fs::exists(ckpt)) {
    s.model.emplace(build_training_model(o, num_classes, std::move(class_names)));
    return s;
  }
  auto r = load_training_checkpoint(ckpt, o);
  if (r.model.config().num_classes != num_classes)
    throw Error(ckpt + ": has " + std::to_string(r.model.config().num_classes) + " classes, this run wants " +
                std::to_string(num_classes));
  s.model.emplace(std::move(r.model));
  s.iteration = r.next_iteration;
  s.momentum = std::move(r.momentum);
  if (main_process)
    std::fprintf(stderr, "train: resuming from %s at iteration %lld\n", ckpt.c_str(),
                 static_cast<long long>(s.iteration));
  return s;
}

// Identical weights everywhere from the start: rank 0's.
void broadcast_weights(const MaskRCNN& model, ProcessGroup& group) {
  std::vector<at::Tensor> state;
  for (auto& [k, v] : model.state_dict())
    if (v.is_floating_point()) state.push_back(v);
  group.broadcast(state, 0);
}

data::LoaderOptions loader_options(const TrainOptions& o, int rank, int world) {
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.seed = o.seed;
  lo.num_workers = o.workers;
  lo.hflip_prob = o.hflip_prob;
  lo.rank = rank;
  lo.world_size = world;
  return lo;
}

Trainer::LossFilter nan_drill(int64_t at_iteration) {
  return [at_iteration](int64_t it, LossTerms& losses) {
    if (it != at_iteration) return;
    for (auto& [name, value] : losses)
      if (name == "loss_mask") value = value * std::nan("");
  };
}

struct RunHooks {
  MetricsHook* metrics = nullptr;
  ValidationHook* validation = nullptr;  // with validation data only
};

// In this order, so that a step's metrics line comes before its checkpoint
// and validation, and the final checkpoint before the final validation.
RunHooks add_hooks(Trainer& trainer, const TrainOptions& o, MetricsFile& metrics, const std::string& ckpt,
                   const std::string& final_weights, int threads) {
  ProcessGroup* group = trainer.group();
  const bool main_process = !group || group->rank() == 0;
  RunHooks hooks;
  if (o.max_minutes > 0) trainer.register_hook(std::make_unique<TimeLimitHook>(o.max_minutes, group));
  hooks.metrics = &trainer.register_hook(std::make_unique<MetricsHook>(metrics, o.log_every, trainer.averager()));
  trainer.register_hook(std::make_unique<ProgressHook>(o.progress && main_process));
  trainer.register_hook(std::make_unique<CheckpointHook>(trainer.model(), trainer.sgd(), ckpt, final_weights,
                                                         o.checkpoint_every, main_process));
  if (!o.val_annotations.empty())
    hooks.validation =
        &trainer.register_hook(std::make_unique<ValidationHook>(trainer.model(), o, threads, group, metrics));
  return hooks;
}

// Runs the loop; a non-finite loss becomes the run's error, naming the last
// good checkpoint.
void run_or_explain(Trainer& trainer, int64_t start, int64_t total, const std::string& ckpt, bool progress_bar) {
  try {
    trainer.run(start, total);
  } catch (const NonFiniteLoss& e) {
    if (progress_bar) std::fputc('\n', stderr);
    throw Error(std::string("train: ") + e.what() + "; stopped. The last good checkpoint is " +
                (fs::exists(ckpt) ? ckpt : std::string("(none yet)")));
  }
}

}  // namespace

TrainReport run_training(const TrainOptions& o, const TrainDrills& drills) {
  check_options(o);
  const int threads = set_threads(o);
  std::optional<ProcessGroup> pg = open_process_group(o);
  ProcessGroup* group = pg ? &*pg : nullptr;
  const int rank = pg ? pg->rank() : 0, world = pg ? pg->world_size() : 1;
  const bool main_process = rank == 0;
  fs::create_directories(o.output_dir);

  data::CocoDetectionDataset dataset(o.train_annotations, o.train_images);
  const int num_classes = num_classes_of(dataset, o);
  auto class_names = dataset.category_names();
  class_names.resize(num_classes);

  const std::string ckpt = checkpoint_path(o.output_dir);
  // A run killed during a save leaves its temporary (checkpoint.pth.tmp.PID).
  if (main_process) io::remove_stale_temporaries(ckpt);
  StartingPoint start = starting_point(o, num_classes, class_names, ckpt, main_process);
  MaskRCNN& model = *start.model;
  model.train(true);
  if (group) broadcast_weights(model, *group);
  SGD sgd(model.trainable_parameters(), o.momentum, o.weight_decay);
  for (auto& [name, buf] : start.momentum) sgd.set_momentum_buffer(name, buf);
  // Gradients are averaged bucket by bucket while backward still runs.
  std::optional<GradientAverager> averager;
  if (group) {
    std::vector<at::Tensor> params;
    for (auto& [name, p] : sgd.params()) params.push_back(p);
    averager.emplace(*group, std::move(params));
  }

  data::TrainLoader loader(dataset, loader_options(o, rank, world));
  const int64_t total = o.iterations > 0
                            ? o.iterations
                            : std::max<int64_t>(1, std::llround(o.epochs * loader.iterations_per_epoch()));
  MetricsFile metrics((fs::path(o.output_dir) / "metrics.jsonl").string(), start.iteration > 0, main_process);

  Trainer::Options to;
  to.lr = [&o, total](int64_t it) { return learning_rate(o, it, total); };
  to.clip_grad_norm = o.clip_grad_norm;
  if (drills.inject_nan_at >= 0) to.loss_filter = nan_drill(drills.inject_nan_at);
  Trainer trainer(model, sgd, loader, group, averager ? &*averager : nullptr, std::move(to));
  TrainReport report;
  report.start_iteration = start.iteration;
  report.final_weights = (fs::path(o.output_dir) / "model_final.pth").string();
  const RunHooks hooks = add_hooks(trainer, o, metrics, ckpt, report.final_weights, threads);

  const auto t0 = std::chrono::steady_clock::now();
  run_or_explain(trainer, start.iteration, total, ckpt, o.progress && main_process);
  if (group) group->barrier();  // nobody leaves (closing its sockets) before rank 0 is done
  report.iterations = trainer.iteration();
  report.final_loss = hooks.metrics->final_loss();
  if (hooks.validation && hooks.validation->bbox_ap()) {
    report.bbox_ap = hooks.validation->bbox_ap();
    report.segm_ap = hooks.validation->segm_ap();
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace engine

TrainReport train(const TrainOptions& options) { return engine::run_training(options, {}); }

}  // namespace maskrcnn
