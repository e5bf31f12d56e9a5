// Checkpoint load time (plain timing main; needs no Google Benchmark).
//
//   bench_checkpoint_load [FILE.pth] [--reps N]
//
// Times load_state_dict on FILE (default: a Mask R-CNN sized state dict of
// ~170 MB, 44M random floats in the model's tensor count, written to a
// temporary file first). Prints each run and the median.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "maskrcnn/checkpoint.h"

int main(int argc, char** argv) {
  std::string file;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else file = a;
  }
  std::string made;
  if (file.empty()) {
    made = (std::filesystem::temp_directory_path() / "bench_checkpoint_load.pth").string();
    maskrcnn::StateDict sd;
    // 340 tensors like ResNet-50-FPN Mask R-CNN: a few large ones, many small.
    for (int i = 0; i < 340; ++i) {
      const int64_t n = i % 10 == 0 ? 1'000'000 : 33'000;
      sd.emplace_back("layer" + std::to_string(i) + ".weight", at::randn({n}));
    }
    maskrcnn::save_state_dict(sd, made);
    file = made;
  }
  std::vector<double> secs;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const maskrcnn::StateDict sd = maskrcnn::load_state_dict(file);
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    size_t bytes = 0;
    for (const auto& kv : sd) bytes += kv.second.numel() * kv.second.element_size();
    std::printf("load_state_dict(%s): %zu tensors, %.1f MB in %.3f s\n", file.c_str(), sd.size(), bytes / 1e6,
                secs.back());
  }
  std::sort(secs.begin(), secs.end());
  std::printf("median %.3f s over %d runs\n", secs[secs.size() / 2], reps);
  if (!made.empty()) std::filesystem::remove(made);
}
