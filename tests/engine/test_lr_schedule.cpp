// engine::learning_rate: linear warm-up from warmup_factor, then torchvision's
// reference steps (x0.1 at each step fraction of the run) or a cosine to 0.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/train_setup.h"

using maskrcnn::TrainOptions;
using maskrcnn::engine::learning_rate;

namespace {

TrainOptions schedule(double lr, int warmup_iters, double warmup_factor, std::vector<double> steps) {
  TrainOptions o;
  o.lr = lr;
  o.warmup_iters = warmup_iters;
  o.warmup_factor = warmup_factor;
  o.lr_steps = std::move(steps);
  o.lr_schedule = "step";
  return o;
}

TEST(LrSchedule, WarmUpIsLinearFromTheWarmupFactor) {
  const auto o = schedule(0.02, 10, 0.001, {0.5, 0.75});
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 100), 0.02 * 0.001);
  for (int it = 1; it < 10; ++it) {
    const double alpha = it / 10.0;
    EXPECT_DOUBLE_EQ(learning_rate(o, it, 100), 0.02 * (0.001 * (1 - alpha) + alpha)) << it;
    EXPECT_GT(learning_rate(o, it, 100), learning_rate(o, it - 1, 100)) << it;
  }
  EXPECT_DOUBLE_EQ(learning_rate(o, 5, 100), 0.02 * 0.5005);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 100), 0.02);  // warm-up over
}

TEST(LrSchedule, StepsDecayTenfoldAtTheirFractionsOfTheRun) {
  const auto o = schedule(0.02, 10, 0.001, {0.5, 0.75});
  EXPECT_DOUBLE_EQ(learning_rate(o, 49, 100), 0.02);
  EXPECT_DOUBLE_EQ(learning_rate(o, 50, 100), 0.002);
  EXPECT_DOUBLE_EQ(learning_rate(o, 74, 100), 0.002);
  EXPECT_DOUBLE_EQ(learning_rate(o, 75, 100), 0.0002);
  EXPECT_DOUBLE_EQ(learning_rate(o, 99, 100), 0.0002);
  // The boundaries scale with the run's length.
  EXPECT_DOUBLE_EQ(learning_rate(o, 99, 200), 0.02);
  EXPECT_DOUBLE_EQ(learning_rate(o, 100, 200), 0.002);
  EXPECT_DOUBLE_EQ(learning_rate(o, 150, 200), 0.0002);
}

TEST(LrSchedule, BoundariesAreRoundedToTheNearestIteration) {
  // torchvision's defaults: 0.67 and 0.89 of 10 iterations -> 7 and 9.
  const auto o = schedule(0.01, 0, 0.001, {0.67, 0.89});
  EXPECT_DOUBLE_EQ(learning_rate(o, 6, 10), 0.01);
  EXPECT_DOUBLE_EQ(learning_rate(o, 7, 10), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 8, 10), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9, 10), 0.0001);
  // 0.5 of 3 = 1.5 rounds to 2.
  const auto half = schedule(1.0, 0, 0.001, {0.5});
  EXPECT_DOUBLE_EQ(learning_rate(half, 1, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(half, 2, 3), 0.1);
}

TEST(LrSchedule, WarmUpAndAStepInsideItMultiply) {
  const auto o = schedule(1.0, 10, 0.1, {0.2});  // the step at iteration 4 of 20, during warm-up
  const double warm = 0.1 * (1 - 0.4) + 0.4;
  EXPECT_DOUBLE_EQ(learning_rate(o, 3, 20), 0.1 * 0.7 + 0.3);
  EXPECT_DOUBLE_EQ(learning_rate(o, 4, 20), warm * 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 20), 0.1);
}

TEST(LrSchedule, NoWarmUpStartsAtTheBaseRate) {
  const auto o = schedule(0.05, 0, 0.001, {});
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 10), 0.05);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9, 10), 0.05);
}

TEST(LrSchedule, CosineFallsFromTheEndOfWarmUpToZeroAtTheEndOfTheRun) {
  TrainOptions o;
  o.lr = 0.02;
  o.warmup_iters = 10;
  EXPECT_EQ(o.lr_schedule, "cosine");  // the default
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 110), 0.02 * 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 110), 0.02);
  EXPECT_NEAR(learning_rate(o, 60, 110), 0.01, 1e-12);  // halfway
  EXPECT_NEAR(learning_rate(o, 35, 110), 0.02 * 0.5 * (1 + std::cos(M_PI / 4)), 1e-12);
  EXPECT_NEAR(learning_rate(o, 110, 110), 0.0, 1e-12);
  for (int it = 11; it < 110; ++it) EXPECT_LT(learning_rate(o, it, 110), learning_rate(o, it - 1, 110)) << it;
  // A shorter plan decays sooner.
  EXPECT_LT(learning_rate(o, 60, 80), learning_rate(o, 60, 110));
}

}  // namespace
