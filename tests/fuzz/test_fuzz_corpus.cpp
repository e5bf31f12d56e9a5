// Replays every fuzz seed (made by tests/python/make_fuzz_fixtures.py) and every
// input kept in fuzz/regressions/<target>/ (inputs that once crashed a target,
// fixed since) through the fuzz targets. Under the sanitizer build
// (scripts/test_sanitizers.sh) this is the regression suite of the fuzzers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "support/test_env.h"
#include "targets/fuzz_targets.h"

namespace fs = std::filesystem;

namespace maskrcnn::fuzz {
// gtest prints a parameter with this instead of its bytes.
inline void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }
}  // namespace maskrcnn::fuzz

namespace {

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

int replay(const maskrcnn::fuzz::Target& t, const fs::path& dir) {
  int n = 0;
  if (!fs::is_directory(dir)) return 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename().string().front() == '.') continue;
    SCOPED_TRACE(e.path().string());
    auto bytes = read_bytes(e.path());
    t.run(bytes.data(), bytes.size());  // returns or throws maskrcnn::Error, which the target catches
    ++n;
  }
  return n;
}

class FuzzCorpus : public ::testing::TestWithParam<maskrcnn::fuzz::Target> {};

TEST_P(FuzzCorpus, SeedsAndRegressionsRunClean) {
  const auto& t = GetParam();
  const int seeds = replay(t, fs::path(maskrcnn::testing::fixtures_dir("fuzz")) / t.name);
  EXPECT_GE(seeds, 3) << "seed corpus for " << t.name << " missing";
  replay(t, fs::path(MASKRCNN_TEST_SOURCE_DIR) / "fuzz" / "regressions" / t.name);
}

TEST_P(FuzzCorpus, SurvivesEveryPrefixAndBitFlipOfTheSeeds) {
  // A cheap deterministic mutation pass: truncations and single-byte flips of
  // every seed, so that the ordinary suite covers what a fuzzer tries first.
  const auto& t = GetParam();
  const fs::path dir = fs::path(maskrcnn::testing::fixtures_dir("fuzz")) / t.name;
  ASSERT_TRUE(fs::is_directory(dir));
  for (const auto& e : fs::directory_iterator(dir)) {
    SCOPED_TRACE(e.path().string());
    const auto bytes = read_bytes(e.path());
    const size_t step = std::max<size_t>(1, bytes.size() / 64);
    for (size_t n = 0; n < bytes.size(); n += step) t.run(bytes.data(), n);
    for (size_t i = 0; i < bytes.size(); i += step) {
      auto m = bytes;
      m[i] ^= 0xFF;
      t.run(m.data(), m.size());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus, ::testing::ValuesIn(maskrcnn::fuzz::all_targets()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
