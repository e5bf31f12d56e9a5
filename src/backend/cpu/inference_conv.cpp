#include "backend/cpu/inference_conv.h"

#include "ops/map_layout.h"
#include "common/stage_profile.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <variant>

#include "maskrcnn/cpu_settings.h"
#ifdef MASKRCNN_HAVE_DNNL
#include "ops/conv/dnnl_conv2d.h"
#include "ops/conv/dnnl_winograd_train.h"
#endif

namespace maskrcnn {
namespace {
#ifdef MASKRCNN_HAVE_DNNL
std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Winograd};
#else
std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Direct};
#endif
}  // namespace

void set_conv_algorithm(ConvAlgorithm algorithm) {
  g_algorithm = winograd_available() ? algorithm : ConvAlgorithm::Direct;
}
ConvAlgorithm conv_algorithm() {
  return g_algorithm == ConvAlgorithm::Winograd && winograd_available() ? ConvAlgorithm::Winograd
                                                                        : ConvAlgorithm::Direct;
}

namespace cpu {
namespace {
thread_local bool t_direct_training_convs = false;
}
DirectTrainingConvs::DirectTrainingConvs(bool active) : previous_(t_direct_training_convs) {
  t_direct_training_convs = previous_ || active;
}
DirectTrainingConvs::~DirectTrainingConvs() { t_direct_training_convs = previous_; }
}  // namespace cpu

namespace {
std::atomic<Precision> g_precision{Precision::F32};
std::atomic<std::size_t> g_scratchpad_budget{std::size_t{320} << 20};  // as DnnlConvOptions
}  // namespace

void set_winograd_scratchpad_budget(std::size_t bytes) { g_scratchpad_budget = bytes; }
std::size_t winograd_scratchpad_budget() { return g_scratchpad_budget; }

void set_inference_precision(Precision precision) {
  g_precision = precision == Precision::BF16 && bf16_available() ? Precision::BF16 : Precision::F32;
}
Precision inference_precision() { return g_precision; }

#ifdef MASKRCNN_HAVE_DNNL
namespace {
// Whether oneDNN builds a 16-channel convolution with these options here, and
// not with its slow reference code (what it has where the CPU lacks the ISA).
bool onednn_builds(const ops::DnnlConvOptions& options, int64_t kernel) {
  try {
    ops::DnnlConv2d probe(at::zeros({16, 16, kernel, kernel}), at::Tensor(), {1, 16, 8, 8}, options);
    return probe.implementation().rfind("ref", 0) != 0;
  } catch (const std::exception&) {
    return false;
  }
}
}  // namespace
#endif

bool bf16_available() {
#ifdef MASKRCNN_HAVE_DNNL
  // bf16 kernels exist on AVX-512 CPUs (native with avx512_bf16 or AMX).
  static const bool available = [] {
    ops::DnnlConvOptions o;
    o.bf16 = true;
    return onednn_builds(o, 1);
  }();
  return available;
#else
  return false;
#endif
}

bool onednn_available() {
#ifdef MASKRCNN_HAVE_DNNL
  static const bool available = [] {
    ops::DnnlConvOptions o;
    o.padding = 1;
    return onednn_builds(o, 3);
  }();
  return available;
#else
  return false;
#endif
}

bool winograd_available() {
#ifdef MASKRCNN_HAVE_DNNL
  // Winograd exists on AVX-512 CPUs only.
  static const bool available = [] {
    ops::DnnlConvOptions o;
    o.padding = 1;
    o.winograd = true;
    return onednn_builds(o, 3);
  }();
  return available;
#else
  return false;
#endif
}

namespace cpu {

void add_parameter_key(std::vector<int64_t>& key, const at::Tensor& t) {
  key.push_back(t.defined() ? reinterpret_cast<int64_t>(t.unsafeGetTensorImpl()) : 0);
  key.push_back(t.defined() ? reinterpret_cast<int64_t>(t.data_ptr()) : 0);
  key.push_back(!t.defined() ? -1 : t.is_inference() ? 0 : static_cast<int64_t>(t._version()));
}

namespace {

// Most layers see one input shape per image; the RPN head sees one per level
// and the mask head one per detection count. Enough for both, bounded.
constexpr size_t kMaxPrimitives = 32;

// The (h, w) zero padding, or null for 'same'/'valid'. The options hold a
// c10::variant in LibTorch 1.x and a std::variant in 2.x: get_if is found
// through the using-declaration or by argument-dependent lookup.
// Null too for reflect/circular padding modes.
const torch::ExpandingArray<2>* explicit_padding(const torch::nn::detail::ConvNdOptions<2>& options) {
  using std::get_if;
  if (get_if<torch::enumtype::kZeros>(&options.padding_mode()) == nullptr) return nullptr;
  return get_if<0>(&options.padding());
}

}  // namespace

// Under bf16 precision, a 3x3 stride-1 layer on a large f32 map (the FPN's
// and the RPN head's on P2 and P3) runs f32 Winograd instead: measured here
// (2 threads, 256 channels), Winograd took 80 ms on 200x304 and 18.7 ms on
// 100x152 where bf16 direct took 85-90 and 21-22.5 ms, plus the map's
// f32 -> bf16 reorder it no longer needs; from 50x76 down bf16 was faster.
// Maps that arrive in bf16 (inside ResNet blocks, the mask head) stay bf16.
namespace {
bool winograd_beats_bf16(const at::Tensor& x) {
  constexpr int64_t kMinPixels = 100 * 100;
  if (x.scalar_type() != at::kFloat || x.dim() < 4) return false;
  const auto [h, w] = ops::map_size(x);
  return h * w >= kMinPixels;
}
}  // namespace

struct InferenceConv::Primitive {
  std::vector<int64_t> key;  // N, C, H, W, threads, relu, residual
  std::shared_ptr<const ops::DnnlConv2d> conv;  // null: oneDNN has none for it
};

InferenceConv::InferenceConv(bool allow_bf16) : allow_bf16_(allow_bf16) {}
InferenceConv::~InferenceConv() = default;

void InferenceConv::refresh(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn) {
  std::vector<int64_t> key;
  add_parameter_key(key, conv.weight);
  add_parameter_key(key, conv.bias);
  // batch_norm updates the running statistics in training without bumping
  // their version; num_batches_tracked's add_ does.
  if (bn)
    for (const auto& t : bn->state()) add_parameter_key(key, t);
  if (key != folded_key_) {
    folded_key_ = std::move(key);
    weight_ = bias_ = at::Tensor();
    primitives_.clear();  // built from the old weights
  }
}

std::pair<at::Tensor, at::Tensor> InferenceConv::folded(const torch::nn::Conv2dImpl& conv,
                                                        const ConvNorm* bn) {
  if (!weight_.defined()) {
    if (!bn) {
      weight_ = conv.weight.detach();
      bias_ = conv.bias.defined() ? conv.bias.detach() : at::Tensor();
    } else {
      // bn(conv(x)) = conv(x) * scale + shift = conv_{w * scale}(x) + (b * scale + shift)
      auto [scale, shift] = bn->affine();
      weight_ = conv.weight.detach() * scale.reshape({-1, 1, 1, 1});
      bias_ = conv.bias.defined() ? conv.bias.detach() * scale + shift : shift;
    }
  }
  return {weight_, bias_};
}

std::shared_ptr<const ops::DnnlConv2d> InferenceConv::primitive(const torch::nn::Conv2dImpl& conv,
                                                                const ConvNorm* bn, const at::Tensor& x,
                                                                bool relu, bool residual, bool bf16, bool winograd,
                                                                bool bf16_output) {
#ifdef MASKRCNN_HAVE_DNNL
  // oneDNN fixes a primitive's thread count when it is built.
  const int64_t channels = ops::map_channels(x);
  const std::vector<int64_t> key{x.size(0), channels, x.size(2), x.size(3), at::get_num_threads(), relu, residual,
                                 bf16, winograd, static_cast<int64_t>(winograd_scratchpad_budget()), bf16_output};
  for (auto it = primitives_.begin(); it != primitives_.end(); ++it) {
    if (it->key != key) continue;
    primitives_.splice(primitives_.begin(), primitives_, it);
    return it->conv;
  }
  std::shared_ptr<const ops::DnnlConv2d> made;
  try {
    ops::DnnlConvOptions o;
    o.padding = (*explicit_padding(conv.options))->at(0);
    o.stride = conv.options.stride()->at(0);
    o.dilation = conv.options.dilation()->at(0);
    o.winograd = winograd && !bf16;  // oneDNN has no bf16 Winograd
    o.bf16 = bf16;
    o.bf16_output = bf16 && bf16_output;
    o.relu = relu;
    o.residual = residual;
    o.scratchpad_budget = winograd_scratchpad_budget();
    std::vector<const ops::DnnlConv2d*> same_weights;
    for (const auto& p : primitives_)
      if (p.conv) same_weights.push_back(p.conv.get());
    const auto [weight, bias] = folded(conv, bn);
    made = std::make_shared<const ops::DnnlConv2d>(
        weight, bias, std::array<int64_t, 4>{x.size(0), channels, x.size(2), x.size(3)}, o, same_weights);
    // oneDNN's reference code (a layout or ISA its kernels lack) is slower
    // than LibTorch's convolution.
    if (made->implementation().rfind("ref", 0) == 0) made.reset();
  } catch (const std::exception&) {
    // None for this shape on this CPU: LibTorch's convolution instead.
  }
  primitives_.push_front({key, made});
  if (primitives_.size() > kMaxPrimitives) primitives_.pop_back();
  if (made) weight_ = bias_ = at::Tensor();  // packed inside the primitive; folded again if needed
  return made;
#else
  (void)conv, (void)bn, (void)x, (void)relu, (void)residual, (void)bf16, (void)winograd, (void)bf16_output;
  return nullptr;
#endif
}

at::Tensor InferenceConv::operator()(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn,
                                     const at::Tensor& x, bool relu, const at::Tensor& residual,
                                     ops::MapLayout out, bool only_convs_read, bool residual_writable) {
  auto y = compute(conv, bn, x, relu, residual, out, only_convs_read, residual_writable);
  common::add_conv_flops(y, conv.weight);
  return y;
}

at::Tensor InferenceConv::compute(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn,
                                  const at::Tensor& x_in, bool relu, const at::Tensor& residual,
                                  ops::MapLayout out, bool only_convs_read, bool residual_writable) {
  const auto& opt = conv.options;
  // oneDNN is called with one stride, dilation and padding for both axes.
  const auto* padding = explicit_padding(opt);
  const bool square = padding != nullptr && opt.groups() == 1 && (*padding)->at(0) == (*padding)->at(1) &&
                      opt.stride()->at(0) == opt.stride()->at(1) && opt.dilation()->at(0) == opt.dilation()->at(1);
  const bool winograd_shape = square && opt.kernel_size()->at(0) == 3 && opt.kernel_size()->at(1) == 3 &&
                              opt.stride()->at(0) == 1 && opt.dilation()->at(0) == 1;
  const bool winograd = winograd_shape && conv_algorithm() == ConvAlgorithm::Winograd;
  const bool bf16 = square && allow_bf16_ && inference_precision() == Precision::BF16 &&
                    !(winograd && winograd_beats_bf16(x_in));
  // A bf16 map (only_convs_read's output below) goes to bf16 convolutions;
  // anything else reads its float values.
  const at::Tensor x = x_in.scalar_type() == at::kBFloat16 && !bf16 ? x_in.to(at::kFloat) : x_in;
  // Blocked maps come from the oneDNN path below; the other paths take x and
  // residual as 4-D tensors (ops::to_4d).
  const bool onednn_input = x.device().is_cpu() &&
                            (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                            x.numel() > 0 && (x.dim() == 4 || ops::is_blocked(x));
  // Zero padding given as numbers: every layer here.
  const bool bn_is_affine = !bn || !bn->batch_statistics();
  // Frozen layers in training (the stem and layer1 by default) need no graph:
  // nothing they read requires a gradient, so they take the inference path.
  const auto wants_grad = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  // The norm's tensors only under grad mode: inference (the hot path) never builds the list.
  const auto norm_wants_grad = [&] {
    if (!bn) return false;
    const auto state = bn->state();
    return std::any_of(state.begin(), state.end(), wants_grad);
  };
  const bool needs_grad = at::GradMode::is_enabled() &&
                          (wants_grad(x) || wants_grad(conv.weight) || wants_grad(conv.bias) ||
                           wants_grad(residual) || norm_wants_grad());
  if (needs_grad && (!bn || bn->frozen()) && padding != nullptr && opt.groups() == 1) {
    // Training, with frozen batch norm (torchvision's default backbone) or
    // none: the affine folded into the weights inside the graph, so autograd
    // sees one convolution with a bias instead of conv, mul and add (and
    // their backward passes) over every feature map; gradients reach
    // conv.weight through the product with the frozen scale. The add and ReLU
    // run in place, as torchvision's `out += identity; relu(inplace=True)`.
    // Float maps: a frozen layer in front may have stored its output in bf16.
    const at::Tensor x4 = ops::to_4d(x).to(at::kFloat), r4 = residual.defined() ? ops::to_4d(residual).to(at::kFloat) : residual;
    at::Tensor w = conv.weight, b = conv.bias;
    if (bn) {
      auto [scale, shift] = bn->affine();
      w = conv.weight * scale.reshape({-1, 1, 1, 1});
      b = conv.bias.defined() ? conv.bias * scale + shift : shift;
    }
    at::Tensor y;
#ifdef MASKRCNN_HAVE_DNNL
    // 3x3 stride-1 layers: oneDNN's Winograd forward and backward.
    const bool winograd_3x3 = opt.kernel_size()->at(0) == 3 && opt.kernel_size()->at(1) == 3 &&
                              opt.stride()->at(0) == 1 && opt.stride()->at(1) == 1 &&
                              opt.dilation()->at(0) == 1 && opt.dilation()->at(1) == 1 &&
                              (*padding)->at(0) == (*padding)->at(1);
    if (winograd_3x3 && b.defined() && !t_direct_training_convs && conv_algorithm() == ConvAlgorithm::Winograd) {
      int64_t runs = 0;
      y = ops::winograd_conv2d_train(x4, w, b, (*padding)->at(0), winograd_scratchpad_budget(), &runs);
      if (y.defined()) ++onednn_calls_, onednn_parts_ += runs;
    }
#endif
    if (!y.defined()) y = at::conv2d(x4, w, b, *opt.stride(), **padding, *opt.dilation(), opt.groups());
    if (r4.defined()) y.add_(r4);
    return relu ? y.relu_() : y;
  }
  if (!needs_grad && !bn_is_affine && padding != nullptr) {
    // A norm with per-image statistics (GroupNorm) at inference: the
    // convolution alone on the fast path below (Winograd, bf16), then the
    // norm, the add and the ReLU as the module computes them.
    auto y = ops::to_4d(compute(conv, nullptr, x, /*relu=*/false, {}, ops::MapLayout::NCHW, false, false));
    y = bn->normalize(y.to(at::kFloat));
    if (residual.defined()) y.add_(ops::to_4d(residual).to(at::kFloat));
    return relu ? y.relu_() : y;
  }
  if (needs_grad || !bn_is_affine || padding == nullptr) {
    // Training ('same'/'valid' or reflect/circular padding too): the modules
    // themselves, so autograd sees torchvision's graph.
    auto y = const_cast<torch::nn::Conv2dImpl&>(conv).forward(ops::to_4d(x).to(at::kFloat));
    if (bn) y = bn->normalize(y);
    if (residual.defined()) y = y + ops::to_4d(residual).to(at::kFloat);
    return relu ? at::relu(y) : y;
  }
  std::shared_ptr<const ops::DnnlConv2d> fast;
  at::Tensor weight, bias;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh(conv, bn);
    // Every square convolution: the direct ones too, with the weights
    // reordered once and the add and ReLU fused, where LibTorch's convolution
    // reorders the weights per call and adds and clamps in passes of their own.
    if (square && onednn_input &&
        (!residual.defined() || residual.scalar_type() == at::kFloat || residual.scalar_type() == at::kBFloat16))
      fast = primitive(conv, bn, x, relu, residual.defined(), bf16,
                       winograd, only_convs_read);
    if (!fast) std::tie(weight, bias) = folded(conv, bn);
  }
#ifdef MASKRCNN_HAVE_DNNL
  if (fast) {
    ++onednn_calls_;
    onednn_parts_ += static_cast<int64_t>(fast->parts());
    return fast->forward(x, residual, out, residual_writable);
  }
#else
  (void)out, (void)residual_writable;
#endif
  auto y = at::conv2d(ops::to_4d(x).to(at::kFloat), weight, bias, *opt.stride(), **padding, *opt.dilation(), opt.groups());
  if (residual.defined()) y.add_(ops::to_4d(residual));
  return relu ? y.relu_() : y;
}

}  // namespace cpu
}  // namespace maskrcnn
