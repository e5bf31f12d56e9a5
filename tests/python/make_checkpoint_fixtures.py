#!/usr/bin/python3
"""Fixtures for tests/io/checkpoint: .pth files written by the real torch.save
(zip and legacy formats, protocols 2 and 4), hand-made legacy storage views, broken
and hostile files, and for each valid file a manifest of what torch.load returns.

Writes into --out:
  <name>.pth             checkpoints
  <name>.manifest        key \t dtype \t shape \t crc32 of the contiguous bytes \t float64 sum
  valid.txt              <file> \t <manifest>  (files load_state_dict must read)
  broken.txt             <file> \t <substring the error message must contain>
  resnet18.metadata      <prefix> \t <version>  (the state dict's _metadata)
  roundtrip_check.py     run by the C++ tests on the files they save

Hostile pickles are written as bytes by hand; they are never unpickled here.
"""
import argparse
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
import zlib

import torch
import torchvision

MAGIC = 0x1950A86A20F9469CFC6C


def tensor_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_sum(t):
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return float(t.double().sum())


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def write_manifest(path, sd):
    with open(path, "w") as f:
        for k, t in sd.items():
            shape = ",".join(str(s) for s in t.shape)
            f.write(f"{k}\t{dtype_name(t)}\t{shape}\t{zlib.crc32(tensor_bytes(t)):08x}\t{tensor_sum(t)!r}\n")


def state_dict_of(obj):
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def dtypes_state_dict():
    g = torch.Generator().manual_seed(1234)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4, generator=g)
    sd["f64"] = torch.randn(5, generator=g, dtype=torch.float64)
    sd["f16"] = torch.randn(2, 3, generator=g).half()
    sd["bf16"] = torch.randn(4, 2, generator=g).bfloat16()
    sd["i64"] = torch.randint(-(10**12), 10**12, (7,), generator=g, dtype=torch.int64)
    sd["i32"] = torch.randint(-(2**31), 2**31 - 1, (6,), generator=g, dtype=torch.int32)
    sd["i16"] = torch.randint(-(2**15), 2**15 - 1, (2, 2), generator=g, dtype=torch.int16)
    sd["i8"] = torch.randint(-128, 127, (9,), generator=g, dtype=torch.int8)
    sd["u8"] = torch.randint(0, 255, (3, 5), generator=g, dtype=torch.uint8)
    sd["bool"] = torch.rand(3, 3, generator=g) > 0.5
    sd["c64"] = torch.randn(3, generator=g, dtype=torch.complex64)
    sd["c128"] = torch.randn(2, 2, generator=g, dtype=torch.complex128)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["big"] = torch.randn(64, 64, generator=g)
    # Views sharing one storage: transposed, offset, strided, a row, expanded.
    base = torch.randn(4, 6, generator=g)
    sd["base"] = base
    sd["base_t"] = base.t()
    sd["base_slice"] = base[1:3, 2:5]
    sd["base_step"] = base[:, ::2]
    sd["base_row"] = base[2]
    sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)
    lin = torch.arange(20.0)
    sd["lin_tail"] = lin[15:]  # saved without `lin`: the storage is bigger than the tensor
    return sd


def save_both(out, name, obj, **kw):
    torch.save(obj, os.path.join(out, name + ".pth"), **kw)
    torch.save(obj, os.path.join(out, name + "_legacy.pth"), _use_new_zipfile_serialization=False, **kw)
    return [name + ".pth", name + "_legacy.pth"]


class FakeStorage:
    """Stands for a storage view in a hand-made legacy pickle."""

    def __init__(self, root_key, root_numel, view):
        self.root_key, self.root_numel, self.view = root_key, root_numel, view


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def legacy_header(little_endian=True):
    buf = io.BytesIO()
    pickle.dump(MAGIC, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    sys_info = dict(protocol_version=1001, little_endian=little_endian, type_sizes=dict(short=2, int=4, long=4))
    pickle.dump(sys_info, buf, protocol=2)
    return buf.getvalue()


def write_legacy_views(path):
    """The pre-1.6 layout with storage views (view_metadata), which torch 1.13 no
    longer writes: two views into one root storage of 24 floats."""
    root = torch.arange(24, dtype=torch.float32) * 0.5 - 3
    v1 = FakeStorage("r0", 24, ("v1", 4, 12))   # elements 4..15
    v2 = FakeStorage("r0", 24, ("v2", 10, 14))  # elements 10..23
    whole = FakeStorage("r0", 24, None)
    obj = collections.OrderedDict()
    obj["view_a"] = FakeTensor(v1, 2, (2, 3), (3, 1))
    obj["view_b"] = FakeTensor(v2, 1, (3, 2), (1, 5))  # non-contiguous inside the view
    obj["whole"] = FakeTensor(whole, 0, (4, 6), (6, 1))

    def persistent_id(o):
        if isinstance(o, FakeStorage):
            return ("storage", torch.FloatStorage, o.root_key, "cpu", o.root_numel, o.view)
        return None

    buf = io.BytesIO()
    buf.write(legacy_header())
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = persistent_id
    p.dump(obj)
    pickle.dump(["r0"], buf, protocol=2)
    buf.write(struct.pack("<q", 24))
    buf.write(root.numpy().tobytes())
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def write_zip(path, records, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in records:
            z.writestr(name, data)


def zip_records(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def tensor_pickle(numel, size, stride, key="0"):
    """data.pkl of OrderedDict(w=tensor) with a chosen storage numel / size / stride."""
    storage = FakeStorage(key, numel, None)

    def persistent_id(o):
        if isinstance(o, FakeStorage):
            return ("storage", torch.FloatStorage, o.root_key, "cpu", o.root_numel)
        return None

    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = persistent_id
    p.dump(collections.OrderedDict(w=FakeTensor(storage, 0, size, stride)))
    return buf.getvalue()


def write_broken(out, valid_zip, valid_legacy):
    broken = []

    def add(name, data, expect):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        broken.append((name, expect))

    zip_bytes = open(valid_zip, "rb").read()
    legacy_bytes = open(valid_legacy, "rb").read()
    add("empty.pth", b"", "file is empty")
    add("text.pth", b"This is not a checkpoint, just text.\n", "not a PyTorch checkpoint")
    rnd = bytearray(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy().tobytes())
    rnd[0] = 0x42
    add("random.pth", bytes(rnd), "not a PyTorch checkpoint")
    for cut in (1, 3, 40, 500, len(zip_bytes) // 2, len(zip_bytes) - 30, len(zip_bytes) - 1):
        add(f"truncated_zip_{cut}.pth", zip_bytes[:cut], "")
    for cut in (10, 20, 200, len(legacy_bytes) // 2, len(legacy_bytes) - 100, len(legacy_bytes) - 1):
        add(f"truncated_legacy_{cut}.pth", legacy_bytes[:cut], "")

    recs = zip_records(valid_zip)
    prefix = recs[0][0].split("/")[0] + "/"

    def add_zip(name, records, expect, compression=zipfile.ZIP_STORED):
        path = os.path.join(out, name)
        write_zip(path, records, compression)
        broken.append((name, expect))

    add_zip("no_datapkl.pth", [r for r in recs if not r[0].endswith("data.pkl")], "no data.pkl")
    add_zip("compressed.pth", recs, "compressed", zipfile.ZIP_DEFLATED)
    add_zip("missing_storage.pth", [r for r in recs if r[0] != prefix + "data/0"], "missing")
    add_zip("short_storage.pth", [(n, d[: len(d) // 2] if n == prefix + "data/0" else d) for n, d in recs], "expected")
    # Hostile pickles, by hand: os.system("echo pwned") via GLOBAL + REDUCE, and the
    # protocol 4 spelling with STACK_GLOBAL; builtins.eval in a legacy stream.
    evil = b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    add_zip("evil_reduce.pth", [("archive/data.pkl", evil), ("archive/version", b"3\n")], "posix.system")
    body4 = b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0aecho pwned\x94\x85\x94R\x94."
    evil4 = b"\x80\x04\x95" + struct.pack("<Q", len(body4)) + body4
    add_zip("evil_stack_global.pth", [("archive/data.pkl", evil4), ("archive/version", b"3\n")], "os.system")
    evil_legacy = legacy_header() + b"\x80\x02c__builtin__\neval\nX\x0a\x00\x00\x00print('x')\x85R."
    add("evil_legacy.pth", evil_legacy, "__builtin__.eval")
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)
    add("whole_module.pth", buf.getvalue(), "global 'torch.nn.modules.linear.Linear' is not allowed")
    cycle = b"\x80\x02]q\x00h\x00a."  # a list that contains itself
    add_zip("cycle.pth", [("archive/data.pkl", cycle), ("archive/version", b"3\n")], "cycle")
    deep = b"\x80\x02N" + b"\x85" * 100000 + b"."  # (((None,),),...) 100000 deep
    add_zip("deep.pth", [("archive/data.pkl", deep), ("archive/version", b"3\n")], "nested deeper")
    oob = tensor_pickle(4, (10,), (1,))
    add_zip("out_of_bounds.pth", [("archive/data.pkl", oob), ("archive/data/0", b"\0" * 16), ("archive/version", b"3\n")],
            "reaches element")
    # A flipped byte in a storage record: only the CRC can tell.
    bad = bytearray(zip_bytes)
    with zipfile.ZipFile(valid_zip) as z:
        info = z.getinfo(prefix + "data/0")
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", bad[local + 26: local + 30])
    bad[local + 30 + name_len + extra_len + 1] ^= 0x10
    add("bad_crc.pth", bytes(bad), "CRC")
    add("big_endian_legacy.pth",
        legacy_bytes.replace(b"little_endianq\x02\x88", b"little_endianq\x02\x89", 1), "big-endian")
    ts = torch.jit.script(torch.nn.Linear(2, 2))
    ts_path = os.path.join(out, "torchscript.pth")
    torch.jit.save(ts, ts_path)
    broken.append(("torchscript.pth", "TorchScript"))
    torch.save([torch.zeros(2)], os.path.join(out, "list_top.pth"))
    broken.append(("list_top.pth", "not a state dict"))
    torch.save({"a": torch.zeros(2), "n": 1}, os.path.join(out, "mixed_top.pth"))
    broken.append(("mixed_top.pth", "'n' is an int"))
    return broken


ROUNDTRIP_CHECK = r'''
"""Checks a file written by the C++ save_state_dict / torch_save (run by the tests)."""
import argparse, collections, struct, sys, zipfile
import torch

def fail(msg):
    print("roundtrip_check: " + msg)
    sys.exit(1)

def state_dict_of(obj):
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj

def check_layout(path):
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in z.infolist()]
        if names[0] != stem + "/data.pkl" or names[-1] != stem + "/version":
            fail("unexpected record names %r" % names)
        if z.read(stem + "/version") != b"3\n":
            fail("version record is not 3")
        raw = open(path, "rb").read()
        for i in z.infolist():
            if i.compress_type != zipfile.ZIP_STORED:
                fail(i.filename + " is compressed")
            n, e = struct.unpack("<HH", raw[i.header_offset + 26:i.header_offset + 30])
            if (i.header_offset + 30 + n + e) % 64:
                fail(i.filename + " data is not 64-byte aligned")
        z.testzip()

def same(path, ref):
    a = torch.load(path, weights_only=False)
    b = state_dict_of(torch.load(ref, weights_only=False))
    if type(a) is not collections.OrderedDict:
        fail("top level is %s, not OrderedDict" % type(a))
    if list(a.keys()) != list(b.keys()):
        fail("keys differ")
    for k in b:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            fail("tensor %s differs" % k)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["same", "resnet18", "shared", "generic"])
    p.add_argument("path")
    p.add_argument("ref", nargs="?")
    a = p.parse_args()
    check_layout(a.path)
    if a.mode == "same":
        same(a.path, a.ref)
    elif a.mode == "resnet18":
        same(a.path, a.ref)
        import torchvision
        m = torchvision.models.resnet18(num_classes=10)
        m.load_state_dict(torch.load(a.path, weights_only=False), strict=True)
    elif a.mode == "shared":
        sd = torch.load(a.path, weights_only=False)
        base, t, row = sd["base"], sd["base_t"], sd["row"]
        if not (t.storage().data_ptr() == base.storage().data_ptr() == row.storage().data_ptr()):
            fail("views no longer share a storage")
        if not torch.equal(t, base.t()) or not torch.equal(row, base[1]):
            fail("view values differ")
        if t.is_contiguous() or row.storage_offset() != base.shape[1]:
            fail("view strides/offset were not kept")
    elif a.mode == "generic":
        obj = torch.load(a.path, weights_only=False)
        expect = {
            "epoch": 7, "lr": 0.5, "name": "maskrcnn", "neg": -5, "big": 2 ** 40,
            "flags": [True, False, None], "tuple": (1, "two", 3.0), "bytes": b"\x00\xffabc",
            "int_keys": {0: "zero", 1: "one"},
        }
        for k, v in expect.items():
            if obj.get(k) != v or type(obj.get(k)) is not type(v):
                fail("%s: %r != %r" % (k, obj.get(k), v))
        od = obj["od"]
        if type(od) is not collections.OrderedDict or list(od.keys()) != ["w"] or od._metadata != {"": {"version": 2}}:
            fail("od is wrong: %r" % (od,))
        if not torch.equal(od["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3)):
            fail("od.w is wrong")
        args = obj["args"]
        if not isinstance(args, argparse.Namespace) or args.lr != 0.02 or args.data_path != "/data":
            fail("args is wrong: %r" % (args,))
        if not torch.equal(obj["tensor"], torch.tensor([1, 2, 3], dtype=torch.int64)):
            fail("tensor is wrong")
    print("roundtrip_check: ok")

main()
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default="")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    valid = []  # (file, manifest)

    def add_valid(files, manifest_name):
        for f in files:
            valid.append((f, manifest_name))
        ref = state_dict_of(torch.load(os.path.join(out, files[0]), weights_only=False))
        write_manifest(os.path.join(out, manifest_name), ref)
        for f in files[1:]:  # both formats must read back the same under torch
            other = state_dict_of(torch.load(os.path.join(out, f), weights_only=False))
            assert list(other.keys()) == list(ref.keys())
            assert all(torch.equal(other[k], ref[k]) for k in ref), f

    sd = dtypes_state_dict()
    add_valid(save_both(out, "dtypes", sd), "dtypes.manifest")
    add_valid(save_both(out, "proto4", sd, pickle_protocol=4), "dtypes.manifest")
    add_valid(save_both(out, "plain_dict", dict(sd)), "dtypes.manifest")
    add_valid(save_both(out, "wrapped_state_dict", {"state_dict": sd, "epoch": 1}), "dtypes.manifest")

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10)
    rsd = resnet.state_dict()
    add_valid(save_both(out, "resnet18", rsd), "resnet18.manifest")
    with open(os.path.join(out, "resnet18.metadata"), "w") as f:
        for prefix, meta in rsd._metadata.items():
            f.write(f"{prefix}\t{meta.get('version', -1)}\n")

    # A torchvision reference-script style training checkpoint.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[16, 22], gamma=0.1)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    train_args = argparse.Namespace(lr=0.02, epochs=26, data_path="/data", aspect_ratio_group_factor=3,
                                    weights=None, amp=False, milestones=[16, 22])
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
            "args": train_args, "epoch": 5}
    add_valid(save_both(out, "training", ckpt), "training.manifest")
    momentum = collections.OrderedDict(
        (f"state.{i}.momentum_buffer", s["momentum_buffer"]) for i, s in opt.state_dict()["state"].items())
    write_manifest(os.path.join(out, "training_momentum.manifest"), momentum)

    params = collections.OrderedDict(w=torch.nn.Parameter(torch.randn(3, 2)),
                                      b=torch.nn.Parameter(torch.randn(2), requires_grad=False))
    add_valid(save_both(out, "parameters", params), "parameters.manifest")

    write_legacy_views(os.path.join(out, "legacy_views.pth"))
    add_valid(["legacy_views.pth"], "legacy_views.manifest")

    broken = write_broken(out, os.path.join(out, "dtypes.pth"), os.path.join(out, "dtypes_legacy.pth"))

    with open(os.path.join(out, "valid.txt"), "w") as f:
        for name, manifest in valid:
            f.write(f"{name}\t{manifest}\n")
    with open(os.path.join(out, "broken.txt"), "w") as f:
        for name, expect in broken:
            f.write(f"{name}\t{expect}\n")
    with open(os.path.join(out, "roundtrip_check.py"), "w") as f:
        f.write(ROUNDTRIP_CHECK)
    print(f"checkpoint fixtures: {len(valid)} valid, {len(broken)} broken files in {out}")


if __name__ == "__main__":
    sys.exit(main())
