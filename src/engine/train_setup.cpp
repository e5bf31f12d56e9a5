#include "engine/train_setup.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

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
    mo.class_names = std::move(class_names);
    return load_model(o.weights, mo);
  }
  MaskRCNNConfig cfg;
  cfg.arch = o.arch.value_or(Arch::V1);
  cfg.backbone_depth = o.backbone_depth;
  cfg.num_classes = num_classes;
  // No pretrained backbone: real batch norm, everything trainable (torchvision
  // builds maskrcnn_resnet50_fpn(weights=None, weights_backbone=None) so).
  cfg.frozen_batch_norm = o.frozen_batch_norm;
  cfg.backbone_norm_eps = 1e-5;
  cfg.trainable_backbone_layers = o.trainable_backbone_layers >= 0 ? o.trainable_backbone_layers : 5;
  cfg.min_size = o.min_size;
  cfg.max_size = o.max_size;
  return MaskRCNN(with_training_sizes(cfg, o), std::move(class_names));
}

double learning_rate(const TrainOptions& o, int64_t it, int64_t total) {
  double lr = o.lr;
  if (it < o.warmup_iters) {
    const double alpha = static_cast<double>(it) / o.warmup_iters;
    lr *= o.warmup_factor * (1 - alpha) + alpha;
  }
  for (double step : o.lr_steps)
    if (it >= static_cast<int64_t>(std::llround(step * total))) lr *= 0.1;
  return lr;
}

std::string checkpoint_path(const std::string& output_dir) {
  return (std::filesystem::path(output_dir) / "checkpoint.pth").string();
}

void save_training_checkpoint(const std::string& path, const MaskRCNN& model, const SGD& optimizer,
                              int64_t next_iteration) {
  StateDict out;
  for (auto& [k, v] : model.state_dict()) out.emplace_back("model." + k, v);
  for (auto& [k, v] : optimizer.momentum_buffers()) out.emplace_back("optimizer.momentum." + k, v);
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
  std::vector<std::pair<std::string, at::Tensor>> momentum;
  int64_t next = -1;
  const std::string mp = "model.", op = "optimizer.momentum.";
  for (auto& [k, v] : state) {
    if (k.rfind(mp, 0) == 0) weights.emplace_back(k.substr(mp.size()), v);
    else if (k.rfind(op, 0) == 0) momentum.emplace_back(k.substr(op.size()), v);
    else if (k == "meta.iteration") next = v.item<int64_t>();
  }
  if (next < 0) throw Error(path + ": not a training checkpoint (no meta.iteration)");
  MaskRCNN model(with_training_sizes(info->config, o), info->class_names);
  model.load_state_dict(weights, path);
  return {std::move(model), next, std::move(momentum)};
}

}  // namespace maskrcnn::engine
