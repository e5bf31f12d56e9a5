// engine-internal entry to `maskrcnn train`: maskrcnn::train (the public API)
// plus drills for tests of the failure paths, which the public options do not
// carry. The CLI reaches the drills through a flag hidden from --help.
#pragma once
#include <cstdint>

#include "maskrcnn/trainer.h"

namespace maskrcnn::engine {

struct TrainDrills {
  int64_t inject_nan_at = -1;  // >= 0: loss_mask of this iteration becomes NaN
};

// maskrcnn::train(options) is run_training(options, {}).
TrainReport run_training(const TrainOptions& options, const TrainDrills& drills);

}  // namespace maskrcnn::engine
