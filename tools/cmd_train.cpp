// `maskrcnn train`: train or fine-tune on COCO-format data.
//
//   maskrcnn train --train-annotations A.json --train-images DIR [--val-annotations V.json
//                  --val-images DIR] [--weights INIT.pth] [--num-classes N] [--arch ...]
//                  [--backbone resnet50] [--iterations N | --epochs E] [--output-dir DIR] ...
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "engine/distributed.h"
#include "engine/training.h"
#include "maskrcnn/error.h"
#include "maskrcnn/trainer.h"

namespace maskrcnn::cli {

namespace {

struct TrainArgs {
  TrainOptions o;
  engine::TrainDrills drills;  // hidden test flags
  std::string arch, backbone = "resnet50", norm;
  bool frozen_bn = false;
  int nproc = 1;
  double max_annotation_mb = 2048;
};

// --nproc N: start N copies of this very command as ranks 0..N-1 on this
// machine, the way `torchrun --nproc-per-node N --no-python` would, and wait.
// The first failing rank's exit code is returned; the others are stopped.
int launch_local_workers(int nproc) {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string a; std::getline(f, a, '\0');) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string port;
  try {
    port = std::to_string(engine::free_loopback_port());
  } catch (const engine::DistError& e) {
    throw Error(std::string("train: --nproc: ") + e.what());
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) throw Error("train: --nproc: fork failed");
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::execv("/proc/self/exe", argv.data());
      std::perror("maskrcnn: exec");
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  int result = 0;
  for (size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    pid_t done = ::wait(&status);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) {
      result = code;
      for (pid_t p : pids)
        if (p != done) ::kill(p, SIGTERM);
    }
  }
  return result;
}

void run_train(TrainArgs& a) {
  if (a.nproc > 1 && !std::getenv("WORLD_SIZE")) {
    if (int rc = launch_local_workers(a.nproc); rc != 0) std::exit(rc);
    return;
  }
  apply_annotation_size_limit(a.max_annotation_mb);
  if (!a.arch.empty()) a.o.arch = parse_arch(a.arch);
  if (a.frozen_bn && !a.norm.empty() && a.norm != "frozen-bn")
    throw Error("train: --frozen-bn contradicts --norm " + a.norm);
  if (a.frozen_bn) a.o.norm = Norm::FrozenBatchNorm;
  if (!a.norm.empty()) a.o.norm = parse_norm(a.norm);
  a.o.backbone_depth = parse_backbone(a.backbone);
  auto r = engine::run_training(a.o, a.drills);
  if (const char* rank = std::getenv("RANK"); rank && std::atoi(rank) != 0) return;
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
                  "maskrcnn_resnet50_fpn | maskrcnn_resnet50_fpn_v2 (default: the weights'; without "
                  "weights v2 with --norm gn, else v1)");
  cmd->add_option("--norm", a->norm,
                  "Without --weights: the norm layers, gn (GroupNorm in backbone, FPN and heads: any "
                  "batch size; --nproc N x batch B trains as 1 x N*B) | bn (BatchNorm2d, per process "
                  "batch statistics) | frozen-bn (default: gn)");
  cmd->add_option("--backbone", a->backbone, "Without --weights: resnet18|resnet34|resnet50|resnet101")
      ->capture_default_str();
  cmd->add_option("--trainable-layers", o.trainable_backbone_layers,
                  "Trainable ResNet stages 0-5 (default: 3 with --weights, 5 without)");
  cmd->add_option("--fpn-channels", o.fpn_channels,
                  "Without --weights: the FPN's width (P2..P6), which the RPN head and the box and "
                  "mask heads read")
      ->capture_default_str();
  cmd->add_option("--representation-size", o.representation_size,
                  "Without --weights: the box head's fc width")
      ->capture_default_str();
  cmd->add_option("--box-head-convs", o.box_head_conv_layers,
                  "Without --weights, v2: the box head's 3x3 conv layers")
      ->capture_default_str();
  cmd->add_option("--mask-head-layers", o.mask_head_layers, "Without --weights: the mask head's conv layers")
      ->capture_default_str();
  cmd->add_option("--mask-head-channels", o.mask_head_channels, "Without --weights: their width")
      ->capture_default_str();
  cmd->add_option("--anchor-sizes", o.anchor_sizes,
                  "RPN anchor sizes of P2..P6, 5 numbers (default: the weights' (32..512); without "
                  "weights 32..512 x min-size/512, clamped to x0.25..x1)")
      ->delimiter(',')
      ->expected(5);
  cmd->add_option("--min-size", o.min_size, "Resize: shorter side")->capture_default_str();
  cmd->add_option("--max-size", o.max_size, "Resize: longer side at most")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Images per iteration (per process)")->capture_default_str();
  cmd->add_option("--rois-per-image", o.rois_per_image,
                  "RoIs sampled per image for the box/mask heads (torchvision: 512)")
      ->capture_default_str();
  cmd->add_option("--proposals-per-image", o.proposals_per_image,
                  "RPN proposals kept per image in training (torchvision: 2000)")
      ->capture_default_str();
  cmd->add_option("--lr", o.lr, "Base learning rate (default: 0.001 with adamw, 0.01 with sgd)");
  cmd->add_option("--optimizer", o.optimizer,
                  "sgd (torch.optim.SGD with momentum) | adamw (torch.optim.AdamW) (default: adamw without "
                  "--weights, sgd with)");
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay,
                  "Weight decay, decoupled with adamw (default: 0.05 with adamw, 1e-4 with sgd)");
  cmd->add_option("--clip-grad-norm", o.clip_grad_norm,
                  "Clip the gradients' joint L2 norm to this, 0: off (default: 5 without --weights, 0 "
                  "with, as torchvision)");
  cmd->add_option("--warmup-iters", o.warmup_iters, "Linear warm-up iterations")->capture_default_str();
  cmd->add_option("--lr-schedule", o.lr_schedule,
                  "After warm-up: cosine (to 0 at the end) | step (x0.1 at 67% and 89% of the run)")
      ->capture_default_str();
  cmd->add_option("--iterations", o.iterations, "Iterations to train (default 0: use --epochs)")
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs,
                  "Epochs to train when --iterations is 0 (default 0: 10, or with --max-minutes as many "
                  "as fit)")
      ->capture_default_str();
  cmd->add_option("--max-minutes", o.max_minutes,
                  "Time budget: stop and save after this many minutes (0: no limit). The lr schedule "
                  "is laid over the iterations that fit, estimated from the measured speed")
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
  cmd->add_option("--nproc", a->nproc,
                  "Start this many local processes (data parallel on c10d/Gloo); torchrun-style "
                  "RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT variables also work")
      ->capture_default_str();
  cmd->add_option("--dist-timeout", o.dist_timeout_s,
                  "Seconds after which a dead or hung peer process stops the others")
      ->capture_default_str();
  cmd->add_flag("--frozen-bn", a->frozen_bn, "Without --weights: the same as --norm frozen-bn");
  cmd->add_flag("--sync-bn", o.sync_batch_norm,
                "With --nproc/torchrun and --norm bn: the backbone's batch statistics over all processes "
                "(torch.nn.SyncBatchNorm), so N processes x batch B train as 1 x N*B; without it each "
                "process normalises its own images (as DDP without SyncBatchNorm)");
  cmd->add_option("--inject-nan-at", a->drills.inject_nan_at, "Failure drill: NaN loss at this iteration")
      ->group("");
  add_annotation_size_limit(cmd, a->max_annotation_mb);
  cmd->callback([a] { run_train(*a); });
}

}  // namespace maskrcnn::cli
