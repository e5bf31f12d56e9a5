// The public checkpoint API (maskrcnn/checkpoint.h, maskrcnn/pickle.h): maps the
// file, picks the format, turns the loaded object into a state dict, and puts the
// file name in front of every error message.
#include "maskrcnn/checkpoint.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <new>
#include <unordered_set>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_file.h"
#include "io/checkpoint/torch_types.h"
#include "maskrcnn/error.h"
#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;

namespace {

// Runs f, rethrowing any failure as one maskrcnn::Error line "<path>: <what>".
template <class F>
auto with_path(const std::string& path, F&& f) -> decltype(f()) {
  auto one_line = [](std::string s) {
    auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
  };
  try {
    return f();
  } catch (const Error& e) {
    throw Error(path + ": " + one_line(e.what()));
  } catch (const c10::Error& e) {
    throw Error(path + ": " + one_line(e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    throw Error(path + ": out of memory");
  } catch (const std::exception& e) {
    throw Error(path + ": " + one_line(e.what()));
  }
}

bool is_storage_word(const Value& v) {
  return (v.kind() == Value::Kind::String || v.kind() == Value::Kind::Bytes) && v.to_str() == "storage";
}

}  // namespace

StorageId parse_storage_id(const Value& pid) {
  if (pid.kind() != Value::Kind::Tuple || pid.items().empty())
    throw Error("persistent id is " + pid.describe() + ", not a tuple");
  const auto& f = pid.items();
  if ((f[0].kind() == Value::Kind::String || f[0].kind() == Value::Kind::Bytes) && f[0].to_str() == "module")
    throw Error("holds a whole pickled nn.Module (torch.save(model)); save model.state_dict() instead");
  if (!is_storage_word(f[0])) throw Error("persistent id is not a storage");
  if (f.size() != 5 && f.size() != 6) throw Error("storage persistent id has " + std::to_string(f.size()) + " fields");
  StorageId id;
  if (f[1].kind() != Value::Kind::Global || !is_storage_global(f[1].class_name(), &id.dtype))
    throw Error("storage persistent id does not name a storage class");
  if (f[2].kind() == Value::Kind::Int) id.key = std::to_string(f[2].to_int());
  else if (f[2].kind() == Value::Kind::String) id.key = f[2].to_str();
  else throw Error("storage key is " + f[2].describe());
  if (f[3].kind() != Value::Kind::String && f[3].kind() != Value::Kind::Bytes)
    throw Error("storage location is " + f[3].describe());
  if (f[4].kind() != Value::Kind::Int || f[4].to_int() < 0) throw Error("storage size is not a non-negative int");
  id.numel = f[4].to_int();
  if (f.size() == 6 && !f[5].is_none()) {  // legacy view: (view_key, offset, numel)
    const Value& v = f[5];
    if (v.kind() != Value::Kind::Tuple || v.items().size() != 3 || v.items()[0].kind() != Value::Kind::String ||
        v.items()[1].kind() != Value::Kind::Int || v.items()[2].kind() != Value::Kind::Int)
      throw Error("storage view metadata is malformed");
    id.is_view = true;
    id.view_key = v.items()[0].to_str();
    id.view_offset = v.items()[1].to_int();
    id.view_numel = v.items()[2].to_int();
  }
  return id;
}

uint64_t storage_nbytes(at::ScalarType dtype, int64_t numel, uint64_t limit) {
  uint64_t nbytes;
  if (numel < 0 || __builtin_mul_overflow(uint64_t(numel), uint64_t(c10::elementSize(dtype)), &nbytes) ||
      nbytes > limit)
    throw Error("storage of " + std::to_string(numel) + " elements is larger than the file (file truncated?)");
  return nbytes;
}

pickle::Value load_torch_bytes(const uint8_t* data, size_t size) {
  if (size == 0) throw Error("file is empty");
  if (size < 4 && std::memcmp(data, "PK\x03\x04", size) == 0) throw Error("zip archive is cut off (file truncated)");
  if (data[0] == 'P' && data[1] == 'K') return load_zip_checkpoint(data, size);
  if (has_legacy_magic(data, size)) return load_legacy_checkpoint(data, size);
  if (is_truncated_legacy_magic(data, size)) throw Error("legacy checkpoint is cut off inside its header (file truncated)");
  if (size >= 262 && std::memcmp(data + 257, "ustar", 5) == 0)
    throw Error("is a tar-format checkpoint (torch < 0.4), which is not supported; re-save it with a newer torch");
  throw Error("is not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save stream)");
}

StateDict state_dict_from(const Value& root) {
  if (!root.is_dict()) throw Error("holds " + root.describe() + ", not a state dict");
  auto all_tensors = [](const Value& d) {
    for (const auto& kv : d.entries())
      if (!kv.second.is_tensor()) return false;
    return true;
  };
  const Value* sd = &root;
  if (!all_tensors(root)) {
    const Value* inner = nullptr;
    for (const char* key : {"model", "state_dict"}) {
      const Value* v = root.find(key);
      if (v != nullptr && v->is_dict()) {
        inner = v;
        break;
      }
    }
    if (inner == nullptr) {
      for (const auto& kv : root.entries()) {
        if (kv.second.is_tensor()) continue;
        std::string key = kv.first.kind() == Value::Kind::String ? "'" + kv.first.to_str() + "'" : "a key";
        throw Error("entry " + key + " is " + kv.second.describe() +
                    ", not a tensor, and there is no 'model' or 'state_dict' dict");
      }
    }
    sd = inner;
  }
  StateDict out;
  out.reserve(sd->entries().size());
  for (const auto& kv : sd->entries()) {
    if (kv.first.kind() != Value::Kind::String)
      throw Error("state dict has a key of type " + std::string(kv.first.kind_name()));
    if (!kv.second.is_tensor())
      throw Error("state dict entry '" + kv.first.to_str() + "' is " + kv.second.describe() + ", not a tensor");
    out.emplace_back(kv.first.to_str(), kv.second.to_tensor());
  }
  return out;
}

}  // namespace ckpt

pickle::Value torch_load(const std::string& path) {
  return ckpt::with_path(path, [&] {
    ckpt::MappedFile file(path);
    return ckpt::load_torch_bytes(file.data(), file.size());
  });
}

void torch_save(const pickle::Value& obj, const std::string& path) {
  ckpt::with_path(path, [&] { ckpt::save_torch_file(obj, path); });
}

StateDict load_state_dict(const std::string& path) {
  return ckpt::with_path(path, [&] {
    ckpt::MappedFile file(path);
    return ckpt::state_dict_from(ckpt::load_torch_bytes(file.data(), file.size()));
  });
}

void save_state_dict(const StateDict& state, const std::string& path) {
  ckpt::with_path(path, [&] {
    std::unordered_set<std::string> seen;
    pickle::Value::Entries entries;
    entries.reserve(state.size());
    for (const auto& kv : state) {
      if (!seen.insert(kv.first).second) throw Error("state dict has the key '" + kv.first + "' twice");
      if (!kv.second.defined()) throw Error("state dict entry '" + kv.first + "' is an undefined tensor");
      entries.emplace_back(pickle::Value::string(kv.first), pickle::Value::tensor(kv.second));
    }
    ckpt::save_torch_file(pickle::Value::ordered_dict(std::move(entries)), path);
  });
}

}  // namespace maskrcnn
