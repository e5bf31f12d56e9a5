#include <fmt/core.h>

#include "commands.h"
#include "maskrcnn/model.h"

namespace maskrcnn::cli {

void add_conv_option(CLI::App* cmd, std::string& algorithm) {
  cmd->add_option("--conv", algorithm,
                  "3x3 convolutions at inference: winograd (oneDNN, ~2x faster, outputs within ~1e-5 "
                  "relative) or direct (LibTorch's, as torchvision)")
      ->check(CLI::IsMember({"winograd", "direct"}))
      ->capture_default_str();
}

void apply_conv_option(const std::string& algorithm) {
  if (algorithm == "winograd" && !winograd_available()) {
    fmt::print(stderr, "maskrcnn: note: Winograd is not available here (built without oneDNN, or a CPU "
                       "without AVX-512); using direct convolutions\n");
  }
  set_conv_algorithm(algorithm == "winograd" ? ConvAlgorithm::Winograd : ConvAlgorithm::Direct);
}

}  // namespace maskrcnn::cli
