#include "modeling/backbone/resnet.h"

#include <torch/nn/functional/pooling.h>

#include "maskrcnn/error.h"
#include "backend/cpu/inference_conv.h"

namespace maskrcnn::modeling {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

}  // namespace

ResNetBlockImpl::ResNetBlockImpl(bool bottleneck, int64_t inplanes, int64_t planes,
                                 int64_t stride, bool has_downsample, NormSpec n)
    : bottleneck_(bottleneck),
      run1_(std::make_unique<cpu::InferenceConv>()),
      run2_(std::make_unique<cpu::InferenceConv>()),
      run3_(std::make_unique<cpu::InferenceConv>()),
      run_downsample_(std::make_unique<cpu::InferenceConv>()) {
  const int64_t expansion = bottleneck ? 4 : 1;
  if (bottleneck) {
    conv1 = register_module("conv1", conv(inplanes, planes, 1, 1, 0));
    bn1 = register_module("bn1", make_norm(n.kind, planes, n.eps));
    conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1));
    bn2 = register_module("bn2", make_norm(n.kind, planes, n.eps));
    conv3 = register_module("conv3", conv(planes, planes * 4, 1, 1, 0));
    bn3 = register_module("bn3", make_norm(n.kind, planes * 4, n.eps));
  } else {
    conv1 = register_module("conv1", conv(inplanes, planes, 3, stride, 1));
    bn1 = register_module("bn1", make_norm(n.kind, planes, n.eps));
    conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1));
    bn2 = register_module("bn2", make_norm(n.kind, planes, n.eps));
  }
  if (has_downsample) {
    downsample = register_module(
        "downsample", torch::nn::Sequential(conv(inplanes, planes * expansion, 1, stride, 0),
                                            make_norm(n.kind, planes * expansion, n.eps)));
  }
}

ResNetBlockImpl::~ResNetBlockImpl() = default;

at::Tensor ResNetBlockImpl::forward(const at::Tensor& x) { return run(x, false); }

at::Tensor ResNetBlockImpl::forward_consuming(at::Tensor x) {
  const bool writable = ops::sole_owner(x);  // x: this frame's handle only
  return run(x, writable);
}

at::Tensor ResNetBlockImpl::run(const at::Tensor& x, bool x_writable) {
  // relu(bn(conv(.)) + identity) in one step: the residual add and the ReLU
  // fuse into the last convolution on the inference fast path, accumulating
  // in the identity's memory where nothing else reads it (the downsample's
  // output, or an input given up), instead of in a copy of it.
  // Maps stay in oneDNN's blocked layout between the layers (feature_layout.h).
  // Under bf16 precision the body's maps after the stem are stored in bf16
  // where their convolution computes in bf16 (all of ResNet-50's; a 3x3 on a
  // large float map runs f32 Winograd, see inference_conv.cpp): only
  // convolutions read them (this block's, the next block's, the FPN's
  // lateral ones), as their input or as the residual their sum adds in f32.
  // Float maps cost a f32 -> bf16 reorder before each reading convolution,
  // and twice the memory traffic.
  constexpr auto blocked = ops::MapLayout::Blocked16;
  constexpr bool convs_read = true;
  at::Tensor projected;
  if (downsample)
    projected = (*run_downsample_)(*downsample[0]->as<torch::nn::Conv2dImpl>(),
                                   downsample[1]->as<NormLayer>(), x, /*relu=*/false, {}, blocked, convs_read);
  const at::Tensor& identity = downsample ? projected : x;
  const bool identity_writable = downsample ? ops::sole_owner(projected) : x_writable;
  auto out = (*run1_)(*conv1, bn1.get(), x, /*relu=*/true, {}, blocked, convs_read);
  if (bottleneck_) {
    out = (*run2_)(*conv2, bn2.get(), out, /*relu=*/true, {}, blocked, convs_read);
    return (*run3_)(*conv3, bn3.get(), out, /*relu=*/true, identity, blocked, convs_read, identity_writable);
  }
  return (*run2_)(*conv2, bn2.get(), out, /*relu=*/true, identity, blocked, convs_read, identity_writable);
}

ResNetBodyImpl::ResNetBodyImpl(int depth, NormSpec n) : run_stem_(std::make_unique<cpu::InferenceConv>()) {
  std::vector<int> blocks;
  bool bottleneck = true;
  switch (depth) {
    case 18: blocks = {2, 2, 2, 2}; bottleneck = false; break;
    case 34: blocks = {3, 4, 6, 3}; bottleneck = false; break;
    case 50: blocks = {3, 4, 6, 3}; break;
    case 101: blocks = {3, 4, 23, 3}; break;
    default: throw Error("unsupported ResNet depth " + std::to_string(depth) +
                         " (expected 18, 34, 50 or 101)");
  }
  const int64_t expansion = bottleneck ? 4 : 1;
  conv1 = register_module("conv1", conv(3, 64, 7, 2, 3));
  bn1 = register_module("bn1", make_norm(n.kind, 64, n.eps));
  int64_t inplanes = 64;
  for (int li = 0; li < 4; ++li) {
    const int64_t planes = 64LL << li;
    const int64_t stride = li == 0 ? 1 : 2;
    torch::nn::Sequential layer;
    for (int b = 0; b < blocks[li]; ++b) {
      const bool first = b == 0;
      layer->push_back(ResNetBlock(bottleneck, inplanes, planes, first ? stride : 1,
                                   first && (stride != 1 || inplanes != planes * expansion), n));
      inplanes = planes * expansion;
    }
    layers_.push_back(register_module("layer" + std::to_string(li + 1), layer));
    out_channels_.push_back(inplanes);
  }
  init_kaiming_fan_out(*this);  // torchvision's ResNet init for convs
}

ResNetBodyImpl::~ResNetBodyImpl() = default;

std::vector<at::Tensor> ResNetBodyImpl::forward(const at::Tensor& x) {
  auto outs = features(x);
  for (auto& y : outs) y = ops::to_4d(y).to(at::kFloat);  // bf16 under bf16 precision
  return outs;
}

std::vector<at::Tensor> ResNetBodyImpl::features(const at::Tensor& x) {
  auto y = (*run_stem_)(*conv1, bn1.get(), x, /*relu=*/true, {}, ops::MapLayout::Blocked16);
  y = ops::max_pool2d_any(y, 3, 2, 1);
  std::vector<at::Tensor> outs;
  for (auto& layer : layers_) {
    for (const auto& block : *layer) y = block.ptr()->as<ResNetBlockImpl>()->forward_consuming(std::move(y));
    outs.push_back(y);
  }
  return outs;
}

void ResNetBodyImpl::freeze(int trainable_layers) {
  if (trainable_layers < 0 || trainable_layers > 5)
    throw Error("trainable backbone layers must be in [0, 5], got " +
                std::to_string(trainable_layers));
  // torchvision: layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:n];
  // bn1 is also trainable only when everything is (its name starts with none of them).
  const std::vector<std::string> order{"layer4", "layer3", "layer2", "layer1", "conv1"};
  std::vector<std::string> train(order.begin(), order.begin() + trainable_layers);
  if (trainable_layers == 5) train.push_back("bn1");
  for (auto& p : named_parameters(/*recurse=*/true)) {
    bool trainable = false;
    for (auto& prefix : train)
      if (p.key().rfind(prefix, 0) == 0) trainable = true;
    p.value().set_requires_grad(trainable);
  }
}

}  // namespace maskrcnn::modeling
