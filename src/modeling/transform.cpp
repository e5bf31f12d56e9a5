#include "modeling/transform.h"

#include <ATen/ATen.h>

#include <cmath>

#include "maskrcnn/error.h"

namespace maskrcnn::modeling {

std::pair<int64_t, int64_t> Transform::resized_size(int64_t h, int64_t w) const {
  // torchvision computes `min_size / torch.min(shape)` in float32, and torch
  // evaluates python_float / tensor as tensor.reciprocal() * python_float
  // (Tensor.__rdiv__): the rounding differs from a plain division, and the
  // output size floor(size * scale) below can differ by one pixel.
  const float min_side = static_cast<float>(std::min(h, w));
  const float max_side = static_cast<float>(std::max(h, w));
  const float scale = std::min((1.0f / min_side) * static_cast<float>(cfg_.min_size),
                               (1.0f / max_side) * static_cast<float>(cfg_.max_size));
  const double s = static_cast<double>(scale);
  return {static_cast<int64_t>(std::floor(static_cast<double>(h) * s)),
          static_cast<int64_t>(std::floor(static_cast<double>(w) * s))};
}

at::Tensor Transform::normalize(const at::Tensor& image) const {
  auto opts = image.options();
  auto mean = at::tensor(cfg_.image_mean, opts.dtype(at::kFloat)).to(opts).view({-1, 1, 1});
  auto std = at::tensor(cfg_.image_std, opts.dtype(at::kFloat)).to(opts).view({-1, 1, 1});
  return (image - mean) / std;
}

at::Tensor Transform::resize(const at::Tensor& image) const {
  auto [oh, ow] = resized_size(image.size(-2), image.size(-1));
  if (oh < 1 || ow < 1) throw Error("image too small to resize");
  // recompute_scale_factor=True: the kernel uses in/out sizes, not the scale.
  return at::upsample_bilinear2d(image.unsqueeze(0), {oh, ow}, /*align_corners=*/false,
                                 c10::nullopt, c10::nullopt)
      .squeeze(0);
}

ImageBatch Transform::operator()(const std::vector<at::Tensor>& images) const {
  ImageBatch batch;
  std::vector<at::Tensor> resized;
  int64_t max_h = 0, max_w = 0, channels = 0;
  for (auto& img : images) {
    TORCH_CHECK(img.dim() == 3, "images must be [C, H, W], got ", img.sizes());
    TORCH_CHECK(img.is_floating_point(), "images must be floating point in [0, 1]");
    auto r = resize(normalize(img));
    batch.image_sizes.emplace_back(r.size(1), r.size(2));
    channels = std::max(channels, r.size(0));
    max_h = std::max(max_h, r.size(1));
    max_w = std::max(max_w, r.size(2));
    resized.push_back(std::move(r));
  }
  const double stride = cfg_.size_divisible;
  const int64_t pad_h = static_cast<int64_t>(std::ceil(max_h / stride) * stride);
  const int64_t pad_w = static_cast<int64_t>(std::ceil(max_w / stride) * stride);
  batch.tensors = at::zeros({static_cast<int64_t>(images.size()), channels, pad_h, pad_w},
                            resized.at(0).options());
  for (size_t i = 0; i < resized.size(); ++i) {
    batch.tensors[i]
        .slice(0, 0, resized[i].size(0))
        .slice(1, 0, resized[i].size(1))
        .slice(2, 0, resized[i].size(2))
        .copy_(resized[i]);
  }
  return batch;
}

ImageBatch Transform::operator()(const std::vector<at::Tensor>& images,
                                 std::vector<TrainingTarget>& targets) const {
  TORCH_CHECK(images.size() == targets.size(), "one target per image");
  for (size_t i = 0; i < targets.size(); ++i) {
    auto& t = targets[i];
    const int64_t h = images[i].size(-2), w = images[i].size(-1);
    TORCH_CHECK(t.boxes.dim() == 2 && t.boxes.size(1) == 4, "target ", i,
                ": boxes must be [N, 4], got ", t.boxes.sizes());
    const int64_t n = t.boxes.size(0);
    TORCH_CHECK(t.labels.dim() == 1 && t.labels.size(0) == n, "target ", i, ": ", n,
                " boxes but labels of shape ", t.labels.sizes());
    TORCH_CHECK(t.masks.dim() == 3 && t.masks.size(0) == n && t.masks.size(1) == h &&
                    t.masks.size(2) == w,
                "target ", i, ": masks must be [", n, ", ", h, ", ", w, "], got ", t.masks.sizes());
    if (n > 0) {
      auto degenerate = (t.boxes.slice(1, 2) <= t.boxes.slice(1, 0, 2)).any(1);
      if (degenerate.any().item<bool>()) {
        auto k = at::where(degenerate)[0][0].item<int64_t>();
        throw Error("target " + std::to_string(i) + ": box " + std::to_string(k) +
                    " has no positive width and height");
      }
    }
    auto [oh, ow] = resized_size(h, w);
    t.boxes = resize_boxes(t.boxes, {h, w}, {oh, ow});
    if (n > 0) {
      // F.interpolate(mode="nearest") with the recomputed scale: sizes only.
      t.masks = at::upsample_nearest2d(t.masks.unsqueeze(1).to(at::kFloat), {oh, ow},
                                       c10::nullopt, c10::nullopt)
                    .squeeze(1)
                    .to(at::kByte);
    } else {
      t.masks = at::zeros({0, oh, ow}, t.masks.options());
    }
  }
  return (*this)(images);
}

at::Tensor resize_boxes(const at::Tensor& boxes, std::pair<int64_t, int64_t> from,
                        std::pair<int64_t, int64_t> to) {
  // Ratios as float32 tensors divided, like torchvision.
  const float ratio_h = static_cast<float>(to.first) / static_cast<float>(from.first);
  const float ratio_w = static_cast<float>(to.second) / static_cast<float>(from.second);
  auto b = boxes.unbind(1);
  return at::stack({b[0] * ratio_w, b[1] * ratio_h, b[2] * ratio_w, b[3] * ratio_h}, 1);
}

}  // namespace maskrcnn::modeling
