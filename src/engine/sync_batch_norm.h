// --sync-bn: the backbone's BatchNorm2d layers (ResNet body and FPN) take
// their training statistics from every process of the run, over a process
// group of their own, as torch.nn.SyncBatchNorm does. The heads' (v2) keep
// per-process statistics: their graphs depend on each process's RoIs, so the
// processes would not call the same collectives in the same order.
#pragma once
#include "engine/distributed.h"
#include "maskrcnn/model.h"

namespace maskrcnn::engine {

// Returns the number of layers synchronised. The group must outlive the
// model's training (the layers hold a handle that uses it).
int enable_sync_batch_norm(MaskRCNN& model, ProcessGroup& group);

}  // namespace maskrcnn::engine
