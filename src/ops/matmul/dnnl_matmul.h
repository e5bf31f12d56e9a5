// y = x W + b (then ReLU) for inference, on oneDNN's matmul with W packed
// once into the layout its kernels want. The fully connected layers of the
// box head are ~26 GFLOP per image; LibTorch sends them to OpenBLAS, which
// reaches ~160 GFLOP/s here, oneDNN's brgemm kernels ~340 (f32) and ~600
// (bf16). Bias and ReLU are fused.
//
// Only compiled with MASKRCNN_HAVE_DNNL. forward() is thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace maskrcnn::ops {

struct DnnlMatmulOptions {
  bool relu = false;
  bool bf16 = false;  // bf16 x and W, f32 accumulation, bias and output
};

class DnnlMatmul {
 public:
  // weight [K, N] and bias [N] (may be undefined), float, CPU; rows: M.
  // `same_weights`: a matmul of the same weight and bias for another M,
  // whose packed weights are reused where the layout is the same.
  // Throws std::runtime_error where oneDNN has none.
  DnnlMatmul(const at::Tensor& weight, const at::Tensor& bias, int64_t rows, const DnnlMatmulOptions& options,
             const DnnlMatmul* same_weights = nullptr);
  ~DnnlMatmul();
  DnnlMatmul(const DnnlMatmul&) = delete;
  DnnlMatmul& operator=(const DnnlMatmul&) = delete;

  // x: float [M, K] with unit column stride. Returns float [M, N].
  at::Tensor forward(const at::Tensor& x) const;
  const std::string& implementation() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace maskrcnn::ops
