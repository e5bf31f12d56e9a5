// load_model from a state dict: the config its keys and shapes imply, the
// overrides on top, the weights loaded strictly. The file variant
// (src/api/model_info.cpp) reads the checkpoint and its sidecar, then calls this.
#include <torch/utils.h>

#include "maskrcnn/error.h"
#include "maskrcnn/model.h"

namespace maskrcnn {
namespace {

MaskRCNNConfig apply_overrides(MaskRCNNConfig cfg, const ModelOverrides& o, const std::string& source) {
  if (o.arch && *o.arch != cfg.arch)
    throw Error(source + ": checkpoint holds a " + cfg.arch_name() + " model, not " +
                MaskRCNNConfig{*o.arch}.arch_name());
  if (o.num_classes && *o.num_classes != cfg.num_classes && !o.new_predictors)
    throw Error(source + ": checkpoint has " + std::to_string(cfg.num_classes) +
                " classes, --num-classes says " + std::to_string(*o.num_classes));
  if (o.min_size) cfg.min_size = *o.min_size;
  if (o.max_size) cfg.max_size = *o.max_size;
  if (cfg.min_size < 1 || cfg.max_size < cfg.min_size)
    throw Error(source + ": need 1 <= min_size <= max_size, got " + std::to_string(cfg.min_size) + " and " +
                std::to_string(cfg.max_size));
  if (o.box_score_thresh) cfg.box_score_thresh = *o.box_score_thresh;
  if (o.box_detections_per_img) cfg.box_detections_per_img = *o.box_detections_per_img;
  if (o.backbone_norm_eps) cfg.backbone_norm_eps = *o.backbone_norm_eps;
  if (o.trainable_backbone_layers) cfg.trainable_backbone_layers = *o.trainable_backbone_layers;
  if (o.box_batch_size_per_image) cfg.box_batch_size_per_image = *o.box_batch_size_per_image;
  if (o.rpn_top_n_train) cfg.rpn_pre_nms_top_n_train = cfg.rpn_post_nms_top_n_train = *o.rpn_top_n_train;
  if (o.anchor_sizes) cfg.anchor_sizes = *o.anchor_sizes;
  validate_config(cfg, source);
  return cfg;
}

}  // namespace

MaskRCNN load_model(const StateDict& state, const ModelOverrides& o, const std::string& source) {
  const auto cfg = apply_overrides(infer_config(state, source), o, source);
  const bool new_classes = o.num_classes && *o.num_classes != cfg.num_classes;
  MaskRCNN model(cfg, new_classes ? std::vector<std::string>{} : o.class_names);
  model.load_state_dict(state, source);
  if (new_classes) {
    model.reset_predictors(*o.num_classes);
    model.set_class_names(o.class_names);
  }
  return model;
}

}  // namespace maskrcnn
