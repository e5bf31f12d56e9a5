// The pieces of `maskrcnn train` around the loop: building the model to train,
// the learning-rate schedule, and training checkpoints (weights + optimizer
// state + iteration in one torch-zip state dict, written atomically).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/sgd.h"
#include "maskrcnn/model.h"
#include "maskrcnn/trainer.h"

namespace maskrcnn::engine {

// Random init, or the weights of options.weights (load_model) with fresh
// predictors when the class count differs (fine-tuning). Seeds torch's
// generator first. class_names: the data set's (index = label).
MaskRCNN build_training_model(const TrainOptions& options, int num_classes,
                              std::vector<std::string> class_names = {});

// torchvision's anchor sizes (32..512) times min_size / 512, clamped to
// [0.25, 1]: objects in small images are small.
std::vector<double> scaled_anchor_sizes(int min_size);

// Linear warm-up from warmup_factor, then options.lr_schedule: cosine to 0 at
// total_iterations, or torchvision's reference steps (x0.1 at each lr_steps).
double learning_rate(const TrainOptions& options, int64_t iteration, int64_t total_iterations);

// OUTPUT/checkpoint.pth (+ checkpoint.json with the model's config).
std::string checkpoint_path(const std::string& output_dir);
void save_training_checkpoint(const std::string& path, const MaskRCNN& model, const Optimizer& optimizer,
                              int64_t next_iteration);
// Rebuilds the model from checkpoint.json and restores weights and momentum;
// returns the iteration to continue from.
struct ResumedState {
  MaskRCNN model;
  int64_t next_iteration;
  std::vector<std::pair<std::string, at::Tensor>> optimizer_state;  // Optimizer::state()'s
};
ResumedState load_training_checkpoint(const std::string& path, const TrainOptions& options);

}  // namespace maskrcnn::engine
