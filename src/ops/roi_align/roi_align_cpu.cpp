// CPU RoIAlign, numerically identical to torchvision's roi_align_kernel.cpp
// (same sample positions, same bilinear weights, same summation order), but
// parallel: the forward over RoIs, the backward over channels (each channel's
// gradient plane is written by one thread only, so no atomics are needed).
// A channels-last input takes a forward vectorised over channels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/roi_align/roi_align_kernel.h"

namespace maskrcnn::ops::detail {
namespace {

template <typename T>
struct Sample {  // one bilinear sample: four positions and their weights
  int64_t pos1, pos2, pos3, pos4;
  T w1, w2, w3, w4;
};

template <typename T>
struct RoiGeometry {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
};

template <typename T>
RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int64_t pooled_height,
                            int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  RoiGeometry<T> g;
  g.batch = static_cast<int64_t>(roi[0]);
  const T offset = aligned ? T(0.5) : T(0.0);
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  T end_w = roi[3] * spatial_scale - offset;
  T end_h = roi[4] * spatial_scale - offset;
  T roi_width = end_w - g.start_w;
  T roi_height = end_h - g.start_h;
  if (!aligned) {  // legacy behaviour: force malformed RoIs to be 1x1
    roi_width = std::max(roi_width, T(1.));
    roi_height = std::max(roi_height, T(1.));
  }
  g.bin_h = roi_height / static_cast<T>(pooled_height);
  g.bin_w = roi_width / static_cast<T>(pooled_width);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(std::ceil(roi_height / pooled_height));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(std::ceil(roi_width / pooled_width));
  return g;
}

// Coordinate of sample i (of `grid`) in bin p, as torchvision computes it.
template <typename T>
inline T sample_coord(T start, int64_t p, T bin, int64_t i, int64_t grid) {
  return start + p * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
}

// Bilinear sample at (y, x); returns false when the point lies outside the map.
template <typename T>
bool bilinear_sample(int64_t height, int64_t width, T y, T x, int64_t& y_low, int64_t& x_low,
                     int64_t& y_high, int64_t& x_high, T& w1, T& w2, T& w3, T& w4) {
  if (y < -1.0 || y > height || x < -1.0 || x > width) return false;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  y_low = static_cast<int64_t>(y);
  x_low = static_cast<int64_t>(x);
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  T ly = y - y_low, lx = x - x_low;
  T hy = T(1.) - ly, hx = T(1.) - lx;
  w1 = hy * hx;
  w2 = hy * lx;
  w3 = ly * hx;
  w4 = ly * lx;
  return true;
}

// One RoI's bilinear samples, [bin][grid position], shared by all channels:
// positions (y * width + x) and weights of the four taps; a sample outside the
// map stays all-zero (zero weights on position 0).
template <typename T>
void fill_samples(const RoiGeometry<T>& g, int64_t height, int64_t width, int64_t pooled_height,
                  int64_t pooled_width, std::vector<Sample<T>>& samples) {
  samples.assign(pooled_height * pooled_width * g.grid_h * g.grid_w, Sample<T>{});
  int64_t idx = 0;
  for (int64_t ph = 0; ph < pooled_height; ++ph)
    for (int64_t pw = 0; pw < pooled_width; ++pw)
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const T yy = sample_coord<T>(g.start_h, ph, g.bin_h, iy, g.grid_h);
        for (int64_t ix = 0; ix < g.grid_w; ++ix, ++idx) {
          const T xx = sample_coord<T>(g.start_w, pw, g.bin_w, ix, g.grid_w);
          int64_t yl, xl, yh, xh;
          T w1, w2, w3, w4;
          if (bilinear_sample<T>(height, width, yy, xx, yl, xl, yh, xh, w1, w2, w3, w4))
            samples[idx] = {yl * width + xl, yl * width + xh, yh * width + xl, yh * width + xh, w1, w2, w3, w4};
        }
      }
}

template <typename T>
void roi_align_forward_impl(const T* input, const T* rois, int64_t num_rois, int64_t channels,
                            int64_t height, int64_t width, T spatial_scale, int64_t pooled_height,
                            int64_t pooled_width, int64_t sampling_ratio, bool aligned, T* output) {
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples;
    for (int64_t n = begin; n < end; ++n) {
      auto g = roi_geometry<T>(rois + n * 5, spatial_scale, pooled_height, pooled_width,
                               sampling_ratio, aligned);
      const T count = std::max<int64_t>(g.grid_h * g.grid_w, 1);
      fill_samples<T>(g, height, width, pooled_height, pooled_width, samples);  // once for all channels
      for (int64_t c = 0; c < channels; ++c) {
        const T* data = input + (g.batch * channels + c) * height * width;
        T* out = output + (n * channels + c) * pooled_height * pooled_width;
        int64_t s_idx = 0;
        for (int64_t p = 0; p < pooled_height * pooled_width; ++p) {
          T val = 0;
          for (int64_t k = 0; k < g.grid_h * g.grid_w; ++k) {
            const Sample<T>& s = samples[s_idx++];
            val += s.w1 * data[s.pos1] + s.w2 * data[s.pos2] + s.w3 * data[s.pos3] +
                   s.w4 * data[s.pos4];
          }
          out[p] = val / count;
        }
      }
    }
  });
}

// One RoI's bins as [bin][channel]: the NHWC forward's arithmetic. (Clones
// of it for AVX-512 and AVX2 measured no faster: the taps' loads from the
// large maps, not the arithmetic, bound it.)
template <typename T>
void pool_roi_nhwc(const T* data, int64_t height, int64_t width, int64_t channels, const RoiGeometry<T>& g,
                   int64_t pooled_height, int64_t pooled_width, T* pooled) {
  const T count = std::max<int64_t>(g.grid_h * g.grid_w, 1);
  for (int64_t ph = 0; ph < pooled_height; ++ph)
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      T* __restrict__ v = pooled + (ph * pooled_width + pw) * channels;
      std::fill(v, v + channels, T(0));
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const T yy = sample_coord<T>(g.start_h, ph, g.bin_h, iy, g.grid_h);
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          const T xx = sample_coord<T>(g.start_w, pw, g.bin_w, ix, g.grid_w);
          int64_t yl = 0, xl = 0, yh = 0, xh = 0;
          T w1 = 0, w2 = 0, w3 = 0, w4 = 0;
          // Outside the map: all-zero weights on position 0, as the NCHW kernel.
          bilinear_sample<T>(height, width, yy, xx, yl, xl, yh, xh, w1, w2, w3, w4);
          const T* a = data + (yl * width + xl) * channels;
          const T* b = data + (yl * width + xh) * channels;
          const T* c = data + (yh * width + xl) * channels;
          const T* d = data + (yh * width + xh) * channels;
          for (int64_t k = 0; k < channels; ++k) v[k] += w1 * a[k] + w2 * b[k] + w3 * c[k] + w4 * d[k];
        }
      }
      for (int64_t k = 0; k < channels; ++k) v[k] /= count;
    }
}

// The same arithmetic on a channels-last map: each of a sample's four taps is
// a contiguous vector of all channels, so the inner loop runs over channels
// (vectorised) instead of gathering one scalar per channel per tap. Bins are
// gathered as [bin][channel] and transposed once per RoI into [channel][bin].
template <typename T>
void roi_align_forward_nhwc_impl(const T* input, const T* rois, int64_t num_rois, int64_t channels,
                                 int64_t height, int64_t width, T spatial_scale, int64_t pooled_height,
                                 int64_t pooled_width, int64_t sampling_ratio, bool aligned, T* output) {
  const int64_t bins = pooled_height * pooled_width;
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> pooled(bins * channels);
    for (int64_t n = begin; n < end; ++n) {
      auto g = roi_geometry<T>(rois + n * 5, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
      pool_roi_nhwc<T>(input + g.batch * height * width * channels, height, width, channels, g, pooled_height,
                       pooled_width, pooled.data());
      T* out = output + n * channels * bins;
      for (int64_t k = 0; k < channels; ++k)
        for (int64_t p = 0; p < bins; ++p) out[k * bins + p] = pooled[p * channels + k];
    }
  });
}

// One RoI from one image of a blocked map ([C/16][H][W][16]: oneDNN's
// nChw16c, which the FPN's convolutions write), straight into its
// [channel][bin] rows. Per 16-channel block, the NHWC kernel's arithmetic on
// 16 channels: the same taps, weights and order of sums. The samples'
// positions and weights are worked out once for all blocks.
void pool_roi_blocked16(const float* image, int64_t blocks, int64_t height, int64_t width,
                        const RoiGeometry<float>& g, int64_t pooled_height, int64_t pooled_width,
                        std::vector<Sample<float>>& samples, float* out) {
  constexpr int64_t kBlock = 16;
  const int64_t bins = pooled_height * pooled_width, grid = g.grid_h * g.grid_w;
  const float count = static_cast<float>(std::max<int64_t>(grid, 1));
  fill_samples<float>(g, height, width, pooled_height, pooled_width, samples);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* plane = image + b * height * width * kBlock;
    float* o = out + b * kBlock * bins;
    for (int64_t p = 0; p < bins; ++p) {
      float v[kBlock] = {};
      for (const Sample<float>* s = samples.data() + p * grid; s != samples.data() + (p + 1) * grid; ++s) {
        const float* a = plane + s->pos1 * kBlock;
        const float* bb = plane + s->pos2 * kBlock;
        const float* c = plane + s->pos3 * kBlock;
        const float* d = plane + s->pos4 * kBlock;
        for (int64_t k = 0; k < kBlock; ++k) v[k] += s->w1 * a[k] + s->w2 * bb[k] + s->w3 * c[k] + s->w4 * d[k];
      }
      for (int64_t k = 0; k < kBlock; ++k) o[k * bins + p] = v[k] / count;
    }
  }
}

// The order to pool RoIs in: by level, image and 128x128-pixel tile of the
// box's centre. Proposals overlap heavily, so RoIs pooled one after the other
// then read the same cache lines; in score order nearly every tap missed the
// caches (1000 box RoIs on 2 threads: ~56 -> ~31 ms). Outputs keep their rows.
std::vector<int64_t> locality_order(const float* rois, const int64_t* levels, int64_t num_rois) {
  const auto field = [](double v, double unit) -> uint64_t {  // NaN or out of range: 0
    const double t = v / unit;
    return t >= 0 && t < 65535 ? static_cast<uint64_t>(t) : 0;
  };
  std::vector<uint64_t> keys(num_rois);
  for (int64_t n = 0; n < num_rois; ++n) {
    const float* r = rois + n * 5;  // batch index, x1, y1, x2, y2
    keys[n] = field(static_cast<double>(levels[n]), 1) << 48 | field(r[0], 1) << 32 |
              field(static_cast<double>(r[2]) + r[4], 256) << 16 | field(static_cast<double>(r[1]) + r[3], 256);
  }
  std::vector<int64_t> order(num_rois);
  for (int64_t n = 0; n < num_rois; ++n) order[n] = n;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  return order;
}

// Each RoI from its own level, its bins gathered as [bin][channel] and
// transposed once into [channel][bin] (channels-last levels), or pooled block
// by block (blocked levels).
void roi_align_levels_forward_impl(const std::vector<const float*>& inputs, const std::vector<bool>& blocked,
                                   const std::vector<int64_t>& heights, const std::vector<int64_t>& widths,
                                   const std::vector<float>& scales, const float* rois, const int64_t* levels,
                                   int64_t num_rois, int64_t channels, int64_t pooled_height, int64_t pooled_width,
                                   int64_t sampling_ratio, bool aligned, float* output) {
  const int64_t bins = pooled_height * pooled_width;
  const std::vector<int64_t> order = locality_order(rois, levels, num_rois);
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> pooled;
    std::vector<Sample<float>> samples;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = order[i];
      const int64_t l = levels[n];
      auto g = roi_geometry<float>(rois + n * 5, scales[l], pooled_height, pooled_width, sampling_ratio, aligned);
      const float* image = inputs[l] + g.batch * heights[l] * widths[l] * channels;
      float* out = output + n * channels * bins;
      if (blocked[l]) {
        pool_roi_blocked16(image, channels / 16, heights[l], widths[l], g, pooled_height, pooled_width, samples, out);
        continue;
      }
      pooled.resize(bins * channels);
      pool_roi_nhwc<float>(image, heights[l], widths[l], channels, g, pooled_height, pooled_width, pooled.data());
      for (int64_t k = 0; k < channels; ++k)
        for (int64_t p = 0; p < bins; ++p) out[k * bins + p] = pooled[p * channels + k];
    }
  });
}

template <typename T>
void roi_align_backward_impl(const T* grad, const T* rois, int64_t num_rois, int64_t channels,
                             int64_t height, int64_t width, T spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                             T* grad_input) {
  // The samples (positions and weights) depend on the RoI, not the channel:
  // computed once here, then replayed for every channel in the same order
  // as torchvision's loop (RoI, bin, sample), so the sums are bit-identical.
  struct BinSample {
    int64_t bin;
    Sample<T> s;
  };
  std::vector<std::vector<BinSample>> samples(num_rois);
  std::vector<RoiGeometry<T>> geo(num_rois);
  at::parallel_for(0, num_rois, 16, [&](int64_t n_begin, int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      const auto g = geo[n] = roi_geometry<T>(rois + n * 5, spatial_scale, pooled_height, pooled_width,
                                              sampling_ratio, aligned);
      auto& list = samples[n];
      list.reserve(pooled_height * pooled_width * g.grid_h * g.grid_w);
      for (int64_t ph = 0; ph < pooled_height; ++ph)
        for (int64_t pw = 0; pw < pooled_width; ++pw)
          for (int64_t iy = 0; iy < g.grid_h; ++iy) {
            const T yy = sample_coord<T>(g.start_h, ph, g.bin_h, iy, g.grid_h);
            for (int64_t ix = 0; ix < g.grid_w; ++ix) {
              const T xx = sample_coord<T>(g.start_w, pw, g.bin_w, ix, g.grid_w);
              int64_t yl, xl, yh, xh;
              T w1, w2, w3, w4;
              if (!bilinear_sample<T>(height, width, yy, xx, yl, xl, yh, xh, w1, w2, w3, w4)) continue;
              list.push_back({ph * pooled_width + pw,
                              {yl * width + xl, yl * width + xh, yh * width + xl, yh * width + xh, w1, w2, w3, w4}});
            }
          }
    }
  });
  at::parallel_for(0, channels, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c)
      for (int64_t n = 0; n < num_rois; ++n) {
        const auto& g = geo[n];
        const T count = g.grid_h * g.grid_w;
        T* gin = grad_input + (g.batch * channels + c) * height * width;
        const T* gout = grad + (n * channels + c) * pooled_height * pooled_width;
        for (const auto& [bin, s] : samples[n]) {
          const T g_bin = gout[bin];
          gin[s.pos1] += g_bin * s.w1 / count;
          gin[s.pos2] += g_bin * s.w2 / count;
          gin[s.pos3] += g_bin * s.w3 / count;
          gin[s.pos4] += g_bin * s.w4 / count;
        }
      }
  });
}

}  // namespace

at::Tensor roi_align_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_,
                                 double spatial_scale, int64_t pooled_height,
                                 int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  // A channels-last map (what inference passes) is read as is; anything
  // else goes through the NCHW kernel.
  const bool nhwc = !input_.is_contiguous() && input_.is_contiguous(at::MemoryFormat::ChannelsLast);
  auto input = nhwc ? input_ : input_.contiguous();
  auto rois = rois_.to(input.scalar_type()).contiguous();
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width},
                          input.options().memory_format(at::MemoryFormat::Contiguous));
  if (num_rois == 0 || output.numel() == 0) return output;
  if (nhwc) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu_nhwc", [&] {
      roi_align_forward_nhwc_impl<scalar_t>(input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), num_rois,
                                            channels, input.size(2), input.size(3),
                                            static_cast<scalar_t>(spatial_scale), pooled_height, pooled_width,
                                            sampling_ratio, aligned, output.data_ptr<scalar_t>());
    });
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    roi_align_forward_impl<scalar_t>(input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
                                     num_rois, channels, input.size(2), input.size(3),
                                     static_cast<scalar_t>(spatial_scale), pooled_height,
                                     pooled_width, sampling_ratio, aligned,
                                     output.data_ptr<scalar_t>());
  });
  return output;
}

at::Tensor roi_align_levels_forward_cpu(const std::vector<at::Tensor>& features, const at::Tensor& rois_,
                                        const at::Tensor& levels_, const std::vector<double>& scales,
                                        int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                        bool aligned) {
  TORCH_CHECK(!features.empty() && scales.size() == features.size(), "roi_align_levels: one scale per level");
  // A 5-D [N, C/16, H, W, 16] map is blocked (nChw16c).
  auto is_blocked = [](const at::Tensor& f) { return f.dim() == 5 && f.size(4) == 16; };
  auto channels_of = [&](const at::Tensor& f) { return is_blocked(f) ? f.size(1) * 16 : f.size(1); };
  const int64_t channels = channels_of(features[0]);
  std::vector<at::Tensor> maps;  // channels-last or blocked float, kept alive
  std::vector<const float*> inputs;
  std::vector<bool> blocked;
  std::vector<int64_t> heights, widths;
  std::vector<float> fscales;
  for (size_t l = 0; l < features.size(); ++l) {
    const auto& f = features[l];
    TORCH_CHECK((f.dim() == 4 || is_blocked(f)) && f.is_cpu() && channels_of(f) == channels &&
                    f.size(0) == features[0].size(0),
                "roi_align_levels: 4-D or blocked CPU maps with the same batch and channels");
    blocked.push_back(is_blocked(f));
    maps.push_back(blocked.back() ? f.to(at::kFloat).contiguous()
                                  : f.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast));
    inputs.push_back(maps.back().data_ptr<float>());
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    fscales.push_back(static_cast<float>(scales[l]));
  }
  auto rois = rois_.to(at::kFloat).contiguous();
  auto levels = levels_.to(at::kLong).contiguous();
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5 && levels.numel() == rois.size(0),
              "roi_align_levels: rois [K, 5] and one level each");
  const int64_t num_rois = rois.size(0);
  auto output = at::empty({num_rois, channels, pooled_height, pooled_width}, maps[0].options());
  if (num_rois == 0) return output;
  const int64_t* lv = levels.data_ptr<int64_t>();
  const int64_t* lv_end = lv + num_rois;
  TORCH_CHECK(std::all_of(lv, lv_end, [&](int64_t l) { return l >= 0 && l < static_cast<int64_t>(maps.size()); }),
              "roi_align_levels: a level out of range");
  roi_align_levels_forward_impl(inputs, blocked, heights, widths, fscales, rois.data_ptr<float>(), lv, num_rois,
                                channels, pooled_height, pooled_width, sampling_ratio, aligned,
                                output.data_ptr<float>());
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_, const at::Tensor& rois_,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  auto grad = grad_.contiguous();
  auto rois = rois_.to(grad.scalar_type()).contiguous();
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    roi_align_backward_impl<scalar_t>(grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
                                      rois.size(0), channels, height, width,
                                      static_cast<scalar_t>(spatial_scale), pooled_height,
                                      pooled_width, sampling_ratio, aligned,
                                      grad_input.data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace maskrcnn::ops::detail
