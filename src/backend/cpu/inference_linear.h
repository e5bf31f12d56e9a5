// Fully connected layers (and the mask predictor's transposed convolution,
// which is one GEMM) at inference on oneDNN's matmul: the weights packed once
// per weight version, bias and ReLU fused, bf16 when inference_precision() is
// bf16. Training, CUDA and builds without oneDNN keep LibTorch's layers.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/linear.h>

#include <atomic>
#include <functional>
#include <initializer_list>
#include <list>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace maskrcnn::ops {
class DnnlMatmul;
}

namespace maskrcnn::cpu {

class InferenceLinear {
 public:
  // allow_bf16: false keeps f32 arithmetic whatever inference_precision() is.
  explicit InferenceLinear(bool allow_bf16 = true);
  ~InferenceLinear();
  InferenceLinear(const InferenceLinear&) = delete;
  InferenceLinear& operator=(const InferenceLinear&) = delete;

  // relu(x W + b) with W [K, N] and b [N] (may be undefined) made by `make`
  // from `sources`, the parameters they derive from (W and b are remade when
  // one of those changes). Undefined where oneDNN does not serve it: x not a
  // float CPU matrix, a gradient needed, or no oneDNN; the caller then runs
  // its modules.
  at::Tensor try_forward(const at::Tensor& x, std::initializer_list<at::Tensor> sources,
                         const std::function<std::pair<at::Tensor, at::Tensor>()>& make, bool relu);
  // A Linear module's relu?(fc(x)): try_forward, else the module.
  at::Tensor operator()(torch::nn::LinearImpl& fc, const at::Tensor& x, bool relu);
  // How many calls oneDNN served.
  int64_t onednn_calls() const { return onednn_calls_; }

 private:
  struct Primitive;
  bool allow_bf16_;
  std::mutex mutex_;
  std::vector<int64_t> key_;  // the sources' identities and versions
  at::Tensor weight_, bias_;
  std::list<Primitive> primitives_;  // most recently used first
  std::atomic<int64_t> onednn_calls_{0};
};

}  // namespace maskrcnn::cpu
