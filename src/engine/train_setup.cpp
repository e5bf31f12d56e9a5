#include "engine/train_setup.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/error.h"
#include "maskrcnn/model_info.h"

namespace maskrcnn::engine {
namespace {

// The training-only sizes of the options, on any config (fresh, from weights, resumed).
MaskRCNNConfig with_training_sizes(MaskRCNNConfig cfg, const TrainOptions& o) {
  cfg.box_batch_size_per_image = o.rois_per_image;
  cfg.rpn_pre_nms_top_n_train = cfg.rpn_post_nms_top_n_train = o.proposals_per_image;
  return cfg;
}

}  // namespace

MaskRCNN build_training_model(const TrainOptions& o, int num_classes, std::vector<std::string> class_names) {
  torch::manual_seed(o.seed);
  if (!o.weights.empty()) {
    ModelOverrides mo;
    mo.arch = o.arch;
    mo.num_classes = num_classes;
    mo.new_predictors = true;  // fine-tuning on another label set
    mo.min_size = o.min_size;
    mo.max_size = o.max_size;
    mo.trainable_backbone_layers = o.trainable_backbone_layers >= 0 ? o.trainable_backbone_layers : 3;
    mo.box_batch_size_per_image = o.rois_per_image;
    mo.rpn_top_n_train = o.proposals_per_image;
    if (!o.anchor_sizes.empty()) mo.anchor_sizes = o.anchor_sizes;
    mo.class_names = std::move(class_names);
    return load_model(o.weights, mo);
  }
  MaskRCNNConfig cfg;
  // No pretrained backbone: trainable norm layers, everything trainable.
  cfg.norm = o.norm.value_or(Norm::GroupNorm);
  cfg.arch = o.arch.value_or(cfg.norm == Norm::GroupNorm ? Arch::V2 : Arch::V1);
  cfg.backbone_depth = o.backbone_depth;
  cfg.num_classes = num_classes;
  cfg.backbone_norm_eps = 1e-5;
  cfg.fpn_channels = o.fpn_channels;
  cfg.representation_size = o.representation_size;
  cfg.box_head_conv_layers = o.box_head_conv_layers;
  cfg.mask_head_layers = o.mask_head_layers;
  cfg.mask_head_channels = o.mask_head_channels;
  cfg.anchor_sizes = o.anchor_sizes.empty() ? scaled_anchor_sizes(o.min_size) : o.anchor_sizes;
  cfg.trainable_backbone_layers = o.trainable_backbone_layers >= 0 ? o.trainable_backbone_layers : 5;
  cfg.min_size = o.min_size;
  cfg.max_size = o.max_size;
  return MaskRCNN(with_training_sizes(cfg, o), std::move(class_names));
}

std::vector<double> scaled_anchor_sizes(int min_size) {
  const double scale = std::clamp(min_size / 512.0, 0.25, 1.0);
  std::vector<double> sizes;
  for (double s : MaskRCNNConfig{}.anchor_sizes) sizes.push_back(s * scale);
  return sizes;
}

double learning_rate(const TrainOptions& o, int64_t it, int64_t total) {
  double lr = o.lr;
  if (it < o.warmup_iters) {
    const double alpha = static_cast<double>(it) / o.warmup_iters;
    lr *= o.warmup_factor * (1 - alpha) + alpha;
  }
  if (o.lr_schedule == "cosine") {
    // Half a cosine from the end of warm-up to the end of the run.
    const int64_t start = std::min<int64_t>(o.warmup_iters, total - 1);
    const double t = std::clamp(static_cast<double>(it - start) / std::max<int64_t>(1, total - start), 0.0, 1.0);
    return lr * 0.5 * (1 + std::cos(M_PI * t));
  }
  for (double step : o.lr_steps)
    if (it >= static_cast<int64_t>(std::llround(step * total))) lr *= 0.1;
  return lr;
}

std::string checkpoint_path(const std::string& output_dir) {
  return (std::filesystem::path(output_dir) / "checkpoint.pth").string();
}

void save_training_checkpoint(const std::string& path, const MaskRCNN& model, const Optimizer& optimizer,
                              int64_t next_iteration) {
  StateDict out;
  for (auto& [k, v] : model.state_dict()) out.emplace_back("model." + k, v);
  for (auto& [k, v] : optimizer.state()) out.emplace_back("optimizer." + k, v);
  out.emplace_back("meta.iteration", at::scalar_tensor(next_iteration, at::kLong));
  // The config first: a kill between the two writes leaves a JSON that still
  // describes the previous checkpoint's model (the same model).
  write_model_info(path, ModelInfo{model.config(), model.class_names()});
  save_state_dict(out, path);
}

ResumedState load_training_checkpoint(const std::string& path, const TrainOptions& o) {
  auto info = read_model_info(path);
  if (!info) throw Error(path + ": no " + model_info_path(path) + " next to it; cannot resume");
  auto state = load_state_dict(path);
  StateDict weights;
  std::vector<std::pair<std::string, at::Tensor>> optimizer_state;
  int64_t next = -1;
  const std::string mp = "model.", op = "optimizer.";
  for (auto& [k, v] : state) {
    if (k.rfind(mp, 0) == 0) weights.emplace_back(k.substr(mp.size()), v);
    else if (k.rfind(op, 0) == 0) optimizer_state.emplace_back(k.substr(op.size()), v);
    else if (k == "meta.iteration") next = v.item<int64_t>();
  }
  if (next < 0) throw Error(path + ": not a training checkpoint (no meta.iteration)");
  // The sidecar's sizes and anchors; the layers' kinds and widths as the weights have them.
  MaskRCNNConfig cfg = info->config;
  const MaskRCNNConfig shapes = infer_config(weights, path);
  cfg.norm = shapes.norm;
  cfg.fpn_channels = shapes.fpn_channels;
  cfg.representation_size = shapes.representation_size;
  cfg.box_head_conv_layers = shapes.box_head_conv_layers;
  cfg.mask_head_layers = shapes.mask_head_layers;
  cfg.mask_head_channels = shapes.mask_head_channels;
  MaskRCNN model(with_training_sizes(cfg, o), info->class_names);
  model.load_state_dict(weights, path);
  return {std::move(model), next, std::move(optimizer_state)};
}

}  // namespace maskrcnn::engine
