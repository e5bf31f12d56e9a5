// CPU NMS with torchvision's exact semantics (nms_kernel.cpp): a stable sort by
// descending score, areas without the +1, suppression when IoU > threshold.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "ops/nms/nms_kernel.h"

namespace maskrcnn::ops::detail {
namespace {

template <typename T>
at::Tensor nms_impl(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = dets.size(0);
  auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto boxes = dets.contiguous();
  const T* b = boxes.data_ptr<T>();
  const int64_t* ord = order.data_ptr<int64_t>();

  // Gather in score order so the inner loop reads memory sequentially.
  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t i = 0; i < n; ++i) {
    const T* r = b + ord[i] * 4;
    x1[i] = r[0];
    y1[i] = r[1];
    x2[i] = r[2];
    y2[i] = r[3];
    area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
  }
  std::vector<uint8_t> suppressed(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(ord[i]);
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      if (suppressed[j]) continue;
      const T w = std::max(T(0), std::min(ix2, x2[j]) - std::max(ix1, x1[j]));
      const T h = std::max(T(0), std::min(iy2, y2[j]) - std::max(iy1, y1[j]));
      const T inter = w * h;
      const T ovr = inter / (iarea + area[j] - inter);
      if (ovr > iou_threshold) suppressed[j] = 1;
    }
  }
  auto out = at::empty({static_cast<int64_t>(keep.size())}, dets.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

}  // namespace

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  if (dets.numel() == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cpu", [&] {
    result = nms_impl<scalar_t>(dets, scores, iou_threshold);
  });
  return result;
}

}  // namespace maskrcnn::ops::detail
