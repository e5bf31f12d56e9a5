// Running the `maskrcnn` binary from tests: exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "support/test_env.h"

namespace maskrcnn::testing {

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct CmdResult {
  int rc;
  std::string out, err;
};

// Runs `maskrcnn ARGS` (with `env` assignments in front), capturing the
// output in files under `scratch_dir`.
inline CmdResult run_maskrcnn(const std::string& args, const std::string& scratch_dir,
                              const std::string& env = "") {
  const std::string out = scratch_dir + "/stdout", err = scratch_dir + "/stderr";
  const std::string cmd = env + " " + maskrcnn_bin() + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  return {WEXITSTATUS(status), slurp(out), slurp(err)};
}

}  // namespace maskrcnn::testing
