// Training and fine-tuning Mask R-CNN on COCO-format data (`maskrcnn train`).
//
//   maskrcnn::TrainOptions o;
//   o.train_annotations = "shapes/annotations.json"; o.train_images = "shapes/images";
//   o.backbone_depth = 18; o.iterations = 500; o.output_dir = "run";
//   auto report = maskrcnn::train(o);   // run/model_final.pth + model_final.json
//
// Everything random (data order, flips, RPN/RoI sampling) is keyed by
// (seed, iteration, image index), so a run's result does not depend on the
// number of loader threads or processes.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "maskrcnn/config.h"

namespace maskrcnn {

struct TrainOptions {
  std::string train_annotations, train_images;
  std::string val_annotations, val_images;  // optional: periodic bbox/segm AP
  std::string weights;                      // initial weights (fine-tuning); empty: random init
  int num_classes = 0;                      // 0: the data set's max category id + 1
  // Without weights the defaults are a from-scratch recipe (He, Girshick and
  // Dollar 2018; detectron2's scratch GN configs): GroupNorm in backbone, FPN
  // and heads (the v2 structure), anchors scaled to the image size, and a
  // cosine schedule laid over the time budget.
  std::optional<Arch> arch;                 // default: the weights' arch; without: v2 with GroupNorm, else v1
  int backbone_depth = 50;                  // used without weights: 18, 34, 50, 101
  int trainable_backbone_layers = -1;       // -1: 3 with weights, 5 without (torchvision)
  std::optional<Norm> norm;                 // without weights (default GroupNorm); with weights: theirs
  // Data parallel with BatchNorm2d in the backbone: its training statistics
  // over all processes (torch.nn.SyncBatchNorm), so N x batch B trains as
  // 1 x batch N*B. No effect in a single process.
  bool sync_batch_norm = false;
  // Head sizes without weights (torchvision's defaults; with weights theirs).
  int fpn_channels = 256;
  int representation_size = 1024;
  int box_head_conv_layers = 4;  // v2's FastRCNNConvFCHead
  int mask_head_layers = 4, mask_head_channels = 256;
  // Empty: without weights torchvision's 32..512 scaled by min_size / 512 when
  // that is below 1 (at least x0.25); with weights, theirs (32..512 or the sidecar's).
  std::vector<double> anchor_sizes;
  int min_size = 800, max_size = 1333;
  int batch_size = 2;  // per process
  // RoIs sampled per image for the box and mask heads (torchvision: 512) and
  // RPN proposals kept per image in training (2000): smaller is faster on
  // small images with few objects.
  int rois_per_image = 512;
  int proposals_per_image = 2000;
  // "sgd" (torch.optim.SGD with momentum) or "adamw" (torch.optim.AdamW).
  // The unset values (empty, 0, -1) take the recipe's: from scratch AdamW,
  // lr 1e-3, weight decay 0.05, gradients clipped at norm 5; with weights
  // torchvision's reference (SGD, lr 0.01, weight decay 1e-4, no clipping).
  std::string optimizer;
  double lr = 0, momentum = 0.9, weight_decay = -1;
  double clip_grad_norm = -1;  // > 0: clip the gradients' joint L2 norm; 0: off
  int warmup_iters = 100;
  double warmup_factor = 0.001;
  // After warm-up: "cosine" (to 0 at the end of the run) or "step" (x0.1 at
  // each of lr_steps, fractions of the run; torchvision's reference).
  std::string lr_schedule = "cosine";
  std::vector<double> lr_steps{0.67, 0.89};
  int64_t iterations = 0;  // 0: use epochs
  double epochs = 0;       // 0: 10, or with max_minutes as many as fit
  // > 0: stop (and save) after this long. The schedule's length is then the
  // iterations that fit (estimated from the measured speed, re-estimated as
  // the run goes), so the lr decays within the budget rather than being cut off.
  double max_minutes = 0;
  uint64_t seed = 0;
  int threads = 0;  // intra-op threads; 0: all cores
  int workers = 2;  // image loading threads
  double hflip_prob = 0.5;
  std::string output_dir = "output";
  bool resume = false;
  int log_every = 20;
  int64_t checkpoint_every = 500;  // iterations; the end of the run always saves
  int64_t eval_every = 0;          // iterations; 0: only at the end (with val data)
  bool progress = true;
  // Data parallel on c10d (Gloo) when the torchrun variables (RANK, WORLD_SIZE,
  // MASTER_ADDR, MASTER_PORT) say so: batch_size is per process, gradients are
  // averaged, rank 0 writes every file. A peer that dies or hangs stops the
  // others after at most this long.
  double dist_timeout_s = 1800;
};

struct TrainReport {
  int64_t start_iteration = 0, iterations = 0;  // this run covered [start, iterations)
  double seconds = 0;
  double final_loss = 0;                         // total loss, mean of the last log window
  std::optional<double> bbox_ap, segm_ap;        // last validation, if any
  std::string final_weights;                     // OUTPUT/model_final.pth
};

// In a multi-process run every process calls train() with the same options.
// Throws maskrcnn::Error on bad input and on a non-finite loss (the last good
// checkpoint stays in place).
TrainReport train(const TrainOptions& options);

}  // namespace maskrcnn
