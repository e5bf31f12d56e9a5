// The model flags and files that `predict` and `serve` take alike: the
// flags, a labels file, and the message for weights that are not there.
#include <filesystem>
#include <fstream>

#include "commands.h"
#include "maskrcnn/config.h"
#include "maskrcnn/error.h"
#include "maskrcnn/model.h"

namespace maskrcnn::cli {

void add_model_flags(CLI::App* cmd, ModelFlags& f, const std::string& labels_default) {
  cmd->add_option("--weights", f.weights,
                  "Checkpoint (.pth); default: torchvision's cache, " + default_weights_path());
  cmd->add_option("--arch", f.arch,
                  "maskrcnn_resnet50_fpn | maskrcnn_resnet50_fpn_v2 (default: from the checkpoint)");
  cmd->add_option("--num-classes", f.num_classes, "Classes incl. background (default: from the checkpoint)");
  cmd->add_option("--labels", f.labels_file,
                  "Text file, one class name per line, line i = label i (default: " + labels_default + ")");
  cmd->add_option_function<int>("--min-size", [&f](int v) { f.min_size = v; f.min_size_given = true; },
                                "Resize: shorter side (default: 800, or the weights' .json)")
      ->type_name("INT");
  cmd->add_option_function<int>("--max-size", [&f](int v) { f.max_size = v; f.max_size_given = true; },
                                "Resize: longer side at most (default: 1333, or the weights' .json)")
      ->type_name("INT");
  cmd->add_option("--threads", f.threads, "CPU threads of the model (default: all cores)");
  add_conv_options(cmd, f.conv);
  add_device_option(cmd, f.device);
}

std::string model_weights_path(const ModelFlags& f) {
  const std::string weights = f.weights.empty() ? default_weights_path() : f.weights;
  if (!std::filesystem::exists(weights)) throw Error(missing_weights_message(weights));
  return weights;
}

void apply_model_flags(const ModelFlags& f, ModelOverrides& o) {
  if (!f.arch.empty()) o.arch = parse_arch(f.arch);
  if (f.num_classes > 0) o.num_classes = f.num_classes;
  if (f.min_size_given) o.min_size = f.min_size;
  if (f.max_size_given) o.max_size = f.max_size;
}

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
