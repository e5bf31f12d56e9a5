// The `maskrcnn` command: sub-commands predict, eval, ...
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>

#include <c10/util/Exception.h>

#include "commands.h"
#include "maskrcnn/error.h"

namespace {

// First line only: LibTorch messages carry backtraces after the first line.
std::string first_line(const std::string& s) {
  auto pos = s.find('\n');
  return pos == std::string::npos ? s : s.substr(0, pos);
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) makes write() fail with EFBIG instead of
  // killing us mid-write: the error path then removes the temporary file.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"maskrcnn: Mask R-CNN instance segmentation (torchvision-compatible)"};
  app.require_subcommand(1);
  app.get_formatter()->column_width(36);
  maskrcnn::cli::add_predict_command(app);
  maskrcnn::cli::add_eval_command(app);
  maskrcnn::cli::add_make_shapes_command(app);
  maskrcnn::cli::add_train_command(app);
  maskrcnn::cli::add_bench_command(app);
  maskrcnn::cli::add_serve_command(app);
  maskrcnn::cli::add_explain_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const maskrcnn::Error& e) {
    std::fprintf(stderr, "maskrcnn: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "maskrcnn: error: %s\n", first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "maskrcnn: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maskrcnn: error: %s\n", first_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
