// torchvision AnchorGenerator with the Mask R-CNN defaults: one size per FPN
// level (32..512) and aspect ratios 0.5/1/2 (height / width).
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace maskrcnn::modeling {

class AnchorGenerator {
 public:
  AnchorGenerator(std::vector<double> sizes = {32, 64, 128, 256, 512},
                  std::vector<double> aspect_ratios = {0.5, 1.0, 2.0});
  int64_t num_anchors_per_location() const { return static_cast<int64_t>(ratios_.size()); }
  // Anchors for all levels, concatenated: [sum(H_l * W_l * A), 4]. One set
  // serves every image of the batch (they share the padded size).
  at::Tensor anchors(int64_t padded_height, int64_t padded_width,
                     const std::vector<at::Tensor>& feature_maps) const;
  // One location's anchors for one size, centred on (0, 0): [A, 4].
  at::Tensor cell_anchors(double size) const;
  const std::vector<double>& sizes() const { return sizes_; }
  const std::vector<double>& aspect_ratios() const { return ratios_; }

 private:
  std::vector<double> sizes_, ratios_;
  // Anchors depend only on sizes: cache them (inference sees few distinct sizes).
  mutable std::mutex mu_;
  mutable std::map<std::vector<int64_t>, at::Tensor> cache_;
};

}  // namespace maskrcnn::modeling
