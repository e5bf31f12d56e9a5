#include "io/checkpoint/pickler.h"

#include <ATen/ATen.h>

#include <cstring>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_types.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;
using Kind = pickle::Value::Kind;

namespace {
constexpr size_t kBatch = 1000;  // items per APPENDS/SETITEMS, as Python's pickler does
}

std::string Pickler::dump(const Value& value) {
  out_.clear();
  memo_.clear();
  storage_index_.clear();
  storages_.clear();
  op(0x80);  // PROTO 2
  op(2);
  write(value, 0);
  op('.');
  return out_;
}

bool Pickler::memo_get(const std::string& key) {
  auto it = memo_.find(key);
  if (it == memo_.end()) return false;
  uint32_t i = it->second;
  if (i < 256) {
    op('h');
    op(uint8_t(i));
  } else {
    op('j');
    uint8_t b[4];
    store_le32(b, i);
    out_.append(reinterpret_cast<char*>(b), 4);
  }
  return true;
}

void Pickler::memo_put(const std::string& key) {
  uint32_t i = uint32_t(memo_.size());
  memo_.emplace(key, i);
  if (i < 256) {
    op('q');
    op(uint8_t(i));
  } else {
    op('r');
    uint8_t b[4];
    store_le32(b, i);
    out_.append(reinterpret_cast<char*>(b), 4);
  }
}

void Pickler::write_int(int64_t v) {
  uint8_t b[8];
  if (v >= 0 && v < 256) {
    op('K');
    op(uint8_t(v));
  } else if (v >= 0 && v < 65536) {
    op('M');
    store_le16(b, uint16_t(v));
    out_.append(reinterpret_cast<char*>(b), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op('J');
    store_le32(b, uint32_t(int32_t(v)));
    out_.append(reinterpret_cast<char*>(b), 4);
  } else {
    op(0x8a);  // LONG1, 8 bytes two's complement
    op(8);
    store_le64(b, uint64_t(v));
    out_.append(reinterpret_cast<char*>(b), 8);
  }
}

void Pickler::write_str(const std::string& s) {
  uint8_t b[8];
  if (s.size() <= 0xFFFFFFFFu) {
    op('X');
    store_le32(b, uint32_t(s.size()));
    out_.append(reinterpret_cast<char*>(b), 4);
  } else {
    op(0x8d);  // BINUNICODE8
    store_le64(b, s.size());
    out_.append(reinterpret_cast<char*>(b), 8);
  }
  out_ += s;
}

void Pickler::write_memoized_str(const std::string& s) {
  if (memo_get("s:" + s)) return;
  write_str(s);
  memo_put("s:" + s);
}

void Pickler::write_global(const std::string& module, const std::string& name) {
  const std::string key = "g:" + module + "." + name;
  if (memo_get(key)) return;
  op('c');
  out_ += module + "\n" + name + "\n";
  memo_put(key);
}

void Pickler::check_key(const Value& key, size_t depth) const {
  switch (key.kind()) {
    case Kind::None:
    case Kind::Bool:
    case Kind::Int:
    case Kind::Float:
    case Kind::String:
    case Kind::Bytes: return;
    case Kind::Tuple:
      if (depth > kMaxDepth) throw Error("pickle: dict key nested too deeply");
      for (const Value& x : key.items()) check_key(x, depth + 1);
      return;
    default: throw Error(std::string("pickle: ") + key.describe() + " cannot be a dict key in Python");
  }
}

void Pickler::write_entries(const Value::Entries& entries, size_t depth) {
  for (size_t i = 0; i < entries.size(); i += kBatch) {
    op('(');
    for (size_t j = i; j < std::min(entries.size(), i + kBatch); ++j) {
      check_key(entries[j].first, depth);
      write(entries[j].first, depth + 1);
      write(entries[j].second, depth + 1);
    }
    op('u');  // SETITEMS
  }
}

void Pickler::write(const Value& v, size_t depth) {
  if (depth > kMaxDepth) throw Error("pickle: value nested deeper than 1000 levels (or cyclic)");
  uint8_t b[8];
  switch (v.kind()) {
    case Kind::None: op('N'); return;
    case Kind::Bool: op(v.to_bool() ? 0x88 : 0x89); return;
    case Kind::Int: write_int(v.to_int()); return;
    case Kind::Float: {
      double d = v.to_double();
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      op('G');
      for (int i = 7; i >= 0; --i) op(uint8_t(bits >> (8 * i)));  // big-endian
      return;
    }
    case Kind::String: write_str(v.to_str()); return;
    case Kind::Bytes: {
      // Protocol 3's BINBYTES: Python's unpickler accepts it whatever the PROTO says,
      // and it avoids protocol 2's _codecs.encode detour.
      const std::string& s = v.to_str();
      op(s.size() <= 0xFFFFFFFFu ? 'B' : 0x8e);
      if (s.size() <= 0xFFFFFFFFu) {
        store_le32(b, uint32_t(s.size()));
        out_.append(reinterpret_cast<char*>(b), 4);
      } else {
        store_le64(b, s.size());
        out_.append(reinterpret_cast<char*>(b), 8);
      }
      out_ += s;
      return;
    }
    case Kind::Tensor: write_tensor(v.to_tensor()); return;
    case Kind::Tuple: {
      const auto& items = v.items();
      if (items.empty()) {
        op(')');
        return;
      }
      if (items.size() > 3) op('(');
      for (const Value& x : items) write(x, depth + 1);
      op(items.size() > 3 ? 't' : uint8_t(0x84 + items.size()));  // TUPLE or TUPLE1..3
      return;
    }
    case Kind::List: {
      op(']');
      const auto& items = v.items();
      for (size_t i = 0; i < items.size(); i += kBatch) {
        op('(');
        for (size_t j = i; j < std::min(items.size(), i + kBatch); ++j) write(items[j], depth + 1);
        op('e');  // APPENDS
      }
      return;
    }
    case Kind::Dict: {
      if (v.is_ordered()) {
        write_global("collections", "OrderedDict");
        op(')');
        op('R');
      } else {
        if (!v.attributes().empty()) throw Error("pickle: only an OrderedDict can carry attributes");
        op('}');
      }
      write_entries(v.entries(), depth);
      if (!v.attributes().empty()) {  // e.g. a state dict's _metadata, set by BUILD
        op('}');
        write_entries(v.attributes(), depth);
        op('b');
      }
      return;
    }
    case Kind::Object: {
      if (v.class_name() != "argparse.Namespace")
        throw Error("pickle: cannot save an object of class '" + v.class_name() + "' (only argparse.Namespace)");
      write_global("argparse", "Namespace");
      op(')');
      op(0x81);  // NEWOBJ
      if (!v.attributes().empty()) {
        op('}');
        write_entries(v.attributes(), depth);
        op('b');
      }
      return;
    }
    case Kind::Global:
    case Kind::Storage: throw Error(std::string("pickle: cannot save a bare ") + v.kind_name());
  }
}

void Pickler::write_tensor(at::Tensor t) {
  if (!t.defined()) throw Error("pickle: cannot save an undefined tensor");
  if (t.layout() != at::kStrided) throw Error("pickle: cannot save a sparse or non-strided tensor");
  if (t.is_quantized()) throw Error("pickle: cannot save a quantized tensor");
  if (!t.device().is_cpu()) t = t.cpu();
  if (t.is_conj()) t = t.resolve_conj();
  if (t.is_neg()) t = t.resolve_neg();
  if (!t.has_storage()) t = t.contiguous();
  const char* storage_class = storage_class_name(t.scalar_type());
  const size_t itemsize = t.element_size();

  // One record per storage, so views stay views when Python loads them.
  const c10::Storage& storage = t.storage();
  const void* impl = storage.unsafeGetStorageImpl();
  auto it = storage_index_.find(impl);
  size_t index;
  if (it == storage_index_.end()) {
    index = storages_.size();
    storage_index_.emplace(impl, index);
    storages_.push_back({std::to_string(index), t, storage.data(), storage.nbytes()});
  } else {
    index = it->second;
    if (storages_[index].holder.scalar_type() != t.scalar_type())
      throw Error("pickle: two tensors share a storage with different dtypes (torch.save refuses this too)");
  }
  const Storage& s = storages_[index];

  write_global("torch._utils", "_rebuild_tensor_v2");
  op('(');
  op('(');  // persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel)
  write_memoized_str("storage");
  write_global("torch", storage_class);
  write_str(s.key);
  write_memoized_str("cpu");
  write_int(int64_t(s.nbytes / itemsize));
  op('t');
  op('Q');  // BINPERSID
  write_int(t.storage_offset());
  Value::Items size, stride;
  for (int64_t x : t.sizes()) size.push_back(Value::integer(x));
  for (int64_t x : t.strides()) stride.push_back(Value::integer(x));
  write(Value::tuple(std::move(size)), 0);
  write(Value::tuple(std::move(stride)), 0);
  op(t.requires_grad() ? 0x88 : 0x89);
  write_global("collections", "OrderedDict");  // backward_hooks: always empty
  op(')');
  op('R');
  op('t');
  op('R');
}

}  // namespace ckpt
}  // namespace maskrcnn
