// `maskrcnn train`: train or fine-tune on COCO-format data.
//
//   maskrcnn train --train-annotations A.json --train-images DIR [--val-annotations V.json
//                  --val-images DIR] [--weights INIT.pth] [--num-classes N] [--arch ...]
//                  [--backbone resnet50] [--iterations N | --epochs E] [--output-dir DIR] ...
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "maskrcnn/error.h"
#include "maskrcnn/trainer.h"

namespace maskrcnn::cli {

namespace {

struct TrainArgs {
  TrainOptions o;
  std::string arch, backbone = "resnet50";
};

void run_train(TrainArgs& a) {
  if (!a.arch.empty()) a.o.arch = parse_arch(a.arch);
  if (a.backbone.rfind("resnet", 0) != 0) throw Error("train: unknown --backbone '" + a.backbone + "'");
  try {
    a.o.backbone_depth = std::stoi(a.backbone.substr(6));
  } catch (const std::exception&) {
    throw Error("train: unknown --backbone '" + a.backbone + "'");
  }
  auto r = train(a.o);
  std::printf("trained iterations %lld-%lld in %.1f s, final loss %.4f\n",
              static_cast<long long>(r.start_iteration), static_cast<long long>(r.iterations),
              r.seconds, r.final_loss);
  if (r.bbox_ap) std::printf("validation: bbox AP %.4f, segm AP %.4f\n", *r.bbox_ap, *r.segm_ap);
  std::printf("weights: %s\n", r.final_weights.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  TrainOptions& o = a->o;
  auto* cmd = app.add_subcommand("train", "Train or fine-tune Mask R-CNN on COCO-format data");
  cmd->add_option("--train-annotations", o.train_annotations, "COCO instances JSON")->required();
  cmd->add_option("--train-images", o.train_images, "Image folder of the training set")->required();
  cmd->add_option("--val-annotations", o.val_annotations, "Validation COCO JSON (default: none)");
  cmd->add_option("--val-images", o.val_images, "Validation image folder (default: none)");
  cmd->add_option("--weights", o.weights,
                  "Initial weights to fine-tune (.pth); predictors are re-initialised when the class "
                  "count differs (default: none, random init)");
  cmd->add_option("--num-classes", o.num_classes,
                  "Classes incl. background (default: the data's max category id + 1)");
  cmd->add_option("--arch", a->arch,
                  "maskrcnn_resnet50_fpn | maskrcnn_resnet50_fpn_v2 (default: the weights', else v1)");
  cmd->add_option("--backbone", a->backbone, "Without --weights: resnet18|resnet34|resnet50|resnet101")
      ->capture_default_str();
  cmd->add_option("--trainable-layers", o.trainable_backbone_layers,
                  "Trainable ResNet stages 0-5 (default: 3 with --weights, 5 without)");
  cmd->add_option("--min-size", o.min_size, "Resize: shorter side")->capture_default_str();
  cmd->add_option("--max-size", o.max_size, "Resize: longer side at most")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Images per iteration (per process)")->capture_default_str();
  cmd->add_option("--rois-per-image", o.rois_per_image,
                  "RoIs sampled per image for the box/mask heads (torchvision: 512)")
      ->capture_default_str();
  cmd->add_option("--proposals-per-image", o.proposals_per_image,
                  "RPN proposals kept per image in training (torchvision: 2000)")
      ->capture_default_str();
  cmd->add_option("--lr", o.lr, "Base learning rate")->capture_default_str();
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "SGD weight decay")->capture_default_str();
  cmd->add_option("--clip-grad-norm", o.clip_grad_norm,
                  "Clip the gradients' joint L2 norm to this (0: off, as torchvision)")
      ->capture_default_str();
  cmd->add_option("--warmup-iters", o.warmup_iters, "Linear warm-up iterations")->capture_default_str();
  cmd->add_option("--iterations", o.iterations, "Iterations to train (default 0: use --epochs)")
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Epochs to train when --iterations is 0")->capture_default_str();
  cmd->add_option("--max-minutes", o.max_minutes, "Stop and save after this many minutes (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of init, data order, flips and sampling")->capture_default_str();
  cmd->add_option("--threads", o.threads, "Compute threads (0: all cores)")->capture_default_str();
  cmd->add_option("--workers", o.workers, "Image loading threads")->capture_default_str();
  cmd->add_option("--hflip", o.hflip_prob, "Horizontal flip probability")->capture_default_str();
  cmd->add_option("--output-dir", o.output_dir, "Where weights, checkpoints and metrics go")
      ->capture_default_str();
  cmd->add_flag("--resume", o.resume, "Continue from OUTPUT/checkpoint.pth if present");
  cmd->add_option("--log-every", o.log_every, "Iterations per metrics.jsonl line")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Iterations between checkpoints")
      ->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Iterations between validations (0: at the end)")
      ->capture_default_str();
  cmd->add_option("--inject-nan-at", o.inject_nan_at, "Failure drill: NaN loss at this iteration")
      ->group("");
  cmd->callback([a] { run_train(*a); });
}

}  // namespace maskrcnn::cli
