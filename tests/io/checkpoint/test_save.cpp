// save_state_dict / torch_save: C++ round trips, and Python's torch.load (via
// $MASKRCNN_PYTHON and the fixture's roundtrip_check.py) reading what we write,
// torchvision's load_state_dict accepting it, storages staying shared, the zip
// layout matching torch's; plus the atomic-write guarantees.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <string>

#include "io/checkpoint/torch_file.h"
#include "maskrcnn/checkpoint.h"
#include "maskrcnn/error.h"
#include "maskrcnn/pickle.h"

using maskrcnn::pickle::Value;

namespace {

std::string fixture_dir() {
  const char* root = std::getenv("MASKRCNN_FIXTURES");
  return root == nullptr ? std::string() : std::string(root) + "/checkpoint";
}

bool have_fixtures() { return !fixture_dir().empty() && ::access((fixture_dir() + "/valid.txt").c_str(), R_OK) == 0; }

std::string temp_dir() {
  std::string tmpl = ::testing::TempDir() + "ckpt_save_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

// Runs roundtrip_check.py with Python's torch; true when it exits 0.
bool python_check(const std::string& mode, const std::string& path, const std::string& ref = "") {
  const char* py = std::getenv("MASKRCNN_PYTHON");
  std::string cmd = std::string("'") + (py ? py : "/usr/bin/python3") + "' '" + fixture_dir() +
                    "/roundtrip_check.py' " + mode + " '" + path + "'" + (ref.empty() ? "" : " '" + ref + "'");
  int status = std::system(cmd.c_str());
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool same_state_dict(const maskrcnn::StateDict& a, const maskrcnn::StateDict& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || a[i].second.scalar_type() != b[i].second.scalar_type() ||
        a[i].second.sizes() != b[i].second.sizes() || !a[i].second.equal(b[i].second))
      return false;
  }
  return true;
}

}  // namespace

TEST(SaveStateDict, RoundTripsInCpp) {
  maskrcnn::StateDict sd;
  sd.emplace_back("w", at::randn({3, 4}));
  sd.emplace_back("half", at::randn({5}).to(at::kHalf));
  sd.emplace_back("bf16", at::randn({2, 2}).to(at::kBFloat16));
  sd.emplace_back("flags", at::rand({4}) > 0.5);
  sd.emplace_back("ids", at::arange(-3, 3, at::kLong));
  sd.emplace_back("scalar", at::scalar_tensor(2.5, at::kDouble));
  sd.emplace_back("empty", at::zeros({0, 7}, at::kInt));
  at::Tensor base = at::randn({3, 5});
  sd.emplace_back("base", base);
  sd.emplace_back("view", base.t());
  sd.emplace_back("slice", base.slice(1, 1, 4));
  std::string path = temp_dir() + "/rt.pth";
  maskrcnn::save_state_dict(sd, path);
  EXPECT_TRUE(same_state_dict(maskrcnn::load_state_dict(path), sd));
  // Saving over an existing file replaces it.
  sd.resize(2);
  maskrcnn::save_state_dict(sd, path);
  EXPECT_TRUE(same_state_dict(maskrcnn::load_state_dict(path), sd));
}

TEST(SaveStateDict, PythonReadsWhatWeWrite) {
  if (!have_fixtures()) GTEST_SKIP() << "fixtures not built";
  std::string dir = temp_dir();
  for (const char* name : {"dtypes.pth", "dtypes_legacy.pth", "parameters.pth", "legacy_views.pth", "training.pth"}) {
    SCOPED_TRACE(name);
    std::string ref = fixture_dir() + "/" + name;
    std::string out = dir + "/copy_of_" + name;
    maskrcnn::save_state_dict(maskrcnn::load_state_dict(ref), out);
    EXPECT_TRUE(python_check("same", out, ref));
  }
  // Zip64 records on every entry (as entries over 4 GiB need): Python still reads it.
  std::string z64 = dir + "/zip64.pth";
  maskrcnn::StateDict sd = maskrcnn::load_state_dict(fixture_dir() + "/dtypes.pth");
  maskrcnn::pickle::Value::Entries entries;
  for (const auto& kv : sd) entries.emplace_back(Value::string(kv.first), Value::tensor(kv.second));
  maskrcnn::ckpt::save_torch_file(Value::ordered_dict(entries), z64, /*force_zip64=*/true);
  EXPECT_TRUE(same_state_dict(maskrcnn::load_state_dict(z64), sd));
  EXPECT_TRUE(python_check("same", z64, fixture_dir() + "/dtypes.pth"));
  // torchvision's load_state_dict (strict) accepts a resnet18 state dict we wrote.
  std::string out = dir + "/resnet18_copy.pth";
  maskrcnn::save_state_dict(maskrcnn::load_state_dict(fixture_dir() + "/resnet18_legacy.pth"), out);
  EXPECT_TRUE(python_check("resnet18", out, fixture_dir() + "/resnet18.pth"));
}

TEST(SaveStateDict, ViewsStaySharedInPython) {
  if (!have_fixtures()) GTEST_SKIP() << "fixtures not built";
  at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
  maskrcnn::StateDict sd = {{"base", base}, {"base_t", base.t()}, {"row", base[1]}};
  std::string path = temp_dir() + "/shared.pth";
  maskrcnn::save_state_dict(sd, path);
  EXPECT_TRUE(python_check("shared", path));
}

TEST(TorchSave, GenericValuesReachPython) {
  Value od = Value::ordered_dict({{Value::string("w"), Value::tensor(at::arange(6, at::kFloat).reshape({2, 3}))}});
  od.attributes().emplace_back(
      Value::string("_metadata"),
      Value::ordered_dict({{Value::string(""), Value::dict({{Value::string("version"), Value::integer(2)}})}}));
  Value obj = Value::dict({
      {Value::string("epoch"), Value::integer(7)},
      {Value::string("lr"), Value::real(0.5)},
      {Value::string("name"), Value::string("maskrcnn")},
      {Value::string("neg"), Value::integer(-5)},
      {Value::string("big"), Value::integer(int64_t(1) << 40)},
      {Value::string("flags"), Value::list({Value::boolean(true), Value::boolean(false), Value()})},
      {Value::string("tuple"), Value::tuple({Value::integer(1), Value::string("two"), Value::real(3.0)})},
      {Value::string("bytes"), Value::bytes(std::string("\x00\xff" "abc", 5))},
      {Value::string("int_keys"), Value::dict({{Value::integer(0), Value::string("zero")}, {Value::integer(1), Value::string("one")}})},
      {Value::string("od"), od},
      {Value::string("args"), Value::object("argparse.Namespace", {{Value::string("lr"), Value::real(0.02)},
                                                                  {Value::string("data_path"), Value::string("/data")}})},
      {Value::string("tensor"), Value::tensor(at::arange(1, 4, at::kLong))},
  });
  std::string path = temp_dir() + "/generic.pth";
  maskrcnn::torch_save(obj, path);
  Value back = maskrcnn::torch_load(path);
  EXPECT_EQ(back.find("epoch")->to_int(), 7);
  EXPECT_EQ(back.find("od")->attribute("_metadata")->find("")->find("version")->to_int(), 2);
  EXPECT_EQ(back.find("args")->find("data_path")->to_str(), "/data");
  EXPECT_TRUE(back.find("tensor")->to_tensor().equal(at::arange(1, 4, at::kLong)));
  // load_state_dict finds the OrderedDict under no wrapper key: not a state dict.
  EXPECT_THROW(maskrcnn::load_state_dict(path), maskrcnn::Error);
  if (!have_fixtures()) GTEST_SKIP() << "fixtures not built: Python check skipped";
  EXPECT_TRUE(python_check("generic", path));
}

TEST(SaveStateDict, FailuresLeaveNoFile) {
  std::string dir = temp_dir();
  std::string path = dir + "/bad.pth";
  maskrcnn::StateDict dup = {{"a", at::zeros({1})}, {"a", at::ones({1})}};
  EXPECT_THROW(maskrcnn::save_state_dict(dup, path), maskrcnn::Error);
  maskrcnn::StateDict undefined = {{"a", at::Tensor()}};
  EXPECT_THROW(maskrcnn::save_state_dict(undefined, path), maskrcnn::Error);
  maskrcnn::StateDict sparse = {{"a", at::eye(3).to_sparse()}};
  EXPECT_THROW(maskrcnn::save_state_dict(sparse, path), maskrcnn::Error);
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  try {
    maskrcnn::save_state_dict({{"a", at::zeros({1})}}, dir + "/missing/folder/x.pth");
    FAIL() << "saved into a missing folder";
  } catch (const maskrcnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/missing/folder/x.pth: "), std::string::npos) << e.what();
  }
  // An existing good file survives a failed overwrite.
  maskrcnn::save_state_dict({{"a", at::ones({2})}}, path);
  EXPECT_THROW(maskrcnn::save_state_dict(dup, path), maskrcnn::Error);
  EXPECT_TRUE(maskrcnn::load_state_dict(path).at(0).second.equal(at::ones({2})));
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  EXPECT_NE(::access(tmp.c_str(), F_OK), 0);
}
