#include "targets/fuzz_targets.h"

namespace maskrcnn::fuzz {

const std::vector<Target>& all_targets() {
  static const std::vector<Target> targets{{"checkpoint", checkpoint},
                                           {"coco_annotations", coco_annotations},
                                           {"coco_results", coco_results},
                                           {"rle", rle},
                                           {"image", image}};
  return targets;
}

}  // namespace maskrcnn::fuzz
