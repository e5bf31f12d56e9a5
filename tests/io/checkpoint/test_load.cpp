// load_state_dict / torch_load against files written by the real torch.save
// (fixtures from tests/python/make_checkpoint_fixtures.py): every dtype, views
// sharing storages, both formats and pickle protocols, torchvision state dicts with
// _metadata, reference-script training checkpoints; then broken and hostile files,
// and a fuzz pass (truncation, byte flips) that must only ever produce maskrcnn::Error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_file.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/error.h"
#include "maskrcnn/pickle.h"

namespace ck = maskrcnn::ckpt;
using maskrcnn::pickle::Value;

namespace {

std::string fixture_dir() {
  const char* root = std::getenv("MASKRCNN_FIXTURES");
  return root == nullptr ? std::string() : std::string(root) + "/checkpoint";
}

#define REQUIRE_FIXTURES()                                                              \
  if (fixture_dir().empty() || ::access((fixture_dir() + "/valid.txt").c_str(), R_OK)) \
  GTEST_SKIP() << "MASKRCNN_FIXTURES/checkpoint not built (run the fixture.checkpoint test)"

std::vector<std::vector<std::string>> read_table(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(f, line)) {
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, '\t')) cols.push_back(col);
    if (!line.empty() && line.back() == '\t') cols.push_back("");
    rows.push_back(cols);
  }
  return rows;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return "?";
  }
}

// One manifest row: key, dtype, shape "a,b", crc32 of the contiguous bytes, sum.
void expect_matches(const std::string& key, const at::Tensor& t, const std::vector<std::string>& row) {
  SCOPED_TRACE(key);
  ASSERT_EQ(row.size(), 5u);
  EXPECT_EQ(key, row[0]);
  EXPECT_EQ(dtype_name(t.scalar_type()), row[1]);
  std::string shape;
  for (int64_t s : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(s);
  EXPECT_EQ(shape, row[2]);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_TRUE(t.device().is_cpu());
  uint32_t crc = ck::crc32(static_cast<const uint8_t*>(t.data_ptr()), t.numel() * t.element_size());
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", crc);
  EXPECT_EQ(hex, row[3]);
  at::Tensor real = t.is_complex() ? at::view_as_real(t) : t;
  double sum = real.to(at::kDouble).sum().item<double>();
  double expect = std::stod(row[4]);
  EXPECT_NEAR(sum, expect, 1e-9 * (1 + std::fabs(expect)));
}

void expect_manifest(const maskrcnn::StateDict& sd, const std::string& manifest) {
  auto rows = read_table(fixture_dir() + "/" + manifest);
  ASSERT_EQ(sd.size(), rows.size()) << manifest;
  for (size_t i = 0; i < rows.size(); ++i) expect_matches(sd[i].first, sd[i].second, rows[i]);
}

}  // namespace

TEST(LoadStateDict, MatchesTorchLoadForEveryValidFixture) {
  REQUIRE_FIXTURES();
  auto rows = read_table(fixture_dir() + "/valid.txt");
  ASSERT_GE(rows.size(), 10u);
  for (const auto& row : rows) {
    SCOPED_TRACE(row[0]);
    maskrcnn::StateDict sd;
    ASSERT_NO_THROW(sd = maskrcnn::load_state_dict(fixture_dir() + "/" + row[0]));
    expect_manifest(sd, row[1]);
  }
}

TEST(LoadStateDict, ViewsOfOneStorageAreIndependentCopies) {
  REQUIRE_FIXTURES();
  auto sd = maskrcnn::load_state_dict(fixture_dir() + "/dtypes.pth");
  auto get = [&](const std::string& k) {
    for (auto& kv : sd)
      if (kv.first == k) return kv.second;
    return at::Tensor();
  };
  at::Tensor base = get("base");
  EXPECT_TRUE(get("base_t").equal(base.t()));
  EXPECT_TRUE(get("base_slice").equal(base.slice(0, 1, 3).slice(1, 2, 5)));
  EXPECT_TRUE(get("base_step").equal(base.slice(1, 0, 6, 2)));
  EXPECT_TRUE(get("base_row").equal(base[2]));
  EXPECT_NE(get("base_t").data_ptr(), base.data_ptr());
  EXPECT_TRUE(get("lin_tail").equal(at::arange(15, 20, at::kFloat)));
}

TEST(TorchLoad, KeepsStateDictMetadata) {
  REQUIRE_FIXTURES();
  auto rows = read_table(fixture_dir() + "/resnet18.metadata");
  for (const char* name : {"resnet18.pth", "resnet18_legacy.pth"}) {
    SCOPED_TRACE(name);
    Value v = maskrcnn::torch_load(fixture_dir() + "/" + name);
    ASSERT_TRUE(v.is_dict());
    EXPECT_TRUE(v.is_ordered());
    EXPECT_EQ(v.find("_metadata"), nullptr);  // an attribute, not an entry
    const Value* meta = v.attribute("_metadata");
    ASSERT_NE(meta, nullptr);
    ASSERT_EQ(meta->entries().size(), rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_EQ(meta->entries()[i].first.to_str(), rows[i][0]);
      EXPECT_EQ(meta->entries()[i].second.find("version")->to_int(), std::stoll(rows[i][1])) << rows[i][0];
    }
  }
}

TEST(TorchLoad, ReadsReferenceScriptTrainingCheckpoint) {
  REQUIRE_FIXTURES();
  auto momentum = read_table(fixture_dir() + "/training_momentum.manifest");
  for (const char* name : {"training.pth", "training_legacy.pth"}) {
    SCOPED_TRACE(name);
    Value v = maskrcnn::torch_load(fixture_dir() + "/" + name);
    EXPECT_EQ(v.find("epoch")->to_int(), 5);
    const Value& args = *v.find("args");
    EXPECT_EQ(args.class_name(), "argparse.Namespace");
    EXPECT_EQ(args.find("lr")->to_double(), 0.02);
    EXPECT_EQ(args.find("data_path")->to_str(), "/data");
    EXPECT_TRUE(args.find("weights")->is_none());
    EXPECT_EQ(args.find("milestones")->items()[1].to_int(), 22);
    const Value& opt = *v.find("optimizer");
    const Value& group = opt.find("param_groups")->items().at(0);
    EXPECT_EQ(group.find("lr")->to_double(), 0.02);
    EXPECT_EQ(group.find("momentum")->to_double(), 0.9);
    EXPECT_FALSE(group.find("nesterov")->to_bool());
    const auto& params = group.find("params")->items();
    const auto& state = opt.find("state")->entries();
    ASSERT_EQ(state.size(), momentum.size());
    for (size_t i = 0; i < state.size(); ++i) {
      EXPECT_EQ(state[i].first.to_int(), params[i].to_int());
      expect_matches("state." + std::to_string(state[i].first.to_int()) + ".momentum_buffer",
                     state[i].second.find("momentum_buffer")->to_tensor(), momentum[i]);
    }
    const Value& sched = *v.find("lr_scheduler");
    const Value& milestones = *sched.find("milestones");  // a collections.Counter
    ASSERT_EQ(milestones.entries().size(), 2u);
    EXPECT_EQ(milestones.entries()[0].first.to_int(), 16);
    EXPECT_EQ(milestones.entries()[0].second.to_int(), 1);
    EXPECT_EQ(sched.find("last_epoch")->to_int(), 1);
  }
}

TEST(LoadStateDict, BrokenFilesGiveOneLineErrorsNamingTheFile) {
  REQUIRE_FIXTURES();
  auto rows = read_table(fixture_dir() + "/broken.txt");
  ASSERT_GE(rows.size(), 20u);
  for (const auto& row : rows) {
    const std::string path = fixture_dir() + "/" + row[0];
    SCOPED_TRACE(row[0]);
    try {
      maskrcnn::load_state_dict(path);
      ADD_FAILURE() << "loaded without error";
    } catch (const maskrcnn::Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(row.size() > 1 ? row[1] : ""), std::string::npos) << msg;
      if (row[0].rfind("truncated", 0) == 0)  // cut-off checkpoints are not called "not a checkpoint"
        EXPECT_EQ(msg.find("not a PyTorch checkpoint"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(maskrcnn::load_state_dict(fixture_dir() + "/does_not_exist.pth"), maskrcnn::Error);
  EXPECT_THROW(maskrcnn::load_state_dict(fixture_dir()), maskrcnn::Error);  // a folder
}

// Truncation at every offset of small files of both formats and single-byte
// corruption at every offset: each load throws maskrcnn::Error or succeeds, never
// crashes (run under ASan/UBSan to make this stronger).
TEST(LoadFuzz, TruncationAndByteFlipsNeverCrash) {
  REQUIRE_FIXTURES();
  const auto start = std::chrono::steady_clock::now();
  size_t loads = 0, errors = 0;
  auto try_load = [&](const std::vector<uint8_t>& bytes, size_t n) {
    ++loads;
    try {
      Value v = ck::load_torch_bytes(bytes.data(), n);
      (void)ck::state_dict_from(v);
    } catch (const maskrcnn::Error&) {
      ++errors;
    }
  };
  for (const char* name : {"parameters.pth", "parameters_legacy.pth", "legacy_views.pth", "proto4_legacy.pth",
                           "training_legacy.pth", "dtypes.pth"}) {
    SCOPED_TRACE(name);
    std::vector<uint8_t> bytes = read_file(fixture_dir() + "/" + name);
    ASSERT_FALSE(bytes.empty());
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + cut);  // exact-size buffer for ASan
      try_load(prefix, cut);
    }
    const size_t step = bytes.size() > 8000 ? 7 : 1;
    for (size_t i = 0; i < bytes.size(); i += step) {
      for (uint8_t mask : {uint8_t(0xFF), uint8_t(0x01), uint8_t(0x80)}) {
        std::vector<uint8_t> bad = bytes;
        bad[i] ^= mask;
        try_load(bad, bad.size());
      }
    }
  }
  // Random multi-byte damage to legacy streams, which carry no CRC, so it reaches the
  // unpickler and the storage table (seeded LCG: the same cases every run).
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  auto next = [&seed] { return (seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  for (const char* name : {"training_legacy.pth", "legacy_views.pth", "proto4_legacy.pth"}) {
    std::vector<uint8_t> bytes = read_file(fixture_dir() + "/" + name);
    for (int round = 0; round < 3000; ++round) {
      std::vector<uint8_t> bad = bytes;
      const size_t changes = 1 + next() % 8;
      for (size_t c = 0; c < changes; ++c) bad[next() % bad.size()] = uint8_t(next());
      try_load(bad, bad.size());
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz: %zu loads, %zu errors, %.1f s\n", loads, errors, secs);
  EXPECT_GT(errors, loads / 2);
}
