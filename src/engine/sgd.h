// SGD with momentum and weight decay, exactly torch.optim.SGD's update
// (dampening 0, no Nesterov), with its state as named tensors so that
// checkpoints can hold it and a resumed run continues bit for bit.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace maskrcnn::engine {

class SGD {
 public:
  SGD(std::vector<std::pair<std::string, at::Tensor>> params, double momentum, double weight_decay);
  void zero_grad();
  // p <- p - lr * buf, buf <- momentum * buf + (grad + weight_decay * p)
  void step(double lr);
  // torch.nn.utils.clip_grad_norm_: scales all gradients so that their joint
  // L2 norm is at most max_norm. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  // name -> momentum buffer (only parameters that have taken a step).
  const std::map<std::string, at::Tensor>& momentum_buffers() const { return buffers_; }
  void set_momentum_buffer(const std::string& name, const at::Tensor& buffer);

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::map<std::string, at::Tensor> buffers_;
  double momentum_, weight_decay_;
};

}  // namespace maskrcnn::engine
