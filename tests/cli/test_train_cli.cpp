// `maskrcnn make-shapes` + `maskrcnn train` end to end, on small synthetic
// data with a ResNet-18 backbone: the loss falls, the weights load into
// torchvision strictly and into `predict` (with the class names of the
// sidecar JSON); a NaN loss stops the run and keeps the last checkpoint;
// --resume continues bit for bit; kill -9 during checkpoint saves never leaves
// an unreadable checkpoint; fine-tuning re-initialises the predictors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "maskrcnn/maskrcnn.h"
#include "support/cli.h"

namespace fs = std::filesystem;
using namespace maskrcnn::testing;
using nlohmann::json;

namespace {

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = fs::temp_directory_path() / ("maskrcnn_train_data_" + std::to_string(::getpid()));
    fs::remove_all(data_);
    const std::string bin = maskrcnn_bin();
    ASSERT_EQ(std::system((bin + " make-shapes --output " + (data_ / "train").string() +
                           " --images 40 --size 96 --seed 3 >/dev/null").c_str()), 0);
    ASSERT_EQ(std::system((bin + " make-shapes --output " + (data_ / "val").string() +
                           " --images 6 --size 96 --seed 4 >/dev/null").c_str()), 0);
  }
  static void TearDownTestSuite() { fs::remove_all(data_); }

  void SetUp() override {
    dir_ = data_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }

  CmdResult run(const std::string& args) { return run_maskrcnn(args, dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string train_args() {
    return "train --train-annotations " + (data_ / "train/annotations.json").string() +
           " --train-images " + (data_ / "train/images").string() +
           " --backbone resnet18 --min-size 96 --max-size 96 --rois-per-image 64"
           " --proposals-per-image 200 --warmup-iters 10 --threads 2"
           " --representation-size 256 --box-head-convs 1 --mask-head-layers 2 --mask-head-channels 64"
           " --workers 2 ";
  }
  // metrics.jsonl's records after its first line (the run's settings).
  static std::vector<json> metrics(const std::string& file, json* settings = nullptr) {
    std::vector<json> out;
    std::ifstream f(file);
    for (std::string line; std::getline(f, line);) {
      auto rec = json::parse(line);
      if (rec.contains("settings")) {
        if (settings) *settings = rec["settings"];
        continue;
      }
      out.push_back(rec);
    }
    return out;
  }
  static double max_abs_diff(const std::string& a, const std::string& b) {
    auto sa = maskrcnn::load_state_dict(a), sb = maskrcnn::load_state_dict(b);
    EXPECT_EQ(sa.size(), sb.size());
    double m = 0;
    for (size_t i = 0; i < sa.size() && i < sb.size(); ++i) {
      EXPECT_EQ(sa[i].first, sb[i].first);
      m = std::max(m, (sa[i].second.to(at::kDouble) - sb[i].second.to(at::kDouble)).abs().max().item<double>());
    }
    return m;
  }

  static fs::path data_;
  fs::path dir_;
};
fs::path TrainCli::data_;

TEST_F(TrainCli, LossFallsAndTheWeightsServeTorchvisionAndPredict) {
  // A narrower FPN than torchvision's 256 (--fpn-channels): the sidecar carries it to
  // predict and to torchvision's own FeaturePyramidNetwork.
  auto r = run(train_args() + "--iterations 80 --fpn-channels 64 --log-every 10 --val-annotations " +
               (data_ / "val/annotations.json").string() + " --val-images " +
               (data_ / "val/images").string() + " --output-dir " + path("run"));
  ASSERT_EQ(r.rc, 0) << r.err;
  json settings;
  auto m = metrics(path("run/metrics.jsonl"), &settings);
  ASSERT_GE(m.size(), 9u);
  const double first = m.front()["loss"], last = m[m.size() - 2]["loss"];
  EXPECT_LT(last, 0.75 * first) << "loss did not fall: " << first << " -> " << last;
  for (const char* k : {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                        "loss_rpn_box_reg", "lr", "iteration", "iter_per_s", "images_per_s"})
    EXPECT_TRUE(m.front().contains(k)) << k;
  EXPECT_NEAR(m.front()["images_per_s"].get<double>(), 2 * m.front()["iter_per_s"].get<double>(), 1e-6);
  // The first line: the run's settings, the from-scratch recipe's defaults.
  EXPECT_EQ(settings["model"]["norm"], "gn") << settings.dump();
  EXPECT_EQ(settings["model"]["arch"], "maskrcnn_resnet50_fpn_v2");
  EXPECT_EQ(settings["model"]["anchor_sizes"], json({8.0, 16.0, 32.0, 64.0, 128.0}));  // 96 px: x0.25
  EXPECT_EQ(settings["model"]["fpn_channels"], 64);
  EXPECT_EQ(settings["train"]["lr_schedule"], "cosine");
  EXPECT_EQ(settings["train"]["batch_size"], 2);
  EXPECT_EQ(settings["train"]["iterations"], 80);
  EXPECT_TRUE(m.back().contains("val_bbox_AP")) << m.back().dump();
  EXPECT_NE(r.out.find("validation: bbox AP"), std::string::npos) << r.out;

  // Sidecar config and torchvision's strict load.
  auto info = json::parse(slurp(path("run/model_final.json")));
  EXPECT_EQ(info["backbone"], "resnet18");
  EXPECT_EQ(info["num_classes"], 4);
  EXPECT_EQ(info["class_names"], json({"__background__", "circle", "square", "triangle"}));
  EXPECT_EQ(info["min_size"], 96);
  EXPECT_EQ(info["fpn_channels"], 64);
  const std::string check = python() + " " + MASKRCNN_TEST_SOURCE_DIR +
                            "/tests/python/check_torchvision_load.py " + path("run/model_final.pth") +
                            " > " + path("tv.txt") + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << slurp(path("tv.txt"));

  // predict reads the sidecar: 96-pixel inputs and the shapes' names.
  r = run("predict --threads 2 --score-thresh 0.01 --weights " + path("run/model_final.pth") +
          " --output-json " + path("dt.json") + " " + (data_ / "val/images/000000.png").string());
  ASSERT_EQ(r.rc, 0) << r.err;
  auto dt = json::parse(slurp(path("dt.json")));
  ASSERT_FALSE(dt.empty());
  for (auto& d : dt) {
    const std::string name = d["category_name"];
    EXPECT_TRUE(name == "circle" || name == "square" || name == "triangle") << name;
  }
}

// --max-minutes alone: the run plans its length from its measured speed and
// ends on its plan, the cosine decayed to ~0, within the budget.
TEST_F(TrainCli, ATimeBudgetLaysTheScheduleOverTheIterationsThatFit) {
  auto r = run(train_args() + "--max-minutes 0.4 --log-every 5 --output-dir " + path("budget"));
  ASSERT_EQ(r.rc, 0) << r.err;
  json settings;
  auto m = metrics(path("budget/metrics.jsonl"), &settings);
  ASSERT_GE(m.size(), 2u);
  EXPECT_FALSE(settings["train"].contains("iterations")) << "the budget alone decides the length";
  const json& last = m.back();
  EXPECT_EQ(last["planned_iterations"], last["iteration"]) << last.dump();
  EXPECT_GE(last["iteration"].get<int>(), 10);
  EXPECT_LT(last["lr"].get<double>(), 0.05 * settings["train"]["lr"].get<double>()) << last.dump();
  EXPECT_LE(last["time"].get<double>(), 0.4 * 60 + 1.0);
  EXPECT_EQ(r.err.find("--max-minutes 0.4 reached"), std::string::npos) << "cut off instead of planned";
  EXPECT_TRUE(fs::exists(path("budget/model_final.pth")));
}

TEST_F(TrainCli, NanStopsCleanlyAndResumeContinuesBitForBit) {
  auto r = run(train_args() + "--iterations 12 --checkpoint-every 6 --output-dir " + path("straight"));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run(train_args() + "--iterations 12 --checkpoint-every 6 --inject-nan-at 8 --output-dir " +
          path("broken"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("iteration 8: loss_mask is NaN"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path("broken/checkpoint.pth")), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("broken/model_final.pth")));
  auto ckpt = maskrcnn::load_state_dict(path("broken/checkpoint.pth"));
  EXPECT_EQ(ckpt.back().first, "meta.iteration");
  EXPECT_EQ(ckpt.back().second.item<int64_t>(), 6);

  r = run(train_args() + "--iterations 12 --checkpoint-every 6 --resume --output-dir " + path("broken"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
  EXPECT_EQ(max_abs_diff(path("straight/model_final.pth"), path("broken/model_final.pth")), 0.0);
}

TEST_F(TrainCli, KillDuringCheckpointSavesNeverLosesTheCheckpoint) {
  // Checkpoint after every iteration, and kill -9 the run while it writes one:
  // once a first checkpoint exists, the shell watches for this process's
  // temporary file (checkpoint.pth.tmp.PID) and kills at several offsets into
  // the next save. Waiting for the file, not a
  // fixed delay, keeps the drill on target however slow the machine (ASan).
  const std::string args = train_args() + "--iterations 40 --checkpoint-every 1 --output-dir " + path("run");
  const std::string ckpt = path("run/checkpoint.pth"), tmp = ckpt + ".tmp.";
  int killed_during_save = 0;
  for (const char* delay : {"0", "0.02", "0.1"}) {
    const std::string cmd =
        "(" + maskrcnn_bin() + " " + args + " >/dev/null 2>&1 & pid=$!; i=0; "
        "while ! { [ -e " + ckpt + " ] && [ -e " + tmp + "$pid ]; } && kill -0 $pid && [ $i -lt 60000 ]; do sleep 0.01; i=$((i+1)); done; "
        "sleep " + delay + "; [ -e " + tmp + "$pid ]; seen=$?; kill -9 $pid; wait $pid; exit $seen) 2>/dev/null";
    const int status = std::system(cmd.c_str());
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++killed_during_save;
    ASSERT_TRUE(fs::exists(path("run/checkpoint.pth"))) << "no checkpoint was written before the kill";
    auto state = maskrcnn::load_state_dict(path("run/checkpoint.pth"));  // must not throw
    EXPECT_EQ(state.back().first, "meta.iteration");
  }
  // The first kill lands as the temporary file appears, so at least that one
  // hit a save in progress.
  EXPECT_GE(killed_during_save, 1);
  auto r = run(args + " --resume");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(path("run/model_final.pth")));
  // The temporaries of the killed runs were cleared on the way.
  for (const auto& entry : fs::directory_iterator(path("run")))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
}

TEST_F(TrainCli, FineTuningReinitialisesPredictorsAndKeepsFrozenLayers) {
  // torchvision's COCO layout (91 classes, FrozenBatchNorm2d eps 0) -> 4 classes.
  const std::string init = fixtures_dir("parity") + "/v1_coco.pth";
  auto r = run("train --train-annotations " + (data_ / "train/annotations.json").string() +
               " --train-images " + (data_ / "train/images").string() + " --weights " + init +
               " --min-size 96 --max-size 96 --rois-per-image 32 --proposals-per-image 100"
               " --iterations 2 --threads 2 --lr 0.001 --output-dir " + path("ft"));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::map<std::string, at::Tensor> before, after;
  for (auto& [k, v] : maskrcnn::load_state_dict(init)) before[k] = v;
  for (auto& [k, v] : maskrcnn::load_state_dict(path("ft/model_final.pth"))) after[k] = v;
  EXPECT_EQ(after.at("roi_heads.box_predictor.cls_score.weight").size(0), 4);
  EXPECT_EQ(after.at("roi_heads.mask_predictor.mask_fcn_logits.weight").size(0), 4);
  // conv1 and layer1 are frozen (3 trainable stages): unchanged; layer4 moved.
  EXPECT_TRUE(before.at("backbone.body.conv1.weight").equal(after.at("backbone.body.conv1.weight")));
  EXPECT_TRUE(before.at("backbone.body.layer1.0.conv1.weight").equal(after.at("backbone.body.layer1.0.conv1.weight")));
  EXPECT_FALSE(before.at("backbone.body.layer4.0.conv1.weight").equal(after.at("backbone.body.layer4.0.conv1.weight")));
  EXPECT_FALSE(after.count("backbone.body.bn1.num_batches_tracked")) << "frozen BN stays frozen";
  const std::string check = python() + " " + MASKRCNN_TEST_SOURCE_DIR +
                            "/tests/python/check_torchvision_load.py " + path("ft/model_final.pth") +
                            " resnet50 4 frozen > " + path("tv.txt") + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << slurp(path("tv.txt"));
}

TEST_F(TrainCli, V2FromScratchLoadsIntoTorchvisionV2) {
  auto r = run("train --train-annotations " + (data_ / "train/annotations.json").string() +
               " --train-images " + (data_ / "train/images").string() +
               " --arch maskrcnn_resnet50_fpn_v2 --norm bn --min-size 64 --max-size 64 --rois-per-image 16"
               " --proposals-per-image 50 --iterations 1 --threads 2 --output-dir " + path("v2"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json::parse(slurp(path("v2/model_final.json")))["arch"], "maskrcnn_resnet50_fpn_v2");
  const std::string check = python() + " " + MASKRCNN_TEST_SOURCE_DIR +
                            "/tests/python/check_torchvision_load.py " + path("v2/model_final.pth") +
                            " resnet50 4 bn v2 > " + path("tv.txt") + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << slurp(path("tv.txt"));
}

TEST_F(TrainCli, BadInputIsAOneLineErrorAndHelpShowsDefaults) {
  auto r = run("train --train-annotations " + path("missing.json") + " --train-images " + path("x") +
               " --output-dir " + path("o"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("missing.json")), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run("train --train-annotations " + (data_ / "train/annotations.json").string() +
          " --train-images " + (data_ / "train/images").string() + " --backbone resnet7 --output-dir " +
          path("o"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("resnet7"), std::string::npos) << r.err;
  r = run("train --train-annotations " + (data_ / "train/annotations.json").string() +
          " --train-images " + (data_ / "train/images").string() + " --norm gn --fpn-channels 48 --output-dir " +
          path("o"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("multiple of 32, not 48"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run("train --help");
  EXPECT_EQ(r.rc, 0);
  for (std::string s : {"--lr", "0.01", "--momentum", "0.9", "--batch-size", "--epochs", "--resume",
                        "--max-minutes", "--seed", "--weights", "--val-annotations", "--output-dir"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  r = run("make-shapes --help");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("128"), std::string::npos) << r.out;
}

TEST_F(TrainCli, FullDiskDuringACheckpointSaveIsACleanError) {
  // The output folder is a 2 MiB tmpfs: metrics fit, the 50 MB checkpoint does not.
  const std::string full = path("full"), listing = path("listing.txt");
  const std::string prefix = full_disk_prefix(full, 2048, listing);
  if (prefix.empty()) GTEST_SKIP() << "no private tmpfs here (unshare -rm)";
  auto r = run_maskrcnn(train_args() + "--iterations 2 --checkpoint-every 1 --output-dir " + full, dir_.string(),
                        prefix);
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("checkpoint.pth"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
  // Nothing half-written stays: no checkpoint, no temporary. (Its small JSON
  // sidecar is written first on purpose, so a .pth never lacks one.)
  const std::string left = slurp(listing);
  EXPECT_EQ(left.find("checkpoint.pth"), std::string::npos) << left;
  EXPECT_NE(left.find("metrics.jsonl"), std::string::npos) << left;
  EXPECT_EQ(left.find(".tmp"), std::string::npos) << left;
}

}  // namespace
