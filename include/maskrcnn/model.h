// maskrcnn::MaskRCNN: torchvision's Mask R-CNN (ResNet-FPN v1 and v2) in C++.
//
//   #include <maskrcnn/maskrcnn.h>
//   auto model = maskrcnn::MaskRCNN::from_checkpoint("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth");
//   at::Tensor image = maskrcnn::read_image_rgb("street.jpg");   // float [3, H, W] in [0, 1]
//   auto dets = model.predict({image});
//   for (int64_t i = 0; i < dets[0].size(); ++i)
//     ... dets[0].boxes[i], dets[0].scores[i], dets[0].labels[i], dets[0].binary_mask(i, 0.5)
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/config.h"

namespace maskrcnn {

namespace modeling {
class GeneralizedRCNNImpl;
}

// One instance's mask, pasted into the image exactly as torchvision's
// paste_masks_in_image does, stored only where it can be non-zero: the
// probabilities of image pixels [y0, y0 + h) x [x0, x0 + w).
struct InstanceMask {
  int64_t x0 = 0, y0 = 0;
  at::Tensor probs;  // float [h, w] (h or w may be 0 for boxes outside the image)
};

// Detections for one image, in its original pixel coordinates. Its tensors
// live on the model's device (see MaskRCNN::to).
struct Detections {
  int64_t image_height = 0, image_width = 0;
  at::Tensor boxes;   // float [N, 4] x1, y1, x2, y2
  at::Tensor scores;  // float [N], descending
  at::Tensor labels;  // int64 [N]; for COCO models the COCO category id
  std::vector<InstanceMask> masks;

  int64_t size() const { return boxes.defined() ? boxes.size(0) : 0; }
  // Full-image probabilities [H, W] (torchvision's masks[i, 0]).
  at::Tensor mask_probs(int64_t i) const;
  // Full-image binary mask [H, W] uint8: probs >= threshold.
  at::Tensor binary_mask(int64_t i, double threshold = 0.5) const;
};

// One image's ground truth for training, in that image's own pixels.
struct TrainingTarget {
  at::Tensor boxes;   // float [N, 4] x1, y1, x2, y2 with x2 > x1 and y2 > y1
  at::Tensor labels;  // int64 [N], in 1 .. num_classes - 1
  at::Tensor masks;   // uint8 [N, H, W], 1 inside the object
  // Seeds this image's RPN and RoI sampling: runs are reproducible and do not
  // depend on which process or batch slot the image lands in.
  uint64_t sampling_seed = 0;
};

// Training losses under torchvision's names and in its order: loss_classifier,
// loss_box_reg, loss_mask, loss_objectness, loss_rpn_box_reg.
using LossTerms = std::vector<std::pair<std::string, at::Tensor>>;

// Overrides applied on top of what a checkpoint implies.
struct ModelOverrides {
  std::optional<Arch> arch;
  std::optional<int> num_classes;
  std::optional<int> min_size, max_size;
  std::optional<double> box_score_thresh;
  std::optional<int> box_detections_per_img;
  std::optional<double> backbone_norm_eps;
};

class MaskRCNN {
 public:
  // A randomly initialised model (torchvision's initialisation).
  explicit MaskRCNN(const MaskRCNNConfig& config);
  // Reads a torchvision checkpoint (.pth, zip or legacy format; 2019 key names
  // accepted), infers v1/v2, backbone depth and class count from its keys and
  // shapes, then applies `overrides`. Throws maskrcnn::Error naming the file
  // and the missing, unexpected or mis-shaped keys.
  static MaskRCNN from_checkpoint(const std::string& path, const ModelOverrides& overrides = {});

  // images: float [3, H, W] in [0, 1], RGB, any sizes. Inference mode, no grad
  // (a model in training mode is switched to eval for the call).
  std::vector<Detections> predict(const std::vector<at::Tensor>& images) const;

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
  void reset_predictors(int num_classes);

  const MaskRCNNConfig& config() const;
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
  std::shared_ptr<modeling::GeneralizedRCNNImpl> impl_;
};

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

// Infers the architecture from a state dict's keys and shapes.
MaskRCNNConfig infer_config(const StateDict& state, const std::string& source);

// Makes glibc keep freed large blocks in the heap instead of unmapping them
// (feature maps are 50-200 MB; re-faulting them after every layer tripled
// inference time), and gives LibTorch a CPU allocator on plain malloc so
// that they are reused (glibc does not reuse freed blocks of LibTorch's
// posix_memalign). MaskRCNN's constructors call it once; set
// MASKRCNN_KEEP_MALLOC=1 to leave malloc's settings alone. No-op off glibc.
// Also caps oneDNN's process-wide primitive cache at 16 primitives (~500 MB
// less peak RSS over many image sizes); ONEDNN_PRIMITIVE_CACHE_CAPACITY overrides.
void tune_allocator_for_inference();

// How inference computes 3x3 stride-1 convolutions on the CPU (most of the
// model's work). Winograd (the default where available): oneDNN's Winograd
// F(4x4, 3x3), about 2.5x fewer multiplies, outputs within ~1e-5 relative of
// direct. Direct: LibTorch's convolutions, as torchvision computes them.
// Process-wide; frozen batch norm is folded into the weights either way.
// Training uses it too (forward and both backward passes), except in models
// with BatchNorm2d in train mode, whose batch statistics amplify Winograd's
// rounding in the gradients: those train on direct convolutions.
enum class ConvAlgorithm { Direct, Winograd };
void set_conv_algorithm(ConvAlgorithm algorithm);  // Winograd where unavailable: Direct
ConvAlgorithm conv_algorithm();
// Built with oneDNN (MASKRCNN_WITH_DNNL) and a CPU it has Winograd for (AVX-512).
bool winograd_available();
// Winograd keeps every transformed tile in a scratchpad: ~280 MB for a
// 256-channel convolution on the largest FPN level of an 800x1216 image. A
// convolution whose scratchpad would pass this many bytes runs in parts
// (groups of images, then bands of rows) that fit: default 320 MB, which
// runs every level of a default-size (800-1333 pixel) image whole; 192 MB
// (two bands there) keeps a photo's peak RSS ~130 MB lower for ~20 ms; 0
// never splits. Process-wide.
void set_winograd_scratchpad_budget(std::size_t bytes);
std::size_t winograd_scratchpad_budget();

// The arithmetic of inference convolutions on the CPU. F32 (default): as
// torchvision. BF16: every convolution takes bf16 inputs and weights with f32
// accumulation and outputs (~2x faster where the CPU has bf16 instructions);
// boxes and scores move by ~1e-2 relative. Process-wide.
enum class Precision { F32, BF16 };
void set_inference_precision(Precision precision);  // BF16 where unavailable: F32
Precision inference_precision();
// Built with oneDNN and a CPU with fast bf16 convolutions (AVX-512).
bool bf16_available();

// The 91 labels of torchvision's COCO models ("__background__", "person", ..., "N/A" gaps).
const std::vector<std::string>& coco_category_names();

}  // namespace maskrcnn
