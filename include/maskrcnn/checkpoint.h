// Reading and writing PyTorch `.pth` state dicts without Python.
//
// load_state_dict reads what torch.save writes (the zip format of torch >= 1.6 and
// the legacy magic-number pickle stream of older torch) with an unpickler that
// accepts only the handful of Python globals a checkpoint needs, so a hostile file
// can neither run code nor smuggle in foreign objects. save_state_dict writes the
// zip format that torch 1.13 writes, which Python's torch.load reads back.
//
// For whole training checkpoints (optimizer state, epoch, args...) see
// maskrcnn/pickle.h: torch_load / torch_save work on any nested Python value.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

// Reads a torch.save'd state dict: zip format (torch >= 1.6) and the legacy format
// (magic-number pickle stream, torch < 1.6). Accepts OrderedDict (with its `_metadata`
// BUILD state) or plain dict at the top, and a dict wrapping one under "model" or
// "state_dict" (like torchvision reference-script checkpoints). Tensors come back as
// contiguous CPU tensors of the stored dtype (float32/64/16, bfloat16, int64/32/16/8,
// uint8, bool, complex64/128) honouring storage offset, size and stride (views sharing
// one storage each get their own copy). requires_grad is not restored.
// Throws maskrcnn::Error with a one-line message naming the file and what is wrong.
StateDict load_state_dict(const std::string& path);

// Writes a state dict in torch's zip format (as torch 1.13's torch.save does: archive
// folder named after the file stem, data.pkl in pickle protocol 2 holding an
// OrderedDict, one data/<key> record per storage, 64-byte aligned, and `version` = 3).
// Tensors sharing a storage are written once and stay shared when Python loads them.
// Tensors on other devices are copied to the CPU first. Atomic: writes
// "<path>.tmp.<pid>", fsyncs, renames; on error no file (whole or partial) is left.
// Throws maskrcnn::Error on duplicate keys, undefined/sparse tensors or I/O failure.
void save_state_dict(const StateDict& state, const std::string& path);

}  // namespace maskrcnn
