// torchvision.models.detection._utils: Matcher and BalancedPositiveNegativeSampler,
// the training-time assignment of anchors / proposals to ground-truth boxes.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace maskrcnn::modeling {

class Matcher {
 public:
  static constexpr int64_t kBelowLowThreshold = -1;
  static constexpr int64_t kBetweenThresholds = -2;

  Matcher(double high_threshold, double low_threshold, bool allow_low_quality_matches);
  // quality [M gt, N predictions] -> int64 [N]: gt index, or one of the negatives above.
  at::Tensor operator()(const at::Tensor& match_quality_matrix) const;

 private:
  double high_, low_;
  bool allow_low_quality_;
};

// Samples up to batch_size_per_image elements per image with at most
// positive_fraction positives. Which ones is drawn from a generator seeded by
// the image's own seed, so the choice does not depend on the process or on
// the other images of the batch.
class BalancedPositiveNegativeSampler {
 public:
  BalancedPositiveNegativeSampler(int64_t batch_size_per_image, double positive_fraction)
      : batch_size_(batch_size_per_image), positive_fraction_(positive_fraction) {}
  // labels: per image, -1 ignore, 0 negative, >= 1 positive. Returns per image
  // (positive mask, negative mask) as bool tensors.
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> operator()(
      const std::vector<at::Tensor>& labels, const std::vector<uint64_t>& seeds) const;

 private:
  int64_t batch_size_;
  double positive_fraction_;
};

}  // namespace maskrcnn::modeling
