// The files around a model that `predict` and `serve` take alike: a labels
// file, and the message for weights that are not there.
#include <fstream>

#include "commands.h"
#include "maskrcnn/error.h"

namespace maskrcnn::cli {

std::vector<std::string> read_labels(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open labels file");
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    names.push_back(line);
  }
  if (names.empty()) throw Error(path + ": labels file is empty");
  return names;
}

std::string missing_weights_message(const std::string& path) {
  return "no weights at " + path +
         ": put torchvision's COCO checkpoint there (the file torchvision downloads for "
         "maskrcnn_resnet50_fpn(weights=\"DEFAULT\"), from "
         "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth), "
         "or pass --weights FILE";
}

}  // namespace maskrcnn::cli
