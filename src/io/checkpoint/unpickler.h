// An unpickler for exactly what torch.save emits (pickle protocol 2, tolerating the
// protocol 3/4 opcodes: FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL, BINBYTES...).
// It never calls back into anything: globals are checked against a fixed allow-list
// when they are named, and the few allowed callables (OrderedDict, the tensor
// rebuild functions, ...) are implemented here. Inputs are untrusted: every read is
// bounds-checked, the stack and memo are capped, and results that are cyclic or
// nested deeper than kMaxDepth are rejected.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace ckpt {

class Unpickler {
 public:
  // Resolves a persistent id (the tuple ('storage', StorageClass, key, location, numel
  // [, view]) torch writes for each storage) to a Value of kind Storage.
  using PersistentLoad = std::function<pickle::Value(const pickle::Value& pid)>;

  static constexpr size_t kMaxDepth = 1000;

  // [data, data + size) must outlive the unpickler. persistent_load may be empty,
  // in which case a pickle with persistent ids is an error.
  Unpickler(const uint8_t* data, size_t size, PersistentLoad persistent_load = nullptr);

  // When set, tensors are not built (rebuild functions return None). The legacy
  // format's first pass uses it to find where the pickle ends and which storages it
  // needs before their bytes, which follow the pickle, are located.
  void set_dry_run(bool dry_run) { dry_run_ = dry_run; }

  // Unpickles the object starting at byte `offset`; returns it and sets *end to the
  // byte after its STOP opcode. Throws maskrcnn::Error ("pickle: ... at byte N").
  pickle::Value load(size_t offset = 0, size_t* end = nullptr);

 private:
  // One load()'s working set. `containers` holds every container created so that on
  // the way out the ones the result does not keep can be emptied first: destroying
  // them then never recurses deeply, whatever cycles or nesting the input built.
  struct State {
    std::vector<pickle::Value> stack;
    std::vector<size_t> marks;  // stack sizes at each MARK
    std::unordered_map<uint64_t, pickle::Value> memo;
    std::vector<pickle::Value> containers;

    size_t floor() const { return marks.empty() ? 0 : marks.back(); }
    pickle::Value make(pickle::Value v) {
      containers.push_back(v);
      return v;
    }
  };
  pickle::Value run(State& st);
  pickle::Value call(State& st, const pickle::Value& callable, const pickle::Value& args);
  pickle::Value new_object(State& st, const pickle::Value& cls, const pickle::Value& args);
  void build(const pickle::Value& target, const pickle::Value& state);
  pickle::Value global(const std::string& module, const std::string& name);
  void finalize(State& st, const pickle::Value& result);

  [[noreturn]] void fail(const std::string& what) const;
  void need(uint64_t n) const;
  uint8_t u8();
  uint16_t u16();
  uint32_t u32();
  uint64_t u64();
  std::string bytes(uint64_t n);
  std::string line();

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;  // start of the opcode being run, for messages
  PersistentLoad persistent_load_;
  bool dry_run_ = false;
};

}  // namespace ckpt
}  // namespace maskrcnn
