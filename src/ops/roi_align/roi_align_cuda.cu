// CUDA RoIAlign, forward and backward, with torchvision's exact sampling
// (roi_align_kernel.cu): one thread per output element, bilinear samples on a
// grid of ceil(roi / pooled) points per bin unless sampling_ratio is given,
// and atomics for the backward scatter. Built with MASKRCNN_WITH_CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "ops/roi_align/roi_align_kernel.h"

namespace maskrcnn::ops::detail {
namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) {
  // A grid-stride loop covers the rest; 4096 blocks keep every SM busy.
  return std::min<int64_t>((n + kThreads - 1) / kThreads, 4096);
}

template <typename T>
__device__ T bilinear_interpolate(const T* input, int height, int width, T y, T x) {
  if (y < T(-1.0) || y > T(height) || x < T(-1.0) || x > T(width)) return 0;  // outside the map
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y_low = static_cast<int>(y);
  int x_low = static_cast<int>(x);
  int y_high, x_high;
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
  const T ly = y - y_low, lx = x - x_low;
  const T hy = T(1) - ly, hx = T(1) - lx;
  const T v1 = input[y_low * width + x_low];
  const T v2 = input[y_low * width + x_high];
  const T v3 = input[y_high * width + x_low];
  const T v4 = input[y_high * width + x_high];
  return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4;
}

template <typename T>
__device__ void bilinear_weights(int height, int width, T y, T x, T& w1, T& w2, T& w3, T& w4,
                                 int& x_low, int& x_high, int& y_low, int& y_high) {
  if (y < T(-1.0) || y > T(height) || x < T(-1.0) || x > T(width)) {
    w1 = w2 = w3 = w4 = 0;
    x_low = x_high = y_low = y_high = -1;
    return;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  y_low = static_cast<int>(y);
  x_low = static_cast<int>(x);
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
  const T ly = y - y_low, lx = x - x_low;
  const T hy = T(1) - ly, hx = T(1) - lx;
  w1 = hy * hx;
  w2 = hy * lx;
  w3 = ly * hx;
  w4 = ly * lx;
}

// The RoI's box in feature-map coordinates and its sampling grid, shared by
// both directions so that they sample the same points.
template <typename T>
struct RoiGeometry {
  int batch;
  T start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;

  __device__ RoiGeometry(const T* roi, T spatial_scale, int pooled_height, int pooled_width,
                         int sampling_ratio, bool aligned) {
    batch = static_cast<int>(roi[0]);
    const T offset = aligned ? T(0.5) : T(0.0);
    start_w = roi[1] * spatial_scale - offset;
    start_h = roi[2] * spatial_scale - offset;
    const T end_w = roi[3] * spatial_scale - offset;
    const T end_h = roi[4] * spatial_scale - offset;
    T width = end_w - start_w, height = end_h - start_h;
    if (!aligned) {  // legacy: force malformed RoIs to be 1x1
      width = max(width, T(1.0));
      height = max(height, T(1.0));
    }
    bin_h = height / static_cast<T>(pooled_height);
    bin_w = width / static_cast<T>(pooled_width);
    grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(height / pooled_height));
    grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(width / pooled_width));
  }
};

template <typename T>
__global__ void roi_align_forward_kernel(int64_t n, const T* input, T spatial_scale, int channels,
                                         int height, int width, int pooled_height,
                                         int pooled_width, int sampling_ratio, bool aligned,
                                         const T* rois, T* output) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = index % pooled_width;
    const int ph = (index / pooled_width) % pooled_height;
    const int c = (index / pooled_width / pooled_height) % channels;
    const int64_t r = index / pooled_width / pooled_height / channels;
    const RoiGeometry<T> g(rois + r * 5, spatial_scale, pooled_height, pooled_width,
                           sampling_ratio, aligned);
    const T* plane = input + (static_cast<int64_t>(g.batch) * channels + c) * height * width;
    const T count = max(g.grid_h * g.grid_w, 1);
    T sum = 0;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.start_h + ph * g.bin_h + (iy + T(0.5)) * g.bin_h / static_cast<T>(g.grid_h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const T x = g.start_w + pw * g.bin_w + (ix + T(0.5)) * g.bin_w / static_cast<T>(g.grid_w);
        sum += bilinear_interpolate(plane, height, width, y, x);
      }
    }
    output[index] = sum / count;
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(int64_t n, const T* grad_output, T spatial_scale,
                                          int channels, int height, int width, int pooled_height,
                                          int pooled_width, int sampling_ratio, bool aligned,
                                          T* grad_input, const T* rois) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = index % pooled_width;
    const int ph = (index / pooled_width) % pooled_height;
    const int c = (index / pooled_width / pooled_height) % channels;
    const int64_t r = index / pooled_width / pooled_height / channels;
    const RoiGeometry<T> g(rois + r * 5, spatial_scale, pooled_height, pooled_width,
                           sampling_ratio, aligned);
    T* plane = grad_input + (static_cast<int64_t>(g.batch) * channels + c) * height * width;
    const T count = g.grid_h * g.grid_w;
    const T grad = grad_output[index];
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.start_h + ph * g.bin_h + (iy + T(0.5)) * g.bin_h / static_cast<T>(g.grid_h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const T x = g.start_w + pw * g.bin_w + (ix + T(0.5)) * g.bin_w / static_cast<T>(g.grid_w);
        T w1, w2, w3, w4;
        int x_low, x_high, y_low, y_high;
        bilinear_weights(height, width, y, x, w1, w2, w3, w4, x_low, x_high, y_low, y_high);
        if (x_low >= 0 && x_high >= 0 && y_low >= 0 && y_high >= 0) {
          atomicAdd(plane + y_low * width + x_low, grad * w1 / count);
          atomicAdd(plane + y_low * width + x_high, grad * w2 / count);
          atomicAdd(plane + y_high * width + x_low, grad * w3 / count);
          atomicAdd(plane + y_high * width + x_high, grad * w4 / count);
        }
      }
    }
  }
}

}  // namespace

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(rois.is_cuda(), "roi_align: rois must be on the input's CUDA device");
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  auto output = at::zeros({rois.size(0), channels, pooled_height, pooled_width}, input.options());
  const int64_t n = output.numel();
  if (n == 0) return output;
  auto x = input.contiguous();
  auto r = rois.to(input.scalar_type()).contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cuda", [&] {
    roi_align_forward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, x.data_ptr<scalar_t>(), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(channels), static_cast<int>(height), static_cast<int>(width),
        static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<int>(sampling_ratio), aligned, r.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  c10::cuda::CUDAGuard guard(grad.device());
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  const int64_t n = grad.numel();
  if (n == 0) return grad_input;
  auto g = grad.contiguous();
  auto r = rois.to(grad.scalar_type()).contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cuda", [&] {
    roi_align_backward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, g.data_ptr<scalar_t>(), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(channels), static_cast<int>(height), static_cast<int>(width),
        static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<int>(sampling_ratio), aligned, grad_input.data_ptr<scalar_t>(),
        r.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_input;
}

}  // namespace maskrcnn::ops::detail
