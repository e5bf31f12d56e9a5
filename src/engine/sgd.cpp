#include "engine/sgd.h"

#include "engine/adamw_update.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "maskrcnn/error.h"

namespace maskrcnn::engine {

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_) {
    auto& g = p.mutable_grad();
    if (g.defined()) g = at::Tensor();  // set_to_none, as torch >= 2 defaults to
  }
}

double Optimizer::clip_grad_norm(double max_norm) {
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

const at::Tensor& Optimizer::param(const std::string& name, const std::string& what) const {
  for (auto& [n, p] : params_)
    if (n == name) return p;
  throw Error(what + " for " + name + ", which is not a trainable parameter");
}

SGD::SGD(std::vector<std::pair<std::string, at::Tensor>> params, double momentum, double weight_decay)
    : Optimizer(std::move(params)), momentum_(momentum), weight_decay_(weight_decay) {}

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

void SGD::set_momentum_buffer(const std::string& name, const at::Tensor& buffer) {
  const auto& p = param(name, "momentum buffer");
  if (buffer.sizes() != p.sizes()) throw Error("momentum buffer for " + name + " has the wrong shape");
  buffers_[name] = buffer.to(p.device(), p.scalar_type()).clone();
}

std::vector<std::pair<std::string, at::Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, buf] : buffers_) out.emplace_back("momentum." + name, buf);
  return out;
}

void SGD::set_state(const std::string& key, const at::Tensor& value) {
  const std::string prefix = "momentum.";
  if (key.rfind(prefix, 0) != 0) throw Error("optimizer state '" + key + "' is not SGD's (--optimizer sgd)");
  set_momentum_buffer(key.substr(prefix.size()), value);
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, double weight_decay, double beta1,
             double beta2, double eps)
    : Optimizer(std::move(params)), weight_decay_(weight_decay), beta1_(beta1), beta2_(beta2), eps_(eps) {}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    const auto& grad = p.grad();
    if (!grad.defined()) continue;
    auto& m = moments_[name];
    if (!m.exp_avg.defined()) {
      m.exp_avg = at::zeros_like(p);
      m.exp_avg_sq = at::zeros_like(p);
    }
    ++m.step;
    const AdamWScalars scalars{lr,
                               weight_decay_,
                               beta1_,
                               beta2_,
                               eps_,
                               1 - std::pow(beta1_, static_cast<double>(m.step)),
                               1 - std::pow(beta2_, static_cast<double>(m.step))};
    if (adamw_update_fused_cpu(p, grad, m.exp_avg, m.exp_avg_sq, scalars)) continue;
    // Elsewhere (CUDA), torch.optim.AdamW's tensor operations.
    p.mul_(1 - lr * weight_decay_);
    m.exp_avg.mul_(beta1_).add_(grad, 1 - beta1_);
    m.exp_avg_sq.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
    auto denom = (m.exp_avg_sq.sqrt() / std::sqrt(scalars.bias_correction2)).add_(eps_);
    p.addcdiv_(m.exp_avg, denom, -lr / scalars.bias_correction1);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, m] : moments_) {
    out.emplace_back("exp_avg." + name, m.exp_avg);
    out.emplace_back("exp_avg_sq." + name, m.exp_avg_sq);
    out.emplace_back("step." + name, at::scalar_tensor(m.step, at::kLong));
  }
  return out;
}

void AdamW::set_state(const std::string& key, const at::Tensor& value) {
  for (const std::string kind : {"exp_avg_sq.", "exp_avg.", "step."}) {
    if (key.rfind(kind, 0) != 0) continue;
    const std::string name = key.substr(kind.size());
    const auto& p = param(name, "optimizer state " + kind);
    auto& m = moments_[name];
    if (kind == "step.") {
      m.step = value.item<int64_t>();
      return;
    }
    if (value.sizes() != p.sizes()) throw Error("optimizer state " + key + " has the wrong shape");
    (kind == "exp_avg." ? m.exp_avg : m.exp_avg_sq) = value.to(p.device(), p.scalar_type()).clone();
    return;
  }
  throw Error("optimizer state '" + key + "' is not AdamW's (--optimizer adamw)");
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          std::vector<std::pair<std::string, at::Tensor>> params, double momentum,
                                          double weight_decay) {
  if (name == "sgd") return std::make_unique<SGD>(std::move(params), momentum, weight_decay);
  if (name == "adamw") return std::make_unique<AdamW>(std::move(params), weight_decay);
  throw Error("unknown optimizer '" + name + "' (expected sgd or adamw)");
}

}  // namespace maskrcnn::engine
