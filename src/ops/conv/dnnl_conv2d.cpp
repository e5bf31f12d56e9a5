#include "ops/conv/dnnl_conv2d.h"

#include "ops/conv/dnnl_common.h"

#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

namespace maskrcnn::ops {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

using dnnl_common::cpu_engine;
using dnnl_common::Buffer;
using dnnl_common::thread_stream;


// The memory layouts forward() reads and writes.
tag tag_of(MapLayout layout) {
  switch (layout) {
    case MapLayout::ChannelsLast: return tag::nhwc;
    case MapLayout::Blocked16: return tag::nChw16c;
    default: return tag::nchw;
  }
}

// A window of `dims` (images x channels x rows x columns) at the start of a
// float map of full shape `full` in `layout`; parts of a split convolution
// read and write such windows in place, the pointer moved to their first
// element (see element_offset).
dnnl::memory::desc window(const dnnl::memory::dims& dims, const std::array<int64_t, 4>& full, MapLayout layout,
                          dt type = dt::f32) {
  const dnnl::memory::desc whole({full[0], full[1], full[2], full[3]}, type, tag_of(layout));
  return dims == whole.dims() ? whole : whole.submemory_desc(dims, {0, 0, 0, 0});
}

// Elements from a map's start to image b, row r (channel 0, column 0).
int64_t element_offset(const std::array<int64_t, 4>& full, MapLayout layout, int64_t b, int64_t r) {
  const int64_t row = layout == MapLayout::NCHW ? full[3] : layout == MapLayout::ChannelsLast ? full[3] * full[1] : full[3] * 16;
  return b * full[1] * full[2] * full[3] + r * row;
}

}  // namespace

// One primitive for one part shape (images x output rows, with its padding).
struct ConvKernel {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward conv;
  dnnl::memory weights;
  at::Tensor weights_storage;
  dnnl::memory::desc src_md, dst_md;  // the layouts the primitive wants
};

struct ConvPart {
  int64_t b0, r0, in_r0;  // first image, first output row, first input row
  size_t kernel;
};

struct DnnlConv2d::State {
  DnnlConvOptions options;
  std::array<int64_t, 4> in_shape{}, out_shape{};
  bool has_bias = false;
  dnnl::memory bias;
  at::Tensor bias_storage;
  dnnl::memory::desc weights_md;  // of the shared, reordered weights
  dnnl::memory weights;
  at::Tensor weights_storage;
  std::vector<ConvKernel> kernels;
  std::vector<ConvPart> parts;
  size_t scratchpad = 0;
  std::string impl;
  // Reorders between the primitives' layouts and the maps' windows, made on
  // first use for each (kernel, role, map layout, map data type).
  std::mutex reorders_mutex;
  std::map<std::tuple<size_t, int, int, int>, dnnl::reorder> reorders;
  dnnl::reorder reorder(size_t kernel, int role, MapLayout layout, const dnnl::memory::desc& from,
                        const dnnl::memory::desc& to);
};

dnnl::reorder DnnlConv2d::State::reorder(size_t kernel, int role, MapLayout layout, const dnnl::memory::desc& from,
                                         const dnnl::memory::desc& to) {
  std::lock_guard<std::mutex> lock(reorders_mutex);
  const auto key = std::make_tuple(kernel, role, static_cast<int>(layout),
                                   static_cast<int>(role == 2 ? to.data_type() : from.data_type()));
  auto it = reorders.find(key);
  if (it == reorders.end())
    it = reorders
             .emplace(key, dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to)))
             .first;
  return it->second;
}

DnnlConv2d::DnnlConv2d(const at::Tensor& weight, const at::Tensor& bias,
                       std::array<int64_t, 4> in_shape, const DnnlConvOptions& o,
                       const std::vector<const DnnlConv2d*>& same_weights)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.options = o;
  s.in_shape = in_shape;
  const int64_t N = in_shape[0], IC = in_shape[1], H = in_shape[2], W = in_shape[3];
  TORCH_CHECK(weight.dim() == 4 && weight.is_cpu() && weight.size(1) == IC &&
                  (!bias.defined() || (bias.is_cpu() && bias.numel() == weight.size(0))),
              "DnnlConv2d: weight [OC, IC, KH, KW] and bias [OC] on the CPU, IC matching the input");
  TORCH_CHECK(!o.bf16_output || o.bf16, "DnnlConv2d: bf16 output only from bf16 compute");
  const int64_t OC = weight.size(0), KH = weight.size(2), KW = weight.size(3);
  const int64_t OH = (H + 2 * o.padding - o.dilation * (KH - 1) - 1) / o.stride + 1;
  const int64_t OW = (W + 2 * o.padding - o.dilation * (KW - 1) - 1) / o.stride + 1;
  s.out_shape = {N, OC, OH, OW};
  s.has_bias = bias.defined();
  try {
    auto& engine = cpu_engine();
    const dt compute = o.bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::desc weights_any({OC, IC, KH, KW}, compute, tag::any);
    const dnnl::memory::desc bias_md({OC}, dt::f32, tag::x);
    const dnnl::memory::desc plain_weights_md({OC, IC, KH, KW}, dt::f32, tag::oihw);
    const dnnl::memory::dims strides{o.stride, o.stride}, dilation{o.dilation - 1, o.dilation - 1};
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
    // A convolution run in parts does keep them pre-transformed: it would
    // otherwise transform them once per part (~10 ms each).
    auto prop = o.winograd ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    // images x input rows -> output rows, with the rows' own top/bottom padding.
    auto make_pd = [&](int64_t nb, int64_t in_rows, int64_t out_rows, int64_t pad_t, int64_t pad_b) {
      auto make = [&](tag src_tag, tag dst_tag) {
        const dnnl::memory::desc src({nb, IC, in_rows, W}, compute, src_tag),
            dst({nb, OC, out_rows, OW}, o.bf16_output ? dt::bf16 : dt::f32, dst_tag);
        const dnnl::memory::dims pad_l{pad_t, o.padding}, pad_r{pad_b, o.padding};
        auto desc = s.has_bias ? dnnl::convolution_forward::desc(prop, algorithm, src, weights_any, bias_md,
                                                                 dst, strides, dilation, pad_l, pad_r)
                               : dnnl::convolution_forward::desc(prop, algorithm, src, weights_any, dst,
                                                                 strides, dilation, pad_l, pad_r);
        return dnnl::convolution_forward::primitive_desc(desc, attr, engine);
      };
      auto pd = make(tag::any, tag::any);
      // oneDNN 2.6 picks NHWC for some 1x1 convolutions; its NHWC -> NCHW
      // reorder is ~20x slower than from the blocked layout, so ask for that.
      auto is_nhwc = [](const dnnl::memory::desc& md) {
        return md == dnnl::memory::desc(md.dims(), md.data_type(), tag::nhwc);
      };
      if (IC % 16 == 0 && OC % 16 == 0 && (is_nhwc(pd.src_desc()) || is_nhwc(pd.dst_desc()))) {
        try {
          pd = make(tag::nChw16c, tag::nChw16c);
        } catch (const dnnl::error&) {  // keep the NHWC one
        }
      } else if (IC % 16 != 0 && OC % 16 == 0 && is_nhwc(pd.dst_desc())) {
        // The stem (3 channels in): its brgconv writes NHWC, which the next
        // layers' blocked maps then need a reorder from (4-9 ms at 400x608);
        // the jit kernel reads NCHW and writes nChw16c itself.
        try {
          auto blocked = make(tag::any, tag::nChw16c);
          if (std::string(blocked.impl_info_str()).rfind("ref", 0) != 0) pd = blocked;
        } catch (const dnnl::error&) {
        }
      }
      return pd;
    };

    const auto full = make_pd(N, H, OH, o.padding, o.padding);

    // Parts: groups of `nb` images, bands of `rows` output rows (3x3, stride
    // 1, padding 1: the shapes Winograd runs, where the scratchpad is big).
    int64_t nb = N, rows = OH;
    const bool splittable = o.winograd && o.scratchpad_budget > 0 && KH == 3 && KW == 3 && o.stride == 1 &&
                            o.dilation == 1 && o.padding == 1;
    if (splittable && full.scratchpad_desc().get_size() > o.scratchpad_budget) {
      auto scratch = [&](int64_t n, int64_t r) {  // all rows, or an interior band's
        return (r >= OH ? make_pd(n, H, OH, 1, 1) : make_pd(n, r + 2, r, 0, 0)).scratchpad_desc().get_size();
      };
      while (nb > 1 && scratch(nb, rows) > o.scratchpad_budget) nb = (nb + 1) / 2;
      while (nb == 1 && rows > 4 && scratch(1, rows) > o.scratchpad_budget) rows = ((rows + 1) / 2 + 3) / 4 * 4;
      if (nb < N || rows < OH) prop = dnnl::prop_kind::forward_inference;
    }
    std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>, size_t> kernel_of;
    for (int64_t b0 = 0; b0 < N; b0 += nb) {
      const int64_t n = std::min(nb, N - b0);
      for (int64_t r0 = 0; r0 < OH; r0 += rows) {
        const int64_t r1 = std::min(OH, r0 + rows);
        int64_t pad_t = o.padding, pad_b = o.padding, in_r0 = 0, in_rows = H;
        if (rows < OH) {  // a band: the input rows it reads, padding only at the map's edges
          pad_t = r0 == 0 ? 1 : 0;
          pad_b = r1 == OH ? 1 : 0;
          in_r0 = r0 - 1 + pad_t;
          in_rows = std::min(H, r1 + 1) - in_r0;
        }
        const auto key = std::make_tuple(n, in_rows, r1 - r0, pad_t, pad_b);
        auto it = kernel_of.find(key);
        if (it == kernel_of.end()) {
          ConvKernel k;
          k.pd = (n == N && rows == OH) ? full : make_pd(n, in_rows, r1 - r0, pad_t, pad_b);
          if (s.kernels.empty()) {
            s.impl = k.pd.impl_info_str();
            s.weights_md = k.pd.weights_desc();
          }
          it = kernel_of.emplace(key, s.kernels.size()).first;
          s.kernels.push_back(std::move(k));
        }
        s.parts.push_back({b0, r0, in_r0, it->second});
      }
    }

    // Weights, reordered once (shared with another shape's convolution where
    // the layout is the same).
    const DnnlConv2d* shared = nullptr;
    for (const DnnlConv2d* other : same_weights)
      if (!shared && other && other->s_->weights_md == s.weights_md && other->s_->has_bias == s.has_bias)
        shared = other;
    if (shared) {
      s.weights_storage = shared->s_->weights_storage;
      s.weights = shared->s_->weights;
      s.bias_storage = shared->s_->bias_storage;
      s.bias = shared->s_->bias;
    } else {
      s.weights = dnnl_common::packed_weights(weight, plain_weights_md, s.weights_md, s.weights_storage);
      if (s.has_bias) s.bias = dnnl_common::bias_memory(bias, bias_md, s.bias_storage);
    }

    for (auto& k : s.kernels) {
      k.conv = dnnl::convolution_forward(k.pd);
      s.scratchpad = std::max(s.scratchpad, k.pd.scratchpad_desc().get_size());
      if (k.pd.weights_desc() == s.weights_md) {
        k.weights = s.weights;
        k.weights_storage = s.weights_storage;
      } else {  // a part whose primitive wants another weight layout
        k.weights = dnnl_common::packed_weights(weight, plain_weights_md, k.pd.weights_desc(), k.weights_storage);
      }
      k.src_md = k.pd.src_desc();
      k.dst_md = k.pd.dst_desc();
    }
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN convolution: ") + e.what());
  }
}

DnnlConv2d::~DnnlConv2d() = default;

const std::string& DnnlConv2d::implementation() const { return s_->impl; }
size_t DnnlConv2d::parts() const { return s_->parts.size(); }
size_t DnnlConv2d::scratchpad_bytes() const { return s_->scratchpad; }

at::Tensor DnnlConv2d::forward(const at::Tensor& x_in, const at::Tensor& residual_in, MapLayout out_layout,
                               bool residual_writable) const {
  State& s = *s_;
  const MapLayout in_layout = layout_of(x_in);
  const at::Tensor x = in_layout == MapLayout::NCHW ? x_in.contiguous() : x_in;
  const auto channels = [](const at::Tensor& t) { return t.dim() == 5 ? t.size(1) * 16 : t.size(1); };
  // bf16 maps (another convolution's bf16 output) go to bf16 convolutions only.
  const bool x_bf16 = x.scalar_type() == at::kBFloat16;
  TORCH_CHECK((x.scalar_type() == at::kFloat || (x_bf16 && s.options.bf16)) && x.size(0) == s.in_shape[0] && channels(x) == s.in_shape[1] &&
                  x.size(2) == s.in_shape[2] && x.size(3) == s.in_shape[3],
              "DnnlConv2d: input of another shape than built for");
  TORCH_CHECK(s.options.residual == residual_in.defined(), "DnnlConv2d: residual iff built with one");
  const auto& [N, OC, OH, OW] = s.out_shape;
  MapLayout r_layout = MapLayout::NCHW;
  at::Tensor r;  // the residual, alive until the stream is done
  if (s.options.residual) {
    r_layout = layout_of(residual_in);
    r = r_layout == MapLayout::NCHW ? residual_in.contiguous() : residual_in;
    TORCH_CHECK(r.is_cpu() && (r.scalar_type() == at::kFloat || r.scalar_type() == at::kBFloat16) &&
                    r.size(0) == N && channels(r) == OC &&
                    r.size(2) == OH && r.size(3) == OW,
                "DnnlConv2d: residual of another shape than the output");
  }
  if (out_layout == MapLayout::Blocked16 && OC % 16 != 0) out_layout = MapLayout::NCHW;
  auto& engine = cpu_engine();
  auto& stream = thread_stream();
  try {
    const auto out_type = s.options.bf16_output ? at::kBFloat16 : at::kFloat;
    const dt x_dt = x_bf16 ? dt::bf16 : dt::f32, out_dt = s.options.bf16_output ? dt::bf16 : dt::f32;
    const dt r_dt = r.defined() && r.scalar_type() == at::kBFloat16 ? dt::bf16 : dt::f32;
    // The residual's own memory as the output: the sum post-op adds onto it.
    const bool into_residual = residual_writable && s.options.residual && r.scalar_type() == out_type &&
                               r_layout == out_layout && r.data_ptr() != x.data_ptr() &&
                               (out_layout == MapLayout::ChannelsLast || r.is_contiguous());
    at::Tensor out = into_residual ? r : out_layout == MapLayout::Blocked16 ? at::empty({N, OC / 16, OH, OW, 16}, out_type)
                     : out_layout == MapLayout::ChannelsLast
                         ? at::empty({N, OC, OH, OW}, at::TensorOptions(out_type).memory_format(at::MemoryFormat::ChannelsLast))
                         : at::empty({N, OC, OH, OW}, out_type);
    // Windows of the maps in their own layouts, per kernel.
    std::vector<dnnl::memory::desc> src_windows, dst_windows, r_windows;
    bool any_direct_dst = false;
    for (const auto& k : s.kernels) {
      src_windows.push_back(window(k.src_md.dims(), s.in_shape, in_layout, x_dt));
      dst_windows.push_back(window(k.dst_md.dims(), s.out_shape, out_layout, out_dt));
      if (s.options.residual) r_windows.push_back(window(k.dst_md.dims(), s.out_shape, r_layout, r_dt));
      any_direct_dst |= k.dst_md == dst_windows.back();
    }
    if (s.options.residual && any_direct_dst && !into_residual) {  // the sum post-op adds onto dst: start from the residual
      if (r_layout == out_layout) {
        out.copy_(r);  // rounded to bf16 for a bf16 output, as the reorder would
      } else {
        dnnl::memory r_full(window({N, OC, OH, OW}, s.out_shape, r_layout, r_dt), engine, r.data_ptr());
        dnnl::memory out_full(window({N, OC, OH, OW}, s.out_shape, out_layout, out_dt), engine, out.data_ptr());
        dnnl::reorder(r_full, out_full).execute(stream, r_full, out_full);
      }
    }
    // The scratchpad budget keeps it to ~320 MB.
    dnnl::memory scratch = dnnl_common::thread_scratchpad(s.scratchpad);
    auto* x_data = static_cast<char*>(x.data_ptr());
    auto* out_data = static_cast<char*>(out.data_ptr());
    const int64_t x_size = x.element_size(), out_size = out.element_size();
    for (const auto& part : s.parts) {
      const ConvKernel& k = s.kernels[part.kernel];
      const auto& src_window = src_windows[part.kernel];
      const auto& dst_window = dst_windows[part.kernel];
      dnnl::memory src_view(src_window, engine,
                            x_data + x_size * element_offset(s.in_shape, in_layout, part.b0, part.in_r0));
      dnnl::memory dst_view(dst_window, engine,
                            out_data + out_size * element_offset(s.out_shape, out_layout, part.b0, part.r0));
      std::optional<Buffer> src_buffer, dst_buffer;
      if (k.src_md != src_window) {
        src_buffer.emplace(k.src_md);
        s.reorder(part.kernel, 0, in_layout, src_window, k.src_md).execute(stream, src_view, src_buffer->memory);
      }
      if (k.dst_md != dst_window) {
        dst_buffer.emplace(k.dst_md);
        if (s.options.residual) {
          dnnl::memory residual_view(r_windows[part.kernel], engine,
                                     static_cast<char*>(r.data_ptr()) +
                                         r.element_size() * element_offset(s.out_shape, r_layout, part.b0, part.r0));
          s.reorder(part.kernel, 1, r_layout, r_windows[part.kernel], k.dst_md)
              .execute(stream, residual_view, dst_buffer->memory);
        }
      }
      std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src_buffer ? src_buffer->memory : src_view},
                                                 {DNNL_ARG_WEIGHTS, k.weights},
                                                 {DNNL_ARG_DST, dst_buffer ? dst_buffer->memory : dst_view},
                                                 {DNNL_ARG_SCRATCHPAD, scratch}};
      if (s.has_bias) args[DNNL_ARG_BIAS] = s.bias;
      k.conv.execute(stream, args);
      if (dst_buffer)
        s.reorder(part.kernel, 2, out_layout, k.dst_md, dst_window).execute(stream, dst_buffer->memory, dst_view);
      stream.wait();  // before this part's buffers go
    }
    return out;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN convolution: ") + e.what());
  }
}

}  // namespace maskrcnn::ops
