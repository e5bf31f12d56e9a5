// libFuzzer entry point; MASKRCNN_FUZZ_TARGET names the function in
// targets/fuzz_targets.h that this executable drives.
#include "targets/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  maskrcnn::fuzz::MASKRCNN_FUZZ_TARGET(data, size);
  return 0;
}
