// `maskrcnn serve` as a process: --help shows every default, missing or bad
// weights fail with one line and exit 1, and a server started on port 0
// prints its URL, answers, and exits 0 on SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "serve/serve_test_util.h"
#include "support/cli.h"

// Last: httplib.h pulls in <resolv.h>, whose macros (T_A, QUERY, STATUS, ...)
// must not reach the headers above.
#include <httplib.h>

namespace fs = std::filesystem;
using namespace maskrcnn::testing;

namespace {

// A `maskrcnn serve` process with its stdout on a pipe and its stderr in a
// file. Killed (SIGKILL) if the test ends while it still runs.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& args, const std::string& stderr_path) {
    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe calls (another thread may hold malloc's lock).
    std::vector<std::string> all{maskrcnn_bin(), "serve"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) return;
    const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      if (err >= 0) ::dup2(err, 2);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    if (err >= 0) ::close(err);
    out_ = fds[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  pid_t pid() const { return pid_; }

  // The next line of its stdout, or what came before the timeout.
  std::string read_line(std::chrono::milliseconds timeout) {
    std::string line;
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (left <= 0) return line;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return line;
      char ch = 0;
      if (::read(out_, &ch, 1) <= 0) return line;
      if (ch == '\n') return line;
      line += ch;
    }
  }

  // Its exit code (128 + signal if killed by one), or -1 if it is still
  // running after `timeout` (then it is killed).
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > until) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
};

class ServeCli : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = fresh_test_dir("maskrcnn_serve_cli"); }
  void TearDown() override { fs::remove_all(dir_); }
  CmdResult run(const std::string& args) { return run_maskrcnn(args, dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  bool have_binary() const { return fs::exists(maskrcnn_bin()); }
  // The port of "serving on http://127.0.0.1:PORT", or -1.
  static int port_of(const std::string& line) {
    std::smatch m;
    if (!std::regex_match(line, m, std::regex(R"(serving on http://127\.0\.0\.1:(\d+))"))) return -1;
    return std::stoi(m[1].str());
  }
  fs::path dir_;
};

TEST_F(ServeCli, HelpShowsEveryDefault) {
  if (!have_binary()) GTEST_SKIP() << "no maskrcnn binary at " << maskrcnn_bin();
  auto r = run("serve --help");
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* s : {"--weights", "--arch", "--labels", "--threads", "--min-size", "--max-size", "--host",
                        "=127.0.0.1", "--port", "=8080", "--http-threads", "=16", "--max-batch", "=4",
                        "--max-delay-ms", "=5", "--max-queue", "=64", "--max-body-mb", "=32",
                        "--request-timeout-s", "=60", "--drain-s", "=30", "--score-thresh", "=0.05",
                        "--mask-thresh", "=0.5", "--max-detections", "=100", "--max-pixels", "=40000000",
                        "--precision", "=f32", "--conv", "=winograd", "--device", "=cpu"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing from:\n" << r.out;
}

TEST_F(ServeCli, MissingWeightsFailWithOneLine) {
  if (!have_binary()) GTEST_SKIP() << "no maskrcnn binary at " << maskrcnn_bin();
  auto r = run("serve --port 0 --weights " + path("missing.pth"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("no weights at " + path("missing.pth")), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("serving on"), std::string::npos) << "nothing is bound for weights that are not there";
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(ServeCli, ServesOnAFreePortAndExitsZeroOnSigterm) {
  if (!have_binary()) GTEST_SKIP() << "no maskrcnn binary at " << maskrcnn_bin();
  const std::string weights = write_tiny_model(dir_.string());
  const std::string png = png_bytes(dir_.string(), 60, 80);
  ServeProcess p({"--weights", weights, "--port", "0", "--threads", "2", "--drain-s", "20"}, path("stderr"));
  ASSERT_GT(p.pid(), 0);
  const std::string line = p.read_line(std::chrono::seconds(60));
  const int port = port_of(line);
  ASSERT_GT(port, 0) << "first line: '" << line << "'\nstderr:\n" << slurp(path("stderr"));
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(60, 0);
  auto r = c.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  ASSERT_TRUE(eventually([&] {
    auto x = c.Get("/readyz");
    return x && x->status == 200;
  })) << slurp(path("stderr"));
  r = c.Post("/v1/predict", png, "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  expect_same_detections(nlohmann::json::parse(r->body)["images"][0]["detections"], library_records(weights, png));
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  EXPECT_EQ(p.wait_exit(std::chrono::seconds(30)), 0) << slurp(path("stderr"));
  EXPECT_NE(slurp(path("stderr")).find("SIGTERM: draining"), std::string::npos) << slurp(path("stderr"));
}

TEST_F(ServeCli, WeightsThatDoNotLoadEndTheServerWithExitOne) {
  if (!have_binary()) GTEST_SKIP() << "no maskrcnn binary at " << maskrcnn_bin();
  std::ofstream(path("bad.pth")) << "not a checkpoint";
  ServeProcess p({"--weights", path("bad.pth"), "--port", "0", "--threads", "2"}, path("stderr"));
  ASSERT_GT(p.pid(), 0);
  EXPECT_GT(port_of(p.read_line(std::chrono::seconds(60))), 0) << "the port is bound before the model loads";
  EXPECT_EQ(p.wait_exit(std::chrono::seconds(60)), 1) << slurp(path("stderr"));
  const std::string err = slurp(path("stderr"));
  const auto pos = err.find("maskrcnn: error: ");
  ASSERT_NE(pos, std::string::npos) << err;
  EXPECT_NE(err.find(path("bad.pth"), pos), std::string::npos) << err;
  EXPECT_EQ(err.find("terminate called"), std::string::npos) << err;
}

}  // namespace
