// TrainLoader: every image once per epoch, batches that do not depend on the
// number of workers or on how the global batch is split over ranks, flips
// from hflip_prob, resuming, and worker errors rethrown by batch().
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>

#include "data/coco_detection.h"
#include "data/loader.h"
#include "data/shapes.h"
#include "support/temp_dir.h"
#include "maskrcnn/error.h"

namespace fs = std::filesystem;
using maskrcnn::testing::TempDir;
using namespace maskrcnn;
using namespace maskrcnn::data;

namespace {

void expect_same(const TrainingSample& a, const TrainingSample& b) {
  EXPECT_EQ(a.image_id, b.image_id);
  EXPECT_EQ(a.file_name, b.file_name);
  EXPECT_TRUE(at::equal(a.image, b.image)) << "image " << a.image_id << " (flip differs?)";
  EXPECT_TRUE(at::equal(a.target.boxes, b.target.boxes)) << a.image_id;
  EXPECT_TRUE(at::equal(a.target.labels, b.target.labels)) << a.image_id;
  EXPECT_TRUE(at::equal(a.target.masks, b.target.masks)) << a.image_id;
  EXPECT_EQ(a.target.sampling_seed, b.target.sampling_seed) << a.image_id;
}

class Loader : public ::testing::Test {
 protected:
  static constexpr int kImages = 11;  // odd: batches straddle epoch boundaries

  void SetUp() override {
    ShapesOptions o;
    o.output_dir = dir_ / "set";
    o.num_images = kImages;
    o.size = 32;
    o.seed = 2;
    o.max_objects = 2;
    summary_ = make_shapes_dataset(o);
    dataset_ = std::make_unique<CocoDetectionDataset>(summary_.annotations_path, summary_.images_dir);
  }

  LoaderOptions options(int batch, int workers, int rank = 0, int world = 1) const {
    LoaderOptions o;
    o.batch_size = batch;
    o.num_workers = workers;
    o.rank = rank;
    o.world_size = world;
    o.seed = 17;
    return o;
  }

  TempDir dir_{"loader"};
  ShapesSummary summary_;
  std::unique_ptr<CocoDetectionDataset> dataset_;
};

}  // namespace

TEST_F(Loader, EveryImageOncePerEpoch) {
  TrainLoader loader(*dataset_, options(2, 2));
  EXPECT_EQ(loader.iterations_per_epoch(), 6);  // ceil(11 / 2)
  // 11 iterations x 2 = 22 positions = exactly two epochs.
  std::vector<int64_t> ids;
  for (int64_t it = 0; it < kImages; ++it) {
    auto batch = loader.batch(it);
    ASSERT_EQ(batch.size(), 2u);
    for (const auto& s : batch) ids.push_back(s.image_id);
  }
  std::vector<int64_t> all(kImages);
  for (int i = 0; i < kImages; ++i) all[i] = i + 1;
  std::vector<int64_t> e0(ids.begin(), ids.begin() + kImages), e1(ids.begin() + kImages, ids.end());
  EXPECT_NE(e0, e1) << "each epoch has its own order";
  EXPECT_NE(e0, all) << "shuffled";
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  EXPECT_EQ(e0, all);
  EXPECT_EQ(e1, all);

  // Order by plan only: a third epoch, another seed, and no shuffle.
  std::set<size_t> third;
  for (int64_t p = 2 * kImages; p < 3 * kImages; ++p) third.insert(loader.index_at(p));
  EXPECT_EQ(third.size(), size_t{kImages});
  auto other_seed = options(2, 0);
  other_seed.seed = 18;
  TrainLoader other(*dataset_, other_seed);
  std::vector<size_t> a, b;
  for (int64_t p = 0; p < kImages; ++p) {
    a.push_back(loader.index_at(p));
    b.push_back(other.index_at(p));
  }
  EXPECT_NE(a, b);
  auto sequential = options(2, 0);
  sequential.shuffle = false;
  TrainLoader plain(*dataset_, sequential);
  for (int64_t p = 0; p < 2 * kImages; ++p) EXPECT_EQ(plain.index_at(p), size_t(p % kImages));
}

TEST_F(Loader, SameBatchesForAnyNumberOfWorkers) {
  TrainLoader inline_loader(*dataset_, options(2, 0)), one(*dataset_, options(2, 1)),
      three(*dataset_, options(2, 3));
  for (int64_t it = 0; it < 14; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    const auto a = inline_loader.batch(it), b = one.batch(it), c = three.batch(it);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    ASSERT_EQ(c.size(), 2u);
    for (size_t s = 0; s < 2; ++s) {
      expect_same(a[s], b[s]);
      expect_same(a[s], c[s]);
    }
  }
}

TEST_F(Loader, TwoRanksOfOneSeeWhatOneRankOfTwoSees) {
  TrainLoader single(*dataset_, options(2, 2)), rank0(*dataset_, options(1, 1, 0, 2)),
      rank1(*dataset_, options(1, 2, 1, 2));
  EXPECT_EQ(rank0.iterations_per_epoch(), single.iterations_per_epoch());
  int flipped = 0;
  for (int64_t it = 0; it < 14; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    const auto plan = single.plan(it), p0 = rank0.plan(it), p1 = rank1.plan(it);
    EXPECT_EQ(p0[0].index, plan[0].index);
    EXPECT_EQ(p0[0].hflip, plan[0].hflip);
    EXPECT_EQ(p1[0].index, plan[1].index);
    EXPECT_EQ(p1[0].hflip, plan[1].hflip);
    flipped += plan[0].hflip + plan[1].hflip;
    const auto g = single.batch(it), b0 = rank0.batch(it), b1 = rank1.batch(it);
    ASSERT_EQ(b0.size(), 1u);
    ASSERT_EQ(b1.size(), 1u);
    expect_same(b0[0], g[0]);
    expect_same(b1[0], g[1]);
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 28);
}

TEST_F(Loader, FlipsFollowHflipProb) {
  for (double prob : {0.0, 1.0, 0.5}) {
    SCOPED_TRACE("hflip_prob " + std::to_string(prob));
    auto o = options(2, 2);
    o.hflip_prob = prob;
    TrainLoader loader(*dataset_, o);
    int flipped = 0, total = 0;
    for (int64_t it = 0; it < 60; ++it)
      for (const auto& slot : loader.plan(it)) {
        flipped += slot.hflip;
        ++total;
      }
    if (prob == 0.0) {
      EXPECT_EQ(flipped, 0);
    } else if (prob == 1.0) {
      EXPECT_EQ(flipped, total);
    } else {
      EXPECT_GT(flipped, total / 4);
      EXPECT_LT(flipped, 3 * total / 4);
    }
    // The samples are the data set's, flipped as planned.
    for (int64_t it = 0; it < 4; ++it) {
      const auto plan = loader.plan(it);
      const auto batch = loader.batch(it);
      for (size_t s = 0; s < plan.size(); ++s) {
        auto expected = dataset_->get(plan[s].index, plan[s].hflip);
        EXPECT_EQ(expected.target.sampling_seed, 0u) << "the data set leaves it to the loader";
        expected.target.sampling_seed = plan[s].sampling_seed;
        expect_same(batch[s], expected);
      }
    }
  }
}

TEST_F(Loader, SamplingSeedsDifferPerIterationAndImage) {
  TrainLoader loader(*dataset_, options(2, 0));
  auto other_options = options(2, 0);
  other_options.seed = 99;
  TrainLoader other(*dataset_, other_options);
  std::set<uint64_t> seeds;
  int total = 0;
  for (int64_t it = 0; it < 3 * kImages; ++it) {
    const auto plan = loader.plan(it), other_plan = other.plan(it);
    for (size_t s = 0; s < plan.size(); ++s) {
      seeds.insert(plan[s].sampling_seed);
      ++total;
      EXPECT_NE(plan[s].sampling_seed, other_plan[s].sampling_seed);
    }
  }
  // Each image is seen 6 times in 3 epochs, with a new seed each time.
  EXPECT_EQ(static_cast<int>(seeds.size()), total);
  EXPECT_EQ(loader.batch(4)[1].target.sampling_seed, loader.plan(4)[1].sampling_seed);
}

TEST_F(Loader, ResumingMidRunGivesTheSameBatches) {
  TrainLoader straight(*dataset_, options(2, 2));
  std::vector<std::vector<TrainingSample>> expected;
  for (int64_t it = 0; it < 9; ++it) expected.push_back(straight.batch(it));
  TrainLoader resumed(*dataset_, options(2, 2));
  for (int64_t it : {5, 6, 7, 2, 3, 8, 8}) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    const auto got = resumed.batch(it);
    ASSERT_EQ(got.size(), 2u);
    for (size_t s = 0; s < 2; ++s) expect_same(got[s], expected[it][s]);
  }
}

TEST_F(Loader, WorkerErrorsAreRethrownByBatch) {
  // Without shuffle, iteration 1 holds images 2 and 3; image 3 is missing.
  const std::string missing = summary_.images_dir + "/000003.png";
  fs::remove(missing);
  for (int workers : {0, 1, 3}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    auto o = options(2, workers);
    o.shuffle = false;
    TrainLoader loader(*dataset_, o);
    EXPECT_EQ(loader.batch(0).size(), 2u);  // iteration 1 fails meanwhile, in a worker
    try {
      loader.batch(1);
      ADD_FAILURE() << "expected maskrcnn::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    }
    EXPECT_EQ(loader.batch(2).size(), 2u) << "the loader goes on after an error";
  }
}

TEST_F(Loader, BadOptionsThrow) {
  auto o = options(2, 1);
  o.rank = 1;
  EXPECT_THROW((TrainLoader{*dataset_, o}), Error);
  o = options(0, 1);
  EXPECT_THROW((TrainLoader{*dataset_, o}), Error);
  o = options(2, 1);
  o.hflip_prob = 1.5;
  EXPECT_THROW((TrainLoader{*dataset_, o}), Error);
  o = options(2, -1);
  EXPECT_THROW((TrainLoader{*dataset_, o}), Error);
  TrainLoader ok(*dataset_, options(2, 1));
  EXPECT_THROW(ok.batch(-1), Error);
}

TEST_F(Loader, DestroyedWhilePrefetching) {
  auto o = options(2, 2);
  o.prefetch = 6;
  for (int k = 0; k < 5; ++k) {
    TrainLoader loader(*dataset_, o);
    loader.batch(0);
  }  // each destructor joins workers busy with iterations 1..6
  SUCCEED();
}
