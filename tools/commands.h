// Each `maskrcnn` sub-command lives in its own cmd_<name>.cpp and registers
// itself on the top-level CLI11 app. A command's callback throws maskrcnn::Error
// for bad input; main() turns that into a one-line message and exit code 1.
#pragma once
#include <CLI/CLI.hpp>

namespace maskrcnn::cli {

void add_predict_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_make_shapes_command(CLI::App& app);
void add_train_command(CLI::App& app);

}  // namespace maskrcnn::cli
