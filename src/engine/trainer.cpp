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

#include <nlohmann/json.hpp>

#include "data/coco_detection.h"
#include "data/loader.h"
#include "engine/distributed.h"
#include "engine/hooks.h"
#include "engine/sgd.h"
#include "engine/sync_batch_norm.h"
#include "engine/train_setup.h"
#include "engine/trainer_loop.h"
#include "engine/training.h"
#include "io/atomic_file.h"
#include "maskrcnn/cpu_settings.h"
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
  if (o.weight_decay < 0 || o.clip_grad_norm < 0) throw Error("train: --weight-decay and --clip-grad-norm must be >= 0");
  if (o.optimizer != "sgd" && o.optimizer != "adamw")
    throw Error("train: --optimizer must be sgd or adamw, not '" + o.optimizer + "'");
  if (o.epochs < 0) throw Error("train: --epochs must be >= 0");
  if (o.max_minutes < 0) throw Error("train: --max-minutes must be >= 0");
  if (o.lr_schedule != "cosine" && o.lr_schedule != "step")
    throw Error("train: --lr-schedule must be cosine or step, not '" + o.lr_schedule + "'");
  if (o.log_every < 1) throw Error("train: --log-every must be >= 1");
  if (o.min_size < 1 || o.max_size < o.min_size) throw Error("train: need 1 <= --min-size <= --max-size");
  for (int d : {18, 34, 50, 101})
    if (o.backbone_depth == d) return;
  throw Error("train: --backbone resnet" + std::to_string(o.backbone_depth) +
              " is not one of resnet18, resnet34, resnet50, resnet101");
}

// The unset optimizer options (trainer.h) filled in: the from-scratch recipe,
// or torchvision's reference for fine-tuning.
TrainOptions with_recipe_defaults(TrainOptions o) {
  const bool scratch = o.weights.empty();
  if (o.optimizer.empty()) o.optimizer = scratch ? "adamw" : "sgd";
  const bool adamw = o.optimizer == "adamw";
  if (o.lr == 0) o.lr = adamw ? 1e-3 : 0.01;
  if (o.weight_decay < 0) o.weight_decay = adamw ? 0.05 : 1e-4;
  if (o.clip_grad_norm < 0) o.clip_grad_norm = scratch ? 5.0 : 0.0;
  return o;
}

// Iterations: --iterations, else --epochs, else 10 epochs, or with a time
// budget as many as it allows (TimeLimitHook plans the length).
int64_t run_length(const TrainOptions& o, int64_t iterations_per_epoch) {
  if (o.iterations > 0) return o.iterations;
  if (o.epochs > 0) return std::max<int64_t>(1, std::llround(o.epochs * iterations_per_epoch));
  if (o.max_minutes > 0) return kUnknownLength;
  return std::max<int64_t>(1, 10 * iterations_per_epoch);
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
  std::vector<std::pair<std::string, at::Tensor>> optimizer_state;
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
  s.optimizer_state = std::move(r.optimizer_state);
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

// metrics.jsonl's first line: what the run was (options and the model they
// made), so that its speed and AP can be read against its settings.
nlohmann::json settings_record(const TrainOptions& o, const MaskRCNNConfig& c, int threads, int world,
                               int64_t total) {
  nlohmann::json model{{"arch", c.arch_name()},
                       {"backbone", "resnet" + std::to_string(c.backbone_depth)},
                       {"norm", norm_name(c.norm)},
                       {"num_classes", c.num_classes},
                       {"min_size", c.min_size},
                       {"max_size", c.max_size},
                       {"anchor_sizes", c.anchor_sizes},
                       {"fpn_channels", c.fpn_channels},
                       {"representation_size", c.representation_size},
                       {"box_head_conv_layers", c.arch == Arch::V2 ? c.box_head_conv_layers : 0},
                       {"mask_head_layers", c.mask_head_layers},
                       {"mask_head_channels", c.mask_head_channels},
                       {"trainable_backbone_layers", c.trainable_backbone_layers}};
  nlohmann::json train{{"weights", o.weights},
                       {"batch_size", o.batch_size},
                       {"processes", world},
                       {"threads", threads},
                       {"rois_per_image", o.rois_per_image},
                       {"proposals_per_image", o.proposals_per_image},
                       {"optimizer", o.optimizer},
                       {"lr", o.lr},
                       {"lr_schedule", o.lr_schedule},
                       {"warmup_iters", o.warmup_iters},
                       {"momentum", o.momentum},
                       {"weight_decay", o.weight_decay},
                       {"clip_grad_norm", o.clip_grad_norm},
                       {"sync_batch_norm", o.sync_batch_norm},
                       {"hflip", o.hflip_prob},
                       {"seed", o.seed},
                       {"max_minutes", o.max_minutes}};
  if (total < kUnknownLength) train["iterations"] = total;
  return {{"settings", {{"model", model}, {"train", train}}}};
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
  const int images_per_step = o.batch_size * (group ? group->world_size() : 1);
  hooks.metrics = &trainer.register_hook(
      std::make_unique<MetricsHook>(metrics, o.log_every, trainer.averager(), images_per_step));
  trainer.register_hook(std::make_unique<ProgressHook>(o.progress && main_process));
  trainer.register_hook(std::make_unique<CheckpointHook>(trainer.model(), trainer.optimizer(), ckpt, final_weights,
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

TrainReport run_training(const TrainOptions& options, const TrainDrills& drills) {
  const TrainOptions o = with_recipe_defaults(options);
  check_options(o);
  const int threads = set_threads(o);
  tune_primitive_cache_for_training();
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
  std::optional<ProcessGroup> sync_group;  // --sync-bn's collectives, apart from the gradients'
  if (o.sync_batch_norm && group) {
    sync_group.emplace(group->subgroup("sync_bn"));
    if (enable_sync_batch_norm(model, *sync_group) == 0)
      throw Error("train: --sync-bn: the backbone has no trainable BatchNorm2d (--norm bn trains one)");
  }
  auto optimizer = make_optimizer(o.optimizer, model.trainable_parameters(), o.momentum, o.weight_decay);
  for (auto& [key, value] : start.optimizer_state) {
    try {
      optimizer->set_state(key, value);
    } catch (const Error& e) {
      throw Error(ckpt + ": " + e.what());
    }
  }
  // Gradients are averaged bucket by bucket while backward still runs.
  std::optional<GradientAverager> averager;
  if (group) {
    std::vector<at::Tensor> params;
    for (auto& [name, p] : optimizer->params()) params.push_back(p);
    averager.emplace(*group, std::move(params));
  }

  data::TrainLoader loader(dataset, loader_options(o, rank, world));
  const int64_t total = run_length(o, loader.iterations_per_epoch());
  MetricsFile metrics((fs::path(o.output_dir) / "metrics.jsonl").string(), start.iteration > 0, main_process);
  metrics.write(settings_record(o, model.config(), threads, world, total).dump());

  Trainer::Options to;
  to.lr = [&o](int64_t it, int64_t planned) { return learning_rate(o, it, planned); };
  to.clip_grad_norm = o.clip_grad_norm;
  if (drills.inject_nan_at >= 0) to.loss_filter = nan_drill(drills.inject_nan_at);
  Trainer trainer(model, *optimizer, loader, group, averager ? &*averager : nullptr, std::move(to));
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
