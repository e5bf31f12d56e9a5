#include "ops/map_layout.h"

#include <ATen/ATen.h>

namespace maskrcnn::ops {

bool is_blocked(const at::Tensor& x) { return x.defined() && x.dim() == 5 && x.size(4) == 16; }

bool sole_owner(const at::Tensor& x) {
  return x.defined() && x.use_count() == 1 && x.has_storage() && x.storage().use_count() == 1;
}

MapLayout layout_of(const at::Tensor& x) {
  if (is_blocked(x)) return MapLayout::Blocked16;
  if (x.defined() && x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return MapLayout::ChannelsLast;
  return MapLayout::NCHW;
}

int64_t map_channels(const at::Tensor& x) { return is_blocked(x) ? x.size(1) * 16 : x.size(1); }

std::pair<int64_t, int64_t> map_size(const at::Tensor& x) { return {x.size(2), x.size(3)}; }

namespace {
// [N, C/16, H, W, 16] as the channels-last 4-D map [N*C/16, 16, H, W] (a view).
at::Tensor blocked_as_channels_last(const at::Tensor& x) {
  return x.reshape({x.size(0) * x.size(1), x.size(2), x.size(3), 16}).permute({0, 3, 1, 2});
}
// The inverse, for a channels-last [N*G, 16, H, W] result.
at::Tensor channels_last_as_blocked(const at::Tensor& y, int64_t n) {
  auto nhwc = y.permute({0, 2, 3, 1}).contiguous();  // a view unless y is not channels-last
  return nhwc.view({n, y.size(0) / n, y.size(2), y.size(3), 16});
}
}  // namespace

at::Tensor to_4d(const at::Tensor& x, MapLayout layout) {
  if (!is_blocked(x)) return x;
  const int64_t n = x.size(0), g = x.size(1), h = x.size(2), w = x.size(3);
  if (layout == MapLayout::ChannelsLast)  // [N, H, W, G, 16] viewed as NCHW sizes
    return x.permute({0, 2, 3, 1, 4}).contiguous().view({n, h, w, g * 16}).permute({0, 3, 1, 2});
  return x.permute({0, 1, 4, 2, 3}).reshape({n, g * 16, h, w});
}

at::Tensor to_layout(const at::Tensor& x, MapLayout layout) {
  if (layout_of(x) == layout) return x;
  if (layout != MapLayout::Blocked16) {
    auto y = to_4d(x, layout);
    return y.contiguous(layout == MapLayout::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous);
  }
  TORCH_CHECK(x.dim() == 4 && x.size(1) % 16 == 0, "to_layout: a blocked map needs a multiple of 16 channels");
  const int64_t n = x.size(0), g = x.size(1) / 16, h = x.size(2), w = x.size(3);
  return x.reshape({n, g, 16, h, w}).permute({0, 1, 3, 4, 2}).contiguous();
}

at::Tensor max_pool2d_any(const at::Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  if (!is_blocked(x)) return at::max_pool2d(x, {kernel, kernel}, {stride, stride}, {padding, padding});
  auto y = at::max_pool2d(blocked_as_channels_last(x), {kernel, kernel}, {stride, stride}, {padding, padding});
  return channels_last_as_blocked(y, x.size(0));
}

at::Tensor upsample_nearest_any(const at::Tensor& x, int64_t height, int64_t width) {
  if (!is_blocked(x)) return at::upsample_nearest2d(x, {height, width}, c10::nullopt, c10::nullopt);
  auto y = at::upsample_nearest2d(blocked_as_channels_last(x), {height, width}, c10::nullopt, c10::nullopt);
  return channels_last_as_blocked(y, x.size(0));
}

}  // namespace maskrcnn::ops
