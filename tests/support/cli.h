// Running the `maskrcnn` binary from tests: exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
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

// A fresh, empty folder for the running test: TMPDIR/<prefix>_<pid>_<test name>.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  auto dir = std::filesystem::temp_directory_path() /
             (prefix + "_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `maskrcnn ARGS` (with `env` assignments in front), capturing the
// output in files under `scratch_dir`.
inline CmdResult run_maskrcnn(const std::string& args, const std::string& scratch_dir,
                              const std::string& env = "") {
  const std::string out = scratch_dir + "/stdout", err = scratch_dir + "/stderr";
  const std::string cmd = env + " " + maskrcnn_bin() + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  return {WEXITSTATUS(status), slurp(out), slurp(err)};
}

// A real full disk: `folder` becomes a tmpfs of `kib` KiB in a private mount
// namespace (unshare -rm: no root needed where user namespaces are allowed)
// for the duration of one command, which then lists what the folder holds
// into `listing`. Empty when this machine cannot do that (the caller skips).
inline std::string full_disk_prefix(const std::string& folder, int kib, const std::string& listing) {
  const std::string probe = "unshare -rm sh -c 'mount -t tmpfs -o size=4k tmpfs " + folder + "' 2>/dev/null";
  if (std::system(("mkdir -p " + folder).c_str()) != 0 || std::system(probe.c_str()) != 0) return {};
  return "unshare -rm sh -c 'mount -t tmpfs -o size=" + std::to_string(kib) + "k tmpfs " + folder +
         " || exit 97; \"$0\" \"$@\"; rc=$?; ls -A " + folder + " > " + listing + "; exit $rc'";
}

}  // namespace maskrcnn::testing
