// What torch's pickles refer to: storage classes (torch.FloatStorage, ...) and the
// storages themselves, plus turning (storage, offset, size, stride) into a tensor
// with every index checked against the storage first.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace pickle {
namespace detail {

// A storage as the pickle's persistent id describes it. `data` points into the
// mapped file (numel * element size bytes) or is null in the legacy format's first
// pass, before the storage bytes (which follow the pickle) have been located.
struct StorageRef {
  at::ScalarType dtype = at::kByte;
  int64_t numel = 0;  // elements
  const uint8_t* data = nullptr;
  std::string key;
};

}  // namespace detail
}  // namespace pickle

namespace ckpt {

// "FloatStorage" -> kFloat, ... (also "UntypedStorage" -> kByte). False if unknown.
bool storage_dtype(const std::string& class_name, at::ScalarType* dtype);
// kFloat -> "FloatStorage"; throws maskrcnn::Error for dtypes torch cannot pickle.
const char* storage_class_name(at::ScalarType dtype);
// Whether "module.name" names a torch storage class (torch.X or torch.cuda.X).
bool is_storage_global(const std::string& qualified_name, at::ScalarType* dtype);

// A fresh contiguous CPU tensor holding storage[offset + sum(i_k * stride_k)].
// Throws maskrcnn::Error when any element would fall outside the storage, sizes or
// strides are negative, or the arithmetic overflows. Bool bytes other than 0/1
// become true (never an invalid bool).
at::Tensor rebuild_tensor(const pickle::detail::StorageRef& storage, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride);

}  // namespace ckpt
}  // namespace maskrcnn
