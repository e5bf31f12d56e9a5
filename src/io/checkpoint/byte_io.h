// Low-level byte plumbing shared by the zip and pickle code: a read-only memory map,
// bounds-checked little-endian reads, CRC-32, and an atomic file writer.
// Every function throws maskrcnn::Error with a message that does not name the file;
// checkpoint.cpp prefixes the path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace maskrcnn {
namespace ckpt {

// The whole file, mapped read-only (MAP_POPULATE: checkpoints are read entirely, so
// pre-faulting saves ~40k page faults for a 170 MB file). Empty files map to nothing.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

inline uint16_t load_le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
inline uint64_t load_le64(const uint8_t* p) {
  return uint64_t(load_le32(p)) | (uint64_t(load_le32(p + 4)) << 32);
}
inline void store_le16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void store_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

// True when [offset, offset + length) lies inside [0, size), without overflow.
inline bool in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// Untrusted text (entry names, pickle globals) fit for a one-line message: at most
// 200 bytes, control bytes escaped as \xNN.
std::string printable(const std::string& text);

// CRC-32 (zip / zlib polynomial). Pass the previous result to continue. Uses
// PCLMULQDQ folding when the CPU has it, else crc32_portable (slice-by-8 tables).
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);
uint32_t crc32_portable(const uint8_t* data, size_t size, uint32_t crc = 0);

// Writes "<path>.tmp.<pid>", then commit() fsyncs it and renames it over `path`
// (and fsyncs the folder). Destroying it uncommitted removes the temporary file, so
// an exception while writing never leaves a half-written checkpoint behind.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t size);
  uint64_t position() const { return position_; }
  void commit();
  const std::string& temp_path() const { return temp_path_; }

 private:
  void flush_buffer();
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t position_ = 0;
  std::string buffer_;  // small writes are gathered here; big ones go straight through
};

}  // namespace ckpt
}  // namespace maskrcnn
