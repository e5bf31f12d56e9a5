// tune_allocator_for_inference: LibTorch's CPU tensors come from plain malloc,
// 64-byte aligned, and a freed large block is handed back to the next tensor
// of that size (LibTorch's own posix_memalign blocks were not, so every large
// tensor was faulted in again: ~200 ms per 124 MB tensor on this machine).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <cstdint>
#include <cstdlib>
#include <thread>

#include <sys/resource.h>

#include "maskrcnn/model.h"

namespace {

bool tuned() {
  const char* keep = std::getenv("MASKRCNN_KEEP_MALLOC");
  return !(keep && *keep && std::string(keep) != "0");
}

TEST(AllocatorTuning, TensorsAreAlignedAndHoldTheirData) {
  maskrcnn::tune_allocator_for_inference();
  for (int64_t n : {0, 1, 3, 17, 1000, 65537, 3 << 20}) {
    auto t = at::empty({n}, at::kFloat);
    if (n == 0) continue;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 64, 0u) << n;
    t.fill_(1.5f);
    EXPECT_EQ(t.sum().item<double>(), 1.5 * static_cast<double>(n));
  }
  // Raw allocations (used by some LibTorch kernels) free through raw_deleter.
  auto* alloc = c10::GetCPUAllocator();
  ASSERT_NE(alloc->raw_deleter(), nullptr);
  void* raw = alloc->raw_allocate(12345);
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(raw) % 64, 0u);
  static_cast<char*>(raw)[12344] = 1;
  alloc->raw_deallocate(raw);
}

#if defined(__GLIBC__)
TEST(AllocatorTuning, AFreedFeatureMapIsReusedNotFaultedInAgain) {
  if (!tuned()) GTEST_SKIP() << "MASKRCNN_KEEP_MALLOC is set: malloc left as it is";
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's malloc quarantines freed blocks";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer's malloc quarantines freed blocks";
#endif
#endif
  maskrcnn::tune_allocator_for_inference();
  // The largest FPN level of a batch of two 800x1216 images: 124 MB.
  const std::vector<int64_t> shape{2, 256, 200, 304};
  void* first = nullptr;
  {
    auto a = at::zeros(shape);
    first = a.data_ptr();
  }
  for (int i = 0; i < 3; ++i) {
    auto b = at::zeros(shape);
    EXPECT_EQ(b.data_ptr(), first) << "iteration " << i << ": a new block instead of the freed one";
  }
  // On a thread started after the tuning (as the server's batcher is), the
  // same: glibc would otherwise give it an arena whose 64 MB heaps cannot
  // hold the block, and mmap it afresh (and fault it in again) each time.
  std::thread([&] {
    const auto faults = [] {
      rusage u{};
      getrusage(RUSAGE_SELF, &u);  // zero_ may fill on OpenMP's threads
      return u.ru_minflt;
    };
    const std::vector<int64_t> larger{2, 256, 240, 304};  // not the block main freed: 150 MB, new pages
    const long before = faults();
    { auto a = at::zeros(larger); }
    const long first = faults() - before;
    for (int i = 0; i < 3; ++i) auto b = at::zeros(larger);
    const long again = faults() - before - first;
    EXPECT_GT(first, 0);
    EXPECT_LT(again, first / 4) << "the thread's block was faulted in again: " << first << " faults, then "
                                << again << " over 3 more";
  }).join();
}
#endif

}  // namespace
