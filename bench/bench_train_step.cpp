// maskrcnn-cpp side of bench/compare_train_iteration.sh: median seconds of one
// SGD iteration (losses, backward, step) on a saved batch.
//   bench_train_step WEIGHTS BATCH.pt REPS [THREADS [ROIS_PER_IMAGE PROPOSALS_PER_IMAGE]]
// (the last two as `maskrcnn train --rois-per-image/--proposals-per-image`).
// MASKRCNN_TRACE=FILE writes the last iteration's operators as a Chrome trace
// (LibTorch's autograd profiler), to see where an iteration's time goes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdlib>
#include <memory>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/sgd.h"
#include "maskrcnn/maskrcnn.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: bench_train_step WEIGHTS BATCH.pt REPS [THREADS [ROIS PROPOSALS]]\n");
    return 2;
  }
  try {
    at::set_num_threads(argc > 4 ? std::stoi(argv[4]) : 2);
    // MASKRCNN_SCRATCHPAD_MB: Winograd's scratchpad budget (default 128; 0 no limit).
    if (const char* mb = std::getenv("MASKRCNN_SCRATCHPAD_MB"))
      maskrcnn::set_winograd_scratchpad_budget(std::stoull(mb) << 20);
    maskrcnn::ModelOverrides overrides;
    if (argc > 6) {
      overrides.box_batch_size_per_image = std::stoi(argv[5]);
      overrides.rpn_top_n_train = std::stoi(argv[6]);
    }
    auto model = maskrcnn::load_model(argv[1], overrides);
    model.train(true);
    std::map<std::string, at::Tensor> batch;
    for (auto& [k, v] : maskrcnn::load_state_dict(argv[2])) batch[k] = v;
    std::vector<at::Tensor> images;
    std::vector<maskrcnn::TrainingTarget> targets;
    for (int k = 0; batch.count("image" + std::to_string(k)); ++k) {
      const std::string s = std::to_string(k);
      images.push_back(batch["image" + s]);
      targets.push_back({batch["boxes" + s], batch["labels" + s], batch["masks" + s],
                         static_cast<uint64_t>(k)});
    }
    maskrcnn::engine::SGD sgd(model.trainable_parameters(), 0.9, 1e-4);
    const int reps = std::stoi(argv[3]);
    std::vector<double> times;
    for (int r = 0; r <= reps; ++r) {
      const char* trace = std::getenv("MASKRCNN_TRACE");
      std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
      if (trace != nullptr && r == reps) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(trace);
      auto t0 = std::chrono::steady_clock::now();
      auto losses = model.losses(images, targets);
      at::Tensor total = losses[0].second;
      for (size_t i = 1; i < losses.size(); ++i) total = total + losses[i].second;
      sgd.zero_grad();
      total.backward();
      sgd.step(0.001);
      if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    std::printf("%.3f\n", times[times.size() / 2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
