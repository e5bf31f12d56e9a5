#include "backend/cpu/inference_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "maskrcnn/cpu_settings.h"
#include "backend/cpu/inference_conv.h"
#ifdef MASKRCNN_HAVE_DNNL
#include "ops/matmul/dnnl_matmul.h"
#endif

namespace maskrcnn::cpu {
namespace {
// One row count per image size for the box head (proposals) and one per
// detection count for the mask predictor: a few are enough, bounded.
constexpr size_t kMaxPrimitives = 8;
}  // namespace

struct InferenceLinear::Primitive {
  std::vector<int64_t> key;  // rows, threads, relu, bf16
  std::shared_ptr<const ops::DnnlMatmul> matmul;  // null: oneDNN has none for it
};

InferenceLinear::InferenceLinear(bool allow_bf16) : allow_bf16_(allow_bf16) {}
InferenceLinear::~InferenceLinear() = default;

at::Tensor InferenceLinear::try_forward(const at::Tensor& x, std::initializer_list<at::Tensor> sources,
                                        const std::function<std::pair<at::Tensor, at::Tensor>()>& make,
                                        bool relu) {
#ifdef MASKRCNN_HAVE_DNNL
  if (!x.defined() || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 2 || x.size(0) == 0 ||
      x.is_mkldnn() || x.is_sparse())
    return {};
  if (at::GradMode::is_enabled()) {
    if (x.requires_grad()) return {};
    for (const auto& t : sources)
      if (t.defined() && t.requires_grad()) return {};
  }
  std::shared_ptr<const ops::DnnlMatmul> matmul;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<int64_t> key;
    for (const auto& t : sources) add_parameter_key(key, t);
    if (key != key_ || !weight_.defined()) {
      std::tie(weight_, bias_) = make();
      key_ = std::move(key);
      primitives_.clear();  // packed from the old weights
    }
    if (!weight_.device().is_cpu() || weight_.dim() != 2 || weight_.size(0) != x.size(1)) return {};
    const bool bf16 = allow_bf16_ && inference_precision() == Precision::BF16;
    // oneDNN fixes a primitive's thread count when it is built.
    const std::vector<int64_t> pkey{x.size(0), at::get_num_threads(), relu, bf16};
    auto it = primitives_.begin();
    while (it != primitives_.end() && it->key != pkey) ++it;
    if (it != primitives_.end()) {
      primitives_.splice(primitives_.begin(), primitives_, it);
    } else {
      const ops::DnnlMatmul* same = nullptr;
      for (const auto& p : primitives_)
        if (!same && p.matmul) same = p.matmul.get();
      std::shared_ptr<const ops::DnnlMatmul> made;
      try {
        ops::DnnlMatmulOptions o;
        o.relu = relu;
        o.bf16 = bf16;
        made = std::make_shared<const ops::DnnlMatmul>(weight_, bias_, x.size(0), o, same);
        // oneDNN's reference code is slower than LibTorch's GEMM.
        if (made->implementation().rfind("ref", 0) == 0) made.reset();
      } catch (const std::exception&) {
        // None for this shape here: the caller's LibTorch layers.
      }
      primitives_.push_front({pkey, made});
      if (primitives_.size() > kMaxPrimitives) primitives_.pop_back();
    }
    matmul = primitives_.front().matmul;
  }
  if (!matmul) return {};
  ++onednn_calls_;
  return matmul->forward(x);
#else
  (void)x, (void)sources, (void)make, (void)relu;
  return {};
#endif
}

at::Tensor InferenceLinear::operator()(torch::nn::LinearImpl& fc, const at::Tensor& x, bool relu) {
  auto y = try_forward(x, {fc.weight, fc.bias},
                       [&fc] {
                         return std::make_pair(fc.weight.detach().t(),
                                               fc.bias.defined() ? fc.bias.detach() : at::Tensor());
                       },
                       relu);
  if (y.defined()) return y;
  y = fc.forward(x);
  return relu ? y.relu_() : y;
}

}  // namespace maskrcnn::cpu
