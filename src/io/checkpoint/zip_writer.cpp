#include "io/checkpoint/zip_writer.h"

#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {
namespace {

constexpr uint32_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kDosDate = 0x0021;  // 1980-01-01: fixed, so equal inputs give equal files
constexpr uint16_t kMadeBy = 0x031e;   // unix, spec 3.0 (what torch writes)

void put16(std::string& s, uint16_t v) {
  uint8_t b[2];
  store_le16(b, v);
  s.append(reinterpret_cast<char*>(b), 2);
}
void put32(std::string& s, uint32_t v) {
  uint8_t b[4];
  store_le32(b, v);
  s.append(reinterpret_cast<char*>(b), 4);
}
void put64(std::string& s, uint64_t v) {
  uint8_t b[8];
  store_le64(b, v);
  s.append(reinterpret_cast<char*>(b), 8);
}

}  // namespace

ZipWriter::ZipWriter(AtomicFile& out, bool force_zip64) : out_(out), force_zip64_(force_zip64) {}

void ZipWriter::add(const std::string& name, const void* data, size_t size) {
  if (finished_) throw Error("zip: add() after finish()");
  if (name.empty() || name.size() > 0xFFFF) throw Error("zip: bad entry name length");
  const bool zip64 = force_zip64_ || size >= kMax32;
  const uint64_t offset = out_.position();
  const uint32_t crc = crc32(static_cast<const uint8_t*>(data), size);

  std::string h;
  put32(h, 0x04034b50);
  put16(h, zip64 ? 45 : 20);  // version needed
  put16(h, 0);                // flags
  put16(h, 0);                // stored
  put16(h, 0);                // time
  put16(h, kDosDate);
  put32(h, crc);
  put32(h, zip64 ? kMax32 : uint32_t(size));
  put32(h, zip64 ? kMax32 : uint32_t(size));
  const uint64_t zip64_extra = zip64 ? 20 : 0;
  const uint64_t unpadded = offset + 30 + name.size() + zip64_extra + 4;
  const uint64_t pad = (kAlignment - unpadded % kAlignment) % kAlignment;
  put16(h, uint16_t(name.size()));
  put16(h, uint16_t(zip64_extra + 4 + pad));
  h += name;
  if (zip64) {
    put16(h, 0x0001);
    put16(h, 16);
    put64(h, size);
    put64(h, size);
  }
  put16(h, 0x4246);  // "FB": torch's alignment padding field
  put16(h, uint16_t(pad));
  h.append(size_t(pad), 'Z');
  out_.write(h.data(), h.size());
  out_.write(data, size);
  records_.push_back({name, crc, size, offset});
}

void ZipWriter::finish() {
  if (finished_) throw Error("zip: finish() called twice");
  finished_ = true;
  const uint64_t cd_offset = out_.position();
  std::string cd;
  for (const Record& r : records_) {
    const bool big_size = force_zip64_ || r.size >= kMax32;
    const bool big_offset = force_zip64_ || r.offset >= kMax32;
    std::string extra;
    if (big_size || big_offset) {
      put16(extra, 0x0001);
      put16(extra, uint16_t((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) {
        put64(extra, r.size);  // uncompressed, then compressed
        put64(extra, r.size);
      }
      if (big_offset) put64(extra, r.offset);
    }
    put32(cd, 0x02014b50);
    put16(cd, kMadeBy);
    put16(cd, extra.empty() ? 20 : 45);
    put16(cd, 0);  // flags
    put16(cd, 0);  // stored
    put16(cd, 0);
    put16(cd, kDosDate);
    put32(cd, r.crc32);
    put32(cd, big_size ? kMax32 : uint32_t(r.size));
    put32(cd, big_size ? kMax32 : uint32_t(r.size));
    put16(cd, uint16_t(r.name.size()));
    put16(cd, uint16_t(extra.size()));
    put16(cd, 0);  // comment
    put16(cd, 0);  // disk
    put16(cd, 0);  // internal attributes
    put32(cd, 0);  // external attributes
    put32(cd, big_offset ? kMax32 : uint32_t(r.offset));
    cd += r.name;
    cd += extra;
  }
  const uint64_t count = records_.size();
  const uint64_t zip64_eocd_offset = cd_offset + cd.size();
  // zip64 end record and locator, always (as torch writes them).
  put32(cd, 0x06064b50);
  put64(cd, 44);  // size of the rest of this record
  put16(cd, kMadeBy);
  put16(cd, 45);
  put32(cd, 0);
  put32(cd, 0);
  put64(cd, count);
  put64(cd, count);
  put64(cd, zip64_eocd_offset - cd_offset);
  put64(cd, cd_offset);
  put32(cd, 0x07064b50);
  put32(cd, 0);
  put64(cd, zip64_eocd_offset);
  put32(cd, 1);
  // Classic end record, saturated where the values do not fit.
  const uint64_t cd_size = zip64_eocd_offset - cd_offset;
  put32(cd, 0x06054b50);
  put16(cd, 0);
  put16(cd, 0);
  put16(cd, count >= 0xFFFF ? 0xFFFF : uint16_t(count));
  put16(cd, count >= 0xFFFF ? 0xFFFF : uint16_t(count));
  put32(cd, cd_size >= kMax32 ? kMax32 : uint32_t(cd_size));
  put32(cd, cd_offset >= kMax32 ? kMax32 : uint32_t(cd_offset));
  put16(cd, 0);  // comment
  out_.write(cd.data(), cd.size());
}

}  // namespace ckpt
}  // namespace maskrcnn
