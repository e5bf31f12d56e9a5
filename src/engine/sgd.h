// The optimizers of `maskrcnn train`, exactly torch.optim's updates, with
// their state as named tensors so that checkpoints can hold it and a resumed
// run continues bit for bit:
//   SGD    torch.optim.SGD (momentum, weight decay; dampening 0, no Nesterov)
//   AdamW  torch.optim.AdamW (decoupled weight decay, bias-corrected moments)
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace maskrcnn::engine {

class Optimizer {
 public:
  explicit Optimizer(std::vector<std::pair<std::string, at::Tensor>> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;
  void zero_grad();
  // One update with learning rate lr; parameters without a gradient stay.
  virtual void step(double lr) = 0;
  // torch.nn.utils.clip_grad_norm_: scales all gradients so that their joint
  // L2 norm is at most max_norm. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  // What a checkpoint keeps: "<kind>.<parameter name>" -> tensor.
  virtual std::vector<std::pair<std::string, at::Tensor>> state() const = 0;
  // Restores one entry of state(); throws maskrcnn::Error naming it when it
  // is not this optimizer's or has the wrong shape.
  virtual void set_state(const std::string& key, const at::Tensor& value) = 0;

 protected:
  // The parameter `name` (throws naming `what` when there is none).
  const at::Tensor& param(const std::string& name, const std::string& what) const;
  std::vector<std::pair<std::string, at::Tensor>> params_;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<std::pair<std::string, at::Tensor>> params, double momentum, double weight_decay);
  // p <- p - lr * buf, buf <- momentum * buf + (grad + weight_decay * p)
  void step(double lr) override;
  // name -> momentum buffer (only parameters that have taken a step).
  const std::map<std::string, at::Tensor>& momentum_buffers() const { return buffers_; }
  void set_momentum_buffer(const std::string& name, const at::Tensor& buffer);
  std::vector<std::pair<std::string, at::Tensor>> state() const override;  // "momentum.<name>"
  void set_state(const std::string& key, const at::Tensor& value) override;

 private:
  std::map<std::string, at::Tensor> buffers_;
  double momentum_, weight_decay_;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, double weight_decay, double beta1 = 0.9,
        double beta2 = 0.999, double eps = 1e-8);
  // torch.optim.AdamW (amsgrad off): p *= 1 - lr * wd; m, v moving averages
  // of g and g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
  void step(double lr) override;
  // "exp_avg.<name>", "exp_avg_sq.<name>", "step.<name>" (parameters that have taken a step).
  std::vector<std::pair<std::string, at::Tensor>> state() const override;
  void set_state(const std::string& key, const at::Tensor& value) override;

 private:
  struct Moments {
    at::Tensor exp_avg, exp_avg_sq;
    int64_t step = 0;
  };
  std::map<std::string, Moments> moments_;
  double weight_decay_, beta1_, beta2_, eps_;
};

// "sgd" (momentum, weight_decay) or "adamw" (weight_decay; torch's betas and
// eps). Throws maskrcnn::Error on another name.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          std::vector<std::pair<std::string, at::Tensor>> params, double momentum,
                                          double weight_decay);

}  // namespace maskrcnn::engine
