#include "ops/conv/dnnl_conv2d.h"

#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <stdexcept>
#include <unordered_map>

namespace maskrcnn::ops {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One stream per calling thread: streams are cheap, and sharing one between
// threads would serialise unrelated forward passes.
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// A LibTorch byte buffer that a dnnl::memory views.
struct Buffer {
  at::Tensor storage;
  dnnl::memory memory;
  Buffer(const dnnl::memory::desc& md) {
    storage = at::empty({static_cast<int64_t>(md.get_size()) + 64}, at::kByte);
    memory = dnnl::memory(md, cpu_engine(), storage.data_ptr());
  }
};

// The scratchpad (Winograd's transformed tiles: up to ~300 MB for an FPN
// level) of this thread's convolutions, grown and never shrunk. A fresh
// allocation of that size per call would be faulted in page by page whenever
// a new image size outgrows the heap's free blocks: ~0.9 s on this machine's
// VM, more than the convolution itself.
at::Tensor& thread_scratchpad(size_t bytes) {
  thread_local at::Tensor scratch;
  if (!scratch.defined() || static_cast<size_t>(scratch.numel()) < bytes) {
    scratch = at::Tensor();  // free the old one first
    scratch = at::empty({static_cast<int64_t>(bytes) + 64}, at::kByte);
  }
  return scratch;
}

}  // namespace

struct DnnlConv2d::State {
  DnnlConvOptions options;
  std::array<int64_t, 4> in_shape{}, out_shape{};
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward conv;
  dnnl::memory weights, bias;
  at::Tensor weights_storage, bias_storage;
  dnnl::memory::desc src_md, dst_md, src_plain_md, dst_plain_md;
  bool src_plain = false, dst_plain = false, has_bias = false;
  dnnl::reorder src_reorder, dst_reorder, residual_reorder;
  std::string impl;
};

DnnlConv2d::DnnlConv2d(const at::Tensor& weight, const at::Tensor& bias,
                       std::array<int64_t, 4> in_shape, const DnnlConvOptions& o,
                       const DnnlConv2d* same_weights)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.options = o;
  s.in_shape = in_shape;
  const int64_t N = in_shape[0], IC = in_shape[1], H = in_shape[2], W = in_shape[3];
  TORCH_CHECK(weight.dim() == 4 && weight.is_cpu() && weight.size(1) == IC &&
                  (!bias.defined() || (bias.is_cpu() && bias.numel() == weight.size(0))),
              "DnnlConv2d: weight [OC, IC, KH, KW] and bias [OC] on the CPU, IC matching the input");
  const int64_t OC = weight.size(0), KH = weight.size(2), KW = weight.size(3);
  const int64_t OH = (H + 2 * o.padding - o.dilation * (KH - 1) - 1) / o.stride + 1;
  const int64_t OW = (W + 2 * o.padding - o.dilation * (KW - 1) - 1) / o.stride + 1;
  s.out_shape = {N, OC, OH, OW};
  s.has_bias = bias.defined();
  try {
    const dt compute = o.bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::desc weights_any({OC, IC, KH, KW}, compute, tag::any);
    const dnnl::memory::desc bias_md({OC}, dt::f32, tag::x);
    const dnnl::memory::dims strides{o.stride, o.stride}, dilation{o.dilation - 1, o.dilation - 1},
        pad{o.padding, o.padding};
    const auto algorithm =
        o.winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
    dnnl::post_ops post;
    if (o.residual) post.append_sum(1.f);
    if (o.relu) post.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per call, thread-safe
    // forward_training keeps Winograd's weights in a blocked layout of their
    // own size and transforms them on each call (into the scratchpad):
    // forward_inference would keep them pre-transformed, 4x larger (36 taps
    // per 9), ~270 MB for ResNet-50-FPN, for no measurable speed.
    const auto prop = o.winograd ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    auto make_pd = [&](tag src_tag, tag dst_tag) {
      const dnnl::memory::desc src({N, IC, H, W}, compute, src_tag), dst({N, OC, OH, OW}, dt::f32, dst_tag);
      auto desc = s.has_bias
                      ? dnnl::convolution_forward::desc(prop, algorithm, src,
                                                        weights_any, bias_md, dst, strides, dilation, pad, pad)
                      : dnnl::convolution_forward::desc(prop, algorithm, src,
                                                        weights_any, dst, strides, dilation, pad, pad);
      return dnnl::convolution_forward::primitive_desc(desc, attr, cpu_engine());
    };
    s.pd = make_pd(tag::any, tag::any);
    // oneDNN 2.6 picks NHWC for some 1x1 convolutions; its NHWC -> NCHW
    // reorder is ~20x slower than from the blocked layout, so ask for that.
    auto is_nhwc = [](const dnnl::memory::desc& md) {
      return md == dnnl::memory::desc(md.dims(), md.data_type(), tag::nhwc);
    };
    if (IC % 16 == 0 && OC % 16 == 0 && (is_nhwc(s.pd.src_desc()) || is_nhwc(s.pd.dst_desc()))) {
      try {
        s.pd = make_pd(tag::nChw16c, tag::nChw16c);
      } catch (const dnnl::error&) {  // keep the NHWC one
      }
    }
    s.conv = dnnl::convolution_forward(s.pd);
    s.impl = s.pd.impl_info_str();

    auto& engine = cpu_engine();
    auto& stream = thread_stream();
    if (same_weights && same_weights->s_->pd.weights_desc() == s.pd.weights_desc() &&
        same_weights->s_->has_bias == s.has_bias) {
      s.weights_storage = same_weights->s_->weights_storage;
      s.weights = same_weights->s_->weights;
      s.bias_storage = same_weights->s_->bias_storage;
      s.bias = same_weights->s_->bias;
    } else {
      at::Tensor w = weight.to(at::kFloat).contiguous();
      dnnl::memory w_plain({{OC, IC, KH, KW}, dt::f32, tag::oihw}, engine, w.data_ptr());
      s.weights_storage = at::empty({static_cast<int64_t>(s.pd.weights_desc().get_size())}, at::kByte);
      s.weights = dnnl::memory(s.pd.weights_desc(), engine, s.weights_storage.data_ptr());
      dnnl::reorder(w_plain, s.weights).execute(stream, w_plain, s.weights);
      if (s.has_bias) {
        s.bias_storage = bias.to(at::kFloat).contiguous().clone();
        s.bias = dnnl::memory(bias_md, engine, s.bias_storage.data_ptr());
      }
      stream.wait();
    }

    s.src_md = s.pd.src_desc();
    s.dst_md = s.pd.dst_desc();
    s.src_plain_md = dnnl::memory::desc({N, IC, H, W}, dt::f32, tag::nchw);
    s.dst_plain_md = dnnl::memory::desc({N, OC, OH, OW}, dt::f32, tag::nchw);
    s.src_plain = s.src_md == s.src_plain_md;
    s.dst_plain = s.dst_md == s.dst_plain_md;
    if (!s.src_plain)
      s.src_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine, s.src_plain_md, engine, s.src_md));
    if (!s.dst_plain) {
      s.dst_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine, s.dst_md, engine, s.dst_plain_md));
      if (o.residual)
        s.residual_reorder =
            dnnl::reorder(dnnl::reorder::primitive_desc(engine, s.dst_plain_md, engine, s.dst_md));
    }
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN convolution: ") + e.what());
  }
}

DnnlConv2d::~DnnlConv2d() = default;

const std::string& DnnlConv2d::implementation() const { return s_->impl; }

at::Tensor DnnlConv2d::forward(const at::Tensor& x_in, const at::Tensor& residual) const {
  const State& s = *s_;
  const at::Tensor x = x_in.contiguous();
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 4 && x.size(0) == s.in_shape[0] &&
                  x.size(1) == s.in_shape[1] && x.size(2) == s.in_shape[2] && x.size(3) == s.in_shape[3],
              "DnnlConv2d: input of another shape than built for");
  TORCH_CHECK(s.options.residual == residual.defined(), "DnnlConv2d: residual iff built with one");
  TORCH_CHECK(!residual.defined() ||
                  (residual.is_cpu() && residual.sizes() == c10::IntArrayRef(s.out_shape.data(), 4)),
              "DnnlConv2d: residual of another shape than the output");
  auto& engine = cpu_engine();
  auto& stream = thread_stream();
  try {
    dnnl::memory plain_src(s.src_plain_md, engine, x.data_ptr());
    std::optional<Buffer> src_buffer;
    if (!s.src_plain) {
      src_buffer.emplace(s.src_md);
      s.src_reorder.execute(stream, plain_src, src_buffer->memory);
    }
    at::Tensor out, r;  // r: the residual, alive until the stream is done
    std::optional<Buffer> dst_buffer;
    dnnl::memory dst;
    if (s.dst_plain) {
      out = s.options.residual ? residual.to(at::kFloat).contiguous().clone()
                               : at::empty({s.out_shape[0], s.out_shape[1], s.out_shape[2], s.out_shape[3]},
                                           at::kFloat);
      dst = dnnl::memory(s.dst_plain_md, engine, out.data_ptr());
    } else {
      dst_buffer.emplace(s.dst_md);
      dst = dst_buffer->memory;
      if (s.options.residual) {
        r = residual.to(at::kFloat).contiguous();
        dnnl::memory plain_residual(s.dst_plain_md, engine, r.data_ptr());
        s.residual_reorder.execute(stream, plain_residual, dst);
      }
    }
    const dnnl::memory::desc scratch_md = s.pd.scratchpad_desc();
    dnnl::memory scratch(scratch_md, engine, thread_scratchpad(scratch_md.get_size()).data_ptr());
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src_buffer ? src_buffer->memory : plain_src},
                                               {DNNL_ARG_WEIGHTS, s.weights},
                                               {DNNL_ARG_DST, dst},
                                               {DNNL_ARG_SCRATCHPAD, scratch}};
    if (s.has_bias) args[DNNL_ARG_BIAS] = s.bias;
    s.conv.execute(stream, args);
    if (!s.dst_plain) {
      out = at::empty({s.out_shape[0], s.out_shape[1], s.out_shape[2], s.out_shape[3]}, at::kFloat);
      dnnl::memory plain_dst(s.dst_plain_md, engine, out.data_ptr());
      s.dst_reorder.execute(stream, dst, plain_dst);
    }
    stream.wait();
    return out;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN convolution: ") + e.what());
  }
}

}  // namespace maskrcnn::ops
