// The zip layer on its own: writer/reader round trips (plain and zip64), CRC-32,
// alignment, and rejection of damaged archives.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/zip_reader.h"
#include "io/checkpoint/zip_writer.h"
#include "maskrcnn/error.h"

namespace ck = maskrcnn::ckpt;

namespace {

std::string temp_dir() {
  std::string tmpl = ::testing::TempDir() + "ckpt_zip_XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  return tmpl;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string fixture(const std::string& name) {
  const char* root = std::getenv("MASKRCNN_FIXTURES");
  return root == nullptr ? std::string() : std::string(root) + "/checkpoint/" + name;
}

struct Entry {
  std::string name;
  std::string data;
};

std::vector<uint8_t> write_zip(const std::vector<Entry>& entries, bool zip64) {
  std::string path = temp_dir() + "/t.zip";
  {
    ck::AtomicFile f(path);
    ck::ZipWriter z(f, zip64);
    for (const auto& e : entries) z.add(e.name, e.data.data(), e.data.size());
    z.finish();
    f.commit();
  }
  return read_file(path);
}

std::string as_string(const ck::ByteSpan& s) { return std::string(reinterpret_cast<const char*>(s.data), s.size); }

}  // namespace

TEST(Crc32, KnownValues) {
  const std::string check = "123456789";
  EXPECT_EQ(ck::crc32(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xCBF43926u);
  EXPECT_EQ(ck::crc32_portable(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xCBF43926u);
  const std::string fox = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.";
  EXPECT_EQ(ck::crc32(reinterpret_cast<const uint8_t*>(fox.data()), 43), 0x414FA339u);  // zlib.crc32
  EXPECT_EQ(ck::crc32(nullptr, 0), 0u);
  // Incremental == one shot, across the 8-byte fast path boundary.
  std::string text(1000, '\0');
  for (size_t i = 0; i < text.size(); ++i) text[i] = char(i * 7 + 3);
  auto p = reinterpret_cast<const uint8_t*>(text.data());
  uint32_t whole = ck::crc32(p, text.size());
  EXPECT_EQ(ck::crc32(p + 13, text.size() - 13, ck::crc32(p, 13)), whole);
}

TEST(Crc32, FastPathMatchesTables) {
  std::vector<uint8_t> data(70000);
  uint32_t seed = 12345;
  for (auto& b : data) b = uint8_t((seed = seed * 1103515245u + 12345u) >> 16);
  for (size_t offset : {0, 1, 3, 8, 15}) {
    for (size_t n : {0, 1, 15, 16, 63, 64, 65, 79, 80, 127, 128, 1000, 4096, 65537}) {
      EXPECT_EQ(ck::crc32(data.data() + offset, n), ck::crc32_portable(data.data() + offset, n))
          << "offset " << offset << " size " << n;
      EXPECT_EQ(ck::crc32(data.data() + offset, n, 0xDEADBEEF), ck::crc32_portable(data.data() + offset, n, 0xDEADBEEF));
    }
  }
}

TEST(Zip, RoundTripAlignedAndZip64) {
  std::vector<Entry> entries = {{"a/data.pkl", "pickle bytes"}, {"a/data/0", std::string(1000, 'x')},
                                {"a/data/1", ""}, {"a/version", "3\n"}};
  for (bool zip64 : {false, true}) {
    SCOPED_TRACE(zip64 ? "zip64" : "plain");
    std::vector<uint8_t> bytes = write_zip(entries, zip64);
    ck::ZipReader zip(bytes.data(), bytes.size());
    ASSERT_EQ(zip.entries().size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      EXPECT_EQ(zip.entries()[i].name, entries[i].name);
      const ck::ZipEntry* e = zip.find(entries[i].name);
      ASSERT_NE(e, nullptr);
      ck::ByteSpan s = zip.read(*e);
      EXPECT_EQ(as_string(s), entries[i].data);
      EXPECT_EQ((s.data - bytes.data()) % ck::ZipWriter::kAlignment, 0) << entries[i].name;
    }
    EXPECT_EQ(zip.find("a/nope"), nullptr);
  }
}

TEST(Zip, DetectsCorruptionAndTruncation) {
  std::vector<uint8_t> bytes = write_zip({{"a/data/0", std::string(300, 'y')}}, false);
  {
    std::vector<uint8_t> bad = bytes;
    bad[64 + 10] ^= 1;  // the data starts at byte 64 (aligned)
    ck::ZipReader zip(bad.data(), bad.size());
    try {
      zip.read(zip.entries()[0]);
      FAIL() << "no CRC error";
    } catch (const maskrcnn::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
    }
  }
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    try {
      ck::ZipReader zip(bytes.data(), cut);
      for (const auto& e : zip.entries()) zip.read(e);
      ADD_FAILURE() << "truncated to " << cut << " bytes but read fine";
    } catch (const maskrcnn::Error&) {
    }
  }
  for (size_t i = 0; i < bytes.size(); ++i) {  // any flipped byte: error or the right data
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0xFF;
    try {
      ck::ZipReader zip(bad.data(), bad.size());
      for (const auto& e : zip.entries()) {
        ck::ByteSpan s = zip.read(e);
        if (e.name == "a/data/0") EXPECT_EQ(as_string(s), std::string(300, 'y')) << "flip at " << i;
      }
    } catch (const maskrcnn::Error&) {
    }
  }
}

TEST(Zip, RejectsNonZipsAndCompressedEntries) {
  const std::string text = "hello, this is not a zip file at all........";
  EXPECT_THROW(ck::ZipReader(reinterpret_cast<const uint8_t*>(text.data()), text.size()), maskrcnn::Error);
  EXPECT_THROW(ck::ZipReader(nullptr, 0), maskrcnn::Error);
  std::string path = fixture("compressed.pth");
  if (path.empty() || ::access(path.c_str(), R_OK) != 0) GTEST_SKIP() << "fixtures not built";
  std::vector<uint8_t> bytes = read_file(path);
  ck::ZipReader zip(bytes.data(), bytes.size());
  try {
    zip.read(zip.entries()[0]);
    FAIL() << "compressed entry accepted";
  } catch (const maskrcnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("compressed"), std::string::npos) << e.what();
  }
}

TEST(Zip, ReadsTorchWrittenArchive) {
  std::string path = fixture("dtypes.pth");
  if (path.empty() || ::access(path.c_str(), R_OK) != 0) GTEST_SKIP() << "fixtures not built";
  ck::MappedFile file(path);
  ck::ZipReader zip(file.data(), file.size());
  ASSERT_NE(zip.find("dtypes/data.pkl"), nullptr);
  ASSERT_NE(zip.find("dtypes/version"), nullptr);
  EXPECT_EQ(as_string(zip.read(*zip.find("dtypes/version"))), "3\n");
  for (const auto& e : zip.entries()) EXPECT_NO_THROW(zip.read(e)) << e.name;
}

TEST(AtomicFile, UncommittedLeavesNothing) {
  std::string dir = temp_dir();
  std::string path = dir + "/x.bin";
  {
    ck::AtomicFile f(path);
    f.write("abc", 3);
    EXPECT_EQ(::access(f.temp_path().c_str(), F_OK), 0);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  EXPECT_NE(::access((path + ".tmp." + std::to_string(::getpid())).c_str(), F_OK), 0);
  EXPECT_THROW(ck::AtomicFile(dir + "/no/such/folder/x.bin"), maskrcnn::Error);
}
