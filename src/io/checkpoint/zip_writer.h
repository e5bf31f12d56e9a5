// A zip writer laid out like torch's PyTorchStreamWriter: stored entries whose data
// starts on a 64-byte boundary (padding goes into an "FB" extra field filled with
// 'Z', as torch does, so torch can map storages in place), always followed by zip64
// end records. Sizes and CRCs go straight into the local headers (we know them up
// front), which every zip reader, torch's included, accepts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint/byte_io.h"

namespace maskrcnn {
namespace ckpt {

class ZipWriter {
 public:
  // Writes into `out` (not owned). force_zip64 makes every entry carry zip64 extra
  // fields, as entries over 4 GiB must; tests use it to exercise the zip64 paths.
  explicit ZipWriter(AtomicFile& out, bool force_zip64 = false);

  void add(const std::string& name, const void* data, size_t size);
  // Central directory and end records; call once after the last add().
  void finish();

  static constexpr uint64_t kAlignment = 64;

 private:
  struct Record {
    std::string name;
    uint32_t crc32;
    uint64_t size;
    uint64_t offset;
  };
  AtomicFile& out_;
  bool force_zip64_;
  bool finished_ = false;
  std::vector<Record> records_;
};

}  // namespace ckpt
}  // namespace maskrcnn
