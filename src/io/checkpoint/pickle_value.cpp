// maskrcnn::pickle::Value: a small tagged union for the Python objects torch.save
// emits. Containers are shared_ptr so that the unpickler's memo (which hands out the
// same object again, possibly before it is filled) behaves like Python's.
#include <cmath>
#include <cstring>

#include "io/checkpoint/torch_types.h"
#include "maskrcnn/error.h"
#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace pickle {

Value::Value() = default;

Value Value::boolean(bool v) {
  Value out(Kind::Bool);
  out.bool_ = v;
  return out;
}
Value Value::integer(int64_t v) {
  Value out(Kind::Int);
  out.int_ = v;
  return out;
}
Value Value::real(double v) {
  Value out(Kind::Float);
  out.double_ = v;
  return out;
}
Value Value::string(std::string v) {
  Value out(Kind::String);
  out.str_ = std::make_shared<const std::string>(std::move(v));
  return out;
}
Value Value::bytes(std::string v) {
  Value out(Kind::Bytes);
  out.str_ = std::make_shared<const std::string>(std::move(v));
  return out;
}
Value Value::tensor(at::Tensor v) {
  Value out(Kind::Tensor);
  out.tensor_ = std::move(v);
  return out;
}
Value Value::list(Items items) {
  Value out(Kind::List);
  out.items_ = std::make_shared<Items>(std::move(items));
  return out;
}
Value Value::tuple(Items items) {
  Value out(Kind::Tuple);
  out.items_ = std::make_shared<Items>(std::move(items));
  return out;
}
Value Value::dict(Entries entries) {
  Value out(Kind::Dict);
  out.entries_ = std::make_shared<Entries>(std::move(entries));
  out.attributes_ = std::make_shared<Entries>();
  return out;
}
Value Value::ordered_dict(Entries entries) {
  Value out = dict(std::move(entries));
  out.bool_ = true;
  return out;
}
Value Value::object(std::string class_name, Entries attributes) {
  Value out(Kind::Object);
  out.str_ = std::make_shared<const std::string>(std::move(class_name));
  out.attributes_ = std::make_shared<Entries>(std::move(attributes));
  return out;
}
Value Value::global(std::string qualified_name) {
  Value out(Kind::Global);
  out.str_ = std::make_shared<const std::string>(std::move(qualified_name));
  return out;
}
Value Value::storage(std::shared_ptr<const detail::StorageRef> ref) {
  Value out(Kind::Storage);
  out.storage_ = std::move(ref);
  return out;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tensor: return "tensor";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return bool_ ? "OrderedDict" : "dict";
    case Kind::Object: return "object";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
  }
  return "?";
}

std::string Value::describe() const {
  if (kind_ == Kind::None) return "None";
  const char* name = kind_name();
  return (std::strchr("aeiouAEIOU", name[0]) != nullptr ? "an " : "a ") + std::string(name);
}

void Value::expect(Kind k, const char* what) const {
  if (kind_ != k) throw Error("pickled value is " + describe() + ", expected " + what);
}

bool Value::to_bool() const {
  expect(Kind::Bool, "a bool");
  return bool_;
}
int64_t Value::to_int() const {
  if (kind_ == Kind::Bool) return bool_ ? 1 : 0;
  expect(Kind::Int, "an int");
  return int_;
}
double Value::to_double() const {
  if (kind_ == Kind::Int) return double(int_);
  expect(Kind::Float, "a float");
  return double_;
}
const std::string& Value::to_str() const {
  if (kind_ != Kind::Bytes) expect(Kind::String, "a str");
  return *str_;
}
const at::Tensor& Value::to_tensor() const {
  expect(Kind::Tensor, "a tensor");
  return tensor_;
}

Value::Items& Value::items() {
  if (kind_ != Kind::Tuple) expect(Kind::List, "a list or tuple");
  return *items_;
}
const Value::Items& Value::items() const { return const_cast<Value*>(this)->items(); }

Value::Entries& Value::entries() {
  expect(Kind::Dict, "a dict");
  return *entries_;
}
const Value::Entries& Value::entries() const { return const_cast<Value*>(this)->entries(); }

bool Value::is_ordered() const {
  expect(Kind::Dict, "a dict");
  return bool_;
}

Value::Entries& Value::attributes() {
  if (kind_ != Kind::Object) expect(Kind::Dict, "a dict or object");
  return *attributes_;
}
const Value::Entries& Value::attributes() const { return const_cast<Value*>(this)->attributes(); }

const std::string& Value::class_name() const {
  if (kind_ != Kind::Global) expect(Kind::Object, "an object");
  return *str_;
}

const std::shared_ptr<const detail::StorageRef>& Value::storage_ref() const {
  expect(Kind::Storage, "a storage");
  return storage_;
}

const Value* Value::find(const std::string& key) const { return const_cast<Value*>(this)->find(key); }

Value* Value::find(const std::string& key) {
  Entries& e = kind_ == Kind::Object ? *attributes_ : entries();
  for (auto& kv : e)
    if (kv.first.kind_ == Kind::String && *kv.first.str_ == key) return &kv.second;
  return nullptr;
}

const Value* Value::attribute(const std::string& key) const {
  for (const auto& kv : attributes())
    if (kv.first.kind_ == Kind::String && *kv.first.str_ == key) return &kv.second;
  return nullptr;
}

void Value::set(Value key, Value value) {
  Entries& e = entries();
  for (auto& kv : e) {
    if (kv.first.key_equals(key)) {
      kv.second = std::move(value);
      return;
    }
  }
  e.emplace_back(std::move(key), std::move(value));
}

bool Value::key_equals(const Value& other) const {
  // Python: True == 1 == 1.0, so bools and ints compare as numbers.
  auto numeric = [](const Value& v) { return v.kind_ == Kind::Bool || v.kind_ == Kind::Int || v.kind_ == Kind::Float; };
  if (numeric(*this) && numeric(other)) {
    auto as_double = [](const Value& v) { return v.kind_ == Kind::Float ? v.double_ : double(v.to_int()); };
    if (kind_ == Kind::Float || other.kind_ == Kind::Float) return as_double(*this) == as_double(other);
    return to_int() == other.to_int();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::None: return true;
    case Kind::String:
    case Kind::Bytes: return *str_ == *other.str_;
    case Kind::Tuple: {
      if (items_->size() != other.items_->size()) return false;
      for (size_t i = 0; i < items_->size(); ++i)
        if (!(*items_)[i].key_equals((*other.items_)[i])) return false;
      return true;
    }
    default: return identity() != nullptr && identity() == other.identity();
  }
}

const void* Value::identity() const {
  switch (kind_) {
    case Kind::List:
    case Kind::Tuple: return items_.get();
    case Kind::Dict: return entries_.get();
    case Kind::Object: return attributes_.get();
    default: return nullptr;
  }
}

}  // namespace pickle
}  // namespace maskrcnn
