#include "io/checkpoint/unpickler.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_types.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;
using Kind = pickle::Value::Kind;

namespace {

// Caps that no torch checkpoint comes near but that bound hostile inputs: the stack
// holds at most one SETITEMS batch (1000 pairs) in pickles Python writes, and the
// memo about ten entries per tensor.
constexpr size_t kMaxStack = size_t(1) << 20;
constexpr size_t kMaxMemo = size_t(1) << 22;

// A string identifying a dict key up to Python equality (True == 1 == 1.0).
bool key_signature(const Value& k, std::string* out, size_t depth = 0) {
  switch (k.kind()) {
    case Kind::None: *out += "N"; return true;
    case Kind::Bool:
    case Kind::Int: *out += "i" + std::to_string(k.to_int()) + ";"; return true;
    case Kind::Float: {
      double d = k.to_double();
      if (std::nearbyint(d) == d && std::fabs(d) < 9.2e18) {
        *out += "i" + std::to_string(int64_t(d)) + ";";
      } else {
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        *out += "f" + std::to_string(bits) + ";";
      }
      return true;
    }
    case Kind::String:
    case Kind::Bytes:
      *out += (k.kind() == Kind::String ? "s" : "b") + std::to_string(k.to_str().size()) + ":" + k.to_str();
      return true;
    case Kind::Tuple:
      if (depth > 32) return false;
      *out += "(";
      for (const Value& x : k.items())
        if (!key_signature(x, out, depth + 1)) return false;
      *out += ")";
      return true;
    default: return false;
  }
}

// Python dicts keep one entry per key: the first position, the last value.
void dedupe_keys(Value::Entries& entries) {
  if (entries.size() < 2) return;
  std::unordered_map<std::string, size_t> first;
  first.reserve(entries.size());
  size_t kept = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    std::string sig;
    if (!key_signature(entries[i].first, &sig))
      throw Error(std::string("pickle: dict key of unhashable type ") + entries[i].first.kind_name());
    auto it = first.find(sig);
    if (it != first.end()) {
      entries[it->second].second = std::move(entries[i].second);
    } else {
      first.emplace(std::move(sig), kept);
      if (kept != i) entries[kept] = std::move(entries[i]);
      ++kept;
    }
  }
  entries.resize(kept);
}

// Children of a container in a fixed order (items; dict keys/values; attributes).
size_t child_count(const Value& v) {
  switch (v.kind()) {
    case Kind::List:
    case Kind::Tuple: return v.items().size();
    case Kind::Dict: return 2 * (v.entries().size() + v.attributes().size());
    case Kind::Object: return 2 * v.attributes().size();
    default: return 0;
  }
}
const Value& child(const Value& v, size_t i) {
  if (v.is_sequence()) return v.items()[i];
  if (v.kind() == Kind::Dict) {
    const auto& e = v.entries();
    if (i < 2 * e.size()) return i % 2 ? e[i / 2].second : e[i / 2].first;
    i -= 2 * e.size();
  }
  const auto& a = v.attributes();
  return i % 2 ? a[i / 2].second : a[i / 2].first;
}

// Empties a container so that destroying it cannot recurse (cycles, deep nesting).
void flatten(Value& v) {
  switch (v.kind()) {
    case Kind::List:
    case Kind::Tuple: v.items().clear(); break;
    case Kind::Dict: v.entries().clear(); v.attributes().clear(); break;
    case Kind::Object: v.attributes().clear(); break;
    default: break;
  }
}

}  // namespace

Unpickler::Unpickler(const uint8_t* data, size_t size, PersistentLoad persistent_load)
    : data_(data), size_(size), persistent_load_(std::move(persistent_load)) {}

void Unpickler::fail(const std::string& what) const {
  throw Error("pickle: " + what + " (opcode at byte " + std::to_string(op_pos_) + ")");
}

void Unpickler::need(uint64_t n) const {
  if (!in_bounds(pos_, n, size_)) fail("truncated data");
}
uint8_t Unpickler::u8() {
  need(1);
  return data_[pos_++];
}
uint16_t Unpickler::u16() {
  need(2);
  pos_ += 2;
  return load_le16(data_ + pos_ - 2);
}
uint32_t Unpickler::u32() {
  need(4);
  pos_ += 4;
  return load_le32(data_ + pos_ - 4);
}
uint64_t Unpickler::u64() {
  need(8);
  pos_ += 8;
  return load_le64(data_ + pos_ - 8);
}
std::string Unpickler::bytes(uint64_t n) {
  need(n);
  std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
  pos_ += size_t(n);
  return s;
}
std::string Unpickler::line() {
  if (pos_ >= size_) fail("truncated data");
  const size_t window = std::min<size_t>(size_ - pos_, 4096);
  const void* nl = std::memchr(data_ + pos_, '\n', window);
  if (nl == nullptr) fail(window < 4096 ? "truncated data" : "text argument longer than 4096 bytes");
  size_t n = static_cast<const uint8_t*>(nl) - (data_ + pos_);
  std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
  pos_ += n + 1;
  return s;
}

Value Unpickler::load(size_t offset, size_t* end) {
  if (offset > size_) throw Error("pickle: start offset past the end of the data");
  pos_ = offset;
  op_pos_ = offset;
  State st;
  try {
    Value result = run(st);
    finalize(st, result);
    if (end != nullptr) *end = pos_;
    return result;
  } catch (...) {
    for (Value& c : st.containers) flatten(c);
    throw;
  }
}

Value Unpickler::run(State& st) {
  auto push = [&](Value v) {
    if (st.stack.size() >= kMaxStack) fail("stack too deep");
    st.stack.push_back(std::move(v));
  };
  auto pop = [&]() {
    if (st.stack.size() <= st.floor()) fail("stack underflow");
    Value v = std::move(st.stack.back());
    st.stack.pop_back();
    return v;
  };
  auto top = [&]() -> Value& {
    if (st.stack.size() <= st.floor()) fail("stack underflow");
    return st.stack.back();
  };
  auto pop_mark = [&]() {
    if (st.marks.empty()) fail("no MARK on the stack");
    size_t m = st.marks.back();
    st.marks.pop_back();
    std::vector<Value> items(std::make_move_iterator(st.stack.begin() + m), std::make_move_iterator(st.stack.end()));
    st.stack.resize(m);
    return items;
  };
  auto memo_put = [&](uint64_t index) {
    if (st.memo.size() >= kMaxMemo && st.memo.count(index) == 0) fail("memo too large");
    st.memo[index] = top();
  };
  auto memo_get = [&](uint64_t index) {
    auto it = st.memo.find(index);
    if (it == st.memo.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    push(it->second);
  };
  auto parse_int = [&](const std::string& text) {
    char* e = nullptr;
    errno = 0;
    long long v = std::strtoll(text.c_str(), &e, 10);
    if (text.empty() || errno != 0 || (*e != '\0' && !(*e == 'L' && e[1] == '\0'))) fail("bad integer text");
    return int64_t(v);
  };
  auto long_bytes = [&](uint64_t n) {
    if (n > 8) fail("integer wider than 64 bits");
    need(n);
    uint64_t v = 0;
    for (uint64_t i = 0; i < n; ++i) v |= uint64_t(data_[pos_ + i]) << (8 * i);
    if (n > 0 && n < 8 && (data_[pos_ + n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    pos_ += size_t(n);
    return Value::integer(int64_t(v));
  };
  auto append_to = [&](Value& list, std::vector<Value> items) {
    if (list.kind() != Kind::List) fail(std::string("APPEND to ") + list.describe());
    auto& dst = list.items();
    for (auto& x : items) dst.push_back(std::move(x));
  };
  auto set_items = [&](Value& dict, std::vector<Value> kv) {
    if (dict.kind() != Kind::Dict) fail(std::string("SETITEM on ") + dict.describe());
    if (kv.size() % 2 != 0) fail("odd number of items for SETITEMS");
    auto& dst = dict.entries();
    for (size_t i = 0; i < kv.size(); i += 2) dst.emplace_back(std::move(kv[i]), std::move(kv[i + 1]));
  };

  for (;;) {
    op_pos_ = pos_;
    const uint8_t op = u8();
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t proto = u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case 0x95: u64(); break;  // FRAME: only a read-ahead hint
      case '.': {               // STOP
        if (!st.marks.empty() || st.stack.size() != 1)
          fail("pickle ends with " + std::to_string(st.stack.size()) + " values on the stack");
        return pop();
      }
      case '(': st.marks.push_back(st.stack.size()); break;
      case '0':  // POP (Python pops a MARK if no value sits above it)
        if (st.stack.size() > st.floor()) st.stack.pop_back();
        else pop_mark();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      case 'N': push(Value()); break;
      case 0x88: push(Value::boolean(true)); break;
      case 0x89: push(Value::boolean(false)); break;
      case 'I': {
        std::string t = line();
        if (t == "01" || t == "00") push(Value::boolean(t == "01"));
        else push(Value::integer(parse_int(t)));
        break;
      }
      case 'L': push(Value::integer(parse_int(line()))); break;
      case 'J': push(Value::integer(int32_t(u32()))); break;
      case 'K': push(Value::integer(u8())); break;
      case 'M': push(Value::integer(u16())); break;
      case 0x8a: push(long_bytes(u8())); break;   // LONG1
      case 0x8b: push(long_bytes(u32())); break;  // LONG4
      case 'F': {
        std::string t = line();
        char* e = nullptr;
        double d = std::strtod(t.c_str(), &e);
        if (t.empty() || *e != '\0') fail("bad float text");
        push(Value::real(d));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        need(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | data_[pos_ + i];
        pos_ += 8;
        double d;
        std::memcpy(&d, &bits, 8);
        push(Value::real(d));
        break;
      }
      case 'X': push(Value::string(bytes(u32()))); break;   // BINUNICODE
      case 0x8c: push(Value::string(bytes(u8()))); break;   // SHORT_BINUNICODE
      case 0x8d: push(Value::string(bytes(u64()))); break;  // BINUNICODE8
      case 'T': {  // BINSTRING (Python 2 str; torch.load decodes it to str)
        int32_t n = int32_t(u32());
        if (n < 0) fail("negative string length");
        push(Value::string(bytes(uint64_t(n))));
        break;
      }
      case 'U': push(Value::string(bytes(u8()))); break;  // SHORT_BINSTRING
      case 'B': push(Value::bytes(bytes(u32()))); break;
      case 'C': push(Value::bytes(bytes(u8()))); break;
      case 0x8e: push(Value::bytes(bytes(u64()))); break;  // BINBYTES8
      case 0x96: push(Value::bytes(bytes(u64()))); break;  // BYTEARRAY8
      case ')': push(st.make(Value::tuple())); break;
      case 't': push(st.make(Value::tuple(pop_mark()))); break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<Value> items(size_t(op - 0x84));
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        push(st.make(Value::tuple(std::move(items))));
        break;
      }
      case ']': push(st.make(Value::list())); break;
      case 'l': push(st.make(Value::list(pop_mark()))); break;
      case 'a': {
        Value x = pop();
        append_to(top(), {std::move(x)});
        break;
      }
      case 'e': {
        std::vector<Value> items = pop_mark();
        append_to(top(), std::move(items));
        break;
      }
      case '}': push(st.make(Value::dict())); break;
      case 'd': {
        std::vector<Value> kv = pop_mark();
        Value d = st.make(Value::dict());
        set_items(d, std::move(kv));
        push(std::move(d));
        break;
      }
      case 's': {
        Value v = pop();
        Value k = pop();
        set_items(top(), {std::move(k), std::move(v)});
        break;
      }
      case 'u': {
        std::vector<Value> kv = pop_mark();
        set_items(top(), std::move(kv));
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = line();
        std::string name = line();
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value name = pop();
        Value module = pop();
        if (name.kind() != Kind::String || module.kind() != Kind::String) fail("STACK_GLOBAL needs two strings");
        push(global(module.to_str(), name.to_str()));
        break;
      }
      case 'R': {  // REDUCE
        Value args = pop();
        Value fn = pop();
        push(call(st, fn, args));
        break;
      }
      case 0x81: {  // NEWOBJ
        Value args = pop();
        Value cls = pop();
        push(new_object(st, cls, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        Value kwargs = pop();
        Value args = pop();
        Value cls = pop();
        if (kwargs.kind() != Kind::Dict || !kwargs.entries().empty()) fail("NEWOBJ_EX with keyword arguments");
        push(new_object(st, cls, args));
        break;
      }
      case 'b': {  // BUILD
        Value state = pop();
        build(top(), state);
        break;
      }
      case 'p': memo_put(uint64_t(parse_int(line()))); break;
      case 'q': memo_put(u8()); break;
      case 'r': memo_put(u32()); break;
      case 0x94: memo_put(st.memo.size()); break;  // MEMOIZE
      case 'g': memo_get(uint64_t(parse_int(line()))); break;
      case 'h': memo_get(u8()); break;
      case 'j': memo_get(u32()); break;
      case 'P':
      case 'Q': {  // PERSID / BINPERSID
        Value pid = op == 'P' ? Value::string(line()) : pop();
        if (!persistent_load_) fail("unexpected persistent id");
        Value v = persistent_load_(pid);
        push(std::move(v));
        break;
      }
      case 0x8f:
      case 0x90:
      case 0x91: fail("sets are not supported in a checkpoint");
      case 'i':
      case 'o': fail("old-style class instances (INST/OBJ) are not allowed in a checkpoint");
      default: {
        static const char* hex = "0123456789abcdef";
        fail(std::string("unsupported opcode 0x") + hex[op >> 4] + hex[op & 15]);
      }
    }
  }
}

void Unpickler::finalize(State& st, const Value& result) {
  // Depth-first walk with an explicit stack: rejects cycles, nesting deeper than
  // kMaxDepth and leftover internals, and marks what the result keeps alive.
  std::unordered_map<const void*, uint8_t> color;  // 1: on the path, 2: done
  struct Frame {
    const Value* v;
    size_t next;
  };
  std::vector<Frame> path;
  auto visit = [&](const Value& v) {
    if (v.kind() == Kind::Global) throw Error("pickle: result holds a bare reference to '" + printable(v.class_name()) + "'");
    if (v.kind() == Kind::Storage) throw Error("pickle: result holds a bare storage instead of a tensor");
    const void* id = v.identity();
    if (id == nullptr) return;
    uint8_t& c = color[id];
    if (c == 1) throw Error("pickle: result contains a reference cycle");
    if (c == 2) return;
    if (path.size() >= kMaxDepth) throw Error("pickle: nested deeper than " + std::to_string(kMaxDepth) + " levels");
    c = 1;
    path.push_back({&v, 0});
  };
  visit(result);
  while (!path.empty()) {
    Frame& f = path.back();
    if (f.next < child_count(*f.v)) {
      visit(child(*f.v, f.next++));
    } else {
      color[f.v->identity()] = 2;
      path.pop_back();
    }
  }
  for (Value& c : st.containers) {
    if (color.count(c.identity()) == 0) {
      flatten(c);  // unreachable: drop its contents now so destruction stays shallow
    } else if (c.kind() == Kind::Dict) {
      dedupe_keys(c.entries());
      dedupe_keys(c.attributes());
    } else if (c.kind() == Kind::Object) {
      dedupe_keys(c.attributes());
    }
  }
}

}  // namespace ckpt
}  // namespace maskrcnn
