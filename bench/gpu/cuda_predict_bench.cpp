// Inference time on a CUDA GPU, ours: MaskRCNN::predict on one image, the
// device synchronised after each call (bench/compare_torchvision_cuda.sh runs
// torchvision on the same weights, image and GPU beside it).
//
//   cuda_predict_bench WEIGHTS.pth IMAGE.pt REPS
// IMAGE.pt: a torch.save'd dict whose "image" is uint8 [3, H, W] (the CUDA
// test fixtures' ref/*.pt). Prints: median ms, min ms, detections.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/model.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s WEIGHTS.pth IMAGE.pt REPS\n", argv[0]);
    return 2;
  }
  try {
    if (!torch::cuda::is_available()) throw std::runtime_error("no CUDA device");
    const at::Device gpu(at::kCUDA, 0);
    auto model = maskrcnn::load_model(maskrcnn::load_state_dict(argv[1]), {}, argv[1]);
    model.to(gpu);
    at::Tensor image;
    for (auto& kv : maskrcnn::load_state_dict(argv[2]))
      if (kv.first == "image") image = kv.second;
    if (!image.defined()) throw std::runtime_error(std::string(argv[2]) + ": no \"image\" entry");
    image = image.to(at::kFloat).div(255).to(gpu);
    const int reps = std::max(1, std::atoi(argv[3]));
    int64_t n = 0;
    auto once = [&] {
      const auto t0 = std::chrono::steady_clock::now();
      auto dets = model.predict({image});
      torch::cuda::synchronize();
      n = dets.at(0).size();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    for (int i = 0; i < 3; ++i) once();  // cuDNN algorithm choice, allocator warm-up
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) ms.push_back(once());
    std::sort(ms.begin(), ms.end());
    std::printf("%.2f\t%.2f\t%ld\n", ms[ms.size() / 2], ms.front(), static_cast<long>(n));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_predict_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
