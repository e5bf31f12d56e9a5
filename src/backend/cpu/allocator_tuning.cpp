// glibc malloc tuning for LibTorch inference on the CPU.
//
// glibc serves blocks above its mmap threshold (at most 32 MB with the dynamic
// threshold) with mmap and gives them back to the kernel on free. Mask R-CNN's
// feature maps are 50-200 MB and are freed after every layer, so each layer's
// output is faulted in page by page again (clear_page, ~1/3 of all CPU time,
// and heavy system time). Keeping freed memory in the heap made a 900x600
// photo go from 10.8 s to 3.0 s on 2 threads. Peak RSS does not grow: memory is
// reused, not added. Also caps oneDNN's primitive cache (below).
//
// That reuse needs plain malloc: LibTorch's CPU allocator takes its blocks from
// posix_memalign(64), and glibc 2.36 does not hand a freed block of 100+ MB
// back to the next aligned request of the same size; it grows the heap
// instead, so every large tensor was faulted in again anyway (measured: a+b
// on two 124 MB tensors 195-250 ms, 24-30k page faults a call; into a reused
// buffer 7 ms). tune_allocator_for_inference therefore also installs
// HeapCPUAllocator: malloc'ed blocks aligned to 64 bytes by hand.
//
// One arena for every thread (M_ARENA_MAX 1): glibc gives each new thread an
// arena of its own, whose heaps are at most 64 MB; a larger block there is
// mmapped on every malloc and unmapped on free, whatever the threshold. A
// model run on a thread other than main (the server's batcher) faulted each
// feature map in again: 4,300 page faults and ~7% more time a photo, against
// ~90 with one arena. Call this before starting threads: a thread that has
// already allocated keeps its arena.
//
// Large blocks are also marked for transparent huge pages (madvise; Debian's
// default THP mode only backs regions that ask). A 55 MB feature map spans
// ~14k 4 KB pages, more than the TLB holds, and the convolutions walk several
// such maps at once. With 2 MB pages (as glibc's glibc.malloc.hugetlb=1
// tunable would give) `maskrcnn bench` used 5-9% less user time in three
// interleaved runs, time per photo moved within the noise, start-up page
// faults fell from ~330k to ~130k, and peak RSS stayed the same (the heap's
// memory is reused rather than returned). MASKRCNN_NO_HUGE_PAGES=1 turns it off.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#ifdef MASKRCNN_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "maskrcnn/cpu_settings.h"
#include "ops/memory/huge_pages.h"

namespace maskrcnn {
namespace {

// LibTorch's CPU allocator, on malloc. Blocks are aligned to 64 bytes (as
// LibTorch's are, for AVX-512 loads) inside a malloc'ed block 64 bytes
// larger; the byte before a block holds its offset from the malloc'ed start,
// so the data pointer alone frees it (raw_deleter works too).
//
// No `override`: LibTorch 1.13 declares `allocate(size_t) const`, 2.3 and
// later `allocate(size_t)` and a pure `copy_data`; both overloads are here and
// whichever the base declares is the one that overrides.
class HeapCPUAllocator final : public c10::Allocator {
 public:
  static constexpr std::size_t kAlignment = 64;

  c10::DataPtr allocate(std::size_t bytes) const { return make(bytes); }
  c10::DataPtr allocate(std::size_t bytes) { return make(bytes); }
  c10::DeleterFnPtr raw_deleter() const { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const {
    if (count > 0) std::memcpy(dest, src, count);
  }

 private:
  static c10::DataPtr make(std::size_t bytes) {
    void* data = allocate_raw(bytes);
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  static void* allocate_raw(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    TORCH_CHECK(bytes <= SIZE_MAX - kAlignment, "HeapCPUAllocator: cannot allocate ", bytes, " bytes");
    auto* raw = static_cast<std::uint8_t*>(std::malloc(bytes + kAlignment));
    TORCH_CHECK(raw != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", bytes,
                " bytes.");
    // malloc's blocks are 16-byte aligned: the offset is 16, 32, 48 or 64.
    const auto address = reinterpret_cast<std::uintptr_t>(raw);
    const std::size_t offset = kAlignment - address % kAlignment;
    std::uint8_t* data = raw + offset;
    data[-1] = static_cast<std::uint8_t>(offset);
    // Blocks of 4 MB or more get the 2 MB pages inside them marked
    // MADV_HUGEPAGE: the heap's later growth and reused ranges the kernel has
    // not backed yet get huge pages.
    ops::advise_huge_pages(data, bytes);
    return data;
  }
  static void release(void* data) {
    if (data == nullptr) return;
    auto* p = static_cast<std::uint8_t*>(data);
    std::free(p - p[-1]);
  }
};

}  // namespace

void tune_allocator_for_inference() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* keep = std::getenv("MASKRCNN_KEEP_MALLOC");
    if (keep && *keep && std::string(keep) != "0") return;
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // blocks up to 1 GB come from the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30);  // and stay there when freed
    mallopt(M_ARENA_MAX, 1);              // for every thread (above)
    // Never destroyed: tensors may still be allocated while statics are torn down.
    static auto* heap_allocator = new HeapCPUAllocator();
    c10::SetCPUAllocator(heap_allocator, /*priority=*/1);  // above LibTorch's default (0)
#endif
  });
#ifdef MASKRCNN_HAVE_DNNL
  // oneDNN keeps its last 1024 primitives (JIT code and all) in a process-wide
  // cache: ~500 MB of peak RSS after 5 image sizes, for no measured speed
  // (our layers and LibTorch's keep the primitives they use). 16 unless the
  // user sets ONEDNN_PRIMITIVE_CACHE_CAPACITY.
  static std::once_flag cache_once;
  std::call_once(cache_once, [] {
    if (!std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") && !std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY"))
      dnnl::set_primitive_cache_capacity(16);
  });
#endif
}

void tune_primitive_cache_for_training() {
  tune_allocator_for_inference();
#ifdef MASKRCNN_HAVE_DNNL
  if (!std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") && !std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY"))
    dnnl::set_primitive_cache_capacity(1024);
#endif
}

}  // namespace maskrcnn
