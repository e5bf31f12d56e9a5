#include "engine/trainer_loop.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "data/loader.h"

namespace maskrcnn::engine {

TrainerBase& HookBase::trainer() const {
  if (!trainer_) throw Error("a training hook used before it was registered");
  return *trainer_;
}

void HookBase::request_stop() const { trainer().request_stop(); }

void TrainerBase::adopt(std::unique_ptr<HookBase> hook) {
  if (!hook) throw Error("register_hook: no hook");
  if (hook->trainer_) throw Error("register_hook: the hook is registered already");
  hook->trainer_ = this;
  hooks_.push_back(std::move(hook));
}

void TrainerBase::run(int64_t start_iteration, int64_t max_iteration) {
  start_iteration_ = iteration_ = start_iteration;
  max_iteration_ = max_iteration;
  stop_requested_ = false;
  for (auto& h : hooks_) h->before_train();
  while (iteration_ < max_iteration_ && !stop_requested_) {
    for (auto& h : hooks_) h->before_step(iteration_);
    if (stop_requested_) break;
    const StepResult step = run_step(iteration_);
    ++iteration_;
    for (auto& h : hooks_) h->after_step(step);
  }
  for (auto& h : hooks_) h->after_train();
}

void TrainerBase::set_max_iteration(int64_t max_iteration) {
  max_iteration_ = std::max(max_iteration, iteration_ + 1);
}

Trainer::Trainer(MaskRCNN& model, Optimizer& optimizer, data::TrainLoader& loader, ProcessGroup* group,
                 GradientAverager* averager, Options options)
    : model_(model), optimizer_(optimizer), loader_(loader), group_(group), averager_(averager),
      options_(std::move(options)) {
  if (!options_.lr) throw Error("Trainer: no learning-rate schedule");
}

at::Tensor Trainer::checked_total(int64_t iteration, const LossTerms& losses) {
  at::Tensor total;
  std::string bad_term;
  double bad_value = 0;
  for (const auto& [name, value] : losses) {
    const double v = value.item<double>();
    if (!std::isfinite(v) && bad_term.empty()) {
      bad_term = name;
      bad_value = v;
    }
    total = total.defined() ? total + value : value;
  }
  // A NaN on any rank stops every rank at the same iteration.
  const bool all_finite = group_ ? std::isfinite(group_->allreduce_scalar(bad_term.empty() ? 0.0 : std::nan("")))
                                 : bad_term.empty();
  if (!all_finite) {
    const std::string what = bad_term.empty() ? std::string("the loss of another process")
                                              : bad_term + " is " + (std::isnan(bad_value) ? "NaN" : "infinite");
    throw NonFiniteLoss("iteration " + std::to_string(iteration) + ": " + what);
  }
  return total;
}

StepResult Trainer::run_step(int64_t iteration) {
  StepResult r;
  r.iteration = iteration;
  r.lr = options_.lr(iteration, std::max(max_iteration(), iteration + 1));  // a step outside run() too
  auto batch = loader_.batch(iteration);
  std::vector<at::Tensor> images;
  std::vector<TrainingTarget> targets;
  for (auto& s : batch) {
    images.push_back(s.image);
    targets.push_back(s.target);
  }
  auto losses = model_.losses(images, targets);
  if (options_.loss_filter) options_.loss_filter(iteration, losses);
  at::Tensor total = checked_total(iteration, losses);
  for (const auto& [name, value] : losses) r.losses.emplace_back(name, value.item<double>());

  optimizer_.zero_grad();
  if (averager_) averager_->prepare();
  total.backward();
  if (averager_) averager_->finish();
  r.total_loss = total.item<double>();
  if (options_.clip_grad_norm > 0) r.grad_norm = optimizer_.clip_grad_norm(options_.clip_grad_norm);
  optimizer_.step(r.lr);
  return r;
}

}  // namespace maskrcnn::engine
