// torch's zip checkpoint format (torch.save's default since 1.6): reading and writing.
#include <algorithm>
#include <memory>
#include <unordered_map>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/pickler.h"
#include "io/checkpoint/torch_file.h"
#include "io/checkpoint/torch_types.h"
#include "io/checkpoint/unpickler.h"
#include "io/checkpoint/zip_reader.h"
#include "io/checkpoint/zip_writer.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;
using pickle::detail::StorageRef;

namespace {

// torch's PyTorchStreamWriter names the archive folder after the file name without
// folder and extension ("model.pth" -> "model").
std::string archive_name(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  auto dot = base.find_last_of('.');
  if (dot != std::string::npos) base = base.substr(0, dot);
  return base.empty() ? "archive" : base;
}

}  // namespace

pickle::Value load_zip_checkpoint(const uint8_t* data, size_t size) {
  ZipReader zip(data, size);
  if (zip.entries().empty()) throw Error("zip archive is empty");
  // Like torch's reader: every record lives in the folder the first entry names.
  const std::string& first = zip.entries().front().name;
  const auto slash = first.find('/');
  const std::string prefix = slash == std::string::npos ? std::string() : first.substr(0, slash + 1);
  // TorchScript archives (torch.jit.save) have a data.pkl too, but of a scripted module.
  const bool torchscript = std::any_of(zip.entries().begin(), zip.entries().end(), [&](const ZipEntry& e) {
    return e.name == prefix + "constants.pkl" || e.name.compare(0, prefix.size() + 5, prefix + "code/") == 0;
  });
  if (!prefix.empty() && torchscript)
    throw Error("is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
                "save model.state_dict() with torch.save instead");
  const ZipEntry* pkl = prefix.empty() ? nullptr : zip.find(prefix + "data.pkl");
  if (pkl == nullptr) throw Error("zip archive has no data.pkl record, so it is not a torch.save checkpoint");
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {  // written by torch >= 2.1
    ByteSpan s = zip.read(*order);
    if (std::string(reinterpret_cast<const char*>(s.data), s.size) != "little")
      throw Error("checkpoint was saved on a big-endian machine; only little-endian data is supported");
  }
  ByteSpan pickle_bytes = zip.read(*pkl);

  std::unordered_map<std::string, std::shared_ptr<StorageRef>> storages;
  auto persistent_load = [&](const Value& pid) -> Value {
    StorageId id = parse_storage_id(pid);
    if (id.is_view) throw Error("zip checkpoint uses a legacy storage view");
    auto it = storages.find(id.key);
    if (it != storages.end()) {
      if (it->second->dtype != id.dtype || it->second->numel != id.numel)
        throw Error("storage '" + id.key + "' is referenced with two different types or sizes");
      return Value::storage(it->second);
    }
    const std::string record = prefix + "data/" + id.key;
    const ZipEntry* entry = zip.find(record);
    if (entry == nullptr) throw Error("storage record '" + record + "' is missing from the archive");
    uint64_t nbytes = storage_nbytes(id.dtype, id.numel, size);
    ByteSpan span = zip.read(*entry);  // verifies the CRC
    if (span.size != nbytes)
      throw Error("storage record '" + record + "' holds " + std::to_string(span.size) + " bytes, expected " +
                  std::to_string(nbytes));
    auto ref = std::make_shared<StorageRef>();
    ref->dtype = id.dtype;
    ref->numel = id.numel;
    ref->data = span.data;
    ref->key = id.key;
    storages.emplace(id.key, ref);
    return Value::storage(ref);
  };
  Unpickler unpickler(pickle_bytes.data, pickle_bytes.size, persistent_load);
  try {
    return unpickler.load();
  } catch (const Error& e) {
    throw Error(std::string("data.pkl: ") + e.what());
  }
}

void save_torch_file(const pickle::Value& obj, const std::string& path, bool force_zip64) {
  Pickler pickler;
  const std::string pkl = pickler.dump(obj);
  std::vector<const Pickler::Storage*> order;
  for (const auto& s : pickler.storages()) order.push_back(&s);
  // torch writes the records in sorted key order ("0", "1", "10", "2", ...).
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->key < b->key; });

  const std::string prefix = archive_name(path) + "/";
  AtomicFile file(path);
  ZipWriter zip(file, force_zip64);
  zip.add(prefix + "data.pkl", pkl.data(), pkl.size());
  for (const auto* s : order) zip.add(prefix + "data/" + s->key, s->data, s->nbytes);
  zip.add(prefix + "version", "3\n", 2);
  zip.finish();
  file.commit();
}

}  // namespace ckpt
}  // namespace maskrcnn
