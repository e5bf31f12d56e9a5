// engine::TrainerBase's loop and the hooks that need no model (metrics, time
// limit, progress bar), driven by a trainer whose steps are made up.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/temp_dir.h"
#include "engine/hooks.h"
#include "engine/trainer_loop.h"

using namespace maskrcnn::engine;
using maskrcnn::testing::TempDir;
using nlohmann::json;

namespace {

// Step `it` reports loss_a = it + 1, loss_b = 2 it, total 3 it + 1,
// lr = 0.1 (it + 1) and, optionally, grad_norm = 10 + it.
class FakeTrainer : public TrainerBase {
 public:
  explicit FakeTrainer(std::vector<std::string>* log = nullptr) : log_(log) {}
  StepResult run_step(int64_t it) override {
    if (log_) log_->push_back("step " + std::to_string(it));
    if (fail_at && it == *fail_at) throw std::runtime_error("step failed");
    StepResult r;
    r.iteration = it;
    r.losses = {{"loss_a", it + 1.0}, {"loss_b", 2.0 * it}};
    r.total_loss = 3.0 * it + 1;
    r.lr = 0.1 * (it + 1);
    if (with_grad_norm) r.grad_norm = 10.0 + it;
    return r;
  }
  std::optional<int64_t> fail_at;
  bool with_grad_norm = false;

 private:
  std::vector<std::string>* log_;
};

// Logs every call as "<name>.<event> <iteration>"; can ask for a stop.
class Recorder : public HookBase {
 public:
  Recorder(std::string name, std::vector<std::string>& log) : name_(std::move(name)), log_(log) {}
  void before_train() override { log_.push_back(name_ + ".before_train " + std::to_string(trainer().iteration())); }
  void before_step(int64_t it) override {
    log_.push_back(name_ + ".before_step " + std::to_string(it));
    if (stop_before && it == *stop_before) request_stop();
  }
  void after_step(const StepResult& s) override {
    log_.push_back(name_ + ".after_step " + std::to_string(s.iteration) + " at " +
                   std::to_string(trainer().iteration()));
    if (stop_after && s.iteration == *stop_after) request_stop();
  }
  void after_train() override { log_.push_back(name_ + ".after_train " + std::to_string(trainer().iteration())); }
  std::optional<int64_t> stop_before, stop_after;

 private:
  std::string name_;
  std::vector<std::string>& log_;
};

using Log = std::vector<std::string>;

TEST(TrainerLoop, HooksRunInRegistrationOrderAroundEachStep) {
  Log log;
  FakeTrainer t(&log);
  t.register_hook(std::make_unique<Recorder>("A", log));
  t.register_hook(std::make_unique<Recorder>("B", log));
  t.run(2, 4);
  const Log expected{"A.before_train 2", "B.before_train 2",                         //
                     "A.before_step 2",  "B.before_step 2",  "step 2",                //
                     "A.after_step 2 at 3", "B.after_step 2 at 3",                    //
                     "A.before_step 3",  "B.before_step 3",  "step 3",                //
                     "A.after_step 3 at 4", "B.after_step 3 at 4",                    //
                     "A.after_train 4",  "B.after_train 4"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(t.start_iteration(), 2);
  EXPECT_EQ(t.max_iteration(), 4);
  EXPECT_EQ(t.iteration(), 4);
}

TEST(TrainerLoop, AStopAfterAStepFinishesThatRoundOfHooksAndEndsTheRun) {
  Log log;
  FakeTrainer t(&log);
  auto& a = t.register_hook(std::make_unique<Recorder>("A", log));
  t.register_hook(std::make_unique<Recorder>("B", log));
  a.stop_after = 1;
  t.run(0, 10);
  EXPECT_EQ(t.iteration(), 2);
  EXPECT_EQ(log.back(), "B.after_train 2");
  EXPECT_EQ(std::count(log.begin(), log.end(), "step 2"), 0);
  EXPECT_EQ(std::count(log.begin(), log.end(), "B.after_step 1 at 2"), 1);
  EXPECT_TRUE(t.stop_requested());
}

TEST(TrainerLoop, AStopBeforeAStepSkipsIt) {
  Log log;
  FakeTrainer t(&log);
  t.register_hook(std::make_unique<Recorder>("A", log)).stop_before = 3;
  t.run(0, 10);
  EXPECT_EQ(t.iteration(), 3);
  EXPECT_EQ(std::count(log.begin(), log.end(), "step 2"), 1);
  EXPECT_EQ(std::count(log.begin(), log.end(), "step 3"), 0);
  EXPECT_EQ(log.back(), "A.after_train 3");
}

TEST(TrainerLoop, AFailedStepEndsTheRunWithoutAfterTrain) {
  Log log;
  FakeTrainer t(&log);
  t.fail_at = 1;
  t.register_hook(std::make_unique<Recorder>("A", log));
  EXPECT_THROW(t.run(0, 5), std::runtime_error);
  EXPECT_EQ(t.iteration(), 1);
  EXPECT_EQ(log.back(), "step 1");
  for (auto& line : log) EXPECT_EQ(line.find("after_train"), std::string::npos) << line;
}

TEST(TrainerLoop, NothingLeftToDoStillCallsBeforeAndAfterTrain) {
  Log log;
  FakeTrainer t(&log);
  t.register_hook(std::make_unique<Recorder>("A", log));
  t.run(5, 5);
  EXPECT_EQ(log, (Log{"A.before_train 5", "A.after_train 5"}));
}

TEST(TrainerLoop, AHookOutsideATrainerCannotReachIt) {
  Log log;
  Recorder loose("A", log);
  EXPECT_THROW(loose.before_train(), maskrcnn::Error);
}

std::vector<json> read_records(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) out.push_back(json::parse(line));
  return out;
}

TEST(MetricsHook, WritesWindowMeansEveryLogEveryStepsAndAfterTheLast) {
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  MetricsFile file(path, /*append=*/false, /*enabled=*/true);
  FakeTrainer t;
  t.with_grad_norm = true;
  auto& metrics = t.register_hook(std::make_unique<MetricsHook>(file, 2));
  t.run(0, 5);
  auto recs = read_records(path);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["iteration"], 2);
  EXPECT_EQ(recs[1]["iteration"], 4);
  EXPECT_EQ(recs[2]["iteration"], 5);  // the last step, outside the log_every rhythm
  // Steps 0 and 1.
  EXPECT_DOUBLE_EQ(recs[0]["loss_a"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(recs[0]["loss_b"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(recs[0]["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(recs[0]["grad_norm"].get<double>(), 10.5);
  EXPECT_DOUBLE_EQ(recs[0]["lr"].get<double>(), 0.2);  // the window's last step's
  // Steps 2 and 3, then step 4 alone.
  EXPECT_DOUBLE_EQ(recs[1]["loss"].get<double>(), 8.5);
  EXPECT_DOUBLE_EQ(recs[2]["loss"].get<double>(), 13.0);
  EXPECT_DOUBLE_EQ(recs[2]["loss_a"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(metrics.final_loss(), 13.0);
  std::vector<std::string> keys;
  for (auto& [k, v] : recs[0].items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"grad_norm", "iter_per_s", "iteration", "loss", "loss_a", "loss_b", "lr",
                                      "planned_iterations", "time"}));
  EXPECT_GE(recs[2]["time"].get<double>(), recs[0]["time"].get<double>());
}

TEST(MetricsHook, NoGradNormWithoutClippingAndAResumedRunAppends) {
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  {
    MetricsFile file(path, false, true);
    FakeTrainer t;
    t.register_hook(std::make_unique<MetricsHook>(file, 2));
    t.run(0, 2);
  }
  {
    MetricsFile file(path, /*append=*/true, true);
    FakeTrainer t;
    t.register_hook(std::make_unique<MetricsHook>(file, 2));
    t.run(3, 5);  // resumed at 3: windows [3] (ends at 4) and [4]
  }
  auto recs = read_records(path);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["iteration"], 2);
  EXPECT_EQ(recs[1]["iteration"], 4);
  EXPECT_DOUBLE_EQ(recs[1]["loss"].get<double>(), 10.0);
  EXPECT_EQ(recs[2]["iteration"], 5);
  for (auto& r : recs) EXPECT_FALSE(r.contains("grad_norm")) << r.dump();
  // A fresh run truncates.
  {
    MetricsFile file(path, false, true);
  }
  EXPECT_TRUE(read_records(path).empty());
}

TEST(MetricsHook, ADisabledFileWritesNothingButTheLossIsStillKept) {
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  MetricsFile file(path, false, /*enabled=*/false);
  FakeTrainer t;
  auto& metrics = t.register_hook(std::make_unique<MetricsHook>(file, 1));
  t.run(0, 3);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_DOUBLE_EQ(metrics.final_loss(), 7.0);
}

TEST(MetricsHook, AnUnwritableFileIsAnError) {
  TempDir dir("metrics");
  EXPECT_THROW(MetricsFile(dir / "no/such/folder/metrics.jsonl", false, true), maskrcnn::Error);
}

// A clock that moves 30 s each time it is read.
TimeLimitHook::Clock ticking_clock() {
  auto t = std::make_shared<std::chrono::steady_clock::time_point>();
  return [t] { return *t += std::chrono::seconds(30); };
}

TEST(TimeLimitHook, StopsBeforeTheFirstStepPastTheLimit) {
  Log log;
  FakeTrainer t(&log);
  t.register_hook(std::make_unique<TimeLimitHook>(1.0, nullptr, /*plan_schedule=*/false, ticking_clock()));
  t.register_hook(std::make_unique<Recorder>("A", log));
  ::testing::internal::CaptureStderr();
  t.run(0, 10);
  const std::string err = ::testing::internal::GetCapturedStderr();
  // Read at before_train (0 s), then before steps 0 (30 s), 1 (60 s: not
  // over), 2 (90 s): stop.
  EXPECT_EQ(t.iteration(), 2);
  EXPECT_EQ(std::count(log.begin(), log.end(), "step 1"), 1);
  EXPECT_EQ(std::count(log.begin(), log.end(), "step 2"), 0);
  EXPECT_EQ(log.back(), "A.after_train 2");
  EXPECT_NE(err.find("train: --max-minutes 1.0 reached at iteration 2"), std::string::npos) << err;
}

// A clock the test moves by hand.
struct ManualClock {
  std::shared_ptr<std::chrono::steady_clock::time_point> t = std::make_shared<std::chrono::steady_clock::time_point>();
  TimeLimitHook::Clock clock() const {
    auto p = t;
    return [p] { return *p; };
  }
  void advance(double seconds) {
    *t += std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  }
};

// Steps that take `seconds_per_step` on the manual clock.
class TimedTrainer : public FakeTrainer {
 public:
  TimedTrainer(ManualClock clock, double seconds_per_step) : clock_(clock), per_step_(seconds_per_step) {}
  StepResult run_step(int64_t it) override {
    clock_.advance(per_step_);
    max_seen.push_back(max_iteration());
    return FakeTrainer::run_step(it);
  }
  std::vector<int64_t> max_seen;

 private:
  ManualClock clock_;
  double per_step_;
};

TEST(TimeLimitHook, LaysTheRunLengthOverTheBudgetFromTheMeasuredSpeed) {
  ManualClock clock;
  TimedTrainer t(clock, 2.0);  // 2 s a step: a 10-minute budget holds ~300 steps
  t.register_hook(std::make_unique<TimeLimitHook>(10.0, nullptr, true, clock.clock()));
  ::testing::internal::CaptureStderr();
  t.run(0, 100000);
  ::testing::internal::GetCapturedStderr();
  // Planned after the first measured steps, re-planned as it went: the run
  // ended at its plan, within the budget, not at the time limit.
  EXPECT_EQ(t.max_seen.front(), 100000);
  EXPECT_EQ(t.max_iteration(), t.iteration());
  EXPECT_GE(t.iteration(), 290);
  EXPECT_LE(t.iteration(), 300);
  EXPECT_LT(t.max_seen[20], 100000);
}

TEST(TimeLimitHook, ThePlanNeverExceedsTheRequestedLength) {
  ManualClock clock;
  TimedTrainer t(clock, 0.5);
  t.register_hook(std::make_unique<TimeLimitHook>(10.0, nullptr, true, clock.clock()));
  t.run(0, 50);
  EXPECT_EQ(t.iteration(), 50);
  for (int64_t m : t.max_seen) EXPECT_EQ(m, 50);
}

TEST(ProgressHook, DrawsTheBarWithLossAndLrAndFinishesAtTheEnd) {
  FakeTrainer t;
  t.register_hook(std::make_unique<ProgressHook>(true));
  ::testing::internal::CaptureStderr();
  t.run(0, 3);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("train ["), std::string::npos) << err;
  EXPECT_NE(err.find("3/3"), std::string::npos) << err;
  EXPECT_NE(err.find("loss 7.000 lr 0.3"), std::string::npos) << err;  // step 2's
}

TEST(ProgressHook, DrawsNothingWhenDisabled) {
  FakeTrainer t;
  t.register_hook(std::make_unique<ProgressHook>(false));
  ::testing::internal::CaptureStderr();
  t.run(0, 3);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(ProgressHook, ARunCutShortGetsNoFinalBar) {
  FakeTrainer t;
  t.register_hook(std::make_unique<ProgressHook>(true));
  Log log;
  t.register_hook(std::make_unique<Recorder>("A", log)).stop_after = 0;
  ::testing::internal::CaptureStderr();
  t.run(0, 3);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("3/3"), std::string::npos) << err;
}

}  // namespace
