// The Python globals a checkpoint may name, and what the allowed ones do when the
// pickle calls them (REDUCE), instantiates them (NEWOBJ) or sets their state (BUILD).
// Everything else is refused when it is named, so a hostile pickle fails at its
// first foreign global, before anything is built.
#include <string>
#include <unordered_set>
#include <vector>

#include "io/checkpoint/byte_io.h"
#include "io/checkpoint/torch_types.h"
#include "io/checkpoint/unpickler.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace ckpt {

using pickle::Value;
using Kind = pickle::Value::Kind;

namespace {

// The callables and classes a checkpoint may name. Storage classes are checked
// separately (is_storage_global).
const std::unordered_set<std::string>& allowed_globals() {
  static const std::unordered_set<std::string> names = {
      "collections.OrderedDict",
      "collections.Counter",  // lr_scheduler milestones
      "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state",
      "argparse.Namespace",  // "args" in torchvision reference-script checkpoints
      "_codecs.encode",      // bytes, as Python 3 pickles them in protocol 2
      "builtins.bytes",
      "__builtin__.bytes",
  };
  return names;
}

// Python's `latin1` decoding in reverse: UTF-8 text whose code points are < 256,
// back to those bytes (how protocol 2 carries a bytes object).
bool utf8_to_latin1(const std::string& in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    unsigned char c = in[i];
    if (c < 0x80) {
      out->push_back(char(c));
    } else if ((c == 0xC2 || c == 0xC3) && i + 1 < in.size() && (uint8_t(in[i + 1]) & 0xC0) == 0x80) {
      out->push_back(char(((c & 0x03) << 6) | (uint8_t(in[i + 1]) & 0x3F)));
      ++i;
    } else {
      return false;
    }
  }
  return true;
}

std::vector<int64_t> int_list(const Value& v, const char* what) {
  if (!v.is_sequence()) throw Error(std::string("pickle: tensor ") + what + " is " + v.describe() + ", not a tuple");
  std::vector<int64_t> out;
  for (const Value& x : v.items()) {
    if (x.kind() != Kind::Int) throw Error(std::string("pickle: tensor ") + what + " holds " + x.describe());
    out.push_back(x.to_int());
  }
  return out;
}

}  // namespace

Value Unpickler::global(const std::string& module, const std::string& name) {
  std::string qualified = module + "." + name;
  at::ScalarType dtype;
  if (allowed_globals().count(qualified) != 0 || is_storage_global(qualified, &dtype)) return Value::global(qualified);
  std::string hint = " (only tensors, numbers, strings and containers are)";
  if (module.compare(0, 9, "torch.nn.") == 0 || module.find("models") != std::string::npos ||
      module.compare(0, 8, "__main__") == 0)
    hint = "; the file looks like a whole pickled model (torch.save(model)): save model.state_dict() instead";
  fail("global '" + printable(qualified) + "' is not allowed in a checkpoint" + hint);
}

Value Unpickler::call(State& st, const Value& fn, const Value& args) {
  if (fn.kind() != Kind::Global) fail(std::string("REDUCE on ") + fn.describe());
  if (args.kind() != Kind::Tuple) fail(std::string("REDUCE arguments are ") + args.describe());
  const std::string& name = fn.class_name();
  const auto& a = args.items();
  auto arity = [&](size_t lo, size_t hi) {
    if (a.size() < lo || a.size() > hi)
      fail(name + " called with " + std::to_string(a.size()) + " arguments");
  };

  if (name == "collections.OrderedDict" || name == "collections.Counter") {
    arity(0, 1);
    Value d = st.make(name == "collections.OrderedDict" ? Value::ordered_dict() : Value::dict());
    if (!a.empty()) {  // OrderedDict([(k, v), ...]) or Counter({k: n})
      if (a[0].kind() == Kind::Dict) {
        d.entries() = a[0].entries();
      } else if (a[0].is_sequence()) {
        for (const Value& kv : a[0].items()) {
          if (!kv.is_sequence() || kv.items().size() != 2) fail(name + " argument is not a list of pairs");
          d.entries().emplace_back(kv.items()[0], kv.items()[1]);
        }
      } else {
        fail(name + " argument is " + a[0].describe());
      }
    }
    return d;
  }
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
    if (name == "torch._utils._rebuild_tensor") arity(4, 4);
    else arity(6, 7);
    if (a[0].kind() != Kind::Storage) fail(name + ": first argument is " + a[0].describe() + ", not a storage");
    if (a[1].kind() != Kind::Int) fail(name + ": storage offset is " + a[1].describe());
    std::vector<int64_t> size = int_list(a[2], "size");
    std::vector<int64_t> stride = int_list(a[3], "stride");
    if (dry_run_) return Value();
    return Value::tensor(rebuild_tensor(*a[0].storage_ref(), a[1].to_int(), size, stride));
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
    arity(name == "torch._utils._rebuild_parameter" ? 3 : 4, name == "torch._utils._rebuild_parameter" ? 3 : 4);
    if (!a[0].is_tensor() && !(dry_run_ && a[0].is_none())) fail(name + ": data is " + a[0].describe());
    return a[0];  // a Parameter is its tensor; requires_grad is not restored
  }
  if (name == "_codecs.encode") {
    arity(2, 2);
    if (a[0].kind() != Kind::String || a[1].kind() != Kind::String) fail("_codecs.encode needs two strings");
    const std::string& enc = a[1].to_str();
    std::string out;
    if (enc == "latin1" || enc == "latin-1") {
      if (!utf8_to_latin1(a[0].to_str(), &out)) fail("_codecs.encode: text is not latin-1");
    } else if (enc == "utf-8" || enc == "utf8") {
      out = a[0].to_str();
    } else {
      fail("_codecs.encode with encoding '" + printable(enc) + "'");
    }
    return Value::bytes(std::move(out));
  }
  if (name == "builtins.bytes" || name == "__builtin__.bytes") {
    arity(0, 0);
    return Value::bytes("");
  }
  fail("'" + printable(name) + "' may not be called in a checkpoint");
}

Value Unpickler::new_object(State& st, const Value& cls, const Value& args) {
  if (cls.kind() != Kind::Global || cls.class_name() != "argparse.Namespace")
    fail(std::string("NEWOBJ of ") + (cls.kind() == Kind::Global ? "'" + printable(cls.class_name()) + "'" : cls.describe()));
  if (args.kind() != Kind::Tuple || !args.items().empty()) fail("argparse.Namespace created with arguments");
  return st.make(Value::object(cls.class_name()));
}

void Unpickler::build(const Value& target_const, const Value& state) {
  Value target = target_const;  // shares the container
  if (target.kind() != Kind::Dict && target.kind() != Kind::Object)
    fail(std::string("BUILD on ") + target.describe());
  // Python: state is a dict of attributes, or (dict or None, slot dict or None).
  std::vector<const Value*> parts;
  if (state.kind() == Kind::Tuple && state.items().size() == 2) {
    parts = {&state.items()[0], &state.items()[1]};
  } else {
    parts = {&state};
  }
  for (const Value* p : parts) {
    if (p->is_none()) continue;
    if (p->kind() != Kind::Dict) fail(std::string("BUILD state is ") + p->describe());
    auto& attrs = target.attributes();
    for (const auto& kv : p->entries()) attrs.push_back(kv);  // deduped in finalize()
  }
}

}  // namespace ckpt
}  // namespace maskrcnn
