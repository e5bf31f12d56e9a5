#include "modeling/poolers.h"
#include "ops/map_layout.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "maskrcnn/ops.h"

namespace maskrcnn::modeling {
namespace {

// torchvision _infer_scale: 2 ** round(log2(feature / image)), in float32.
double infer_scale(int64_t feature_size, int64_t image_size) {
  const float approx = static_cast<float>(static_cast<double>(feature_size) /
                                          static_cast<double>(image_size));
  const float lg = std::log2(approx);
  return std::pow(2.0, static_cast<double>(std::nearbyint(lg)));
}

}  // namespace

at::Tensor boxes_to_rois(const std::vector<at::Tensor>& boxes) {
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < boxes.size(); ++i) {
    auto ids = at::full({boxes[i].size(0), 1}, static_cast<double>(i), boxes[i].options());
    parts.push_back(at::cat({ids, boxes[i]}, 1));
  }
  return at::cat(parts, 0);
}

at::Tensor MultiScaleRoIAlign::operator()(
    const std::vector<at::Tensor>& all_features, const std::vector<at::Tensor>& boxes,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes) const {
  const size_t num_levels = 4;
  std::vector<at::Tensor> x(all_features.begin(), all_features.begin() + num_levels);
  int64_t max_h = 0, max_w = 0;
  for (auto& s : image_sizes) {
    max_h = std::max(max_h, s.first);
    max_w = std::max(max_w, s.second);
  }
  std::vector<double> scales;
  for (auto& f : x) scales.push_back(infer_scale(ops::map_size(f).first, max_h));  // maps in any ops::MapLayout
  const double k_min = -std::log2(static_cast<float>(scales.front()));
  const double k_max = -std::log2(static_cast<float>(scales.back()));

  auto rois = boxes_to_rois(boxes);
  const int64_t num_rois = rois.size(0);
  if (num_rois == 0) return at::zeros({0, ops::map_channels(x[0]), output_size_, output_size_}, x[0].options());

  // LevelMapper (FPN paper eq. 1), float32 like torchvision.
  auto box_cat = rois.slice(1, 1, 5);
  auto s = at::sqrt(ops::box_area(box_cat));
  auto target = at::floor(4 + at::log2(s / 224.0) + at::scalar_tensor(1e-6, s.options()));
  auto levels = (at::clamp(target, k_min, k_max).to(at::kLong) - static_cast<int64_t>(k_min));

  return ops::multi_level_roi_align(x, rois, levels, scales, output_size_, sampling_ratio_, /*aligned=*/false);
}

}  // namespace maskrcnn::modeling
