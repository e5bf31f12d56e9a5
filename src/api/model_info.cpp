#include "maskrcnn/model_info.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/atomic_file.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/error.h"
#include "maskrcnn/model.h"

namespace maskrcnn {

std::string model_info_path(const std::string& weights_path) {
  return std::filesystem::path(weights_path).replace_extension(".json").string();
}

void write_model_info(const std::string& weights_path, const ModelInfo& info) {
  const auto& c = info.config;
  nlohmann::json j = {
      {"format", "maskrcnn-cpp model info 1"},
      {"arch", c.arch_name()},
      {"backbone", "resnet" + std::to_string(c.backbone_depth)},
      {"num_classes", c.num_classes},
      {"class_names", info.class_names},
      {"min_size", c.min_size},
      {"max_size", c.max_size},
      {"norm", norm_name(c.norm)},
      {"anchor_sizes", c.anchor_sizes},
      // The head sizes are the state dict's shapes; here for whoever rebuilds
      // the model elsewhere (torchvision: tests/python/check_torchvision_load.py).
      {"fpn_channels", c.fpn_channels},
      {"representation_size", c.representation_size},
      {"box_head_conv_layers", c.arch == Arch::V2 ? c.box_head_conv_layers : 0},
      {"mask_head_layers", c.mask_head_layers},
      {"mask_head_channels", c.mask_head_channels},
      {"backbone_norm_eps", c.backbone_norm_eps},
      {"trainable_backbone_layers", c.trainable_backbone_layers},
  };
  io::write_file_atomic(model_info_path(weights_path), j.dump(2) + "\n");
}

std::optional<ModelInfo> read_model_info(const std::string& weights_path) {
  const std::string path = model_info_path(weights_path);
  if (path == weights_path || !std::filesystem::exists(path)) return std::nullopt;
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  ModelInfo info;
  try {
    auto j = nlohmann::json::parse(ss.str());
    if (!j.is_object() || !j.contains("num_classes"))
      throw Error(path + ": not a maskrcnn model info file (no \"num_classes\")");
    auto& c = info.config;
    c.arch = parse_arch(j.value("arch", std::string("maskrcnn_resnet50_fpn")));
    try {
      c.backbone_depth = parse_backbone(j.value("backbone", std::string("resnet50")));
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
    c.num_classes = j.at("num_classes").get<int>();
    c.min_size = j.value("min_size", c.min_size);
    c.max_size = j.value("max_size", c.max_size);
    if (j.contains("norm")) {
      try {
        c.norm = parse_norm(j.at("norm").get<std::string>());
      } catch (const Error& e) {
        throw Error(path + ": " + e.what());
      }
    } else if (j.value("frozen_batch_norm", true) == false) {  // written before "norm" existed
      c.norm = Norm::BatchNorm;
    }
    c.anchor_sizes = j.value("anchor_sizes", c.anchor_sizes);
    c.fpn_channels = j.value("fpn_channels", c.fpn_channels);
    c.representation_size = j.value("representation_size", c.representation_size);
    c.box_head_conv_layers = j.value("box_head_conv_layers", c.box_head_conv_layers);
    c.mask_head_layers = j.value("mask_head_layers", c.mask_head_layers);
    c.mask_head_channels = j.value("mask_head_channels", c.mask_head_channels);
    if (c.anchor_sizes.size() != 5) throw Error(path + ": \"anchor_sizes\" needs 5 sizes (P2..P6)");
    for (double a : c.anchor_sizes)
      if (!(a > 0)) throw Error(path + ": \"anchor_sizes\" must be > 0");
    c.backbone_norm_eps = j.value("backbone_norm_eps", c.backbone_norm_eps);
    c.trainable_backbone_layers = j.value("trainable_backbone_layers", c.trainable_backbone_layers);
    if (j.contains("class_names")) info.class_names = j["class_names"].get<std::vector<std::string>>();
    if (c.min_size < 1 || c.max_size < c.min_size)
      throw Error(path + ": bad min_size/max_size");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": malformed model info: " + e.what());
  }
  return info;
}

MaskRCNN load_model(const std::string& weights_path, const ModelOverrides& overrides) {
  auto info = read_model_info(weights_path);
  ModelOverrides o = overrides;
  if (info) {
    if (!o.min_size) o.min_size = info->config.min_size;
    if (!o.max_size) o.max_size = info->config.max_size;
    if (!o.anchor_sizes) o.anchor_sizes = info->config.anchor_sizes;
  }
  const auto state = load_state_dict(weights_path);
  const int file_classes = infer_config(state, weights_path).num_classes;
  if (info && info->config.num_classes != file_classes)
    throw Error(model_info_path(weights_path) + ": says " + std::to_string(info->config.num_classes) +
                " classes but " + weights_path + " has " + std::to_string(file_classes));
  if (info && !info->class_names.empty() && info->class_names.size() != static_cast<size_t>(file_classes))
    throw Error(model_info_path(weights_path) + ": has " + std::to_string(info->class_names.size()) +
                " class names for " + std::to_string(file_classes) + " classes");
  // The sidecar's names go with the checkpoint's classes, not with new predictors.
  const bool new_classes = o.new_predictors && o.num_classes && info && *o.num_classes != info->config.num_classes;
  if (o.class_names.empty() && info && !new_classes) o.class_names = info->class_names;
  return load_model(state, o, weights_path);
}

}  // namespace maskrcnn
