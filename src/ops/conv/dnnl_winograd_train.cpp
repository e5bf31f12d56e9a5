#include "ops/conv/dnnl_winograd_train.h"

#include "ops/conv/dnnl_common.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

namespace maskrcnn::ops {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using Key = std::vector<int64_t>;  // N, IC, H, W, OC, padding, threads

using dnnl_common::cpu_engine;
using dnnl_common::thread_stream;

// A reorder between a plain tensor's layout and the one a primitive wants,
// built once; `needed` is false where they are the same.
struct Reorder {
  bool needed = false;
  dnnl::reorder reorder;
  Reorder() = default;
  Reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) : needed(from != to) {
    if (needed) reorder = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
  }
};

// The three primitives of one shape, and the reorders around them.
struct Kernels {
  dnnl::memory::desc x_plain, w_plain, y_plain, b_plain;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  Reorder fwd_x, fwd_w, fwd_y;         // x, w in; y out
  Reorder data_dy, data_w, data_dx;    // dy, w in; dx out
  Reorder weights_x, weights_dy, weights_dw;  // x, dy in; dw out
  size_t scratchpad = 0;
};

std::shared_ptr<const Kernels> build(const Key& k) {
  const int64_t N = k[0], IC = k[1], H = k[2], W = k[3], OC = k[4], pad = k[5];
  const int64_t OH = H + 2 * pad - 2, OW = W + 2 * pad - 2;
  auto s = std::make_shared<Kernels>();
  s->x_plain = dnnl::memory::desc({N, IC, H, W}, dt::f32, tag::nchw);
  s->y_plain = dnnl::memory::desc({N, OC, OH, OW}, dt::f32, tag::nchw);
  s->w_plain = dnnl::memory::desc({OC, IC, 3, 3}, dt::f32, tag::oihw);
  s->b_plain = dnnl::memory::desc({OC}, dt::f32, tag::x);
  const dnnl::memory::desc x_any({N, IC, H, W}, dt::f32, tag::any), y_any({N, OC, OH, OW}, dt::f32, tag::any),
      w_any({OC, IC, 3, 3}, dt::f32, tag::any);
  const dnnl::memory::dims strides{1, 1}, padding{pad, pad};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& engine = cpu_engine();
  const auto wino = dnnl::algorithm::convolution_winograd;
  s->fwd_pd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, wino, x_any, w_any, s->b_plain, y_any,
                                      strides, padding, padding),
      attr, engine);
  // Winograd for the backward passes where oneDNN has it for this shape,
  // else its direct algorithm (still one primitive, no LibTorch reorders).
  for (auto algorithm : {wino, dnnl::algorithm::convolution_direct}) {
    try {
      s->bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
          dnnl::convolution_backward_data::desc(algorithm, x_any, w_any, y_any, strides, padding, padding), attr,
          engine, s->fwd_pd);
      break;
    } catch (const dnnl::error&) {
      if (algorithm != wino) throw;
    }
  }
  for (auto algorithm : {wino, dnnl::algorithm::convolution_direct}) {
    try {
      s->bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(
          dnnl::convolution_backward_weights::desc(algorithm, x_any, w_any, s->b_plain, y_any, strides, padding,
                                                   padding),
          attr, engine, s->fwd_pd);
      break;
    } catch (const dnnl::error&) {
      if (algorithm != wino) throw;
    }
  }
  s->fwd = dnnl::convolution_forward(s->fwd_pd);
  s->bwd_data = dnnl::convolution_backward_data(s->bwd_data_pd);
  s->bwd_weights = dnnl::convolution_backward_weights(s->bwd_weights_pd);
  s->fwd_x = Reorder(s->x_plain, s->fwd_pd.src_desc());
  s->fwd_w = Reorder(s->w_plain, s->fwd_pd.weights_desc());
  s->fwd_y = Reorder(s->fwd_pd.dst_desc(), s->y_plain);
  s->data_dy = Reorder(s->y_plain, s->bwd_data_pd.diff_dst_desc());
  s->data_w = Reorder(s->w_plain, s->bwd_data_pd.weights_desc());
  s->data_dx = Reorder(s->bwd_data_pd.diff_src_desc(), s->x_plain);
  s->weights_x = Reorder(s->x_plain, s->bwd_weights_pd.src_desc());
  s->weights_dy = Reorder(s->y_plain, s->bwd_weights_pd.diff_dst_desc());
  s->weights_dw = Reorder(s->bwd_weights_pd.diff_weights_desc(), s->w_plain);
  s->scratchpad = std::max({s->fwd_pd.scratchpad_desc().get_size(), s->bwd_data_pd.scratchpad_desc().get_size(),
                            s->bwd_weights_pd.scratchpad_desc().get_size()});
  return s;
}

// Primitives per shape, most recently used first. Training images change
// size every batch; a few dozen shapes cover several steps' layers.
std::shared_ptr<const Kernels> kernels_for(const Key& key) {
  static std::mutex mutex;
  static std::list<std::pair<Key, std::shared_ptr<const Kernels>>> cache;
  constexpr size_t kMax = 64;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      if (it->first != key) continue;
      cache.splice(cache.begin(), cache, it);
      return it->second;
    }
  }
  std::shared_ptr<const Kernels> made;
  try {
    made = build(key);
  } catch (const dnnl::error&) {
    // No Winograd for this shape or CPU: remembered as such.
  }
  std::lock_guard<std::mutex> lock(mutex);
  cache.emplace_front(key, made);
  if (cache.size() > kMax) cache.pop_back();
  return made;
}

// Buffers of one call, alive until the stream is done with them.
struct Call {
  std::list<dnnl_common::Buffer> keep;
  dnnl::memory buffer(const dnnl::memory::desc& md) { return keep.emplace_back(md).memory; }
  // A tensor's plain memory in the layout `to` wants (a reordered copy if needed).
  dnnl::memory in(const Reorder& r, const dnnl::memory::desc& plain, const dnnl::memory::desc& to,
                  const at::Tensor& t) {
    dnnl::memory m(plain, cpu_engine(), t.data_ptr());
    if (!r.needed) return m;
    dnnl::memory out = buffer(to);
    r.reorder.execute(thread_stream(), m, out);
    return out;
  }
  // Runs `prim`, whose output has layout `md`, into plain tensor `out`.
  void run(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args, int out_arg,
           const dnnl::memory::desc& md, const Reorder& r, const dnnl::memory::desc& plain, const at::Tensor& out) {
    dnnl::memory plain_out(plain, cpu_engine(), out.data_ptr());
    dnnl::memory result = r.needed ? buffer(md) : plain_out;
    args[out_arg] = result;
    prim.execute(thread_stream(), args);
    if (r.needed) r.reorder.execute(thread_stream(), result, plain_out);
  }
};

Key key_of(const at::Tensor& x, const at::Tensor& w, int64_t padding) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), padding, at::get_num_threads()};
}

// Runs fn(first, count) over [0, n) in groups of `part` images.
template <typename Fn>
void for_parts(int64_t n, int64_t part, Fn&& fn) {
  for (int64_t first = 0; first < n; first += part) fn(first, std::min(part, n - first));
}

std::shared_ptr<const Kernels> kernels_of_part(const at::Tensor& x, const at::Tensor& w, int64_t padding,
                                               int64_t count) {
  Key key = key_of(x, w, padding);
  key[0] = count;
  auto k = kernels_for(key);
  TORCH_CHECK(k, "winograd_conv2d_train: no kernels for this shape");
  return k;
}

class WinogradConvFunction : public torch::autograd::Function<WinogradConvFunction> {
 public:
  // `part`: images per primitive run (a smaller scratchpad, see the header).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w_in,
                            const at::Tensor& b_in, int64_t padding, int64_t part) {
    const at::Tensor x = x_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
    ctx->save_for_backward({x, w});
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["part"] = part;
    at::Tensor y = at::empty({x.size(0), w.size(0), x.size(2) + 2 * padding - 2, x.size(3) + 2 * padding - 2},
                             x.options());
    for_parts(x.size(0), part, [&](int64_t first, int64_t count) {
      auto k = kernels_of_part(x, w, padding, count);
      Call c;
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, c.in(k->fwd_x, k->x_plain, k->fwd_pd.src_desc(), x.narrow(0, first, count))},
          {DNNL_ARG_WEIGHTS, c.in(k->fwd_w, k->w_plain, k->fwd_pd.weights_desc(), w)},
          {DNNL_ARG_BIAS, dnnl::memory(k->b_plain, cpu_engine(), b.data_ptr())},
          {DNNL_ARG_SCRATCHPAD, dnnl_common::thread_scratchpad(k->scratchpad)}};
      c.run(k->fwd, std::move(args), DNNL_ARG_DST, k->fwd_pd.dst_desc(), k->fwd_y, k->y_plain,
            y.narrow(0, first, count));
      thread_stream().wait();
    });
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t padding = ctx->saved_data["padding"].toInt(), part = ctx->saved_data["part"].toInt();
    const bool want_dx = ctx->needs_input_grad(0), want_dw = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    at::Tensor dx = want_dx ? at::empty_like(x) : at::Tensor();
    at::Tensor dw = want_dw ? at::empty_like(w) : at::Tensor();
    at::Tensor db = want_dw ? at::empty({w.size(0)}, w.options()) : at::Tensor();
    at::Tensor dw_part, db_part;  // the second and later parts' sums, added to dw, db
    for_parts(x.size(0), part, [&](int64_t first, int64_t count) {
      auto k = kernels_of_part(x, w, padding, count);
      const at::Tensor x_part = x.narrow(0, first, count), dy_part = dy.narrow(0, first, count);
      Call c;
      const dnnl::memory scratch = dnnl_common::thread_scratchpad(k->scratchpad);
      std::optional<dnnl::memory> dy_data;  // reused by backward-weights when it wants the same layout
      if (want_dx) {
        dy_data = c.in(k->data_dy, k->y_plain, k->bwd_data_pd.diff_dst_desc(), dy_part);
        std::unordered_map<int, dnnl::memory> args{
            {DNNL_ARG_DIFF_DST, *dy_data},
            {DNNL_ARG_WEIGHTS, c.in(k->data_w, k->w_plain, k->bwd_data_pd.weights_desc(), w)},
            {DNNL_ARG_SCRATCHPAD, scratch}};
        c.run(k->bwd_data, std::move(args), DNNL_ARG_DIFF_SRC, k->bwd_data_pd.diff_src_desc(), k->data_dx,
              k->x_plain, dx.narrow(0, first, count));
      }
      if (want_dw) {
        const bool first_part = first == 0;
        if (!first_part && !dw_part.defined()) {
          dw_part = at::empty_like(dw);
          db_part = at::empty_like(db);
        }
        std::unordered_map<int, dnnl::memory> args{
            {DNNL_ARG_SRC, c.in(k->weights_x, k->x_plain, k->bwd_weights_pd.src_desc(), x_part)},
            {DNNL_ARG_DIFF_DST, dy_data && k->bwd_data_pd.diff_dst_desc() == k->bwd_weights_pd.diff_dst_desc()
                                    ? *dy_data
                                    : c.in(k->weights_dy, k->y_plain, k->bwd_weights_pd.diff_dst_desc(), dy_part)},
            {DNNL_ARG_DIFF_BIAS,
             dnnl::memory(k->b_plain, cpu_engine(), (first_part ? db : db_part).data_ptr())},
            {DNNL_ARG_SCRATCHPAD, scratch}};
        c.run(k->bwd_weights, std::move(args), DNNL_ARG_DIFF_WEIGHTS, k->bwd_weights_pd.diff_weights_desc(),
              k->weights_dw, k->w_plain, first_part ? dw : dw_part);
        thread_stream().wait();
        if (!first_part) {
          dw.add_(dw_part);
          db.add_(db_part);
        }
      }
      thread_stream().wait();
    });
    return {dx, ctx->needs_input_grad(1) ? dw : at::Tensor(), ctx->needs_input_grad(2) ? db : at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor winograd_conv2d_train(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 int64_t padding, std::size_t scratchpad_budget, int64_t* runs) {
  if (!x.defined() || !weight.defined() || !bias.defined() || x.dim() != 4 || weight.dim() != 4 ||
      !x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat ||
      bias.scalar_type() != at::kFloat || weight.size(2) != 3 || weight.size(3) != 3 ||
      weight.size(1) != x.size(1) || bias.numel() != weight.size(0) || x.numel() == 0 ||
      x.size(2) + 2 * padding < 3 || x.size(3) + 2 * padding < 3)
    return {};
  try {
    const int64_t n = x.size(0);
    auto whole = kernels_for(key_of(x, weight, padding));
    if (!whole) return {};
    // The scratchpad grows with the images per run: the fewest groups of
    // images whose scratchpad fits the budget (one image at the least).
    int64_t part = n;
    if (scratchpad_budget > 0 && whole->scratchpad > scratchpad_budget && n > 1) {
      const double per_image = static_cast<double>(whole->scratchpad) / static_cast<double>(n);
      part = std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(scratchpad_budget) / per_image), 1, n);
      const int64_t parts = (n + part - 1) / part;
      part = (n + parts - 1) / parts;  // even groups
      Key key = key_of(x, weight, padding);
      for (int64_t count : {part, n % part}) {
        key[0] = count;
        if (count > 0 && !kernels_for(key)) return {};
      }
    }
    auto y = WinogradConvFunction::apply(x, weight, bias, padding, part);
    if (runs) *runs = (n + part - 1) / part;
    return y;
  } catch (const dnnl::error&) {
    return {};
  }
}

}  // namespace maskrcnn::ops
