// Writes a pickle::Value as pickle protocol 2, the way torch.save does: each tensor
// becomes torch._utils._rebuild_tensor_v2(persistent storage id, offset, size,
// stride, requires_grad, OrderedDict()), and each distinct storage is listed once in
// storages() for the caller to write as data/<key>.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace ckpt {

class Pickler {
 public:
  struct Storage {
    std::string key;    // "0", "1", ... in first-use order, like torch
    at::Tensor holder;  // keeps the (CPU) storage alive
    const void* data;
    size_t nbytes;
  };

  static constexpr size_t kMaxDepth = 1000;

  // The pickle bytes of `value`. Throws maskrcnn::Error for values Python could not
  // load back (unhashable keys, attributes on a plain dict, unknown object classes,
  // undefined or sparse tensors) and for nesting deeper than kMaxDepth (or cycles).
  std::string dump(const pickle::Value& value);
  const std::vector<Storage>& storages() const { return storages_; }

 private:
  void write(const pickle::Value& v, size_t depth);
  void write_entries(const pickle::Value::Entries& entries, size_t depth);
  void write_tensor(at::Tensor t);
  void write_int(int64_t v);
  void write_str(const std::string& s);
  void write_global(const std::string& module, const std::string& name);
  void write_memoized_str(const std::string& s);
  bool memo_get(const std::string& key);
  void memo_put(const std::string& key);
  void op(uint8_t code) { out_.push_back(char(code)); }
  void check_key(const pickle::Value& key, size_t depth) const;

  std::string out_;
  std::unordered_map<std::string, uint32_t> memo_;  // globals and repeated strings
  std::unordered_map<const void*, size_t> storage_index_;
  std::vector<Storage> storages_;
};

}  // namespace ckpt
}  // namespace maskrcnn
