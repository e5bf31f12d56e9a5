#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "maskrcnn/types.h"

namespace maskrcnn::modeling {

// Keys renamed to torchvision 0.14's current names, "module." stripped.
std::map<std::string, at::Tensor> normalize_keys(const StateDict& state);

}  // namespace maskrcnn::modeling
