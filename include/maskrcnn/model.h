// maskrcnn::MaskRCNN: torchvision's Mask R-CNN (ResNet-FPN v1 and v2) in C++,
// and load_model, the one way from weights to a model.
//
//   #include <maskrcnn/maskrcnn.h>
//   auto model = maskrcnn::load_model("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth");
//   at::Tensor rgb = maskrcnn::read_image("street.jpg");   // uint8 [3, H, W]
//   auto dets = model.predict({rgb})[0];
//   for (int64_t i = 0; i < dets.size(); ++i)
//     ... model.class_names()[dets.labels[i].item<int64_t>()], dets.scores[i], dets.binary_mask(i, 0.5)
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "maskrcnn/config.h"
#include "maskrcnn/cpu_settings.h"
#include "maskrcnn/types.h"

namespace maskrcnn {

struct ForwardTrace;  // maskrcnn/trace.h

namespace modeling {
class GeneralizedRCNNImpl;
}

// Overrides applied on top of what a checkpoint (and its sidecar) implies.
struct ModelOverrides {
  std::optional<Arch> arch;        // must be the checkpoint's (checked)
  std::optional<int> num_classes;  // must be the checkpoint's, unless new_predictors
  // Fine-tuning: where num_classes differs from the checkpoint's, fresh box
  // and mask predictors for it (torchvision's tutorial) instead of an error.
  bool new_predictors = false;
  std::optional<int> min_size, max_size;
  std::optional<double> box_score_thresh;
  std::optional<int> box_detections_per_img;
  std::optional<double> backbone_norm_eps;
  std::optional<int> trainable_backbone_layers;
  // Training sizes: RoIs sampled per image for the heads, RPN proposals kept.
  std::optional<int> box_batch_size_per_image;
  std::optional<int> rpn_top_n_train;
  // Not in the state dict: the sidecar's, else torchvision's 32..512.
  std::optional<std::vector<double>> anchor_sizes;
  // Index = label, [0] = "__background__". Empty: the sidecar's, else COCO's
  // for a 91-class model, else "1", "2", ...
  std::vector<std::string> class_names;
};

class MaskRCNN {
 public:
  // A randomly initialised model (torchvision's initialisation). Weights
  // come through load_model below. class_names: as ModelOverrides's.
  explicit MaskRCNN(const MaskRCNNConfig& config, std::vector<std::string> class_names = {});

  // images: RGB [3, H, W], any sizes, uint8 (0-255, as read_image returns)
  // or float in [0, 1]. Inference mode, no grad (a model in training mode is
  // switched to eval for the call).
  std::vector<Detections> predict(const std::vector<at::Tensor>& images) const;
  // predict for one image that also records what each stage computed
  // (maskrcnn/trace.h) and the stage times. Slower than predict: it keeps
  // every intermediate and computes all classes' 28x28 masks.
  Detections predict_traced(const at::Tensor& image, ForwardTrace& trace) const;

  // The training losses of a batch, differentiable w.r.t. the parameters that
  // require grad (torchvision's model(images, targets) in train mode). Needs
  // train(true); batch norm follows the module's mode as in torchvision.
  LossTerms losses(const std::vector<at::Tensor>& images,
                   const std::vector<TrainingTarget>& targets) const;
  void train(bool on = true);
  bool is_training() const;
  // The parameters an optimizer should update (requires_grad), with their names.
  std::vector<std::pair<std::string, at::Tensor>> trainable_parameters() const;

  // Fine-tuning on another label set: fresh box and mask predictors for
  // `num_classes` (torchvision's tutorial), everything else kept.
  // Class names become "1", "2", ... for the new labels.
  void reset_predictors(int num_classes);

  const MaskRCNNConfig& config() const;
  // The name of each label (index = label, [0] = "__background__").
  const std::vector<std::string>& class_names() const { return class_names_; }
  void set_class_names(std::vector<std::string> names);
  StateDict state_dict() const;
  // Strict: every key must be present with the right shape (after renaming
  // torchvision's older key names). `source` names the origin in errors.
  void load_state_dict(const StateDict& state, const std::string& source = "state dict");
  // CPU, or CUDA where built with MASKRCNN_WITH_CUDA (RoIAlign and NMS
  // kernels; the rest is ATen). On a GPU, convolutions are LibTorch's (cuDNN,
  // with its TF32 default); Winograd, bf16 and the thread settings below are
  // CPU-only and ignored there.
  void to(const at::Device& device);
  at::Device device() const;

  modeling::GeneralizedRCNNImpl& module() const { return *impl_; }

 private:
  MaskRCNNConfig config_;
  std::vector<std::string> class_names_;
  std::shared_ptr<modeling::GeneralizedRCNNImpl> impl_;
  std::vector<Detections> predict_impl(const std::vector<at::Tensor>& images, ForwardTrace* trace) const;
};

// The one builder: weights + overrides -> a model with its config and class
// names, used by predict, eval, train and the library alike.
//
// From a torchvision checkpoint (.pth, zip or legacy format; 2019 key names
// accepted): infers v1/v2, backbone depth and class count from its keys and
// shapes; reads the sidecar `maskrcnn train` writes beside its weights
// (model_final.pth -> model_final.json: input sizes, class names) when there
// is one; then applies `overrides`. Throws maskrcnn::Error naming the file and
// what is wrong (missing, unexpected or mis-shaped keys). Part of library
// maskrcnn (the sidecar is JSON); a LibTorch-only build has the one below.
MaskRCNN load_model(const std::string& weights_path, const ModelOverrides& overrides = {});
// From a state dict already in memory; `source` names it in errors.
MaskRCNN load_model(const StateDict& state, const ModelOverrides& overrides = {},
                    const std::string& source = "state dict");

// "cpu", "cuda" or "cuda:N", for MaskRCNN::to. Throws maskrcnn::Error naming
// the device when it is none of those, when this build has no CUDA kernels
// (configure with -DMASKRCNN_WITH_CUDA=ON against a CUDA LibTorch), or when
// that GPU is not visible.
at::Device parse_device(const std::string& name);
// Built with the CUDA kernels of RoIAlign and NMS (MASKRCNN_WITH_CUDA).
bool cuda_kernels_built();

// torchvision's cached COCO checkpoint:
// $TORCH_HOME/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth
// (TORCH_HOME defaults to $XDG_CACHE_HOME/torch, else ~/.cache/torch).
std::string default_weights_path();



// The 91 labels of torchvision's COCO models ("__background__", "person", ..., "N/A" gaps).
const std::vector<std::string>& coco_category_names();

}  // namespace maskrcnn
