// engine::Trainer's step on a real, tiny setup (two 64-pixel synthetic
// images, a ResNet-18 Mask R-CNN with few RoIs), and the checkpoint hook on
// its model: a step reports torchvision's loss terms and moves the weights; a
// non-finite loss stops the run before the update; checkpoints come at their
// iterations; non-finite weights are never saved.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "data/coco_detection.h"
#include "data/loader.h"
#include "data/shapes.h"
#include "support/temp_dir.h"
#include "engine/hooks.h"
#include "engine/train_setup.h"
#include "engine/trainer_loop.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/model_info.h"
#include "maskrcnn/trainer.h"

namespace fs = std::filesystem;
using namespace maskrcnn;
using namespace maskrcnn::engine;
using maskrcnn::testing::TempDir;

namespace {

class TinyTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.emplace("tiny_training");
    data::ShapesOptions so;
    so.output_dir = *dir_ / "data";
    so.num_images = 2;
    so.size = 64;
    so.seed = 1;
    auto summary = data::make_shapes_dataset(so);
    dataset_.emplace(summary.annotations_path, summary.images_dir);
    o_.backbone_depth = 18;
    o_.min_size = o_.max_size = 64;
    o_.rois_per_image = 16;
    o_.proposals_per_image = 50;
    o_.lr = 0.01;
    o_.weight_decay = 1e-4;
    o_.warmup_iters = 2;
    o_.seed = 5;
    model_.emplace(build_training_model(o_, 4, {"bg", "a", "b", "c"}));
    model_->train(true);
    sgd_.emplace(model_->trainable_parameters(), o_.momentum, o_.weight_decay);
    data::LoaderOptions lo;
    lo.batch_size = 1;
    lo.num_workers = 0;
    lo.seed = 5;
    loader_ = std::make_unique<data::TrainLoader>(*dataset_, lo);
  }
  void TearDown() override {
    loader_.reset();
    dir_.reset();
  }

  std::unique_ptr<Trainer> make_trainer(double clip, int64_t total, Trainer::LossFilter filter = {}) {
    Trainer::Options to;
    to.lr = [this, total](int64_t it, int64_t) { return learning_rate(o_, it, total); };
    to.clip_grad_norm = clip;
    to.loss_filter = std::move(filter);
    return std::make_unique<Trainer>(*model_, *sgd_, *loader_, nullptr, nullptr, std::move(to));
  }
  std::map<std::string, at::Tensor> snapshot() const {
    std::map<std::string, at::Tensor> out;
    for (auto& [name, p] : sgd_->params()) out[name] = p.detach().clone();
    return out;
  }
  bool unchanged_since(const std::map<std::string, at::Tensor>& before) const {
    for (auto& [name, p] : sgd_->params())
      if (!p.detach().equal(before.at(name))) return false;
    return true;
  }

  std::optional<TempDir> dir_;
  TrainOptions o_;
  std::optional<data::CocoDetectionDataset> dataset_;
  std::optional<MaskRCNN> model_;
  std::optional<SGD> sgd_;
  std::unique_ptr<data::TrainLoader> loader_;
};

TEST_F(TinyTraining, AStepReportsTheLossTermsAndMovesTheWeights) {
  auto trainer = make_trainer(5.0, 10);
  const auto before = snapshot();
  const StepResult r = trainer->run_step(0);
  EXPECT_EQ(r.iteration, 0);
  std::vector<std::string> names;
  double sum = 0;
  for (auto& [name, v] : r.losses) {
    names.push_back(name);
    EXPECT_TRUE(std::isfinite(v)) << name;
    sum += v;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                                             "loss_rpn_box_reg"}));
  EXPECT_NEAR(r.total_loss, sum, 1e-5 * std::abs(sum));
  EXPECT_GT(r.total_loss, 0);
  EXPECT_DOUBLE_EQ(r.lr, learning_rate(o_, 0, 10));
  ASSERT_TRUE(r.grad_norm.has_value());
  EXPECT_GT(*r.grad_norm, 0);
  EXPECT_FALSE(unchanged_since(before));
  EXPECT_FALSE(sgd_->momentum_buffers().empty());

  // Without clipping there is no norm to report.
  auto unclipped = make_trainer(0.0, 10);
  EXPECT_FALSE(unclipped->run_step(1).grad_norm.has_value());
}

// Snapshots the weights after each step.
class WeightsAfterEachStep : public HookBase {
 public:
  explicit WeightsAfterEachStep(const SGD& sgd) : sgd_(sgd) {}
  void after_step(const StepResult&) override {
    last.clear();
    for (auto& [name, p] : sgd_.params()) last[name] = p.detach().clone();
  }
  void after_train() override { after_train_called = true; }
  std::map<std::string, at::Tensor> last;
  bool after_train_called = false;

 private:
  const SGD& sgd_;
};

TEST_F(TinyTraining, ANonFiniteLossStopsTheRunBeforeTheUpdate) {
  auto trainer = make_trainer(0.0, 3, [](int64_t it, LossTerms& losses) {
    if (it != 1) return;
    for (auto& [name, v] : losses)
      if (name == "loss_mask") v = v * std::nan("");
  });
  auto& weights = trainer->register_hook(std::make_unique<WeightsAfterEachStep>(*sgd_));
  try {
    trainer->run(0, 3);
    FAIL() << "a NaN loss did not stop the run";
  } catch (const NonFiniteLoss& e) {
    EXPECT_STREQ(e.what(), "iteration 1: loss_mask is NaN");
  }
  EXPECT_EQ(trainer->iteration(), 1);
  EXPECT_FALSE(weights.after_train_called);
  ASSERT_FALSE(weights.last.empty());
  EXPECT_TRUE(unchanged_since(weights.last)) << "the failed step changed the weights";
}

TEST_F(TinyTraining, CheckpointsComeEveryNStepsAndAtTheEnd) {
  const std::string ckpt = checkpoint_path(*dir_ / "out"), final_weights = *dir_ / "out/model_final.pth";
  fs::create_directories(*dir_ / "out");
  auto trainer = make_trainer(0.0, 3);
  trainer->register_hook(std::make_unique<CheckpointHook>(*model_, *sgd_, ckpt, final_weights, 2, true));
  // Whether the checkpoint exists after each step (the spy runs after the checkpoint hook).
  class Spy : public HookBase {
   public:
    explicit Spy(std::string path) : path_(std::move(path)) {}
    void after_step(const StepResult&) override { seen.push_back(fs::exists(path_)); }
    std::vector<bool> seen;

   private:
    std::string path_;
  };
  auto& spy = trainer->register_hook(std::make_unique<Spy>(ckpt));
  trainer->run(0, 3);
  EXPECT_EQ(spy.seen, (std::vector<bool>{false, true, true}));
  // The end of the run saved again, with the next iteration 3, and the final weights.
  auto state = load_state_dict(ckpt);
  ASSERT_EQ(state.back().first, "meta.iteration");
  EXPECT_EQ(state.back().second.item<int64_t>(), 3);
  EXPECT_TRUE(fs::exists(final_weights));
  auto info = read_model_info(final_weights);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->class_names, (std::vector<std::string>{"bg", "a", "b", "c"}));
}

TEST_F(TinyTraining, NonFiniteWeightsAreNotSaved) {
  const std::string ckpt = checkpoint_path(*dir_ / "out");
  fs::create_directories(*dir_ / "out");
  auto trainer = make_trainer(0.0, 0);
  trainer->register_hook(std::make_unique<CheckpointHook>(*model_, *sgd_, ckpt, *dir_ / "out/model_final.pth", 1, true));
  const std::string bad = sgd_->params().back().first;
  {
    at::NoGradGuard no_grad;
    sgd_->params().back().second.view(-1)[0].fill_(std::nan(""));
  }
  try {
    trainer->run(0, 0);  // no steps: after_train saves
    FAIL() << "saved a NaN weight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter " + bad + " is not finite; not saving"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(ckpt));
  EXPECT_FALSE(fs::exists(*dir_ / "out/model_final.pth"));
}

TEST_F(TinyTraining, OnlyTheMainProcessSaves) {
  const std::string ckpt = checkpoint_path(*dir_ / "out");
  fs::create_directories(*dir_ / "out");
  auto trainer = make_trainer(0.0, 0);
  trainer->register_hook(std::make_unique<CheckpointHook>(*model_, *sgd_, ckpt, *dir_ / "out/model_final.pth", 1, false));
  trainer->run(0, 0);
  EXPECT_FALSE(fs::exists(ckpt));
  EXPECT_FALSE(fs::exists(*dir_ / "out/model_final.pth"));
}

}  // namespace

// Checked before anything is read: a zero window would divide by zero.
TEST(TrainOptions, LogEveryBelowOneIsAClearError) {
  TrainOptions o;
  o.train_annotations = "annotations.json";
  o.train_images = "images";
  o.log_every = 0;
  try {
    maskrcnn::train(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--log-every must be >= 1"), std::string::npos) << e.what();
  }
}
