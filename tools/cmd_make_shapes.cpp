// `maskrcnn make-shapes`: write the synthetic shapes data set (COCO format),
// a small training set to try training end to end without downloading COCO.
//
//   maskrcnn make-shapes --output DIR --images N [--size 128] [--seed 0] [--max-objects 4]
#include <fmt/core.h>

#include <chrono>
#include <memory>
#include <string>

#include "commands.h"
#include "data/shapes.h"

namespace maskrcnn::cli {

void add_make_shapes_command(CLI::App& app) {
  auto opts = std::make_shared<data::ShapesOptions>();
  auto* cmd = app.add_subcommand(
      "make-shapes", "Write a synthetic COCO-format data set of circles, squares and triangles");
  cmd->add_option("--output", opts->output_dir,
                  "Output directory (gets images/ and annotations.json)")
      ->required()
      ->type_name("DIR");
  cmd->add_option("--images", opts->num_images, "Number of images")
      ->capture_default_str()
      ->type_name("N")
      ->check(CLI::Range(1, 10000000));
  cmd->add_option("--size", opts->size, "Image side in pixels (square images)")
      ->capture_default_str()
      ->check(CLI::Range(32, 4096));
  cmd->add_option("--seed", opts->seed, "Random seed (image k depends only on seed and k)")
      ->capture_default_str();
  cmd->add_option("--min-objects", opts->min_objects, "Fewest shapes drawn per image")
      ->capture_default_str()
      ->check(CLI::Range(0, 255));
  cmd->add_option("--max-objects", opts->max_objects,
                  "Most shapes drawn per image (hidden ones are not annotated)")
      ->capture_default_str()
      ->check(CLI::Range(0, 255));
  cmd->callback([opts] {
    const auto t0 = std::chrono::steady_clock::now();
    const data::ShapesSummary s = data::make_shapes_dataset(*opts);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("make-shapes: {} images, {} objects (circle {}, square {}, triangle {}; {} hidden "
               "by others) -> {} ({:.1f} s)\n",
               s.images, s.objects, s.per_category[1], s.per_category[2], s.per_category[3],
               s.dropped_objects, s.annotations_path, secs);
  });
}

}  // namespace maskrcnn::cli
