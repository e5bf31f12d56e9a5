// The small JSON file that `maskrcnn train` writes next to its weights
// (model_final.pth -> model_final.json): architecture, backbone, class count
// and names, input sizes. `predict` and `eval` read it when present (explicit
// flags win); without it everything is inferred from the checkpoint's keys.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "maskrcnn/config.h"

namespace maskrcnn {

struct ModelInfo {
  MaskRCNNConfig config;
  std::vector<std::string> class_names;  // index = label; [0] = "__background__"
};

// foo/model_final.pth -> foo/model_final.json
std::string model_info_path(const std::string& weights_path);
// Written atomically. Throws maskrcnn::Error on I/O failure.
void write_model_info(const std::string& weights_path, const ModelInfo& info);
// nullopt when there is no such file; maskrcnn::Error naming it when it is malformed.
std::optional<ModelInfo> read_model_info(const std::string& weights_path);


}  // namespace maskrcnn
