// torch's legacy checkpoint format (torch < 1.6, or _use_new_zipfile_serialization=
// False), as torch/serialization.py _legacy_save writes it:
//   pickle(MAGIC_NUMBER) pickle(1001) pickle(sys_info) pickle(obj) pickle(sorted keys)
//   then for each key: int64 element count (little-endian) + the storage's raw bytes.
// The storage bytes come after the object's pickle, so the object is unpickled twice:
// a dry run finds where it ends and which storages it uses, then the real run builds
// the tensors once every storage has been located.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_file.h"
#include "io/checkpoint/torch_types.h"
#include "io/checkpoint/unpickler.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;
using pickle::detail::StorageRef;

namespace {

// pickle.dumps(0x1950a86a20f9469cfc6c, protocol=p) for p >= 2: PROTO p, LONG1 10 bytes,
// STOP; protocol 4+ puts a FRAME (opcode + 8-byte length) after PROTO.
constexpr uint8_t kMagicLong[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};

// Size of the magic number pickle at the start of `data`, or 0 if there is none.
size_t magic_pickle_size(const uint8_t* data, size_t size) {
  if (size < 2 || data[0] != 0x80 || data[1] < 2 || data[1] > 5) return 0;
  size_t pos = 2;
  if (data[1] >= 4 && size >= 11 && data[2] == 0x95) pos += 9;
  if (size - pos < sizeof(kMagicLong) || std::memcmp(data + pos, kMagicLong, sizeof(kMagicLong)) != 0) return 0;
  return pos + sizeof(kMagicLong);
}
constexpr int64_t kProtocolVersion = 1001;

struct Root {
  at::ScalarType dtype;
  int64_t numel;
  const uint8_t* data = nullptr;
};

}  // namespace

bool has_legacy_magic(const uint8_t* data, size_t size) { return magic_pickle_size(data, size) != 0; }

bool is_truncated_legacy_magic(const uint8_t* data, size_t size) {
  if (size < 2 || data[0] != 0x80 || data[1] < 2 || data[1] > 5) return false;
  size_t pos = 2;
  if (data[1] >= 4 && size > 2 && data[2] == 0x95) pos = std::min<size_t>(size, 11);  // FRAME
  size_t n = std::min(size - pos, sizeof(kMagicLong));
  return n < sizeof(kMagicLong) && std::memcmp(data + pos, kMagicLong, n) == 0;
}

pickle::Value load_legacy_checkpoint(const uint8_t* data, size_t size) {
  if (!has_legacy_magic(data, size)) throw Error("legacy checkpoint has a wrong magic number");
  size_t pos = magic_pickle_size(data, size);
  Unpickler plain(data, size);
  Value protocol = plain.load(pos, &pos);
  if (protocol.kind() != Value::Kind::Int || protocol.to_int() != kProtocolVersion)
    throw Error("legacy checkpoint has an unknown protocol version (expected 1001)");
  Value sys_info = plain.load(pos, &pos);
  if (!sys_info.is_dict()) throw Error("legacy checkpoint's sys_info is not a dict");
  if (const Value* le = sys_info.find("little_endian"))
    if (le->kind() == Value::Kind::Bool && !le->to_bool())
      throw Error("checkpoint was saved on a big-endian machine; only little-endian data is supported");

  // Pass 1: where the object's pickle ends and which root storages it needs.
  std::map<std::string, Root> roots;
  auto note_root = [&](const StorageId& id) -> Root& {
    auto it = roots.find(id.key);
    if (it == roots.end()) return roots.emplace(id.key, Root{id.dtype, id.numel}).first->second;
    if (it->second.dtype != id.dtype || it->second.numel != id.numel)
      throw Error("storage '" + id.key + "' is referenced with two different types or sizes");
    return it->second;
  };
  auto view_of = [&](const StorageId& id, const uint8_t* root_data) {
    auto ref = std::make_shared<StorageRef>();
    ref->dtype = id.dtype;
    ref->numel = id.numel;
    ref->data = root_data;
    ref->key = id.key;
    if (id.is_view) {
      if (id.view_offset < 0 || id.view_numel < 0 || id.view_offset > id.numel ||
          id.view_numel > id.numel - id.view_offset)
        throw Error("storage view '" + id.view_key + "' lies outside storage '" + id.key + "'");
      ref->numel = id.view_numel;
      ref->key = id.view_key;
      if (root_data != nullptr) ref->data = root_data + size_t(id.view_offset) * c10::elementSize(id.dtype);
    }
    return Value::storage(ref);
  };
  const size_t object_start = pos;
  {
    Unpickler dry(data, size, [&](const Value& pid) {
      StorageId id = parse_storage_id(pid);
      storage_nbytes(id.dtype, id.numel, size);  // reject absurd sizes early
      note_root(id);
      return view_of(id, nullptr);
    });
    dry.set_dry_run(true);
    dry.load(object_start, &pos);
  }

  // The storage keys, then each storage's bytes in that order.
  Value keys = plain.load(pos, &pos);
  if (!keys.is_sequence()) throw Error("legacy checkpoint's storage key list is not a list");
  for (const Value& k : keys.items()) {
    if (k.kind() != Value::Kind::String && k.kind() != Value::Kind::Int)
      throw Error("legacy checkpoint's storage key list holds " + k.describe());
    const std::string key = k.kind() == Value::Kind::Int ? std::to_string(k.to_int()) : k.to_str();
    auto it = roots.find(key);
    if (it == roots.end()) throw Error("storage '" + key + "' has data but is never used");
    Root& root = it->second;
    if (root.data != nullptr) throw Error("storage '" + key + "' has data twice");
    if (!in_bounds(pos, 8, size)) throw Error("storage '" + key + "' is cut off (file truncated)");
    const int64_t numel = int64_t(load_le64(data + pos));
    if (numel != root.numel)
      throw Error("storage '" + key + "' holds " + std::to_string(numel) + " elements, but the pickle says " +
                  std::to_string(root.numel));
    const uint64_t nbytes = storage_nbytes(root.dtype, numel, size);
    if (!in_bounds(pos + 8, nbytes, size)) throw Error("storage '" + key + "' is cut off (file truncated)");
    root.data = data + pos + 8;
    pos += 8 + size_t(nbytes);
  }
  for (const auto& kv : roots)
    if (kv.second.data == nullptr) throw Error("storage '" + kv.first + "' has no data (file truncated?)");

  // Pass 2: the object, with tensors.
  Unpickler real(data, size, [&](const Value& pid) {
    StorageId id = parse_storage_id(pid);
    return view_of(id, note_root(id).data);
  });
  return real.load(object_start);
}

}  // namespace ckpt
}  // namespace maskrcnn
