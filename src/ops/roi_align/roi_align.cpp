// ops::roi_align: argument checks, device dispatch and the autograd node.
#include <torch/csrc/autograd/custom_function.h>

#include "maskrcnn/ops.h"
#include "ops/map_layout.h"
#include "ops/roi_align/roi_align_kernel.h"

#include <algorithm>

namespace maskrcnn::ops {
namespace {

at::Tensor forward_dispatch(const at::Tensor& input, const at::Tensor& rois, double scale,
                            int64_t ph, int64_t pw, int64_t sr, bool aligned) {
#ifdef MASKRCNN_WITH_CUDA
  if (input.is_cuda()) return detail::roi_align_forward_cuda(input, rois, scale, ph, pw, sr, aligned);
#endif
  TORCH_CHECK(input.is_cpu(), "roi_align: no kernel for device ", input.device());
  return detail::roi_align_forward_cpu(input, rois, scale, ph, pw, sr, aligned);
}

at::Tensor backward_dispatch(const at::Tensor& grad, const at::Tensor& rois, double scale,
                             int64_t ph, int64_t pw, at::IntArrayRef in_shape, int64_t sr,
                             bool aligned) {
#ifdef MASKRCNN_WITH_CUDA
  if (grad.is_cuda())
    return detail::roi_align_backward_cuda(grad, rois, scale, ph, pw, in_shape[0], in_shape[1],
                                           in_shape[2], in_shape[3], sr, aligned);
#endif
  return detail::roi_align_backward_cpu(grad, rois, scale, ph, pw, in_shape[0], in_shape[1],
                                        in_shape[2], in_shape[3], sr, aligned);
}

class RoIAlignFunction : public torch::autograd::Function<RoIAlignFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                            int64_t sr, bool aligned) {
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["ph"] = ph;
    ctx->saved_data["pw"] = pw;
    ctx->saved_data["sr"] = sr;
    ctx->saved_data["aligned"] = aligned;
    ctx->saved_data["shape"] = input.sizes().vec();
    ctx->save_for_backward({rois});
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_dispatch(input, rois, scale, ph, pw, sr, aligned);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto rois = ctx->get_saved_variables()[0];
    auto shape = ctx->saved_data["shape"].toIntVector();
    auto grad_in = backward_dispatch(
        grads[0], rois, ctx->saved_data["scale"].toDouble(), ctx->saved_data["ph"].toInt(),
        ctx->saved_data["pw"].toInt(), shape, ctx->saved_data["sr"].toInt(),
        ctx->saved_data["aligned"].toBool());
    return {grad_in, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be [K, 5], got ",
              rois.sizes());
  TORCH_CHECK(input.device() == rois.device(), "roi_align: input and rois on different devices");
  if (input.requires_grad() && at::GradMode::is_enabled())
    return RoIAlignFunction::apply(input, rois, spatial_scale, pooled_height, pooled_width,
                                   sampling_ratio, aligned);
  return forward_dispatch(input, rois, spatial_scale, pooled_height, pooled_width,
                          sampling_ratio, aligned);
}

at::Tensor multi_level_roi_align(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                 const at::Tensor& levels, const std::vector<double>& scales,
                                 int64_t output_size, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(!features.empty() && features.size() == scales.size(),
              "multi_level_roi_align: one scale per feature level");
  const bool needs_grad = at::GradMode::is_enabled() && std::any_of(features.begin(), features.end(),
                                                                    [](const at::Tensor& f) { return f.requires_grad(); });
  const bool cpu_float = std::all_of(features.begin(), features.end(), [](const at::Tensor& f) {
    return f.is_cpu() && f.scalar_type() == at::kFloat;
  });
  if (!needs_grad && cpu_float)
    return detail::roi_align_levels_forward_cpu(features, rois, levels, scales, output_size, output_size,
                                                sampling_ratio, aligned);
  std::vector<at::Tensor> x;
  for (const auto& f : features) x.push_back(to_4d(f));
  auto result = at::zeros({rois.size(0), x[0].size(1), output_size, output_size},
                          x[0].options().memory_format(at::MemoryFormat::Contiguous));
  for (size_t l = 0; l < x.size(); ++l) {
    auto idx = at::where(levels == static_cast<int64_t>(l))[0];
    if (idx.numel() == 0) continue;
    auto pooled = roi_align(x[l], rois.index_select(0, idx), scales[l], output_size, output_size,
                            sampling_ratio, aligned);
    result.index_put_({idx}, pooled);
  }
  return result;
}

}  // namespace maskrcnn::ops
