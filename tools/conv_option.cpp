#include <fmt/core.h>

#include "commands.h"
#include "maskrcnn/model.h"

namespace maskrcnn::cli {

void add_conv_options(CLI::App* cmd, ConvFlags& flags) {
  flags.algorithm_option = cmd->add_option("--conv", flags.algorithm,
                  "3x3 convolutions at inference: winograd (oneDNN, ~2x faster, outputs within ~1e-5 "
                  "relative) or direct (the algorithm torchvision's convolutions run)")
      ->check(CLI::IsMember({"winograd", "direct"}))
      ->capture_default_str();
  cmd->add_option("--precision", flags.precision,
                  "Convolution arithmetic: f32 (as torchvision) or bf16 (bf16 inputs and weights, f32 "
                  "accumulation, also for the box head's fc6/fc7: faster where the CPU has bf16, scores move by ~1e-2)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
}

void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device,
                  "Where the model runs: cpu, or cuda / cuda:N (builds with MASKRCNN_WITH_CUDA)")
      ->capture_default_str();
}

void apply_conv_options(const ConvFlags& flags) {
  // The default asks for Winograd where there is one: a note only when asked for.
  const bool asked = flags.algorithm_option != nullptr && flags.algorithm_option->count() > 0;
  if (asked && flags.algorithm == "winograd" && !winograd_available() && flags.precision == "f32") {
    fmt::print(stderr, "maskrcnn: note: Winograd is not available here (built without oneDNN, or a CPU "
                       "without AVX-512); using direct convolutions\n");
  }
  if (flags.precision == "bf16" && !bf16_available()) {
    fmt::print(stderr, "maskrcnn: note: bf16 convolutions are not available here (built without oneDNN, or a "
                       "CPU without AVX-512); using f32\n");
  }
  set_conv_algorithm(flags.algorithm == "winograd" ? ConvAlgorithm::Winograd : ConvAlgorithm::Direct);
  set_inference_precision(flags.precision == "bf16" ? Precision::BF16 : Precision::F32);
}

}  // namespace maskrcnn::cli
