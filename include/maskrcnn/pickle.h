// Python values as torch.save pickles them, for whole training checkpoints:
//   {"model": state_dict, "optimizer": {"state": {0: {...}}, "param_groups": [...]},
//    "lr_scheduler": {...}, "epoch": 7, "args": argparse.Namespace(...)}
//
// torch_load reads any torch.save'd file (zip or legacy format) into a pickle::Value
// tree; torch_save writes one in torch's zip format. Only data is accepted: None,
// bool, int, float, str, bytes, tensors, list, tuple, dict / OrderedDict (with its
// attributes, e.g. `_metadata`), collections.Counter (read as a dict) and
// argparse.Namespace (an Object). Any other Python global makes torch_load throw
// maskrcnn::Error naming it; no code is ever run.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace maskrcnn {
namespace pickle {

namespace detail {
struct StorageRef;  // a torch storage seen while unpickling (src/io/checkpoint)
}

// One Python value. Containers (List, Tuple, Dict, Object) have reference semantics
// like Python objects: copying a Value shares the container, so mutating one copy's
// items() is seen by the other. Accessors of the wrong kind throw maskrcnn::Error.
class Value {
 public:
  enum class Kind {
    None, Bool, Int, Float, String, Bytes, Tensor, List, Tuple, Dict,
    Object,   // an instance of an allowed class (argparse.Namespace): class_name() + attributes()
    Global,   // internal: a class or function reference met while unpickling
    Storage,  // internal: a torch storage met while unpickling
  };
  using Items = std::vector<Value>;
  using Entries = std::vector<std::pair<Value, Value>>;

  Value();  // None
  static Value none() { return Value(); }
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value real(double v);
  static Value string(std::string v);  // Python str (UTF-8)
  static Value bytes(std::string v);   // Python bytes
  static Value tensor(at::Tensor v);
  static Value list(Items items = {});
  static Value tuple(Items items = {});
  static Value dict(Entries entries = {});          // dict
  static Value ordered_dict(Entries entries = {});  // collections.OrderedDict
  static Value object(std::string class_name, Entries attributes = {});
  static Value global(std::string qualified_name);
  static Value storage(std::shared_ptr<const detail::StorageRef> ref);

  Kind kind() const { return kind_; }
  const char* kind_name() const;  // "int", "dict", ... for messages
  std::string describe() const;   // "an int", "a dict", "None", ... for messages
  bool is_none() const { return kind_ == Kind::None; }
  bool is_tensor() const { return kind_ == Kind::Tensor; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }

  bool to_bool() const;
  int64_t to_int() const;         // Int (or Bool)
  double to_double() const;       // Float or Int
  const std::string& to_str() const;  // String or Bytes
  const at::Tensor& to_tensor() const;

  Items& items();  // List or Tuple
  const Items& items() const;
  Entries& entries();  // Dict, in insertion order
  const Entries& entries() const;
  bool is_ordered() const;  // Dict: was it an OrderedDict
  // Dict: attributes set by BUILD (an OrderedDict state dict's `_metadata`);
  // Object: the instance's attributes.
  Entries& attributes();
  const Entries& attributes() const;
  const std::string& class_name() const;  // Object or Global: "module.name"
  const std::shared_ptr<const detail::StorageRef>& storage_ref() const;

  // Dict: the value under string key `key` (Object: the attribute), or nullptr.
  const Value* find(const std::string& key) const;
  Value* find(const std::string& key);
  // Dict or Object: the attribute named `key` (e.g. "_metadata"), or nullptr.
  const Value* attribute(const std::string& key) const;
  // Dict: sets d[key] = value, keeping the position of an existing key.
  void set(Value key, Value value);
  // Python equality of two scalar keys (None/bool/int/float/str/bytes/tuples of them).
  bool key_equals(const Value& other) const;
  // Identity of the container (nullptr for scalars), for cycle checks.
  const void* identity() const;

 private:
  explicit Value(Kind k) : kind_(k) {}
  void expect(Kind k, const char* what) const;

  Kind kind_ = Kind::None;
  bool bool_ = false;  // Bool value; Dict: ordered
  int64_t int_ = 0;
  double double_ = 0.0;
  std::shared_ptr<const std::string> str_;  // String/Bytes; Object/Global: class name
  at::Tensor tensor_;
  std::shared_ptr<Items> items_;
  std::shared_ptr<Entries> entries_;
  std::shared_ptr<Entries> attributes_;
  std::shared_ptr<const detail::StorageRef> storage_;
};

}  // namespace pickle

// Reads any torch.save'd file (zip or legacy) into a Value tree. Tensors come back as
// contiguous CPU tensors (see load_state_dict in maskrcnn/checkpoint.h).
// Throws maskrcnn::Error with a one-line message naming the file.
pickle::Value torch_load(const std::string& path);

// Writes `obj` in torch's zip format (pickle protocol 2), atomically like
// save_state_dict. Python's torch.load reads it back with the same structure:
// Dicts marked ordered become OrderedDicts (with their attributes), Objects become
// instances of their class (only argparse.Namespace is supported). Dict keys must
// be scalars or tuples (Python needs them hashable).
void torch_save(const pickle::Value& obj, const std::string& path);

}  // namespace maskrcnn
