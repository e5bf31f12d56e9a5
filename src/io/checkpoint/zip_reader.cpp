#include "io/checkpoint/zip_reader.h"

#include "io/checkpoint/byte_io.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;

// Quoted entry name for messages (names are untrusted).
std::string quoted(const std::string& name) { return "'" + printable(name) + "'"; }

}  // namespace

ZipReader::ZipReader(const uint8_t* data, size_t size) : data_(data), size_(size) {
  if (size < kEocdSize) throw Error("not a zip archive (too short for an end-of-central-directory record)");
  // The EOCD record sits at the end, followed only by a comment of at most 64 KiB.
  size_t lowest = size > kEocdSize + 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  size_t eocd = SIZE_MAX;
  for (size_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (load_le32(data + pos) == kEocdSig && pos + kEocdSize + load_le16(data + pos + 20) <= size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX)
    throw Error("zip end-of-central-directory record not found (file truncated or not a zip)");
  const uint8_t* e = data + eocd;
  uint64_t disk = load_le16(e + 4), cd_disk = load_le16(e + 6);
  uint64_t count = load_le16(e + 10);
  uint64_t cd_size = load_le32(e + 12);
  uint64_t cd_offset = load_le32(e + 16);

  // A zip64 locator just before the EOCD points at the zip64 EOCD with 64-bit values.
  // torch always writes one; other writers only when a field overflows.
  if (eocd >= kZip64LocatorSize && load_le32(data + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = data + eocd - kZip64LocatorSize;
    uint64_t z64 = load_le64(loc + 8);
    if (!in_bounds(z64, kZip64EocdSize, eocd - kZip64LocatorSize) || load_le32(data + z64) != kZip64EocdSig)
      throw Error("zip64 end-of-central-directory record is missing or out of bounds");
    const uint8_t* z = data + z64;
    disk = load_le32(z + 16);
    cd_disk = load_le32(z + 20);
    count = load_le64(z + 32);
    cd_size = load_le64(z + 40);
    cd_offset = load_le64(z + 48);
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    throw Error("zip needs zip64 records but has none (file truncated?)");
  }
  if (disk != 0 || cd_disk != 0) throw Error("multi-volume zip archives are not supported");
  if (!in_bounds(cd_offset, cd_size, eocd))
    throw Error("zip central directory lies outside the file (file truncated?)");
  if (count > cd_size / kCentralHeaderSize)
    throw Error("zip central directory claims more entries than it can hold");
  parse_central_directory(cd_offset, cd_size, count);
}

void ZipReader::parse_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count) {
  cd_offset_ = cd_offset;
  entries_.reserve(size_t(count));
  uint64_t pos = cd_offset;
  const uint64_t end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!in_bounds(pos, kCentralHeaderSize, end) || load_le32(data_ + pos) != kCentralHeaderSig)
      throw Error("zip central directory entry " + std::to_string(i) + " is corrupt");
    const uint8_t* h = data_ + pos;
    ZipEntry entry;
    entry.flags = load_le16(h + 8);
    entry.method = load_le16(h + 10);
    entry.crc32 = load_le32(h + 16);
    entry.compressed_size = load_le32(h + 20);
    entry.size = load_le32(h + 24);
    uint64_t name_len = load_le16(h + 28), extra_len = load_le16(h + 30), comment_len = load_le16(h + 32);
    uint16_t disk_start = load_le16(h + 34);
    entry.local_header_offset = load_le32(h + 42);
    if (!in_bounds(pos + kCentralHeaderSize, name_len + extra_len + comment_len, end))
      throw Error("zip central directory entry " + std::to_string(i) + " overruns the directory");
    entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), size_t(name_len));

    // Zip64 extended information: the 64-bit values of exactly the saturated fields,
    // in this order.
    const uint8_t* x = h + kCentralHeaderSize + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      uint16_t id = load_le16(x), len = load_le16(x + 2);
      if (len > x_end - x - 4) throw Error("zip extra field of " + quoted(entry.name) + " overruns its entry");
      if (id == kZip64ExtraId) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take = [&](uint64_t& field) {
          if (f_end - f < 8) throw Error("zip64 extra field of " + quoted(entry.name) + " is too short");
          field = load_le64(f);
          f += 8;
        };
        if (entry.size == 0xFFFFFFFFu) take(entry.size);
        if (entry.compressed_size == 0xFFFFFFFFu) take(entry.compressed_size);
        if (entry.local_header_offset == 0xFFFFFFFFu) take(entry.local_header_offset);
        if (disk_start == 0xFFFF && f_end - f >= 4) disk_start = 0;
      }
      x += 4 + len;
    }
    if (disk_start != 0) throw Error("multi-volume zip archives are not supported");
    by_name_.emplace(entry.name, entries_.size());  // keeps the first of duplicates
    entries_.push_back(std::move(entry));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

ByteSpan ZipReader::read(const ZipEntry& entry) const {
  const std::string name = quoted(entry.name);
  if (entry.flags & 1) throw Error("zip entry " + name + " is encrypted");
  if (entry.method != 0)
    throw Error("zip entry " + name + " is compressed (method " + std::to_string(entry.method) +
                "); torch.save stores entries uncompressed, so the archive was re-packed: "
                "re-save it with torch.save");
  if (entry.compressed_size != entry.size)
    throw Error("zip entry " + name + " is stored but its compressed and uncompressed sizes differ");
  uint64_t off = entry.local_header_offset;
  if (!in_bounds(off, kLocalHeaderSize, cd_offset_) || load_le32(data_ + off) != kLocalHeaderSig)
    throw Error("zip local header of " + name + " is missing or out of bounds");
  // The data starts after the local header's own name and extra field, whose lengths
  // may differ from the central directory's (torch pads the local extra for alignment).
  uint64_t start = off + kLocalHeaderSize + load_le16(data_ + off + 26) + load_le16(data_ + off + 28);
  if (!in_bounds(start, entry.size, cd_offset_))
    throw Error("zip entry " + name + " extends past the end of its data (file truncated?)");
  ByteSpan span{data_ + start, size_t(entry.size)};
  uint32_t crc = crc32(span.data, span.size);
  if (crc != entry.crc32)
    throw Error("zip entry " + name + " fails its CRC-32 check (file corrupted; download it again)");
  return span;
}

}  // namespace ckpt
}  // namespace maskrcnn
