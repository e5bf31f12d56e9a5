// The unpickler and pickler on hand-written byte strings: opcodes of protocols 2
// and 4, memo semantics, the global allow-list, hostile structures, and Value round
// trips through Pickler -> Unpickler.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "io/checkpoint/pickler.h"
#include "io/checkpoint/torch_types.h"
#include "io/checkpoint/unpickler.h"
#include "maskrcnn/error.h"
#include "maskrcnn/pickle.h"

namespace ck = maskrcnn::ckpt;
using maskrcnn::pickle::Value;
using Kind = Value::Kind;

namespace {

Value unpickle(const std::string& bytes, ck::Unpickler::PersistentLoad pl = nullptr) {
  ck::Unpickler u(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), std::move(pl));
  return u.load();
}

// The error message of unpickling `bytes` ("" if it loads).
std::string error_of(const std::string& bytes) {
  try {
    unpickle(bytes);
  } catch (const maskrcnn::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Bytes from a string literal, embedded NULs included. Hex escapes are greedy in C++
// ("\x01e" is one byte), so literals are split where a hex letter follows.
#define B(lit) std::string(lit, sizeof(lit) - 1)

}  // namespace

TEST(Unpickler, Protocol2Scalars) {
  // pickle.dumps([None, True, False, 5, 300, -2, 1 << 40, 1.5, 'hé', b'\x00\x01'], protocol=2)
  // with bytes written as protocol 3 BINBYTES, which Python accepts in any protocol.
  std::string p = B("\x80\x02]q\x00(N\x88\x89K\x05M,\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01"
                    "G?\xf8\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00h\xc3\xa9"
                    "C\x02\x00\x01" "e.");
  Value v = unpickle(p);
  ASSERT_EQ(v.kind(), Kind::List);
  const auto& it = v.items();
  ASSERT_EQ(it.size(), 10u);
  EXPECT_TRUE(it[0].is_none());
  EXPECT_TRUE(it[1].to_bool());
  EXPECT_FALSE(it[2].to_bool());
  EXPECT_EQ(it[3].to_int(), 5);
  EXPECT_EQ(it[4].to_int(), 300);
  EXPECT_EQ(it[5].to_int(), -2);
  EXPECT_EQ(it[6].to_int(), int64_t(1) << 40);
  EXPECT_EQ(it[7].to_double(), 1.5);
  EXPECT_EQ(it[8].to_str(), "h\xc3\xa9");
  EXPECT_EQ(it[9].kind(), Kind::Bytes);
  EXPECT_EQ(it[9].to_str(), B("\x00\x01"));
}

TEST(Unpickler, Protocol4FramesMemoizeStackGlobal) {
  // pickle.dumps(collections.OrderedDict(a=1), protocol=4)
  std::string body = B("\x8c\x0b" "collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01" "a\x94K\x01s.");
  std::string p = B("\x80\x04\x95") + std::string(1, char(body.size())) + std::string(7, '\0') + body;
  Value v = unpickle(p);
  ASSERT_TRUE(v.is_dict());
  EXPECT_TRUE(v.is_ordered());
  ASSERT_NE(v.find("a"), nullptr);
  EXPECT_EQ(v.find("a")->to_int(), 1);
}

TEST(Unpickler, MemoSharesContainersLikePython) {
  // l = []; pickle.dumps([l, l]) then append through the memo: both see it.
  std::string p = B("\x80\x02]q\x00(]q\x01h\x01" "e" "h\x01K\x07" "a0.");
  Value v = unpickle(p);
  ASSERT_EQ(v.items().size(), 2u);
  EXPECT_EQ(v.items()[0].identity(), v.items()[1].identity());
  ASSERT_EQ(v.items()[0].items().size(), 1u);
  EXPECT_EQ(v.items()[1].items()[0].to_int(), 7);
}

TEST(Unpickler, DuplicateKeysKeepFirstPositionLastValue) {
  std::string p = B("\x80\x02}q\x00(X\x01\x00\x00\x00" "aK\x01X\x01\x00\x00\x00" "bK\x02X\x01\x00\x00\x00" "aK\x03u.");
  Value v = unpickle(p);
  ASSERT_EQ(v.entries().size(), 2u);
  EXPECT_EQ(v.entries()[0].first.to_str(), "a");
  EXPECT_EQ(v.entries()[0].second.to_int(), 3);
  EXPECT_EQ(v.entries()[1].second.to_int(), 2);
}

TEST(Unpickler, RejectsDisallowedGlobals) {
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00ls\x85R.")), "'os.system'"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "cbuiltins\ngetattr\n.")), "'builtins.getattr'"));
  // STACK_GLOBAL spelling.
  EXPECT_TRUE(contains(error_of(B("\x80\x04\x8c\x05posix\x8c\x06system\x93.")), "'posix.system'"));
  // Allowed names used the wrong way: a storage class called, a rebuild function returned bare.
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "ctorch\nFloatStorage\n)R.")), "may not be called"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n.")), "bare reference"));
  // NEWOBJ only for argparse.Namespace.
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "ccollections\nOrderedDict\n)\x81.")), "NEWOBJ"));
  // Persistent ids without a loader.
  EXPECT_TRUE(contains(error_of(B("\x80\x02K\x01Q.")), "persistent id"));
}

TEST(Unpickler, RejectsHostileStructures) {
  EXPECT_TRUE(contains(error_of(B("\x80\x02]q\x00h\x00" "a.")), "cycle"));
  EXPECT_TRUE(contains(error_of("\x80\x02N" + std::string(5000, '\x85') + "."), "nested deeper"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02h\x05.")), "never stored"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02X\xff\xff\xff\x7f" "abc.")), "truncated"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02K\x01K\x02.")), "on the stack"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "a.")), "underflow"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02" "(K\x01" "0" "0" "0.")), "no MARK"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.")), "64 bits"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02\xff.")), "unsupported opcode 0xff"));
  EXPECT_TRUE(contains(error_of(B("\x80\x02\x8f.")), "sets"));
  EXPECT_TRUE(contains(error_of(""), "truncated"));
  // 2 MB of DUPs of one big string must not copy it (strings are shared), and the
  // stack cap stops runaway growth.
  std::string dup = B("\x80\x02X\x00\x00\x10\x00") + std::string(1 << 20, 'a') + std::string(2 << 20, '2') + ".";
  EXPECT_TRUE(contains(error_of(dup), "stack too deep"));
}

TEST(Unpickler, RebuildsTensorsFromStorage) {
  std::vector<float> data = {0, 1, 2, 3, 4, 5, 6, 7};
  auto ref = std::make_shared<maskrcnn::pickle::detail::StorageRef>();
  ref->dtype = at::kFloat;
  ref->numel = 8;
  ref->data = reinterpret_cast<const uint8_t*>(data.data());
  ref->key = "0";
  auto pl = [&](const Value&) { return Value::storage(ref); };
  // _rebuild_tensor_v2(storage, 1, (2, 3), (1, 2), False, OrderedDict()): a strided view.
  std::string p = B("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n" "(" "K\x00" "Q" "K\x01" "K\x02K\x03\x86"
                    "K\x01K\x02\x86" "\x89" "ccollections\nOrderedDict\n)R" "t" "R" ".");
  Value v = unpickle(p, pl);
  ASSERT_TRUE(v.is_tensor());
  at::Tensor expect = at::tensor(std::vector<float>{1, 3, 5, 2, 4, 6}).reshape({2, 3});
  EXPECT_TRUE(v.to_tensor().equal(expect)) << v.to_tensor();
  EXPECT_TRUE(v.to_tensor().is_contiguous());
  // The same, reaching past the storage's end.
  std::string oob = p;
  oob[oob.find(B("K\x03\x86")) + 1] = '\x09';
  try {
    unpickle(oob, pl);
    FAIL() << "out-of-bounds view accepted";
  } catch (const maskrcnn::Error& e) {
    EXPECT_TRUE(contains(e.what(), "reaches element")) << e.what();
  }
}

TEST(RebuildTensor, BoundsAndDtypes) {
  std::vector<uint8_t> bytes = {0, 1, 2, 255};
  maskrcnn::pickle::detail::StorageRef s;
  s.dtype = at::kBool;
  s.numel = 4;
  s.data = bytes.data();
  at::Tensor b = ck::rebuild_tensor(s, 0, {4}, {1});
  EXPECT_EQ(b.scalar_type(), at::kBool);
  EXPECT_TRUE(b.to(at::kByte).equal(at::tensor({0, 1, 1, 1}, at::kByte)));  // non-0/1 bytes become true
  s.dtype = at::kByte;
  EXPECT_TRUE(ck::rebuild_tensor(s, 3, {}, {}).equal(at::scalar_tensor(255, at::kByte)));
  EXPECT_EQ(ck::rebuild_tensor(s, 100, {0, 5}, {5, 1}).numel(), 0);  // empty: never touches data
  EXPECT_TRUE(ck::rebuild_tensor(s, 1, {2, 3}, {0, 1}).equal(at::tensor({1, 2, 255, 1, 2, 255}, at::kByte).reshape({2, 3})));
  EXPECT_THROW(ck::rebuild_tensor(s, 4, {1}, {1}), maskrcnn::Error);
  EXPECT_THROW(ck::rebuild_tensor(s, 0, {2}, {-1}), maskrcnn::Error);
  EXPECT_THROW(ck::rebuild_tensor(s, -1, {1}, {1}), maskrcnn::Error);
  EXPECT_THROW(ck::rebuild_tensor(s, 0, {2}, {1, 1}), maskrcnn::Error);
  EXPECT_THROW(ck::rebuild_tensor(s, 0, {int64_t(1) << 62, 4}, {1, 1}), maskrcnn::Error);
  EXPECT_THROW(ck::rebuild_tensor(s, 0, {2, 2}, {int64_t(1) << 62, 1}), maskrcnn::Error);
}

TEST(Pickler, RoundTripsValues) {
  Value od = Value::ordered_dict({{Value::string("w"), Value::tensor(at::arange(6, at::kFloat).reshape({2, 3}))}});
  od.attributes().emplace_back(Value::string("_metadata"),
                               Value::ordered_dict({{Value::string(""), Value::dict({{Value::string("version"), Value::integer(2)}})}}));
  Value root = Value::dict({
      {Value::string("none"), Value()},
      {Value::string("flags"), Value::list({Value::boolean(true), Value::boolean(false)})},
      {Value::string("ints"), Value::tuple({Value::integer(0), Value::integer(255), Value::integer(256), Value::integer(70000),
                                            Value::integer(-1), Value::integer(INT64_MIN), Value::integer(INT64_MAX)})},
      {Value::string("real"), Value::real(-0.25)},
      {Value::string("bytes"), Value::bytes(B("\x00\xff"))},
      {Value::integer(3), Value::string("int key")},
      {Value::string("od"), od},
      {Value::string("args"), Value::object("argparse.Namespace", {{Value::string("lr"), Value::real(0.02)}})},
  });
  ck::Pickler pickler;
  std::string bytes = pickler.dump(root);
  EXPECT_EQ(pickler.storages().size(), 1u);
  const auto& st = pickler.storages()[0];
  auto ref = std::make_shared<maskrcnn::pickle::detail::StorageRef>();
  ref->dtype = at::kFloat;
  ref->numel = 6;
  ref->data = static_cast<const uint8_t*>(st.data);
  ref->key = st.key;
  Value back = unpickle(bytes, [&](const Value& pid) {
    EXPECT_EQ(pid.items()[0].to_str(), "storage");
    EXPECT_EQ(pid.items()[1].class_name(), "torch.FloatStorage");
    EXPECT_EQ(pid.items()[2].to_str(), "0");
    EXPECT_EQ(pid.items()[4].to_int(), 6);
    return Value::storage(ref);
  });
  ASSERT_TRUE(back.is_dict());
  EXPECT_FALSE(back.is_ordered());
  ASSERT_EQ(back.entries().size(), root.entries().size());
  EXPECT_TRUE(back.find("none")->is_none());
  EXPECT_TRUE(back.find("flags")->items()[0].to_bool());
  const auto& ints = back.find("ints")->items();
  const int64_t expect[] = {0, 255, 256, 70000, -1, INT64_MIN, INT64_MAX};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(ints[i].to_int(), expect[i]);
  EXPECT_EQ(back.find("real")->to_double(), -0.25);
  EXPECT_EQ(back.find("bytes")->to_str(), B("\x00\xff"));
  EXPECT_EQ(back.entries()[5].first.to_int(), 3);
  const Value& od2 = *back.find("od");
  EXPECT_TRUE(od2.is_ordered());
  EXPECT_TRUE(od2.find("w")->to_tensor().equal(at::arange(6, at::kFloat).reshape({2, 3})));
  ASSERT_NE(od2.attribute("_metadata"), nullptr) << "BUILD state kept as attributes";
  EXPECT_EQ(od2.find("_metadata"), nullptr);
  EXPECT_EQ(od2.attribute("_metadata")->find("")->find("version")->to_int(), 2);
  const Value& args = *back.find("args");
  EXPECT_EQ(args.class_name(), "argparse.Namespace");
  EXPECT_EQ(args.find("lr")->to_double(), 0.02);
}

TEST(Pickler, RejectsWhatPythonCouldNotLoad) {
  ck::Pickler p;
  EXPECT_THROW(p.dump(Value::dict({{Value::list(), Value()}})), maskrcnn::Error);  // unhashable key
  Value d = Value::dict();
  d.attributes().emplace_back(Value::string("x"), Value());
  EXPECT_THROW(p.dump(d), maskrcnn::Error);  // attributes on a plain dict
  EXPECT_THROW(p.dump(Value::object("os.Foo")), maskrcnn::Error);
  EXPECT_THROW(p.dump(Value::tensor(at::Tensor())), maskrcnn::Error);
  Value cyc = Value::list();
  cyc.items().push_back(cyc);
  EXPECT_THROW(p.dump(cyc), maskrcnn::Error);
  cyc.items().clear();  // break the cycle so the test does not leak
  // Two tensors sharing a storage under different dtypes (torch refuses too).
  at::Tensor f = at::zeros({4}, at::kFloat);
  EXPECT_THROW(p.dump(Value::list({Value::tensor(f), Value::tensor(f.view(at::kInt))})), maskrcnn::Error);
}

TEST(Value, Accessors) {
  Value d = Value::dict();
  d.set(Value::string("a"), Value::integer(1));
  d.set(Value::string("b"), Value::integer(2));
  d.set(Value::string("a"), Value::integer(3));
  ASSERT_EQ(d.entries().size(), 2u);
  EXPECT_EQ(d.find("a")->to_int(), 3);
  d.set(Value::boolean(true), Value::string("t"));
  d.set(Value::real(1.0), Value::string("one"));  // Python: True == 1.0
  EXPECT_EQ(d.entries().size(), 3u);
  EXPECT_EQ(d.entries()[2].second.to_str(), "one");
  EXPECT_THROW(d.items(), maskrcnn::Error);
  EXPECT_THROW(Value::integer(1).to_str(), maskrcnn::Error);
  EXPECT_EQ(Value::integer(2).to_double(), 2.0);
  EXPECT_STREQ(Value::ordered_dict().kind_name(), "OrderedDict");
}
