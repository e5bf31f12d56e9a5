// engine::GradientAverager with two ranks in one process: two threads, each
// with its own Gloo group over a loopback TCP store. Every rank's parameters
// get other gradients (one parameter gets none on rank 1, which counts as
// zeros); after finish() each rank holds the mean, for buckets of one
// parameter each, of a few, and of everything.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "engine/distributed.h"

using maskrcnn::engine::GradientAverager;
using maskrcnn::engine::ProcessGroup;
using maskrcnn::engine::Rendezvous;

namespace {

// Runs body(group) on ranks 0 and 1, each in its own thread with its own
// group; rethrows the first rank's exception.
void on_two_ranks(const std::function<void(ProcessGroup&)>& body) {
  const int port = maskrcnn::engine::free_loopback_port();
  ASSERT_GT(port, 0);
  std::exception_ptr errors[2];
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        Rendezvous r;
        r.rank = r.local_rank = rank;
        r.world_size = 2;
        r.master_addr = "127.0.0.1";
        r.master_port = port;
        auto group = ProcessGroup::connect(r, std::chrono::seconds(30));
        body(group);
        group.barrier();  // neither closes its sockets while the other still talks
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// The parameters: several shapes, and one double tensor (a bucket of its own dtype).
std::vector<at::Tensor> make_params() {
  std::vector<at::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{3}, {5, 4}, {7}, {100}, {2, 3, 4}, {1}})
    ps.push_back(at::zeros(shape, at::kFloat).requires_grad_(true));
  ps.push_back(at::zeros({6}, at::kDouble).requires_grad_(true));
  return ps;
}

constexpr size_t kUnusedOnRank1 = 2;

// Rank r's gradient of parameter i in round k: a fixed random tensor, through
// a loss sum((coef * p)) whose gradient is coef. Parameter kUnusedOnRank1 is
// not in rank 1's loss (no gradient there at all).
at::Tensor coefficient(int rank, size_t i, int round, const at::Tensor& p) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * round + 10 * i + rank);
  return at::randn(p.sizes(), gen, p.options().requires_grad(false));
}

struct Case {
  size_t bucket_bytes, first_bucket_bytes;
  size_t expected_buckets;  // 0: don't check
};

void check_mean(const Case& c) {
  std::vector<std::vector<at::Tensor>> grads(2);
  std::vector<size_t> buckets(2);
  on_two_ranks([&](ProcessGroup& group) {
    const int rank = group.rank();
    auto params = make_params();
    GradientAverager averager(group, params, c.bucket_bytes, c.first_bucket_bytes);
    buckets[rank] = averager.num_buckets();
    for (int round = 0; round < 2; ++round) {  // the second reuses the buffers
      for (auto& p : params) p.mutable_grad() = at::Tensor();
      at::Tensor loss = at::zeros({}, at::kDouble);
      for (size_t i = 0; i < params.size(); ++i) {
        if (rank == 1 && i == kUnusedOnRank1) continue;
        loss = loss + (coefficient(rank, i, round, params[i]) * params[i]).sum().to(at::kDouble);
      }
      averager.prepare();
      loss.backward();
      averager.finish();
    }
    for (auto& p : params) grads[rank].push_back(p.grad().clone());
  });
  if (c.expected_buckets) {
    EXPECT_EQ(buckets[0], c.expected_buckets);
  }
  EXPECT_EQ(buckets[0], buckets[1]);
  const auto params = make_params();
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor g0 = coefficient(0, i, 1, params[i]);
    const at::Tensor g1 = i == kUnusedOnRank1 ? at::zeros_like(g0) : coefficient(1, i, 1, params[i]);
    const at::Tensor mean = (g0 + g1) / 2;
    for (int rank = 0; rank < 2; ++rank) {
      ASSERT_TRUE(grads[rank][i].defined()) << "rank " << rank << " parameter " << i;
      EXPECT_EQ(grads[rank][i].scalar_type(), params[i].scalar_type());
      EXPECT_TRUE(at::allclose(grads[rank][i], mean, 1e-6, 1e-7))
          << "rank " << rank << " parameter " << i << ":\n" << grads[rank][i] << "\nexpected\n" << mean;
    }
  }
}

TEST(GradientAverager, EveryParameterInItsOwnBucket) { check_mean({1, 1, 7}); }

TEST(GradientAverager, BucketsOfAFewParameters) { check_mean({64, 16, 0}); }

TEST(GradientAverager, ABigFirstBucketAndSmallOnes) { check_mean({32, 1 << 20, 0}); }

// One bucket per dtype: the double parameter (last, so first in reverse
// order) and all the float ones.
TEST(GradientAverager, OneBucketPerDtypeWhenTheyAreLarge) { check_mean({25u << 20, 25u << 20, 2}); }

TEST(GradientAverager, FinishWithoutPrepareIsAnError) {
  on_two_ranks([&](ProcessGroup& group) {
    auto params = make_params();
    GradientAverager averager(group, params);
    EXPECT_THROW(averager.finish(), maskrcnn::engine::DistError);
  });
}

TEST(GradientAverager, ConnectRejectsABadRank) {
  Rendezvous r;
  r.world_size = 2;
  r.rank = 2;
  try {
    ProcessGroup::connect(r, std::chrono::seconds(1));
    FAIL() << "rank 2 of 2 accepted";
  } catch (const maskrcnn::engine::DistError& e) {
    EXPECT_NE(std::string(e.what()).find("RANK must be set to 0..1"), std::string::npos) << e.what();
  }
}

}  // namespace
