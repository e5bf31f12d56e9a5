// A zip reader for what torch.save writes: stored (uncompressed) entries, located
// through the central directory (torch's local headers carry zero sizes and a data
// descriptor, so they cannot be walked), zip64 records when present. Every offset
// and length is checked against the buffer; CRC-32 is verified on each read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace maskrcnn {
namespace ckpt {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;  // uncompressed
  uint64_t local_header_offset = 0;
};

struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

class ZipReader {
 public:
  // Parses the central directory of the zip held in [data, data + size); the buffer
  // must outlive the reader. Throws maskrcnn::Error on any inconsistency.
  ZipReader(const uint8_t* data, size_t size);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // first entry of that name

  // The entry's bytes (pointing into the buffer), after checking that it is stored
  // uncompressed, unencrypted, inside the file, and that its CRC-32 matches.
  ByteSpan read(const ZipEntry& entry) const;

 private:
  void parse_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count);

  const uint8_t* data_;
  size_t size_;
  uint64_t cd_offset_ = 0;  // entry data must end before the central directory
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace ckpt
}  // namespace maskrcnn
