// Transparent huge pages for large, long-walked buffers: the CPU allocator's
// feature maps (modeling/allocator_tuning.cpp) and oneDNN's packed weights and
// scratchpad (ops/conv/dnnl_common.h). Debian's THP mode backs only regions
// that ask (madvise). MASKRCNN_NO_HUGE_PAGES=1 turns the advice off.
#pragma once
#include <cstddef>

namespace maskrcnn::ops {

// Blocks at least this large are advised.
constexpr std::size_t kHugePageMinBytes = std::size_t{4} << 20;

// Marks the whole 2 MB pages inside [data, data + bytes) MADV_HUGEPAGE when
// bytes >= kHugePageMinBytes and MASKRCNN_NO_HUGE_PAGES is unset or 0. Advice
// only: pages already faulted in stay as they are. No-op off Linux.
void advise_huge_pages(void* data, std::size_t bytes);

}  // namespace maskrcnn::ops
