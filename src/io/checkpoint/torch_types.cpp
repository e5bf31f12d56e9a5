#include "io/checkpoint/torch_types.h"

#include <ATen/ATen.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>

#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {
namespace {

struct StorageClass {
  const char* name;
  at::ScalarType dtype;
};

// torch/storage.py _dtype_to_storage_type_map, minus the quantized types (whose
// tensors pickle through _rebuild_qtensor, which we do not accept anyway).
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", at::kFloat},         {"DoubleStorage", at::kDouble},
    {"HalfStorage", at::kHalf},           {"BFloat16Storage", at::kBFloat16},
    {"LongStorage", at::kLong},           {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort},         {"CharStorage", at::kChar},
    {"ByteStorage", at::kByte},           {"BoolStorage", at::kBool},
    {"ComplexFloatStorage", at::kComplexFloat}, {"ComplexDoubleStorage", at::kComplexDouble},
};

std::string str(int64_t v) { return std::to_string(v); }

// Asks for transparent huge pages on the 2 MiB-aligned inside of a big, still
// untouched buffer: filling it then takes a few hundred page faults instead of
// hundreds of thousands, which halves the load time of a 170 MB checkpoint on
// machines where page faults are dear (VMs). Advisory only; failures are ignored.
void advise_huge_pages(void* data, size_t nbytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (nbytes < 2 * kHuge) return;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + nbytes) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)nbytes;
#endif
}

}  // namespace

bool storage_dtype(const std::string& class_name, at::ScalarType* dtype) {
  for (const auto& c : kStorageClasses) {
    if (class_name == c.name) {
      *dtype = c.dtype;
      return true;
    }
  }
  if (class_name == "UntypedStorage") {  // torch.save of a bare untyped storage: bytes
    *dtype = at::kByte;
    return true;
  }
  return false;
}

const char* storage_class_name(at::ScalarType dtype) {
  for (const auto& c : kStorageClasses)
    if (c.dtype == dtype) return c.name;
  throw Error(std::string("tensors of dtype ") + c10::toString(dtype) + " cannot be saved");
}

bool is_storage_global(const std::string& qualified_name, at::ScalarType* dtype) {
  // Old torch saved CUDA tensors' storages as torch.cuda.FloatStorage; we load to CPU.
  for (const char* prefix : {"torch.", "torch.cuda."}) {
    size_t n = std::strlen(prefix);
    if (qualified_name.size() > n && qualified_name.compare(0, n, prefix) == 0 &&
        qualified_name.find('.', n) == std::string::npos &&
        storage_dtype(qualified_name.substr(n), dtype))
      return true;
  }
  return false;
}

at::Tensor rebuild_tensor(const pickle::detail::StorageRef& storage, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  const std::string where = "tensor in storage '" + storage.key + "'";
  if (size.size() != stride.size())
    throw Error(where + " has " + str(int64_t(size.size())) + " sizes but " + str(int64_t(stride.size())) + " strides");
  if (size.size() > 64) throw Error(where + " has more than 64 dimensions");
  if (offset < 0) throw Error(where + " has a negative storage offset");
  int64_t numel = 1;
  for (int64_t s : size) {
    if (s < 0) throw Error(where + " has a negative size");
    if (__builtin_mul_overflow(numel, s, &numel)) throw Error(where + " has too many elements");
  }
  for (int64_t s : stride)
    if (s < 0) throw Error(where + " has a negative stride");

  // Bool storages are copied as bytes and normalised at the end.
  const bool is_bool = storage.dtype == at::kBool;
  const at::ScalarType copy_type = is_bool ? at::kByte : storage.dtype;
  at::Tensor out = at::empty(size, at::TensorOptions().dtype(copy_type));
  if (numel > 0) {
    // The farthest element: offset + sum((size_k - 1) * stride_k), must be in storage.
    int64_t last = offset;
    for (size_t k = 0; k < size.size(); ++k) {
      int64_t reach;
      if (__builtin_mul_overflow(size[k] - 1, stride[k], &reach) || __builtin_add_overflow(last, reach, &last))
        throw Error(where + " has sizes/strides that overflow");
    }
    if (last >= storage.numel)
      throw Error(where + " reaches element " + str(last) + " but the storage holds " + str(storage.numel));
    if (storage.data == nullptr) throw Error(where + " has no data");
    const size_t elem = c10::elementSize(storage.dtype);
    const uint8_t* base = storage.data + size_t(offset) * elem;

    bool contiguous = true;
    int64_t expected = 1;
    for (size_t k = size.size(); k-- > 0;) {
      if (size[k] != 1 && stride[k] != expected) contiguous = false;
      expected *= size[k];
    }
    if (contiguous) {
      advise_huge_pages(out.data_ptr(), size_t(numel) * elem);
      std::memcpy(out.data_ptr(), base, size_t(numel) * elem);
    } else {
      // Copy the span the view touches into an aligned buffer first (legacy files
      // do not align storages), then let ATen gather the strided elements.
      const int64_t span = last - offset + 1;
      at::Tensor buf = at::empty({span}, at::TensorOptions().dtype(copy_type));
      std::memcpy(buf.data_ptr(), base, size_t(span) * elem);
      out.copy_(buf.as_strided(size, stride, 0));
    }
  }
  return is_bool ? out.ne(0) : out;
}

}  // namespace ckpt
}  // namespace maskrcnn
