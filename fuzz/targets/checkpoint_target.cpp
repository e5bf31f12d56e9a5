#include "io/checkpoint/torch_file.h"
#include "maskrcnn/error.h"
#include "targets/fuzz_targets.h"

namespace maskrcnn::fuzz {

void checkpoint(const uint8_t* data, size_t size) {
  try {
    auto value = ckpt::load_torch_bytes(data, size);
    auto state = ckpt::state_dict_from(value);
    for (const auto& kv : state) {
      // Every tensor must be fully backed by real memory: touch its last element.
      const auto& t = kv.second;
      if (t.numel() > 0) (void)t.reshape(-1)[t.numel() - 1].item<double>();
    }
  } catch (const Error&) {
  }
}

}  // namespace maskrcnn::fuzz
