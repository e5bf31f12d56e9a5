// The training loop, split as detectron2 splits it: TrainerBase runs
// iterations and calls hooks around them; Trainer's run_step is one optimizer step
// of Mask R-CNN (data -> losses -> backward -> update). Everything else a run
// does (metrics, checkpoints, validation, time limit, progress bar) is a hook
// (engine/hooks.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/distributed.h"
#include "engine/sgd.h"
#include "maskrcnn/error.h"
#include "maskrcnn/model.h"

namespace maskrcnn::data {
class TrainLoader;
}

namespace maskrcnn::engine {

// The max_iteration of a run whose length a time budget decides (TimeLimitHook
// plans it once it has measured the speed).
constexpr int64_t kUnknownLength = int64_t{1} << 40;

// What one training step did.
struct StepResult {
  int64_t iteration = 0;                              // the step's index: iteration + 1 steps are done
  std::vector<std::pair<std::string, double>> losses;  // each loss term, in the model's order
  double total_loss = 0;                              // their sum (as the tensor summed them)
  double lr = 0;                                      // the learning rate of the update
  std::optional<double> grad_norm;                    // before clipping; only with clipping on
};

// A loss term was NaN or infinite on this or another rank; what() is
// "iteration N: loss_mask is NaN" or "iteration N: the loss of another process".
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};

class TrainerBase;

// Called by TrainerBase::run in the order the hooks were registered.
class HookBase {
 public:
  virtual ~HookBase() = default;
  virtual void before_train() {}
  // Before step `iteration`; request_stop() here skips the step and ends the run.
  virtual void before_step(int64_t iteration) { (void)iteration; }
  virtual void after_step(const StepResult& step) { (void)step; }
  // After the last step, also when a hook asked to stop; not after an exception.
  virtual void after_train() {}

 protected:
  TrainerBase& trainer() const;  // the trainer this hook is registered with
  void request_stop() const;     // the loop ends after the current round of hooks

 private:
  friend class TrainerBase;
  TrainerBase* trainer_ = nullptr;
};

class TrainerBase {
 public:
  TrainerBase() = default;
  virtual ~TrainerBase() = default;
  TrainerBase(const TrainerBase&) = delete;
  TrainerBase& operator=(const TrainerBase&) = delete;

  // The trainer owns its hooks; the reference stays valid as long as it lives.
  template <class Hook>
  Hook& register_hook(std::unique_ptr<Hook> hook) {
    Hook& ref = *hook;
    adopt(std::move(hook));
    return ref;
  }

  // Steps start..max_iteration-1, each between before_step and after_step
  // hooks, until done or a hook requests a stop. An exception from a step or a
  // hook propagates at once: after_train is not called (a failed run does not
  // save what it has).
  void run(int64_t start_iteration, int64_t max_iteration);
  virtual StepResult run_step(int64_t iteration) = 0;

  int64_t iteration() const { return iteration_; }  // steps done = the next step's index
  int64_t start_iteration() const { return start_iteration_; }
  int64_t max_iteration() const { return max_iteration_; }
  // The run's length, changed while it runs (a time budget's plan). Not below
  // the steps done + 1.
  void set_max_iteration(int64_t max_iteration);
  void request_stop() { stop_requested_ = true; }
  bool stop_requested() const { return stop_requested_; }

 private:
  void adopt(std::unique_ptr<HookBase> hook);

  std::vector<std::unique_ptr<HookBase>> hooks_;
  int64_t iteration_ = 0, start_iteration_ = 0, max_iteration_ = 0;
  bool stop_requested_ = false;
};

// SGD or AdamW on Mask R-CNN's losses, data parallel when given a process group and a
// gradient averager. Holds references: the model, optimizer, loader, group and
// averager must outlive it.
class Trainer : public TrainerBase {
 public:
  // The lr of a step, given the run's length as planned at that step.
  using LrSchedule = std::function<double(int64_t iteration, int64_t max_iteration)>;
  // Sees (and may change) a step's loss terms before they are checked.
  using LossFilter = std::function<void(int64_t iteration, LossTerms& losses)>;
  struct Options {
    LrSchedule lr;
    double clip_grad_norm = 0;  // > 0: clip the gradients' joint L2 norm
    LossFilter loss_filter;     // optional
  };

  Trainer(MaskRCNN& model, Optimizer& optimizer, data::TrainLoader& loader, ProcessGroup* group,
          GradientAverager* averager, Options options);

  // Loads the batch of `iteration`, computes the losses, stops every rank with
  // NonFiniteLoss if any rank has a non-finite term, then zero_grad, backward
  // (gradients averaged over ranks), optional clipping and the optimizer's update.
  StepResult run_step(int64_t iteration) override;

  MaskRCNN& model() { return model_; }
  Optimizer& optimizer() { return optimizer_; }
  ProcessGroup* group() { return group_; }
  GradientAverager* averager() { return averager_; }

 private:
  // The sum of the terms; throws NonFiniteLoss unless every rank's are finite.
  at::Tensor checked_total(int64_t iteration, const LossTerms& losses);

  MaskRCNN& model_;
  Optimizer& optimizer_;
  data::TrainLoader& loader_;
  ProcessGroup* group_;
  GradientAverager* averager_;
  Options options_;
};

}  // namespace maskrcnn::engine
