// The public MaskRCNN class: construction, checkpoint loading, prediction.
#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>

#include <cstdlib>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "maskrcnn/error.h"
#include "maskrcnn/model.h"
#include "modeling/generalized_rcnn.h"
#include "modeling/state_dict_compat.h"

namespace maskrcnn {
namespace {

std::string join_limited(const std::vector<std::string>& items, size_t limit = 6) {
  std::ostringstream os;
  for (size_t i = 0; i < items.size() && i < limit; ++i) os << (i ? ", " : "") << items[i];
  if (items.size() > limit) os << ", ... (" << items.size() << " in all)";
  return os.str();
}

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

}  // namespace

std::string MaskRCNNConfig::arch_name() const {
  return arch == Arch::V2 ? "maskrcnn_resnet50_fpn_v2" : "maskrcnn_resnet50_fpn";
}

Arch parse_arch(const std::string& name) {
  if (name == "maskrcnn_resnet50_fpn" || name == "v1") return Arch::V1;
  if (name == "maskrcnn_resnet50_fpn_v2" || name == "v2") return Arch::V2;
  throw Error("unknown architecture '" + name +
              "' (expected maskrcnn_resnet50_fpn or maskrcnn_resnet50_fpn_v2)");
}

int parse_backbone(const std::string& name) {
  for (int depth : {18, 34, 50, 101})
    if (name == "resnet" + std::to_string(depth)) return depth;
  throw Error("unknown backbone '" + name + "' (expected resnet18, resnet34, resnet50 or resnet101)");
}

at::Tensor Detections::mask_probs(int64_t i) const {
  const auto& m = masks.at(i);
  auto full = at::zeros({image_height, image_width}, m.probs.options());
  if (m.probs.numel() > 0)
    full.slice(0, m.y0, m.y0 + m.probs.size(0)).slice(1, m.x0, m.x0 + m.probs.size(1)).copy_(m.probs);
  return full;
}

at::Tensor Detections::binary_mask(int64_t i, double threshold) const {
  return mask_probs(i).ge(threshold).to(at::kByte);
}

MaskRCNN::MaskRCNN(const MaskRCNNConfig& config)
    : config_(config), impl_(std::make_shared<modeling::GeneralizedRCNNImpl>(config)) {
  tune_allocator_for_inference();
  if (config.num_classes < 2) throw Error("num_classes must be >= 2 (background + 1)");
  impl_->eval();
}

const MaskRCNNConfig& MaskRCNN::config() const { return config_; }

void MaskRCNN::reset_predictors(int num_classes) {
  if (num_classes < 2) throw Error("num_classes must be >= 2 (background + 1)");
  const auto dev = device();
  impl_->roi_heads->reset_predictors(num_classes);
  impl_->roi_heads->to(dev);
  config_.num_classes = num_classes;
}

MaskRCNN MaskRCNN::from_checkpoint(const std::string& path, const ModelOverrides& o) {
  auto state = maskrcnn::load_state_dict(path);
  auto cfg = infer_config(state, path);
  if (o.arch && *o.arch != cfg.arch)
    throw Error(path + ": checkpoint holds a " + cfg.arch_name() + " model, not " +
                MaskRCNNConfig{*o.arch}.arch_name());
  if (o.num_classes && *o.num_classes != cfg.num_classes)
    throw Error(path + ": checkpoint has " + std::to_string(cfg.num_classes) +
                " classes, --num-classes says " + std::to_string(*o.num_classes));
  if (o.min_size) cfg.min_size = *o.min_size;
  if (o.max_size) cfg.max_size = *o.max_size;
  if (o.box_score_thresh) cfg.box_score_thresh = *o.box_score_thresh;
  if (o.box_detections_per_img) cfg.box_detections_per_img = *o.box_detections_per_img;
  if (o.backbone_norm_eps) cfg.backbone_norm_eps = *o.backbone_norm_eps;
  MaskRCNN model(cfg);
  model.load_state_dict(state, path);
  return model;
}

StateDict MaskRCNN::state_dict() const {
  StateDict out;
  for (auto& p : impl_->named_parameters(true)) out.emplace_back(p.key(), p.value().detach());
  for (auto& b : impl_->named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

void MaskRCNN::load_state_dict(const StateDict& state, const std::string& source) {
  auto keys = modeling::normalize_keys(state);
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto assign = [&](const std::string& name, at::Tensor& target) {
    auto it = keys.find(name);
    if (it == keys.end()) {
      missing.push_back(name);
      return;
    }
    used.insert(name);
    if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(name + " " + shape_str(it->second.sizes()) + " vs model " +
                           shape_str(target.sizes()));
      return;
    }
    target.copy_(it->second.to(target.scalar_type()));
  };
  for (auto& p : impl_->named_parameters(true)) assign(p.key(), p.value());
  for (auto& b : impl_->named_buffers(true)) assign(b.key(), b.value());
  std::vector<std::string> unexpected;
  for (auto& kv : keys)
    if (!used.count(kv.first)) unexpected.push_back(kv.first);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string msg = source + ": does not fit a " + config_.arch_name() + " model with " +
                      std::to_string(config_.num_classes) + " classes:";
    if (!missing.empty()) msg += " missing keys [" + join_limited(missing) + "]";
    if (!unexpected.empty()) msg += " unexpected keys [" + join_limited(unexpected) + "]";
    if (!mismatched.empty()) msg += " wrong shapes [" + join_limited(mismatched) + "]";
    throw Error(msg);
  }
}

std::vector<Detections> MaskRCNN::predict(const std::vector<at::Tensor>& images) const {
  if (images.empty()) return {};
  c10::InferenceMode guard;
  std::vector<at::Tensor> inputs;
  for (auto& im : images) inputs.push_back(im.to(device(), at::kFloat));
  const bool was_training = impl_->is_training();
  if (was_training) impl_->eval();
  try {
    auto out = impl_->forward(inputs);
    if (was_training) impl_->train(true);
    return out;
  } catch (...) {
    if (was_training) impl_->train(true);
    throw;
  }
}

LossTerms MaskRCNN::losses(const std::vector<at::Tensor>& images,
                           const std::vector<TrainingTarget>& targets) const {
  if (!impl_->is_training()) throw Error("MaskRCNN::losses needs a model in training mode (train())");
  if (images.size() != targets.size())
    throw Error("MaskRCNN::losses: " + std::to_string(images.size()) + " images but " +
                std::to_string(targets.size()) + " targets");
  if (images.empty()) throw Error("MaskRCNN::losses: empty batch");
  const auto dev = device();
  std::vector<at::Tensor> inputs;
  std::vector<TrainingTarget> on_device;
  for (size_t i = 0; i < images.size(); ++i) {
    inputs.push_back(images[i].to(dev, at::kFloat));
    TrainingTarget t = targets[i];
    t.boxes = t.boxes.to(dev, at::kFloat);
    t.labels = t.labels.to(dev, at::kLong);
    t.masks = t.masks.to(dev, at::kByte);
    on_device.push_back(std::move(t));
  }
  return impl_->forward_train(inputs, on_device);
}

void MaskRCNN::train(bool on) { impl_->train(on); }

bool MaskRCNN::is_training() const { return impl_->is_training(); }

std::vector<std::pair<std::string, at::Tensor>> MaskRCNN::trainable_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& p : impl_->named_parameters(true))
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

void MaskRCNN::to(const at::Device& device) { impl_->to(device); }

bool cuda_kernels_built() {
#ifdef MASKRCNN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Device parse_device(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    int64_t index = 0;
    if (name.size() > 5) {
      const std::string digits = name.substr(5);
      if (digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos)
        throw Error("device " + name + ": not a device (cpu, cuda or cuda:N)");
      index = std::stoll(digits);
    } else if (name.size() == 5) {
      throw Error("device " + name + ": not a device (cpu, cuda or cuda:N)");
    }
    if (!cuda_kernels_built())
      throw Error("device " + name +
                  ": this build has no CUDA kernels (configure with -DMASKRCNN_WITH_CUDA=ON against a "
                  "CUDA LibTorch)");
    const int64_t visible = static_cast<int64_t>(torch::cuda::device_count());
    if (index >= visible)
      throw Error("device " + name + ": " +
                  (visible == 0 ? std::string("no CUDA GPU is visible")
                                : std::to_string(visible) + " CUDA GPU(s) visible"));
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error("device " + name + ": not a device (cpu, cuda or cuda:N)");
}

at::Device MaskRCNN::device() const {
  return impl_->backbone->body->parameters().at(0).device();
}

std::string default_weights_path() {
  std::string home;
  if (const char* th = std::getenv("TORCH_HOME"); th && *th) {
    home = th;
  } else if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    home = std::string(xdg) + "/torch";
  } else {
    const char* h = std::getenv("HOME");
    home = std::string(h ? h : "") + "/.cache/torch";
  }
  return home + "/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth";
}

const std::vector<std::string>& coco_category_names() {
  static const std::vector<std::string> names{
      "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
      "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
      "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
      "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
      "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
      "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
      "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
      "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
      "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
      "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
      "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"};
  return names;
}

}  // namespace maskrcnn
