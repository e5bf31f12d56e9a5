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


MaskRCNN::MaskRCNN(const MaskRCNNConfig& config, std::vector<std::string> class_names)
    : config_(config), impl_(std::make_shared<modeling::GeneralizedRCNNImpl>(config)) {
  tune_allocator_for_inference();
  if (config.num_classes < 2) throw Error("num_classes must be >= 2 (background + 1)");
  set_class_names(std::move(class_names));
  impl_->eval();
}

void MaskRCNN::set_class_names(std::vector<std::string> names) {
  const auto n = static_cast<size_t>(config_.num_classes);
  if (names.empty() && n == coco_category_names().size()) names = coco_category_names();
  if (!names.empty() && names.size() != n)
    throw Error("class names: " + std::to_string(names.size()) + " given for a model with " +
                std::to_string(n) + " classes (background included)");
  if (names.empty()) {
    names.push_back("__background__");
    for (size_t i = 1; i < n; ++i) names.push_back(std::to_string(i));
  }
  class_names_ = std::move(names);
}

const MaskRCNNConfig& MaskRCNN::config() const { return config_; }

void MaskRCNN::reset_predictors(int num_classes) {
  if (num_classes < 2) throw Error("num_classes must be >= 2 (background + 1)");
  const auto dev = device();
  impl_->roi_heads->reset_predictors(num_classes);
  impl_->roi_heads->to(dev);
  config_.num_classes = num_classes;
  set_class_names({});
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
  return predict_impl(images, nullptr);
}

Detections MaskRCNN::predict_traced(const at::Tensor& image, ForwardTrace& trace) const {
  trace = ForwardTrace{};
  StageProfiler profiler;
  auto dets = predict_impl({image}, &trace).at(0);
  trace.stage_times = profiler.stages();
  trace.detections = dets;
  return dets;
}

std::vector<Detections> MaskRCNN::predict_impl(const std::vector<at::Tensor>& images,
                                               ForwardTrace* trace) const {
  if (images.empty()) return {};
  c10::InferenceMode guard;
  std::vector<at::Tensor> inputs;
  for (auto& im : images) {
    // uint8 as to_float_image converts it: / 255 in float.
    inputs.push_back(im.scalar_type() == at::kByte ? im.to(device(), at::kFloat).div_(255.0)
                                                   : im.to(device(), at::kFloat));
  }
  const bool was_training = impl_->is_training();
  if (was_training) impl_->eval();
  try {
    auto out = impl_->forward(inputs, trace);
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
