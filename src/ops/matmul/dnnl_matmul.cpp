#include "ops/matmul/dnnl_matmul.h"

#include "ops/conv/dnnl_common.h"

#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <stdexcept>
#include <unordered_map>

namespace maskrcnn::ops {
namespace {
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
}  // namespace

struct DnnlMatmul::State {
  DnnlMatmulOptions options;
  int64_t M = 0, K = 0, N = 0;
  bool has_bias = false;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
  dnnl::memory::desc weights_md;
  dnnl::memory weights, bias;
  at::Tensor weights_storage, bias_storage;
  std::string impl;
};

DnnlMatmul::DnnlMatmul(const at::Tensor& weight, const at::Tensor& bias, int64_t rows,
                       const DnnlMatmulOptions& o, const DnnlMatmul* same_weights)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  TORCH_CHECK(weight.dim() == 2 && weight.is_cpu() && rows > 0 &&
                  (!bias.defined() || (bias.is_cpu() && bias.numel() == weight.size(1))),
              "DnnlMatmul: weight [K, N] and bias [N] on the CPU, at least one row");
  s.options = o;
  s.M = rows, s.K = weight.size(0), s.N = weight.size(1);
  s.has_bias = bias.defined();
  try {
    auto& engine = dnnl_common::cpu_engine();
    const dt compute = o.bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::desc src({s.M, s.K}, compute, tag::ab), weights_any({s.K, s.N}, compute, tag::any),
        bias_md({1, s.N}, dt::f32, tag::ab), dst({s.M, s.N}, dt::f32, tag::ab);
    dnnl::post_ops post;
    if (o.relu) post.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per call, thread-safe
    auto desc = s.has_bias ? dnnl::matmul::desc(src, weights_any, bias_md, dst)
                           : dnnl::matmul::desc(src, weights_any, dst);
    s.pd = dnnl::matmul::primitive_desc(desc, attr, engine);
    s.impl = s.pd.impl_info_str();
    s.weights_md = s.pd.weights_desc();
    s.matmul = dnnl::matmul(s.pd);
    if (same_weights && same_weights->s_->weights_md == s.weights_md && same_weights->s_->has_bias == s.has_bias &&
        same_weights->s_->options.bf16 == o.bf16) {
      s.weights_storage = same_weights->s_->weights_storage;
      s.weights = same_weights->s_->weights;
      s.bias_storage = same_weights->s_->bias_storage;
      s.bias = same_weights->s_->bias;
      return;
    }
    s.weights = dnnl_common::packed_weights(weight, {{s.K, s.N}, dt::f32, tag::ab}, s.weights_md, s.weights_storage);
    if (s.has_bias) s.bias = dnnl_common::bias_memory(bias, bias_md, s.bias_storage);
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN matmul: ") + e.what());
  }
}

DnnlMatmul::~DnnlMatmul() = default;

const std::string& DnnlMatmul::implementation() const { return s_->impl; }

at::Tensor DnnlMatmul::forward(const at::Tensor& x_in) const {
  const State& s = *s_;
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.dim() == 2 && x_in.size(0) == s.M && x_in.size(1) == s.K,
              "DnnlMatmul: input of another shape than built for");
  // bf16: rounded once here (to nearest even, as oneDNN's reorder would).
  const at::Tensor x = s.options.bf16 ? x_in.to(at::kBFloat16).contiguous() : x_in.contiguous();
  auto& engine = dnnl_common::cpu_engine();
  auto& stream = dnnl_common::thread_stream();
  try {
    at::Tensor out = at::empty({s.M, s.N}, at::kFloat);
    dnnl::memory src(s.pd.src_desc(), engine, x.data_ptr());
    dnnl::memory dst(s.pd.dst_desc(), engine, out.data_ptr());
    dnnl::memory scratch = dnnl_common::thread_scratchpad(s.pd.scratchpad_desc().get_size());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, s.weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
    if (s.has_bias) args[DNNL_ARG_BIAS] = s.bias;
    s.matmul.execute(stream, args);
    stream.wait();
    return out;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN matmul: ") + e.what());
  }
}

}  // namespace maskrcnn::ops
