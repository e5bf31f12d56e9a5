// What the oneDNN convolutions (dnnl_conv2d.cpp for inference,
// dnnl_winograd_train.cpp for training) share: the engine, a stream per
// thread and a scratchpad per thread. Internal; include only where oneDNN is.
#pragma once
#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstddef>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ops/memory/huge_pages.h"

namespace maskrcnn::ops::dnnl_common {

inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One stream per calling thread: streams are cheap, and sharing one between
// threads would serialise unrelated forward passes.
inline dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// Bytes that outlive a forward pass (packed weights, the scratchpad), mapped
// on their own rather than taken from malloc's heap. Made during the first
// pass between that pass's feature maps, they left holes in the heap that the
// second pass's maps did not fit: the heap grew again and those maps were
// faulted in anew (one 31 MB band copy took 75 ms instead of 1.4; the second
// photo ~0.15-0.2 s slower than the third). Mapped apart, the second pass
// runs as fast as the later ones and peak RSS falls ~60 MB. Blocks of 4 MB or
// more ask for huge pages as the CPU allocator's do (MASKRCNN_NO_HUGE_PAGES).
inline at::Tensor long_lived_bytes(int64_t bytes) {
#if defined(__linux__)
  if (bytes >= (int64_t{256} << 10)) {
    const auto size = static_cast<std::size_t>(bytes);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      advise_huge_pages(p, size);
      return at::from_blob(p, {bytes}, [size](void* q) { munmap(q, size); }, at::kByte);
    }
  }
#endif
  return at::empty({bytes}, at::kByte);
}

// A LibTorch byte buffer that a dnnl::memory views (for blocked layouts and
// reordered copies), alive as long as this object.
struct Buffer {
  at::Tensor storage;
  dnnl::memory memory;
  explicit Buffer(const dnnl::memory::desc& md) {
    storage = at::empty({static_cast<int64_t>(md.get_size()) + 64}, at::kByte);
    memory = dnnl::memory(md, cpu_engine(), storage.data_ptr());
  }
};

// `weight` (any float tensor whose values are in the `plain` layout once
// contiguous) reordered once into the `packed` layout a primitive wants,
// kept in `storage`.
inline dnnl::memory packed_weights(const at::Tensor& weight, const dnnl::memory::desc& plain,
                                   const dnnl::memory::desc& packed, at::Tensor& storage) {
  at::Tensor w = weight.to(at::kFloat).contiguous();
  dnnl::memory from(plain, cpu_engine(), w.data_ptr());
  storage = long_lived_bytes(static_cast<int64_t>(packed.get_size()));
  dnnl::memory to(packed, cpu_engine(), storage.data_ptr());
  dnnl::reorder(from, to).execute(thread_stream(), from, to);
  thread_stream().wait();
  return to;
}

// A float copy of `bias` as a dnnl::memory of `md`, kept in `storage`.
inline dnnl::memory bias_memory(const at::Tensor& bias, const dnnl::memory::desc& md, at::Tensor& storage) {
  storage = bias.to(at::kFloat).contiguous().clone();
  return dnnl::memory(md, cpu_engine(), storage.data_ptr());
}

// The scratchpad (Winograd's transformed tiles) of this thread's
// convolutions, inference and training alike, grown and never shrunk. A fresh
// allocation of that size per call would be faulted in page by page whenever
// a new image size outgrows the heap's free blocks: ~0.9 s on this machine's
// VM for 300 MB, more than the convolution itself. It is mapped 384 MB at
// least (address space only: the kernel backs the pages a convolution
// touches), above the default Winograd budget of 320 MB, so that a larger
// image than any before does not move it to fresh pages: that move faulted
// the whole scratchpad in again, ~80 ms on the first stride-4 convolution of
// a 800x1280 image after 800x1216 ones.
inline dnnl::memory thread_scratchpad(std::size_t bytes) {
  constexpr std::size_t kReserve = std::size_t{384} << 20;
  thread_local at::Tensor scratch;
  if (!scratch.defined() || static_cast<std::size_t>(scratch.numel()) < bytes) {
    scratch = at::Tensor();  // free the old one first
    scratch = long_lived_bytes(static_cast<int64_t>(std::max(bytes + 64, kReserve)));
  }
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  return dnnl::memory(dnnl::memory::desc({static_cast<int64_t>(bytes)}, dt::u8, tag::x), cpu_engine(),
                      scratch.data_ptr());
}

}  // namespace maskrcnn::ops::dnnl_common
