// CUDA NMS with torchvision's semantics (nms_kernel.cu): boxes sorted by
// descending score (stable), a 64-bit mask of "box j is suppressed by box i"
// per pair of 64-box blocks computed on the GPU, then one serial sweep over
// that mask on the host. Built with MASKRCNN_WITH_CUDA.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "ops/nms/nms_kernel.h"

namespace maskrcnn::ops::detail {
namespace {

constexpr int kBoxesPerBlock = sizeof(unsigned long long) * 8;

template <typename T>
__device__ inline bool iou_above(const T* a, const T* b, float threshold) {
  using acc_t = at::acc_type<T, /*is_cuda=*/true>;
  const T left = max(a[0], b[0]), right = min(a[2], b[2]);
  const T top = max(a[1], b[1]), bottom = min(a[3], b[3]);
  const T width = max(right - left, T(0)), height = max(bottom - top, T(0));
  const acc_t inter = static_cast<acc_t>(width) * height;
  const acc_t area_a = static_cast<acc_t>(a[2] - a[0]) * (a[3] - a[1]);
  const acc_t area_b = static_cast<acc_t>(b[2] - b[0]) * (b[3] - b[1]);
  return inter / (area_a + area_b - inter) > threshold;
}

// Block (row, col) compares the 64 boxes of row block `row` with those of
// column block `col` (only col >= row: suppression goes down the score order).
template <typename T>
__global__ void nms_mask_kernel(int n, float threshold, const T* boxes, unsigned long long* mask) {
  const int row = blockIdx.y, col = blockIdx.x;
  if (row > col) return;
  const int row_size = min(n - row * kBoxesPerBlock, kBoxesPerBlock);
  const int col_size = min(n - col * kBoxesPerBlock, kBoxesPerBlock);
  __shared__ T col_boxes[kBoxesPerBlock * 4];
  if (threadIdx.x < col_size) {
    for (int k = 0; k < 4; ++k)
      col_boxes[threadIdx.x * 4 + k] = boxes[(kBoxesPerBlock * col + threadIdx.x) * 4 + k];
  }
  __syncthreads();
  if (threadIdx.x < row_size) {
    const int i = kBoxesPerBlock * row + threadIdx.x;
    const T* box = boxes + i * 4;
    unsigned long long bits = 0;
    for (int j = row == col ? threadIdx.x + 1 : 0; j < col_size; ++j)
      if (iou_above(box, col_boxes + j * 4, threshold)) bits |= 1ULL << j;
    const int col_blocks = (n + kBoxesPerBlock - 1) / kBoxesPerBlock;
    mask[static_cast<int64_t>(i) * col_blocks + col] = bits;
  }
}

}  // namespace

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(scores.is_cuda(), "nms: scores must be on the boxes' CUDA device");
  c10::cuda::CUDAGuard guard(dets.device());
  if (dets.numel() == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto sorted = dets.index_select(0, order).contiguous();
  const int n = static_cast<int>(dets.size(0));
  const int col_blocks = (n + kBoxesPerBlock - 1) / kBoxesPerBlock;
  auto mask = at::empty({static_cast<int64_t>(n) * col_blocks}, dets.options().dtype(at::kLong));
  const dim3 blocks(col_blocks, col_blocks);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cuda", [&] {
    nms_mask_kernel<scalar_t><<<blocks, kBoxesPerBlock, 0, stream>>>(
        n, static_cast<float>(iou_threshold), sorted.data_ptr<scalar_t>(),
        reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // The sweep is inherently serial and touches n * n / 64 bits: on the host.
  auto mask_cpu = mask.cpu();
  const auto* bits = reinterpret_cast<const unsigned long long*>(mask_cpu.data_ptr<int64_t>());
  std::vector<unsigned long long> removed(col_blocks, 0);
  auto keep = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  int64_t* keep_out = keep.data_ptr<int64_t>();
  int64_t kept = 0;
  for (int i = 0; i < n; ++i) {
    const int block = i / kBoxesPerBlock, bit = i % kBoxesPerBlock;
    if (removed[block] & (1ULL << bit)) continue;
    keep_out[kept++] = i;
    const unsigned long long* row = bits + static_cast<int64_t>(i) * col_blocks;
    for (int j = block; j < col_blocks; ++j) removed[j] |= row[j];
  }
  return order.index_select(0, keep.narrow(0, 0, kept).to(order.device()));
}

}  // namespace maskrcnn::ops::detail
