#include <cstdint>

#include "commands.h"
#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"

namespace maskrcnn::cli {

void add_annotation_size_limit(CLI::App* cmd, double& megabytes) {
  cmd->add_option("--max-annotation-mb", megabytes,
                  "Refuse COCO annotation and results files larger than this (MB)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

void apply_annotation_size_limit(double megabytes) {
  if (!(megabytes > 0 && megabytes < 1e9)) throw Error("--max-annotation-mb must be positive");
  set_max_annotation_file_bytes(static_cast<uint64_t>(megabytes * (1 << 20)));
}

}  // namespace maskrcnn::cli
