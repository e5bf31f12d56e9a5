#include "engine/sgd.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "maskrcnn/error.h"

namespace maskrcnn::engine {

SGD::SGD(std::vector<std::pair<std::string, at::Tensor>> params, double momentum,
         double weight_decay)
    : params_(std::move(params)), momentum_(momentum), weight_decay_(weight_decay) {}

void SGD::zero_grad() {
  for (auto& [name, p] : params_) {
    auto& g = p.mutable_grad();
    if (g.defined()) g = at::Tensor();  // set_to_none, as torch >= 2 defaults to
  }
}

void SGD::step(double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    const auto& grad = p.grad();
    if (!grad.defined()) continue;
    auto d_p = weight_decay_ != 0 ? grad.add(p, weight_decay_) : grad;
    if (momentum_ != 0) {
      auto it = buffers_.find(name);
      if (it == buffers_.end()) {
        it = buffers_.emplace(name, d_p.clone()).first;
      } else {
        it->second.mul_(momentum_).add_(d_p);
      }
      d_p = it->second;
    }
    p.add_(d_p, -lr);
  }
}

double SGD::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (auto& [name, p] : params_)
    if (p.grad().defined()) norms.push_back(p.grad().norm().unsqueeze(0));
  if (norms.empty()) return 0;
  const double total = at::cat(norms).norm().item<double>();
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (auto& [name, p] : params_)
      if (p.grad().defined()) p.mutable_grad().mul_(coef);
  return total;
}

void SGD::set_momentum_buffer(const std::string& name, const at::Tensor& buffer) {
  for (auto& [n, p] : params_) {
    if (n != name) continue;
    if (buffer.sizes() != p.sizes())
      throw Error("momentum buffer for " + name + " has the wrong shape");
    buffers_[name] = buffer.to(p.device(), p.scalar_type()).clone();
    return;
  }
  throw Error("momentum buffer for " + name + ", which is not a trainable parameter");
}

}  // namespace maskrcnn::engine
