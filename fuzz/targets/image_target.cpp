#include <ATen/core/Tensor.h>

#include <cstdlib>

#include "maskrcnn/error.h"
#include "maskrcnn/image.h"
#include "targets/fuzz_targets.h"

namespace maskrcnn::fuzz {

void image(const uint8_t* data, size_t size) {
  ImageReadOptions options;
  options.max_pixels = int64_t{1} << 22;
  try {
    at::Tensor img = decode_image(data, size, "<fuzz>", options);
    if (img.dim() != 3 || img.size(0) != 3 || img.size(1) * img.size(2) > options.max_pixels) std::abort();
  } catch (const Error&) {
  }
}

}  // namespace maskrcnn::fuzz
