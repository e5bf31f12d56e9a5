// The two torch.save file formats, on bytes in memory (the public functions in
// checkpoint.cpp map the file and add its path to error messages; tests call these
// directly to fuzz without touching the disk).
//
//   zip (torch >= 1.6):  <archive>/data.pkl, <archive>/data/<key> per storage,
//                        <archive>/version; see zip_format.cpp
//   legacy (torch < 1.6): pickles of the magic number, protocol version and sys_info,
//                        the object, the storage keys, then per key an int64 element
//                        count and the raw bytes; see legacy_format.cpp
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/pickle.h"

namespace maskrcnn {
namespace ckpt {

// Detects the format and loads the object. Throws maskrcnn::Error (message without
// the file name).
pickle::Value load_torch_bytes(const uint8_t* data, size_t size);
pickle::Value load_zip_checkpoint(const uint8_t* data, size_t size);
pickle::Value load_legacy_checkpoint(const uint8_t* data, size_t size);
bool has_legacy_magic(const uint8_t* data, size_t size);
// True when the whole buffer is a proper prefix of a legacy file's magic number pickle.
bool is_truncated_legacy_magic(const uint8_t* data, size_t size);

// Writes `obj` as torch 1.13's torch.save would, atomically (see AtomicFile). The
// archive folder is named after the file stem, as torch names it.
void save_torch_file(const pickle::Value& obj, const std::string& path, bool force_zip64 = false);

// The state dict in a loaded object: the object itself when every value is a tensor,
// else its "model" or "state_dict" entry.
StateDict state_dict_from(const pickle::Value& root);

// What both formats' persistent ids say about a storage:
// ('storage', torch.<T>Storage, key, location, numel[, (view_key, offset, view_numel)]).
struct StorageId {
  at::ScalarType dtype;
  std::string key;
  int64_t numel;
  bool is_view = false;
  std::string view_key;
  int64_t view_offset = 0;
  int64_t view_numel = 0;
};
StorageId parse_storage_id(const pickle::Value& pid);
// numel * element size, or an Error if it overflows or exceeds `limit` bytes.
uint64_t storage_nbytes(at::ScalarType dtype, int64_t numel, uint64_t limit);

}  // namespace ckpt
}  // namespace maskrcnn
